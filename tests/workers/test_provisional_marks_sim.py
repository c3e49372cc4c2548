"""The provisional mark on the real path (simulator trade_updates + REST, ingester, manager): a stream
fill's open row says ``provisional_fills = 1`` until the ingester's confirmation pass stores its REST
activity, then 0 with nothing booked twice (docs/freshness.md, "Provisional rows")."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal

import asyncpg
import pytest

from core.destinations import open_trades_table
from core.settings import Settings
from tests.simulator_fixtures import SimHandle
from tests.workers.test_manager_support import eventually, migrate_db
from tests.workers.test_provisional_sim import ON_REQUEST, sim_destination
from workers.ingester.loops import Ingester
from workers.manager import AccountManager, always_open

pytestmark = pytest.mark.slow


async def test_a_stream_fill_is_marked_until_the_confirmation_pass(
        settings: Settings, db_dsn: str, simulator_factory: Callable[..., SimHandle]) -> None:
    # Arrange: ingester (REST only on request) and manager on one simulator account, the start passes done
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

    async def row() -> tuple[Decimal, int] | None:
        r = await conn.fetchrow(f"SELECT qty, provisional_fills FROM {table} WHERE symbol = 'MSFT'")
        return None if r is None else (r["qty"], r["provisional_fills"])

    async def idle() -> bool:
        return ingester.stream_connected and ingester.counters.backfills >= 1 and not (
            ingester._backfill_reasons or ingester._backfill_inflight)

    try:
        await eventually(idle, what="stream connected and the start passes done", timeout_s=60)
        # Act 1: a fill on the simulator (only the stream reports it)
        await asyncio.to_thread(sim.admin, "/fill", {"account": dest.name, "symbol": "MSFT", "side": "buy", "qty": "4"})

        async def marked() -> bool:
            return await row() == (Decimal(4), 1)

        # Assert 1: booked and marked provisional
        await eventually(marked, what="the stream fill's row marked provisional", timeout_s=30)
        # Act 2: the confirmation pass
        ingester.request_backfill("fill")

        async def cleared() -> bool:
            return await row() == (Decimal(4), 0)

        # Assert 2: the mark clears, the position is counted once
        await eventually(cleared, what="the mark cleared by the REST confirmation", timeout_s=30)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        await conn.close()
        await pool.close()
