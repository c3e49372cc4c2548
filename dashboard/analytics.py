"""The dashboard's only door to :mod:`core.metrics`: adapts stored rows to its inputs and its results to
what the pages draw. No formula lives here.

Returns are ``core.metrics``' time-weighted (cash-flow-neutral) returns: the equity curve plus the
deposits/withdrawals (the steps of ``net_deposits``) go in; intraday curves are resampled to NYSE
sessions by ``core.metrics`` itself, so a "day" is a trading session and the index is its close (UTC).
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple, cast

import numpy as np
import pandas as pd

from core import metrics as _m
from core.errors import InvalidInput

log = logging.getLogger(__name__)

ROLLING_WINDOW_DAYS = 63
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


class _Trip(NamedTuple):
    """The fields of :class:`core.records.RoundTrip` that ``core.metrics.trade_stats`` reads."""

    trade_id: str
    exit_time: int  # ns since the epoch: only ordered, never shown
    net_pl: float
    holding_s: float


def available() -> bool:
    return True


def _positive(equity: pd.Series) -> pd.Series:
    # core.metrics refuses zero/negative equity (a blown account has no return); stop the curve there
    bad = np.flatnonzero(equity.to_numpy() <= 0)
    return equity.iloc[: bad[0]] if len(bad) else equity


def flows_from_net_deposits(ts: pd.DatetimeIndex, net_deposits: np.ndarray) -> pd.Series:
    """Signed external cash flows at the points where cumulative net deposits step."""
    steps = np.diff(net_deposits, prepend=net_deposits[:1]) if net_deposits.size else net_deposits
    where = np.flatnonzero(steps != 0)
    return pd.Series(steps[where], index=ts[where], dtype=float)


def session_returns(ts_ns: np.ndarray, equity: np.ndarray, net_deposits: np.ndarray) -> pd.Series:
    """Cash-flow-neutral returns per NYSE session (index: session close, UTC)."""
    if ts_ns.size < 2:
        return pd.Series(dtype=float)
    idx = pd.DatetimeIndex(np.asarray(ts_ns, dtype=np.int64).view("datetime64[ns]"), tz="UTC")
    eq = _positive(pd.Series(equity, index=idx, dtype=float))
    flows = flows_from_net_deposits(idx[: len(eq)], np.asarray(net_deposits[: len(eq)], dtype=float))
    try:
        return _m.returns_from_equity(eq, flows)
    except InvalidInput:
        log.warning("equity curve rejected by core.metrics", exc_info=True)
        return pd.Series(dtype=float)


def daily_returns(daily: pd.DataFrame) -> pd.Series:
    """Returns of a daily frame (``equity``, ``net_deposits``; naive or aware date index), one per day."""
    if daily.empty or len(daily) < 2:
        return pd.Series(dtype=float)
    idx = pd.DatetimeIndex(daily.index)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    eq = _positive(pd.Series(daily["equity"].to_numpy(dtype=float), index=idx))
    flows = flows_from_net_deposits(idx[: len(eq)], daily["net_deposits"].to_numpy(dtype=float)[: len(eq)])
    try:
        return _m.returns_from_equity(eq, flows, resample=False)
    except InvalidInput:
        log.warning("daily equity rejected by core.metrics", exc_info=True)
        return pd.Series(dtype=float)


def drawdown_array(equity: np.ndarray, net_deposits: np.ndarray) -> np.ndarray:
    """Underwater curve (<= 0) of the cash-flow-neutral curve, point by point (no resampling)."""
    n = equity.size
    if n < 2:
        return np.zeros(n, dtype=float)
    idx = pd.date_range("2000-01-01", periods=n, freq="s", tz="UTC")  # positions only: no calendar involved
    eq = _positive(pd.Series(equity, index=idx, dtype=float))
    flows = flows_from_net_deposits(idx[: len(eq)], np.asarray(net_deposits[: len(eq)], dtype=float))
    try:
        returns = _m.returns_from_equity(eq, flows, resample=False)
    except InvalidInput:
        return np.zeros(n, dtype=float)
    dd = _m.drawdown_series(returns).to_numpy(dtype=float)
    out = np.zeros(n, dtype=float)
    out[1 : 1 + dd.size] = dd
    return out


def summary(returns: pd.Series) -> dict[str, float | None]:
    """Headline KPIs: total return, CAGR, Sharpe, Smart Sharpe, Sortino, Calmar, max drawdown, volatility."""
    keys = ("total_return", "cagr", "sharpe", "smart_sharpe", "sortino", "calmar", "max_drawdown", "volatility")
    if returns.empty:
        return dict.fromkeys(keys)
    result = _m.summary_from_returns(returns, include_series=False)
    result["total_return"] = result.get("cumulative_return")
    return {k: _num(result.get(k)) for k in keys}


def trade_stats(frame: pd.DataFrame) -> dict[str, float | None]:
    """Win rate, profit factor, expectancy… from ``closed_trades`` rows (exit_time, net_pl, holding_s)."""
    keys = ("win_rate", "profit_factor", "expectancy", "avg_win", "avg_loss", "payoff_ratio", "avg_holding_s")
    if frame.empty:
        return dict.fromkeys(keys) | {"trades": 0.0}
    # plain ints/floats (exit time as ns) keep building and sorting 1M trips cheap; ids keep row order
    exit_ns = pd.DatetimeIndex(frame["exit_time"]).as_unit("ns").asi8.tolist()
    held = np.nan_to_num(frame["holding_s"].to_numpy(dtype=float), nan=0.0).tolist()
    ids = [f"{i:09d}" for i in range(len(frame))]
    trips = list(map(_Trip._make, zip(ids, exit_ns, frame["net_pl"].to_numpy(dtype=float).tolist(), held,
                                      strict=True)))
    result = _m.trade_stats(cast(Any, trips))
    return {k: _num(result.get(k)) for k in keys} | {"trades": float(result["trades"])}


def current_drawdown(returns: pd.Series) -> float | None:
    if returns.empty:
        return None
    dd = _m.drawdown_series(returns)
    return _num(dd.iloc[-1]) if len(dd) else None


def drawdown_periods(returns: pd.Series, top: int = 10) -> pd.DataFrame:
    """Worst ``top`` drawdown periods: start, valley, end, days, depth, recovered."""
    if returns.empty:
        return pd.DataFrame()
    frame = _m.drawdown_periods(returns).worst(top)
    return frame.drop(columns=["periods"], errors="ignore")


def monthly_table(returns: pd.Series) -> pd.DataFrame:
    """Years x months (1..12) of compounded monthly returns."""
    if returns.empty:
        return pd.DataFrame()
    table = _m.monthly_returns_table(returns)
    out = table[list(MONTHS)].copy()
    out.columns = list(range(1, 13))
    return out


def rolling(returns: pd.Series, window: int = ROLLING_WINDOW_DAYS) -> tuple[pd.Series, pd.Series]:
    if len(returns) < window:
        return pd.Series(dtype=float), pd.Series(dtype=float)
    return (_m.rolling_sharpe(returns, window).dropna(), _m.rolling_volatility(returns, window).dropna())


def growth_index(returns: pd.Series) -> pd.Series:
    """Growth of 1 unit under ``returns`` (the wealth index ``core.metrics`` draws drawdowns from)."""
    if returns.empty:
        return returns
    return 1.0 + _m.cumulative_returns(returns)


def _num(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


class Excursions(NamedTuple):
    """Maximum adverse / favourable excursion of a round trip, in money (MAE <= 0 <= MFE)."""

    mae: float
    mfe: float
    bars: int  # one-minute bars inside the holding time that the figures come from
    coverage: float  # share of the holding time's minutes with a bar (0..1)


def excursions(direction: str, qty: float, entry_price: float, exit_price: float, entry_ns: int, exit_ns: int,
               bars: list[dict[str, Any]]) -> Excursions | None:
    """MAE/MFE from one-minute bars overlapping ``[entry, exit]`` (``None`` without any).

    Resolution is the minute: the entry and exit minutes' high/low may include prices just before the
    entry or after the exit. The fills themselves bound the extremes (a round trip cannot have been
    further from its entry than a price it traded at). Long: MAE = (lowest - entry) x qty,
    MFE = (highest - entry) x qty; short: mirrored.
    """
    minute = 60_000_000_000
    first_minute = entry_ns - entry_ns % minute
    inside = [b for b in bars if first_minute <= _ns(b["ts"]) <= exit_ns]
    if not inside or qty <= 0:
        return None
    high = max(max(float(b["high"]) for b in inside), entry_price, exit_price)
    low = min(min(float(b["low"]) for b in inside), entry_price, exit_price)
    if direction == "short":
        mae, mfe = (entry_price - high) * qty, (entry_price - low) * qty
    else:
        mae, mfe = (low - entry_price) * qty, (high - entry_price) * qty
    span = max(1, (exit_ns - first_minute) // minute + 1)
    covered = len({_ns(b["ts"]) // minute for b in inside})
    return Excursions(mae=mae, mfe=mfe, bars=len(inside), coverage=min(1.0, covered / span))


def _ns(ts: Any) -> int:
    return int(pd.Timestamp(ts).value) if not isinstance(ts, int) else ts


def day_change(daily: pd.DataFrame) -> tuple[float | None, float | None]:
    """Today's P&L: money and fraction of the equity the day started from, net of cash flows.

    ``daily``: calendar-day ``equity`` and ``net_deposits`` in the display zone (last row today).
    Both figures describe the same day, so they never disagree in sign.
    """
    if len(daily) < 2:
        return None, None
    prev = float(daily["equity"].iloc[-2])
    flow = float(daily["net_deposits"].iloc[-1] - daily["net_deposits"].iloc[-2])
    pl = float(daily["equity"].iloc[-1]) - prev - flow
    return pl, (pl / prev if prev > 0 else None)
