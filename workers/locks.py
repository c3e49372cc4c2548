"""Per-destination ownership across replicas through PostgreSQL session advisory locks.

Each replica holds one dedicated connection; owning destination D for service S means holding the
advisory lock ``key(S, D)`` on that connection. A replica that dies loses its connection and so its
locks, and another replica's next :meth:`OwnershipLocks.try_acquire` takes the destination over.
"""

from __future__ import annotations

import hashlib
import logging

import asyncpg

from core.settings import Settings
from workers.db import connect

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
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self._owned.clear()
            self._conn = None
            return False

    async def release(self, slug: str) -> None:
        if slug not in self._owned or self._conn is None or self._conn.is_closed():
            self._owned.discard(slug)
            return
        await self._conn.fetchval("SELECT pg_advisory_unlock($1)", lock_key(self._service, slug))
        self._owned.discard(slug)

    async def close(self) -> None:
        """Release every lock (by closing the connection)."""
        self._owned.clear()
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()
        self._conn = None
