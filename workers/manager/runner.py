"""One owned destination: the book, the marks, and the loops that keep its three tables current.

The runner decides nothing itself that a pure function can decide (:mod:`.book`, :mod:`.marks`,
:mod:`.reconcile`, :mod:`.seed`, :mod:`core.valuation`, :mod:`core.snapshots`); it reads, calls them,
and writes through its :class:`~workers.manager.store.Store`. The process that owns it hands it a
:class:`~workers.manager.context.RunnerContext` and calls only its public methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from core.destinations import Destination, closed_channel, pos_channel
from core.errors import InvalidInput
from core.exit_legs import Legs, select_legs
from core.fifo import FifoBook
from core.ledger import ZERO, CashLedger
from core.records import ActivityRecord, OpenPosition, OrderMeta
from core.snapshots import DrawdownTracker, EquitySnapshot, SnapshotSource, due_points, make_snapshot
from core.valuation import AccountValue, Mark, OpenTradeRow, PriceSource, account_value, value_positions
from workers.errors import ErrorKind, classify, describe
from workers.manager import book as bookkeeping
from workers.manager import checkpoint
from workers.manager import interpret as interpretation
from workers.manager.context import RunnerContext
from workers.manager.health import runner_intervals_s, stall_reason, write_runner_heartbeat
from workers.manager.loops import keep_running
from workers.manager.marks import choose_marks, newly_stale, tick_time
from workers.manager.options import (
    CHECKPOINT_COST_S_PER_FILL,
    CHECKPOINT_INTERVAL_S,
    CHECKPOINT_MAX_LOOP_SHARE,
    LATE_SNAPSHOTS_MAX,
    NOTIFY_IDS_MAX,
    PAIR_WAIT_S,
    RESTAMP_SETTLE_S,
    DestinationStats,
)
from workers.manager.port import BrokerPort
from workers.manager.provisional import rebuild_if_replaced, show_fill_now
from workers.manager.reconcile import (
    CashCalibration,
    QtyCheck,
    Verdict,
    absorb_late_lines,
    calibrate_cash,
    check_quantities,
    read_positions,
)
from workers.manager.seeding import refill_gap, seed_from_history
from workers.manager.store import Store, bad_open_row, storable_snapshots
from workers.manager.throttle import Throttle, notify_window_s
from workers.manager.unconfirmed import Unconfirmed, track_confirmations
from workers.notify import encode_payload
from workers.prices import PriceFeed, PriceTick
from workers.supervise import LoopHealth

log = logging.getLogger("workers.manager")


class DestinationRunner:
    """Everything the manager does for one owned destination."""

    def __init__(self, context: RunnerContext, destination: Destination, feed: PriceFeed | None) -> None:
        self.ctx = context
        self.settings = context.settings
        self.dest = destination
        self.slug = destination.slug
        self.feed = feed
        self.store = Store(context.pool, self.settings.account_schema, self.slug, series_pool=context.series_pool)
        self.unconfirmed = Unconfirmed(self.store)  # stream fills not confirmed by REST yet: rows marked provisional
        self.log = logging.LoggerAdapter(log, {"destination": self.slug})
        self.stats = DestinationStats()
        self.loops: dict[str, LoopHealth] = {"flush": LoopHealth("flush")}
        """Progress of every loop (the flush is driven by the process, the others are this runner's)."""
        self.broker: BrokerPort | None = None
        # The book and the ledger (what the checkpoint saves).
        self.book = FifoBook()
        self.ledger = CashLedger()
        self.last_seq = 0
        self.orders: dict[str, OrderMeta] = {}
        self.missing_orders: dict[str, int] = {}
        """Order ids of recent fills not in ``orders`` yet -> lookups tried (bounded)."""
        self.trip_pl: dict[str, Decimal] = {}
        self.realized_closed = ZERO
        self.positions: dict[str, OpenPosition] = {}
        # Marks and what the broker says.
        self.marks: dict[str, Mark] = {}
        self.rest_marks: dict[str, Mark] = {}
        self.prev_close: dict[str, Decimal] = {}
        self.broker_qty: dict[str, Decimal] | None = None
        self.qty_check = QtyCheck(mismatch={}, fills_seen=0, streak=0)
        self.cash = CashCalibration(offset=ZERO)
        self.broker_cash: Decimal | None = None
        self.broker_equity: Decimal | None = None
        self.legs: dict[str, Legs] = {}
        # Publishing state.
        self.tracker = DrawdownTracker()
        self.last_snapshot_ts: datetime | None = None
        self.throttle = Throttle(notify_window_s(self.settings.ui_snapshot_sec))
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
        self.started_mono = time.monotonic()
        self.last_fill_at: datetime | None = None
        self.write_lock = asyncio.Lock()
        self.waiting = interpretation.PairWait(PAIR_WAIT_S)
        self.stamped_ts: datetime | None = None
        """The newest instant this runner stamped."""
        self.restamp: float | None = None
        """When (monotonic s) activities dated before ``stamped_ts`` were last booked, until re-stamped."""
        self.rebuild_wanted = False

    # --- small public surface the process uses ----------------------------------------------------
    @property
    def mismatch(self) -> dict[str, tuple[Decimal, Decimal]]:
        return self.qty_check.mismatch

    @property
    def deposit_baseline(self) -> Decimal:
        """``initial_deposit`` counts as a deposit only when the activities hold none."""
        if self.dest.initial_deposit is not None and not self.ledger.deposit_events:
            return self.dest.initial_deposit
        return ZERO

    def wake_up(self) -> None:
        """New activities were announced: read them now instead of at the next poll."""
        self.wake.set()

    def notify_ready(self, now_mono: float) -> bool:
        """Prices moved and the NOTIFY window is open (such a destination is flushed first)."""
        return bool(self.dirty) and self.throttle.ready(now_mono)

    @property
    def wants_leading_edge(self) -> bool:
        """Prices moved and the NOTIFY window is open: worth writing now rather than at the next flush."""
        return self.ready and not self.flushing and self.notify_ready(time.monotonic())

    def record_error(self, what: str, exc: BaseException) -> None:
        kind = classify(exc)
        if what in self.loops:
            self.loops[what].failed(exc, kind)
        self.stats.errors += 1
        self.stats.last_error = f"{what}: {describe(exc, 200)}"
        if kind is ErrorKind.BUG:
            self.log.error("dest=%s %s failed unexpectedly", self.slug, what, exc_info=exc)
        else:
            self.log.warning("dest=%s %s failed: %s", self.slug, what, self.stats.last_error)

    def _refused(self, what: str, details: Sequence[str]) -> None:
        before = self.stats.values_refused
        self.stats.values_refused += len(details)
        self.stats.errors += 1
        self.stats.last_error = f"{what}: unstorable value refused: {', '.join(details[:3])}"[:300]
        if len(str(before)) != len(str(self.stats.values_refused)) or before == 0:  # 1, 10, 100…: never a flood
            self.log.warning("dest=%s %s (%d so far)", self.slug, self.stats.last_error, self.stats.values_refused)

    async def guarded(self, work: Awaitable[Any], what: str) -> None:
        """Await ``work``; any failure is counted and logged, never raised (drain, heartbeat)."""
        try:
            await work
        except Exception as exc:  # the caller must go on whatever this was; classify() decides the log level
            self.record_error(what, exc)

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the checkpoint, catch up on activities, seed equity, publish the tables."""
        await self.store.ensure_versions()
        self.broker = self.ctx.broker_factory(self.dest, self.settings)
        await self._load_checkpoint()
        await self.sync_activities(initial=True)
        self.last_snapshot_ts, max_excess = await self.store.equity_bounds()
        self.tracker = DrawdownTracker(max_excess)
        self.needs_seed = self.last_snapshot_ts is None
        if self.last_snapshot_ts is not None:
            await self._refill_gap(datetime.now(UTC))
        self.ready = True
        # After a restart or take-over the feed must hear about the positions the checkpoint held.
        self.ctx.holdings_changed()
        await self.flush(datetime.now(UTC), time.monotonic(), force=True)
        await self.heartbeat()

    async def run(self) -> None:
        """The destination's own loops (activities, reconciliation, account, checkpoint); runs until cancelled.

        A bug in one loop restarts that loop only (:func:`~workers.manager.loops.keep_running`)."""
        await self.start()
        # Broker calls never hold up the start: they retry with backoff and the tables are already live.
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._supervised("activities", self._activities_tick, None))
            tg.create_task(self._supervised("reconcile", self.reconcile, self.settings.closed_sync_sec))
            tg.create_task(self._supervised("account", self.refresh_account, self.settings.equity_update_interval_s))
            tg.create_task(self._supervised("checkpoint", self._checkpoint_if_changed, CHECKPOINT_INTERVAL_S,
                                            first_now=False))
            if self.needs_seed:
                tg.create_task(self._supervised("seed", self._seed_equity, None, once=True))

    def _supervised(self, name: str, step: Callable[[], Awaitable[object]], interval_s: float | None, *,
                    first_now: bool = True, once: bool = False) -> Coroutine[Any, Any, None]:
        def count(exc: BaseException, _kind: ErrorKind | None = None) -> None:  # keep_running() logs it
            self.stats.errors += 1
            self.stats.last_error = f"{name}: {describe(exc, 200)}"

        return keep_running(step, name=f"dest={self.slug} {name}", log=self.log, interval_s=interval_s,
                            first_now=first_now, once=once, health=self.loops.setdefault(name, LoopHealth(name)),
                            on_error=count, on_restart=count)

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
        await self.guarded(self.flush(datetime.now(UTC), time.monotonic(), force=True), "final flush")
        if self.book_changed_since_checkpoint:
            await self.guarded(self.checkpoint(), "final checkpoint")
        await self.guarded(self.heartbeat(state="stopped"), "final heartbeat")
        if self.broker is not None:
            with contextlib.suppress(Exception):
                await self.broker.close()

    # --- checkpoint --------------------------------------------------------------------------
    async def _load_checkpoint(self) -> None:
        stored = await self.store.checkpoint()
        if stored is None:
            return
        text, last_seq = stored
        try:
            saved = await asyncio.to_thread(checkpoint.decode, text)
        except InvalidInput as exc:  # a cache: replay instead
            self.log.warning("dest=%s %s: full replay from activities", self.slug, exc)
            return
        self.book, self.ledger, self.last_seq, self.orders = saved.book, saved.ledger, last_seq, saved.orders
        self.cash = CashCalibration(offset=saved.cash_offset)
        self.trip_pl = {trip.trade_id: trip.net_pl for trip in self.book.round_trips()}
        self.realized_closed = sum(self.trip_pl.values(), ZERO)
        self.positions = self.book.open_positions()
        self.log.info("dest=%s checkpoint loaded: %d fills up to seq %d", self.slug, self.book.fill_count, self.last_seq)

    async def checkpoint(self) -> None:
        """Persist the book and ledger as of ``last_seq`` (a cache: activities stay the truth)."""
        last_seq, fill_count = self.last_seq, self.book.fill_count
        text = await asyncio.to_thread(checkpoint.encoder(self.book, self.ledger, self.cash.offset))  # copies now
        await self.store.save_checkpoint(text, last_seq=last_seq, fill_count=fill_count)
        self.book_changed_since_checkpoint = False
        self.last_checkpoint_mono = time.monotonic()
        self.stats.checkpoints += 1

    async def _checkpoint_if_changed(self) -> None:
        # Big books are saved less often, keeping serialisation a small share of the loop's time;
        # a take-over then replays a little more from the activities.
        due_s = max(CHECKPOINT_INTERVAL_S, self.book.fill_count * CHECKPOINT_COST_S_PER_FILL / CHECKPOINT_MAX_LOOP_SHARE)
        if self.book_changed_since_checkpoint and time.monotonic() - self.last_checkpoint_mono >= due_s:
            await self.checkpoint()

    # --- activities -> book --------------------------------------------------------------------
    async def sync_activities(self, *, initial: bool = False, full: bool = False) -> bookkeeping.BookChanges | None:
        """Apply activities not seen yet; write the closed trades they produce. Idempotent."""
        self.stats.syncs += 1
        bulk = full or (initial and self.last_seq == 0)
        acts = await self.store.activities(after_seq=None if bulk else self.last_seq)
        if await rebuild_if_replaced(self, acts):
            return None
        await track_confirmations(self, acts, bulk=bulk)
        fresh = [a for a in acts if a.activity_id not in self.ledger.applied]
        if not fresh and not self.missing_orders:
            self.last_seq = bookkeeping.newest_seq(acts, self.last_seq)
            return None
        read = await self._interpret(fresh, bulk=bulk)
        for skipped in read.skipped:
            self.ledger.skip(skipped.activity_id)
            self.stats.activities_skipped += 1
            if not skipped.expected:
                self.log.warning("dest=%s activity %s skipped: %s", self.slug, skipped.activity_id, skipped.reason)
        wanted = bookkeeping.orders_wanted(read.fills, self.orders, self.missing_orders)
        orders, unusable = await self.store.orders(None if bulk else wanted)
        for why in unusable:
            self.log.warning("dest=%s order %s unusable", self.slug, why)
        for o in orders:
            self.orders[o.order_id] = o
        self.missing_orders = bookkeeping.still_missing(wanted, self.orders, self.missing_orders, bulk=bulk)
        applied = bookkeeping.apply_all(self.book, list(read.fills), orders, list(read.events), read.cash)
        if applied.error is not None:
            self.record_error("fifo apply", applied.error)
        self.rebuild_wanted |= applied.event_refused
        changes = applied.changes
        booked = interpretation.book_ledger(self.ledger, read)
        self.stats.activities_applied += len(booked)
        self.cash = absorb_late_lines(self.cash, booked)
        if self.stamped_ts is not None and any(ts <= self.stamped_ts for _, ts in read.entries):
            self.restamp = time.monotonic()
        self.stats.activities_unknown += len(read.unknown)
        self.stats.fills_applied += len(read.fills)
        self.stats.lot_events += len(read.events)
        if read.fills:
            self.last_fill_at = max(f.ts for f in read.fills)
        self.last_seq = bookkeeping.cursor(acts, self.last_seq, held=read.held)
        self.book_changed_since_checkpoint = True
        await self._after_book_update(changes, bulk=initial)
        if (read.regrouped or self.rebuild_wanted) and not bulk:
            self.log.warning("dest=%s lines %s booked alone now have their pair: rebuilding the book", self.slug,
                             ", ".join(read.regrouped[:3]) or "(event conflict)")
            self.rebuild_wanted = False
            await self.heal(full_rebuild=True)
        return changes

    async def _interpret(self, fresh: list[ActivityRecord], *, bulk: bool) -> interpretation.Interpretation:
        """Fills, lot events and ledger entries of ``fresh``; a split's or merger's line waits (at most
        ``PAIR_WAIT_S``) for its partner, read with the other lines of its day from the store."""
        paired = interpretation.paired_days(fresh)
        context: list[ActivityRecord] = []
        if paired and not bulk:
            days = {a.ts.date() for a in paired}
            context = [a for a in await self.store.lines_of_days(days) if a.activity_id in self.ledger.applied]
        read = interpretation.interpret(fresh, context=context, may_wait=self.waiting.may_wait(paired))
        self.waiting.settle(read.held)
        if read.problems:
            self.log.info("dest=%s %d activities not applied to lots: %s", self.slug, len(read.problems), read.problems[0])
        return read

    async def _after_book_update(self, changes: bookkeeping.BookChanges, *, bulk: bool) -> None:
        news = bookkeeping.tally_trips(changes, self.trip_pl, self.realized_closed)
        self.realized_closed = news.realized_closed
        self.positions = self.book.open_positions()
        self.structure_dirty = True
        self.dirty |= set(changes.symbols)
        if changes.symbols:
            self.ctx.holdings_changed()
            await self.refresh_legs()
        if news.latest or news.removed:
            await self.write_closed(news, bulk=bulk)
        if changes.symbols and not bulk:
            await show_fill_now(self)

    async def write_closed(self, news: bookkeeping.TripNews, *, bulk: bool) -> None:
        rows, refused = self.unconfirmed.storable(news)
        if refused:
            self._refused("closed trades", refused)
        async with self.write_lock:
            version = await self.store.write_closed(rows, news.removed)
            if version is not None:
                self.closed_version = version
            self.stats.trips_written += len(rows)
            if not news.announce_ids:
                return
            if bulk or len(news.announce_ids) > NOTIFY_IDS_MAX:
                payloads = [encode_payload({"v": self.closed_version, "ids": [], "count": len(news.announce_ids)})]
            else:
                payloads = [encode_payload({"v": self.closed_version, "ids": [tid]}) for tid in news.announce_ids]
            await self.store.notify(closed_channel(self.slug), payloads)
            self.stats.closed_notifies += len(payloads)

    async def refresh_legs(self) -> None:
        """Working exit orders for the held symbols (bracket legs first)."""
        held = sorted(self.positions)
        working = await self.store.exit_orders(held) if held else []
        legs = {s: select_legs(p, working) for s, p in self.positions.items()}
        if legs != self.legs:
            self.legs = legs
            self.structure_dirty = True

    # --- prices and valuation ------------------------------------------------------------------
    def on_tick(self, tick: PriceTick) -> None:
        """Adopt a conflated tick of a held symbol as its mark (the feed has screened its price and time)."""
        if tick.symbol not in self.positions:
            return
        self.stats.price_ticks += 1
        self.marks[tick.symbol] = Mark(price=tick.price, ts=tick_time(tick.ts_event_ns, tick.received_wall_ns),
                                       source=PriceSource.ZMQ)
        self.dirty.add(tick.symbol)

    def _zmq_fresh(self, now_mono_ns: int) -> Callable[[str], bool]:
        feed = self.feed
        return lambda symbol: feed is not None and not feed.is_stale(symbol, now_mono_ns)

    def current_marks(self, now_mono_ns: int) -> dict[str, Mark]:
        use_rest = self.dest.price_feed.rest_fallback or self.feed is None
        return choose_marks(self.positions, self.marks, self.rest_marks, zmq_fresh=self._zmq_fresh(now_mono_ns),
                            use_rest=use_rest)

    def valuation(self, now_mono_ns: int) -> tuple[list[OpenTradeRow], AccountValue, list[str]]:
        """Storable rows and the totals at the current marks, and the symbols whose rows are left as stored.

        A mark that would make a row unstorable is dropped first (the row falls back to the next mark
        source); a row that still does not fit is the book's own value and is not written at all.
        """
        marks = self.current_marks(now_mono_ns)
        rows, value = self._value_at(marks)
        bad = {r.symbol: why for r in rows if (why := bad_open_row(r)) is not None}
        if bad:
            self._refused("open trades", [f"{s} {why}" for s, why in sorted(bad.items())])
            if any(s in marks for s in bad):
                for symbol in bad:
                    marks.pop(symbol, None)
                    self.marks.pop(symbol, None)
                    self.rest_marks.pop(symbol, None)
                rows, value = self._value_at(marks)
                bad = {r.symbol: why for r in rows if r.symbol in bad and (why := bad_open_row(r)) is not None}
            rows = [r for r in rows if r.symbol not in bad]
        return rows, value, sorted(bad)

    def _value_at(self, marks: dict[str, Mark]) -> tuple[list[OpenTradeRow], AccountValue]:
        value = account_value(self.positions, marks, cash=self.ledger.cash + self.cash.offset,
                              realized_closed=self.realized_closed,
                              net_deposits=self.ledger.net_deposits + self.deposit_baseline)
        equity = value.cash + sum(value.market_values, ZERO)
        rows = value_positions(self.positions, marks, equity=equity, prev_close=self.prev_close, legs=self.legs,
                               broker_qty=self.broker_qty, provisional=self.unconfirmed.open_counts(self.positions))
        return rows, value

    # --- writes --------------------------------------------------------------------------------
    async def flush(self, now: datetime, now_mono: float, *, force: bool = False) -> None:
        """Write open trades if anything moved, send a due NOTIFY, take a due equity snapshot."""
        if not self.ready or (self.flushing and not force):
            return
        self.flushing = True
        try:
            await self._flush(now, now_mono, force=force)
            self.loops["flush"].succeeded()
        finally:
            self.flushing = False

    async def _flush(self, now: datetime, now_mono: float, *, force: bool) -> None:
        now_mono_ns = int(now_mono * 1e9)
        stale = newly_stale(self.marks, self._stale_check(now_mono_ns)) if self.feed is not None else {}
        self.marks.update(stale)
        if self.dirty or self.structure_dirty or stale or force:
            ids = sorted(self.dirty | (set(self.positions) if self.structure_dirty else set()))
            self.pending_notify_ids.update(ids)
            notify = self.throttle.offer(now_mono)
            rows, _, keep = self.valuation(now_mono_ns)
            self.dirty.clear()
            self.structure_dirty = False
            try:
                await self.write_open(rows, notify, keep=keep)
            except BaseException:
                self.structure_dirty = True  # rewrite everything (and NOTIFY) on the next flush
                if notify:
                    self.throttle.reopen()
                raise
        elif self.throttle.due(now_mono):
            await self.notify_pos()
        await self._snapshot_if_due(now, now_mono_ns)

    def _stale_check(self, now_mono_ns: int) -> Callable[[str], bool]:
        feed = self.feed
        return lambda symbol: feed is not None and feed.is_stale(symbol, now_mono_ns)

    async def _snapshot_if_due(self, now: datetime, now_mono_ns: int) -> None:
        points = due_points(now, self.last_snapshot_ts, snapshot_sec=self.settings.snapshot_sec,
                            market_open=self.ctx.market_open, max_points=LATE_SNAPSHOTS_MAX)
        if points:
            self.stats.snapshots += await self.snapshot(points, now_mono_ns, SnapshotSource.LIVE)
        elif self.restamp is not None and now_mono_ns / 1e9 - self.restamp >= RESTAMP_SETTLE_S and (
                (stamped := self.stamped_ts) is not None and stamped == self.last_snapshot_ts and stamped < now):
            # activities dated before our newest point came after it was stamped (a backfill at start, fees
            # posted at day end): it is re-stamped, and "now" (what live views build on) gets a point of its own
            self.restamp = None
            self.stats.restamps += await self.snapshot([stamped, now], now_mono_ns, SnapshotSource.LIVE,
                                                       replace=True)

    async def write_open(self, rows: list[OpenTradeRow], notify: bool, *, keep: Sequence[str] = ()) -> None:
        """Replace the open trades with ``rows`` (checked by :meth:`valuation`); ``keep``'s rows stay as stored."""
        ids = sorted(self.pending_notify_ids)[:NOTIFY_IDS_MAX] if notify else []
        marked = [r.mark_ts for r in rows if r.mark_ts is not None and not r.price_stale]
        if marked:
            self.as_of_ns = max(self.as_of_ns, int(max(marked).timestamp() * 1_000_000) * 1000)
        async with self.write_lock:
            version = await self.store.write_open(rows, notify_channel=pos_channel(self.slug) if notify else None,
                                                  ids=ids, as_of_ns=self.as_of_ns, keep=keep)
        if version is not None:
            self.pos_version = version
        self.stats.pos_writes += 1
        if notify:
            self.pending_notify_ids.clear()
            self.stats.pos_notifies += 1

    async def notify_pos(self) -> None:
        ids = sorted(self.pending_notify_ids)[:NOTIFY_IDS_MAX]
        await self.store.notify(pos_channel(self.slug),
                                [encode_payload({"v": self.pos_version, "ids": ids, "as_of_ns": self.as_of_ns})])
        self.pending_notify_ids.clear()
        self.stats.pos_notifies += 1

    async def snapshot(self, points: Sequence[datetime], now_mono_ns: int, source: SnapshotSource, *,
                       replace: bool = False) -> int:
        """Stamp ``points`` with the current valuation; the rows written."""
        _, value, _ = self.valuation(now_mono_ns)
        snaps = [make_snapshot(ts, cash=value.cash, market_values=value.market_values,
                               unrealized_pl=value.unrealized_pl, realized_pl=value.realized_pl,
                               net_deposits=value.net_deposits, tracker=self.tracker, source=source) for ts in points]
        inserted = await self.write_equity(snaps, replace=replace)
        self.last_snapshot_ts = self.stamped_ts = points[-1]
        return inserted

    async def write_equity(self, snaps: Sequence[EquitySnapshot], *, replace: bool = False) -> int:
        rows, refused = storable_snapshots(snaps)
        if refused:
            self._refused("equity", refused)
        async with self.write_lock:
            return await self.store.write_equity(rows, replace=replace)

    async def _refill_gap(self, now: datetime) -> None:
        """After a take-over or restart: the grid instants missed while nobody owned the destination."""
        await refill_gap(self, now)

    async def _seed_equity(self) -> None:
        """First run: the broker's daily portfolio history, so the curve starts on the first day."""
        await seed_from_history(self)

    # --- the broker ------------------------------------------------------------------------------
    async def reconcile(self) -> None:
        """``/v2/positions``: quantities (truth), REST prices (fallback marks), previous closes."""
        if self.broker is None:
            return
        broker = read_positions(await self.broker.get_positions(), datetime.now(UTC))
        self.stats.reconciles += 1
        self.rest_marks.update(broker.rest_marks)
        if self.feed is not None:  # the feed judges its first ticks against the broker's price
            for symbol, mark in broker.rest_marks.items():
                if self.feed.band.reference(symbol) is None:
                    self.feed.band.set_reference(symbol, mark.price)
        self.prev_close.update(broker.prev_close)
        fifo_qty = {s: pos.qty for s, pos in self.positions.items()}
        check = check_quantities(self.qty_check, fifo_qty, broker.qty, self.book.fill_count)
        if broker.qty != self.broker_qty or check.mismatch != self.qty_check.mismatch:
            self.structure_dirty = True
        stuck_before, self.broker_qty, self.qty_check = self.qty_check.verdict, broker.qty, check
        shown = {s: (str(a), str(b)) for s, (a, b) in sorted(check.mismatch.items())}
        if check.verdict is Verdict.STUCK and stuck_before is not Verdict.STUCK:
            self.log.warning("dest=%s quantity mismatch a rebuild left as it was, not rebuilt again: %s", self.slug, shown)
        if check.verdict is Verdict.UNCONFIRMED:
            self.log.info("dest=%s quantity difference (fifo, broker), re-checking next sync: %s", self.slug, shown)
        elif check.verdict in (Verdict.REREAD, Verdict.REBUILD):
            self.stats.qty_mismatches += 1
            self.log.warning("dest=%s quantity mismatch (fifo, broker): %s", self.slug, shown)
            await self.heal(full_rebuild=check.verdict is Verdict.REBUILD)
        await self.refresh_legs()

    async def heal(self, *, full_rebuild: bool) -> None:
        """Re-read the activities: every row (idempotent), or from scratch after repeated mismatches."""
        self.stats.rereads += 1
        if full_rebuild:
            self.log.warning("dest=%s mismatch persists: rebuilding the book from all activities", self.slug)
            self.book, self.ledger, self.last_seq = FifoBook(), CashLedger(), 0
            self.orders, self.trip_pl, self.realized_closed = {}, {}, ZERO
            self.qty_check = replace(self.qty_check, streak=0)
        await self.sync_activities(full=True, initial=full_rebuild)

    async def refresh_account(self) -> None:
        """The broker's cash and equity; the ledger offset is adopted once stable and positions agree."""
        if self.broker is None:
            return
        account = await self.broker.get_account()
        self.stats.account_refreshes += 1
        self.broker_cash, self.broker_equity = account.cash, account.equity
        calibration = calibrate_cash(self.cash, broker_cash=account.cash, ledger_cash=self.ledger.cash,
                                     positions_agree=not self.mismatch and self.broker_qty is not None,
                                     read_at=datetime.now(UTC))
        if calibration.offset != self.cash.offset:
            self.log.info("dest=%s cash offset %s -> %s (broker cash %s)", self.slug, self.cash.offset,
                          calibration.offset, account.cash)
            self.structure_dirty = True
        self.cash = calibration

    # --- health ----------------------------------------------------------------------------------
    def stall_reason(self, now_mono: float) -> str | None:
        """Why this destination is not making progress (a loop or the flush silent too long), else ``None``."""
        return stall_reason(self.loops, runner_intervals_s(self.settings), now_mono=now_mono,
                            started_mono=self.started_mono, heartbeat_sec=self.settings.heartbeat_sec) or (
            self.ctx.stalled())

    async def heartbeat(self, *, state: str = "running") -> None:
        """Write this destination's heartbeat row; ``stalled`` (with the reason) when a loop makes no progress."""
        await write_runner_heartbeat(self, state)
