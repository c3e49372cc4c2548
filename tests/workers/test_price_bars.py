"""One-minute price bars: the pure builder, the idempotent writer against a real PostgreSQL, and the
manager writing bars of every tick it receives on a real ZMQ PUB socket."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from core.destinations import Destination
from core.settings import Settings
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
from workers.bars import BarWriter, write_bars
from workers.manager import AccountManager, always_open
from workers.prices import NS_PER_MINUTE, Bar, BarBuilder, PriceFeed, encode_message

# Recent: the feed refuses ticks stamped more than PRICE_MAX_AGE_S (a day) before they arrive.
M0 = (datetime.now(UTC) - timedelta(hours=2)).replace(second=0, microsecond=0)
"""A minute start; ``at(m, s)`` is ``s`` seconds into the ``m``-th minute after it."""


def at(minute: int, second: float = 0.0) -> int:
    return int((M0 + timedelta(minutes=minute)).timestamp() * 1e9) + int(second * 1e9)


def minute(m: int) -> datetime:
    return M0 + timedelta(minutes=m)


def ohlc(bar: Bar) -> tuple[float, float, float, float, int]:
    return bar.open, bar.high, bar.low, bar.close, bar.ticks


# ----------------------------------------------------------------------------- BarBuilder (pure)

def test_bars_bucket_ticks_by_utc_minute_with_ohlc() -> None:
    b = BarBuilder()
    for price, ts in [(100.0, at(0, 0)), (103.0, at(0, 10)), (99.5, at(0, 20)), (101.0, at(0, 59.999)),
                      (101.5, at(1, 0)), (101.25, at(1, 30)), (50.0, at(0, 5))]:  # minute 0 again, late
        b.add("AAPL", price, ts)
    b.add("MSFT", 300.0, at(0, 30))

    bars = {(x.symbol, x.ts): x for x in b.take()}

    assert set(bars) == {("AAPL", minute(0)), ("AAPL", minute(1)), ("MSFT", minute(0))}
    assert all(ts.tzinfo is not None and ts.utcoffset() == timedelta(0) for _, ts in bars)
    assert ohlc(bars["AAPL", minute(0)]) == (100.0, 103.0, 50.0, 50.0, 5)  # close: the latest to arrive
    assert ohlc(bars["AAPL", minute(1)]) == (101.5, 101.5, 101.25, 101.25, 2)
    assert ohlc(bars["MSFT", minute(0)]) == (300.0, 300.0, 300.0, 300.0, 1)


def test_minute_boundaries_are_utc_epoch_minutes() -> None:
    b = BarBuilder()
    b.add("SPY", 1.0, NS_PER_MINUTE * 29_000_000 - 1)  # the last ns of a minute
    b.add("SPY", 2.0, NS_PER_MINUTE * 29_000_000)  # the first of the next

    assert sorted((x.ts, x.open) for x in b.take()) == [
        (datetime.fromtimestamp(60 * (29_000_000 - 1), tz=UTC), 1.0),
        (datetime.fromtimestamp(60 * 29_000_000, tz=UTC), 2.0)]


@pytest.mark.parametrize("price", [math.nan, math.inf, -math.inf, 0.0, -1.0, -0.0])
def test_bad_prices_are_ignored(price: float) -> None:
    b = BarBuilder()
    b.add("AAPL", 10.0, at(0, 1))

    assert b.add("AAPL", price, at(0, 2)) is False
    assert b.add("MSFT", price, at(0, 2)) is False

    (bar,) = b.take()
    assert ohlc(bar) == (10.0, 10.0, 10.0, 10.0, 1)
    assert b.ignored == 2


def test_take_returns_only_bars_touched_since_the_previous_take() -> None:
    b = BarBuilder()
    b.add("AAPL", 10.0, at(0, 1))
    b.add("MSFT", 20.0, at(0, 1))
    assert len(b.take()) == 2
    assert b.take() == []

    b.add("AAPL", 12.0, at(0, 2))
    b.add("AAPL", 11.0, at(0, 3))

    (bar,) = b.take()  # MSFT untouched: not returned; AAPL as its whole state so far
    assert (bar.symbol, bar.ts, ohlc(bar)) == ("AAPL", minute(0), (10.0, 12.0, 10.0, 11.0, 3))
    assert b.take() == []


def test_ticks_older_than_the_kept_minutes_are_dropped() -> None:
    b = BarBuilder(keep_minutes=2)
    b.add("AAPL", 10.0, at(3, 0))
    b.add("AAPL", 11.0, at(5, 0))
    b.take()

    assert b.add("AAPL", 12.0, at(3, 30)) is True  # within the margin: the kept bar grows
    assert b.add("AAPL", 9.0, at(2, 59)) is False  # older than newest - 2 minutes
    (bar,) = b.take()
    assert (bar.ts, ohlc(bar)) == (minute(3), (10.0, 12.0, 10.0, 12.0, 2))
    assert b.late == 1


def test_memory_stays_bounded_under_a_continuous_feed() -> None:
    symbols = [f"S{i:02d}" for i in range(20)]
    b = BarBuilder(keep_minutes=2)
    returned = 0
    for second in range(3 * 3600):  # three hours, one tick per symbol per second, a take every 10 s
        ts = at(0, second)
        for i, s in enumerate(symbols):
            b.add(s, 100.0 + (second + i) % 7, ts)
        if second % 10 == 9:
            returned += len(b.take())
            assert b.open_bars <= len(symbols) * 3
            assert b.pending == 0

    assert returned == len(symbols) * 3 * 60 * 6  # each minute's bar returned at each of its 6 takes
    assert b.late == 0


def test_forgotten_symbol_still_returns_its_pending_bar_then_holds_nothing() -> None:
    b = BarBuilder()
    b.add("AAPL", 10.0, at(0, 1))
    b.forget("AAPL")

    assert [x.symbol for x in b.take()] == ["AAPL"]
    assert b.open_bars == 0


def test_bar_merge_is_the_table_merge() -> None:
    first = Bar("AAPL", minute(0), 10.0, 12.0, 9.0, 11.0, 5)
    restarted = Bar("AAPL", minute(0), 11.5, 11.8, 8.5, 11.7, 2)  # a builder that started mid-minute

    assert ohlc(first.merged(restarted)) == (10.0, 12.0, 8.5, 11.7, 5)


# ----------------------------------------------------------------------------- PriceFeed -> bars

def test_price_feed_feeds_every_accepted_tick_to_its_bars() -> None:
    feed = PriceFeed(["tcp://127.0.0.1:1"], stale_after_s=5)
    try:
        feed.set_symbols({"AAPL"})
        for i in range(50):
            feed.handle(encode_message("AAPL", Decimal(100 + i % 10), at(0, i)))
        feed.handle(encode_message("TSLA", "200", at(0, 1)))  # not subscribed
        feed.handle([b"AAPL", b"garbage"])
        assert len(feed.drain()) == 1  # the consumer sees one conflated tick ...

        (bar,) = feed.bars.take()  # ... the bars saw all fifty
        assert (bar.symbol, bar.ts, ohlc(bar)) == ("AAPL", minute(0), (100.0, 109.0, 100.0, 109.0, 50))

        tick = feed.handle(encode_message("AAPL", "107.5", 0))  # no event time: the receive time
        assert tick is not None
        (bar,) = feed.bars.take()
        assert bar.ts == datetime.fromtimestamp(tick.received_wall_ns // NS_PER_MINUTE * 60, tz=UTC)

        feed.set_symbols(set())  # flat: the symbol's bar state is dropped
        assert feed.bars.open_bars == 0
    finally:
        feed.close()


# ----------------------------------------------------------------------------- BarWriter (pure)

def test_bar_writer_merges_pending_states_and_caps_them() -> None:
    w = BarWriter(max_pending=3)
    w.offer("feed", [Bar("AAPL", minute(0), 10.0, 10.0, 10.0, 10.0, 1)])
    w.offer("feed", [Bar("AAPL", minute(0), 10.0, 12.0, 9.0, 11.0, 4)])
    w.offer("other", [Bar("AAPL", minute(0), 50.0, 50.0, 50.0, 50.0, 1)])  # another feed: kept apart
    # A partial state of the same bar (a symbol forgotten and re-subscribed within the minute) merges like the table.
    w.offer("feed", [Bar("AAPL", minute(0), 11.5, 11.5, 8.0, 8.5, 2)])
    assert w.pending == 2
    assert ohlc(w._pending["feed", "AAPL", minute(0)]) == (10.0, 12.0, 8.0, 8.5, 4)

    w.offer("feed", [Bar("AAPL", minute(m), 1.0, 1.0, 1.0, 1.0, 1) for m in (1, 2)])

    assert (w.pending, w.stats.dropped, w.stats.pending) == (3, 1, 3)
    assert set(w._pending) == {("other", "AAPL", minute(0)), ("feed", "AAPL", minute(1)),
                               ("feed", "AAPL", minute(2))}  # the oldest minute went first


# ----------------------------------------------------------------------------- against PostgreSQL

@pytest.fixture
async def bars_db(settings: Settings, db_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    migrate_db(settings, [])
    conn = await asyncpg.connect(db_dsn)
    yield conn
    await conn.close()


async def stored(conn: asyncpg.Connection, symbol: str = "AAPL") -> dict[datetime, tuple[float, ...]]:
    rows = await conn.fetch("SELECT ts, open, high, low, close, ticks FROM public.price_bars WHERE symbol = $1", symbol)
    return {r["ts"]: (r["open"], r["high"], r["low"], r["close"], r["ticks"]) for r in rows}


async def test_write_bars_is_idempotent_and_merges(bars_db: asyncpg.Connection) -> None:
    first = Bar("AAPL", minute(0), 10.0, 12.0, 9.0, 11.0, 5)
    await write_bars(bars_db, [first, Bar("AAPL", minute(1), 11.0, 11.0, 11.0, 11.0, 1)])
    updated_at = await bars_db.fetchval("SELECT updated_at FROM public.price_bars WHERE ts = $1", minute(0))

    assert await write_bars(bars_db, [first]) == 1  # the same bar again
    assert (await stored(bars_db))[minute(0)] == (10.0, 12.0, 9.0, 11.0, 5)

    await write_bars(bars_db, [Bar("AAPL", minute(0), 10.0, 12.5, 9.0, 12.25, 8)])  # a fuller state
    assert (await stored(bars_db))[minute(0)] == (10.0, 12.5, 9.0, 12.25, 8)

    # A writer that saw only part of the minute (a restarted manager, another replica): the open
    # stays the first writer's, high/low widen only, close is the latest, ticks the largest count.
    await write_bars(bars_db, [Bar("AAPL", minute(0), 11.0, 12.0, 8.0, 11.5, 3)])
    assert await stored(bars_db) == {minute(0): (10.0, 12.5, 8.0, 11.5, 8), minute(1): (11.0, 11.0, 11.0, 11.0, 1)}
    assert await bars_db.fetchval("SELECT updated_at FROM public.price_bars WHERE ts = $1", minute(0)) > updated_at
    assert await write_bars(bars_db, []) == 0


async def test_bar_writer_keeps_bars_pending_across_a_database_error(bars_db: asyncpg.Connection) -> None:
    w = BarWriter()
    w.offer("feed", [Bar("AAPL", minute(0), 10.0, 12.0, 9.0, 11.0, 5)])
    await bars_db.execute("ALTER TABLE public.price_bars RENAME TO price_bars_away")

    with pytest.raises(asyncpg.UndefinedTableError):
        await w.write(bars_db)
    assert (w.pending, w.stats.failures) == (1, 1)
    assert w.stats.last_error is not None
    assert "UndefinedTable" in w.stats.last_error

    w.offer("feed", [Bar("AAPL", minute(0), 10.0, 13.0, 9.0, 12.0, 7), Bar("AAPL", minute(1), 12.0, 12.0, 12.0, 12.0, 1)])
    await bars_db.execute("ALTER TABLE public.price_bars_away RENAME TO price_bars")
    assert await w.write(bars_db) == 2

    assert await stored(bars_db) == {minute(0): (10.0, 13.0, 9.0, 12.0, 7), minute(1): (12.0, 12.0, 12.0, 12.0, 1)}
    assert (w.pending, w.stats.written) == (0, 2)
    assert await w.write(bars_db) == 0


async def test_bars_of_a_shared_feed_are_written_once(settings: Settings, db_dsn: str,
                                                      bars_db: asyncpg.Connection) -> None:
    pub = Publisher()
    dests = [destination("Alpha"), destination("Beta")]
    manager = AccountManager(settings.replace(zmq_price_endpoints=pub.url), dests,
                             broker_factory=lambda d, s: ScriptedBroker(), market_open=always_open)
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    manager.pool = pool
    try:
        feeds = {id(manager.feed_for(d)) for d in dests}
        assert len(feeds) == 1
        assert len(manager.feeds) == 1
        (feed,) = manager.feeds.values()
        feed.set_symbols({"AAPL"})
        for i in range(5):
            feed.handle(encode_message("AAPL", Decimal(10 + i), at(0, i)))

        assert await manager.write_bars_once() == 1
        assert await manager.write_bars_once() == 0
        assert await stored(bars_db) == {minute(0): (10.0, 14.0, 10.0, 14.0, 5)}
    finally:
        for t in manager.feed_tasks.values():
            t.cancel()
        await asyncio.gather(*manager.feed_tasks.values(), return_exceptions=True)
        for f in manager.feeds.values():
            f.close()
        await pool.close()
        pub.close()


# ----------------------------------------------------------------------------- the manager, end to end

@dataclass
class Live:
    manager: AccountManager
    pub: Publisher
    conn: asyncpg.Connection
    dest: Destination
    task: asyncio.Task[None]

    def send(self, price: float | str, ts_ns: int) -> None:
        self.pub.sock.send_multipart(encode_message("AAPL", price, ts_ns))

    async def subscribed(self) -> None:
        """Wait out the ZMQ slow joiner: warm-up ticks in minute -10 until the feed has taken one."""
        async def has_tick() -> bool:
            return any(f.latest("AAPL") is not None for f in self.manager.feeds.values())

        await eventually(has_tick, what="the feed subscribed to AAPL", tick=lambda: self.send("1", at(-10)))


@pytest.fixture
async def live(settings: Settings, db_dsn: str) -> AsyncIterator[Live]:
    dest = destination("Alpha")
    migrate_db(settings, [dest])
    conn = await asyncpg.connect(db_dsn)
    await insert_activities(conn, dest.slug, [cash(0, "CSD", "10000"), fill(1, "AAPL", "buy", "10", "100")],
                            notify=False)
    pub = Publisher()
    manager = AccountManager(settings.replace(zmq_price_endpoints=pub.url), [dest],
                             broker_factory=lambda d, s: ScriptedBroker(), market_open=always_open)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    yield Live(manager, pub, conn, dest, task)
    stop.set()
    await asyncio.wait_for(task, 15)
    await conn.close()
    pub.close()


async def test_manager_writes_bars_of_every_zmq_tick(live: Live) -> None:
    await live.subscribed()
    prices = [101.0 + (i % 17) * 0.5 for i in range(200)]
    prices[57], prices[140], prices[-1] = 130.0, 90.0, 111.0  # extremes mid-burst: lost if only conflated ticks counted
    for i, p in enumerate(prices):
        live.send(p, at(0, i * 0.25))

    async def bar_complete() -> bool:
        return (await stored(live.conn)).get(minute(0), (0,) * 5)[4] == 200

    await eventually(bar_complete, what="the minute-0 bar with all 200 ticks")
    assert (await stored(live.conn))[minute(0)] == (101.0, 130.0, 90.0, 111.0, 200)

    live.send(131.5, at(0, 59))  # the same minute again: the stored bar grows, its open stays

    async def grown() -> bool:
        return (await stored(live.conn))[minute(0)] == (101.0, 131.5, 90.0, 131.5, 201)

    await eventually(grown, what="the minute-0 bar updated by a later tick")
    assert minute(-10) in await stored(live.conn)  # the warm-up minute too
    assert not live.task.done()


async def test_bar_write_failure_is_retried_and_positions_still_flush(live: Live) -> None:
    await live.subscribed()
    slug = live.dest.slug
    await live.conn.execute("ALTER TABLE public.price_bars RENAME TO price_bars_away")
    for i in range(100):
        live.send(120.0 + i % 5, at(0, i * 0.5))
    live.send(125.0, at(0, 55))

    async def failing() -> bool:
        return live.manager.bar_writer.stats.failures >= 2 and live.manager.bar_writer.pending >= 1

    async def marked() -> bool:
        rows = await live.conn.fetch(f"SELECT mark_price FROM open_trades_{slug} WHERE symbol = 'AAPL'")
        return bool(rows) and rows[0]["mark_price"] == Decimal(125)

    await eventually(failing, what="bar writes failing (retried)")
    await eventually(marked, what="positions still re-valued while bars fail")
    assert not live.task.done()

    await live.conn.execute("ALTER TABLE public.price_bars_away RENAME TO price_bars")

    async def written() -> bool:
        return (await stored(live.conn)).get(minute(0)) == (120.0, 125.0, 120.0, 125.0, 101)

    await eventually(written, what="the pending bar written once the table is back")
    assert live.manager.bar_writer.pending == 0
