"""Hostile and broken input never stops the manager (issue 14): a real database, real ZMQ, a scripted broker.

Each test here fails on the manager before the hardening: the tick routing raised on a huge ``ts_ns``,
loops died silently, unstorable values were written, and positions loaded from a checkpoint never
subscribed the feed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from core.settings import Settings
from core.storable import MAX_ABS_STORED
from tests.workers.test_manager import Running, start_manager
from tests.workers.test_manager_support import (
    Publisher,
    ScriptedBroker,
    cash,
    destination,
    eventually,
    fill,
    insert_activities,
    migrate_db,
)
from workers.manager import AccountManager, always_open
from workers.prices import PriceTick

NS_2100 = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000_000


def _body(**fields: object) -> bytes:
    return json.dumps({"v": 1, "symbol": "AAPL", **fields}, separators=(",", ":")).encode()


def hostile_messages() -> dict[str, list[bytes]]:
    """One message per high finding of issue 14 (each once broke or poisoned the manager)."""
    now_ns = time.time_ns()
    nested = b'{"v":1,"symbol":"AAPL","price":' + b"[" * 100_000 + b"]" * 100_000 + b"}"  # ~200 KB
    return {
        "huge ts_ns": [b"AAPL", _body(price=150, ts_ns=3 * 10**20)],
        "deeply nested JSON": [b"AAPL", nested],
        "price 1.7e308": [b"AAPL", b'{"v":1,"symbol":"AAPL","price":1.7e308,"ts_ns":%d}' % now_ns],
        "price 1e-30": [b"AAPL", b'{"v":1,"symbol":"AAPL","price":1e-30,"ts_ns":%d}' % now_ns],
        "price 1e100": [b"AAPL", b'{"v":1,"symbol":"AAPL","price":1e100,"ts_ns":%d}' % now_ns],
        "string price": [b"AAPL", _body(price="151", ts_ns=now_ns)],
        "stamped in 2100": [b"AAPL", _body(price=152, ts_ns=NS_2100)],
    }


@pytest.fixture
async def holding(settings: Settings, db_dsn: str) -> AsyncIterator[Running]:
    dest = destination("Alpha")
    migrate_db(settings, [dest])
    conn = await asyncpg.connect(db_dsn)
    await insert_activities(conn, dest.slug, [cash(0, "CSD", "10000"), fill(1, "AAPL", "buy", "10", "100")],
                            notify=False)
    await conn.close()
    pub = Publisher()
    running = await start_manager(settings, db_dsn, ScriptedBroker(), dest, pub)
    yield running
    running.stop.set()
    await asyncio.wait_for(running.task, 20)
    await running.conn.close()
    pub.close()


async def _marked(world: Running, price: Decimal) -> bool:
    row = await world.conn.fetchrow(f"SELECT mark_price, price_source FROM open_trades_{world.dest.slug} "
                                    "WHERE symbol = 'AAPL'")
    return row is not None and row["mark_price"] == price and row["price_source"] == "zmq"


async def _snapshots(world: Running) -> int:
    return int(await world.conn.fetchval(f"SELECT count(*) FROM equity_full_{world.dest.slug}"))


async def test_hostile_price_messages_never_stop_positions_and_equity(holding: Running) -> None:
    world = holding
    await eventually(lambda: _marked(world, Decimal(100)), what="the first mark",
                     tick=lambda: world.pub.publish("AAPL", "100"))

    for n, (finding, frames) in enumerate(hostile_messages().items(), start=1):
        good = Decimal(100) + Decimal(n) / 10  # inside the feed's sanity band

        before = await _snapshots(world)
        world.pub.send_raw(frames)
        await eventually(lambda p=good: _marked(world, p), what=f"a good tick written after: {finding}",
                         tick=lambda p=good: world.pub.publish("AAPL", p))
        await eventually(lambda b=before: _at_least(_snapshots(world), b + 1), what=f"a snapshot after: {finding}")

    (runner,) = world.manager.runners.values()
    marks = await world.conn.fetchrow(f"SELECT min(mark_price) AS lo, max(mark_price) AS hi, max(mark_ts) AS ts "
                                      f"FROM open_trades_{world.dest.slug}")
    equity = await world.conn.fetchval(f"SELECT max(abs(equity)) FROM equity_full_{world.dest.slug}")
    bars = await world.conn.fetchrow("SELECT max(ts) AS newest, max(high) AS high FROM price_bars")
    heartbeat = await _heartbeat(world)
    assert (marks["lo"], marks["hi"]) == (Decimal("100.7"), Decimal("100.7"))
    assert marks["ts"] < datetime(2100, 1, 1, tzinfo=UTC)
    assert equity < Decimal(20_000)
    assert bars["newest"] < datetime(2100, 1, 1, tzinfo=UTC)
    assert bars["high"] < 1_000
    assert runner.stats.errors == 0
    assert world.manager.loop_restarts == 0
    assert runner.feed is not None
    assert runner.feed.stats.malformed >= len(hostile_messages())
    assert heartbeat is not None
    assert heartbeat["state"] == "running"


async def test_a_tick_stamped_far_beyond_datetime_is_routed_without_raising(holding: Running) -> None:
    world = holding
    await eventually(lambda: _true(bool(world.manager.runners) and all(r.ready for r in world.manager.runners.values())),
                     what="a ready runner")
    (runner,) = world.manager.runners.values()
    now_ns = time.time_ns()

    # Straight to the router, past any parser: the manager itself must cope with any stamp.
    runner.on_tick(PriceTick("AAPL", Decimal(101), 3 * 10**20, time.monotonic_ns(), now_ns))

    mark = runner.marks["AAPL"]
    assert mark.price == Decimal(101)
    assert mark.ts is not None
    assert abs(mark.ts.timestamp() - now_ns / 1e9) < 1


async def test_unstorable_values_are_refused_and_counted_never_stored(holding: Running) -> None:
    world = holding
    slug = world.dest.slug
    await eventually(lambda: _marked(world, Decimal(100)), what="the first mark",
                     tick=lambda: world.pub.publish("AAPL", "100"))
    (runner,) = world.manager.runners.values()

    # A broker row with a price no instrument has: the book holds it, nothing may store it.
    await insert_activities(world.conn, slug, [fill(2, "BIG", "buy", "1", "1e100")])

    await eventually(lambda: _true(runner.stats.values_refused > 0 and "BIG" in runner.positions),
                     what="the unstorable position refused")
    await eventually(lambda: _marked(world, Decimal("100.5")), what="the other position still written",
                     tick=lambda: world.pub.publish("AAPL", "100.5"))
    big = await world.conn.fetchval(f"SELECT count(*) FROM open_trades_{slug} WHERE symbol = 'BIG'")
    huge = await world.conn.fetchval(f"SELECT count(*) FROM equity_full_{slug} WHERE abs(equity) > $1 "
                                     "OR abs(cash) > $1", MAX_ABS_STORED)
    assert (big, huge) == (0, 0)
    assert "unstorable value refused" in (runner.stats.last_error or "")


async def test_positions_from_a_checkpoint_subscribe_the_feed(settings: Settings, db_dsn: str) -> None:
    dest = destination("Alpha")
    migrate_db(settings, [dest])
    conn = await asyncpg.connect(db_dsn)
    pub = Publisher()
    try:
        await insert_activities(conn, dest.slug, [cash(0, "CSD", "1000"), fill(1, "AAPL", "buy", "2", "100")],
                                notify=False)
        broker = ScriptedBroker(positions={"AAPL": (Decimal(2), None, None)})  # agrees, and offers no price
        first = await start_manager(settings, db_dsn, broker, dest, pub)
        await eventually(lambda: _marked(first, Decimal(100)), what="first run marked",
                         tick=lambda: pub.publish("AAPL", "100"))
        first.stop.set()
        await asyncio.wait_for(first.task, 15)
        await first.conn.close()
        assert await conn.fetchval("SELECT fill_count FROM ch_fifo_state WHERE slug = $1", dest.slug) == 1

        # Act: a restart with nothing new to read; only the checkpoint knows AAPL is held.
        second = await start_manager(settings, db_dsn, broker, dest, pub)
        try:
            await eventually(lambda: _marked(second, Decimal(104)), what="the restarted manager marked by ZMQ",
                             tick=lambda: pub.publish("AAPL", "104"))
            (runner,) = second.manager.runners.values()
            assert runner.feed is not None
            assert "AAPL" in runner.feed.symbols
            assert runner.stats.fills_applied == 0  # nothing was re-read: the checkpoint held the position
        finally:
            second.stop.set()
            await asyncio.wait_for(second.task, 15)
            await second.conn.close()
    finally:
        await conn.close()
        pub.close()


async def test_a_flush_that_makes_no_progress_turns_the_heartbeat_red(holding: Running) -> None:
    world = holding
    slug = world.dest.slug
    await eventually(lambda: _marked(world, Decimal(100)), what="the first mark",
                     tick=lambda: world.pub.publish("AAPL", "100"))

    # Every open-trades write now fails; the loops stay alive but make no progress.
    await world.conn.execute(f"DROP TABLE open_trades_{slug}")

    async def red() -> bool:
        row = await _heartbeat(world)
        return row is not None and row["state"] == "stalled"

    await eventually(red, what="a stalled heartbeat", tick=lambda: world.pub.publish("AAPL", "101"), timeout_s=30)
    row = await _heartbeat(world)
    assert row is not None
    assert row["last_error"].startswith("stalled: flush: no progress")


async def test_a_loop_that_dies_of_a_bug_is_restarted_with_backoff(settings: Settings) -> None:
    manager = AccountManager(settings, [], market_open=always_open)
    calls: list[int] = []
    stop = asyncio.Event()

    async def step() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("a bug in one pass")
        if len(calls) >= 3:
            stop.set()

    await asyncio.wait_for(manager._keep_running("test", step, 0.01, stop), 20)

    assert len(calls) == 3
    assert manager.loop_restarts == 1
    assert manager.loops["test"].failures == 1
    assert manager.loops["test"].last_error == "RuntimeError: a bug in one pass"


async def test_a_bug_in_one_destination_loop_restarts_that_loop_only(holding: Running) -> None:
    world = holding
    await eventually(lambda: _marked(world, Decimal(100)), what="the first mark",
                     tick=lambda: world.pub.publish("AAPL", "100"))
    (runner,) = world.manager.runners.values()

    world.broker.bug = True  # every reconciliation pass now dies of a bug

    await eventually(lambda: _true(runner.loops["reconcile"].failures >= 2), what="the reconcile loop restarted",
                     timeout_s=30)
    await eventually(lambda: _marked(world, Decimal("100.2")), what="positions still written",
                     tick=lambda: world.pub.publish("AAPL", "100.2"))
    assert next(iter(world.manager.runners.values())) is runner  # the runner itself never stopped
    assert runner.stats.last_error is not None
    assert "RuntimeError: a bug behind the broker port" in runner.stats.last_error


async def _heartbeat(world: Running) -> asyncpg.Record | None:
    return await world.conn.fetchrow("SELECT state, last_error, errors FROM account_activities.heartbeats "
                                     "WHERE destination = $1 AND service = 'manager'", world.dest.slug)


async def _at_least(value: object, n: int) -> bool:
    got = await value  # type: ignore[misc]
    return int(got) >= n


async def _true(value: bool) -> bool:
    return value
