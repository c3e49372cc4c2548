"""Equity snapshots: flow-adjusted drawdown, the long/short split, and the epoch-aligned grid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.snapshots import (
    DrawdownTracker,
    SnapshotSource,
    bucket_start,
    due_snapshot,
    make_snapshot,
    missing_boundaries,
    snapshot_interval_s,
)

T = datetime(2026, 1, 6, 15, 0, tzinfo=UTC)


def open_until_16(ts: datetime) -> bool:
    return ts.hour < 16


@pytest.mark.parametrize(
    ("points", "drawdowns"),
    [
        ([(1000, 1000), (2000, 2000), (1800, 2000)], [0.0, 0.0, -0.1]),  # a deposit is not a new high
        ([(1000, 1000), (1300, 1500)], [0.0, 1300 / 1500 - 1]),  # withdrawal-free loss
        ([(1000, 1000), (1100, 1000), (990, 1000)], [0.0, 0.0, 990 / 1100 - 1]),
        ([(0, 0), (-5, 0)], [0.0, 0.0]),  # no positive peak: no drawdown
    ],
)
def test_drawdown_ignores_deposits_and_withdrawals(points: list[tuple[int, int]], drawdowns: list[float]) -> None:
    tracker = DrawdownTracker()

    got = [tracker.update(Decimal(e), Decimal(d)) for e, d in points]

    assert got == pytest.approx(drawdowns)


def test_absorb_keeps_the_higher_peak() -> None:
    ours, theirs = DrawdownTracker(Decimal(5)), DrawdownTracker(Decimal(9))
    ours.absorb(theirs)
    ours.absorb(DrawdownTracker())
    assert ours.max_excess == Decimal(9)


def test_make_snapshot_splits_long_and_short_market_value() -> None:
    snap = make_snapshot(T, cash=Decimal(1000), market_values=[Decimal(300), Decimal(-120), Decimal(0)],
                         unrealized_pl=Decimal(7), realized_pl=Decimal(3), net_deposits=Decimal(1000),
                         tracker=DrawdownTracker(), source=SnapshotSource.GAP)
    assert (snap.equity, snap.long_market_value, snap.short_market_value, snap.source) == (
        Decimal(1180), Decimal(300), Decimal(-120), "gap")


@pytest.mark.parametrize(
    ("now", "interval_s", "expected"),
    [
        (datetime(2026, 1, 6, 15, 0, 59, 999999, tzinfo=UTC), 60, T),
        (T + timedelta(seconds=61), 60, T + timedelta(seconds=60)),
        (T + timedelta(minutes=14), 900, T),
        (T + timedelta(milliseconds=250), 0.2, T + timedelta(milliseconds=200)),
    ],
)
def test_bucket_start(now: datetime, interval_s: float, expected: datetime) -> None:
    assert bucket_start(now, interval_s) == expected


def test_due_snapshot_and_gaps_share_one_grid() -> None:
    assert snapshot_interval_s(60, False) == 900
    assert due_snapshot(T + timedelta(seconds=61), T, snapshot_sec=60, market_open=open_until_16) == T + timedelta(
        seconds=60)
    assert due_snapshot(T + timedelta(seconds=30), T, snapshot_sec=60, market_open=open_until_16) is None
    gap = missing_boundaries(T + timedelta(minutes=57), T + timedelta(minutes=90), snapshot_sec=60,
                             market_open=open_until_16)
    assert gap == [T + timedelta(minutes=m) for m in (58, 59, 60, 75, 90)]  # 16:00 is closed, on the 15-min grid
