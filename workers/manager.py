"""The account manager: raw activities + live prices -> open trades, closed trades and equity.

For every destination it owns (one PostgreSQL advisory lock per destination, see
:mod:`workers.locks`), the manager keeps a :class:`core.fifo.FifoBook` fed incrementally from
``<ACCOUNT_SCHEMA>.activities`` and writes three tables the dashboard reads:

- ``open_trades_<slug>``: one row per open position, re-valued at every flush from the ZMQ feed
  (``FLUSH_INTERVAL_S``), NOTIFY ``pos_channel_<slug>`` at most once per ``UI_SNAPSHOT_SEC``;
- ``closed_trades_<slug>``: round trips, upserted on ``trade_id`` as fills arrive (NOTIFY from the
  ingester, or a poll every ``CLOSED_SYNC_SEC``), NOTIFY ``closed_channel_<slug>`` per new trade;
- ``equity_full_<slug>``: one row per ``SNAPSHOT_SEC`` boundary in market hours (sparser outside),
  stamped on an epoch-aligned grid so replicas never write two rows for one instant.

Every ``CLOSED_SYNC_SEC`` the broker's ``/v2/positions`` is compared with the book (the broker is
the truth for quantity: a mismatch is logged, flagged in the rows and the heartbeat, and healed by
re-reading the activities); its ``current_price`` is the fallback mark when the feed is silent.
Every ``EQUITY_UPDATE_INTERVAL_S`` the broker's account is read to calibrate cash.

Market data, not per destination: every tick each feed accepts is folded into one-minute OHLC bars
(:class:`workers.prices.BarBuilder`), written to ``public.price_bars`` about once a second by one
loop for all feeds (:mod:`workers.bars`); a failed write is retried with the next one.

Embedding::

    manager = AccountManager(settings, destinations)
    await manager.run(stop_event)          # or: await run_manager(settings)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import asyncpg

from core.destinations import (
    Destination,
    closed_channel,
    closed_trades_table,
    equity_table,
    open_trades_table,
    pos_channel,
)
from core.errors import ColdHarbourError, InvalidInput
from core.fifo import BookUpdate, FifoBook
from core.records import Fill, OpenPosition, OrderMeta, RoundTrip
from core.schema import quote_ident
from core.settings import Settings
from workers.bars import BarWriter
from workers.equity import (
    ZERO,
    DrawdownTracker,
    EquityReplay,
    EquitySnapshot,
    Legs,
    Mark,
    OpenOrder,
    OpenTradeRow,
    Throttle,
    due_snapshot,
    ledger_entry,
    make_snapshot,
    missing_boundaries,
    qty_mismatches,
    replay_points,
    select_legs,
    value_positions,
)
from workers.heartbeat import REPLICA_ID, write_heartbeat
from workers.locks import OwnershipLocks
from workers.notify import NEW_FILLS_CHANNEL, encode_payload
from workers.prices import PriceFeed, PriceTick

log = logging.getLogger(__name__)

SERVICE = "manager"
STATE_FORMAT = 1
CHECKPOINT_INTERVAL_S = 60.0
"""A FIFO checkpoint is written at most this often (and on drain) when the book changed."""
OVERLAP_SEQ = 5_000
RECENT_INGEST_S = 15
"""Activity rows are read past the high-water ``seq`` again when ingested this recently: a
transaction that drew a lower ``seq`` but committed later is still picked up (ids dedupe)."""
GAP_REFILL_MAX_POINTS = 5_000
GAP_REFILL_MAX_AGE_S = 3_600.0
LATE_SNAPSHOTS_MAX = 100
FLUSH_CONCURRENCY = 4
ORDER_RETRIES = 20
ORDER_RETRY_MAX_IDS = 500
NOTIFY_IDS_MAX = 50
DRAIN_TIMEOUT_S = 7.0
BAR_WRITE_INTERVAL_S = 1.0
"""Price bars are written at most this often (or every FLUSH_INTERVAL_S when that is longer)."""
BAR_DRAIN_TIMEOUT_S = 2.0
TERMINAL_STATUSES = ("filled", "canceled", "expired", "rejected", "replaced", "done_for_day")
# Spelled exactly like the partial index ``orders_working_by_symbol`` (migration 4) so the planner uses it.
WORKING_FILTER = ", ".join(f"'{s}'" for s in TERMINAL_STATUSES)


class BrokerPort(Protocol):
    """What the manager needs from :class:`workers.broker.BrokerClient`."""

    async def get_account(self) -> Any: ...

    async def get_positions(self) -> Sequence[Any]: ...

    async def get_portfolio_history(self, **params: Any) -> Any: ...

    async def close(self) -> None: ...


BrokerFactory = Callable[[Destination, Settings], BrokerPort]
MarketOpen = Callable[[datetime], bool]


def _default_broker(destination: Destination, settings: Settings) -> BrokerPort:
    from workers.broker import BrokerClient

    return BrokerClient(destination, settings)


def _default_market_open(ts: datetime) -> bool:
    from core import market_schedule

    return market_schedule.is_open(ts)


def always_open(ts: datetime) -> bool:
    """A market that never closes (tests, crypto-only accounts)."""
    return True


@dataclass(slots=True)
class DestinationStats:
    """Counters for one destination since this replica took it over (heartbeat details)."""

    fills_applied: int = 0
    activities_applied: int = 0
    activities_skipped: int = 0
    trips_written: int = 0
    pos_writes: int = 0
    pos_notifies: int = 0
    closed_notifies: int = 0
    snapshots: int = 0
    gap_snapshots: int = 0
    syncs: int = 0
    reconciles: int = 0
    account_refreshes: int = 0
    qty_mismatches: int = 0
    rereads: int = 0
    checkpoints: int = 0
    heartbeats: int = 0
    price_ticks: int = 0
    errors: int = 0
    last_error: str | None = None


def _uuid_or_none(value: object) -> str | None:
    if value is None:
        return None
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def _ns_to_dt(ns: int) -> datetime | None:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC) if ns > 0 else None


# ----------------------------------------------------------------------------- SQL

_OPEN_COLS: tuple[tuple[str, str], ...] = (
    ("symbol", "text"), ("side", "text"), ("qty", "numeric"), ("avg_entry_price", "numeric"),
    ("cost_basis", "numeric"), ("entry_time", "timestamptz"), ("mark_price", "numeric"),
    ("mark_ts", "timestamptz"), ("price_source", "text"), ("price_stale", "bool"),
    ("market_value", "numeric"), ("unrealized_pl", "numeric"), ("unrealized_plpc", "float8"),
    ("prev_close", "numeric"), ("day_change", "numeric"), ("day_change_pct", "float8"),
    ("exposure", "numeric"), ("weight", "float8"), ("entry_order_id", "uuid"), ("stop_price", "numeric"),
    ("take_profit_price", "numeric"), ("broker_qty", "numeric"), ("qty_mismatch", "bool"), ("lots", "jsonb"),
)
_CLOSED_COLS: tuple[tuple[str, str], ...] = (
    ("trade_id", "text"), ("symbol", "text"), ("direction", "text"), ("qty", "numeric"),
    ("entry_time", "timestamptz"), ("exit_time", "timestamptz"), ("entry_price", "numeric"),
    ("exit_price", "numeric"), ("gross_pl", "numeric"), ("fees", "numeric"), ("net_pl", "numeric"),
    ("return_pct", "float8"), ("holding_s", "float8"), ("exit_reason", "text"), ("entry_order_id", "uuid"),
    ("exit_order_id", "uuid"), ("is_orphan", "bool"), ("mae", "numeric"), ("mfe", "numeric"),
    ("fills", "jsonb"), ("lots", "jsonb"),
)
_EQUITY_COLS: tuple[tuple[str, str], ...] = (
    ("ts", "timestamptz"), ("equity", "numeric"), ("cash", "numeric"), ("long_market_value", "numeric"),
    ("short_market_value", "numeric"), ("realized_pl", "numeric"), ("unrealized_pl", "numeric"),
    ("net_deposits", "numeric"), ("drawdown", "float8"), ("source", "text"),
)


def _unnest(cols: Sequence[tuple[str, str]], first_param: int = 1) -> str:
    args = ", ".join(f"${first_param + i}::{t}[]" for i, (_, t) in enumerate(cols))
    names = ", ".join(c for c, _ in cols)
    return f"SELECT * FROM unnest({args}) AS src({names})"


def open_trades_sql(slug: str) -> str:
    """One round trip: upsert all rows, delete flat symbols, bump ``pos_version``, maybe NOTIFY."""
    table = f"public.{quote_ident(open_trades_table(slug))}"
    n = len(_OPEN_COLS)
    names = ", ".join(c for c, _ in _OPEN_COLS)
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c, _ in _OPEN_COLS[1:])
    return f"""WITH src AS ({_unnest(_OPEN_COLS)}),
        up AS (INSERT INTO {table} ({names}, updated_at) SELECT {names}, now() FROM src
               ON CONFLICT (symbol) DO UPDATE SET {sets}, updated_at = now() RETURNING 1),
        del AS (DELETE FROM {table} WHERE symbol <> ALL(${1}::text[]) RETURNING 1),
        v AS (UPDATE public.ch_versions SET pos_version = pos_version + 1, updated_at = now()
              WHERE slug = ${n + 1} RETURNING pos_version)
        SELECT v.pos_version,
               CASE WHEN ${n + 2}::bool THEN pg_notify(${n + 3},
                   json_build_object('v', v.pos_version, 'ids', ${n + 4}::text[],
                                     'as_of_ns', ${n + 5}::bigint)::text) END AS notified
        FROM v"""


def closed_trades_sql(slug: str) -> str:
    """Upsert round trips, delete invalidated ones, bump ``closed_version``; returns the version."""
    table = f"public.{quote_ident(closed_trades_table(slug))}"
    n = len(_CLOSED_COLS)
    names = ", ".join(c for c, _ in _CLOSED_COLS)
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c, _ in _CLOSED_COLS[1:])
    return f"""WITH src AS ({_unnest(_CLOSED_COLS)}),
        up AS (INSERT INTO {table} ({names}) SELECT {names} FROM src
               ON CONFLICT (trade_id) DO UPDATE SET {sets} RETURNING 1),
        del AS (DELETE FROM {table} WHERE trade_id = ANY(${n + 1}::text[]) RETURNING 1),
        v AS (UPDATE public.ch_versions SET closed_version = closed_version + 1, updated_at = now()
              WHERE slug = ${n + 2} RETURNING closed_version)
        SELECT closed_version FROM v"""


def equity_sql(slug: str) -> str:
    """Insert snapshots (an existing instant is left alone), bump ``equity_version``; returns rows inserted."""
    table = f"public.{quote_ident(equity_table(slug))}"
    n = len(_EQUITY_COLS)
    names = ", ".join(c for c, _ in _EQUITY_COLS)
    return f"""WITH src AS ({_unnest(_EQUITY_COLS)}),
        ins AS (INSERT INTO {table} ({names}) SELECT {names} FROM src ON CONFLICT (ts) DO NOTHING RETURNING 1),
        v AS (UPDATE public.ch_versions SET equity_version = equity_version + 1, updated_at = now()
              WHERE slug = ${n + 1} AND EXISTS (SELECT 1 FROM ins) RETURNING 1)
        SELECT (SELECT count(*) FROM ins) AS inserted, (SELECT count(*) FROM v) AS bumped"""


def _columns(rows: Sequence[Mapping[str, Any]], cols: Sequence[tuple[str, str]]) -> list[list[Any]]:
    out: list[list[Any]] = []
    for name, kind in cols:
        values = [r.get(name) for r in rows]
        if kind == "jsonb":
            values = [json.dumps(v if v is not None else [], default=str) for v in values]
        elif kind == "uuid":
            values = [_uuid_or_none(v) for v in values]
        out.append(values)
    return out


def trip_row(trip: RoundTrip) -> dict[str, Any]:
    return trip.to_row()


def open_row(row: OpenTradeRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name, _ in _OPEN_COLS}


def equity_row(snap: EquitySnapshot) -> dict[str, Any]:
    return asdict(snap)


# ----------------------------------------------------------------------------- activities

@dataclass(frozen=True, slots=True)
class ActivityRecord:
    """The columns of one stored activity the manager uses."""

    seq: int
    activity_id: str
    ts: datetime
    activity_type: str
    symbol: str | None
    side: str | None
    qty: Decimal | None
    price: Decimal | None
    net_amount: Decimal | None
    order_id: str | None
    parse_error: str | None

    @property
    def is_fill(self) -> bool:
        return self.activity_type.upper() in ("FILL", "PARTIAL_FILL")

    def to_fill(self) -> Fill:
        return Fill(fill_id=self.activity_id, ts=self.ts, symbol=self.symbol or "", side=self.side,  # type: ignore[arg-type]
                    qty=self.qty, price=self.price, order_id=self.order_id)  # type: ignore[arg-type]


def _activity(r: asyncpg.Record) -> ActivityRecord:
    return ActivityRecord(r["seq"], r["activity_id"], r["ts"], r["activity_type"] or "", r["symbol"], r["side"],
                          r["qty"], r["price"], r["net_amount"], r["order_id"], r["parse_error"])


_ACTIVITY_COLUMNS = ("seq, activity_id, ts, activity_type, symbol, side, qty, price, net_amount, "
                     "order_id::text AS order_id, parse_error")


@dataclass(frozen=True, slots=True)
class _Changes:
    """What applying activities changed in the book (a materialised :class:`core.fifo.BookUpdate`)."""

    upserted: tuple[RoundTrip, ...]
    removed_trade_ids: tuple[str, ...]
    symbols: frozenset[str]

    @classmethod
    def of(cls, update: BookUpdate) -> _Changes:
        return cls(tuple(update.upserted), tuple(update.removed_trade_ids), frozenset(update.symbols))

    def merged(self, other: _Changes) -> _Changes:
        return _Changes(self.upserted + other.upserted, self.removed_trade_ids + other.removed_trade_ids,
                        self.symbols | other.symbols)


class Ledger:
    """Cash, deposits and the set of activity ids already applied (the non-FIFO part of the state)."""

    __slots__ = ("cash", "net_deposits", "applied", "deposit_events", "skipped")

    def __init__(self) -> None:
        self.cash = ZERO
        self.net_deposits = ZERO
        self.applied: set[str] = set()
        self.deposit_events: list[tuple[datetime, Decimal]] = []
        self.skipped = 0

    def apply(self, act: ActivityRecord) -> bool:
        """Book one activity once; False when already applied."""
        if act.activity_id in self.applied:
            return False
        self.applied.add(act.activity_id)
        entry = ledger_entry(act.activity_id, act.activity_type, side=act.side, qty=act.qty, price=act.price,
                             net_amount=act.net_amount)
        self.cash += entry.cash_delta
        if entry.deposit_delta:
            self.net_deposits += entry.deposit_delta
            self.deposit_events.append((act.ts, entry.deposit_delta))
        return True

    def deposits_until(self, ts: datetime, baseline: Decimal) -> Decimal:
        return baseline + sum((d for t, d in self.deposit_events if t <= ts), ZERO)

    def to_dict(self) -> dict[str, Any]:
        return {"cash": str(self.cash), "net_deposits": str(self.net_deposits), "applied": sorted(self.applied),
                "deposit_events": [[t.isoformat(), str(d)] for t, d in self.deposit_events], "skipped": self.skipped}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ledger:
        ledger = cls()
        ledger.cash = Decimal(data["cash"])
        ledger.net_deposits = Decimal(data["net_deposits"])
        ledger.applied = set(data["applied"])
        ledger.deposit_events = [(datetime.fromisoformat(t), Decimal(d)) for t, d in data["deposit_events"]]
        ledger.skipped = int(data.get("skipped", 0))
        return ledger


# ----------------------------------------------------------------------------- one destination

class DestinationRunner:
    """Everything the manager does for one owned destination."""

    def __init__(self, manager: AccountManager, destination: Destination, feed: PriceFeed | None) -> None:
        self.manager = manager
        self.dest = destination
        self.slug = destination.slug
        self.settings = manager.settings
        self.feed = feed
        self.log = logging.LoggerAdapter(log, {"destination": self.slug})
        self.stats = DestinationStats()
        self.broker: BrokerPort | None = None
        self.book = FifoBook()
        self.ledger = Ledger()
        self.last_seq = 0
        self.orders: dict[str, OrderMeta] = {}
        self.missing_orders: dict[str, int] = {}
        """Order ids of recent fills not in ``orders`` yet -> lookups tried (bounded, see ORDER_RETRIES)."""
        self.trip_pl: dict[str, Decimal] = {}
        self.realized_closed = ZERO
        self.positions: dict[str, OpenPosition] = {}
        self.marks: dict[str, Mark] = {}
        self.rest_marks: dict[str, Mark] = {}
        self.prev_close: dict[str, Decimal] = {}
        self.broker_qty: dict[str, Decimal] | None = None
        self.legs: dict[str, Legs] = {}
        self.open_orders: list[OpenOrder] = []
        self.mismatch: dict[str, tuple[Decimal, Decimal]] = {}
        self.mismatch_streak = 0
        self.fills_at_reconcile = 0
        self.cash_offset = ZERO
        self._offset_candidate: Decimal | None = None
        self.broker_cash: Decimal | None = None
        self.broker_equity: Decimal | None = None
        self.tracker = DrawdownTracker()
        self.last_snapshot_ts: datetime | None = None
        self.throttle = Throttle(self.settings.ui_snapshot_sec)
        self.dirty: set[str] = set()
        self.structure_dirty = True
        self.pending_notify_ids: set[str] = set()
        self.pos_version = 0
        self.as_of_ns = 0
        """Exchange time (ns) of the newest fresh mark written: how current the last NOTIFY'd rows are."""
        self.closed_version = 0
        self.ready = False
        self.flushing = False
        self.needs_seed = False
        self.wake = asyncio.Event()
        self.book_changed_since_checkpoint = False
        self.last_checkpoint_mono = time.monotonic()
        self.last_fill_at: datetime | None = None
        self.write_lock = asyncio.Lock()
        self.started_mono = time.monotonic()
        self._open_sql = open_trades_sql(self.slug)

    # -- helpers ---------------------------------------------------------------------------
    @property
    def pool(self) -> asyncpg.Pool:
        pool = self.manager.pool
        assert pool is not None
        return pool

    @property
    def schema(self) -> str:
        return quote_ident(self.settings.account_schema)

    @property
    def deposit_baseline(self) -> Decimal:
        """``initial_deposit`` counts as a deposit only when the activities hold none."""
        if self.dest.initial_deposit is not None and not self.ledger.deposit_events:
            return self.dest.initial_deposit
        return ZERO

    def _error(self, what: str, exc: BaseException) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{what}: {type(exc).__name__}: {str(exc)[:200]}"
        self.log.warning("dest=%s %s failed: %s", self.slug, what, self.stats.last_error)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the checkpoint, catch up on activities, seed equity, publish the tables."""
        await self.pool.execute("INSERT INTO public.ch_versions (slug) VALUES ($1) ON CONFLICT DO NOTHING", self.slug)
        self.broker = self.manager.broker_factory(self.dest, self.settings)
        await self._load_checkpoint()
        await self.sync_activities(initial=True)
        row = await self.pool.fetchrow(
            f"SELECT max(ts) AS last_ts, max(equity - net_deposits) AS max_excess FROM public.{quote_ident(equity_table(self.slug))}")
        self.last_snapshot_ts = row["last_ts"] if row else None
        self.tracker = DrawdownTracker(row["max_excess"] if row else None)
        self.needs_seed = self.last_snapshot_ts is None
        if self.last_snapshot_ts is not None:
            await self._refill_gap(datetime.now(UTC))
        self.ready = True
        await self.flush(datetime.now(UTC), time.monotonic(), force=True)
        await self.heartbeat()

    async def _safe(self, coro: Awaitable[Any], what: str) -> None:
        try:
            await coro
        except (ColdHarbourError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, ValueError) as exc:
            self._error(what, exc)

    async def run(self) -> None:
        """The destination's own loops (activities, reconciliation, account); runs until cancelled."""
        await self.start()
        # Broker calls never hold up the start: they retry with backoff and the tables are already live.
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._loop("activities", self._activities_tick, None))
            tg.create_task(self._loop("reconcile", self.reconcile, self.settings.closed_sync_sec, first_now=True))
            tg.create_task(self._loop("account", self.refresh_account, self.settings.equity_update_interval_s,
                                      first_now=True))
            tg.create_task(self._loop("checkpoint", self._checkpoint_if_changed, CHECKPOINT_INTERVAL_S))
            if self.needs_seed:
                tg.create_task(self._loop("seed", self._seed_equity, None, once=True))

    async def _loop(self, name: str, body: Callable[[], Awaitable[Any]], interval_s: float | None, *,
                    first_now: bool = False, once: bool = False) -> None:
        failures = 0
        first = True
        while True:
            if interval_s is not None and not (first and first_now):
                await asyncio.sleep(interval_s)
            first = False
            try:
                await body()
                failures = 0
                if once:
                    return
            except (ColdHarbourError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, ValueError) as exc:
                failures += 1
                self._error(name, exc)
            except Exception as exc:  # a bug in one loop must not stop the others: log it loudly, back off
                failures += 1
                self.log.exception("dest=%s %s loop failed unexpectedly", self.slug, name)
                self._error(name, exc)
            if failures:
                # Bounded exponential backoff with jitter (0.1 s .. 30 s).
                await asyncio.sleep(min(30.0, 0.2 * 2 ** min(failures, 8)) * (0.5 + random.random() / 2))

    async def _activities_tick(self) -> None:
        """Wait for a NOTIFY hint (or the poll interval), then read new activities."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout=self.settings.closed_sync_sec)
        self.wake.clear()
        await self.sync_activities()

    async def stop(self) -> None:
        """Final flush and checkpoint (called on drain, with this replica still owning the lock)."""
        if not self.ready:
            return
        await self._safe(self.flush(datetime.now(UTC), time.monotonic(), force=True), "final flush")
        if self.book_changed_since_checkpoint:
            await self._safe(self.checkpoint(), "final checkpoint")
        await self._safe(self.heartbeat(state="stopped"), "final heartbeat")
        if self.broker is not None:
            with contextlib.suppress(Exception):
                await self.broker.close()

    # -- checkpoint ------------------------------------------------------------------------
    async def _load_checkpoint(self) -> None:
        row = await self.pool.fetchrow("SELECT state, last_seq FROM public.ch_fifo_state WHERE slug = $1", self.slug)
        if row is None:
            return
        try:
            state = json.loads(row["state"])
            if state.get("format") != STATE_FORMAT:
                raise InvalidInput(f"checkpoint format {state.get('format')!r}")
            book = await asyncio.to_thread(FifoBook.from_dict, state["book"])
            ledger = Ledger.from_dict(state["ledger"])
        except (InvalidInput, KeyError, TypeError, ValueError) as exc:
            self.log.warning("dest=%s checkpoint unusable (%s): full replay from activities", self.slug, exc)
            return
        self.book, self.ledger, self.last_seq = book, ledger, int(row["last_seq"])
        self.cash_offset = Decimal(state.get("cash_offset", "0"))
        self.orders = {o["order_id"]: OrderMeta.from_dict(o) for o in state["book"].get("orders", [])}
        for trip in self.book.round_trips():
            self.trip_pl[trip.trade_id] = trip.net_pl
        self.realized_closed = sum(self.trip_pl.values(), ZERO)
        self.positions = self.book.open_positions()
        self.log.info("dest=%s checkpoint loaded: %d fills up to seq %d", self.slug, self.book.fill_count, self.last_seq)

    async def checkpoint(self) -> None:
        """Persist the book and ledger as of ``last_seq`` (a cache: activities stay the truth)."""
        state = {"format": STATE_FORMAT, "book": self.book.to_dict(), "ledger": self.ledger.to_dict(),
                 "cash_offset": str(self.cash_offset)}
        last_seq, fill_count = self.last_seq, self.book.fill_count
        text = await asyncio.to_thread(json.dumps, state, separators=(",", ":"))
        await self.pool.execute(
            """INSERT INTO public.ch_fifo_state (slug, state, last_seq, fill_count, replica, updated_at)
               VALUES ($1, $2::jsonb, $3, $4, $5, now())
               ON CONFLICT (slug) DO UPDATE SET state = EXCLUDED.state, last_seq = EXCLUDED.last_seq,
                   fill_count = EXCLUDED.fill_count, replica = EXCLUDED.replica, updated_at = now()""",
            self.slug, text, last_seq, fill_count, REPLICA_ID)
        self.book_changed_since_checkpoint = False
        self.last_checkpoint_mono = time.monotonic()
        self.stats.checkpoints += 1

    async def _checkpoint_if_changed(self) -> None:
        # Serialising the book costs ~7 us per fill on the event loop: big books are saved less often
        # (at most ~1 % of the loop's time); a take-over then replays a little more from activities.
        due_s = max(CHECKPOINT_INTERVAL_S, self.book.fill_count * 7.5e-6 * 100)
        if self.book_changed_since_checkpoint and time.monotonic() - self.last_checkpoint_mono >= due_s:
            await self.checkpoint()

    # -- activities -> book ----------------------------------------------------------------
    async def _fetch_activities(self, full: bool) -> list[ActivityRecord]:
        table = f"{self.schema}.activities"
        if full:
            rows = await self.pool.fetch(
                f"SELECT {_ACTIVITY_COLUMNS} FROM {table} WHERE destination = $1 ORDER BY seq", self.slug)
        else:
            rows = await self.pool.fetch(
                f"""SELECT {_ACTIVITY_COLUMNS} FROM {table}
                    WHERE destination = $1 AND seq > $2
                      AND (seq > $3 OR ingested_at > now() - make_interval(secs => $4))
                    ORDER BY seq""",
                self.slug, max(0, self.last_seq - OVERLAP_SEQ), self.last_seq, float(RECENT_INGEST_S))
        return [_activity(r) for r in rows]

    async def _fetch_orders(self, order_ids: Iterable[str] | None) -> list[OrderMeta]:
        """The orders with these ids (``None``: every order of the destination, for a full replay)."""
        cols = f"""SELECT order_id::text AS order_id, parent_order_id::text AS parent_order_id, order_type, order_class,
                       side, symbol, limit_price, stop_price FROM {self.schema}.orders WHERE destination = $1"""
        if order_ids is None:
            rows = await self.pool.fetch(cols, self.slug)
        else:
            ids = sorted({i for i in order_ids if i and _uuid_or_none(i)})
            if not ids:
                return []
            rows = await self.pool.fetch(cols + " AND order_id = ANY($2::uuid[])", self.slug, ids)
        out = []
        for r in rows:
            try:
                out.append(OrderMeta(order_id=r["order_id"], order_type=r["order_type"], order_class=r["order_class"],
                                     parent_order_id=r["parent_order_id"], side=r["side"], symbol=r["symbol"],
                                     limit_price=r["limit_price"], stop_price=r["stop_price"]))
            except InvalidInput as exc:
                self.log.warning("dest=%s order %s unusable: %s", self.slug, r["order_id"], exc)
        return out

    async def sync_activities(self, *, initial: bool = False, full: bool = False) -> _Changes | None:
        """Apply activities not seen yet; write the closed trades they produce. Idempotent."""
        self.stats.syncs += 1
        acts = await self._fetch_activities(full=full or (initial and self.last_seq == 0))
        fresh = [a for a in acts if a.activity_id not in self.ledger.applied]
        if not fresh and not self.missing_orders:
            if acts:
                self.last_seq = max(self.last_seq, acts[-1].seq)
            return None
        fills: list[Fill] = []
        for act in fresh:
            if act.parse_error is not None or (act.is_fill and (not act.symbol or act.qty is None or act.price is None)):
                self.ledger.applied.add(act.activity_id)
                self.ledger.skipped += 1
                self.stats.activities_skipped += 1
                continue
            if act.is_fill:
                try:
                    fills.append(act.to_fill())
                except InvalidInput as exc:
                    self.ledger.applied.add(act.activity_id)
                    self.ledger.skipped += 1
                    self.stats.activities_skipped += 1
                    self.log.warning("dest=%s activity %s skipped: %s", self.slug, act.activity_id, exc)
                    continue
        bulk = full or (initial and self.last_seq == 0)
        wanted = {f.order_id for f in fills if f.order_id and f.order_id not in self.orders} | set(self.missing_orders)
        orders = await self._fetch_orders(None if bulk else wanted)
        for o in orders:
            self.orders[o.order_id] = o
        # Orders usually land with (or before) their fills; a late one is looked up again a few
        # times, then left to the exit-reason refresh of a later full re-read.
        missing = {o: self.missing_orders.get(o, 0) + 1 for o in wanted if o is not None and o not in self.orders}
        if bulk:
            missing = {}
        self.missing_orders = dict(sorted(((o, n) for o, n in missing.items() if n <= ORDER_RETRIES),
                                          key=lambda item: item[1])[:ORDER_RETRY_MAX_IDS])
        try:
            update = _Changes.of(self.book.apply(fills, orders))
        except InvalidInput as exc:  # a fill id reused with other content: keep the first, report
            self._error("fifo apply", exc)
            update = self._apply_one_by_one(fills, orders)
        for act in fresh:
            if act.activity_id not in self.ledger.applied:
                self.ledger.apply(act)
                self.stats.activities_applied += 1
        self.stats.fills_applied += len(fills)
        if fills:
            self.last_fill_at = max(f.ts for f in fills)
        if acts:
            self.last_seq = max(self.last_seq, max(a.seq for a in acts))
        self.book_changed_since_checkpoint = True
        await self._after_book_update(update, bulk=initial)
        return update

    def _apply_one_by_one(self, fills: list[Fill], orders: list[OrderMeta]) -> _Changes:
        changes = _Changes((), (), frozenset())
        for i, f in enumerate(fills):
            try:
                u = self.book.apply([f], orders if i == 0 else ())
            except InvalidInput:
                continue
            changes = changes.merged(_Changes.of(u))
        return changes

    async def _after_book_update(self, update: _Changes, *, bulk: bool) -> None:
        latest: dict[str, RoundTrip] = {}
        for trip in update.upserted:
            latest[trip.trade_id] = trip
        # New, changed (a late fill re-shaped them) and removed trips: all are news to a dashboard.
        new_ids = [*latest, *update.removed_trade_ids]
        for tid in update.removed_trade_ids:
            self.realized_closed -= self.trip_pl.pop(tid, ZERO)
        for tid, trip in latest.items():
            self.realized_closed += trip.net_pl - self.trip_pl.get(tid, ZERO)
            self.trip_pl[tid] = trip.net_pl
        self.positions = self.book.open_positions()
        self.structure_dirty = True
        self.dirty |= set(update.symbols)
        if update.symbols:
            self.manager.holdings_changed()
            await self.refresh_legs()
        if latest or update.removed_trade_ids:
            await self.write_closed(list(latest.values()), list(update.removed_trade_ids), new_ids, bulk=bulk)

    async def write_closed(self, trips: list[RoundTrip], removed: list[str], new_ids: list[str], *, bulk: bool) -> None:
        sql = closed_trades_sql(self.slug)
        chunk = 5_000
        version = self.closed_version
        async with self.write_lock:
            for start in range(0, max(len(trips), 1), chunk):
                part = trips[start:start + chunk]
                args = _columns([trip_row(t) for t in part], _CLOSED_COLS)
                version = await self.pool.fetchval(sql, *args, removed if start == 0 else [], self.slug) or version
            self.closed_version = int(version)
            self.stats.trips_written += len(trips)
            if not new_ids:
                return
            channel = closed_channel(self.slug)
            if bulk or len(new_ids) > NOTIFY_IDS_MAX:
                payloads = [encode_payload({"v": self.closed_version, "ids": [], "count": len(new_ids)})]
            else:
                payloads = [encode_payload({"v": self.closed_version, "ids": [tid]}) for tid in new_ids]
            await self.pool.execute("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", channel, payloads)
            self.stats.closed_notifies += len(payloads)

    async def refresh_legs(self) -> None:
        """Working exit orders for the held symbols (bracket legs first)."""
        held = sorted(self.positions)
        if not held:
            self.open_orders, self.legs = [], {}
            return
        rows = await self.pool.fetch(
            f"""SELECT order_id::text AS order_id, parent_order_id::text AS parent_order_id, symbol, side, order_type,
                       limit_price, stop_price
                FROM {self.schema}.orders
                WHERE destination = $1 AND symbol = ANY($2::text[])
                  AND order_type IN ('limit', 'stop', 'stop_limit', 'trailing_stop')
                  AND (status IS NULL OR status NOT IN ({WORKING_FILTER}))
                ORDER BY updated_at DESC NULLS LAST""",
            self.slug, held)
        self.open_orders = [OpenOrder(r["order_id"], r["parent_order_id"], r["symbol"], (r["side"] or "").lower(),
                                      (r["order_type"] or "").lower(), r["limit_price"], r["stop_price"]) for r in rows]
        legs = {s: select_legs(p, self.open_orders) for s, p in self.positions.items()}
        if legs != self.legs:
            self.legs = legs
            self.structure_dirty = True

    # -- prices ----------------------------------------------------------------------------
    def on_tick(self, tick: PriceTick) -> None:
        if tick.symbol not in self.positions:
            return
        self.stats.price_ticks += 1
        self.marks[tick.symbol] = Mark(tick.price, _ns_to_dt(tick.ts_event_ns) or _ns_to_dt(tick.received_wall_ns),
                                       "zmq", False)
        self.dirty.add(tick.symbol)

    def _current_marks(self, now_mono_ns: int) -> dict[str, Mark]:
        """ZMQ marks while fresh; the broker's REST price when the feed is silent; else the last mark, stale."""
        out: dict[str, Mark] = {}
        for symbol, pos in self.positions.items():
            mark = self.marks.get(symbol)
            zmq_fresh = mark is not None and mark.source == "zmq" and self.feed is not None and not self.feed.is_stale(
                symbol, now_mono_ns)
            if mark is not None and zmq_fresh:
                out[symbol] = mark
                continue
            rest = self.rest_marks.get(symbol) if (self.dest.price_feed.rest_fallback or self.feed is None) else None
            if rest is not None and (mark is None or mark.ts is None or rest.ts is None or rest.ts >= mark.ts):
                out[symbol] = rest
            elif mark is not None:
                out[symbol] = Mark(mark.price, mark.ts, mark.source, True)
            elif pos.lots:
                last = pos.lots[-1]
                if last.entry_price is not None:
                    out[symbol] = Mark(last.entry_price, last.entry_time, "fill", True)
        return out

    # -- valuation and writes --------------------------------------------------------------
    def valuation(self, now_mono_ns: int) -> tuple[list[OpenTradeRow], EquitySnapshotInputs]:
        marks = self._current_marks(now_mono_ns)
        mvs: list[Decimal] = []
        upl = ZERO
        for symbol, pos in self.positions.items():
            mark = marks.get(symbol)
            avg = pos.avg_entry_price
            if mark is not None:
                mv = pos.qty * mark.price
                upl += mv - pos.qty * (avg if avg is not None else mark.price)
            else:
                mv = pos.cost_basis if pos.cost_basis is not None else ZERO
            mvs.append(mv)
        cash = self.ledger.cash + self.cash_offset
        equity = cash + sum(mvs, ZERO)
        realized = self.realized_closed + sum((p.realized_pl for p in self.positions.values()), ZERO)
        rows = value_positions(self.positions, marks, equity=equity, prev_close=self.prev_close, legs=self.legs,
                               broker_qty=self.broker_qty)
        return rows, EquitySnapshotInputs(cash, mvs, upl, realized, self.ledger.net_deposits + self.deposit_baseline)

    async def flush(self, now: datetime, now_mono: float, *, force: bool = False) -> None:
        """Write open trades if anything moved, send a due NOTIFY, take a due equity snapshot."""
        if not self.ready or (self.flushing and not force):
            return
        self.flushing = True
        try:
            await self._flush(now, now_mono, force=force)
        finally:
            self.flushing = False

    @property
    def wants_leading_edge(self) -> bool:
        """Prices moved and the NOTIFY window is open: worth writing now rather than at the next flush."""
        return bool(self.dirty) and self.ready and not self.flushing and self.throttle.ready(time.monotonic())

    async def _flush(self, now: datetime, now_mono: float, *, force: bool) -> None:
        now_mono_ns = int(now_mono * 1e9)
        stale_changed = self._stale_flags_changed(now_mono_ns)
        if self.dirty or self.structure_dirty or stale_changed or force:
            ids = sorted(self.dirty | (set(self.positions) if self.structure_dirty else set()))
            self.pending_notify_ids.update(ids)
            notify = self.throttle.offer(now_mono)
            rows, _ = self.valuation(now_mono_ns)
            self.dirty.clear()
            self.structure_dirty = False
            try:
                await self.write_open(rows, notify)
            except BaseException:
                self.structure_dirty = True  # rewrite everything (and NOTIFY) on the next flush
                if notify:
                    self.throttle.last_sent = None
                raise
        elif self.throttle.due(now_mono):
            await self.notify_pos()
        ts = due_snapshot(now, self.last_snapshot_ts, snapshot_sec=self.settings.snapshot_sec,
                          market_open=self.manager.market_open)
        if ts is not None:
            # A late flush (a busy loop) may have let several boundaries pass: stamp each of them.
            points = [ts] if self.last_snapshot_ts is None else missing_boundaries(
                self.last_snapshot_ts, now, snapshot_sec=self.settings.snapshot_sec,
                market_open=self.manager.market_open, max_points=LATE_SNAPSHOTS_MAX) or [ts]
            await self.snapshot(points, now_mono_ns)

    def _stale_flags_changed(self, now_mono_ns: int) -> bool:
        if self.feed is None:
            return False
        changed = False
        for symbol, mark in list(self.marks.items()):
            if mark.source == "zmq" and not mark.stale and self.feed.is_stale(symbol, now_mono_ns):
                self.marks[symbol] = Mark(mark.price, mark.ts, mark.source, True)
                changed = True
        return changed

    async def write_open(self, rows: list[OpenTradeRow], notify: bool) -> None:
        ids = sorted(self.pending_notify_ids)[:NOTIFY_IDS_MAX] if notify else []
        args = _columns([open_row(r) for r in rows], _OPEN_COLS)
        marks = [r.mark_ts for r in rows if r.mark_ts is not None and not r.price_stale]
        if marks:
            self.as_of_ns = max(self.as_of_ns, int(max(marks).timestamp() * 1_000_000) * 1000)
        async with self.write_lock:
            record = await self.pool.fetchrow(self._open_sql, *args, self.slug, notify,
                                              pos_channel(self.slug), ids, self.as_of_ns)
        if record is not None:
            self.pos_version = int(record["pos_version"])
        self.stats.pos_writes += 1
        if notify:
            self.pending_notify_ids.clear()
            self.stats.pos_notifies += 1
            self.manager.on_pos_notify(self)

    async def notify_pos(self) -> None:
        ids = sorted(self.pending_notify_ids)[:NOTIFY_IDS_MAX]
        await self.pool.execute("SELECT pg_notify($1, $2)", pos_channel(self.slug),
                                encode_payload({"v": self.pos_version, "ids": ids, "as_of_ns": self.as_of_ns}))
        self.pending_notify_ids.clear()
        self.stats.pos_notifies += 1
        self.manager.on_pos_notify(self)

    async def snapshot(self, points: Sequence[datetime], now_mono_ns: int) -> None:
        _, inputs = self.valuation(now_mono_ns)
        snaps = [make_snapshot(ts, cash=inputs.cash, market_values=inputs.market_values,
                               unrealized_pl=inputs.unrealized_pl, realized_pl=inputs.realized_pl,
                               net_deposits=inputs.net_deposits, tracker=self.tracker) for ts in points]
        inserted = await self.write_equity(snaps)
        self.last_snapshot_ts = points[-1]
        self.stats.snapshots += inserted

    async def write_equity(self, snaps: Sequence[EquitySnapshot]) -> int:
        if not snaps:
            return 0
        args = _columns([equity_row(s) for s in snaps], _EQUITY_COLS)
        async with self.write_lock:
            record = await self.pool.fetchrow(equity_sql(self.slug), *args, self.slug)
        return int(record["inserted"]) if record is not None else 0

    async def _refill_gap(self, now: datetime) -> None:
        """After a take-over or restart: the boundaries missed while nobody owned the destination.

        Valued with the current book and marks (no price history is stored): exact for cash and
        deposits, approximate for market value when prices moved during the gap.
        """
        assert self.last_snapshot_ts is not None
        # Only a recent gap (a take-over, a restart) is bridged with today's values; older holes are
        # for ``refill-snapshots``, which replays the activities.
        since = max(self.last_snapshot_ts, now - timedelta(seconds=GAP_REFILL_MAX_AGE_S))
        points = missing_boundaries(since, now - timedelta(seconds=self.settings.snapshot_sec),
                                    snapshot_sec=self.settings.snapshot_sec, market_open=self.manager.market_open,
                                    max_points=GAP_REFILL_MAX_POINTS)
        if not points:
            return
        _, inputs = self.valuation(time.monotonic_ns())
        snaps = [make_snapshot(ts, cash=inputs.cash, market_values=inputs.market_values,
                               unrealized_pl=inputs.unrealized_pl, realized_pl=inputs.realized_pl,
                               net_deposits=inputs.net_deposits, tracker=self.tracker, source="gap")
                 for ts in points]
        inserted = await self.write_equity(snaps)
        self.last_snapshot_ts = points[-1]
        self.stats.gap_snapshots += inserted
        self.log.info("dest=%s refilled %d missed snapshots", self.slug, inserted)

    async def _seed_equity(self) -> None:
        """First run: the broker's daily portfolio history, so the curve starts on the first day."""
        if self.broker is None:
            return
        history = await self.broker.get_portfolio_history(period="1A", timeframe="1D")
        snaps: list[EquitySnapshot] = []
        tracker = DrawdownTracker()
        for ts, eq in zip(getattr(history, "timestamps", ()), getattr(history, "equity", ()), strict=False):
            # The last hour is the live series' job (the broker appends a "now" point).
            if eq is None or ts >= datetime.now(UTC) - timedelta(hours=1):
                continue
            deposits = self.ledger.deposits_until(ts, self.deposit_baseline)
            if eq == 0 and deposits == 0:
                continue
            snaps.append(EquitySnapshot(ts=ts, equity=eq, cash=None, long_market_value=None,  # type: ignore[arg-type]
                                        short_market_value=None, realized_pl=None, unrealized_pl=None,  # type: ignore[arg-type]
                                        net_deposits=deposits, drawdown=tracker.update(eq, deposits), source="history"))
        if not snaps and self.dest.initial_deposit is not None:
            first = min((t for t, _ in self.ledger.deposit_events), default=None) or (
                self.positions and min(p.entry_time for p in self.positions.values())) or None
            if isinstance(first, datetime):
                dep = self.dest.initial_deposit
                snaps.append(EquitySnapshot(ts=first, equity=dep, cash=dep, long_market_value=ZERO,
                                            short_market_value=ZERO, realized_pl=ZERO, unrealized_pl=ZERO,
                                            net_deposits=self.deposit_baseline or dep,
                                            drawdown=tracker.update(dep, dep), source="seed"))
        if snaps:
            await self.write_equity(snaps)
            if tracker.max_excess is not None and (self.tracker.max_excess is None
                                                   or tracker.max_excess > self.tracker.max_excess):
                self.tracker.max_excess = tracker.max_excess
            self.log.info("dest=%s seeded %d equity points from portfolio history", self.slug, len(snaps))

    # -- broker reconciliation -------------------------------------------------------------
    async def reconcile(self) -> None:
        """``/v2/positions``: quantities (truth), REST prices (fallback marks), previous closes."""
        if self.broker is None:
            return
        positions = await self.broker.get_positions()
        self.stats.reconciles += 1
        now = datetime.now(UTC)
        broker_qty: dict[str, Decimal] = {}
        for p in positions:
            if getattr(p, "parse_error", None) or p.qty is None:
                continue
            broker_qty[p.symbol] = p.qty
            if p.current_price is not None and p.current_price > 0:
                self.rest_marks[p.symbol] = Mark(p.current_price, now, "rest", False)
            if p.lastday_price is not None and p.lastday_price > 0:
                self.prev_close[p.symbol] = p.lastday_price
        fifo_qty = {s: pos.qty for s, pos in self.positions.items()}
        mismatch = qty_mismatches(fifo_qty, broker_qty)
        changed = broker_qty != self.broker_qty or mismatch != self.mismatch
        # Under continuous trading the broker is always a little ahead of the ingested fills: a
        # difference only counts once it repeats unchanged with no fill applied in between.
        fills_now = self.book.fill_count
        confirmed = bool(mismatch) and mismatch == self.mismatch and fills_now == self.fills_at_reconcile
        self.fills_at_reconcile = fills_now
        self.broker_qty = broker_qty
        self.mismatch = mismatch
        if changed:
            self.structure_dirty = True
        if not mismatch:
            self.mismatch_streak = 0
        elif not confirmed:
            self.mismatch_streak = 0
            self.log.info("dest=%s quantity difference (fifo, broker), re-checking next sync: %s", self.slug,
                          {s: (str(a), str(b)) for s, (a, b) in sorted(mismatch.items())})
        else:
            self.mismatch_streak += 1
            self.stats.qty_mismatches += 1
            self.log.warning("dest=%s quantity mismatch (fifo, broker): %s", self.slug,
                             {s: (str(a), str(b)) for s, (a, b) in sorted(mismatch.items())})
            await self.heal(full_rebuild=self.mismatch_streak >= 2)
        await self.refresh_legs()

    async def heal(self, *, full_rebuild: bool) -> None:
        """Re-read the activities: every row (idempotent), or from scratch after repeated mismatches."""
        self.stats.rereads += 1
        if full_rebuild:
            self.log.warning("dest=%s mismatch persists: rebuilding the book from all activities", self.slug)
            self.book, self.ledger, self.last_seq = FifoBook(), Ledger(), 0
            self.orders, self.trip_pl, self.realized_closed = {}, {}, ZERO
            self.mismatch_streak = 0
        await self.sync_activities(full=True, initial=full_rebuild)

    async def refresh_account(self) -> None:
        """The broker's cash and equity; the ledger offset is adopted once stable and positions agree."""
        if self.broker is None:
            return
        account = await self.broker.get_account()
        self.stats.account_refreshes += 1
        self.broker_cash = account.cash
        self.broker_equity = account.equity
        if account.cash is None or self.mismatch or self.broker_qty is None:
            self._offset_candidate = None
            return
        candidate = account.cash - self.ledger.cash
        if candidate == self._offset_candidate and candidate != self.cash_offset:
            self.log.info("dest=%s cash offset %s -> %s (broker cash %s)", self.slug, self.cash_offset, candidate,
                          account.cash)
            self.cash_offset = candidate
            self.structure_dirty = True
        self._offset_candidate = candidate

    # -- health ----------------------------------------------------------------------------
    async def heartbeat(self, *, state: str = "running") -> None:
        self.stats.heartbeats += 1
        stale = sorted(s for s, m in self._current_marks(time.monotonic_ns()).items() if m.stale)
        details = {
            "replica": REPLICA_ID,
            "stats": asdict(self.stats),
            "qty_mismatch": {s: [str(a), str(b)] for s, (a, b) in sorted(self.mismatch.items())},
            "stale_symbols": stale,
            "open_positions": len(self.positions),
            "fills": self.book.fill_count,
            "last_seq": self.last_seq,
            "cash_offset": str(self.cash_offset),
            "broker_cash": None if self.broker_cash is None else str(self.broker_cash),
            "broker_equity": None if self.broker_equity is None else str(self.broker_equity),
            "price_feed": asdict(self.feed.stats) if self.feed is not None else None,
            "price_feed_last_tick_age_s": self.feed.last_tick_age_s() if self.feed is not None else None,
            "price_bars": {**asdict(self.manager.bar_writer.stats),
                           "late": self.feed.bars.late if self.feed is not None else 0,
                           "ignored": self.feed.bars.ignored if self.feed is not None else 0},
            "pos_version": self.pos_version,
            "closed_version": self.closed_version,
        }
        lag = (datetime.now(UTC) - self.last_snapshot_ts).total_seconds() if self.last_snapshot_ts else None
        await write_heartbeat(self.pool, self.settings.account_schema, self.slug, SERVICE, state=state,
                              last_event_at=self.last_fill_at, lag_s=lag, rows_ingested=self.stats.fills_applied,
                              errors=self.stats.errors, last_error=self.stats.last_error, details=details)


@dataclass(frozen=True, slots=True)
class EquitySnapshotInputs:
    cash: Decimal
    market_values: list[Decimal]
    unrealized_pl: Decimal
    realized_pl: Decimal
    net_deposits: Decimal


# ----------------------------------------------------------------------------- the manager

@dataclass(slots=True)
class _Owned:
    runner: DestinationRunner
    task: asyncio.Task[None]


class AccountManager:
    """Owns whichever destinations it can lock and keeps their derived tables current.

    ``broker_factory`` and ``market_open`` exist for embedding and tests (defaults: the real
    :class:`workers.broker.BrokerClient` and the NYSE schedule).
    """

    def __init__(
        self,
        settings: Settings,
        destinations: Sequence[Destination],
        *,
        broker_factory: BrokerFactory | None = None,
        market_open: MarketOpen | None = None,
        pool: asyncpg.Pool | None = None,
    ) -> None:
        self.settings = settings
        self.destinations = [d for d in destinations if d.enabled]
        self.broker_factory: BrokerFactory = broker_factory or _default_broker
        self.market_open: MarketOpen = market_open or _default_market_open
        self.pool: asyncpg.Pool | None = pool
        self._own_pool = pool is None
        self.locks = OwnershipLocks(settings, SERVICE)
        self.owned: dict[str, _Owned] = {}
        self.feeds: dict[tuple[str, ...], PriceFeed] = {}
        self._feed_tasks: list[asyncio.Task[None]] = []
        self.bar_writer = BarWriter()
        """Every feed's one-minute bars on their way to ``public.price_bars`` (pending ones retried)."""
        self._listener: asyncpg.Connection | None = None
        self.pos_notify_hooks: list[Callable[[DestinationRunner], None]] = []
        self.takeovers = 0

    # -- wiring ----------------------------------------------------------------------------
    def _endpoints(self, dest: Destination) -> tuple[str, ...]:
        if dest.price_feed.zmq_endpoints:
            return dest.price_feed.zmq_endpoints
        return tuple(e.strip() for e in self.settings.zmq_price_endpoints.split(",") if e.strip())

    def _feed_for(self, dest: Destination) -> PriceFeed | None:
        endpoints = self._endpoints(dest)
        if not endpoints:
            return None
        feed = self.feeds.get(endpoints)
        if feed is None:
            stale = dest.price_feed.stale_after_s or self.settings.price_stale_after_s
            feed = PriceFeed(endpoints, stale_after_s=stale)
            self.feeds[endpoints] = feed
            self._feed_tasks.append(asyncio.create_task(feed.run(), name=f"zmq {','.join(endpoints)}"))
        return feed

    def holdings_changed(self) -> None:
        """Subscribe each feed to exactly the symbols its owned destinations hold."""
        wanted: dict[tuple[str, ...], set[str]] = {k: set() for k in self.feeds}
        for owned in self.owned.values():
            r = owned.runner
            if r.feed is not None:
                wanted[r.feed.endpoints].update(r.positions)
        for key, symbols in wanted.items():
            self.feeds[key].set_symbols(symbols)

    def on_pos_notify(self, runner: DestinationRunner) -> None:
        for hook in self.pos_notify_hooks:
            hook(runner)

    def _on_new_fills(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            data = json.loads(payload)
        except ValueError:
            data = None
        slug = None
        if isinstance(data, dict):
            slug = data.get("d") or data.get("destination") or data.get("slug")
        for s, owned in self.owned.items():
            if slug is None or s == slug:
                owned.runner.wake.set()

    # -- run -------------------------------------------------------------------------------
    async def run(self, stop_event: asyncio.Event | None = None) -> None:
        """Run until ``stop_event`` is set, then drain: flush, checkpoint, release locks."""
        stop = stop_event or asyncio.Event()
        from workers.db import connect, create_pool

        if self.pool is None:
            self.pool = await create_pool(self.settings, min_size=1, max_size=max(4, min(20, len(self.destinations) + 2)))
        # Warm the market calendar off the loop (exchange_calendars builds its sessions once).
        await asyncio.to_thread(self.market_open, datetime.now(UTC))
        try:
            self._listener = await connect(self.settings)
            await self._listener.add_listener(NEW_FILLS_CHANNEL, self._on_new_fills)
            tasks = [asyncio.create_task(self._ownership_loop(stop), name="ownership"),
                     asyncio.create_task(self._flush_loop(stop), name="flush"),
                     asyncio.create_task(self._leading_edge_loop(stop), name="leading-edge"),
                     asyncio.create_task(self._bars_loop(stop), name="price-bars"),
                     asyncio.create_task(self._heartbeat_loop(stop), name="heartbeat")]
            await stop.wait()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await self._drain()

    async def _drain(self) -> None:
        """Stop the loops, flush and checkpoint each destination (bounded), then release every lock."""
        for owned in self.owned.values():
            owned.task.cancel()
        await asyncio.gather(*(o.task for o in self.owned.values()), return_exceptions=True)
        try:
            await asyncio.wait_for(
                asyncio.gather(*(o.runner.stop() for o in self.owned.values()), return_exceptions=True),
                timeout=DRAIN_TIMEOUT_S)
        except TimeoutError:
            log.warning("drain: final flushes did not finish within %.0fs; the raw data stays the truth",
                        DRAIN_TIMEOUT_S)
        self.owned.clear()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.locks.close(), timeout=2.0)
        for t in self._feed_tasks:
            t.cancel()
        await asyncio.gather(*self._feed_tasks, return_exceptions=True)
        if self.pool is not None:  # the last seconds of bars (bounded; whatever fails is lost, not fatal)
            try:
                await asyncio.wait_for(self.write_bars_once(), timeout=BAR_DRAIN_TIMEOUT_S)
            except Exception as exc:
                log.warning("drain: %d price bars not written: %s: %s", self.bar_writer.pending,
                            type(exc).__name__, exc)
        for feed in self.feeds.values():
            feed.close()
        self.feeds.clear()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        if self.pool is not None and self._own_pool:
            await self.pool.close()
            self.pool = None

    async def _ownership_loop(self, stop: asyncio.Event) -> None:
        """Take every destination nobody holds; notice lost locks. Polls at HEARTBEAT_SEC / 2."""
        interval = self.settings.heartbeat_sec / 2
        while not stop.is_set():
            try:
                before = set(self.locks.owned)
                alive = await self.locks.still_held()
                lost = before - set(self.locks.owned) if alive else before
                for slug in lost:
                    await self._abandon(slug, "lock connection lost")
                for dest in self.destinations:
                    if dest.slug in self.owned:
                        owned = self.owned[dest.slug]
                        if owned.task.done():  # the runner died: start it again
                            self._report_runner_exit(owned)
                            self.owned.pop(dest.slug)
                        else:
                            continue
                    if await self.locks.try_acquire(dest.slug):
                        self._start_runner(dest)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ColdHarbourError, TimeoutError) as exc:
                log.warning("ownership check failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(interval)

    def _report_runner_exit(self, owned: _Owned) -> None:
        if not owned.task.cancelled() and owned.task.exception() is not None:
            exc = owned.task.exception()
            log.error("dest=%s runner stopped: %r; restarting", owned.runner.slug, exc)

    def _start_runner(self, dest: Destination) -> None:
        runner = DestinationRunner(self, dest, self._feed_for(dest))
        task = asyncio.create_task(runner.run(), name=f"manager {dest.slug}")
        self.owned[dest.slug] = _Owned(runner, task)
        self.takeovers += 1
        log.info("dest=%s owned by %s", dest.slug, REPLICA_ID)

    async def _abandon(self, slug: str, why: str) -> None:
        owned = self.owned.pop(slug, None)
        if owned is None:
            return
        log.warning("dest=%s ownership dropped (%s)", slug, why)
        owned.task.cancel()
        await asyncio.gather(owned.task, return_exceptions=True)
        self.holdings_changed()

    async def _flush_loop(self, stop: asyncio.Event) -> None:
        """Every FLUSH_INTERVAL_S: route conflated ticks, then let each ready destination write."""
        interval = self.settings.flush_interval_s
        while not stop.is_set():
            await asyncio.sleep(interval)
            try:
                await self.flush_once()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ColdHarbourError, TimeoutError) as exc:
                log.warning("flush failed: %s: %s", type(exc).__name__, exc)

    async def write_bars_once(self) -> int:
        """Take every feed's touched bars (once per feed, however many destinations share it) and write
        them with whatever a previous failed write left pending; the number of bars written."""
        for key, feed in self.feeds.items():
            self.bar_writer.offer(key, feed.bars.take())
        assert self.pool is not None
        return await self.bar_writer.write(self.pool)

    async def _bars_loop(self, stop: asyncio.Event) -> None:
        """Price bars, apart from the positions flush: a slow or failing write never delays a NOTIFY."""
        interval = max(self.settings.flush_interval_s, BAR_WRITE_INTERVAL_S)
        while not stop.is_set():
            await asyncio.sleep(interval)
            try:
                await self.write_bars_once()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("price bars write failed (%d pending, retried in %.1fs): %s: %s",
                            self.bar_writer.pending, interval, type(exc).__name__, exc)
            except Exception:  # a bug here must not stop the bars for good, nor anything else
                log.exception("price bars write failed unexpectedly (%d pending)", self.bar_writer.pending)

    async def _leading_edge_loop(self, stop: asyncio.Event) -> None:
        """On a tick for a destination whose NOTIFY window is open, write and NOTIFY at once.

        Between two NOTIFYs (``UI_SNAPSHOT_SEC``) ticks only update the in-memory marks and are
        written by the periodic flush; the first tick after the window opens goes straight through,
        so what the dashboard is told about is never older than the tick plus one write.
        """
        while not stop.is_set():
            feeds = list(self.feeds.values())
            # Bounded waits: a feed added by a take-over is picked up within a second.
            timeout_s = min(self.settings.flush_interval_s, 1.0)
            if len(feeds) == 1:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(feeds[0].changed.wait(), timeout=timeout_s)
            elif feeds:
                waits = [asyncio.create_task(f.changed.wait()) for f in feeds]
                try:
                    await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
            else:
                await asyncio.sleep(min(timeout_s, 0.1))
                continue
            self.route_ticks()
            eager = [o.runner for o in self.owned.values() if o.runner.wants_leading_edge]
            if eager:
                await self._flush_runners(eager)

    def route_ticks(self) -> None:
        """Hand each feed's conflated ticks to the owned destinations holding those symbols."""
        by_feed: dict[tuple[str, ...], list[DestinationRunner]] = {}
        for o in self.owned.values():
            if o.runner.ready and o.runner.feed is not None:
                by_feed.setdefault(o.runner.feed.endpoints, []).append(o.runner)
        for key, feed in self.feeds.items():
            ticks = feed.drain()
            if not ticks:
                continue
            for r in by_feed.get(key, []):
                for symbol in r.positions.keys() & ticks.keys():
                    r.on_tick(ticks[symbol])

    async def flush_once(self) -> None:
        self.route_ticks()
        runners = [o.runner for o in self.owned.values() if o.runner.ready]
        # Destinations about to NOTIFY go first: their rows are what a dashboard is waiting for.
        now_mono = time.monotonic()
        runners.sort(key=lambda r: not (r.dirty and r.throttle.ready(now_mono)))
        await self._flush_runners(runners)

    async def _flush_runners(self, runners: Sequence[DestinationRunner]) -> None:
        now, now_mono = datetime.now(UTC), time.monotonic()
        # A few writers at a time: on a small machine many concurrent statements are slower than a short queue.
        gate = asyncio.Semaphore(FLUSH_CONCURRENCY)

        async def one(r: DestinationRunner) -> None:
            async with gate:
                await r.flush(now, now_mono)

        results = await asyncio.gather(*(one(r) for r in runners), return_exceptions=True)
        for r, res in zip(runners, results, strict=True):
            if isinstance(res, Exception):
                r._error("flush", res)

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for owned in list(self.owned.values()):
                if owned.runner.ready:
                    await owned.runner._safe(owned.runner.heartbeat(), "heartbeat")
            await asyncio.sleep(self.settings.heartbeat_sec)


# ----------------------------------------------------------------------------- entry points

async def run_manager(
    settings: Settings,
    destinations: Sequence[Destination] | None = None,
    *,
    stop_event: asyncio.Event | None = None,
) -> None:
    """One call: run an :class:`AccountManager` over ``destinations`` (default: the configured, enabled ones)."""
    if destinations is None:
        from core.destinations import load_destinations

        destinations = load_destinations(settings.destinations_file, settings.destinations_local_file)
    await AccountManager(settings, destinations).run(stop_event)


class _Progress:
    """A minimal stderr progress bar (no dependency)."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label, self.total, self.enabled, self.done = label, max(total, 1), enabled, 0
        self._last = 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.2 or self.done >= self.total):
            self._last = now
            width = 30
            filled = int(width * min(self.done, self.total) / self.total)
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}")
            if self.done >= self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()



# ----------------------------------------------------------------------------- history commands

REFILL_MAX_POINTS = 500_000


async def _stored_activities(pool: asyncpg.Pool, settings: Settings, slug: str) -> list[ActivityRecord]:
    rows = await pool.fetch(
        f"SELECT {_ACTIVITY_COLUMNS} FROM {quote_ident(settings.account_schema)}.activities "
        "WHERE destination = $1 ORDER BY ts, activity_id", slug)
    return [_activity(r) for r in rows]


def _session_closes(start: datetime, end: datetime) -> list[datetime]:
    from core import market_schedule

    closes = []
    for day in market_schedule.sessions_between(start.date(), end.date()):
        session = market_schedule.session(day)
        if session is not None and start <= session.close <= end:
            closes.append(session.close)
    return closes


async def _insert_snapshots(pool: asyncpg.Pool, slug: str, snaps: Sequence[EquitySnapshot], progress: _Progress) -> int:
    inserted = 0
    sql = equity_sql(slug)
    for start in range(0, len(snaps), 2_000):
        part = snaps[start:start + 2_000]
        record = await pool.fetchrow(sql, *_columns([equity_row(s) for s in part], _EQUITY_COLS), slug)
        inserted += int(record["inserted"]) if record is not None else 0
        progress.advance(len(part))
    return inserted


async def rebuild_equity(settings: Settings, destination: Destination, *, since: datetime | None = None,
                         progress: bool = True) -> int:
    """Recompute ``equity_full_<slug>`` from ``since`` (default: the first activity) out of the raw activities.

    Every row at or after ``since`` is replaced by one point per NYSE session close (``source`` =
    ``rebuild``), valued at the last fill price of each symbol; cash, deposits and realized P&L are
    exact. A running manager resumes its live snapshots afterwards. Returns the rows written.
    """
    from workers.db import create_pool

    pool = await create_pool(settings, max_size=2)
    try:
        slug = destination.slug
        acts = await _stored_activities(pool, settings, slug)
        if not acts:
            log.warning("dest=%s rebuild-equity: no activities stored", slug)
            return 0
        start = since or acts[0].ts
        now = datetime.now(UTC)
        points = await asyncio.to_thread(_session_closes, start, now)
        table = f"public.{quote_ident(equity_table(slug))}"
        max_excess = await pool.fetchval(f"SELECT max(equity - net_deposits) FROM {table} WHERE ts < $1", start)
        baseline = destination.initial_deposit or ZERO
        replay = EquityReplay(baseline_deposit=baseline, tracker=DrawdownTracker(max_excess), source="rebuild")
        snaps = replay_points(acts, points, replay)
        bar = _Progress(f"rebuild-equity {slug}", len(snaps), progress)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(f"DELETE FROM {table} WHERE ts >= $1", start)
        written = await _insert_snapshots(pool, slug, snaps, bar)
        log.info("dest=%s rebuild-equity: %d points from %s (%d activities skipped)", slug, written, start,
                 replay.skipped)
        return written
    finally:
        await pool.close()


async def refill_snapshots(settings: Settings, destination: Destination, *, since: datetime | None = None,
                           progress: bool = True) -> int:
    """Fill the holes of the live snapshot grid (``SNAPSHOT_SEC`` in market hours, sparser outside).

    Between ``since`` (default: the first live snapshot) and the newest stored row, every missing grid
    instant gets a point replayed from the activities (``source`` = ``refill``); existing rows are never
    touched. Returns the rows written.
    """
    from workers.db import create_pool

    pool = await create_pool(settings, max_size=2)
    try:
        slug = destination.slug
        table = f"public.{quote_ident(equity_table(slug))}"
        bounds = await pool.fetchrow(
            f"SELECT min(ts) FILTER (WHERE source = 'live') AS first_live, max(ts) AS last FROM {table}")
        start = since or (bounds["first_live"] if bounds else None)
        end = bounds["last"] if bounds else None
        if start is None or end is None or end <= start:
            log.info("dest=%s refill-snapshots: nothing to refill", slug)
            return 0
        existing = {r["ts"] for r in await pool.fetch(f"SELECT ts FROM {table} WHERE ts >= $1", start)}
        grid = await asyncio.to_thread(missing_boundaries, start - timedelta(microseconds=1), end,
                                       snapshot_sec=settings.snapshot_sec, market_open=_default_market_open,
                                       max_points=REFILL_MAX_POINTS)
        points = [p for p in grid if p not in existing]
        if not points:
            return 0
        acts = await _stored_activities(pool, settings, slug)
        max_excess = await pool.fetchval(f"SELECT max(equity - net_deposits) FROM {table} WHERE ts < $1", points[0])
        replay = EquityReplay(baseline_deposit=destination.initial_deposit or ZERO,
                              tracker=DrawdownTracker(max_excess), source="refill")
        snaps = replay_points(acts, points, replay)
        written = await _insert_snapshots(pool, slug, snaps, _Progress(f"refill-snapshots {slug}", len(snaps),
                                                                     progress))
        log.info("dest=%s refill-snapshots: %d points", slug, written)
        return written
    finally:
        await pool.close()
