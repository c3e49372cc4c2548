from __future__ import annotations

from decimal import Decimal

import pytest

from core.db import connect, migrate
from core.destinations import Destination
from core.schema import bucket_expr, destination_ddl, migrations, quote_ident, timescale_ddl
from core.settings import Settings


def _dest(name: str, slug: str) -> Destination:
    return Destination(name=name, slug=slug, key_id="PKTESTKEY0001", secret_key="s3cr3t-value",
                       base_url="http://127.0.0.1:1", initial_deposit=Decimal("1000"))


def _tables(conn) -> set[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT table_schema || '.' || table_name FROM information_schema.tables "
                    "WHERE table_schema IN ('public', 'account_activities')")
        return {r[0] for r in cur.fetchall()}


def test_migrate_creates_raw_and_destination_tables_and_is_idempotent(settings: Settings) -> None:
    conn = connect(settings.primary_dsn or "")
    first = migrate(conn, settings, [_dest("Alpha", "alpha")])
    second = migrate(conn, settings, [_dest("Alpha", "alpha")])
    tables = _tables(conn)
    assert first == [m.version for m in migrations(settings.account_schema)]
    assert first[:2] == [1, 2]
    assert second == []
    for t in ("account_activities.orders", "account_activities.order_events", "account_activities.activities",
              "account_activities.checkpoints", "account_activities.heartbeats", "public.schema_migrations",
              "public.open_trades_alpha", "public.closed_trades_alpha", "public.equity_full_alpha"):
        assert t in tables
    conn.close()


def test_adding_a_destination_creates_its_tables(settings: Settings) -> None:
    conn = connect(settings.primary_dsn or "")
    migrate(conn, settings, [_dest("Alpha", "alpha")])
    migrate(conn, settings, [_dest("Alpha", "alpha"), _dest("Beta Fund", "beta_fund")])
    tables = _tables(conn)
    assert "public.equity_full_beta_fund" in tables
    with conn.cursor() as cur:
        cur.execute("SELECT slug, masked_key FROM ch_destinations ORDER BY slug")
        rows = cur.fetchall()
    assert rows == [("alpha", "PK…0001"), ("beta_fund", "PK…0001")]
    assert all("s3cr3t" not in str(r) for r in rows)
    conn.close()


def test_custom_account_schema(settings: Settings) -> None:
    custom = settings.replace(account_schema="raw_data")
    conn = connect(custom.primary_dsn or "")
    migrate(conn, custom, [])
    assert "public.schema_migrations" in _tables(conn)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'raw_data'")
        # orders, order_events, activities, checkpoints, heartbeats, provisional_fills (migration 8)
        assert cur.fetchone()[0] == 6
    conn.close()


def test_quote_ident_refuses_injection() -> None:
    assert quote_ident("equity_full_a1") == '"equity_full_a1"'
    with pytest.raises(ValueError, match="refusing identifier"):
        quote_ident('x"; DROP TABLE y; --')


def test_timescale_sql_is_rendered_for_every_time_series_table() -> None:
    sql = timescale_ddl("account_activities", ["alpha"], compress_after_days=3, retention_days=365)
    joined = "\n".join(sql)
    assert sql[0] == "CREATE EXTENSION IF NOT EXISTS timescaledb"
    assert "create_hypertable('\"account_activities\".activities', 'ts'" in joined
    assert "create_hypertable('public.\"equity_full_alpha\"', 'ts'" in joined
    assert "create_hypertable('public.price_bars', 'ts'" in joined
    assert "INTERVAL '3 days'" in joined
    assert "INTERVAL '365 days'" in joined
    assert sum("add_retention_policy" in s for s in sql) == 4


def test_bucket_expression_uses_date_bin_without_timescale(settings: Settings) -> None:
    assert bucket_expr("INTERVAL '1 day'", "ts", timescale=True) == "time_bucket(INTERVAL '1 day', \"ts\")"
    expr = bucket_expr("INTERVAL '1 hour'", "ts", timescale=False)
    conn = connect(settings.primary_dsn or "")
    with conn.cursor() as cur:
        cur.execute(f"SELECT {expr} FROM (SELECT TIMESTAMPTZ '2026-01-02 10:47:00+00' AS ts) t")
        assert cur.fetchone()[0].isoformat() == "2026-01-02T10:00:00+00:00"
    conn.close()


def test_destination_ddl_quotes_every_identifier() -> None:
    ddl = destination_ddl("my_fund")
    assert any('public."open_trades_my_fund"' in s for s in ddl)
    assert all("{" not in s for s in ddl)


def test_longest_slug_gets_valid_unique_index_names(settings: Settings) -> None:
    from core.destinations import slugify

    slug = slugify("a very long destination name " * 5)
    conn = connect(settings.primary_dsn or "")
    migrate(conn, settings, [_dest("a very long destination name " * 5, slug)])
    with conn.cursor() as cur:
        cur.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", (f"closed_trades_{slug}",))
        names = [r[0] for r in cur.fetchall()]
    assert len(names) == len(set(names)) >= 7
    assert all(len(n) <= 63 for n in names)
    conn.close()
