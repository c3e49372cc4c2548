"""Migration 11 (core/schema_provisional.py): existing open/closed trades tables get ``provisional_fills``
in place, their rows kept."""

from __future__ import annotations

from decimal import Decimal

from core.db import connect, migrate
from core.destinations import Destination
from core.settings import Settings


def _dest(name: str, slug: str) -> Destination:
    return Destination(name=name, slug=slug, key_id="PKTESTKEY0001", secret_key="s3cr3t-value",
                       base_url="http://127.0.0.1:1", initial_deposit=Decimal("1000"))


def test_tables_from_before_migration_11_get_the_column_and_keep_their_rows(settings: Settings) -> None:
    # Arrange: a database at migration 10 whose destination tables have no provisional_fills (as the
    # released DDL made them), with a position and a round trip stored
    conn = connect(settings.primary_dsn or "")
    migrate(conn, settings, [_dest("Alpha", "alpha")])
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM public.schema_migrations WHERE version = 11")
        for table in ("open_trades_alpha", "closed_trades_alpha"):
            cur.execute(f"ALTER TABLE public.{table} DROP COLUMN provisional_fills")
        cur.execute("DROP INDEX account_activities.provisional_fills_unconfirmed")
        cur.execute("""INSERT INTO public.open_trades_alpha (symbol, side, qty, avg_entry_price, cost_basis, entry_time)
                       VALUES ('AAPL', 'long', 6, 100, 600, now())""")
        cur.execute("""INSERT INTO public.closed_trades_alpha (trade_id, symbol, direction, qty, entry_time, exit_time,
                           entry_price, exit_price, gross_pl, net_pl)
                       VALUES ('t1', 'MSFT', 'long', 5, now(), now(), 200, 210, 50, 50)""")
    # Act: the workers start with this version (the destinations file names only Alpha)
    applied = migrate(conn, settings, [_dest("Alpha", "alpha")])
    # Assert: upgraded in place, every row kept and unmarked; the index for the manager's start is there
    with conn.cursor() as cur:
        cur.execute("SELECT symbol, qty, provisional_fills FROM public.open_trades_alpha")
        open_rows = cur.fetchall()
        cur.execute("SELECT trade_id, net_pl, provisional_fills FROM public.closed_trades_alpha")
        closed_rows = cur.fetchall()
        cur.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'provisional_fills_unconfirmed'")
        indexes = cur.fetchone()[0]
    assert applied == [11]
    assert open_rows == [("AAPL", Decimal(6), 0)]
    assert closed_rows == [("t1", Decimal(50), 0)]
    assert indexes == 1
    conn.close()


def test_a_destination_no_longer_configured_is_upgraded_too(settings: Settings) -> None:
    # Arrange: Beta's tables predate migration 11, and Beta is no longer in the destinations file
    conn = connect(settings.primary_dsn or "")
    migrate(conn, settings, [_dest("Alpha", "alpha"), _dest("Beta", "beta")])
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM public.schema_migrations WHERE version = 11")
        cur.execute("ALTER TABLE public.closed_trades_beta DROP COLUMN provisional_fills")
    # Act
    migrate(conn, settings, [_dest("Alpha", "alpha")])
    # Assert: the dashboard may still show Beta's history, so its table has the column as well
    with conn.cursor() as cur:
        cur.execute("""SELECT column_default, is_nullable FROM information_schema.columns
                       WHERE table_name = 'closed_trades_beta' AND column_name = 'provisional_fills'""")
        assert cur.fetchone() == ("0", "NO")
    conn.close()
