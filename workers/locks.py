"""Per-destination ownership across replicas: PostgreSQL session advisory locks and the one
ownership loop both services run.

Each replica holds one dedicated connection; owning destination D for service S means holding the
advisory lock ``key(S, D)`` on that connection. A replica that dies loses its connection and so its
locks, and another replica's next :meth:`OwnershipLocks.try_acquire` takes the destination over.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from core.destinations import Destination
from core.settings import Settings
from workers.backoff import BackoffPolicy
from workers.db import connect
from workers.errors import ErrorKind, classify
from workers.supervise import LoopHealth, supervise

log = logging.getLogger(__name__)


def lock_key(service: str, slug: str) -> int:
    """Stable signed 64-bit key for ``(service, slug)``."""
    digest = hashlib.blake2b(f"coldharbour:{service}:{slug}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class OwnershipLocks:
    """Advisory locks held on one dedicated connection."""

    def __init__(self, settings: Settings, service: str) -> None:
        self._settings = settings
        self._service = service
        self._conn: asyncpg.Connection | None = None
        self._owned: set[str] = set()

    @property
    def owned(self) -> frozenset[str]:
        return frozenset(self._owned)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            if self._owned:
                log.warning("lock connection lost; ownership of %s dropped", sorted(self._owned))
                self._owned.clear()
            self._conn = await connect(self._settings)
        return self._conn

    async def try_acquire(self, slug: str) -> bool:
        """True when this replica owns ``slug`` (already or newly)."""
        conn = await self._connection()
        if slug in self._owned:
            return True
        got = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(self._service, slug)))
        if got:
            self._owned.add(slug)
            log.info("acquired %s ownership of %s", self._service, slug)
        return got

    async def still_held(self) -> bool:
        """Check the lock connection is alive; if not, every lock is gone."""
        try:
            conn = await self._connection()
            await conn.fetchval("SELECT 1")
            return True
        except Exception as exc:
            if classify(exc) is ErrorKind.BUG:
                raise
            self._owned.clear()
            self._conn = None
            return False

    async def close(self) -> None:
        """Release every lock (by closing the connection)."""
        self._owned.clear()
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()
        self._conn = None


Serve = Callable[[Destination, asyncio.Event], Coroutine[Any, Any, None]]
"""Serves one destination until the event is set (or the task is cancelled)."""


@dataclass(slots=True)
class Served:
    destination: Destination
    task: asyncio.Task[None]
    stop: asyncio.Event


class OwnershipLoop:
    """Serve every destination this replica can lock, for one service.

    Every ``interval_s``: take each destination nobody holds and start ``serve`` for it; restart a
    served destination whose task ended (a bug, logged with its traceback by the service); stop one
    whose lock another replica now holds. ``keep_on_connection_loss`` decides what a lost lock
    connection (database down) means: the ingester keeps writing (its writes are idempotent and it
    stops only once another replica is seen holding the lock), the manager stops at once.
    ``cancel_on_release`` cancels a released destination instead of letting it drain on its own.
    """

    def __init__(
        self,
        locks: OwnershipLocks,
        destinations: Sequence[Destination],
        serve: Serve,
        *,
        service: str,
        interval_s: float,
        keep_on_connection_loss: bool,
        cancel_on_release: bool = False,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.locks = locks
        self.destinations = list(destinations)
        self.served: dict[str, Served] = {}
        self.takeovers = 0
        self.health = LoopHealth(f"{service} ownership")
        self._serve = serve
        self._service = service
        self._interval_s = interval_s
        self._keep_on_connection_loss = keep_on_connection_loss
        self._cancel_on_release = cancel_on_release
        self._on_change = on_change

    async def run(self, stop: asyncio.Event) -> None:
        """Check ownership every ``interval_s`` until ``stop`` is set (then :meth:`drain` is the caller's)."""
        # A failed check is retried within one interval: a take-over must not wait on a long backoff.
        retry = BackoffPolicy(base_s=min(0.2, self._interval_s), cap_s=max(0.2, self._interval_s), max_attempts=None)
        await supervise(self.check, name=self.health.name, log=log, policy_for=lambda _exc, _kind: retry,
                        interval_s=self._interval_s, stop=stop, health=self.health)

    async def check(self) -> None:
        """One pass: notice lost locks, reap ended tasks, take free destinations, yield taken ones."""
        before = self.locks.owned
        alive = await self.locks.still_held()
        if not self._keep_on_connection_loss:
            for slug in before - self.locks.owned if alive else before:
                await self.release(slug, "lock connection lost")
        for dest in self.destinations:
            served = self.served.get(dest.slug)
            if served is not None and served.task.done():
                self._reap(served)
                served = None
            owned = await self.locks.try_acquire(dest.slug)
            if owned and served is None:
                self._start(dest)
            elif not owned and served is not None and not served.stop.is_set():
                await self.release(dest.slug, "owned by another replica now")
            elif not owned and served is None:
                log.debug("dest=%s %s owned by another replica; standing by", dest.slug, self._service)

    def _start(self, dest: Destination) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(self._serve(dest, stop), name=f"{self._service} {dest.slug}")
        self.served[dest.slug] = Served(dest, task, stop)
        self.takeovers += 1
        log.info("dest=%s %s started here", dest.slug, self._service)
        if self._on_change is not None:
            self._on_change()

    def _reap(self, served: Served) -> None:
        self.served.pop(served.destination.slug, None)
        if not served.task.cancelled() and served.task.exception() is not None:
            log.error("dest=%s %s stopped: %r; restarting", served.destination.slug, self._service,
                      served.task.exception())

    async def release(self, slug: str, why: str) -> None:
        """Stop serving ``slug`` (its stop event; cancelled at once with ``cancel_on_release``)."""
        served = self.served.get(slug)
        if served is None:
            return
        log.warning("dest=%s %s ownership dropped (%s)", slug, self._service, why)
        served.stop.set()
        if self._cancel_on_release:
            self.served.pop(slug, None)
            served.task.cancel()
            await asyncio.gather(served.task, return_exceptions=True)
        if self._on_change is not None:
            self._on_change()

    async def drain(self, timeout_s: float) -> None:
        """Ask every served destination to stop, wait up to ``timeout_s``, cancel what is left."""
        for served in self.served.values():
            served.stop.set()
        tasks = [s.task for s in self.served.values()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.served.clear()
