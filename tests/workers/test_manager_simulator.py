"""End to end on one machine: simulator bot -> real ingester -> manager -> tables match the ground truth."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from core.destinations import Destination, closed_channel, pos_channel, slugify
from core.fifo import match_fills
from core.records import Fill
from core.settings import Settings
from tests.simulator_fixtures import SimHandle
from tests.workers.test_manager_support import Listener, eventually, migrate_db
from workers.ingester import IngesterOptions, run_ingester
from workers.manager import AccountManager, always_open

pytestmark = pytest.mark.slow


def sim_destination(sim: SimHandle, index: int = 0) -> Destination:
    acct = sim.accounts[index]
    return Destination(name=acct["name"], slug=slugify(acct["name"]), key_id=acct["key_id"],
                       secret_key=acct["secret_key"], base_url=sim.rest_url, stream_url=sim.stream_url)


def truth_fifo(truth: dict[str, Any]) -> dict[str, tuple[Decimal, Decimal]]:
    """trade_id -> (qty, net P&L) recomputed from the simulator's own fills (its dump has no leg links,
    so exit reasons are not compared here; tests/workers/test_manager.py covers them)."""
    fills = [Fill(fill_id=a["id"], ts=datetime.fromisoformat(a["transaction_time"]), symbol=a["symbol"], side=a["side"],
                  qty=Decimal(a["qty"]), price=Decimal(a["price"]), order_id=a.get("order_id"))
             for a in truth["activities"] if a.get("activity_type") == "FILL"]
    result = match_fills(fills)
    return {t.trade_id: (t.qty, t.net_pl) for t in result.round_trips}


async def test_bot_session_matches_simulator_ground_truth(
    settings: Settings, db_dsn: str, simulator_factory: Callable[..., SimHandle],
) -> None:
    sim = simulator_factory(accounts=1, seed=7, bot_rate=4.0, history_days=1, extra_args=["--tick-ms", "50", "--fees"])
    dest = sim_destination(sim)
    cfg = settings.replace(zmq_price_endpoints=sim.zmq_url, closed_sync_sec=1.0, snapshot_sec=0.5,
                           price_stale_after_s=30.0)
    migrate_db(cfg, [dest])
    stop = asyncio.Event()
    listener = await Listener().start(db_dsn, pos_channel(dest.slug), closed_channel(dest.slug))
    options = IngesterOptions(backfill_interval_s=1.0, lock_check_interval_s=0.5, fill_catchup_min_interval_s=0.2)
    ingest = asyncio.create_task(run_ingester(cfg, [dest], stop_event=stop, options=options))
    manager = AccountManager(cfg, [dest], market_open=always_open)
    manage = asyncio.create_task(manager.run(stop))
    conn = await asyncpg.connect(db_dsn)
    try:
        # Arrange: let the bot trade until it has closed a few round trips.
        def truth() -> dict[str, Any]:
            return sim.admin(f"/ground-truth?account={dest.name}")["accounts"][dest.name]

        async def enough_trading() -> bool:
            return len(truth_fifo(await asyncio.to_thread(truth))) >= 3

        await eventually(enough_trading, what="the bot to close 3 round trips", timeout_s=60, every_s=0.5)
        await asyncio.to_thread(sim.admin, "/bot", {"rate": 0})
        await asyncio.to_thread(sim.admin, "/pause", {"paused": True})
        await asyncio.sleep(0.3)  # let an in-flight match settle before reading the final truth
        final = await asyncio.to_thread(truth)
        expected_trips = truth_fifo(final)
        expected_positions = {s: Decimal(p["qty"]) for s, p in final["positions"].items() if Decimal(p["qty"]) != 0}
        sim_equity = Decimal(final["equity"])

        # Act: wait for the manager to converge.
        async def open_match() -> bool:
            rows = await conn.fetch(f"SELECT symbol, qty FROM open_trades_{dest.slug}")
            return {r["symbol"]: r["qty"] for r in rows} == expected_positions

        async def closed_match() -> bool:
            rows = await conn.fetch(f"SELECT trade_id, qty, net_pl FROM closed_trades_{dest.slug}")
            return {r["trade_id"]: (r["qty"], r["net_pl"]) for r in rows} == expected_trips

        await eventually(open_match, what="open trades == simulator positions", timeout_s=30)
        await eventually(closed_match, what="closed trades == FIFO of the simulator's fills", timeout_s=30)
        mark_time = await conn.fetchval("SELECT now()")

        async def snapshot_after() -> bool:
            return bool(await conn.fetchval(f"SELECT count(*) FROM equity_full_{dest.slug} WHERE ts > $1", mark_time))

        await eventually(snapshot_after, what="a snapshot after convergence", timeout_s=30)
        snaps = await conn.fetch(f"SELECT ts, equity FROM equity_full_{dest.slug} WHERE ts > $1", mark_time)
        sources = dict(await conn.fetch(f"SELECT source, count(*) FROM equity_full_{dest.slug} GROUP BY source"))

        # Assert
        assert expected_trips, "the bot closed no trade: the comparison would be vacuous"
        assert sources.get("history", 0) >= 1  # seeded from the broker's portfolio history (the back-filled day)
        assert {a["activity_type"] for a in final["activities"]} >= {"CSD", "FEE", "FILL"}  # cash flows covered
        for snap in snaps:
            assert abs(snap["equity"] - sim_equity) <= Decimal("0.01"), (snap["ts"], snap["equity"], sim_equity)
        assert listener.received[closed_channel(dest.slug)], "no NOTIFY on the closed channel"
        assert listener.received[pos_channel(dest.slug)], "no NOTIFY on the positions channel"
        assert all(len(str(p)) < 8000 for p in listener.received[pos_channel(dest.slug)])
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(ingest, manage, return_exceptions=True), 30)
        await listener.close()
        await conn.close()
