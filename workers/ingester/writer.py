"""The batch writer: buffers one destination's rows and commits them in batches.

Rows are flushed every ``flush_interval_s`` or at ``flush_max_rows``, in one statement with their
checkpoints, the ``ch_versions`` bump and the ``NOTIFY`` (:class:`workers.ingester.store.RawStore`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable

import asyncpg

from core.records import ActivityRecord
from workers.alpaca.records import OrderEventRow, OrderRow
from workers.backoff import BackoffPolicy, backoff_delay_s
from workers.errors import ErrorKind, classify, is_temporary
from workers.ingester.options import WriterStats
from workers.ingester.provisional import provisional_from_update
from workers.ingester.rules import Batch, BatchResult, Checkpoint, commit_head_start_s, event_checkpoint
from workers.ingester.store import RawStore
from workers.logs import destination_log
from workers.supervise import LoopHealth, supervise

log = logging.getLogger(__name__)

# The database (server side) or asyncpg's encoders (client side: TypeError/ValueError) refused the
# data itself: retrying the same batch cannot help, so it is retried row by row and bad rows skipped.
_REFUSED_DATA = (asyncpg.PostgresError, TypeError, ValueError)


class BatchWriter:
    """Buffers rows for one destination and commits them in batches (see the module docstring).

    ``add_*`` never block and never raise; :meth:`flush` commits what is pending now (raising on
    database errors with the rows kept); :meth:`run` is the background flush loop. Database down:
    keep buffering up to ``max_buffer_rows``; past the bound new rows are dropped (counted, logged)
    and ``on_resync_needed`` asks for a full REST backfill once writes succeed again.
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
        self.health = LoopHealth("database write")
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

    def add_activities(self, rows: Iterable[ActivityRecord], checkpoint: Checkpoint | None = None) -> None:
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
        """Queue one trade update (and the order states it carries). False when dropped (buffer full).

        A fill also queues its provisional fill and is committed at once, not after
        ``flush_interval_s``: it is what the trader waits to see."""
        provisional = provisional_from_update(row)
        if not self._accept(1 + len(row.orders) + (provisional is not None)):
            return False
        self._pending.add_event(row)
        if provisional is not None:
            self._pending.add_provisional(provisional)
            self._full.set()
        checkpoint = event_checkpoint(row)
        if checkpoint is not None:
            self._pending.add_checkpoint(checkpoint)
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
            self.stats.provisional_fills += result.new_provisional
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
            except _REFUSED_DATA as exc:
                if is_temporary(exc):
                    raise
                self.log.error("batch rejected (%s: %s); retrying row by row", type(exc).__name__, exc)
                return await self._commit_row_by_row(conn, batch)

    async def _commit_row_by_row(self, conn: asyncpg.Connection, batch: Batch) -> BatchResult:
        total = BatchResult()
        for single in batch.singles():
            try:
                async with conn.transaction():
                    total = total.plus(await self._store.write_batch(conn, self.slug, single))
            except _REFUSED_DATA as exc:
                if is_temporary(exc):
                    raise
                self.stats.unstorable_rows += 1
                self.log.error("unstorable row skipped (%s: %s)", type(exc).__name__, str(exc)[:200])
        return total

    async def run(self) -> None:
        """Commit pending rows within ``flush_interval_s`` of the first one arriving (or at once when
        ``flush_max_rows`` are pending); on database errors retry with backoff, rows kept."""
        await supervise(self._flush_when_due, name=self.health.name, log=self.log, health=self.health,
                        policy_for=lambda _exc, _kind: self._db_retry, rand=self._random.random)

    async def _flush_when_due(self) -> None:
        await self._has_rows.wait()
        if self.health.consecutive_failures == 0 and self._first_pending_at is not None:
            # Start early by a high recent commit time, so a row is committed within flush_interval_s.
            head_start = min(commit_head_start_s(self._recent_commit_s), self._flush_interval_s / 2)
            remaining = self._first_pending_at + self._flush_interval_s - head_start - time.monotonic()
            if remaining > 0 and not self._full.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), timeout=remaining)
        await self.flush()

    async def drain(self, timeout_s: float) -> bool:
        """Try to commit what is pending within ``timeout_s``; False (and a log line) if rows remain."""
        deadline = time.monotonic() + timeout_s
        attempt = 0
        while self._pending and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(self.flush(), timeout=max(0.1, deadline - time.monotonic()))
            except Exception as exc:
                if classify(exc) is ErrorKind.BUG:
                    self.log.exception("drain: flush failed unexpectedly")
                    break
                attempt += 1
                self.log.warning("drain: flush failed (%s)", type(exc).__name__)
                await asyncio.sleep(min(backoff_delay_s(self._db_retry, attempt, 0.5), max(0.0, deadline - time.monotonic())))
        if self._pending:
            self.log.error("shutdown with %d rows not committed; the next start re-reads them from the checkpoint",
                           self._pending.size)
            return False
        return True
