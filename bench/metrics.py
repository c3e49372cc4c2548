"""Metrics summary speed and memory vs QuantStats: ``python -m bench metrics [--quick]``.

Both sides get the same 1,000,000-point equity curve (and a benchmark) and compute the same set of
metrics, each treating every point as one period (``resample=False``; QuantStats has no session
resampling). QuantStats is timed in the same process and run, on the tz-naive returns it needs.
Memory: tracemalloc peak of one summary call (numpy buffers included) and the RSS growth.
"""

from __future__ import annotations

import gc
import json
import time
import tracemalloc
import warnings
from typing import Any

import numpy as np
import pandas as pd

from core import metrics as M


def make_series(n: int, seed: int = 42) -> tuple[pd.Series, pd.Series]:
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2020-01-01", periods=n, freq="min", tz="UTC")
    bench_r = rng.normal(0.00001, 0.0008, n)
    strat_r = 0.5 * bench_r + rng.normal(0.00001, 0.0006, n)
    strat_r[n // 3: n // 3 + n // 50] = 0.0  # a flat stretch
    equity = pd.Series(1e5 * np.cumprod(1 + strat_r), index=idx, name="equity")
    bench = pd.Series(400 * np.cumprod(1 + bench_r), index=idx, name="bench")
    return equity, bench


def ours(equity: pd.Series, bench: pd.Series) -> dict[str, Any]:
    return M.summary(equity, benchmark=bench, resample=False, include_series=True)


def quantstats_same_metrics(equity: pd.Series, bench: pd.Series) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import quantstats as qs

        s = qs.stats
        prices = equity.copy()
        prices.index = prices.index.tz_localize(None)
        b = bench.copy()
        b.index = b.index.tz_localize(None)
        r = prices.pct_change(fill_method=None).iloc[1:]
        br = b.pct_change(fill_method=None).iloc[1:]
        dd = s.to_drawdown_series(r)
        out = {
            "cumulative_return": s.comp(r), "cagr": s.cagr(r), "volatility": s.volatility(r),
            "sharpe": s.sharpe(r), "smart_sharpe": s.smart_sharpe(r), "sortino": s.sortino(r),
            "smart_sortino": s.smart_sortino(r), "calmar": s.calmar(r), "omega": s.omega(r),
            "max_drawdown": s.max_drawdown(r), "drawdown": dd, "drawdown_periods": s.drawdown_details(dd),
            "ulcer_index": s.ulcer_index(r), "var": s.value_at_risk(r), "cvar": s.conditional_value_at_risk(r),
            "skew": s.skew(r), "kurtosis": s.kurtosis(r), "best_day": s.best(r), "worst_day": s.worst(r),
            "best_month": s.best(r, aggregate="ME"), "worst_month": s.worst(r, aggregate="ME"),
            "win_rate_days": s.win_rate(r), "max_consecutive_wins": s.consecutive_wins(r),
            "max_consecutive_losses": s.consecutive_losses(r), "monthly_returns": s.monthly_returns(r),
            "rolling_sharpe": s.rolling_sharpe(r), "rolling_sortino": s.rolling_sortino(r),
            "rolling_volatility": s.rolling_volatility(r), "greeks": s.greeks(r, br),
            "information_ratio": s.information_ratio(r, br),
        }
    return out


def _best_of(fn: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _rss_growth_in_child(n: int) -> float:
    """Peak RSS growth of one summary() call, measured in a fresh interpreter (MiB)."""
    import subprocess
    import sys

    # VmHWM (peak RSS of this address space) rather than ru_maxrss, which Linux carries over from
    # the parent across fork/exec and would report the bench process's own peak.
    code = (
        "import gc, psutil; from bench.metrics import make_series, ours; "
        "hwm = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) * 1024; "
        f"e, b = make_series({n}); ours(e.iloc[:1000], b.iloc[:1000]); gc.collect(); "
        "before = psutil.Process().memory_info().rss; ours(e, b); "
        "print((hwm() - before) / 2**20)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def run(quick: bool) -> list[dict[str, Any]]:
    n = 100_000 if quick else 1_000_000
    equity, bench = make_series(n)
    ours(equity.iloc[:1000], bench.iloc[:1000])  # warm imports and the calendar

    t_ours = _best_of(lambda: ours(equity, bench), 3)
    t_qs = _best_of(lambda: quantstats_same_metrics(equity, bench), 1)

    mine = ours(equity, bench)
    ref = quantstats_same_metrics(equity, bench)
    keys = ["sharpe", "smart_sharpe", "sortino", "max_drawdown", "cagr", "ulcer_index", "kurtosis"]
    max_rel = max(abs(mine[k] - float(ref[k])) / abs(float(ref[k])) for k in keys)

    gc.collect()
    tracemalloc.start()
    result = ours(equity, bench)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del result
    rss_growth = _rss_growth_in_child(n)

    t_sessions = _best_of(lambda: M.summary(equity, benchmark=bench), 3)
    return [
        {"name": "metrics.summary", "value": round(t_ours, 4), "unit": "s", "points": n,
         "quantstats_s": round(t_qs, 4), "ratio": round(t_qs / t_ours, 1), "target_ratio": 10,
         "meets_target": t_qs / t_ours >= 10, "max_rel_diff_vs_quantstats": max_rel},
        {"name": "metrics.memory_peak", "value": round(peak / 2**20, 1), "unit": "MiB", "points": n,
         "rss_growth_mib": rss_growth, "target": 200,
         "meets_target": peak / 2**20 < 200,
         "note": "tracemalloc peak of one summary() call; rss_growth_mib: peak RSS minus RSS before the call, "
                 "in a fresh process"},
        {"name": "metrics.summary_sessions", "value": round(t_sessions, 4), "unit": "s", "points": n,
         "note": "default path: minute equity resampled to NYSE session closes first"},
    ]


if __name__ == "__main__":
    import sys

    for row in run("--quick" in sys.argv):
        print(json.dumps(row))
