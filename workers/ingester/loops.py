"""One destination's ingester: four supervised tasks (stream, backfill, writer, heartbeat).

- **stream**: the ``trade_updates`` websocket (:class:`workers.alpaca.TradeUpdatesStream`) with a
  staleness watchdog, jittered bounded reconnect backoff and re-authentication; every (re)connect
  requests a REST catch-up; a fill requests a quick activities-only catch-up.
- **backfill**: REST, the source of truth. On start (from the checkpoint, else ``since``, else
  ``default_lookback_days``), after every reconnect, after a buffer overflow, and every
  ``backfill_interval_s``; each pass re-reads an ``overlap_s`` window so late items are caught.
- **writer**: :class:`workers.ingester.writer.BatchWriter`.
- **heartbeat**: one ``heartbeats`` row every ``HEARTBEAT_SEC``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from core.destinations import Destination
from core.settings import Settings
from workers.alpaca import (
    BrokerAuthError,
    BrokerClient,
    BrokerError,
    BrokerRequestError,
    BrokerTemporaryError,
    OrderEventRow,
    OrderRow,
    TradeUpdatesStream,
)
from workers.alpaca.budget import Priority, request_priority, spending
from workers.alpaca.wire import ACTIVITIES_PAGE_SIZE, NON_TRADE_CATEGORY, activity_time
from workers.backoff import BackoffPolicy
from workers.errors import ErrorKind, describe
from workers.heartbeat import write_heartbeat
from workers.ingester import rules
from workers.ingester.options import (
    SERVICE,
    STREAM_ACTIVITIES,
    STREAM_ORDERS,
    IngestCounters,
    IngesterOptions,
    IngestState,
)
from workers.ingester.store import RawStore
from workers.ingester.writer import BatchWriter
from workers.logs import DestinationLog, destination_log
from workers.supervise import LoopHealth, supervise

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, datetime | None], None]
"""``(rows read so far, time reached)`` after each page of a backfill."""


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
        self.stream_health = LoopHealth("trade_updates stream")
        self.backfill_health = LoopHealth("backfill")
        self._backfill_requested = asyncio.Event()
        self._backfill_reasons: set[str] = set()
        self._backfill_inflight: set[str] = set()
        # As if one had just run: the start pass reads REST anyway, so the first fill waits its turn.
        self._last_fill_catchup = time.monotonic()
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
            with contextlib.suppress(Exception):  # best effort on the way out; the row goes stale otherwise
                await asyncio.wait_for(self._write_heartbeat(), timeout=5.0)
            await self.broker.close()
            self.log.info("ingester stopped (%d rows committed)", self.writer.stats.rows_committed)

    def request_backfill(self, reason: str) -> None:
        self._backfill_reasons.add(reason)
        self._backfill_requested.set()

    def _set_error(self, message: str) -> None:
        self.last_error = message[:500]

    # -- live stream ------------------------------------------------------------------------------

    async def _stream_loop(self) -> None:
        def policy_for(exc: BaseException, kind: ErrorKind) -> BackoffPolicy:
            auth = isinstance(exc, BrokerAuthError) or kind is ErrorKind.OPERATIONAL
            return self.options.auth_retry if auth else self.options.reconnect

        await supervise(self._stream_session, name="trade_updates stream", log=self.log, policy_for=policy_for,
                        health=self.stream_health, on_error=self._stream_failed, rand=self._random.random)

    async def _stream_session(self) -> None:
        """One websocket session, from connect to the error that ends it."""
        stream = TradeUpdatesStream(
            self.destination,
            stale_after_s=self.options.stream_stale_after_s,
            ping_interval_s=self.options.stream_ping_interval_s,
            connect_timeout_s=self.options.request_timeout_s,
        )
        connected_at = 0.0
        try:
            await stream.open()
            self.stream_connected = True
            self.auth_failed = False
            failures = self.stream_health.consecutive_failures
            self.log.info("trade_updates stream connected%s", f" (reconnect {failures})" if failures else "")
            # Whatever happened while disconnected (or before the first connect) comes from REST.
            self.request_backfill("stream connected")
            connected_at = time.monotonic()
            async for row in stream.updates():
                self.stream_health.beat()
                self.handle_update(row)
            raise BrokerTemporaryError("stream ended")
        finally:
            if self.stream_connected:
                self.counters.reconnects += 1
                if time.monotonic() - connected_at > self.options.reconnect.cap_s:
                    self.stream_health.consecutive_failures = 0  # a long session: back off from the start
            self.stream_connected = False
            await stream.close()

    def _stream_failed(self, exc: BaseException, kind: ErrorKind) -> None:
        self._set_error(str(exc))
        if isinstance(exc, BrokerAuthError):
            self.auth_failed = True
            self.counters.broker_errors += 1

    def handle_update(self, row: OrderEventRow, received_monotonic: float | None = None) -> None:
        """Accept one parsed trade update from the stream. Never raises: a bug here is logged with
        its traceback and counted (``handler_errors``) rather than leaving the stream silently idle."""
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
            self._set_error(f"handler: {describe(exc)}")
            self.log.exception("trade update handling failed")

    def _schedule_fill_catchup(self, now: float) -> None:
        """A fill means a new FILL activity on REST: fetch it soon, at most once per
        ``fill_catchup_min_interval_s`` (a fill inside the interval is deferred, never skipped)."""
        if self._fill_catchup_timer is not None:
            return
        wait = rules.fill_catchup_wait_s(self._last_fill_catchup, now, self.options.fill_catchup_min_interval_s)
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
        await supervise(self._backfill_when_requested, name="backfill", log=self.log, policy_for=self._backfill_policy,
                        health=self.backfill_health, on_error=self._backfill_failed, rand=self._random.random)

    async def _backfill_when_requested(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._backfill_requested.wait(), timeout=self.options.backfill_interval_s)
        self._backfill_inflight = reasons = self._backfill_reasons or {"timer"}
        self._backfill_reasons = set()
        self._backfill_requested.clear()
        priority = rules.backfill_priority(reasons)
        o = self.options
        overlap_s = rules.backfill_overlap_s(priority, stream_connected=self.stream_connected, overlap_s=o.overlap_s,
                                             confirm_overlap_s=o.confirm_overlap_s,
                                             reconcile_overlap_s=o.reconcile_overlap_s)
        with spending(priority):
            await self.backfill(activities_only=reasons == {"fill"}, overlap_s=overlap_s)
        self._backfill_inflight = set()

    def _backfill_policy(self, exc: BaseException, kind: ErrorKind) -> BackoffPolicy:
        if isinstance(exc, BrokerAuthError):
            return self.options.auth_retry
        if isinstance(exc, BrokerError):
            return self.options.backfill_retry
        return self.options.auth_retry if kind is ErrorKind.OPERATIONAL else self.options.db_retry

    def _backfill_failed(self, exc: BaseException, kind: ErrorKind) -> None:
        if isinstance(exc, BrokerError):
            self.counters.broker_errors += 1
            self._set_error(str(exc))
            self.auth_failed = self.auth_failed or isinstance(exc, BrokerAuthError)
        else:
            self._set_error(f"database: {describe(exc)}")
        self._backfill_reasons |= self._backfill_inflight  # retry what we failed to do, after the backoff
        self._backfill_requested.set()

    async def backfill(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        activities_only: bool = False,
        progress: ProgressCallback | None = None,
        overlap_s: float | None = None,
    ) -> int:
        """Re-read activities (and orders) from REST and commit them; returns rows read.

        Without ``since``: from the checkpoint minus ``overlap_s`` (default ``options.overlap_s``;
        first run: ``self.since`` or ``default_lookback_days`` ago). Commits page by page, each with
        its checkpoint. A gap repair that reads full pages raises the REST budget to the catch-up
        rate until it is done (:meth:`workers.alpaca.budget.RequestBudget.catching_up`).
        """
        with contextlib.ExitStack() as raised:
            return await self._backfill(since, until, activities_only, progress,
                                        self.options.overlap_s if overlap_s is None else overlap_s, raised)

    async def _backfill(self, since: datetime | None, until: datetime | None, activities_only: bool,
                        progress: ProgressCallback | None, overlap_s: float, raised: contextlib.ExitStack) -> int:
        started = datetime.now(UTC)
        checkpoints = await self.store.load_checkpoints(self.pool, self.slug)
        default_start = self.since or started - timedelta(days=self.options.default_lookback_days)

        def start_for(stream: str) -> datetime:
            return rules.backfill_start(stream, checkpoints, since=since, default_start=default_start,
                                        overlap_s=overlap_s)

        read = 0
        act_since = start_for(STREAM_ACTIVITIES)
        async for page in self.broker.iter_activities(act_since, until=until):
            read += len(page)
            self.counters.activities_seen += len(page)
            if (len(page) >= ACTIVITIES_PAGE_SIZE and request_priority.get() is Priority.GAP_REPAIR
                    and self.broker.budget is not None and not self.broker.budget.window.catching_up):
                raised.enter_context(self.broker.budget.catching_up("gap repair"))
            bad = [row for row in page if row.parse_error]
            if bad:
                self.log.debug("%d malformed activities in page (first: %s)", len(bad), bad[0].parse_error)
            self.writer.add_activities(page, rules.activities_checkpoint(page))
            await self.writer.flush()
            if progress is not None:
                progress(read, activity_time(page[-1]))
        if not activities_only:
            read += await self._sweep_dated_activities(started, until)
            read += await self._backfill_orders(start_for(STREAM_ORDERS), until, progress)
        self.last_backfill_at = datetime.now(UTC)
        self.counters.backfills += 1
        if self.auth_failed and self.stream_connected:
            self.auth_failed = False
        self.log.debug("backfill done: %d rows read since %s", read, act_since.isoformat())
        return read

    async def _sweep_dated_activities(self, now: datetime, until: datetime | None) -> int:
        """Store the non-trade activities of the last few New York days (the cursor does not move):
        the late-posted, date-only ones the time cursor has already passed."""
        since = rules.dated_sweep_start(now, lookback_days=self.options.dated_lookback_days)
        read = 0
        async for page in self.broker.iter_activities(since, until=until, category=NON_TRADE_CATEGORY):
            read += len(page)
            self.writer.add_activities(page)
            await self.writer.flush()
        return read

    async def _backfill_orders(self, since: datetime, until: datetime | None, progress: ProgressCallback | None) -> int:
        read = 0
        seen: set[Any] = set()
        async for page in self.broker.iter_orders(after=since, until=until):
            read += len(page)
            self.counters.orders_seen += len(page)
            seen.update(row.order_id for row in page)
            self._count_bad_orders(page)
            cp = rules.orders_checkpoint(page)
            self.writer.add_orders(page, cp)
            await self.writer.flush()
            if progress is not None:
                progress(read, cp.last_ts if cp is not None else None)
        if until is not None:
            return read
        # Orders created before the window may have changed since: refresh every stored order that
        # is still open and was not in this pass. The flat listing includes open legs of a finished
        # parent, so those are not fetched one by one.
        open_rows = await self.broker.get_orders(status="open", nested=False)
        seen.update(row.order_id for row in open_rows)
        stale_ids = [oid for oid in await self.store.open_order_ids(self.pool, self.slug, self.options.max_order_refreshes)
                     if oid not in seen]
        refreshed: list[OrderRow] = list(open_rows)
        for oid in stale_ids:
            try:
                refreshed.extend(await self.broker.get_order(oid))
            except BrokerRequestError as exc:  # e.g. 404: one lost order must not stop the others
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
        """How far behind the broker the store may be (see :func:`rules.lag_s`)."""
        since_backfill = None if self.last_backfill_at is None else (datetime.now(UTC) - self.last_backfill_at).total_seconds()
        return rules.lag_s(stream_connected=self.stream_connected, db_ok=self.writer.db_ok,
                           oldest_pending_age_s=self.writer.oldest_pending_age_s, since_last_backfill_s=since_backfill)

    def errors_total(self) -> int:
        c, w = self.counters, self.writer.stats
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
            "budget": self.broker.budget.as_dict() if self.broker.budget is not None else None,
            "provisional_fills": w.provisional_fills,
            "loops": {h.name: h.as_dict() for h in (self.stream_health, self.backfill_health, self.writer.health)},
        }

    async def _write_heartbeat(self) -> None:
        self.state = rules.ingest_state(stopped=self.state is IngestState.STOPPED, auth_failed=self.auth_failed,
                                        db_ok=self.writer.db_ok, stream_connected=self.stream_connected,
                                        backfilled_once=self.last_backfill_at is not None)
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
        interval_s = self.settings.heartbeat_sec
        # A missed heartbeat is retried at the next beat, never sooner nor later.
        every_beat = BackoffPolicy(base_s=interval_s, cap_s=interval_s, jitter=0.0, max_attempts=None)

        async def beat() -> None:
            await asyncio.wait_for(self._write_heartbeat(), timeout=max(1.0, interval_s))

        await supervise(beat, name="heartbeat", log=self.log, policy_for=lambda _exc, _kind: every_beat,
                        interval_s=interval_s)
