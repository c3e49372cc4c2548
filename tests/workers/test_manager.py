"""The account manager against a real database, a real ZMQ feed and a scripted broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from core.destinations import Destination, closed_channel, pos_channel
from core.destinations import PriceFeed as PriceFeedConfig
from core.fifo import match_fills
from core.records import Fill
from core.settings import Settings
from tests.workers.test_manager_support import (
    Listener,
    Publisher,
    ScriptedBroker,
    cash,
    destination,
    eventually,
    fill,
    insert_activities,
    insert_order,
    migrate_db,
)
from workers.manager import AccountManager, always_open


@dataclass
class Running:
    manager: AccountManager
    broker: ScriptedBroker
    pub: Publisher
    conn: asyncpg.Connection
    dest: Destination
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def rows(self, sql: str) -> list[asyncpg.Record]:
        return await self.conn.fetch(sql)


async def start_manager(settings: Settings, db_dsn: str, broker: ScriptedBroker, dest: Destination,
                        pub: Publisher) -> Running:
    manager = AccountManager(settings.replace(zmq_price_endpoints=pub.url), [dest],
                             broker_factory=lambda d, s: broker, market_open=always_open)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    conn = await asyncpg.connect(db_dsn)
    return Running(manager, broker, pub, conn, dest, stop, task)


@pytest.fixture
async def world(settings: Settings, db_dsn: str) -> AsyncIterator[Running]:
    dest = destination("Alpha")
    migrate_db(settings, [dest])
    conn = await asyncpg.connect(db_dsn)
    await insert_activities(conn, dest.slug, [
        cash(0, "CSD", "10000"),
        fill(1, "AAPL", "buy", "10", "100"),
        fill(2, "AAPL", "sell", "4", "110"),
        fill(3, "MSFT", "buy", "5", "200"),
        fill(4, "MSFT", "sell", "5", "190"),
        cash(5, "FEE", "-1.5"),
    ], notify=False)
    await conn.close()
    broker = ScriptedBroker(positions={"AAPL": (Decimal(6), Decimal("105"), Decimal("101"))},
                            cash=Decimal("9388.5"), equity=Decimal("10018.5"))
    pub = Publisher()
    running = await start_manager(settings, db_dsn, broker, dest, pub)
    yield running
    running.stop.set()
    await asyncio.wait_for(running.task, 15)
    await running.conn.close()
    pub.close()


async def test_open_closed_and_equity_from_activities_and_live_prices(world: Running) -> None:
    slug = world.dest.slug

    async def marked_at_120() -> bool:
        rows = await world.rows(f"SELECT mark_price FROM open_trades_{slug} WHERE symbol = 'AAPL'")
        return bool(rows) and rows[0]["mark_price"] == Decimal(120)

    await eventually(marked_at_120, what="AAPL marked by ZMQ", tick=lambda: world.pub.publish("AAPL", "120"))
    await eventually(lambda: _snapshot_at(world, Decimal("10108.5")), what="an equity snapshot at the new mark",
                     tick=lambda: world.pub.publish("AAPL", "120"))

    (aapl,) = await world.rows(f"SELECT * FROM open_trades_{slug}")
    closed = await world.rows(f"SELECT * FROM closed_trades_{slug}")
    # 10000 - 1000 + 440 - 1000 + 950 - 1.5 = 9388.5 cash; 6 x 120 market value.
    assert (aapl["qty"], aapl["avg_entry_price"], aapl["market_value"], aapl["unrealized_pl"]) == (
        Decimal(6), Decimal(100), Decimal(720), Decimal(120))
    assert aapl["unrealized_plpc"] == pytest.approx(20.0)
    assert (aapl["prev_close"], aapl["day_change"]) == (Decimal(101), Decimal(114))
    assert aapl["price_source"] == "zmq"
    assert not aapl["price_stale"]
    assert aapl["weight"] == pytest.approx(720 / 10108.5)
    assert aapl["broker_qty"] == Decimal(6)
    assert not aapl["qty_mismatch"]
    assert [(r["symbol"], r["net_pl"]) for r in closed] == [("MSFT", Decimal(-50))]


async def _snapshot_at(world: Running, equity: Decimal) -> bool:
    rows = await world.rows(f"SELECT equity, cash, realized_pl, net_deposits FROM equity_full_{world.dest.slug} "
                            "ORDER BY ts DESC LIMIT 1")
    return bool(rows) and rows[0]["equity"] == equity and rows[0]["cash"] == Decimal("9388.5") and rows[0][
        "realized_pl"] == Decimal(-10) and rows[0]["net_deposits"] == Decimal(10000)


async def test_new_fill_closes_a_trade_incrementally_and_notifies_both_channels(
        world: Running, db_dsn: str) -> None:
    slug = world.dest.slug
    listener = await Listener().start(db_dsn, pos_channel(slug), closed_channel(slug))
    try:
        await eventually(lambda: _count(world, f"SELECT count(*) FROM open_trades_{slug}", 1), what="first publish")
        syncs_before = None
        for r in world.manager.runners.values():
            syncs_before = r.stats.fills_applied

        await insert_activities(world.conn, slug, [fill(6, "AAPL", "sell", "6", "130")])

        await eventually(lambda: _count(world, f"SELECT count(*) FROM closed_trades_{slug}", 2), what="AAPL closed")
        await eventually(lambda: _count(world, f"SELECT count(*) FROM open_trades_{slug}", 0), what="AAPL row gone")
        await eventually(lambda: _true(bool(listener.received[closed_channel(slug)])), what="closed NOTIFY")
        await eventually(lambda: _true(bool(listener.received[pos_channel(slug)])), what="pos NOTIFY")
        (runner,) = list(world.manager.runners.values())
        aapl = await world.rows(f"SELECT * FROM closed_trades_{slug} WHERE symbol = 'AAPL'")

        expected = match_fills([Fill("a1", fill(1, "AAPL", "buy", "10", "100").ts, "AAPL", "buy", Decimal(10),
                                     Decimal(100)),
                                Fill("a2", fill(2, "AAPL", "sell", "4", "110").ts, "AAPL", "sell", Decimal(4),
                                     Decimal(110)),
                                Fill("a6", fill(6, "AAPL", "sell", "6", "130").ts, "AAPL", "sell", Decimal(6),
                                     Decimal(130))]).round_trips
        assert [r["net_pl"] for r in aapl] == [t.net_pl for t in expected] == [Decimal(220)]
        assert runner.feed is not None
        assert "AAPL" not in runner.feed.symbols  # flat: no longer subscribed
        assert runner.stats.fills_applied == (syncs_before or 0) + 1  # incremental: one new fill applied
        closed_payload = listener.received[closed_channel(slug)][-1]
        assert closed_payload["ids"] == [aapl[0]["trade_id"]]
        assert closed_payload["v"] >= 1
        versions = await world.rows(f"SELECT pos_version, closed_version FROM ch_versions WHERE slug = '{slug}'")
        assert versions[0]["closed_version"] >= 2
    finally:
        await listener.close()


async def test_bracket_legs_and_entry_order_are_shown(world: Running) -> None:
    slug = world.dest.slug
    entry = "00000000-0000-0000-0000-000000000abc"
    await insert_order(world.conn, slug, entry, symbol="NVDA", side="buy", order_type="market", status="filled",
                       order_class="bracket")
    await insert_order(world.conn, slug, "00000000-0000-0000-0000-000000000abd", symbol="NVDA", side="sell",
                       order_type="limit", status="new", parent=entry, limit_price="150")
    await insert_order(world.conn, slug, "00000000-0000-0000-0000-000000000abe", symbol="NVDA", side="sell",
                       order_type="stop", status="held", parent=entry, stop_price="90")
    await insert_activities(world.conn, slug, [fill(7, "NVDA", "buy", "3", "100", order_id=entry)])

    async def legs_shown() -> bool:
        rows = await world.rows(f"SELECT * FROM open_trades_{slug} WHERE symbol = 'NVDA'")
        return bool(rows) and rows[0]["take_profit_price"] == Decimal(150) and rows[0]["stop_price"] == Decimal(90)

    await eventually(legs_shown, what="bracket legs on the NVDA row")
    (row,) = await world.rows(f"SELECT * FROM open_trades_{slug} WHERE symbol = 'NVDA'")
    assert str(row["entry_order_id"]) == entry


async def test_broker_quantity_mismatch_is_flagged_and_reported(world: Running) -> None:
    slug = world.dest.slug
    world.broker.positions["AAPL"] = (Decimal(7), Decimal("105"), Decimal("101"))

    async def flagged() -> bool:
        rows = await world.rows(f"SELECT qty_mismatch, broker_qty FROM open_trades_{slug} WHERE symbol = 'AAPL'")
        return bool(rows) and rows[0]["qty_mismatch"] and rows[0]["broker_qty"] == Decimal(7)

    async def in_heartbeat() -> bool:
        rows = await world.rows("SELECT details FROM account_activities.heartbeats WHERE service = 'manager'")
        return bool(rows) and '"AAPL"' in rows[0]["details"] and "qty_mismatch" in rows[0]["details"]

    await eventually(flagged, what="mismatch flagged on the row")
    await eventually(in_heartbeat, what="mismatch in the heartbeat")
    (runner,) = list(world.manager.runners.values())

    async def healed() -> bool:  # the difference repeats with no fill in between: confirmed, re-read
        return runner.stats.rereads >= 1 and runner.stats.qty_mismatches >= 1

    await eventually(healed, what="a confirmed mismatch re-reads the activities")
    assert runner.stats.rereads >= 1


async def test_rest_price_is_the_fallback_when_the_feed_is_silent(world: Running) -> None:
    slug = world.dest.slug  # nothing is published: the broker's current_price (105) is the mark

    async def rest_marked() -> bool:
        rows = await world.rows(f"SELECT mark_price, price_source FROM open_trades_{slug} WHERE symbol = 'AAPL'")
        return bool(rows) and rows[0]["mark_price"] == Decimal(105) and rows[0]["price_source"] == "rest"

    await eventually(rest_marked, what="REST fallback mark")


async def _count(world: Running, sql: str, n: int) -> bool:
    return (await world.conn.fetchval(sql)) == n


async def _true(value: bool) -> bool:
    return value



async def test_restart_resumes_from_the_checkpoint_and_applies_only_new_fills(
        settings: Settings, db_dsn: str) -> None:
    dest = destination("Alpha")
    migrate_db(settings, [dest])
    conn = await asyncpg.connect(db_dsn)
    pub = Publisher()
    broker = ScriptedBroker()
    try:
        await insert_activities(conn, dest.slug, [cash(0, "CSD", "1000"), fill(1, "AAPL", "buy", "2", "100"),
                                                  fill(2, "AAPL", "sell", "1", "105")], notify=False)
        first = await start_manager(settings, db_dsn, broker, dest, pub)
        await eventually(lambda: _count(first, f"SELECT count(*) FROM open_trades_{dest.slug}", 1), what="first run")
        first.stop.set()
        await asyncio.wait_for(first.task, 15)
        await first.conn.close()
        saved = await conn.fetchrow("SELECT last_seq, fill_count FROM ch_fifo_state WHERE slug = $1", dest.slug)
        await insert_activities(conn, dest.slug, [fill(3, "AAPL", "sell", "1", "110")], notify=False)

        second = await start_manager(settings, db_dsn, broker, dest, pub)
        await eventually(lambda: _count(second, f"SELECT count(*) FROM closed_trades_{dest.slug}", 1),
                         what="the round trip closed by the new fill")
        (runner,) = list(second.manager.runners.values())
        trip = await conn.fetchrow(f"SELECT qty, net_pl FROM closed_trades_{dest.slug}")
        second.stop.set()
        await asyncio.wait_for(second.task, 15)
        await second.conn.close()

        assert saved["fill_count"] == 2
        assert runner.stats.fills_applied == 1  # the two old fills came from the checkpoint
        assert (trip["qty"], trip["net_pl"]) == (Decimal(2), Decimal(15))
    finally:
        await conn.close()
        pub.close()


async def test_malformed_activities_are_skipped_and_counted(world: Running) -> None:
    slug = world.dest.slug
    bad = fill(8, "AAPL", "buy", "1", "100")
    bad.parse_error = "price: not a number"
    await eventually(lambda: _true(bool(world.manager.runners)), what="ownership")
    (runner,) = list(world.manager.runners.values())
    await insert_activities(world.conn, slug, [bad, fill(9, "AAPL", "buy", "1", "100")])

    async def applied() -> bool:
        pos = runner.positions.get("AAPL")
        return runner.stats.activities_skipped == 1 and pos is not None and pos.qty == Decimal(7)

    await eventually(applied, what="the good fill applied and the bad one skipped")


async def test_first_run_seeds_equity_from_portfolio_history(settings: Settings, db_dsn: str) -> None:
    dest = destination("Alpha", initial_deposit=Decimal(5000))
    migrate_db(settings, [dest])
    broker = ScriptedBroker(history=[(datetime(2026, 1, 5, 21, tzinfo=UTC), Decimal(5000)),
                                     (datetime(2026, 1, 6, 21, tzinfo=UTC), Decimal(4500)),
                                     (datetime(2026, 1, 7, 21, tzinfo=UTC), Decimal(5400))])
    pub = Publisher()
    running = await start_manager(settings, db_dsn, broker, dest, pub)
    try:
        async def seeded() -> bool:
            return await _count(running, f"SELECT count(*) FROM equity_full_{dest.slug} WHERE source = 'history'", 3)

        await eventually(seeded, what="history rows")
        rows = await running.rows(f"SELECT equity, net_deposits, drawdown FROM equity_full_{dest.slug} "
                                  "WHERE source = 'history' ORDER BY ts")
        assert [(r["equity"], r["net_deposits"]) for r in rows] == [
            (Decimal(5000), Decimal(5000)), (Decimal(4500), Decimal(5000)), (Decimal(5400), Decimal(5000))]
        assert [r["drawdown"] for r in rows] == pytest.approx([0.0, -0.1, 0.0])
    finally:
        running.stop.set()
        await asyncio.wait_for(running.task, 15)
        await running.conn.close()
        pub.close()


async def test_destinations_with_their_own_feeds_get_their_own_prices(settings: Settings, db_dsn: str) -> None:
    pubs = [Publisher(), Publisher()]
    dests = [destination("Alpha", price_feed=PriceFeedConfig((pubs[0].url,))),
             destination("Beta", price_feed=PriceFeedConfig((pubs[1].url,)))]
    migrate_db(settings, dests)
    conn = await asyncpg.connect(db_dsn)
    for d in dests:
        await insert_activities(conn, d.slug, [fill(1, "AAPL", "buy", "1", "100")], notify=False)
    manager = AccountManager(settings, dests, broker_factory=lambda d, s: ScriptedBroker(), market_open=always_open)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))

    def publish() -> None:
        pubs[0].publish("AAPL", "101")
        pubs[1].publish("AAPL", "202")

    async def both_marked() -> bool:
        a = await conn.fetchval("SELECT mark_price FROM open_trades_alpha WHERE symbol = 'AAPL'")
        b = await conn.fetchval("SELECT mark_price FROM open_trades_beta WHERE symbol = 'AAPL'")
        return (a, b) == (Decimal(101), Decimal(202))

    try:
        await eventually(both_marked, what="each destination marked by its own feed", tick=publish)
        assert len(manager.feeds) == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await conn.close()
        for p in pubs:
            p.close()
