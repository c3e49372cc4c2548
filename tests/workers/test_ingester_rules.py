"""The ingester's pure decisions, as tables: no database, no network, no clock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.records import ActivityRecord
from workers.alpaca.records import OrderEventRow, OrderRow
from workers.alpaca.wire import EPOCH, activity_id_time, activity_time, is_epoch_stand_in, is_malformed_id
from workers.ingester.options import STREAM_ACTIVITIES, STREAM_ORDERS, STREAM_TRADE_UPDATES, IngestState
from workers.ingester.rules import (
    Batch,
    BatchResult,
    Checkpoint,
    activities_checkpoint,
    backfill_start,
    commit_head_start_s,
    event_checkpoint,
    fill_catchup_wait_s,
    ingest_state,
    lag_s,
    merge_order,
    newer_checkpoint,
    orders_checkpoint,
)

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
OID = uuid.UUID(int=1)
PARENT = uuid.UUID(int=2)


def order(status: str, filled: str | None = None, updated_s: int = 0, parent: uuid.UUID | None = None,
          created_s: int | None = None) -> OrderRow:
    return OrderRow(order_id=OID, raw={}, status=status, filled_qty=None if filled is None else Decimal(filled),
                    updated_at=T0 + timedelta(seconds=updated_s), parent_order_id=parent,
                    created_at=None if created_s is None else T0 + timedelta(seconds=created_s))


def activity(activity_id: str, *, kind: str = "FILL", ts: datetime = T0) -> ActivityRecord:
    return ActivityRecord(activity_id=activity_id, ts=ts, activity_type=kind)


# current, new -> (status kept, parent kept)
MERGE_CASES = [
    (None, order("new"), ("new", None)),
    (order("new"), order("filled", "1", 1), ("filled", None)),
    (order("filled", "1", 5), order("new", None, 9), ("filled", None)),  # later stamp, less progress: kept
    (order("partially_filled", "1"), order("partially_filled", "2"), ("partially_filled", None)),
    (order("accepted", "0", 3), order("partially_filled", "0", 1), ("partially_filled", None)),  # status rank
    (order("new", None, 1), order("new", None, 2), ("new", None)),
    (order("new", parent=PARENT), order("filled", "1", 1), ("filled", PARENT)),  # newer flat keeps the link
    (order("filled", "1", 5, parent=None), order("new", parent=PARENT), ("filled", PARENT)),  # older teaches it
    (order("new"), order("new"), ("new", None)),  # equal: the new rendering, nothing lost
]


@pytest.mark.parametrize(("current", "new", "expected"), MERGE_CASES)
def test_merge_order(current: OrderRow | None, new: OrderRow, expected: tuple[str, uuid.UUID | None]) -> None:
    merged = merge_order(current, new)
    assert (merged.status, merged.parent_order_id) == expected
    if current is not None and merged.status == current.status and merged.filled_qty == current.filled_qty:
        assert merged.updated_at in (current.updated_at, new.updated_at)


@pytest.mark.parametrize(
    ("current", "new", "replaces"),
    [
        (None, Checkpoint("s", "a", None), True),
        (Checkpoint("s", "a", T0), Checkpoint("s", "b", T0 + timedelta(seconds=1)), True),
        (Checkpoint("s", "a", T0), Checkpoint("s", "b", T0), True),
        (Checkpoint("s", "a", T0), Checkpoint("s", "b", T0 - timedelta(seconds=1)), False),
        (Checkpoint("s", "a", T0), Checkpoint("s", "b", None), False),
        (Checkpoint("s", "a", None), Checkpoint("s", "b", T0), True),
    ],
)
def test_newer_checkpoint(current: Checkpoint | None, new: Checkpoint, replaces: bool) -> None:
    assert newer_checkpoint(current, new) is replaces


def test_batch_dedupes_and_a_failed_batch_merges_back_behind_newer_rows() -> None:
    # Arrange: a batch that failed to commit, and rows that arrived meanwhile
    failed = Batch()
    failed.add_activity(activity("a1"))
    failed.add_order(order("new", parent=PARENT))
    failed.add_checkpoint(Checkpoint(STREAM_ACTIVITIES, "a1", T0))
    failed.received_monotonic.append(1.0)
    pending = Batch()
    pending.add_activity(ActivityRecord(activity_id="a1", ts=T0, activity_type="FILL", symbol="NEWER"))
    pending.add_activity(activity("a1"))  # duplicate key within the batch: first one kept
    pending.add_order(order("filled", "1", 1))
    pending.add_checkpoint(Checkpoint(STREAM_ACTIVITIES, "a2", T0 + timedelta(seconds=1)))
    pending.received_monotonic.append(2.0)

    # Act
    pending.merge_older(failed)

    # Assert
    assert pending.size == 2
    assert pending.activities[("a1", T0)].symbol == "NEWER"
    assert (pending.orders[OID].status, pending.orders[OID].parent_order_id) == ("filled", PARENT)
    assert pending.checkpoints[STREAM_ACTIVITIES].last_id == "a2"
    assert pending.received_monotonic == [1.0, 2.0]
    assert bool(Batch()) is False
    assert bool(Batch(checkpoints={"s": Checkpoint("s", None, T0)})) is True


def test_singles_split_a_batch_one_row_each_then_checkpoints() -> None:
    batch = Batch()
    batch.add_activity(activity("a1"))
    batch.add_activity(activity("a2"))
    batch.add_event(OrderEventRow(event_key="x:1", ts=T0, event="fill", raw={}, orders=(order("filled", "1"),)))
    batch.add_checkpoint(Checkpoint(STREAM_ACTIVITIES, "a2", T0))
    singles = batch.singles()
    assert [s.size for s in singles] == [1, 1, 1, 1, 0]
    assert singles[-1].checkpoints == batch.checkpoints


def test_batch_results_add_up() -> None:
    a = BatchResult(new_activities=2, new_fills=1, max_fill_seq=7, activity_version=3, new_malformed=1)
    b = BatchResult(new_events=4, new_fill_events=2, orders_changed=1, max_fill_seq=None, activity_version=None)
    c = BatchResult(new_fills=1, max_fill_seq=9, activity_version=5)
    total = a.plus(b).plus(c)
    assert total == BatchResult(new_activities=2, new_fills=2, max_fill_seq=9, new_events=4, new_fill_events=2,
                                orders_changed=1, activity_version=5, new_malformed=1)
    assert total.changed == 7


@pytest.mark.parametrize(
    ("activity_id", "expected"),
    [
        # New York local time: 10:00 EST is 15:00 UTC; in July (EDT) 11:00 is 15:00 UTC
        ("20260302100000123::6f1c2d6e-0000-4000-8000-000000000001", T0 + timedelta(milliseconds=123)),
        ("20260302100000123", T0 + timedelta(milliseconds=123)),
        ("20260701110000000::u", datetime(2026, 7, 1, 15, 0, tzinfo=UTC)),
        ("20220202135509981::u", datetime(2022, 2, 2, 18, 55, 9, 981000, tzinfo=UTC)),  # Alpaca's documented fill
        ("20220812000000000::u", datetime(2022, 8, 12, 4, 0, tzinfo=UTC)),  # date-only posting: NY midnight
        ("2026030215000012::x", None),  # 16 digits
        ("20261302150000123::x", None),  # month 13
        ("abc::def", None),
        ("malformed:0123", None),
    ],
)
def test_activity_id_time(activity_id: str, expected: datetime | None) -> None:
    assert activity_id_time(activity_id) == expected


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (activity("20260302100000123::u", kind="FILL", ts=T0 + timedelta(hours=1)), T0 + timedelta(hours=1)),
        (activity("20260302100000123::u", kind="DIV", ts=T0.replace(hour=0)), T0 + timedelta(milliseconds=123)),
        (activity("plain-id", kind="DIV", ts=T0.replace(hour=0)), T0.replace(hour=0)),
    ],
)
def test_activity_time_prefers_the_id_for_date_only_activities(row: ActivityRecord, expected: datetime) -> None:
    assert activity_time(row) == expected


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([], None),
        (["malformed:ab"], None),
        (["20260302100000001::a", "malformed:ab", "20260302100000003::c", "20260302100000002::b"],
         ("20260302100000003::c", T0 + timedelta(milliseconds=3))),
    ],
)
def test_activities_checkpoint_is_the_newest_real_activity(ids: list[str], expected: tuple[str, datetime] | None) -> None:
    page = [activity(i, kind="DIV", ts=T0.replace(hour=0)) for i in ids]
    cp = activities_checkpoint(page)
    assert (None if cp is None else (cp.last_id, cp.last_ts)) == expected
    assert cp is None or cp.stream == STREAM_ACTIVITIES
    assert all(is_malformed_id(i) is i.startswith("malformed:") for i in ids)


def test_orders_checkpoint_follows_top_level_submissions_only() -> None:
    page = [order("new", created_s=5), order("new", created_s=50, parent=PARENT), order("new")]
    assert orders_checkpoint(page) == Checkpoint(STREAM_ORDERS, None, T0 + timedelta(seconds=5))
    assert orders_checkpoint([order("new", created_s=9, parent=PARENT)]) is None


@pytest.mark.parametrize(("ts", "has_checkpoint"), [(T0, True), (EPOCH, False)])
def test_event_checkpoint_skips_the_epoch_stand_in(ts: datetime, has_checkpoint: bool) -> None:
    cp = event_checkpoint(OrderEventRow(event_key="x:1", ts=ts, event="fill", raw={}))
    assert (cp == Checkpoint(STREAM_TRADE_UPDATES, "x:1", ts)) is has_checkpoint
    assert (cp is None) is (not has_checkpoint)
    assert is_epoch_stand_in(ts) is (not has_checkpoint)


DEFAULT = T0 - timedelta(days=10)
SINCE = T0 - timedelta(days=1)


@pytest.mark.parametrize(
    ("checkpoints", "since", "expected"),
    [
        ({}, None, DEFAULT),
        ({STREAM_ACTIVITIES: Checkpoint(STREAM_ACTIVITIES, "a", T0)}, None, T0 - timedelta(seconds=300)),
        ({STREAM_ACTIVITIES: Checkpoint(STREAM_ACTIVITIES, "a", None)}, None, DEFAULT),
        ({STREAM_ORDERS: Checkpoint(STREAM_ORDERS, None, T0)}, None, DEFAULT),  # another stream's cursor
        ({STREAM_ACTIVITIES: Checkpoint(STREAM_ACTIVITIES, "a", T0)}, SINCE, SINCE),
    ],
)
def test_backfill_start(checkpoints: dict[str, Checkpoint], since: datetime | None, expected: datetime) -> None:
    assert backfill_start(STREAM_ACTIVITIES, checkpoints, since=since, default_start=DEFAULT, overlap_s=300) == expected


@pytest.mark.parametrize(
    ("stopped", "auth_failed", "db_ok", "connected", "backfilled", "state"),
    [
        (True, True, False, True, True, IngestState.STOPPED),
        (False, True, False, True, True, IngestState.AUTH_ERROR),
        (False, False, False, True, True, IngestState.DB_UNAVAILABLE),
        (False, False, True, True, False, IngestState.RUNNING),
        (False, False, True, False, True, IngestState.RECONNECTING),
        (False, False, True, False, False, IngestState.STARTING),
    ],
)
def test_ingest_state_worst_first(stopped: bool, auth_failed: bool, db_ok: bool, connected: bool,
                                  backfilled: bool, state: IngestState) -> None:
    assert ingest_state(stopped=stopped, auth_failed=auth_failed, db_ok=db_ok, stream_connected=connected,
                        backfilled_once=backfilled) is state


@pytest.mark.parametrize(
    ("connected", "db_ok", "pending_s", "since_backfill_s", "expected"),
    [
        (True, True, 0.12345, 99.0, 0.123),
        (False, True, 0.5, 42.0, 42.0),
        (True, False, 0.5, 42.0, 42.0),
        (False, True, 0.5, None, None),
    ],
)
def test_lag(connected: bool, db_ok: bool, pending_s: float, since_backfill_s: float | None,
             expected: float | None) -> None:
    assert lag_s(stream_connected=connected, db_ok=db_ok, oldest_pending_age_s=pending_s,
                 since_last_backfill_s=since_backfill_s) == expected


@pytest.mark.parametrize(("last", "now", "wait"), [(0.0, 100.0, -99.5), (100.0, 100.2, 0.3), (100.0, 100.5, 0.0)])
def test_fill_catchup_wait(last: float, now: float, wait: float) -> None:
    assert fill_catchup_wait_s(last, now, 0.5) == pytest.approx(wait)


@pytest.mark.parametrize(
    ("durations", "expected"),
    [([], 0.0), ([0.01], 0.01), ([float(i) for i in range(10)], 9.0), ([float(i) for i in range(100)], 90.0)],
)
def test_commit_head_start_is_the_90th_percentile(durations: list[float], expected: float) -> None:
    assert commit_head_start_s(durations) == expected


@pytest.mark.parametrize(("now", "lookback_days", "expected"), [
    # 22:00 in New York on 1 Dec (03:00 UTC on the 2nd): New York's day is the 1st
    (datetime(2026, 12, 2, 3, 0, tzinfo=UTC), 4, datetime(2026, 11, 27, 5, 0, tzinfo=UTC)),
    # summer time: New York midnight is 04:00 UTC
    (datetime(2026, 7, 10, 12, 0, tzinfo=UTC), 1, datetime(2026, 7, 9, 4, 0, tzinfo=UTC)),
])
def test_the_dated_sweep_starts_at_new_york_midnight_days_back(now: datetime, lookback_days: int,
                                                               expected: datetime) -> None:
    from workers.ingester.rules import dated_sweep_start

    assert dated_sweep_start(now, lookback_days=lookback_days) == expected
