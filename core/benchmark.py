"""An account (or a strategy) measured against a benchmark: alpha, beta and the rest.

Method (details and the differences from QuantStats in ``docs/strategies.md``):

- **Alignment.** The strategy's period returns are indexed by their period ends (NYSE session
  closes, UTC, from :mod:`core.metrics`); the benchmark is a price series (daily closes stamped at
  their session's close). The benchmark return of period ``(t_{i-1}, t_i]`` is ``P(t_i) / P(t_{i-1}) - 1``
  with ``P(t)`` the benchmark's last price at or before ``t`` (for the first period: the price one
  bar before). A day the strategy has no return for is compounded into its next period on both
  sides, never dropped from one side only; periods before the benchmark starts are left out.
  Timestamps are compared as instants, so time zones cannot shift a day.
- On the aligned pair (``r``, ``b``) of ``n >= 2`` periods, ``P`` periods per year:
  ``beta = cov(r, b) / var(b)`` (sample, ``ddof = 1``); ``alpha = (mean(r) - beta * mean(b)) * P``;
  ``correlation`` Pearson's; ``r_squared = correlation²``; ``tracking_error = std(r - b) * sqrt(P)``;
  ``information_ratio = mean(r - b) / std(r - b)`` (per period, QuantStats' convention);
  ``up_capture = gm(r | b > 0) / gm(b | b > 0)`` and ``down_capture`` likewise over ``b < 0``,
  with ``gm`` the geometric mean return per period; ``excess_return = prod(1 + r) - prod(1 + b)``.
- ``rolling_beta`` over ``window`` periods equals QuantStats' ``rolling_greeks(...)["beta"]``;
  ``relative_drawdown`` is the drawdown of the strategy's wealth divided by the benchmark's.

Pure numpy/pandas; no I/O.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from core.metrics_series import DEFAULT_PERIODS_PER_YEAR, DEFAULT_ROLLING_WINDOW, greeks

METRIC_KEYS = ("alpha", "beta", "correlation", "r_squared", "tracking_error", "information_ratio", "up_capture",
               "down_capture", "excess_return", "benchmark_return", "periods")


def benchmark_period_returns(on: pd.DatetimeIndex, prices: pd.Series) -> pd.Series:
    """Benchmark returns over the periods ending at ``on`` (see the module docstring); NaN where unknown."""
    if len(on) == 0:
        return pd.Series([], index=on, dtype=np.float64, name="benchmark")
    clean = prices[np.isfinite(prices.to_numpy(dtype=np.float64)) & (prices.to_numpy(dtype=np.float64) > 0)]
    clean = clean.sort_index()
    if clean.empty:
        return pd.Series(np.nan, index=on, dtype=np.float64, name="benchmark")
    p_ns = pd.DatetimeIndex(clean.index).as_unit("ns").asi8
    vals = clean.to_numpy(dtype=np.float64)
    pos = np.searchsorted(p_ns, pd.DatetimeIndex(on).as_unit("ns").asi8, side="right") - 1
    prev = np.concatenate([[pos[0] - 1], pos[:-1]])
    ok = (pos >= 0) & (prev >= 0)
    out = np.full(len(on), np.nan)
    out[ok] = vals[pos[ok]] / vals[prev[ok]] - 1.0
    return pd.Series(out, index=on, name="benchmark")


def align(returns: pd.Series, prices: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The strategy's returns and the benchmark's over the same periods, both finite (same index)."""
    r = returns[np.isfinite(returns.to_numpy(dtype=np.float64))]
    b = benchmark_period_returns(pd.DatetimeIndex(r.index), prices)
    both = np.isfinite(b.to_numpy())
    return r[both].astype(np.float64), b[both]


def _geo_mean(x: np.ndarray) -> float:
    if len(x) == 0 or np.any(x <= -1.0):
        return math.nan
    return float(np.exp(np.mean(np.log1p(x))) - 1.0)


def _capture(r: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    gb = _geo_mean(b[mask])
    if not math.isfinite(gb) or gb == 0:
        return math.nan
    return _geo_mean(r[mask]) / gb


def metrics(returns: pd.Series | np.ndarray, bench: pd.Series | np.ndarray,
            periods_per_year: float = DEFAULT_PERIODS_PER_YEAR) -> dict[str, float]:
    """Every figure of the module docstring over two already-aligned return series (NaN pairs dropped)."""
    r = np.asarray(returns, dtype=np.float64)
    b = np.asarray(bench, dtype=np.float64)
    both = np.isfinite(r) & np.isfinite(b)
    r, b = r[both], b[both]
    out = dict.fromkeys(METRIC_KEYS, math.nan)
    out["periods"] = float(len(r))
    if len(r) == 0:
        return out
    out["excess_return"] = float(np.prod(1.0 + r) - np.prod(1.0 + b))
    out["benchmark_return"] = float(np.prod(1.0 + b) - 1.0)
    out["up_capture"] = _capture(r, b, b > 0)
    out["down_capture"] = _capture(r, b, b < 0)
    if len(r) < 2:
        return out
    g = greeks(r, b, periods_per_year)
    out["alpha"], out["beta"] = g["alpha"], g["beta"]
    out["correlation"], out["information_ratio"] = g["correlation"], g["information_ratio"]
    out["r_squared"] = g["correlation"] ** 2 if math.isfinite(g["correlation"]) else math.nan
    out["tracking_error"] = float(np.std(r - b, ddof=1)) * math.sqrt(periods_per_year)
    return out


def rolling_beta(returns: pd.Series, bench: pd.Series, window: int = DEFAULT_ROLLING_WINDOW) -> pd.Series:
    """Beta over each trailing ``window`` periods (NaN before the first full window, or for a flat benchmark)."""
    r = returns.astype(np.float64)
    b = bench.reindex(r.index).astype(np.float64)
    n = len(r)
    out = np.full(n, np.nan)
    if n >= window >= 2:
        rv, bv = r.to_numpy(), b.to_numpy()
        # running sums: one pass, no per-window Python loop
        cs = [np.concatenate([[0.0], np.cumsum(x)]) for x in (rv, bv, rv * bv, bv * bv)]
        sr, sb, srb, sbb = (c[window:] - c[:-window] for c in cs)
        cov = (srb - sr * sb / window) / (window - 1)
        var_b = (sbb - sb * sb / window) / (window - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            beta = np.where(var_b > 1e-18 * np.maximum(1.0, sbb), cov / var_b, np.nan)
        out[window - 1:] = beta
    return pd.Series(out, index=r.index, name="rolling_beta")


def relative_drawdown(returns: pd.Series, bench: pd.Series) -> pd.Series:
    """Drawdown (<= 0) of the strategy's wealth relative to the benchmark's, per period."""
    r = returns.to_numpy(dtype=np.float64)
    b = bench.reindex(returns.index).to_numpy(dtype=np.float64)
    if len(r) == 0:
        return pd.Series([], index=returns.index, dtype=np.float64, name="relative_drawdown")
    rel = np.cumprod(1.0 + r) / np.cumprod(1.0 + b)
    peak = np.maximum.accumulate(np.concatenate([[1.0], rel]))[1:]
    return pd.Series(rel / peak - 1.0, index=returns.index, name="relative_drawdown")


def growth(returns: pd.Series) -> pd.Series:
    """Growth of $1 under ``returns``."""
    return pd.Series(np.cumprod(1.0 + returns.to_numpy(dtype=np.float64)), index=returns.index, name="growth")


def compare(returns: pd.Series, prices: pd.Series, *, periods_per_year: float = DEFAULT_PERIODS_PER_YEAR,
            window: int = DEFAULT_ROLLING_WINDOW) -> dict[str, Any]:
    """Align, then every metric plus the series a chart draws (``aligned``, ``rolling_beta``, ``relative_drawdown``)."""
    r, b = align(returns, prices)
    out: dict[str, Any] = metrics(r, b, periods_per_year)
    out["returns"], out["benchmark_returns"] = r, b
    out["rolling_beta"] = rolling_beta(r, b, window)
    out["relative_drawdown"] = relative_drawdown(r, b)
    return out
