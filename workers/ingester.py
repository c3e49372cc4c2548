"""The activity ingester: every order, trade update and account activity of every owned destination
lands in ``<ACCOUNT_SCHEMA>`` exactly once, whatever the network or the database does.

Per destination (one :class:`Ingester`, four tasks):

- **stream**: the ``trade_updates`` websocket (:class:`workers.broker.TradeUpdatesStream`) with a
  staleness watchdog, jittered bounded reconnect backoff and re-authentication; every (re)connect
  requests a REST catch-up; a fill requests a quick activities catch-up.
- **backfill**: REST, the source of truth. On start (from the checkpoint, else ``since``, else
  ``default_lookback_days``), after every reconnect, after a buffer overflow, and every
  ``backfill_interval_s``; each pass re-reads an ``overlap_s`` window so late items are caught.
- **writer** (:class:`BatchWriter`): rows are buffered and flushed every ``flush_interval_s`` or
  ``flush_max_rows`` in one transaction with their checkpoints, the ``ch_versions`` bump and the
  ``NOTIFY`` (:data:`workers.notify.NEW_FILLS_CHANNEL`). Writes are idempotent (``ON CONFLICT``).
  Database down: keep buffering up to ``max_buffer_rows``, retry with backoff; past the bound new
  rows are dropped (counted, logged) and a full REST backfill is requested once the database is back.
- **heartbeat**: one row per destination in ``heartbeats`` every ``HEARTBEAT_SEC``.

:func:`run_ingester` owns destinations through :class:`workers.locks.OwnershipLocks` so only one
replica ingests a destination; :func:`run_backfill` re-reads a range on demand.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, TextIO

import asyncpg

from core.destinations import Destination
from core.errors import ColdHarbourError, DatabaseUnavailable
from core.schema import quote_ident
from core.settings import Settings
from workers.backoff import BackoffPolicy, backoff_delay_s
from workers.broker import (
    ActivityRow,
    BrokerAuthError,
    BrokerClient,
    BrokerError,
    BrokerTemporaryError,
    DestinationLog,
    OrderEventRow,
    OrderRow,
    TradeUpdatesStream,
    destination_log,
)
from workers.db import create_pool
from workers.heartbeat import write_heartbeat
from workers.locks import OwnershipLocks
from workers.notify import NEW_FILLS_CHANNEL

log = logging.getLogger(__name__)

SERVICE = "ingester"
STREAM_ACTIVITIES = "activities"
STREAM_ORDERS = "orders"
STREAM_TRADE_UPDATES = "trade_updates"


class IngestState(StrEnum):
    """What a destination's ingester is doing (``heartbeats.state``)."""

    STARTING = "starting"  # first backfill / first connect not done yet
    RUNNING = "running"  # stream connected, writes succeeding
    RECONNECTING = "reconnecting"  # websocket down, retrying with backoff (REST timer still runs)
    DB_UNAVAILABLE = "db_unavailable"  # writes failing; buffering in memory
    AUTH_ERROR = "auth_error"  # broker rejected the credentials; backing off
    STOPPED = "stopped"  # drained and stopped


@dataclass(frozen=True, slots=True)
class IngesterOptions:
    """Tuning knobs; the defaults suit production, tests shorten them."""

    flush_max_rows: int = 5000
    max_buffer_rows: int = 200_000
    backfill_interval_s: float = 60.0
    overlap_s: float = 300.0
    # First run reads the whole account history: a position opened before the window would otherwise
    # look like an orphan close to the lot engine and skew cash, equity and P&L.
    default_lookback_days: float = 3650.0
    # A stream fill triggers an activities-only REST read at most this often: 0.5 s keeps a fill's
    # freshness p95 under 1 s (docs/performance.md) at <= 120 calls/min, below Alpaca's 200/min.
    fill_catchup_min_interval_s: float = 0.5
    stream_stale_after_s: float = 90.0
    stream_ping_interval_s: float = 10.0
    request_timeout_s: float = 10.0
    drain_timeout_s: float = 10.0
    lock_check_interval_s: float = 5.0
    max_order_refreshes: int = 200
    db_retry: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(base_s=0.2, cap_s=5.0, max_attempts=None))
    reconnect: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(base_s=0.5, cap_s=30.0, max_attempts=None))
    auth_retry: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(base_s=5.0, cap_s=300.0, max_attempts=None))
    backfill_retry: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(base_s=1.0, cap_s=60.0, max_attempts=None))


# --- database side -------------------------------------------------------------------------------

_DB_DOWN_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    DatabaseUnavailable,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)


def is_db_unavailable(exc: BaseException) -> bool:
    """True for errors meaning "the database is unreachable or restarting" (retry later, keep the rows)."""
    return isinstance(exc, _DB_DOWN_ERRORS)


_STATUS_RANK = {"new": 0, "pending_new": 0, "accepted": 0, "pending_cancel": 0, "pending_replace": 0,
                "accepted_for_bidding": 0, "held": 0, "calculated": 1, "partially_filled": 2, "stopped": 2,
                "suspended": 1, "done_for_day": 3, "filled": 4, "canceled": 4, "expired": 4,
                "rejected": 4, "replaced": 4}  # fmt: skip
_STATUS_RANK_SQL = "CASE {col} " + " ".join(f"WHEN '{k}' THEN {v}" for k, v in _STATUS_RANK.items()) + " ELSE 0 END"


def order_version(row: OrderRow) -> tuple[Decimal, int, datetime]:
    """Order states compare by progress first — ``filled_qty`` (never decreases), then status
    (``new`` < ``partially_filled`` < terminal) — and only then by ``updated_at``.

    Duplicated, delayed or reordered deliveries therefore never move an order backwards, even when
    the broker's ``updated_at`` values are not monotonic (seen on the simulator: a fill stamped
    to the millisecond before the order's microsecond creation time).
    """
    return (
        row.filled_qty if row.filled_qty is not None else Decimal(0),
        _STATUS_RANK.get(row.status or "", 0),
        row.updated_at or datetime.min.replace(tzinfo=UTC),
    )


def activity_time(row: ActivityRow) -> datetime:
    """When an activity happened, for checkpoints: ``ts`` for fills; for others the id's
    ``YYYYMMDDHHMMSSmmm`` prefix when it has one (``date`` alone is too coarse)."""
    if row.activity_type != "FILL":
        prefix = row.activity_id.split("::", 1)[0]
        if len(prefix) == 17 and prefix.isdigit():
            with contextlib.suppress(ValueError):
                return datetime.strptime(prefix[:14], "%Y%m%d%H%M%S").replace(
                    microsecond=int(prefix[14:]) * 1000, tzinfo=UTC
                )
    return row.ts


def _json(raw: Any) -> str:
    text = json.dumps(raw, separators=(",", ":"), default=str, ensure_ascii=False)
    # PostgreSQL jsonb cannot hold U+0000; keep the payload storable rather than losing the row.
    return text.replace("\\u0000", "\\ufffd")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    stream: str
    last_id: str | None
    last_ts: datetime | None


@dataclass(slots=True)
class Batch:
    """Rows waiting for one transaction. Keys deduplicate within the batch."""

    activities: dict[tuple[str, datetime], ActivityRow] = field(default_factory=dict)
    events: dict[tuple[str, datetime], OrderEventRow] = field(default_factory=dict)
    orders: dict[Any, OrderRow] = field(default_factory=dict)
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    received_monotonic: list[float] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.activities) + len(self.events) + len(self.orders)

    def __bool__(self) -> bool:
        return self.size > 0 or bool(self.checkpoints)

    def add_activity(self, row: ActivityRow) -> None:
        self.activities.setdefault((row.activity_id, row.ts), row)

    def add_event(self, row: OrderEventRow) -> None:
        self.events.setdefault((row.event_key, row.ts), row)
        for order in row.orders:
            self.add_order(order)

    def add_order(self, row: OrderRow) -> None:
        current = self.orders.get(row.order_id)
        if current is None:
            self.orders[row.order_id] = row
        elif order_version(row) >= order_version(current):
            # Only a parent's nested legs carry the parent link; never lose it to a flat rendering.
            if row.parent_order_id is None and current.parent_order_id is not None:
                row = dataclasses.replace(row, parent_order_id=current.parent_order_id)
            self.orders[row.order_id] = row
        elif current.parent_order_id is None and row.parent_order_id is not None:
            self.orders[row.order_id] = dataclasses.replace(current, parent_order_id=row.parent_order_id)

    def add_checkpoint(self, cp: Checkpoint) -> None:
        current = self.checkpoints.get(cp.stream)
        if current is None or (cp.last_ts is not None and (current.last_ts is None or cp.last_ts >= current.last_ts)):
            self.checkpoints[cp.stream] = cp

    def merge_older(self, older: Batch) -> None:
        """Put back a batch that failed to commit; rows added since keep priority."""
        for key, act in older.activities.items():
            self.activities.setdefault(key, act)
        for key, ev in older.events.items():
            self.events.setdefault(key, ev)
        for order in older.orders.values():
            self.add_order(order)
        for cp in older.checkpoints.values():
            self.add_checkpoint(cp)
        self.received_monotonic = older.received_monotonic + self.received_monotonic


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one committed transaction changed."""

    new_activities: int
    new_fills: int
    max_fill_seq: int | None
    new_events: int
    new_fill_events: int
    orders_changed: int
    activity_version: int | None
    new_malformed: int = 0

    @property
    def changed(self) -> int:
        return self.new_activities + self.new_events + self.orders_changed


COPY_MIN_ROWS = 1000
_STAGING_TABLE = "ch_ingest_activities_stage"


class RawStore:
    """SQL for the raw tables of one ``ACCOUNT_SCHEMA``. Every write is idempotent.

    A batch is written by ONE statement (data-modifying CTEs: activities, order events, orders,
    checkpoints, the ``ch_versions`` bump and the NOTIFY), so it is atomic without BEGIN/COMMIT and
    costs one round trip: the live path's latency depends on it. Rows travel as parallel arrays
    through ``unnest``; large activity batches are first binary-COPied into a temp table (then the
    caller must hold a transaction: :meth:`needs_transaction`).
    """

    def __init__(self, account_schema: str) -> None:
        s = quote_ident(account_schema)
        self.schema = account_schema
        act_cols = ("activity_id, ts, activity_type, fill_type, symbol, side, qty, price, net_amount, leaves_qty, "
                    "cum_qty, order_id, order_status, description, raw, parse_error")
        act_types = "text timestamptz text text text text numeric numeric numeric numeric numeric uuid text text jsonb text"
        act_arrays = ", ".join(f"${i + 2}::{t}[]" for i, t in enumerate(act_types.split()))
        ev_types = "text timestamptz uuid text text numeric numeric numeric jsonb text".split()
        ev_arrays = ", ".join(f"${i + 18}::{t}[]" for i, t in enumerate(ev_types))
        order_cols = ("client_order_id parent_order_id symbol side order_type order_class time_in_force qty notional "
                      "filled_qty filled_avg_price limit_price stop_price trail_price trail_percent status created_at "
                      "updated_at submitted_at filled_at canceled_at expired_at raw parse_error").split()  # fmt: skip
        order_types = ("uuid text uuid text text text text text numeric numeric numeric numeric numeric numeric "
                       "numeric numeric text timestamptz timestamptz timestamptz timestamptz timestamptz timestamptz "
                       "jsonb text").split()  # fmt: skip
        order_arrays = ", ".join(f"${i + 28}::{t}[]" for i, t in enumerate(order_types))
        # Alpaca's order JSON carries no parent id: only a parent's nested ``legs`` tell us, so a leg's
        # own update (trade update, flat listing) must not erase a parent link learned earlier.
        rank_new = _STATUS_RANK_SQL.format(col="EXCLUDED.status")
        rank_old = _STATUS_RANK_SQL.format(col="o.status")
        # Same order as order_version(): progress first, then updated_at. An equal state (e.g. the
        # flat and the nested rendering of one order) is not rewritten, so re-reads change nothing.
        newer = (f"((COALESCE(EXCLUDED.filled_qty, 0), {rank_new}, COALESCE(EXCLUDED.updated_at, '-infinity')) > "
                 f"(COALESCE(o.filled_qty, 0), {rank_old}, COALESCE(o.updated_at, '-infinity')))")
        updates = ", ".join(
            f"{c} = COALESCE(o.{c}, EXCLUDED.{c})" if c == "parent_order_id"
            else f"{c} = CASE WHEN {newer} THEN EXCLUDED.{c} ELSE o.{c} END"
            for c in order_cols
        )
        learned_parent = "(o.parent_order_id IS NULL AND EXCLUDED.parent_order_id IS NOT NULL)"
        tail = f"""
            ev AS (
                INSERT INTO {s}.order_events (destination, event_key, ts, order_id, event, execution_id, price, qty,
                    position_qty, raw, parse_error)
                SELECT $1, * FROM unnest({ev_arrays})
                ON CONFLICT (destination, event_key, ts) DO NOTHING
                RETURNING event, parse_error IS NOT NULL AS malformed
            ),
            ord AS (
                INSERT INTO {s}.orders AS o (destination, order_id, {", ".join(order_cols)})
                SELECT $1, * FROM unnest({order_arrays})
                ON CONFLICT (destination, order_id) DO UPDATE SET {updates}, ingested_at = now()
                WHERE {newer} OR {learned_parent}
                RETURNING parse_error IS NOT NULL AS malformed
            ),
            cp AS (
                INSERT INTO {s}.checkpoints AS c (destination, stream, last_id, last_ts, updated_at)
                SELECT $1, u.stream, u.last_id, u.last_ts, now()
                FROM unnest($53::text[], $54::text[], $55::timestamptz[]) AS u (stream, last_id, last_ts)
                ON CONFLICT (destination, stream) DO UPDATE SET
                    last_id = CASE WHEN c.last_ts IS NULL OR EXCLUDED.last_ts >= c.last_ts
                                   THEN COALESCE(EXCLUDED.last_id, c.last_id) ELSE c.last_id END,
                    last_ts = GREATEST(c.last_ts, EXCLUDED.last_ts),
                    updated_at = now()
            ),
            counts AS (
                SELECT (SELECT count(*) FROM act) AS new_activities,
                       (SELECT count(*) FROM act WHERE activity_type = 'FILL') AS new_fills,
                       (SELECT max(seq) FROM act WHERE activity_type = 'FILL') AS max_fill_seq,
                       (SELECT count(*) FROM ev) AS new_events,
                       (SELECT count(*) FROM ev WHERE event IN ('fill', 'partial_fill')) AS new_fill_events,
                       (SELECT count(*) FROM ord) AS orders_changed,
                       (SELECT count(*) FROM act WHERE malformed) + (SELECT count(*) FROM ev WHERE malformed)
                           + (SELECT count(*) FROM ord WHERE malformed) AS new_malformed
            ),
            ver AS (
                INSERT INTO public.ch_versions AS v (slug, activity_version, updated_at)
                SELECT $1, 1, now() FROM counts WHERE new_activities + new_events + orders_changed > 0
                ON CONFLICT (slug) DO UPDATE SET activity_version = v.activity_version + 1, updated_at = now()
                RETURNING activity_version
            )
            SELECT c.*, (SELECT activity_version FROM ver) AS activity_version,
                   CASE WHEN c.new_fills + c.new_fill_events > 0 THEN pg_notify($56, json_build_object(
                       'd', $1::text, 'n', c.new_fills, 'max_seq', c.max_fill_seq, 'events', c.new_fill_events,
                       'v', (SELECT activity_version FROM ver))::text) END AS notified
            FROM counts AS c"""
        insert_act = f"INSERT INTO {s}.activities (destination, {act_cols})"
        conflict = ("ON CONFLICT (destination, activity_id, ts) DO NOTHING "
                    "RETURNING activity_type, seq, parse_error IS NOT NULL AS malformed")
        self._write_unnest = f"WITH act AS ({insert_act} SELECT $1, * FROM unnest({act_arrays}) {conflict}),{tail}"
        # The staged variant keeps the parameter numbering: $2..$17 arrive as empty arrays (referenced
        # only so PostgreSQL knows their types), so both statements take the same arguments.
        typed = " + ".join(f"cardinality({a})" for a in act_arrays.split(", "))
        self._write_staged = (
            f"WITH act AS ({insert_act} SELECT $1, * FROM {_STAGING_TABLE} WHERE {typed} = 0 {conflict}),{tail}"
        )
        self._create_staging = f"""
            CREATE TEMP TABLE IF NOT EXISTS {_STAGING_TABLE} (activity_id text, ts timestamptz, activity_type text,
                fill_type text, symbol text, side text, qty numeric, price numeric, net_amount numeric,
                leaves_qty numeric, cum_qty numeric, order_id uuid, order_status text, description text, raw jsonb,
                parse_error text) ON COMMIT DELETE ROWS"""
        self._select_checkpoints = f"SELECT stream, last_id, last_ts FROM {s}.checkpoints WHERE destination = $1"
        self._select_open_orders = f"""
            SELECT order_id FROM {s}.orders
            WHERE destination = $1 AND (status IS NULL OR status NOT IN
                ('filled', 'canceled', 'expired', 'rejected', 'replaced', 'done_for_day'))
            ORDER BY updated_at NULLS FIRST LIMIT $2"""

    @staticmethod
    def needs_transaction(batch: Batch) -> bool:
        """True when :meth:`write_batch` takes several statements (COPY path): wrap it in a transaction."""
        return len(batch.activities) >= COPY_MIN_ROWS

    async def write_batch(self, conn: asyncpg.Connection, slug: str, batch: Batch) -> BatchResult:
        """Write ``batch``: rows, checkpoints, version bump and NOTIFY, atomically (see the class doc)."""
        activities = list(batch.activities.values())
        if len(activities) >= COPY_MIN_ROWS:
            await conn.execute(self._create_staging)
            await conn.copy_records_to_table(_STAGING_TABLE, records=zip(*_activity_columns(activities), strict=True))
            sql, act_args = self._write_staged, _activity_columns([])
        else:
            sql, act_args = self._write_unnest, _activity_columns(activities)
        cps = list(batch.checkpoints.values())
        row = await conn.fetchrow(
            sql,
            slug,
            *act_args,
            *_event_columns(list(batch.events.values())),
            *_order_columns(list(batch.orders.values())),
            [cp.stream for cp in cps],
            [cp.last_id for cp in cps],
            [cp.last_ts for cp in cps],
            NEW_FILLS_CHANNEL,
        )
        assert row is not None
        return BatchResult(
            new_activities=int(row["new_activities"]),
            new_fills=int(row["new_fills"]),
            max_fill_seq=row["max_fill_seq"],
            new_events=int(row["new_events"]),
            new_fill_events=int(row["new_fill_events"]),
            orders_changed=int(row["orders_changed"]),
            activity_version=row["activity_version"],
            new_malformed=int(row["new_malformed"]),
        )

    async def load_checkpoints(self, conn: asyncpg.Pool | asyncpg.Connection, slug: str) -> dict[str, Checkpoint]:
        rows = await conn.fetch(self._select_checkpoints, slug)
        return {r["stream"]: Checkpoint(r["stream"], r["last_id"], r["last_ts"]) for r in rows}

    async def open_order_ids(self, conn: asyncpg.Pool | asyncpg.Connection, slug: str, limit: int) -> list[Any]:
        return [r["order_id"] for r in await conn.fetch(self._select_open_orders, slug, limit)]


def _activity_columns(rows: Sequence[ActivityRow]) -> list[list[Any]]:
    return [
        [r.activity_id for r in rows],
        [r.ts for r in rows],
        [r.activity_type for r in rows],
        [r.fill_type for r in rows],
        [r.symbol for r in rows],
        [r.side for r in rows],
        [r.qty for r in rows],
        [r.price for r in rows],
        [r.net_amount for r in rows],
        [r.leaves_qty for r in rows],
        [r.cum_qty for r in rows],
        [r.order_id for r in rows],
        [r.order_status for r in rows],
        [r.description for r in rows],
        [_json(r.raw) for r in rows],
        [r.parse_error for r in rows],
    ]


def _event_columns(rows: Sequence[OrderEventRow]) -> list[list[Any]]:
    return [
        [r.event_key for r in rows],
        [r.ts for r in rows],
        [r.order_id for r in rows],
        [r.event for r in rows],
        [r.execution_id for r in rows],
        [r.price for r in rows],
        [r.qty for r in rows],
        [r.position_qty for r in rows],
        [_json(r.raw) for r in rows],
        [r.parse_error for r in rows],
    ]


_ORDER_FIELDS = (
    "order_id client_order_id parent_order_id symbol side order_type order_class time_in_force qty notional "
    "filled_qty filled_avg_price limit_price stop_price trail_price trail_percent status created_at updated_at "
    "submitted_at filled_at canceled_at expired_at"
).split()


def _order_columns(rows: Sequence[OrderRow]) -> list[list[Any]]:
    columns = [[getattr(r, name) for r in rows] for name in _ORDER_FIELDS]
    columns.append([_json(r.raw) for r in rows])
    columns.append([r.parse_error for r in rows])
    return columns


@dataclass(slots=True)
class WriterStats:
    rows_committed: int = 0
    batches: int = 0
    new_fills: int = 0
    dropped_rows: int = 0
    malformed_rows: int = 0
    db_failures: int = 0
    unstorable_rows: int = 0


class BatchWriter:
    """Buffers rows for one destination and commits them in batches (see the module docstring).

    ``add_*`` never block and never raise; :meth:`flush` commits what is pending now (raising on
    database errors with the rows kept); :meth:`run` is the background flush loop.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        store: RawStore,
        slug: str,
        *,
        flush_interval_s: float,
        flush_max_rows: int = 5000,
        max_buffer_rows: int = 200_000,
        db_retry: BackoffPolicy | None = None,
        on_resync_needed: Callable[[], None] | None = None,
        on_commit: Callable[[BatchResult, list[float]], None] | None = None,
    ) -> None:
        self._pool = pool
        self._store = store
        self.slug = slug
        self._flush_interval_s = flush_interval_s
        self._flush_max_rows = flush_max_rows
        self._max_buffer_rows = max_buffer_rows
        self._db_retry = db_retry or BackoffPolicy(base_s=0.2, cap_s=5.0, max_attempts=None)
        self._on_resync_needed = on_resync_needed
        self._on_commit = on_commit
        self._pending = Batch()
        self._first_pending_at: float | None = None
        self._has_rows = asyncio.Event()
        self._full = asyncio.Event()
        self._lock = asyncio.Lock()
        self._resync_needed = False
        self._random = random.Random()
        self._recent_commit_s: collections.deque[float] = collections.deque(maxlen=64)
        self.db_ok = True
        self.last_db_error: str | None = None
        self.stats = WriterStats()
        self.log = destination_log(log, slug)

    @property
    def pending_rows(self) -> int:
        return self._pending.size

    @property
    def oldest_pending_age_s(self) -> float:
        return 0.0 if self._first_pending_at is None else time.monotonic() - self._first_pending_at

    def _accept(self, n: int) -> bool:
        if self._pending.size + n > self._max_buffer_rows:
            if not self._resync_needed:
                self.log.error(
                    "write buffer full (%d rows, database unavailable): dropping new rows; a REST backfill will "
                    "re-read them once the database is back", self._pending.size,
                )
            self.stats.dropped_rows += n
            self._resync_needed = True
            return False
        return True

    def _added(self) -> None:
        if self._first_pending_at is None:
            self._first_pending_at = time.monotonic()
        self._has_rows.set()
        if self._pending.size >= self._flush_max_rows:
            self._full.set()

    def add_activities(self, rows: Iterable[ActivityRow], checkpoint: Checkpoint | None = None) -> None:
        batch = list(rows)
        if not self._accept(len(batch)):
            return
        for row in batch:
            self._pending.add_activity(row)
        if checkpoint is not None:
            self._pending.add_checkpoint(checkpoint)
        self._added()

    def add_orders(self, rows: Iterable[OrderRow], checkpoint: Checkpoint | None = None) -> None:
        batch = list(rows)
        if not self._accept(len(batch)):
            return
        for row in batch:
            self._pending.add_order(row)
        if checkpoint is not None:
            self._pending.add_checkpoint(checkpoint)
        self._added()

    def add_event(self, row: OrderEventRow, received_monotonic: float | None = None) -> bool:
        """Queue one trade update (and the order states it carries). False when dropped (buffer full)."""
        if not self._accept(1 + len(row.orders)):
            return False
        self._pending.add_event(row)
        if row.ts.year > 1970:
            self._pending.add_checkpoint(Checkpoint(STREAM_TRADE_UPDATES, row.event_key, row.ts))
        if received_monotonic is not None:
            self._pending.received_monotonic.append(received_monotonic)
        self._added()
        return True

    async def flush(self) -> BatchResult | None:
        """Commit everything pending now. On a database error the rows stay pending and it re-raises."""
        async with self._lock:
            batch = self._pending
            if not batch:
                return None
            self._pending = Batch()
            first_at, self._first_pending_at = self._first_pending_at, None
            self._has_rows.clear()
            self._full.clear()
            try:
                commit_started = time.monotonic()
                result = await self._commit(batch)
                self._recent_commit_s.append(time.monotonic() - commit_started)
            except BaseException as exc:
                self._pending.merge_older(batch)
                if self._pending:
                    self._first_pending_at = first_at or time.monotonic()
                    self._has_rows.set()
                if isinstance(exc, Exception):
                    self.db_ok = False
                    self.stats.db_failures += 1
                    self.last_db_error = f"{type(exc).__name__}: {exc}"[:300]
                raise
            was_down, self.db_ok = not self.db_ok, True
            self.stats.rows_committed += result.changed
            self.stats.batches += 1
            self.stats.new_fills += result.new_fills
            if result.new_malformed:
                self.stats.malformed_rows += result.new_malformed
                self.log.warning("stored %d malformed payloads raw (parse_error set)", result.new_malformed)
            if was_down:
                self.log.info("database writes recovered")
            if self._resync_needed:
                self._resync_needed = False
                self.log.warning("requesting a full REST backfill: %d rows were dropped while the database was down",
                                 self.stats.dropped_rows)
                if self._on_resync_needed is not None:
                    self._on_resync_needed()
            if self._on_commit is not None:
                self._on_commit(result, batch.received_monotonic)
            return result

    async def _commit(self, batch: Batch) -> BatchResult:
        async with self._pool.acquire(timeout=10.0) as conn:
            try:
                if not self._store.needs_transaction(batch):
                    return await self._store.write_batch(conn, self.slug, batch)  # one atomic statement
                async with conn.transaction():
                    return await self._store.write_batch(conn, self.slug, batch)
            except (asyncpg.PostgresError, TypeError, ValueError) as exc:
                # Refused data (server or client side) must not block the batch forever: row by row.
                if is_db_unavailable(exc):
                    raise
                self.log.error("batch rejected (%s: %s); retrying row by row", type(exc).__name__, exc)
                return await self._commit_row_by_row(conn, batch)

    async def _commit_row_by_row(self, conn: asyncpg.Connection, batch: Batch) -> BatchResult:
        totals = [0, 0, 0, 0, 0, 0]
        max_seq: int | None = None
        singles: list[Batch] = []
        for act in batch.activities.values():
            singles.append(Batch(activities={(act.activity_id, act.ts): act}))
        for ev in batch.events.values():
            singles.append(Batch(events={(ev.event_key, ev.ts): ev}))
        for order in batch.orders.values():
            singles.append(Batch(orders={order.order_id: order}))
        singles.append(Batch(checkpoints=dict(batch.checkpoints)))
        version: int | None = None
        for single in singles:
            try:
                async with conn.transaction():
                    r = await self._store.write_batch(conn, self.slug, single)
            except (asyncpg.PostgresError, TypeError, ValueError) as exc:
                if is_db_unavailable(exc):
                    raise
                self.stats.unstorable_rows += 1
                self.log.error("unstorable row skipped (%s: %s)", type(exc).__name__, str(exc)[:200])
                continue
            totals = [a + b for a, b in zip(totals, (r.new_activities, r.new_fills, r.new_events,
                                                     r.new_fill_events, r.orders_changed, r.new_malformed), strict=True)]
            if r.max_fill_seq is not None:
                max_seq = max(max_seq or 0, r.max_fill_seq)
            version = r.activity_version or version
        return BatchResult(totals[0], totals[1], max_seq, totals[2], totals[3], totals[4], version, totals[5])

    async def run(self) -> None:
        """Commit pending rows within ``flush_interval_s`` of the first one arriving (or at once when
        ``flush_max_rows`` are pending); on database errors retry with backoff, rows kept."""
        attempt = 0
        while True:
            await self._has_rows.wait()
            if attempt == 0 and self._first_pending_at is not None:
                # Start early by a high recent commit time, so a row is committed within flush_interval_s.
                head_start = min(self._commit_head_start_s(), self._flush_interval_s / 2)
                remaining = self._first_pending_at + self._flush_interval_s - head_start - time.monotonic()
                if remaining > 0 and not self._full.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), timeout=remaining)
            try:
                await self.flush()
                attempt = 0
            except Exception as exc:
                if not is_db_unavailable(exc):
                    self.log.exception("flush failed unexpectedly; retrying")
                attempt += 1
                delay = backoff_delay_s(self._db_retry, attempt, self._random.random())
                self.log.warning(
                    "database unavailable (%s); %d rows buffered, retry %d in %.2fs",
                    type(exc).__name__, self._pending.size, attempt, delay,
                )
                await asyncio.sleep(delay)

    def _commit_head_start_s(self) -> float:
        """The 90th percentile of the last 64 commit durations (0 before the first commit)."""
        if not self._recent_commit_s:
            return 0.0
        ordered = sorted(self._recent_commit_s)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]

    async def drain(self, timeout_s: float) -> bool:
        """Try to commit what is pending within ``timeout_s``; False (and a log line) if rows remain."""
        deadline = time.monotonic() + timeout_s
        attempt = 0
        while self._pending and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(self.flush(), timeout=max(0.1, deadline - time.monotonic()))
            except Exception as exc:
                attempt += 1
                self.log.warning("drain: flush failed (%s)", type(exc).__name__)
                await asyncio.sleep(min(backoff_delay_s(self._db_retry, attempt, 0.5), max(0.0, deadline - time.monotonic())))
        if self._pending:
            self.log.error("shutdown with %d rows not committed; the next start re-reads them from the checkpoint",
                           self._pending.size)
            return False
        return True


# --- per-destination ingester --------------------------------------------------------------------


@dataclass(slots=True)
class IngestCounters:
    activities_seen: int = 0
    events_seen: int = 0
    orders_seen: int = 0
    broker_errors: int = 0
    handler_errors: int = 0
    reconnects: int = 0
    backfills: int = 0


ProgressCallback = Callable[[int, datetime | None], None]


class Ingester:
    """Ingests one destination (see the module docstring). Construct, then ``await run(stop_event)``."""

    def __init__(
        self,
        *,
        settings: Settings,
        destination: Destination,
        pool: asyncpg.Pool,
        options: IngesterOptions | None = None,
        since: datetime | None = None,
        broker: BrokerClient | None = None,
    ) -> None:
        self.settings = settings
        self.destination = destination
        self.slug = destination.slug
        self.options = options or IngesterOptions()
        self.since = since
        self.pool = pool
        self.store = RawStore(settings.account_schema)
        self.broker = broker or BrokerClient(destination, settings, request_timeout_s=self.options.request_timeout_s)
        self.writer = BatchWriter(
            pool,
            self.store,
            self.slug,
            flush_interval_s=settings.flush_interval_s,
            flush_max_rows=self.options.flush_max_rows,
            max_buffer_rows=self.options.max_buffer_rows,
            db_retry=self.options.db_retry,
            on_resync_needed=lambda: self.request_backfill("rows dropped while the database was down"),
        )
        self.log: DestinationLog = destination_log(log, self.slug)
        self.counters = IngestCounters()
        self.state = IngestState.STARTING
        self.stream_connected = False
        self.auth_failed = False
        self.last_error: str | None = None
        self.last_event_at: datetime | None = None
        self.last_backfill_at: datetime | None = None
        self._backfill_requested = asyncio.Event()
        self._backfill_reasons: set[str] = set()
        self._last_fill_catchup = 0.0
        self._fill_catchup_timer: asyncio.TimerHandle | None = None
        self._random = random.Random()

    def __repr__(self) -> str:
        return f"Ingester({self.slug!r})"

    # -- orchestration ----------------------------------------------------------------------------

    async def run(self, stop_event: asyncio.Event) -> None:
        """Run until ``stop_event`` is set, then drain the write buffer (bounded) and stop."""
        self.log.info("ingester starting (broker %s)", self.destination.base_url)
        self.request_backfill("start")
        tasks = [
            asyncio.create_task(self.writer.run(), name=f"ingest-writer-{self.slug}"),
            asyncio.create_task(self._stream_loop(), name=f"ingest-stream-{self.slug}"),
            asyncio.create_task(self._backfill_loop(), name=f"ingest-backfill-{self.slug}"),
            asyncio.create_task(self._heartbeat_loop(), name=f"ingest-heartbeat-{self.slug}"),
        ]
        stopper = asyncio.create_task(stop_event.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and not task.cancelled() and task.exception() is not None:
                    self.log.error("task %s died: %r", task.get_name(), task.exception())
        finally:
            if self._fill_catchup_timer is not None:
                self._fill_catchup_timer.cancel()
            for task in [*tasks, stopper]:
                task.cancel()
            await asyncio.gather(*tasks, stopper, return_exceptions=True)
            await self.writer.drain(self.options.drain_timeout_s)
            self.state = IngestState.STOPPED
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._write_heartbeat(), timeout=5.0)
            await self.broker.close()
            self.log.info("ingester stopped (%d rows committed)", self.writer.stats.rows_committed)

    def request_backfill(self, reason: str) -> None:
        self._backfill_reasons.add(reason)
        self._backfill_requested.set()

    def _set_error(self, message: str) -> None:
        self.last_error = message[:500]

    def _current_state(self) -> IngestState:
        if self.state == IngestState.STOPPED:
            return self.state
        if self.auth_failed:
            return IngestState.AUTH_ERROR
        if not self.writer.db_ok:
            return IngestState.DB_UNAVAILABLE
        if self.stream_connected:
            return IngestState.RUNNING
        return IngestState.STARTING if self.last_backfill_at is None else IngestState.RECONNECTING

    # -- live stream ------------------------------------------------------------------------------

    async def _stream_loop(self) -> None:
        attempt = 0
        connected_at = 0.0
        while True:
            stream = TradeUpdatesStream(
                self.destination,
                stale_after_s=self.options.stream_stale_after_s,
                ping_interval_s=self.options.stream_ping_interval_s,
                connect_timeout_s=self.options.request_timeout_s,
            )
            policy = self.options.reconnect
            try:
                await stream.open()
                self.stream_connected = True
                self.auth_failed = False
                self.log.info("trade_updates stream connected%s", f" (reconnect {attempt})" if attempt else "")
                # Whatever happened while disconnected (or before the first connect) comes from REST.
                self.request_backfill("stream connected")
                connected_at = time.monotonic()
                async for row in stream.updates():
                    self.handle_update(row)
                    if attempt and time.monotonic() - connected_at > policy.cap_s:
                        attempt = 0
                raise BrokerTemporaryError("stream ended")
            except BrokerAuthError as exc:
                self.auth_failed = True
                policy = self.options.auth_retry
                self._set_error(str(exc))
                self.counters.broker_errors += 1
                self.log.error("trade_updates authentication failed: %s", exc)
            except BrokerError as exc:
                self._set_error(str(exc))
                self.log.warning("trade_updates stream down: %s", exc)
            finally:
                was_connected = self.stream_connected
                self.stream_connected = False
                await stream.close()
            if was_connected:
                self.counters.reconnects += 1
                if time.monotonic() - connected_at > policy.cap_s:
                    attempt = 0
            attempt += 1
            delay = backoff_delay_s(policy, attempt, self._random.random())
            self.log.info("reconnecting trade_updates in %.2fs (attempt %d)", delay, attempt)
            await asyncio.sleep(delay)

    def handle_update(self, row: OrderEventRow, received_monotonic: float | None = None) -> None:
        """Accept one parsed trade update from the stream. Never raises (a bug here is logged and
        counted rather than leaving the stream silently idle)."""
        try:
            received = time.monotonic() if received_monotonic is None else received_monotonic
            self.counters.events_seen += 1
            if row.parse_error:
                self.log.info("malformed trade update (stored raw): %s", row.parse_error)
            self.writer.add_event(row, received)
            self.last_event_at = datetime.now(UTC)
            if row.is_fill:
                self._schedule_fill_catchup(received)
        except Exception as exc:
            self.counters.handler_errors += 1
            self._set_error(f"handler: {type(exc).__name__}: {exc}")
            self.log.exception("trade update handling failed")

    def _schedule_fill_catchup(self, now: float) -> None:
        """A fill means a new FILL activity on REST: fetch it soon, at most once per
        ``fill_catchup_min_interval_s`` (a fill inside the interval is deferred, never skipped)."""
        if self._fill_catchup_timer is not None:
            return
        wait = self._last_fill_catchup + self.options.fill_catchup_min_interval_s - now
        if wait <= 0:
            self._last_fill_catchup = now
            self.request_backfill("fill")
            return

        def fire() -> None:
            self._fill_catchup_timer = None
            self._last_fill_catchup = time.monotonic()
            self.request_backfill("fill")

        self._fill_catchup_timer = asyncio.get_running_loop().call_later(wait, fire)

    # -- REST backfill ----------------------------------------------------------------------------

    async def _backfill_loop(self) -> None:
        attempt = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._backfill_requested.wait(), timeout=self.options.backfill_interval_s)
            reasons = self._backfill_reasons or {"timer"}
            self._backfill_reasons = set()
            self._backfill_requested.clear()
            light = reasons == {"fill"}
            try:
                await self.backfill(activities_only=light)
                attempt = 0
                continue
            except BrokerAuthError as exc:
                self.auth_failed = True
                self.counters.broker_errors += 1
                self._set_error(str(exc))
                self.log.error("backfill: credentials rejected: %s", exc)
                policy = self.options.auth_retry
            except BrokerError as exc:
                self.counters.broker_errors += 1
                self._set_error(str(exc))
                self.log.warning("backfill failed (%s): %s", type(exc).__name__, exc)
                policy = self.options.backfill_retry
            except Exception as exc:
                if not is_db_unavailable(exc):
                    raise
                self._set_error(f"database: {type(exc).__name__}: {exc}")
                self.log.warning("backfill paused: database unavailable (%s)", type(exc).__name__)
                policy = self.options.db_retry
            self._backfill_reasons |= reasons  # retry what we failed to do
            attempt += 1
            delay = backoff_delay_s(policy, attempt, self._random.random())
            await asyncio.sleep(delay)
            self._backfill_requested.set()

    async def backfill(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        activities_only: bool = False,
        progress: ProgressCallback | None = None,
    ) -> int:
        """Re-read activities (and orders) from REST and commit them; returns rows read.

        Without ``since``: from the checkpoint minus ``overlap_s`` (first run: ``self.since`` or
        ``default_lookback_days`` ago). Commits page by page, each with its checkpoint.
        """
        started = datetime.now(UTC)
        checkpoints = await self.store.load_checkpoints(self.pool, self.slug)
        overlap = timedelta(seconds=self.options.overlap_s)
        default_start = self.since or started - timedelta(days=self.options.default_lookback_days)

        def start_for(stream: str) -> datetime:
            if since is not None:
                return since
            cp = checkpoints.get(stream)
            return cp.last_ts - overlap if cp is not None and cp.last_ts is not None else default_start

        read = 0
        act_since = start_for(STREAM_ACTIVITIES)
        async for page in self.broker.iter_activities(act_since, until=until):
            read += len(page)
            self.counters.activities_seen += len(page)
            bad = [row for row in page if row.parse_error]
            if bad:
                self.log.debug("%d malformed activities in page (first: %s)", len(bad), bad[0].parse_error)
            good = [row for row in page if not row.activity_id.startswith("malformed:")]
            last = max(good, key=activity_time, default=None)
            cp = Checkpoint(STREAM_ACTIVITIES, last.activity_id, activity_time(last)) if last else None
            self.writer.add_activities(page, cp)
            await self.writer.flush()
            if progress is not None:
                progress(read, activity_time(page[-1]))
        if not activities_only:
            read += await self._backfill_orders(start_for(STREAM_ORDERS), until, progress)
        self.last_backfill_at = datetime.now(UTC)
        self.counters.backfills += 1
        if self.auth_failed and self.stream_connected:
            self.auth_failed = False
        self.log.debug("backfill done: %d rows read since %s", read, act_since.isoformat())
        return read

    async def _backfill_orders(self, since: datetime, until: datetime | None, progress: ProgressCallback | None) -> int:
        read = 0
        seen: set[Any] = set()
        async for page in self.broker.iter_orders(after=since, until=until):
            read += len(page)
            self.counters.orders_seen += len(page)
            seen.update(row.order_id for row in page)
            self._count_bad_orders(page)
            stamps = [row.created_at for row in page if row.created_at is not None and row.parent_order_id is None]
            cp = Checkpoint(STREAM_ORDERS, None, max(stamps)) if stamps else None
            self.writer.add_orders(page, cp)
            await self.writer.flush()
            if progress is not None:
                progress(read, max(stamps) if stamps else None)
        if until is not None:
            return read
        # Orders created before the window may have changed since: refresh every stored order that
        # is still open and was not in this pass.
        # Flat listing: open legs of a finished parent are listed too, so they are not fetched one by one.
        open_rows = await self.broker.get_orders(status="open", nested=False)
        seen.update(row.order_id for row in open_rows)
        stale_ids = [oid for oid in await self.store.open_order_ids(self.pool, self.slug, self.options.max_order_refreshes)
                     if oid not in seen]
        refreshed: list[OrderRow] = list(open_rows)
        for oid in stale_ids:
            try:
                refreshed.extend(await self.broker.get_order(oid))
            except BrokerError as exc:
                if isinstance(exc, BrokerAuthError | BrokerTemporaryError):
                    raise
                self.log.warning("order %s could not be refreshed: %s", oid, exc)
        if refreshed:
            self._count_bad_orders(refreshed)
            self.writer.add_orders(refreshed)
            await self.writer.flush()
        return read + len(refreshed)

    def _count_bad_orders(self, rows: Sequence[OrderRow]) -> None:
        bad = [row for row in rows if row.parse_error]
        if bad:
            self.log.debug("%d malformed orders read (first: %s)", len(bad), bad[0].parse_error)

    # -- health -----------------------------------------------------------------------------------

    def lag_s(self) -> float | None:
        """How far behind the broker the store may be: the oldest unwritten row's age while the
        stream is up, else the time since the last completed backfill."""
        if self.stream_connected and self.writer.db_ok:
            return round(self.writer.oldest_pending_age_s, 3)
        if self.last_backfill_at is None:
            return None
        return round((datetime.now(UTC) - self.last_backfill_at).total_seconds(), 3)

    def errors_total(self) -> int:
        c = self.counters
        w = self.writer.stats
        return w.malformed_rows + c.broker_errors + c.handler_errors + w.db_failures + w.unstorable_rows

    def health_details(self) -> dict[str, Any]:
        c, w = self.counters, self.writer.stats
        return {
            "stream_connected": self.stream_connected,
            "buffered_rows": self.writer.pending_rows,
            "dropped_rows": w.dropped_rows,
            "unstorable_rows": w.unstorable_rows,
            "db_failures": w.db_failures,
            "parse_errors": w.malformed_rows,
            "broker_errors": c.broker_errors,
            "handler_errors": c.handler_errors,
            "reconnects": c.reconnects,
            "backfills": c.backfills,
            "events_seen": c.events_seen,
            "activities_seen": c.activities_seen,
            "orders_seen": c.orders_seen,
            "new_fills": w.new_fills,
            "broker": self.broker.stats.as_dict(),
        }

    async def _write_heartbeat(self) -> None:
        self.state = self._current_state()
        await write_heartbeat(
            self.pool,
            self.settings.account_schema,
            self.slug,
            SERVICE,
            state=self.state.value,
            last_event_at=self.last_event_at,
            last_backfill_at=self.last_backfill_at,
            lag_s=self.lag_s(),
            rows_ingested=self.writer.stats.rows_committed,
            errors=self.errors_total(),
            last_error=self.last_error,
            details=self.health_details(),
        )

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._write_heartbeat(), timeout=max(1.0, self.settings.heartbeat_sec))
            except Exception as exc:
                if not is_db_unavailable(exc):
                    self.log.exception("heartbeat failed")
                else:
                    self.log.debug("heartbeat skipped: database unavailable")
            await asyncio.sleep(self.settings.heartbeat_sec)


# --- process entry points ------------------------------------------------------------------------


async def _pool_with_retry(settings: Settings, size: int, stop_event: asyncio.Event) -> asyncpg.Pool | None:
    policy = BackoffPolicy(base_s=0.5, cap_s=10.0, max_attempts=None)
    attempt = 0
    while not stop_event.is_set():
        try:
            return await create_pool(settings, min_size=1, max_size=size)
        except DatabaseUnavailable as exc:
            attempt += 1
            delay = backoff_delay_s(policy, attempt, random.random())
            log.warning("ingester: %s; retry %d in %.1fs", exc, attempt, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), timeout=delay)
    return None


async def run_ingester(
    settings: Settings,
    destinations: Sequence[Destination],
    *,
    stop_event: asyncio.Event | None = None,
    options: IngesterOptions | None = None,
    since: datetime | None = None,
) -> None:
    """Ingest every destination this replica owns until ``stop_event`` is set.

    Ownership is a PostgreSQL advisory lock per destination; a destination owned elsewhere is
    retried every ``lock_check_interval_s`` (fail-over). Losing the lock connection while the
    database is down does not stop a running destination (its writes are idempotent); finding the
    lock held by another replica once the database is back does.
    """
    stop = stop_event or asyncio.Event()
    opts = options or IngesterOptions()
    dests = [d for d in destinations if d.enabled]
    if not dests:
        log.warning("ingester: no enabled destinations")
        await stop.wait()
        return
    pool = await _pool_with_retry(settings, min(40, 2 + 2 * len(dests)), stop)
    if pool is None:
        return
    locks = OwnershipLocks(settings, SERVICE)
    running: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}

    async def check_ownership() -> None:
        try:
            await locks.still_held()
            for dest in dests:
                owned = await locks.try_acquire(dest.slug)
                entry = running.get(dest.slug)
                if owned and (entry is None or entry[0].done()):
                    dest_stop = asyncio.Event()
                    ingester = Ingester(settings=settings, destination=dest, pool=pool, options=opts, since=since)
                    running[dest.slug] = (asyncio.create_task(ingester.run(dest_stop), name=f"ingest-{dest.slug}"), dest_stop)
                elif not owned and entry is not None:
                    log.warning("dest=%s owned by another replica now; stopping here", dest.slug)
                    entry[1].set()
                elif not owned and entry is None:
                    log.debug("dest=%s owned by another replica; standing by", dest.slug)
        except (ColdHarbourError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("ingester: ownership check failed (%s); running destinations continue", type(exc).__name__)

    try:
        while not stop.is_set():
            await check_ownership()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=opts.lock_check_interval_s)
    finally:
        for _, dest_stop in running.values():
            dest_stop.set()
        if running:
            await asyncio.wait([task for task, _ in running.values()], timeout=opts.drain_timeout_s + 5)
        with contextlib.suppress(Exception):
            await locks.close()
        await pool.close()


class _ProgressBar:
    """A one-line text progress bar on a terminal stream (time covered from ``since`` to now)."""

    def __init__(self, label: str, since: datetime, until: datetime, out: TextIO | None = None) -> None:
        self._label, self._since, self._until = label, since, until
        self._out = out or sys.stderr
        self._last_draw = 0.0

    def __call__(self, rows: int, at: datetime | None) -> None:
        now = time.monotonic()
        if now - self._last_draw < 0.1:
            return
        self._last_draw = now
        span = max(1.0, (self._until - self._since).total_seconds())
        frac = 0.0 if at is None else min(1.0, max(0.0, (at - self._since).total_seconds() / span))
        filled = int(frac * 30)
        self._out.write(f"\r{self._label} [{'#' * filled}{'.' * (30 - filled)}] {frac:6.1%} {rows} rows")
        self._out.flush()

    def close(self, rows: int) -> None:
        self._out.write(f"\r{self._label} [{'#' * 30}] 100.0% {rows} rows\n")
        self._out.flush()


async def run_backfill(
    settings: Settings,
    destination: Destination,
    *,
    since: datetime | None = None,
    progress: bool = True,
    until: datetime | None = None,
) -> int:
    """Re-read activities and orders of ``destination`` from ``since`` (idempotent); returns rows read."""
    start = since or datetime.now(UTC) - timedelta(days=IngesterOptions().default_lookback_days)
    pool = await create_pool(settings, min_size=1, max_size=2)
    try:
        ingester = Ingester(settings=settings, destination=destination, pool=pool, since=start)
        bar = _ProgressBar(destination.slug, start, until or datetime.now(UTC)) if progress else None
        try:
            rows = await ingester.backfill(since=start, until=until, progress=bar)
        finally:
            await ingester.broker.close()
        if bar is not None:
            bar.close(rows)
        ingester.log.info("backfill complete: %d rows read since %s", rows, start.isoformat())
        return rows
    finally:
        await pool.close()
