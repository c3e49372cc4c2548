"""Two databases: the time series (equity_full_<slug>, price_bars) live where TIMESCALE_LIVE_CONN_STRING points.

Against a real PostgreSQL: a second database on the same server stands in for the TimescaleDB one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.db import connect, migrate, resolve_dsn
from core.destinations import load_destinations
from core.dsn import parse_dsn
from core.schema import Store, table_store
from core.settings import Settings

PRIMARY_ONLY = {"public.ch_destinations", "public.ch_versions", "public.open_trades_alpha", "public.closed_trades_alpha",
                "account_activities.activities", "account_activities.heartbeats", "public.ch_alerts"}
SERIES_ONLY = {"public.equity_full_alpha", "public.price_bars"}


@pytest.fixture
def series_dsn(pg_server_dsn: str) -> Iterator[str]:
    """A second empty database on the same server: the time-series store."""
    name = f"ch_ts_{uuid.uuid4().hex[:12]}"
    admin = connect(pg_server_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield parse_dsn(pg_server_dsn).with_dbname(name).uri()
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def tables(dsn: str) -> set[str]:
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("""SELECT table_schema || '.' || table_name FROM information_schema.tables
                           WHERE table_schema NOT IN ('pg_catalog', 'information_schema')""")
            return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


def versions(dsn: str) -> set[int]:
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version FROM public.schema_migrations")
            return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


def destinations(tmp_path: Path, *names: str) -> list[object]:
    path = tmp_path / f"d{len(names)}.toml"
    path.write_text("".join(f'[[destinations]]\nname = "{n}"\nkey_id = "PK{i}"\nsecret_key = "s"\nbase_url = "paper"\n'
                            for i, n in enumerate(names)))
    return load_destinations(path, environ={})  # type: ignore[return-value]


def run_migrate(settings: Settings, dests: list[object]) -> list[int]:
    conn = connect(resolve_dsn(settings))
    try:
        return migrate(conn, settings, dests)  # type: ignore[arg-type]
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("table", "store"),
    [("equity_full_alpha", Store.TIMESERIES), ('public."equity_full_x"', Store.TIMESERIES),
     ("price_bars", Store.TIMESERIES), ("public.price_bars", Store.TIMESERIES),
     ("open_trades_alpha", Store.PRIMARY), ("account_activities.activities", Store.PRIMARY),
     ("ch_versions", Store.PRIMARY)],
)
def test_table_store(table: str, store: Store) -> None:
    assert table_store(table) is store


def test_separate_databases_each_hold_their_own_tables(
    settings: Settings, db_dsn: str, series_dsn: str, tmp_path: Path
) -> None:
    split = settings.replace(timescale_live_conn_string=series_dsn)
    assert split.separate_timeseries
    assert (resolve_dsn(split, Store.PRIMARY), resolve_dsn(split, Store.TIMESERIES)) == (db_dsn, series_dsn)

    applied = run_migrate(split, destinations(tmp_path, "Alpha"))

    in_primary, in_series = tables(db_dsn), tables(series_dsn)
    assert PRIMARY_ONLY <= in_primary
    assert not SERIES_ONLY & in_primary
    assert SERIES_ONLY <= in_series
    assert in_series - SERIES_ONLY == {"public.schema_migrations"}
    assert versions(series_dsn) == {5}
    assert 5 not in versions(db_dsn)
    assert applied == sorted(versions(db_dsn) | versions(series_dsn))


def test_separate_databases_migrate_idempotently_and_take_new_destinations(
    settings: Settings, db_dsn: str, series_dsn: str, tmp_path: Path
) -> None:
    split = settings.replace(timescale_live_conn_string=series_dsn)
    run_migrate(split, destinations(tmp_path, "Alpha"))

    assert run_migrate(split, destinations(tmp_path, "Alpha", "Beta")) == []

    assert "public.equity_full_beta" in tables(series_dsn)
    assert "public.equity_full_beta" not in tables(db_dsn)
    assert "public.open_trades_beta" in tables(db_dsn)


def test_one_database_when_both_dsns_name_it(settings: Settings, db_dsn: str, tmp_path: Path) -> None:
    same = settings.replace(timescale_live_conn_string=db_dsn.replace("postgresql://", "postgresql+psycopg2://"))
    assert not same.separate_timeseries
    assert resolve_dsn(same, Store.TIMESERIES) == resolve_dsn(same, Store.PRIMARY)

    run_migrate(same, destinations(tmp_path, "Alpha"))

    assert PRIMARY_ONLY | SERIES_ONLY <= tables(db_dsn)
    assert 5 in versions(db_dsn)
