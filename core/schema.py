"""Schema definitions and versioned, idempotent migrations.

Pure: this module only renders SQL. :mod:`core.db` applies it (psycopg2); the workers may apply the
same statements through asyncpg. Identifiers are validated (``[a-z0-9_]``) and always double-quoted.

Layout
- ``<ACCOUNT_SCHEMA>`` (default ``account_activities``): raw broker data, the truth:
  ``orders``, ``order_events``, ``activities``, ``checkpoints``, ``heartbeats``.
- ``public``: ``schema_migrations``, ``ch_destinations`` (registry, no secrets), ``ch_versions``
  (per-destination data version counters) and per destination ``open_trades_<slug>``,
  ``closed_trades_<slug>``, ``equity_full_<slug>``.

Two stores (:class:`Store`). The time series, ``equity_full_<slug>`` and ``price_bars``, belong to
the time-series store (``TIMESCALE_LIVE_CONN_STRING``); everything else to the primary one
(``POSTGRESQL_LIVE_CONN_STRING``). When both DSNs name the same database, that database holds
everything, exactly as with one. When they differ, each database gets only its own tables and
records its own migrations in its own ``public.schema_migrations`` (:func:`core.db.migrate`).
No query joins across the two: the raw activities, the positions, the registry and the version
counters stay together in the primary store, so every transaction that needs them is local.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum

from core.destinations import closed_trades_table, equity_table, open_trades_table
from core.schema_budget import REST_LEDGER_STATEMENTS
from core.schema_provisional import PROVISIONAL_COLUMN, provisional_statements

_IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def quote_ident(name: str) -> str:
    """Double-quote a validated identifier; refuses anything but ``[a-z0-9_]`` (max 63 bytes)."""
    if not _IDENT_RE.match(name):
        raise ValueError(f"refusing identifier {name!r}: must match [a-z_][a-z0-9_]{{0,62}}")
    return f'"{name}"'


class Store(StrEnum):
    """Which database a table lives in."""

    PRIMARY = "primary"
    """Raw broker data, registry, versions, positions, round trips, alerts (``POSTGRESQL_LIVE_CONN_STRING``)."""
    TIMESERIES = "timeseries"
    """``equity_full_<slug>`` and ``price_bars`` (``TIMESCALE_LIVE_CONN_STRING``)."""


TIMESERIES_TABLES = ("price_bars",)
"""Global time-series tables; every ``equity_full_<slug>`` is one too (:func:`table_store`)."""


def table_store(table: str) -> Store:
    """The store holding ``table`` (a bare name, no schema): :attr:`Store.TIMESERIES` for the time series."""
    bare = table.rsplit(".", 1)[-1].strip('"')
    if bare in TIMESERIES_TABLES or bare.startswith("equity_full_"):
        return Store.TIMESERIES
    return Store.PRIMARY


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]
    store: Store = Store.PRIMARY
    """Where the statements run when the stores are separate databases (one database: there)."""


def migrations(account_schema: str) -> list[Migration]:
    """The ordered global migrations. Never edit a released one: append a new version."""
    s = quote_ident(account_schema)
    return [
        Migration(
            1,
            "raw account data",
            (
                f"CREATE SCHEMA IF NOT EXISTS {s}",
                f"""CREATE TABLE IF NOT EXISTS {s}.orders (
                    destination text NOT NULL,
                    order_id uuid NOT NULL,
                    client_order_id text,
                    parent_order_id uuid,
                    symbol text,
                    side text,
                    order_type text,
                    order_class text,
                    time_in_force text,
                    qty numeric,
                    notional numeric,
                    filled_qty numeric,
                    filled_avg_price numeric,
                    limit_price numeric,
                    stop_price numeric,
                    trail_price numeric,
                    trail_percent numeric,
                    status text,
                    created_at timestamptz,
                    updated_at timestamptz,
                    submitted_at timestamptz,
                    filled_at timestamptz,
                    canceled_at timestamptz,
                    expired_at timestamptz,
                    raw jsonb NOT NULL,
                    parse_error text,
                    ingested_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (destination, order_id)
                )""",
                f"CREATE INDEX IF NOT EXISTS orders_dest_updated ON {s}.orders (destination, updated_at)",
                f"CREATE INDEX IF NOT EXISTS orders_parent ON {s}.orders (destination, parent_order_id)",
                f"""CREATE TABLE IF NOT EXISTS {s}.order_events (
                    destination text NOT NULL,
                    event_key text NOT NULL,
                    ts timestamptz NOT NULL,
                    order_id uuid,
                    event text NOT NULL,
                    execution_id text,
                    price numeric,
                    qty numeric,
                    position_qty numeric,
                    raw jsonb NOT NULL,
                    parse_error text,
                    received_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (destination, event_key, ts)
                )""",
                f"CREATE INDEX IF NOT EXISTS order_events_order ON {s}.order_events (destination, order_id)",
                f"""CREATE TABLE IF NOT EXISTS {s}.activities (
                    destination text NOT NULL,
                    activity_id text NOT NULL,
                    ts timestamptz NOT NULL,
                    activity_type text NOT NULL,
                    fill_type text,
                    symbol text,
                    side text,
                    qty numeric,
                    price numeric,
                    net_amount numeric,
                    leaves_qty numeric,
                    cum_qty numeric,
                    order_id uuid,
                    order_status text,
                    description text,
                    raw jsonb NOT NULL,
                    parse_error text,
                    seq bigint GENERATED ALWAYS AS IDENTITY,
                    ingested_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (destination, activity_id, ts)
                )""",
                f"CREATE INDEX IF NOT EXISTS activities_dest_ts ON {s}.activities (destination, ts)",
                f"CREATE INDEX IF NOT EXISTS activities_dest_seq ON {s}.activities (destination, seq)",
                f"""CREATE TABLE IF NOT EXISTS {s}.checkpoints (
                    destination text NOT NULL,
                    stream text NOT NULL,
                    last_id text,
                    last_ts timestamptz,
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (destination, stream)
                )""",
                f"""CREATE TABLE IF NOT EXISTS {s}.heartbeats (
                    destination text NOT NULL,
                    service text NOT NULL,
                    replica text,
                    state text NOT NULL DEFAULT 'starting',
                    last_event_at timestamptz,
                    last_backfill_at timestamptz,
                    lag_s double precision,
                    rows_ingested bigint NOT NULL DEFAULT 0,
                    errors bigint NOT NULL DEFAULT 0,
                    last_error text,
                    details jsonb NOT NULL DEFAULT '{{}}'::jsonb,
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (destination, service)
                )""",
            ),
        ),
        Migration(
            2,
            "registry and versions",
            (
                """CREATE TABLE IF NOT EXISTS public.ch_destinations (
                    slug text PRIMARY KEY,
                    name text NOT NULL,
                    base_url text NOT NULL,
                    is_live boolean NOT NULL DEFAULT false,
                    enabled boolean NOT NULL DEFAULT true,
                    initial_deposit numeric,
                    masked_key text,
                    description text NOT NULL DEFAULT '',
                    updated_at timestamptz NOT NULL DEFAULT now()
                )""",
                """CREATE TABLE IF NOT EXISTS public.ch_versions (
                    slug text PRIMARY KEY,
                    pos_version bigint NOT NULL DEFAULT 0,
                    closed_version bigint NOT NULL DEFAULT 0,
                    equity_version bigint NOT NULL DEFAULT 0,
                    activity_version bigint NOT NULL DEFAULT 0,
                    updated_at timestamptz NOT NULL DEFAULT now()
                )""",
            ),
        ),
        Migration(
            3,
            "manager fifo checkpoints",
            (
                # The account manager's per-destination checkpoint: the FIFO book and cash ledger as of
                # activity ``last_seq`` (a cache of what the raw activities imply; safe to delete).
                """CREATE TABLE IF NOT EXISTS public.ch_fifo_state (
                    slug text PRIMARY KEY,
                    state jsonb NOT NULL,
                    last_seq bigint NOT NULL DEFAULT 0,
                    fill_count bigint NOT NULL DEFAULT 0,
                    replica text,
                    updated_at timestamptz NOT NULL DEFAULT now()
                )""",
            ),
        ),
        Migration(
            4,
            "working orders by symbol",
            (
                # The manager looks up the live exit legs (stop / take-profit) of held symbols on every
                # fill: a partial index over working orders keeps that independent of order history.
                f"""CREATE INDEX IF NOT EXISTS orders_working_by_symbol ON {s}.orders (destination, symbol)
                    WHERE status IS NULL OR status NOT IN
                        ('filled', 'canceled', 'expired', 'rejected', 'replaced', 'done_for_day')""",
            ),
        ),
        Migration(
            5,
            "price bars",
            (
                # One-minute OHLC bars per symbol built by the manager from the ZMQ price feed (market
                # data: shared by every destination). The trade drill-down draws a round trip's price
                # path from them and measures MAE/MFE where they cover its holding time. Writers send
                # the whole bar each time (idempotent): high/low merge with greatest/least, the open
                # is the first writer's, close and ticks the latest.
                """CREATE TABLE IF NOT EXISTS public.price_bars (
                    symbol text NOT NULL,
                    ts timestamptz NOT NULL,
                    open double precision NOT NULL,
                    high double precision NOT NULL,
                    low double precision NOT NULL,
                    close double precision NOT NULL,
                    ticks integer NOT NULL,
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (symbol, ts)
                )""",
            ),
            store=Store.TIMESERIES,
        ),
        Migration(
            6,
            "alerts, their deliveries and scheduled reports",
            (
                # One row per alert episode (docs/alerts.md). The partial unique index is what makes two
                # replicas, or a restart mid-episode, unable to open one episode twice.
                """CREATE TABLE IF NOT EXISTS public.ch_alerts (
                    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    rule text NOT NULL,
                    kind text NOT NULL,
                    destination text NOT NULL,
                    subject text NOT NULL DEFAULT '',
                    severity text NOT NULL,
                    state text NOT NULL DEFAULT 'open',
                    opened_at timestamptz NOT NULL,
                    resolved_at timestamptz,
                    message text NOT NULL,
                    resolved_message text,
                    value double precision,
                    channels text[] NOT NULL DEFAULT '{}',
                    replica text,
                    updated_at timestamptz NOT NULL DEFAULT now()
                )""",
                """CREATE UNIQUE INDEX IF NOT EXISTS ch_alerts_one_open ON public.ch_alerts (rule, destination, subject)
                    WHERE state = 'open'""",
                "CREATE INDEX IF NOT EXISTS ch_alerts_opened ON public.ch_alerts (opened_at DESC)",
                """CREATE INDEX IF NOT EXISTS ch_alerts_key_resolved
                    ON public.ch_alerts (rule, destination, subject, resolved_at DESC)""",
                """CREATE TABLE IF NOT EXISTS public.ch_reports (
                    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    name text NOT NULL,
                    destination text NOT NULL,
                    period text NOT NULL,
                    period_start timestamptz NOT NULL,
                    period_end timestamptz NOT NULL,
                    body text NOT NULL,
                    summary jsonb NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    UNIQUE (name, destination, period_end)
                )""",
                # The outbox: a notification is a row written in the same transaction as its alert or
                # report (dedupe_key unique), then sent and marked; a crash between the two resends it
                # (at least once), never loses it. Receivers dedupe on the delivery id.
                """CREATE TABLE IF NOT EXISTS public.ch_alert_outbox (
                    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    dedupe_key text NOT NULL UNIQUE,
                    channel text NOT NULL,
                    alert_id bigint REFERENCES public.ch_alerts (id) ON DELETE CASCADE,
                    report_id bigint REFERENCES public.ch_reports (id) ON DELETE CASCADE,
                    event text NOT NULL,
                    payload jsonb NOT NULL,
                    status text NOT NULL DEFAULT 'pending',
                    attempts integer NOT NULL DEFAULT 0,
                    next_attempt_at timestamptz NOT NULL DEFAULT now(),
                    last_error text,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    sent_at timestamptz
                )""",
                """CREATE INDEX IF NOT EXISTS ch_alert_outbox_pending ON public.ch_alert_outbox (next_attempt_at)
                    WHERE status = 'pending'""",
            ),
        ),
        Migration(
            7,
            "tie-out of the books against the broker",
            (
                # Reconciliation (docs/reconciliation.md): one row per destination and day (``day`` NULL:
                # "now") and status episode. A new row when the status or the set of causes changes,
                # else the latest row's figures and checked_at are updated: the history says when an
                # account stopped tying out and why, without a row per pass.
                """CREATE TABLE IF NOT EXISTS public.ch_tieout (
                    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    destination text NOT NULL,
                    day date,
                    status text NOT NULL,
                    book_cash numeric,
                    broker_cash numeric,
                    book_equity numeric,
                    broker_equity numeric,
                    unexplained_usd numeric NOT NULL DEFAULT 0,
                    causes text[] NOT NULL DEFAULT '{}',
                    differences jsonb NOT NULL DEFAULT '[]'::jsonb,
                    first_seen_at timestamptz NOT NULL DEFAULT now(),
                    checked_at timestamptz NOT NULL DEFAULT now()
                )""",
                """CREATE INDEX IF NOT EXISTS ch_tieout_latest
                    ON public.ch_tieout (destination, (COALESCE(day, 'infinity'::date)), id DESC)""",
                # The repair path: the manager asks for a backfill of a window of raw data; the row
                # records who asked, why, and when it closed (rows read, or the error).
                """CREATE TABLE IF NOT EXISTS public.ch_backfill_requests (
                    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    destination text NOT NULL,
                    since timestamptz NOT NULL,
                    until timestamptz,
                    reason text NOT NULL,
                    requested_at timestamptz NOT NULL DEFAULT now(),
                    started_at timestamptz,
                    done_at timestamptz,
                    rows_read bigint,
                    error text
                )""",
                """CREATE INDEX IF NOT EXISTS ch_backfill_requests_open ON public.ch_backfill_requests (destination)
                    WHERE done_at IS NULL""",
            ),
        ),
        Migration(
            8,
            "provisional fills from the stream",
            (
                # A trade_updates fill, stored at once so the manager books it before REST has it
                # (docs/freshness.md). It draws its seq from the activities' own sequence: the
                # manager reads both tables through one seq cursor. ``activities`` stays REST-only.
                f"""CREATE TABLE IF NOT EXISTS {s}.provisional_fills (
                    destination text NOT NULL,
                    activity_id text NOT NULL,
                    ts timestamptz NOT NULL,
                    order_id uuid NOT NULL,
                    execution_id text,
                    fill_type text,
                    symbol text NOT NULL,
                    side text NOT NULL,
                    qty numeric NOT NULL,
                    price numeric NOT NULL,
                    cum_qty numeric,
                    raw jsonb NOT NULL,
                    seq bigint NOT NULL,
                    ingested_at timestamptz NOT NULL DEFAULT now(),
                    confirmed_by text,
                    confirmed_at timestamptz,
                    superseded boolean NOT NULL DEFAULT false,
                    PRIMARY KEY (destination, activity_id)
                )""",
                f"""DO $$ BEGIN EXECUTE format('ALTER TABLE {s}.provisional_fills ALTER COLUMN seq SET DEFAULT nextval(%L)',
                    pg_get_serial_sequence('{s}.activities', 'seq')); END $$""",
                f"CREATE INDEX IF NOT EXISTS provisional_fills_order ON {s}.provisional_fills (destination, order_id)",
                f"CREATE INDEX IF NOT EXISTS provisional_fills_seq ON {s}.provisional_fills (destination, seq)",
                # On a REST fill: the provisional fill it confirms (same content: the manager keeps the
                # provisional one booked and skips this row) or replaces (content differs: REST wins).
                f"ALTER TABLE {s}.activities ADD COLUMN IF NOT EXISTS confirms text",
                f"ALTER TABLE {s}.activities ADD COLUMN IF NOT EXISTS replaces text",
                f"""CREATE INDEX IF NOT EXISTS activities_dest_fill_order ON {s}.activities (destination, order_id)
                    WHERE activity_type = 'FILL'""",
            ),
        ),
        Migration(
            9,
            "strategies and benchmarks",
            (
                # Daily bars of each destination's benchmark symbol, fetched by workers.benchmarks from
                # the market-data bars endpoint (docs/strategies.md). Small (one row a symbol a day):
                # kept in the primary store next to the registry that names the symbols.
                """CREATE TABLE IF NOT EXISTS public.benchmark_bars (
                    symbol text NOT NULL,
                    day date NOT NULL,
                    open double precision NOT NULL,
                    high double precision NOT NULL,
                    low double precision NOT NULL,
                    close double precision NOT NULL,
                    volume double precision,
                    adjustment text NOT NULL DEFAULT 'all',
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (symbol, day)
                )""",
                # What the workers were configured with, published for the read-only dashboard (which
                # has no destinations file in deployments): the [[strategies]] rules in order, and
                # each destination's benchmark (NULL: none).
                """CREATE TABLE IF NOT EXISTS public.ch_strategy_rules (
                    position integer PRIMARY KEY,
                    name text NOT NULL,
                    rule jsonb NOT NULL,
                    updated_at timestamptz NOT NULL DEFAULT now()
                )""",
                """CREATE TABLE IF NOT EXISTS public.ch_benchmarks (
                    slug text PRIMARY KEY,
                    symbol text,
                    updated_at timestamptz NOT NULL DEFAULT now()
                )""",
                # per-strategy books join a destination's round trips to their opening orders
                f"CREATE INDEX IF NOT EXISTS orders_dest_replaces ON {s}.orders (destination, (raw->>'replaces'))",
            ),
        ),
        # ch_rest_calls and ch_rest_take(): the REST budget counted across processes (core/schema_budget.py)
        Migration(10, "REST budget ledger across processes", REST_LEDGER_STATEMENTS),
        # provisional_fills on every open/closed trades table (core/schema_provisional.py)
        Migration(11, "provisional rows marked", provisional_statements(s)),
    ]


MIGRATIONS_TABLE_DDL = """CREATE TABLE IF NOT EXISTS public.schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
# One migrator at a time across processes and hosts.
MIGRATION_LOCK_KEY = 0x43484D49  # "CHMI"


def _index_name(table: str, suffix: str) -> str:
    """``<table>_<suffix>``, shortened with a stable hash when it would pass the 63-byte limit."""
    name = f"{table}_{suffix}"
    if len(name) <= 63:
        return name
    digest = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
    return f"{table[: 63 - len(suffix) - 10]}_{digest}_{suffix}"


def destination_ddl(slug: str, store: Store | None = None) -> list[str]:
    """Idempotent DDL creating one destination's derived tables (those of ``store``; ``None``: all)."""
    primary = _destination_primary_ddl(slug)
    timeseries = _destination_timeseries_ddl(slug)
    if store is None:
        return primary + timeseries
    return primary if store is Store.PRIMARY else timeseries


def _destination_timeseries_ddl(slug: str) -> list[str]:
    eq = quote_ident(equity_table(slug))
    return [
        f"""CREATE TABLE IF NOT EXISTS public.{eq} (
            ts timestamptz PRIMARY KEY,
            equity numeric NOT NULL,
            cash numeric,
            long_market_value numeric,
            short_market_value numeric,
            realized_pl numeric,
            unrealized_pl numeric,
            net_deposits numeric NOT NULL DEFAULT 0,
            drawdown double precision,
            source text NOT NULL DEFAULT 'live'
        )""",
    ]


def _destination_primary_ddl(slug: str) -> list[str]:
    ot = quote_ident(open_trades_table(slug))
    ct = quote_ident(closed_trades_table(slug))
    ct_name = closed_trades_table(slug)
    return [
        f"""CREATE TABLE IF NOT EXISTS public.{ot} (
            symbol text PRIMARY KEY,
            side text NOT NULL,
            qty numeric NOT NULL,
            avg_entry_price numeric NOT NULL,
            cost_basis numeric NOT NULL,
            entry_time timestamptz NOT NULL,
            mark_price numeric,
            mark_ts timestamptz,
            price_source text,
            price_stale boolean NOT NULL DEFAULT false,
            market_value numeric,
            unrealized_pl numeric,
            unrealized_plpc double precision,
            prev_close numeric,
            day_change numeric,
            day_change_pct double precision,
            exposure numeric,
            weight double precision,
            entry_order_id uuid,
            stop_price numeric,
            take_profit_price numeric,
            broker_qty numeric,
            qty_mismatch boolean NOT NULL DEFAULT false,
            lots jsonb NOT NULL DEFAULT '[]'::jsonb,
            updated_at timestamptz NOT NULL DEFAULT now(),
            {PROVISIONAL_COLUMN}
        )""",
        f"""CREATE TABLE IF NOT EXISTS public.{ct} (
            trade_id text PRIMARY KEY,
            symbol text NOT NULL,
            direction text NOT NULL,
            qty numeric NOT NULL,
            entry_time timestamptz NOT NULL,
            exit_time timestamptz NOT NULL,
            entry_price numeric NOT NULL,
            exit_price numeric NOT NULL,
            gross_pl numeric NOT NULL,
            fees numeric NOT NULL DEFAULT 0,
            net_pl numeric NOT NULL,
            return_pct double precision,
            holding_s double precision,
            exit_reason text NOT NULL DEFAULT 'manual',
            entry_order_id uuid,
            exit_order_id uuid,
            is_orphan boolean NOT NULL DEFAULT false,
            mae numeric,
            mfe numeric,
            fills jsonb NOT NULL DEFAULT '[]'::jsonb,
            lots jsonb NOT NULL DEFAULT '[]'::jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            {PROVISIONAL_COLUMN}
        )""",
        f"CREATE INDEX IF NOT EXISTS {quote_ident(_index_name(ct_name, 'exit'))} ON public.{ct} (exit_time)",
        f"CREATE INDEX IF NOT EXISTS {quote_ident(_index_name(ct_name, 'sym'))} ON public.{ct} (symbol, exit_time)",
        # The closed-trades grid sorts and filters server-side on these; without them a 100k-row
        # destination sorted by P&L misses the 150 ms callback target (bench/dashboard.py).
        f"CREATE INDEX IF NOT EXISTS {quote_ident(_index_name(ct_name, 'net_pl'))} ON public.{ct} (net_pl, trade_id)",
        f"CREATE INDEX IF NOT EXISTS {quote_ident(_index_name(ct_name, 'ret'))} ON public.{ct} (return_pct, trade_id)",
        f"CREATE INDEX IF NOT EXISTS {quote_ident(_index_name(ct_name, 'hold'))} ON public.{ct} (holding_s, trade_id)",
        f"CREATE INDEX IF NOT EXISTS {quote_ident(_index_name(ct_name, 'lsym'))} ON public.{ct} (lower(symbol))",
    ]


def timescale_ddl(account_schema: str, slugs: list[str], *, compress_after_days: int = 7,
                  retention_days: int | None = None, store: Store | None = None) -> list[str]:
    """Statements run only when the ``timescaledb`` extension is available (for ``store``'s tables; ``None``: all).

    Hypertables need the time column in every unique key: ``activities``, ``order_events`` and
    ``price_bars`` have ``ts`` in their primary keys and ``equity_full_<slug>`` is keyed by ``ts`` alone.
    """
    s = quote_ident(account_schema)
    out = ["CREATE EXTENSION IF NOT EXISTS timescaledb"]
    primary = [f"{s}.activities", f"{s}.order_events"]
    timeseries = ["public.price_bars"] + [f"public.{quote_ident(equity_table(x))}" for x in slugs]
    targets = {None: primary + timeseries, Store.PRIMARY: primary, Store.TIMESERIES: timeseries}[store]
    for table in targets:
        literal = table.replace("'", "''")
        out.append(f"SELECT create_hypertable('{literal}', 'ts', if_not_exists => TRUE, migrate_data => TRUE)")
        out.append(f"ALTER TABLE {table} SET (timescaledb.compress)")
        out.append(
            f"SELECT add_compression_policy('{literal}', INTERVAL '{int(compress_after_days)} days', if_not_exists => TRUE)"
        )
        if retention_days is not None:
            out.append(
                f"SELECT add_retention_policy('{literal}', INTERVAL '{int(retention_days)} days', if_not_exists => TRUE)"
            )
    return out


def bucket_expr(width_sql: str, column: str, *, timescale: bool) -> str:
    """``time_bucket`` with TimescaleDB, else ``date_bin`` (PostgreSQL 14+) anchored at the epoch."""
    col = quote_ident(column)
    if timescale:
        return f"time_bucket({width_sql}, {col})"
    return f"date_bin({width_sql}, {col}, TIMESTAMPTZ '1970-01-01 00:00:00+00')"
