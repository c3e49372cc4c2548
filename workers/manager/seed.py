"""Pure: the equity points the live series does not stamp itself (the curve's start, a take-over gap)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal

from core.snapshots import DrawdownTracker, EquitySnapshot, MarketOpen, SnapshotSource, missing_boundaries
from workers.alpaca import PortfolioHistory
from workers.alpaca.wire import is_epoch_stand_in
from workers.manager.options import GAP_REFILL_MAX_AGE_S, GAP_REFILL_MAX_POINTS

ZERO = Decimal(0)
LIVE_OVERLAP = timedelta(hours=1)
"""The broker appends a "now" point to its history: the last hour is the live series' job."""


def seed_points(history: PortfolioHistory, *, now: datetime, deposits_until: Callable[[datetime], Decimal],
                initial_deposit: Decimal | None, deposit_baseline: Decimal, first_seen: datetime | None,
                tracker: DrawdownTracker) -> list[EquitySnapshot]:
    """The broker's daily equity (``history`` points), or one ``seed`` point at ``first_seen``.

    A history point knows equity and, from the ledger, deposits; points with neither are left out.
    With no usable history and an ``initial_deposit``, the curve starts at that deposit at the first
    activity or position (``first_seen``). ``tracker`` takes every point in order.
    """
    snaps: list[EquitySnapshot] = []
    for ts, eq in zip(history.timestamps, history.equity, strict=False):
        if eq is None or ts >= now - LIVE_OVERLAP or is_epoch_stand_in(ts):  # an unreadable time: never a 1970 point
            continue
        deposits = deposits_until(ts)
        if eq == 0 and deposits == 0:
            continue
        snaps.append(EquitySnapshot(ts=ts, equity=eq, cash=None, long_market_value=None, short_market_value=None,
                                    realized_pl=None, unrealized_pl=None, net_deposits=deposits,
                                    drawdown=tracker.update(eq, deposits), source=SnapshotSource.HISTORY))
    if not snaps and initial_deposit is not None and first_seen is not None:
        dep = initial_deposit
        snaps.append(EquitySnapshot(ts=first_seen, equity=dep, cash=dep, long_market_value=ZERO,
                                    short_market_value=ZERO, realized_pl=ZERO, unrealized_pl=ZERO,
                                    net_deposits=deposit_baseline or dep, drawdown=tracker.update(dep, dep),
                                    source=SnapshotSource.SEED))
    return snaps


def gap_points(last_ts: datetime, now: datetime, *, snapshot_sec: float, market_open: MarketOpen) -> list[datetime]:
    """The grid instants missed while nobody owned the destination (a take-over, a restart).

    Only the last ``GAP_REFILL_MAX_AGE_S`` are bridged, with today's values; older holes are for
    ``refill-snapshots``. The current instant is the live flush's.
    """
    since = max(last_ts, now - timedelta(seconds=GAP_REFILL_MAX_AGE_S))
    return missing_boundaries(since, now - timedelta(seconds=snapshot_sec), snapshot_sec=snapshot_sec,
                              market_open=market_open, max_points=GAP_REFILL_MAX_POINTS)
