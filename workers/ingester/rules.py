"""The ingester's decisions, as pure functions over records: no database, no clock, no network.

- which of two states of one order wins (:func:`order_version`), and how a batch merges rows,
  parent links and checkpoints (:class:`Batch`);
- what checkpoint a page of activities, orders or a trade update advances;
- where a backfill starts, what state a destination is in, how far behind it may be, and when a
  stream fill may trigger the next REST catch-up.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from core.records import ActivityRecord
from workers.alpaca.budget import Priority
from workers.alpaca.records import OrderEventRow, OrderRow
from workers.alpaca.wire import NEW_YORK, ORDER_STATUS_RANK, activity_time, is_epoch_stand_in, is_malformed_id
from workers.ingester.options import STREAM_ACTIVITIES, STREAM_ORDERS, STREAM_TRADE_UPDATES, IngestState
from workers.ingester.provisional import ProvisionalFill

_NEVER = datetime.min.replace(tzinfo=UTC)


def order_version(row: OrderRow) -> tuple[Decimal, int, datetime]:
    """Order states compare by progress first — ``filled_qty`` (never decreases), then status
    (``new`` < ``partially_filled`` < terminal) — and only then by ``updated_at``.

    Duplicated, delayed or reordered deliveries therefore never move an order backwards, even when
    the broker's ``updated_at`` values are not monotonic (seen on the simulator: a fill stamped
    to the millisecond before the order's microsecond creation time).
    """
    return (
        row.filled_qty if row.filled_qty is not None else Decimal(0),
        ORDER_STATUS_RANK.get(row.status or "", 0),
        row.updated_at or _NEVER,
    )


def merge_order(current: OrderRow | None, new: OrderRow) -> OrderRow:
    """The state to keep when ``new`` arrives for an order already holding ``current``.

    The later version wins (ties go to ``new``); a parent link is never lost: Alpaca's order JSON
    carries none, only a parent's nested ``legs`` tell it, so a leg's own flat rendering must not
    erase what a nested one taught.
    """
    if current is None:
        return new
    if order_version(new) >= order_version(current):
        if new.parent_order_id is None and current.parent_order_id is not None:
            return dataclasses.replace(new, parent_order_id=current.parent_order_id)
        return new
    if current.parent_order_id is None and new.parent_order_id is not None:
        return dataclasses.replace(current, parent_order_id=new.parent_order_id)
    return current


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """How far one source has been read (``checkpoints`` row)."""

    stream: str
    last_id: str | None
    last_ts: datetime | None


def newer_checkpoint(current: Checkpoint | None, new: Checkpoint) -> bool:
    """True when ``new`` replaces ``current``: a later (or equal) time wins; no time never does."""
    if current is None:
        return True
    return new.last_ts is not None and (current.last_ts is None or new.last_ts >= current.last_ts)


@dataclass(slots=True)
class Batch:
    """Rows waiting for one transaction. Keys deduplicate within the batch (first one kept)."""

    activities: dict[tuple[str, datetime], ActivityRecord] = field(default_factory=dict)
    events: dict[tuple[str, datetime], OrderEventRow] = field(default_factory=dict)
    orders: dict[uuid.UUID, OrderRow] = field(default_factory=dict)
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    received_monotonic: list[float] = field(default_factory=list)
    provisional: dict[str, ProvisionalFill] = field(default_factory=dict)
    """Stream fills (:mod:`workers.ingester.provisional`), by id."""

    @property
    def size(self) -> int:
        return len(self.activities) + len(self.events) + len(self.orders) + len(self.provisional)

    def __bool__(self) -> bool:
        return self.size > 0 or bool(self.checkpoints)

    def add_activity(self, row: ActivityRecord) -> None:
        self.activities.setdefault((row.activity_id, row.ts), row)

    def add_event(self, row: OrderEventRow) -> None:
        self.events.setdefault((row.event_key, row.ts), row)
        for order in row.orders:
            self.add_order(order)

    def add_provisional(self, fill: ProvisionalFill) -> None:
        self.provisional.setdefault(fill.activity_id, fill)

    def add_order(self, row: OrderRow) -> None:
        self.orders[row.order_id] = merge_order(self.orders.get(row.order_id), row)

    def add_checkpoint(self, cp: Checkpoint) -> None:
        if newer_checkpoint(self.checkpoints.get(cp.stream), cp):
            self.checkpoints[cp.stream] = cp

    def merge_older(self, older: Batch) -> None:
        """Put back a batch that failed to commit; rows added since keep priority."""
        for key, act in older.activities.items():
            self.activities.setdefault(key, act)
        for key, ev in older.events.items():
            self.events.setdefault(key, ev)
        for order in older.orders.values():
            self.add_order(order)
        for fill in older.provisional.values():
            self.provisional.setdefault(fill.activity_id, fill)
        for cp in older.checkpoints.values():
            self.add_checkpoint(cp)
        self.received_monotonic = older.received_monotonic + self.received_monotonic

    def singles(self) -> list[Batch]:
        """One batch per row, then one for the checkpoints: the fallback when the database refuses
        the whole batch (one bad row must not block the others)."""
        out = [Batch(activities={k: a}) for k, a in self.activities.items()]
        out += [Batch(events={k: e}) for k, e in self.events.items()]
        out += [Batch(orders={k: o}) for k, o in self.orders.items()]
        out += [Batch(provisional={k: p}) for k, p in self.provisional.items()]
        out.append(Batch(checkpoints=dict(self.checkpoints)))
        return out


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one committed transaction changed."""

    new_activities: int = 0
    new_fills: int = 0
    max_fill_seq: int | None = None
    new_events: int = 0
    new_fill_events: int = 0
    orders_changed: int = 0
    activity_version: int | None = None
    new_malformed: int = 0
    new_provisional: int = 0
    """Provisional fills stored that the manager books (late ones not counted)."""

    @property
    def changed(self) -> int:
        return self.new_activities + self.new_events + self.orders_changed + self.new_provisional

    def plus(self, other: BatchResult) -> BatchResult:
        """Both transactions' changes (the newest version and the highest fill seq)."""
        seqs = [s for s in (self.max_fill_seq, other.max_fill_seq) if s is not None]
        return BatchResult(
            new_activities=self.new_activities + other.new_activities,
            new_fills=self.new_fills + other.new_fills,
            max_fill_seq=max(seqs) if seqs else None,
            new_events=self.new_events + other.new_events,
            new_fill_events=self.new_fill_events + other.new_fill_events,
            orders_changed=self.orders_changed + other.orders_changed,
            activity_version=other.activity_version or self.activity_version,
            new_malformed=self.new_malformed + other.new_malformed,
            new_provisional=self.new_provisional + other.new_provisional,
        )


def activities_checkpoint(page: Iterable[ActivityRecord]) -> Checkpoint | None:
    """The newest real activity of a page (made-up ``malformed:`` ids never become a cursor)."""
    last = max((row for row in page if not is_malformed_id(row.activity_id)), key=activity_time, default=None)
    return None if last is None else Checkpoint(STREAM_ACTIVITIES, last.activity_id, activity_time(last))


def orders_checkpoint(page: Iterable[OrderRow]) -> Checkpoint | None:
    """The newest submission time among the page's top-level orders (legs follow their parent)."""
    stamps = [row.created_at for row in page if row.created_at is not None and row.parent_order_id is None]
    return Checkpoint(STREAM_ORDERS, None, max(stamps)) if stamps else None


def event_checkpoint(row: OrderEventRow) -> Checkpoint | None:
    """A trade update's checkpoint; none for one without a usable time (the epoch stand-in)."""
    return None if is_epoch_stand_in(row.ts) else Checkpoint(STREAM_TRADE_UPDATES, row.event_key, row.ts)


def backfill_start(stream: str, checkpoints: Mapping[str, Checkpoint], *, since: datetime | None,
                   default_start: datetime, overlap_s: float) -> datetime:
    """Where a REST pass over ``stream`` starts: an explicit ``since``; else the checkpoint minus the
    overlap (late items land behind the cursor); else ``default_start`` (first run)."""
    if since is not None:
        return since
    cp = checkpoints.get(stream)
    if cp is None or cp.last_ts is None:
        return default_start
    return cp.last_ts - timedelta(seconds=overlap_s)


def dated_sweep_start(now: datetime, *, lookback_days: int) -> datetime:
    """Where the sweep for late-posted, date-only activities starts: New York midnight ``lookback_days``
    days before today's. Alpaca posts regulatory fees, crypto fees and some dividends after the day
    they are dated (at that day's midnight), so they land behind any time cursor; the weekend and a
    holiday are why the default looks back more than one day."""
    today = now.astimezone(NEW_YORK).date() - timedelta(days=lookback_days)
    return datetime(today.year, today.month, today.day, tzinfo=NEW_YORK).astimezone(UTC)


def backfill_priority(reasons: Set[str]) -> Priority:
    """What a pass spends the REST budget as: a fill-only pass confirms provisional fills, a timer
    pass reconciles, anything else (start, stream connected, resync) repairs a possible gap."""
    if reasons == {"fill"}:
        return Priority.CONFIRM
    if reasons <= {"timer", "fill"}:
        return Priority.RECONCILE
    return Priority.GAP_REPAIR


def backfill_overlap_s(priority: Priority, *, stream_connected: bool, overlap_s: float, confirm_overlap_s: float,
                       reconcile_overlap_s: float) -> float:
    """How far behind the checkpoint a pass starts: the full ``overlap_s`` unless the stream stayed up."""
    if not stream_connected or priority is Priority.GAP_REPAIR:
        return overlap_s
    return confirm_overlap_s if priority is Priority.CONFIRM else reconcile_overlap_s


def ingest_state(*, stopped: bool, auth_failed: bool, db_ok: bool, stream_connected: bool,
                 backfilled_once: bool) -> IngestState:
    """The heartbeat's state, worst condition first."""
    if stopped:
        return IngestState.STOPPED
    if auth_failed:
        return IngestState.AUTH_ERROR
    if not db_ok:
        return IngestState.DB_UNAVAILABLE
    if stream_connected:
        return IngestState.RUNNING
    return IngestState.RECONNECTING if backfilled_once else IngestState.STARTING


def lag_s(*, stream_connected: bool, db_ok: bool, oldest_pending_age_s: float,
          since_last_backfill_s: float | None) -> float | None:
    """How far behind the broker the store may be: the oldest unwritten row's age while the stream
    is up and writes succeed, else the time since the last completed backfill."""
    if stream_connected and db_ok:
        return round(oldest_pending_age_s, 3)
    return None if since_last_backfill_s is None else round(since_last_backfill_s, 3)


def fill_catchup_wait_s(last_catchup_monotonic: float, now_monotonic: float, min_interval_s: float) -> float:
    """Seconds until a stream fill may trigger the next activities catch-up (``<= 0``: now)."""
    return last_catchup_monotonic + min_interval_s - now_monotonic


def commit_head_start_s(recent_commit_s: Sequence[float]) -> float:
    """The 90th percentile of recent commit durations (0 before the first): the writer starts a
    flush that much early so a row is committed within ``flush_interval_s`` of arriving."""
    if not recent_commit_s:
        return 0.0
    ordered = sorted(recent_commit_s)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
