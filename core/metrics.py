"""Performance metrics of an equity curve and of closed round trips.

Method (details and formulas in ``docs/core_analytics.md``):

- **Returns are time-weighted.** For equity observations ``E_0..E_n`` and net external cash flows
  ``F_i`` (deposits positive, withdrawals negative) that happened in ``(t_{i-1}, t_i]``, the period
  return is ``r_i = E_i / (E_{i-1} + F_i) - 1``: a flow is treated as arriving at the start of the
  period it falls in, so a deposit never shows up as a gain nor a withdrawal as a loss.
- **Intraday series are resampled to NYSE sessions first** (last value at or before each session
  close, see :func:`core.market_schedule.resample_to_sessions`), so annualisation by
  ``periods_per_year`` (252 by default) always means trading days. Pass ``resample=False`` to
  treat each observation as one period.
- Everything is vectorised numpy over the return array; no Python loop over points.
- Conventions follow QuantStats 0.0.86 where it has the metric (checked to 1e-9 in the tests);
  the deliberate differences are listed in the docs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.stats import norm

from core.errors import InvalidInput
from core.market_schedule import resample_to_sessions
from core.metrics_series import (
    DEFAULT_PERIODS_PER_YEAR,
    DEFAULT_ROLLING_WINDOW,
    FloatArray,
    _longest_run,
    greeks,
    is_flat,
    monthly_returns_table,
    period_returns,
    rolling_ratios,
    rolling_sharpe,
    rolling_sortino,
    rolling_volatility,
    trade_stats,
)
from core.records import RoundTrip

__all__ = [  # the names callers use, wherever they are defined
    "DEFAULT_PERIODS_PER_YEAR", "DEFAULT_ROLLING_WINDOW", "DrawdownTable", "autocorr_penalty", "benchmark_returns",
    "cagr", "calmar", "clean_equity", "conditional_value_at_risk", "cumulative_return", "cumulative_returns",
    "drawdown_periods", "drawdown_series", "flows_from_cumulative", "greeks", "is_flat", "kurtosis",
    "max_consecutive", "max_drawdown", "monthly_returns_table", "omega", "period_returns", "returns_from_equity",
    "rolling_ratios", "rolling_sharpe", "rolling_sortino", "rolling_volatility", "sharpe", "skew", "sortino", "summary",
    "summary_from_returns", "trade_stats", "ulcer_index", "value_at_risk", "volatility", "win_rate",
]

EXCHANGE_TZ = ZoneInfo("America/New_York")
"""Drawdown lengths count calendar days of the exchange, so a DST change or an early close does not
shorten them."""


# ----------------------------------------------------------------------------- input


def _check_index(series: pd.Series, what: str, *, increasing: bool = True) -> pd.DatetimeIndex:
    index = series.index
    if not isinstance(index, pd.DatetimeIndex):
        raise InvalidInput(f"{what}: index must be a DatetimeIndex, got {type(index).__name__}")
    if index.tz is None:
        raise InvalidInput(f"{what}: index is timezone-naive; use timezone-aware UTC timestamps")
    ns = index.as_unit("ns").asi8
    if increasing and len(ns) > 1:
        bad = np.flatnonzero(np.diff(ns) <= 0)
        if len(bad):
            row = int(bad[0]) + 1
            raise InvalidInput(
                f"{what}: timestamps must be strictly increasing; row {row} ({index[row].isoformat()}) "
                f"is not after row {row - 1} ({index[row - 1].isoformat()})"
            )
    return index.tz_convert(UTC)


def _is_intraday(index: pd.DatetimeIndex) -> bool:
    if len(index) < 2:
        return False
    spacing = np.median(np.diff(index.as_unit("ns").asi8))
    return bool(spacing < 20 * 3600 * 10**9)


def clean_equity(equity: pd.Series, *, resample: bool | None = None) -> pd.Series:
    """Validated equity: UTC index, leading/trailing NaN dropped, interior NaN dropped (a gap).

    Raises :class:`InvalidInput` for naive or non-increasing timestamps, infinities and
    zero/negative equity, naming the offending row. ``resample=None`` resamples to NYSE sessions
    when the median spacing is under 20 hours.
    """
    index = _check_index(equity, "equity")
    values = np.asarray(equity.to_numpy(dtype=np.float64, na_value=np.nan))
    finite = np.isfinite(values)
    bad_inf = np.flatnonzero(np.isinf(values))
    if len(bad_inf):
        row = int(bad_inf[0])
        raise InvalidInput(f"equity: row {row} ({index[row].isoformat()}) is {values[row]}")
    bad = np.flatnonzero(finite & (values <= 0))
    if len(bad):
        row = int(bad[0])
        raise InvalidInput(
            f"equity: row {row} ({index[row].isoformat()}) is {values[row]}; equity must be positive"
        )
    out = pd.Series(values[finite], index=index[finite], name=equity.name)
    if resample is None:
        resample = _is_intraday(out.index)
    if resample:
        out = resample_to_sessions(out)
    return out


def returns_from_equity(equity: pd.Series, cash_flows: pd.Series | None = None, *,
                        resample: bool | None = None) -> pd.Series:
    """Time-weighted period returns (``len(equity) - 1`` values, indexed by the period end)."""
    eq = clean_equity(equity, resample=resample)
    values = eq.to_numpy()
    if len(values) < 2:
        return pd.Series([], index=eq.index[:0], dtype=np.float64, name="returns")
    start = values[:-1]
    if cash_flows is not None and len(cash_flows):
        flows_index = _check_index(cash_flows, "cash_flows", increasing=False)  # any order, ties allowed
        amounts = np.asarray(cash_flows.to_numpy(dtype=np.float64, na_value=np.nan))
        bad = np.flatnonzero(~np.isfinite(amounts))
        if len(bad):
            row = int(bad[0])
            raise InvalidInput(f"cash_flows: row {row} ({flows_index[row].isoformat()}) is {amounts[row]}")
        # flow at t belongs to the first observation at or after t; those before E_0 are in E_0
        pos = np.searchsorted(eq.index.as_unit("ns").asi8, flows_index.as_unit("ns").asi8, side="left")
        keep = (pos >= 1) & (pos < len(values))
        per_period = np.bincount(pos[keep] - 1, weights=amounts[keep], minlength=len(values) - 1)
        start = start + per_period
        bad = np.flatnonzero(start <= 0)
        if len(bad):
            row = int(bad[0]) + 1
            raise InvalidInput(
                f"cash_flows: period ending row {row} ({eq.index[row].isoformat()}) starts with "
                f"non-positive capital {start[bad[0]]} after flows"
            )
    r = values[1:] / start - 1.0
    return pd.Series(r, index=eq.index[1:], name="returns")


def flows_from_cumulative(net_deposits: pd.Series) -> pd.Series:
    """External flows from a cumulative net-deposits column (``equity_full_<slug>.net_deposits``).

    The first value is the deposits already inside the first equity observation, so it is not a
    flow; each later change is one.
    """
    index = _check_index(net_deposits, "net_deposits")
    values = np.asarray(net_deposits.to_numpy(dtype=np.float64, na_value=np.nan))
    values = pd.Series(values, index=index).ffill().fillna(0.0).to_numpy()
    flows = np.diff(values)
    keep = flows != 0
    return pd.Series(flows[keep], index=index[1:][keep], name="cash_flows")


def _arr(returns: pd.Series | FloatArray) -> FloatArray:
    a: FloatArray = (returns.to_numpy(dtype=np.float64) if isinstance(returns, pd.Series)
                     else np.asarray(returns, np.float64))
    out: FloatArray = a[~np.isnan(a)]
    return out


def _maybe_flat(sd: float, r: FloatArray) -> bool:
    """Whether ``r`` is one value up to rounding, checked exactly (:func:`is_flat`) only when its
    standard deviation is already tiny, so an ordinary series pays nothing for the check."""
    return sd <= 1e-12 * max(1.0, abs(float(r[0]))) and is_flat(r)


def _excess(r: FloatArray, rf: float, periods_per_year: float) -> FloatArray:
    if rf == 0:
        return r
    out: FloatArray = r - ((1.0 + rf) ** (1.0 / periods_per_year) - 1.0)
    return out


# ----------------------------------------------------------------------------- return metrics


def cumulative_return(returns: pd.Series | FloatArray) -> float:
    """Compounded total return ``prod(1 + r) - 1``."""
    r = _arr(returns)
    return float(np.prod(1.0 + r) - 1.0)


def cumulative_returns(returns: pd.Series) -> pd.Series:
    """Running compounded return ``prod_{j<=i}(1 + r_j) - 1`` (NaN periods count as flat)."""
    r = returns.fillna(0.0).to_numpy(dtype=np.float64)
    return pd.Series(np.cumprod(1.0 + r) - 1.0, index=returns.index, name="cumulative_return")


def cagr(returns: pd.Series | FloatArray, periods_per_year: float = DEFAULT_PERIODS_PER_YEAR) -> float:
    """``(1 + total) ** (periods_per_year / n) - 1`` with ``n`` the number of returns."""
    r = _arr(returns)
    if len(r) == 0:
        return math.nan
    wealth = float(np.prod(1.0 + r))
    if wealth < 0:
        return math.nan
    return float(wealth ** (periods_per_year / len(r)) - 1.0)


def volatility(returns: pd.Series | FloatArray, periods_per_year: float = DEFAULT_PERIODS_PER_YEAR,
               annualize: bool = True) -> float:
    """Sample standard deviation (ddof=1), times ``sqrt(periods_per_year)`` when annualised."""
    r = _arr(returns)
    if len(r) < 2:
        return math.nan
    sd = float(np.std(r, ddof=1))
    if _maybe_flat(sd, r):  # identical values: 0, not the mean's rounding
        sd = 0.0
    return sd * math.sqrt(periods_per_year) if annualize else sd


def autocorr_penalty(returns: pd.Series | FloatArray) -> float:
    """QuantStats' Smart-ratio penalty ``sqrt(1 + 2 * sum_k ((n-k)/n) * |rho_1|**k)``."""
    r = _arr(returns)
    n = len(r)
    if n < 2:
        return 1.0
    a, b = r[:-1], r[1:]
    da, db = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(np.dot(da, da)) * float(np.dot(db, db)))
    if denom == 0 or not math.isfinite(denom):
        return 1.0
    coef = abs(float(np.dot(da, db)) / denom)
    if coef == 0:
        return 1.0
    if coef >= 1.0:
        k = np.arange(1, n, dtype=np.float64)
        weights = (n - k) / n
        return math.sqrt(1.0 + 2.0 * float(np.sum(weights * coef**k)))
    # terms below 1e-300 add nothing: stop the geometric series there (keeps 1M points cheap)
    kmax = min(n - 1, int(math.ceil(-690.0 / math.log(coef))) + 1)
    k = np.arange(1, kmax + 1, dtype=np.float64)
    return math.sqrt(1.0 + 2.0 * float(np.sum(((n - k) / n) * coef**k)))


def sharpe(returns: pd.Series | FloatArray, rf: float = 0.0,
           periods_per_year: float = DEFAULT_PERIODS_PER_YEAR, *, smart: bool = False,
           annualize: bool = True) -> float:
    """``mean(r - rf) / std(r - rf, ddof=1) * sqrt(periods_per_year)``; Smart divides by the penalty."""
    r = _excess(_arr(returns), rf, periods_per_year)
    if len(r) < 2:
        return math.nan
    sd = float(np.std(r, ddof=1))
    if _maybe_flat(sd, r):  # no dispersion: undefined (rounding noise would give +-millions)
        return math.nan
    if smart:
        sd *= autocorr_penalty(r)
    if sd == 0:
        return math.nan
    res = float(np.mean(r)) / sd
    return res * math.sqrt(periods_per_year) if annualize else res


def sortino(returns: pd.Series | FloatArray, rf: float = 0.0,
            periods_per_year: float = DEFAULT_PERIODS_PER_YEAR, *, smart: bool = False,
            annualize: bool = True) -> float:
    """``mean(r) / sqrt(sum(min(r, 0)**2) / n) * sqrt(periods_per_year)`` (Red Rock downside)."""
    r = _excess(_arr(returns), rf, periods_per_year)
    if len(r) == 0:
        return math.nan
    neg = np.minimum(r, 0.0)
    downside = math.sqrt(float(np.dot(neg, neg)) / len(r))
    if smart:
        downside *= autocorr_penalty(r)
    if downside == 0:
        return math.nan
    res = float(np.mean(r)) / downside
    return res * math.sqrt(periods_per_year) if annualize else res


def omega(returns: pd.Series | FloatArray, rf: float = 0.0, required_return: float = 0.0,
          periods_per_year: float = DEFAULT_PERIODS_PER_YEAR) -> float:
    """Sum of gains over the threshold divided by sum of losses under it (NaN with no losses)."""
    r = _excess(_arr(returns), rf, periods_per_year)
    if len(r) < 2 or required_return <= -1:
        return math.nan
    threshold = required_return if periods_per_year == 1 else (1 + required_return) ** (1.0 / periods_per_year) - 1
    d = r - threshold
    numer = float(np.sum(d[d > 0]))
    denom = -float(np.sum(d[d < 0]))
    return numer / denom if denom > 0 else math.nan


def _wealth(r: FloatArray) -> FloatArray:
    """Wealth index with the starting capital 1.0 prepended (so a first-period loss is a drawdown)."""
    w = np.empty(len(r) + 1)
    w[0] = 1.0
    np.cumprod(1.0 + r, out=w[1:])
    return w


def _drawdown_array(r: FloatArray) -> FloatArray:
    w = _wealth(r)
    dd = w / np.maximum.accumulate(w) - 1.0
    out = dd[1:]
    out[out == 0] = 0.0  # no negative zeros
    return out


def drawdown_series(returns: pd.Series) -> pd.Series:
    """Underwater curve: ``wealth / running peak - 1`` (0 at a new high, negative below)."""
    clean = returns.dropna()
    return pd.Series(_drawdown_array(clean.to_numpy(dtype=np.float64)), index=clean.index, name="drawdown")


def max_drawdown(returns: pd.Series | FloatArray) -> float:
    """Deepest drawdown (a negative fraction; 0.0 if never under water)."""
    r = _arr(returns)
    if len(r) == 0:
        return 0.0
    return float(min(_drawdown_array(r).min(), 0.0))


def calmar(returns: pd.Series | FloatArray, periods_per_year: float = DEFAULT_PERIODS_PER_YEAR) -> float:
    """``CAGR / |max drawdown|`` (NaN without a drawdown)."""
    mdd = max_drawdown(returns)
    return cagr(returns, periods_per_year) / abs(mdd) if mdd != 0 else math.nan


def ulcer_index(returns: pd.Series | FloatArray) -> float:
    """``sqrt(sum(drawdown**2) / (n - 1))`` over the drawdown fractions."""
    r = _arr(returns)
    if len(r) < 2:
        return math.nan
    dd = _drawdown_array(r)
    return math.sqrt(float(np.dot(dd, dd)) / (len(r) - 1))


@dataclass(frozen=True, slots=True)
class DrawdownTable:
    """Drawdown periods as parallel arrays (one entry per period, in time order)."""

    start: pd.DatetimeIndex
    valley: pd.DatetimeIndex
    end: pd.DatetimeIndex
    """Last observation still under water (QuantStats' convention)."""
    days: npt.NDArray[np.int64]
    """Calendar days from start to end inclusive, on New York dates (``(end - start).days + 1`` for a
    daily series)."""
    periods: npt.NDArray[np.int64]
    depth: FloatArray
    """Deepest drawdown of the period, a negative fraction."""
    recovered: npt.NDArray[np.bool_]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"start": self.start, "valley": self.valley, "end": self.end, "days": self.days,
                             "periods": self.periods, "depth": self.depth, "recovered": self.recovered})

    def worst(self, n: int = 5) -> pd.DataFrame:
        """The ``n`` deepest periods, deepest first."""
        frame = self.to_frame()
        return frame.iloc[np.argsort(frame["depth"].to_numpy(), kind="stable")[:n]].reset_index(drop=True)


def drawdown_periods(returns: pd.Series) -> DrawdownTable:
    """Each contiguous under-water stretch: start, valley, end, length and depth (vectorised)."""
    clean = returns.dropna()
    dd = _drawdown_array(clean.to_numpy(dtype=np.float64))
    return _drawdown_table(dd, clean.index)


def _drawdown_table(dd: FloatArray, index: pd.DatetimeIndex) -> DrawdownTable:
    under = dd < 0
    if not under.any():
        empty = index[:0]
        z = np.zeros(0, dtype=np.int64)
        return DrawdownTable(empty, empty, empty, z, z, np.zeros(0), np.zeros(0, dtype=bool))
    edges = np.diff(np.r_[False, under, False].astype(np.int8))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    depth = np.minimum.reduceat(dd, starts)
    run_id = np.cumsum(edges[:-1] == 1) - 1  # period number of each point (valid where under)
    pos = np.flatnonzero(under)
    at_min = pos[dd[pos] == depth[run_id[pos]]]
    _, first = np.unique(run_id[at_min], return_index=True)
    valleys = at_min[first]
    start_ts, end_ts = index[starts], index[ends]

    def local_dates(ts: pd.DatetimeIndex) -> pd.DatetimeIndex:  # only the periods' ends are converted
        return ts.tz_convert(EXCHANGE_TZ).tz_localize(None).normalize()

    days = ((local_dates(end_ts) - local_dates(start_ts)).days + 1).to_numpy(dtype=np.int64)
    recovered = ends < len(dd) - 1
    return DrawdownTable(start_ts, index[valleys], end_ts, days, (ends - starts + 1).astype(np.int64), depth,
                         recovered)


def value_at_risk(returns: pd.Series | FloatArray, confidence: float = 0.95, sigma: float = 1.0) -> float:
    """Parametric (normal) VaR of one period: ``norm.ppf(1 - confidence, mean, sigma * std)``."""
    r = _arr(returns)
    if len(r) < 2:
        return math.nan
    sd = float(np.std(r, ddof=1))
    if _maybe_flat(sd, r):  # no dispersion: every quantile is the value itself (scipy warns on a zero scale)
        return float(r[0])
    return float(norm.ppf(1 - confidence, float(np.mean(r)), sigma * sd))


def conditional_value_at_risk(returns: pd.Series | FloatArray, confidence: float = 0.95, sigma: float = 1.0,
                              method: str = "parametric") -> float:
    """Expected shortfall beyond the VaR: normal closed form, or the historical tail mean."""
    r = _arr(returns)
    if len(r) < 2:
        return math.nan
    alpha = 1 - confidence
    if method == "historical":
        tail = r[r <= np.quantile(r, alpha)]
        return float(tail.mean()) if len(tail) else math.nan
    if method != "parametric":
        raise InvalidInput(f"cvar: unknown method {method!r}")
    mu, sd = float(np.mean(r)), sigma * float(np.std(r, ddof=1))
    if _maybe_flat(sd, r):
        return float(r[0])
    if sd == 0:  # sigma = 0
        return mu
    return float(mu - sd * norm.pdf(norm.ppf(alpha)) / alpha)


def skew(returns: pd.Series | FloatArray) -> float:
    """Adjusted Fisher-Pearson sample skewness (pandas' ``skew``); NaN for a constant series."""
    r = _arr(returns)
    n = len(r)
    if n < 3:
        return math.nan
    d = r - r.mean()
    m2 = float(np.dot(d, d)) / n
    if m2 == 0 or _maybe_flat(math.sqrt(m2), r):  # a constant series has no shape; its residuals are only rounding
        return math.nan
    m3 = float(np.dot(d * d, d)) / n
    return float(math.sqrt(n * (n - 1)) / (n - 2) * m3 / m2**1.5)


def kurtosis(returns: pd.Series | FloatArray) -> float:
    """Sample excess kurtosis with the small-sample correction (pandas' ``kurt``); NaN if constant."""
    r = _arr(returns)
    n = len(r)
    if n < 4:
        return math.nan
    d = r - r.mean()
    d2 = d * d
    s2 = float(d2.sum())
    if s2 == 0 or _maybe_flat(math.sqrt(s2 / n), r):  # a constant series has no shape; its residuals are only rounding
        return math.nan
    s4 = float(np.dot(d2, d2))
    adj = 3.0 * (n - 1) ** 2 / ((n - 2) * (n - 3))
    num = n * (n + 1) * (n - 1) * s4
    den = (n - 2) * (n - 3) * s2 * s2
    return num / den - adj


def win_rate(returns: pd.Series | FloatArray) -> float:
    """Share of positive periods among non-zero periods (NaN when every period is zero)."""
    r = _arr(returns)
    nonzero = int(np.count_nonzero(r))
    return int(np.count_nonzero(r > 0)) / nonzero if nonzero else math.nan


def max_consecutive(returns: pd.Series | FloatArray, positive: bool = True) -> int:
    r = _arr(returns)
    return _longest_run(r > 0 if positive else r < 0)


# ----------------------------------------------------------------------------- benchmark


def benchmark_returns(benchmark: pd.Series, on: pd.DatetimeIndex, *, resample: bool | None = None) -> pd.Series:
    """Benchmark prices -> returns over the periods between consecutive timestamps of ``on``.

    ``on`` is the strategy's (cleaned) equity index; the result has ``len(on) - 1`` values indexed
    by ``on[1:]``. The benchmark price at a timestamp is its last value at or before it (NaN before
    the benchmark starts).
    """
    prices = clean_equity(benchmark, resample=resample)
    if len(on) < 2:
        return pd.Series([], index=on[:0], dtype=np.float64, name="benchmark")
    if prices.empty:
        return pd.Series(np.nan, index=on[1:], dtype=np.float64, name="benchmark")
    p_ns = prices.index.as_unit("ns").asi8
    pos = np.searchsorted(p_ns, on.as_unit("ns").asi8, side="right") - 1
    vals = np.where(pos >= 0, prices.to_numpy()[np.maximum(pos, 0)], np.nan)
    return pd.Series(vals[1:] / vals[:-1] - 1.0, index=on[1:], name="benchmark")


# ----------------------------------------------------------------------------- summary


def summary_from_returns(returns: pd.Series, *, benchmark: pd.Series | None = None, rf: float = 0.0,
                         periods_per_year: float = DEFAULT_PERIODS_PER_YEAR, confidence: float = 0.95,
                         worst_drawdowns: int = 5, rolling_window: int = DEFAULT_ROLLING_WINDOW,
                         trips: Sequence[RoundTrip] | None = None, include_series: bool = True) -> dict[str, Any]:
    """Every metric over an already-computed period return series (see :func:`summary`)."""
    clean = returns.dropna()
    r = clean.to_numpy(dtype=np.float64)
    n = len(r)
    index = pd.DatetimeIndex(clean.index)
    P = periods_per_year
    dd = _drawdown_array(r) if n else np.zeros(0)
    table = _drawdown_table(dd, index)
    total = float(np.prod(1.0 + r) - 1.0) if n else 0.0
    cagr_v = cagr(r, P)
    mdd = float(min(dd.min(), 0.0)) if n else 0.0
    monthly = period_returns(clean, "M")
    out: dict[str, Any] = {
        "periods": n,
        "periods_per_year": P,
        "start": index[0] if n else None,
        "end": index[-1] if n else None,
        "cumulative_return": total,
        "cagr": cagr_v,
        "volatility": volatility(r, P),
        "sharpe": sharpe(r, rf, P),
        "smart_sharpe": sharpe(r, rf, P, smart=True),
        "sortino": sortino(r, rf, P),
        "smart_sortino": sortino(r, rf, P, smart=True),
        "calmar": cagr_v / abs(mdd) if mdd != 0 else math.nan,
        "omega": omega(r, rf, 0.0, P),
        "max_drawdown": mdd,
        "longest_drawdown_days": int(table.days.max()) if len(table.days) else 0,
        "longest_drawdown_periods": int(table.periods.max()) if len(table.periods) else 0,
        "ulcer_index": math.sqrt(float(np.dot(dd, dd)) / (n - 1)) if n >= 2 else math.nan,
        "var": value_at_risk(r, confidence),
        "cvar": conditional_value_at_risk(r, confidence),
        "skew": skew(r),
        "kurtosis": kurtosis(r),
        "best_day": float(r.max()) if n else math.nan,
        "worst_day": float(r.min()) if n else math.nan,
        "best_month": float(monthly.max()) if len(monthly) else math.nan,
        "worst_month": float(monthly.min()) if len(monthly) else math.nan,
        "win_rate_days": win_rate(r),
        "max_consecutive_wins": _longest_run(r > 0),
        "max_consecutive_losses": _longest_run(r < 0),
    }
    if benchmark is not None:
        out.update(greeks(r, benchmark.reindex(index).to_numpy(dtype=np.float64), P))
    if trips is not None:
        out["trades"] = trade_stats(trips)
    if include_series:
        out["returns"] = clean
        out["drawdown"] = pd.Series(dd, index=index, name="drawdown")
        out["drawdown_periods"] = table.worst(worst_drawdowns)
        out["monthly_returns"] = monthly_returns_table(clean)
        vol, sharpe_r, sortino_r = rolling_ratios(clean, rolling_window, rf, P)
        out["rolling_sharpe"] = sharpe_r
        out["rolling_sortino"] = sortino_r
        out["rolling_volatility"] = vol
    return out


def summary(equity: pd.Series, cash_flows: pd.Series | None = None, *, benchmark: pd.Series | None = None,
            rf: float = 0.0, periods_per_year: float = DEFAULT_PERIODS_PER_YEAR, resample: bool | None = None,
            confidence: float = 0.95, worst_drawdowns: int = 5, rolling_window: int = DEFAULT_ROLLING_WINDOW,
            trips: Sequence[RoundTrip] | None = None, include_series: bool = True) -> dict[str, Any]:
    """All metrics of an equity curve as one dict.

    ``equity``: account equity, tz-aware index. ``cash_flows``: signed external flows (deposits +,
    withdrawals -) at their times. ``benchmark``: benchmark prices (e.g. SPY closes), aligned to the
    strategy's periods. ``trips``: closed round trips for the trade statistics (under ``"trades"``).
    """
    eq = clean_equity(equity, resample=resample)
    rets = returns_from_equity(eq, cash_flows, resample=False)
    bench = None
    if benchmark is not None:
        bench = benchmark_returns(benchmark, pd.DatetimeIndex(eq.index), resample=resample)
    return summary_from_returns(rets, benchmark=bench, rf=rf, periods_per_year=periods_per_year,
                                confidence=confidence, worst_drawdowns=worst_drawdowns,
                                rolling_window=rolling_window, trips=trips, include_series=include_series)
