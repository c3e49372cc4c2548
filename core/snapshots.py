"""Equity snapshots: the row, the flow-adjusted drawdown, and the epoch-aligned grid they are stamped on.

Pure (no I/O, no clock: callers pass "now" and a market-hours predicate).

Drawdown is measured against a flow-adjusted peak, ``peak_t = max_s(E_s - D_s) + D_t`` where ``D`` is
cumulative net deposits, so a deposit or withdrawal never looks like a gain or a loss. It is
``E_t / peak_t - 1`` (``<= 0``); :class:`DrawdownTracker` keeps ``max(E - D)``, which one
``max(equity - net_deposits)`` query recovers from the stored series.

The grid: one instant per ``SNAPSHOT_SEC`` in market hours, one per ``OFF_HOURS_FACTOR * SNAPSHOT_SEC``
outside, both multiples of their step since the epoch, so every replica stamps the same instants.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

ZERO = Decimal(0)
OFF_HOURS_FACTOR = 15
"""Outside market hours one snapshot per ``OFF_HOURS_FACTOR * SNAPSHOT_SEC`` (60 s -> 15 min). An integer
factor keeps the sparse grid a subset of the dense one, both aligned to the epoch."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

MarketOpen = Callable[[datetime], bool]


class SnapshotSource(StrEnum):
    """How an ``equity_full_<slug>`` row was made (its ``source`` column)."""

    LIVE = "live"
    """The manager's flush at a grid instant."""
    GAP = "gap"
    """A recent hole bridged at take-over with the current book and marks."""
    HISTORY = "history"
    """The broker's daily portfolio history (first run only; equity and deposits only)."""
    SEED = "seed"
    """One point at the first deposit when there is no history."""
    REBUILD = "rebuild"
    """``rebuild-equity``: replayed from the activities at session closes."""
    REFILL = "refill"
    """``refill-snapshots``: replayed into a hole of the live grid."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EquitySnapshot:
    """One ``equity_full_<slug>`` row (a ``history`` point knows only equity and deposits)."""

    ts: datetime
    equity: Decimal
    cash: Decimal | None
    long_market_value: Decimal | None
    short_market_value: Decimal | None
    realized_pl: Decimal | None
    unrealized_pl: Decimal | None
    net_deposits: Decimal
    drawdown: float
    source: SnapshotSource = SnapshotSource.LIVE


class DrawdownTracker:
    """Flow-adjusted running peak (see the module docstring)."""

    __slots__ = ("max_excess",)

    def __init__(self, max_excess: Decimal | None = None) -> None:
        self.max_excess = max_excess
        """``max(equity - net_deposits)`` seen so far (``None`` before the first point)."""

    def update(self, equity: Decimal, net_deposits: Decimal) -> float:
        """Take in one point; its drawdown (``<= 0``; 0 while the peak is not positive)."""
        excess = equity - net_deposits
        if self.max_excess is None or excess > self.max_excess:
            self.max_excess = excess
        peak = self.max_excess + net_deposits
        if peak <= 0:
            return 0.0
        return min(0.0, float(equity / peak - 1))

    def absorb(self, other: DrawdownTracker) -> None:
        """Raise this peak to ``other``'s when it is higher (points written by another series)."""
        if other.max_excess is not None and (self.max_excess is None or other.max_excess > self.max_excess):
            self.max_excess = other.max_excess


def make_snapshot(ts: datetime, *, cash: Decimal, market_values: Iterable[Decimal], unrealized_pl: Decimal,
                  realized_pl: Decimal, net_deposits: Decimal, tracker: DrawdownTracker,
                  source: SnapshotSource = SnapshotSource.LIVE) -> EquitySnapshot:
    """Assemble a snapshot (market values split into long and short); updates ``tracker``."""
    long_mv = ZERO
    short_mv = ZERO
    for mv in market_values:
        if mv >= 0:
            long_mv += mv
        else:
            short_mv += mv
    equity = cash + long_mv + short_mv
    return EquitySnapshot(ts=ts, equity=equity, cash=cash, long_market_value=long_mv, short_market_value=short_mv,
                          realized_pl=realized_pl, unrealized_pl=unrealized_pl, net_deposits=net_deposits,
                          drawdown=tracker.update(equity, net_deposits), source=source)


def snapshot_interval_s(snapshot_sec: float, market_open: bool) -> float:
    """Spacing of the series: ``SNAPSHOT_SEC`` in market hours, ``OFF_HOURS_FACTOR`` times that outside."""
    return snapshot_sec if market_open else snapshot_sec * OFF_HOURS_FACTOR


def bucket_start(now: datetime, interval_s: float) -> datetime:
    """``now`` floored to a multiple of ``interval_s`` since the epoch (UTC): the same on every replica."""
    elapsed_us = (now - EPOCH) // timedelta(microseconds=1)
    step_us = max(1, int(round(interval_s * 1_000_000)))
    return EPOCH + timedelta(microseconds=elapsed_us - elapsed_us % step_us)


def due_snapshot(now: datetime, last_ts: datetime | None, *, snapshot_sec: float,
                 market_open: MarketOpen) -> datetime | None:
    """The grid instant to stamp a new snapshot with, or ``None`` when the current one is already taken."""
    ts = bucket_start(now, snapshot_sec)
    if not market_open(ts):
        ts = bucket_start(now, snapshot_interval_s(snapshot_sec, False))
    if last_ts is not None and ts <= last_ts:
        return None
    return ts


def due_points(now: datetime, last_ts: datetime | None, *, snapshot_sec: float, market_open: MarketOpen,
               max_points: int) -> list[datetime]:
    """The grid instants a flush at ``now`` stamps: the due one, and every one a late flush let pass."""
    ts = due_snapshot(now, last_ts, snapshot_sec=snapshot_sec, market_open=market_open)
    if ts is None or last_ts is None:
        return [] if ts is None else [ts]
    return missing_boundaries(last_ts, now, snapshot_sec=snapshot_sec, market_open=market_open,
                              max_points=max_points) or [ts]


def missing_boundaries(last_ts: datetime, now: datetime, *, snapshot_sec: float, market_open: MarketOpen,
                       max_points: int = 10_000) -> list[datetime]:
    """The grid instants strictly after ``last_ts`` and at or before ``now`` (a gap to refill).

    The same grid :func:`due_snapshot` stamps live; at most ``max_points`` (the newest ones).
    """
    fine = snapshot_sec
    coarse = snapshot_interval_s(snapshot_sec, False)
    start = max(last_ts, now - timedelta(seconds=coarse * max_points))
    out: list[datetime] = []
    p = bucket_start(start, fine) + timedelta(seconds=fine)
    while p <= now:
        if market_open(p):
            if p > last_ts:
                out.append(p)
            p += timedelta(seconds=fine)
        else:
            if bucket_start(p, coarse) == p and p > last_ts:
                out.append(p)
            nxt_coarse = bucket_start(p, coarse) + timedelta(seconds=coarse)
            # Walk the fine grid only when the market opens before the next coarse point.
            nxt_fine = p + timedelta(seconds=fine)
            p = nxt_fine if market_open(nxt_fine) else nxt_coarse
            if p != nxt_fine and p > nxt_fine and _opens_between(nxt_fine, p, fine, market_open):
                p = nxt_fine
    return out[-max_points:]


def _opens_between(a: datetime, b: datetime, step_s: float, market_open: MarketOpen) -> bool:
    """Coarse probe: does the market open somewhere in ``[a, b)`` (checked at 60 evenly spaced instants)?"""
    probe = a
    hop = timedelta(seconds=max(step_s, (b - a).total_seconds() / 60))
    while probe < b:
        if market_open(probe):
            return True
        probe += hop
    return False
