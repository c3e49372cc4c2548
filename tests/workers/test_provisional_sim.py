"""The stream fast path against the real simulator (trade_updates websocket + REST): a fill shows in
the derived tables from the stream, stays provisional until its REST FILL activity arrives, and is
then confirmed with no duplicate (docs/freshness.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal

import asyncpg
import pytest

from core.destinations import Destination, open_trades_table, slugify
from core.settings import Settings
from tests.simulator_fixtures import SimHandle
from tests.workers.test_manager_support import eventually, migrate_db
from workers.ingester import IngesterOptions
from workers.ingester.loops import Ingester
from workers.manager import AccountManager, always_open

pytestmark = pytest.mark.slow
SCHEMA = "account_activities"
# No REST pass unless the test asks for one: the timer and the fill confirmation wait an hour.
ON_REQUEST = IngesterOptions(backfill_interval_s=3600.0, fill_catchup_min_interval_s=3600.0, lock_check_interval_s=0.5)


def sim_destination(sim: SimHandle) -> Destination:
    acct = sim.accounts[0]
    return Destination(name=acct["name"], slug=slugify(acct["name"]), key_id=acct["key_id"],
                       secret_key=acct["secret_key"], base_url=sim.rest_url, stream_url=sim.stream_url)


async def test_stream_fill_is_provisional_until_rest_confirms_it_without_a_duplicate(
        settings: Settings, db_dsn: str, simulator_factory: Callable[..., SimHandle]) -> None:
    # Arrange: ingester (production budget) and manager on one simulator account; the start passes done
    sim = simulator_factory(accounts=1, history_days=0)
    dest = sim_destination(sim)
    cfg = settings.replace(zmq_price_endpoints=sim.zmq_url)
    migrate_db(cfg, [dest])
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=4)
    conn = await asyncpg.connect(db_dsn)
    stop = asyncio.Event()
    ingester = Ingester(settings=cfg, destination=dest, pool=pool, options=ON_REQUEST)
    tasks = [asyncio.create_task(ingester.run(stop)),
             asyncio.create_task(AccountManager(cfg, [dest], market_open=always_open).run(stop))]
    table = f'public."{open_trades_table(dest.slug)}"'

    async def qty(symbol: str) -> Decimal | None:
        return await conn.fetchval(f"SELECT qty FROM {table} WHERE symbol = $1", symbol)  # type: ignore[no-any-return]

    async def idle() -> bool:
        return ingester.stream_connected and ingester.counters.backfills >= 1 and not (
            ingester._backfill_reasons or ingester._backfill_inflight)

    try:
        await eventually(idle, what="stream connected and the start passes done", timeout_s=60)
        # Act 1: a fill on the simulator
        order = await asyncio.to_thread(sim.admin, "/fill", {"account": dest.name, "symbol": "AAPL", "side": "buy",
                                                              "qty": "3"})

        async def shown() -> bool:
            return await qty("AAPL") == Decimal(3)

        await eventually(shown, what="the stream fill in open trades", timeout_s=30)
        # Assert 1: booked from the stream, provisional, no REST activity yet
        prov = await conn.fetchrow(f"SELECT activity_id, confirmed_by, superseded FROM {SCHEMA}.provisional_fills "
                                   "WHERE destination = $1 AND order_id = $2::uuid", dest.slug, order["id"])
        assert prov is not None
        assert (prov["confirmed_by"], prov["superseded"]) == (None, False)
        rest_rows = f"SELECT activity_id, confirms FROM {SCHEMA}.activities WHERE destination = $1 AND order_id = $2::uuid"
        assert await conn.fetch(rest_rows, dest.slug, order["id"]) == []

        # Act 2: the confirmation pass (what the next fill catch-up does)
        ingester.request_backfill("fill")

        async def confirmed() -> bool:
            return await conn.fetchval(f"SELECT confirmed_by FROM {SCHEMA}.provisional_fills WHERE destination = $1 "
                                       "AND activity_id = $2", dest.slug, prov["activity_id"]) is not None

        await eventually(confirmed, what="the REST activity confirming the provisional fill", timeout_s=30)
        # A second fill after the confirmation: once it shows, the manager has read past the REST row
        await asyncio.to_thread(sim.admin, "/fill", {"account": dest.name, "symbol": "AAPL", "side": "buy", "qty": "2"})

        async def second_shown() -> bool:
            return await qty("AAPL") is not None and await qty("AAPL") != Decimal(3)

        await eventually(second_shown, what="the second fill in open trades", timeout_s=30)
        # Assert 2: the REST row confirms the provisional one, and the position counts the first fill once
        rest = await conn.fetch(rest_rows, dest.slug, order["id"])
        final = await conn.fetchrow(f"SELECT confirmed_by, superseded FROM {SCHEMA}.provisional_fills "
                                    "WHERE destination = $1 AND activity_id = $2", dest.slug, prov["activity_id"])
        assert [r["confirms"] for r in rest] == [prov["activity_id"]]
        assert final is not None
        assert (final["confirmed_by"], final["superseded"]) == (rest[0]["activity_id"], False)
        assert await qty("AAPL") == Decimal(5)
        budget = ingester.broker.budget.as_dict() if ingester.broker.budget else {}
        assert budget["calls_per_min"] <= 20
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        await conn.close()
        await pool.close()
