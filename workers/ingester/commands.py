"""Process entry points: the ``ingester`` service (every owned destination) and the ``backfill`` command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg

from core.destinations import Destination
from core.settings import Settings
from workers.alpaca.budget import Priority, spending
from workers.backoff import BackoffPolicy
from workers.db import create_pool
from workers.ingester.loops import Ingester
from workers.ingester.options import SERVICE, IngesterOptions
from workers.locks import OwnershipLocks, OwnershipLoop
from workers.progress import ProgressBar
from workers.supervise import supervise

log = logging.getLogger(__name__)

POOL_RETRY = BackoffPolicy(base_s=0.5, cap_s=10.0, max_attempts=None)
"""The database may start after the workers (compose, a restart): wait for it, bounded per try."""


async def _pool_with_retry(settings: Settings, size: int, stop_event: asyncio.Event) -> asyncpg.Pool | None:
    pools: list[asyncpg.Pool] = []

    async def connect() -> None:
        pools.append(await create_pool(settings, min_size=1, max_size=size))

    await supervise(connect, name="ingester: database pool", log=log, policy_for=lambda _exc, _kind: POOL_RETRY,
                    once=True, stop=stop_event)
    return pools[0] if pools else None


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

    async def serve(dest: Destination, dest_stop: asyncio.Event) -> None:
        await Ingester(settings=settings, destination=dest, pool=pool, options=opts, since=since).run(dest_stop)

    ownership = OwnershipLoop(locks, dests, serve, service=SERVICE, interval_s=opts.lock_check_interval_s,
                              keep_on_connection_loss=True)
    try:
        await ownership.run(stop)
    finally:
        await ownership.drain(opts.drain_timeout_s + 5)
        with contextlib.suppress(Exception):  # closing drops the locks either way
            await locks.close()
        await pool.close()


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
        end = until or datetime.now(UTC)
        bar = ProgressBar(destination.slug, (end - start).total_seconds(), enabled=progress)

        def on_page(rows: int, at: datetime | None) -> None:
            bar.update(0.0 if at is None else (at - start).total_seconds(), f"{rows} rows")

        try:
            with spending(Priority.GAP_REPAIR):  # an operator asked for it: first in line, raised while pages are full
                rows = await ingester.backfill(since=start, until=until, progress=on_page)
        finally:
            await ingester.broker.close()
        bar.close(f"{rows} rows")
        ingester.log.info("backfill complete: %d rows read since %s", rows, start.isoformat())
        return rows
    finally:
        await pool.close()
