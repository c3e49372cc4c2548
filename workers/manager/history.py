"""The offline history commands: ``rebuild-equity`` and ``refill-snapshots`` (``python -m workers ...``).

Both replay the stored activities with :class:`core.equity_replay.EquityReplay`, the same bookkeeping
the live manager uses, and write through the same statement (:func:`workers.manager.store.equity_sql`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg

from core.destinations import Destination, equity_table
from core.equity_replay import EquityReplay, replay_points
from core.ledger import ZERO
from core.records import ActivityRecord
from core.schema import quote_ident
from core.settings import Settings
from core.snapshots import DrawdownTracker, EquitySnapshot, SnapshotSource, missing_boundaries
from workers.manager.interpret import replay_reader
from workers.manager.port import default_market_open
from workers.manager.store import ACTIVITY_COLUMNS, Store, activity_of, storable_snapshots
from workers.progress import ProgressBar

log = logging.getLogger("workers.manager")

REFILL_MAX_POINTS = 500_000
INSERT_CHUNK = 2_000


async def stored_activities(pool: asyncpg.Pool, settings: Settings, slug: str) -> list[ActivityRecord]:
    """Every stored activity of ``slug`` in replay order ``(ts, activity_id)``."""
    rows = await pool.fetch(
        f"SELECT {ACTIVITY_COLUMNS} FROM {quote_ident(settings.account_schema)}.activities "
        "WHERE destination = $1 ORDER BY ts, activity_id", slug)
    return [activity_of(r) for r in rows]


def session_closes(start: datetime, end: datetime) -> list[datetime]:
    """NYSE session closes within ``[start, end]``."""
    from core import market_schedule

    closes = []
    for day in market_schedule.sessions_between(start.date(), end.date()):
        session = market_schedule.session(day)
        if session is not None and start <= session.close <= end:
            closes.append(session.close)
    return closes


async def _insert(store: Store, snaps: Sequence[EquitySnapshot], bar: ProgressBar) -> int:
    rows, refused = storable_snapshots(snaps)
    if refused:
        log.warning("dest=%s %d replayed points refused (unstorable values): %s", store.slug, len(refused),
                    ", ".join(refused[:3]))
    inserted = 0
    for start in range(0, len(rows), INSERT_CHUNK):
        part = rows[start:start + INSERT_CHUNK]
        inserted += await store.write_equity(part)
        bar.advance(len(part))
    bar.close()
    return inserted


async def rebuild_equity(settings: Settings, destination: Destination, *, since: datetime | None = None,
                         progress: bool = True) -> int:
    """Recompute ``equity_full_<slug>`` from ``since`` (default: the first activity) out of the raw activities.

    Every row at or after ``since`` is replaced by one point per NYSE session close (``source`` =
    ``rebuild``), valued at the last fill price of each symbol; cash, deposits and realized P&L are
    exact. A running manager resumes its live snapshots afterwards. Returns the rows written.
    """
    from workers.db import create_pool, create_series_pool

    pool = await create_pool(settings, max_size=2)
    series = await create_series_pool(settings, max_size=2)
    equity_pool = series or pool  # equity_full_<slug> lives in the time-series database
    try:
        slug = destination.slug
        acts = await stored_activities(pool, settings, slug)
        if not acts:
            log.warning("dest=%s rebuild-equity: no activities stored", slug)
            return 0
        start = since or acts[0].ts
        points = await asyncio.to_thread(session_closes, start, datetime.now(UTC))
        table = f"public.{quote_ident(equity_table(slug))}"
        max_excess = await equity_pool.fetchval(f"SELECT max(equity - net_deposits) FROM {table} WHERE ts < $1", start)
        replay = EquityReplay(baseline_deposit=destination.initial_deposit or ZERO,
                              tracker=DrawdownTracker(max_excess), source=SnapshotSource.REBUILD,
                              read=replay_reader)
        snaps = replay_points(acts, points, replay)
        async with equity_pool.acquire() as conn, conn.transaction():
            await conn.execute(f"DELETE FROM {table} WHERE ts >= $1", start)
        bar = ProgressBar(f"rebuild-equity {slug}", len(snaps), enabled=progress)
        written = await _insert(Store(pool, settings.account_schema, slug, series_pool=series), snaps, bar)
        log.info("dest=%s rebuild-equity: %d points from %s (%d activities skipped)", slug, written, start,
                 replay.skipped)
        return written
    finally:
        if series is not None:
            await series.close()
        await pool.close()


async def refill_snapshots(settings: Settings, destination: Destination, *, since: datetime | None = None,
                           progress: bool = True) -> int:
    """Fill the holes of the live snapshot grid (``SNAPSHOT_SEC`` in market hours, sparser outside).

    Between ``since`` (default: the first live snapshot) and the newest stored row, every missing grid
    instant gets a point replayed from the activities (``source`` = ``refill``); existing rows are never
    touched. Returns the rows written.
    """
    from workers.db import create_pool, create_series_pool

    pool = await create_pool(settings, max_size=2)
    series = await create_series_pool(settings, max_size=2)
    equity_pool = series or pool  # equity_full_<slug> lives in the time-series database
    try:
        slug = destination.slug
        table = f"public.{quote_ident(equity_table(slug))}"
        bounds = await equity_pool.fetchrow(
            f"SELECT min(ts) FILTER (WHERE source = 'live') AS first_live, max(ts) AS last FROM {table}")
        start = since or (bounds["first_live"] if bounds else None)
        end = bounds["last"] if bounds else None
        if start is None or end is None or end <= start:
            log.info("dest=%s refill-snapshots: nothing to refill", slug)
            return 0
        existing = {r["ts"] for r in await equity_pool.fetch(f"SELECT ts FROM {table} WHERE ts >= $1", start)}
        grid = await asyncio.to_thread(missing_boundaries, start - timedelta(microseconds=1), end,
                                       snapshot_sec=settings.snapshot_sec, market_open=default_market_open,
                                       max_points=REFILL_MAX_POINTS)
        points = [p for p in grid if p not in existing]
        if not points:
            return 0
        acts = await stored_activities(pool, settings, slug)
        max_excess = await equity_pool.fetchval(f"SELECT max(equity - net_deposits) FROM {table} WHERE ts < $1",
                                                points[0])
        replay = EquityReplay(baseline_deposit=destination.initial_deposit or ZERO,
                              tracker=DrawdownTracker(max_excess), source=SnapshotSource.REFILL,
                              read=replay_reader)
        snaps = replay_points(acts, points, replay)
        bar = ProgressBar(f"refill-snapshots {slug}", len(snaps), enabled=progress)
        written = await _insert(Store(pool, settings.account_schema, slug, series_pool=series), snaps, bar)
        log.info("dest=%s refill-snapshots: %d points", slug, written)
        return written
    finally:
        if series is not None:
            await series.close()
        await pool.close()
