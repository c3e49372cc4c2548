"""workers.manager.tieout on a real PostgreSQL: the book read from the raw tables, the history kept in
ch_tieout (a new row when the status or causes change, the same row updated otherwise), repair requests."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from core.destinations import Destination
from core.settings import Settings
from core.tieout import Cause, Difference, Scope, Status, TieOut, Tolerances
from tests.workers.test_manager_support import migrate_db
from workers.manager.tieout import TieoutReader, repair_due, store

SLUG = "tie_dest"
NOW = datetime(2026, 3, 10, 18, 0, tzinfo=UTC)


@pytest.fixture
async def pool(settings: Settings, db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    migrate_db(settings, [Destination(name="Tie dest", slug=SLUG, key_id="k", secret_key="s",
                                      base_url="http://127.0.0.1:1")])
    p = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    yield p
    await p.close()


def report(status: Status, *diffs: Difference) -> TieOut:
    return TieOut(as_of=NOW, status=status, book_cash=Decimal(10), broker_cash=Decimal(10), book_equity=Decimal(10),
                  broker_equity=Decimal(10), differences=diffs)


async def test_history_keeps_one_row_per_status_episode(pool: asyncpg.Pool) -> None:
    tol = Tolerances()
    drift = Difference(scope=Scope.CASH, subject="", amount_usd=Decimal(5), cause=Cause.UNEXPLAINED)
    # Act: tied, tied, drift, drift, tied
    inserted = [await store(pool, SLUG, r, tol) for r in (report(Status.TIED_OUT), report(Status.TIED_OUT),
                                                          report(Status.DRIFT, drift), report(Status.DRIFT, drift),
                                                          report(Status.TIED_OUT))]
    # Assert: three episodes, the drift one with its cause and unexplained amount
    assert inserted == [1, 0, 1, 0, 1]
    rows = await pool.fetch("SELECT status, causes, unexplained_usd, differences FROM public.ch_tieout "
                            "WHERE destination = $1 ORDER BY id", SLUG)
    assert [r["status"] for r in rows] == ["tied_out", "drift", "tied_out"]
    assert rows[1]["causes"] == ["unexplained"]
    assert rows[1]["unexplained_usd"] == Decimal(5)
    assert json.loads(rows[1]["differences"])[0]["cause"] == "unexplained"


async def test_reader_books_option_cash_with_the_multiplier_and_finds_unbooked_fills(pool: asyncpg.Pool,
                                                                                      settings: Settings) -> None:
    # Arrange: a deposit, an option buy booked as a fill, and an order filled for more than its fills
    s = settings.account_schema
    booked, unbooked = uuid.uuid4(), uuid.uuid4()
    await pool.execute(f"""INSERT INTO {s}.activities (destination, activity_id, ts, activity_type, net_amount, raw)
                           VALUES ($1, 'csd1', $2, 'CSD', 10000, '{{}}')""", SLUG, NOW - timedelta(days=1))
    await pool.execute(f"""INSERT INTO {s}.activities (destination, activity_id, ts, activity_type, symbol, side, qty,
                           price, order_id, raw) VALUES ($1, 'f1', $2, 'FILL', 'AAPL260320C00150000', 'buy', 2, 3.10,
                           $3, '{{}}')""", SLUG, NOW - timedelta(hours=1), booked)
    for oid, filled in ((booked, 2), (unbooked, 5)):
        await pool.execute(f"""INSERT INTO {s}.orders (destination, order_id, symbol, side, filled_qty, filled_avg_price,
                               filled_at, updated_at, raw) VALUES ($1, $2, $3, 'buy', $4, 400, $5, $5, '{{}}')""",
                           SLUG, oid, "AAPL260320C00150000" if oid == booked else "MSFT", filled, NOW)
    reader = TieoutReader(pool, None, s, SLUG)
    # Act / Assert
    assert await reader.cash() == Decimal(10000) - Decimal(2) * Decimal("3.10") * 100
    pending = await reader.pending_fills(NOW - timedelta(days=2))
    assert [(p.symbol, p.qty, p.order_id) for p in pending] == [("MSFT", Decimal(5), str(unbooked))]
    days, corporate = await reader.days(NOW - timedelta(days=3))
    assert [(d, b.flows) for d, b in days.items()] == [((NOW - timedelta(days=1)).date(), {"CSD": Decimal(10000)})]
    assert corporate == set()


async def test_one_repair_at_a_time_then_a_cooldown(pool: asyncpg.Pool) -> None:
    assert await repair_due(pool, SLUG, 60.0)
    request_id = await pool.fetchval("INSERT INTO public.ch_backfill_requests (destination, since, reason) "
                                     "VALUES ($1, now(), 'test') RETURNING id", SLUG)
    assert not await repair_due(pool, SLUG, 60.0)  # open
    await pool.execute("UPDATE public.ch_backfill_requests SET done_at = now() WHERE id = $1", request_id)
    assert not await repair_due(pool, SLUG, 60.0)  # within the cooldown
    assert await repair_due(pool, SLUG, 0.0)


async def test_seeded_end_of_day_points_follow_the_broker_s_corrected_history(pool: asyncpg.Pool) -> None:
    # Arrange: day 1 seeded from the broker's history while its point repeated day 0's (the quirk);
    # day 2 seeded, then live snapshots later that day; day 3 live only
    def ny_midnight(day: int) -> datetime:
        return datetime(2026, 3, 2 + day, 5, 0, tzinfo=UTC)  # 00:00 in New York (EST)

    rows = [(ny_midnight(0), "1000", "history"), (ny_midnight(1), "1000", "history"),
            (ny_midnight(2), "1010", "history"), (ny_midnight(2) + timedelta(hours=15), "1012", "live"),
            (ny_midnight(3) + timedelta(hours=15), "1020", "live")]
    await pool.executemany(f"INSERT INTO public.equity_full_{SLUG} (ts, equity, source) VALUES ($1, $2, $3)",
                           [(ts, Decimal(e), src) for ts, e, src in rows])
    before = await pool.fetchval("SELECT equity_version FROM public.ch_versions WHERE slug = $1", SLUG)
    reader = TieoutReader(pool, None, "account_activities", SLUG)
    broker = [(ny_midnight(d).date(), Decimal(e)) for d, e in ((1, "1005"), (2, "1011"), (3, "1021"))]
    # Act
    changed = await reader.refresh_seeded_days(broker)
    again = await reader.refresh_seeded_days(broker)
    # Assert: only the seeded copy that is its day's last point moved; live figures are the book's own
    got = {r["ts"]: r["equity"] for r in await pool.fetch(f"SELECT ts, equity FROM public.equity_full_{SLUG}")}
    assert (changed, again) == (1, 0)
    assert got[ny_midnight(1)] == Decimal(1005)
    assert got[ny_midnight(0)] == Decimal(1000)
    assert got[ny_midnight(2)] == Decimal(1010)  # day 2's end-of-day figure is its live 1012
    assert got[ny_midnight(3) + timedelta(hours=15)] == Decimal(1020)
    after = await pool.fetchval("SELECT equity_version FROM public.ch_versions WHERE slug = $1", SLUG)
    assert after == (before or 0) + 1
