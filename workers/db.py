"""asyncpg access for the workers: one pool per process, built from settings."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from core.db import resolve_dsn
from core.dsn import parse_dsn
from core.errors import DatabaseUnavailable
from core.schema import Store
from core.settings import Settings
from workers.errors import ErrorKind, classify

log = logging.getLogger(__name__)


async def create_pool(settings: Settings, *, min_size: int = 1, max_size: int = 10,
                      store: Store = Store.PRIMARY) -> asyncpg.Pool:
    """A pool on ``store``'s DSN (the primary one, or the embedded server when none is configured).

    Raises :class:`DatabaseUnavailable` naming host:port (never the password) within
    ``settings.db_connect_timeout_s`` for any failure that is not a bug (a refused password too:
    the callers' retry then picks up a fixed one without a restart).
    """
    dsn = await asyncio.to_thread(resolve_dsn, settings, store)
    info = parse_dsn(dsn)
    try:
        pool = await asyncio.wait_for(
            asyncpg.create_pool(
                info.asyncpg_dsn(),
                min_size=min_size,
                max_size=max_size,
                timeout=settings.db_connect_timeout_s,
                command_timeout=60,
                server_settings={"application_name": "coldharbour-workers"},
            ),
            timeout=settings.db_connect_timeout_s,
        )
    except Exception as exc:
        if classify(exc) is ErrorKind.BUG:
            raise
        reason = str(exc) or type(exc).__name__
        if info.password:
            reason = reason.replace(info.password, "***")
        raise DatabaseUnavailable(f"cannot reach PostgreSQL at {info.host}:{info.port}/{info.dbname}: {reason}") from None
    assert pool is not None
    return pool


async def create_series_pool(settings: Settings, *, min_size: int = 1, max_size: int = 4) -> asyncpg.Pool | None:
    """A pool on the time-series database when it is a database of its own
    (:attr:`Settings.separate_timeseries`); ``None`` when the primary pool serves the time series too."""
    if not settings.separate_timeseries:
        return None
    return await create_pool(settings, min_size=min_size, max_size=max_size, store=Store.TIMESERIES)


async def connect(settings: Settings) -> asyncpg.Connection:
    """A single dedicated connection (LISTEN, advisory locks)."""
    dsn = await asyncio.to_thread(resolve_dsn, settings)
    info = parse_dsn(dsn)
    try:
        return await asyncpg.connect(info.asyncpg_dsn(), timeout=settings.db_connect_timeout_s)
    except Exception as exc:
        if classify(exc) is ErrorKind.BUG:
            raise
        raise DatabaseUnavailable(f"cannot reach PostgreSQL at {info.host}:{info.port}/{info.dbname}: {type(exc).__name__}") from None
