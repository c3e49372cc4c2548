"""Metrics over periods and windows: calendar-period returns, the monthly table, rolling ratios,
benchmark returns and greeks, and statistics of closed round trips.

Split from :mod:`core.metrics` (which re-exports every name here); same conventions: pure,
vectorised numpy, one formula per docstring, checked against QuantStats in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC

import numpy as np
import numpy.typing as npt
import pandas as pd

from core.errors import InvalidInput
from core.records import RoundTrip

DEFAULT_PERIODS_PER_YEAR = 252
DEFAULT_ROLLING_WINDOW = 126
FloatArray = npt.NDArray[np.float64]
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def _group_codes(index: pd.DatetimeIndex, freq: str) -> npt.NDArray[np.int64]:
    idx = index.tz_convert(UTC)
    year: npt.NDArray[np.int64] = idx.year.to_numpy(dtype=np.int64)
    if freq == "Y":
        return year
    if freq == "M":
        month: npt.NDArray[np.int64] = year * 12 + idx.month.to_numpy(dtype=np.int64) - 1
        return month
    if freq == "W":  # ISO week
        iso = idx.isocalendar()
        week: npt.NDArray[np.int64] = iso["year"].to_numpy(dtype=np.int64) * 100 + iso["week"].to_numpy(dtype=np.int64)
        return week
    if freq == "D":
        return np.asarray(idx.as_unit("ns").asi8 // (86_400 * 10**9), dtype=np.int64)
    raise InvalidInput(f"period_returns: unknown frequency {freq!r} (use D, W, M or Y)")


def period_returns(returns: pd.Series, freq: str = "M") -> pd.Series:
    """Compounded returns per calendar day/ISO week/month/year (UTC), indexed by each period's last point."""
    clean = returns.dropna()
    if clean.empty:
        return clean
    codes = _group_codes(pd.DatetimeIndex(clean.index), freq)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(codes)] - 1
    values = np.multiply.reduceat(1.0 + clean.to_numpy(dtype=np.float64), starts) - 1.0
    return pd.Series(values, index=clean.index[ends], name=f"returns_{freq}")


def monthly_returns_table(returns: pd.Series) -> pd.DataFrame:
    """Year x month table of compounded returns (NaN where a month has no data) plus ``EOY``."""
    monthly = period_returns(returns, "M")
    yearly = period_returns(returns, "Y")
    if monthly.empty:
        return pd.DataFrame(columns=[*_MONTHS, "EOY"], dtype=np.float64)
    years = monthly.index.year.to_numpy()
    uniq = np.unique(years)
    grid = np.full((len(uniq), 12), np.nan)
    grid[np.searchsorted(uniq, years), monthly.index.month.to_numpy() - 1] = monthly.to_numpy()
    frame = pd.DataFrame(grid, index=uniq, columns=list(_MONTHS))
    frame["EOY"] = yearly.to_numpy()
    return frame


FLAT_TOLERANCE = 64 * float(np.finfo(np.float64).eps)
"""Returns are ``E_i / E_(i-1) - 1``: the division rounds to about one ulp of a number near 1, so
returns closer than this (~1.4e-14, scaled up for |r| > 1) are one value, not a dispersion."""


def is_flat(r: FloatArray) -> bool:
    """All values equal, up to the rounding of the returns' own computation (empty: not flat)."""
    if not len(r):
        return False
    hi, lo = float(r.max()), float(r.min())
    return hi - lo <= FLAT_TOLERANCE * max(1.0, abs(hi), abs(lo))


def _flat_windows(returns: pd.Series, window: int) -> tuple[npt.NDArray[np.bool_], FloatArray]:
    """Per window end: whether every step inside the window is within :data:`FLAT_TOLERANCE` (one
    value up to rounding; a NaN breaks flatness), and the value at the window's end.

    Counted with one cumulative sum of the steps, O(n), instead of rolling max/min.
    """
    a = returns.to_numpy(dtype=np.float64)
    n = len(a)
    flat = np.zeros(n, dtype=bool)
    if n < window or window < 2:  # a one-value window has no dispersion to speak of: left to pandas (NaN)
        return flat, a
    d = np.diff(a)
    np.abs(d, out=d)
    with np.errstate(invalid="ignore"):
        step = ~(d <= FLAT_TOLERANCE)  # NaN on either side counts as a step
        big = np.flatnonzero(step & (np.abs(a[1:]) > 1.0))  # rare |r| > 1: the tolerance scales with it
    if len(big):
        scale = np.maximum(np.abs(a[1:][big]), np.abs(a[:-1][big]))
        step[big] = ~(d[big] <= FLAT_TOLERANCE * scale)
    del d
    changes = np.zeros(n, dtype=np.int32)  # changes[i]: steps between rows 0..i
    np.cumsum(step, out=changes[1:])
    # the window ending at row i spans rows i-window+1..i: flat when no step was counted in between
    np.equal(changes[window - 1:], changes[:n - window + 1], out=flat[window - 1:])
    flat &= ~np.isnan(a)
    return flat, a


def _excess_series(returns: pd.Series, rf: float, periods_per_year: float) -> pd.Series:
    return returns if rf == 0 else returns - ((1.0 + rf) ** (1.0 / periods_per_year) - 1.0)


def rolling_volatility(returns: pd.Series, window: int = DEFAULT_ROLLING_WINDOW,
                       periods_per_year: float = DEFAULT_PERIODS_PER_YEAR) -> pd.Series:
    """Trailing ``std(r, ddof=1) * sqrt(P)``; exactly 0 over a window of one value (pandas' running
    sums leave noise there)."""
    out = returns.rolling(window).std().to_numpy(dtype=np.float64) * math.sqrt(periods_per_year)
    flat, _ = _flat_windows(returns, window)
    out[flat] = 0.0
    return pd.Series(out, index=returns.index, name=returns.name)


def rolling_sharpe(returns: pd.Series, window: int = DEFAULT_ROLLING_WINDOW, rf: float = 0.0,
                   periods_per_year: float = DEFAULT_PERIODS_PER_YEAR) -> pd.Series:
    """Trailing Sharpe; NaN over a window of one value (no dispersion: undefined, not ±millions)."""
    r = _excess_series(returns, rf, periods_per_year)
    roll = r.rolling(window)
    out = (roll.mean() / roll.std()).to_numpy(dtype=np.float64) * math.sqrt(periods_per_year)
    flat, _ = _flat_windows(r, window)
    out[flat] = math.nan
    return pd.Series(out, index=returns.index, name=returns.name)


def rolling_sortino(returns: pd.Series, window: int = DEFAULT_ROLLING_WINDOW, rf: float = 0.0,
                    periods_per_year: float = DEFAULT_PERIODS_PER_YEAR) -> pd.Series:
    """Trailing Sortino; over a window of one value ``c`` it is exact: NaN if ``c >= 0`` (no downside),
    ``-sqrt(P)`` if ``c < 0``."""
    r = _excess_series(returns, rf, periods_per_year)
    downside = (np.minimum(r, 0.0) ** 2).rolling(window).sum() / window
    out = (r.rolling(window).mean() / np.sqrt(downside)).to_numpy(dtype=np.float64) * math.sqrt(periods_per_year)
    flat, value = _flat_windows(r, window)
    out[flat] = np.where(value[flat] < 0, -math.sqrt(periods_per_year), math.nan)
    return pd.Series(out, index=returns.index, name=returns.name)


def rolling_ratios(returns: pd.Series, window: int = DEFAULT_ROLLING_WINDOW, rf: float = 0.0,
                   periods_per_year: float = DEFAULT_PERIODS_PER_YEAR) -> tuple[pd.Series, pd.Series, pd.Series]:
    """``(rolling_volatility, rolling_sharpe, rolling_sortino)`` with the same values as those three
    functions, sharing their running sums and the flat-window scan (what :func:`summary` uses).

    The flat windows are found once on the raw returns: subtracting a constant ``rf`` per period
    makes no window more or less flat.
    """
    sq = math.sqrt(periods_per_year)
    flat, _ = _flat_windows(returns, window)
    std_raw = returns.rolling(window).std().to_numpy(dtype=np.float64)
    r = _excess_series(returns, rf, periods_per_year)
    roll = r.rolling(window)
    mean = roll.mean().to_numpy(dtype=np.float64)
    std = std_raw if rf == 0 else roll.std().to_numpy(dtype=np.float64)
    downside = (np.minimum(r, 0.0) ** 2).rolling(window).sum().to_numpy(dtype=np.float64) / window
    with np.errstate(divide="ignore", invalid="ignore"):
        vol = std_raw * sq
        sharpe = mean / std * sq
        sortino = mean / np.sqrt(downside) * sq
    vol[flat] = 0.0
    sharpe[flat] = math.nan
    value = r.to_numpy(dtype=np.float64)
    sortino[flat] = np.where(value[flat] < 0, -sq, math.nan)
    idx, name = returns.index, returns.name
    return pd.Series(vol, index=idx, name=name), pd.Series(sharpe, index=idx, name=name), pd.Series(
        sortino, index=idx, name=name)


# ----------------------------------------------------------------------------- benchmark


def greeks(returns: pd.Series | FloatArray, bench: pd.Series | FloatArray,
           periods_per_year: float = DEFAULT_PERIODS_PER_YEAR) -> dict[str, float]:
    """Beta, annualised alpha (``(mean_r - beta * mean_b) * periods``), correlation, information ratio.

    Computed on the periods where both are observed. The information ratio is per period, not
    annualised (QuantStats' convention).
    """
    r = np.asarray(returns, dtype=np.float64)
    b = np.asarray(bench, dtype=np.float64)
    both = ~(np.isnan(r) | np.isnan(b))
    r, b = r[both], b[both]
    out = {"beta": math.nan, "alpha": math.nan, "correlation": math.nan, "information_ratio": math.nan}
    if len(r) < 2:
        return out
    dr, db = r - r.mean(), b - b.mean()
    cov = float(np.dot(dr, db)) / (len(r) - 1)
    var_b = float(np.dot(db, db)) / (len(r) - 1)
    var_r = float(np.dot(dr, dr)) / (len(r) - 1)
    beta = cov / var_b if var_b != 0 else math.nan
    out["beta"] = beta
    out["alpha"] = (float(r.mean()) - beta * float(b.mean())) * periods_per_year
    out["correlation"] = cov / math.sqrt(var_r * var_b) if var_r > 0 and var_b > 0 else math.nan
    diff = r - b
    te = float(np.std(diff, ddof=1))
    out["information_ratio"] = float(diff.mean()) / te if te != 0 else math.nan
    return out


# ----------------------------------------------------------------------------- trades


def trade_stats(trips: Iterable[RoundTrip]) -> dict[str, float | int]:
    """Statistics over closed round trips by net P&L, in exit-time order.

    win rate = wins / trades (break-even counts as neither win nor loss but stays in the count);
    profit factor = gross wins / |gross losses|; payoff = average win / |average loss|;
    expectancy = mean net P&L per trade.
    """
    ordered = sorted(trips, key=lambda t: (t.exit_time, t.trade_id))
    pl = np.array([float(t.net_pl) for t in ordered], dtype=np.float64)
    held = np.array([t.holding_s for t in ordered], dtype=np.float64)
    n = len(pl)
    wins, losses = pl[pl > 0], pl[pl < 0]
    sum_win, sum_loss = float(wins.sum()), float(losses.sum())
    avg_win = float(wins.mean()) if len(wins) else math.nan
    avg_loss = float(losses.mean()) if len(losses) else math.nan
    if sum_loss < 0:
        profit_factor = sum_win / -sum_loss
    else:
        profit_factor = math.inf if sum_win > 0 else math.nan
    return {
        "trades": n,
        "wins": len(wins),
        "losses": len(losses),
        "win_rate": len(wins) / n if n else math.nan,
        "profit_factor": profit_factor,
        "payoff_ratio": avg_win / -avg_loss if len(wins) and len(losses) else math.nan,
        "expectancy": float(pl.mean()) if n else math.nan,
        "avg_win": avg_win,
        "avg_loss": avg_loss,
        "total_net_pl": float(pl.sum()),
        "max_consecutive_wins": _longest_run(pl > 0),
        "max_consecutive_losses": _longest_run(pl < 0),
        "avg_holding_s": float(held.mean()) if n else math.nan,
    }


def _longest_run(mask: npt.NDArray[np.bool_]) -> int:
    if not mask.any():
        return 0
    edges = np.diff(np.r_[False, mask, False].astype(np.int8))
    return int((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max())
