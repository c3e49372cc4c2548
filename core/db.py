"""Synchronous database helpers (psycopg2): connect with a clear error, resolve the DSN, migrate.

The dashboard and CLIs use these; the workers use asyncpg with :func:`core.dsn.parse_dsn`.
Two stores (:class:`core.schema.Store`): :func:`resolve_dsn` names the database of each, and
:func:`migrate` migrates both when ``TIMESCALE_LIVE_CONN_STRING`` names a database of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import psycopg2
import psycopg2.extensions

from core.destinations import Destination
from core.dsn import ConnInfo, parse_dsn
from core.embedded_pg import EmbeddedPostgres
from core.errors import DatabaseUnavailable
from core.schema import (
    MIGRATION_LOCK_KEY,
    MIGRATIONS_TABLE_DDL,
    Store,
    destination_ddl,
    migrations,
    timescale_ddl,
)
from core.settings import Settings

log = logging.getLogger(__name__)

_embedded: EmbeddedPostgres | None = None


def resolve_dsn(settings: Settings, store: Store = Store.PRIMARY) -> str:
    """The DSN of ``store``'s database: the configured one, or the embedded server's (started or
    reused on first call). The time-series store is the primary one unless
    :attr:`Settings.separate_timeseries`."""
    global _embedded
    if store is Store.TIMESERIES and settings.separate_timeseries:
        return settings.timescale_dsn or ""
    configured = settings.primary_dsn
    if configured:
        return configured
    if _embedded is None:
        _embedded = EmbeddedPostgres(settings.data_path)
        _embedded.start()
    return _embedded.dsn


def stop_embedded() -> None:
    """Stop the embedded server if this process started it."""
    global _embedded
    if _embedded is not None:
        _embedded.stop()
        _embedded = None


def connect(dsn: str, *, timeout_s: float = 10.0, **kwargs: Any) -> psycopg2.extensions.connection:
    """Connect or raise :class:`DatabaseUnavailable` naming host:port (never the password)."""
    info: ConnInfo = parse_dsn(dsn)
    params = info.psycopg2_kwargs()
    params.setdefault("connect_timeout", max(1, int(timeout_s)))
    params.setdefault("application_name", "coldharbour")
    try:
        return psycopg2.connect(**params, **kwargs)
    except psycopg2.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if info.password:
            reason = reason.replace(info.password, "***")
        raise DatabaseUnavailable(f"cannot reach PostgreSQL at {info.host}:{info.port}/{info.dbname}: {reason}") from None


def timescale_available(conn: psycopg2.extensions.connection) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        return cur.fetchone() is not None


def migrate(
    conn: psycopg2.extensions.connection,
    settings: Settings,
    destinations: Iterable[Destination] = (),
) -> list[int]:
    """Apply pending migrations and create each destination's tables. Returns versions applied.

    ``conn`` is the primary store. With :attr:`Settings.separate_timeseries`, the time-series
    tables go to their own database (connected here, closed before returning), which records its
    own migrations; otherwise ``conn``'s database gets everything.
    Idempotent and safe to run concurrently (a transaction-level advisory lock serialises migrators).
    """
    dests = list(destinations)
    if not settings.separate_timeseries:
        return _migrate_store(conn, settings, dests, None)
    applied = _migrate_store(conn, settings, dests, Store.PRIMARY)
    series = connect(settings.timescale_dsn or "", timeout_s=settings.db_connect_timeout_s)
    try:
        applied += _migrate_store(series, settings, dests, Store.TIMESERIES)
    finally:
        series.close()
    return sorted(applied)


def _migrate_store(
    conn: psycopg2.extensions.connection, settings: Settings, dests: list[Destination], store: Store | None
) -> list[int]:
    """Migrate one database: ``store``'s migrations and tables (``None``: one database holds all)."""
    applied: list[int] = []
    with conn:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            cur.execute(MIGRATIONS_TABLE_DDL)
            cur.execute("SELECT version FROM public.schema_migrations")
            done = {row[0] for row in cur.fetchall()}
            for migration in migrations(settings.account_schema):
                if migration.version in done or (store is not None and migration.store is not store):
                    continue
                for statement in migration.statements:
                    cur.execute(statement)
                cur.execute(
                    "INSERT INTO public.schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
                applied.append(migration.version)
            for dest in dests:
                if store is Store.TIMESERIES:
                    for statement in destination_ddl(dest.slug, Store.TIMESERIES):
                        cur.execute(statement)
                else:
                    register_destination(cur, dest, store)
    if dests and timescale_available(conn):
        _apply_timescale(conn, settings, [d.slug for d in dests], store)
    if applied:
        log.info("applied migrations %s%s", applied, f" ({store} store)" if store else "")
    return applied


def register_destination(cur: psycopg2.extensions.cursor, dest: Destination, store: Store | None = None) -> None:
    """Create the destination's tables (``store``'s; ``None``: all) and upsert its registry row (no secrets stored)."""
    for statement in destination_ddl(dest.slug, store):
        cur.execute(statement)
    cur.execute(
        """INSERT INTO public.ch_destinations
               (slug, name, base_url, is_live, enabled, initial_deposit, masked_key, description, updated_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())
           ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name, base_url = EXCLUDED.base_url,
               is_live = EXCLUDED.is_live, enabled = EXCLUDED.enabled,
               initial_deposit = EXCLUDED.initial_deposit, masked_key = EXCLUDED.masked_key,
               description = EXCLUDED.description, updated_at = now()""",
        (dest.slug, dest.name, dest.base_url, dest.is_live, dest.enabled, dest.initial_deposit,
         dest.masked_key, dest.description),
    )
    cur.execute("INSERT INTO public.ch_versions (slug) VALUES (%s) ON CONFLICT DO NOTHING", (dest.slug,))


def _apply_timescale(
    conn: psycopg2.extensions.connection, settings: Settings, slugs: list[str], store: Store | None
) -> None:
    statements = timescale_ddl(
        settings.account_schema,
        slugs,
        compress_after_days=settings.timescale_compress_after_days,
        retention_days=settings.timescale_retention_days,
        store=store,
    )
    for statement in statements:
        try:
            with conn, conn.cursor() as cur:
                cur.execute(statement)
        except psycopg2.Error as exc:  # already compressed / policy exists on older versions
            log.warning("timescale statement skipped: %s (%s)", statement.split("(")[0], exc.pgerror)
