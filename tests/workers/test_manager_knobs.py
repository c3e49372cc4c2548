"""Each timing knob takes effect: a fast and a slow manager run side by side over the same window.

Nothing is timed: the test waits (bounded) until the fast side has done something several times,
then checks the slow side, whose interval is far longer than the whole window, has not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from core.destinations import Destination, pos_channel
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
    migrate_db,
)
from workers.manager import AccountManager, DestinationRunner, always_open

SLOW = 60.0


@dataclass
class Side:
    dest: Destination
    broker: ScriptedBroker
    manager: AccountManager

    @property
    def runner(self) -> DestinationRunner:
        (runner,) = self.manager.runners.values()
        return runner


@dataclass
class Pair:
    fast: Side
    slow: Side
    pub: Publisher
    conn: asyncpg.Connection
    db_dsn: str
    started_mono: float
    """When the managers were started (monotonic s)."""


async def _pair(settings: Settings, db_dsn: str, knob: str, fast: float, extra: dict[str, Any]) -> AsyncIterator[Pair]:
    dests = [destination("Fast"), destination("Slow")]
    migrate_db(settings, dests)
    conn = await asyncpg.connect(db_dsn)
    for d in dests:
        await insert_activities(conn, d.slug, [cash(0, "CSD", "1000"), fill(1, "AAPL", "buy", "2", "100")],
                                notify=False)
    pub = Publisher()
    base = settings.replace(zmq_price_endpoints=pub.url, closed_sync_sec=SLOW, equity_update_interval_s=SLOW,
                            heartbeat_sec=SLOW, ui_snapshot_sec=0.05, snapshot_sec=SLOW, flush_interval_s=0.05)
    base = base.replace(**extra)
    sides = []
    for d, value in zip(dests, (fast, SLOW), strict=True):
        broker = ScriptedBroker(positions={"AAPL": (Decimal(2), Decimal(100), Decimal(99))}, cash=Decimal(800))
        manager = AccountManager(base.replace(**{knob: value}), [d], broker_factory=lambda _d, _s, b=broker: b,
                                 market_open=always_open)
        sides.append(Side(d, broker, manager))
    stop = asyncio.Event()
    started_mono = time.monotonic()
    tasks = [asyncio.create_task(s.manager.run(stop)) for s in sides]

    async def both_ready() -> bool:
        return all(s.manager.runners and s.runner.ready for s in sides)

    await eventually(both_ready, what="both managers ready")
    try:
        yield Pair(sides[0], sides[1], pub, conn, db_dsn, started_mono)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
        await conn.close()
        pub.close()


@pytest.fixture
async def pair(request: pytest.FixtureRequest, settings: Settings, db_dsn: str) -> AsyncIterator[Pair]:
    knob, fast, *extra = request.param
    async for p in _pair(settings, db_dsn, knob, fast, extra[0] if extra else {}):
        yield p


def _ticker(pair: Pair) -> Any:
    prices = iter(range(100_000))
    return lambda: pair.pub.publish("AAPL", Decimal(100) + Decimal(next(prices) % 50) / 10)


@pytest.mark.parametrize("pair", [("heartbeat_sec", 0.1)], indirect=True)
async def test_heartbeat_sec(pair: Pair) -> None:
    await eventually(lambda: _at_least(pair.fast.runner.stats.heartbeats, 6), what="fast heartbeats")
    assert pair.slow.runner.stats.heartbeats <= 2  # the one at start (+ the first loop pass)


@pytest.mark.parametrize("pair", [("snapshot_sec", 0.2)], indirect=True)
async def test_snapshot_sec(pair: Pair) -> None:
    async def rows() -> list[Any]:
        return [r["ts"] for r in await pair.conn.fetch(f"SELECT ts FROM equity_full_{pair.fast.dest.slug} ORDER BY ts")]

    await eventually(lambda: _rows_at_least(pair, pair.fast.dest, 6), what="fast snapshots")
    fast = await rows()
    slow_count = await pair.conn.fetchval(f"SELECT count(*) FROM equity_full_{pair.slow.dest.slug}")
    steps = {(b - a).total_seconds() for a, b in zip(fast, fast[1:], strict=False)}
    assert steps == {0.2}
    assert slow_count <= 2


@pytest.mark.parametrize("pair", [("ui_snapshot_sec", 0.05)], indirect=True)
async def test_ui_snapshot_sec(pair: Pair) -> None:
    listener = await Listener().start(pair.db_dsn, pos_channel(pair.fast.dest.slug), pos_channel(pair.slow.dest.slug))
    try:
        await eventually(lambda: _at_least(len(listener.received[pos_channel(pair.fast.dest.slug)]), 8),
                         what="fast position NOTIFYs", tick=_ticker(pair), every_s=0.03)
        # the fast side's window (a fifth of UI_SNAPSHOT_SEC) can fill before the slow side has
        # written 8 times: keep ticking until it has
        await eventually(lambda: _at_least(pair.slow.runner.stats.pos_writes, 8), what="slow writes",
                         tick=_ticker(pair), every_s=0.03, timeout_s=90.0)  # a liveness bound: a loaded host is slow
        slow = listener.received[pos_channel(pair.slow.dest.slug)]
        assert len(slow) <= 1  # the leading edge only
        assert pair.slow.runner.stats.pos_writes >= 8  # rows kept moving; only the NOTIFYs were held back
    finally:
        await listener.close()


# The NOTIFY window is kept shut on both sides so that only the periodic flush writes rows (a tick
# arriving with the window open is written at once: the leading edge, covered by the UI test).
@pytest.mark.parametrize("pair", [("flush_interval_s", 0.05, {"ui_snapshot_sec": SLOW})], indirect=True)
async def test_flush_interval_s(pair: Pair) -> None:
    await eventually(lambda: _at_least(pair.fast.runner.stats.pos_writes, 10), what="fast flushes",
                     tick=_ticker(pair), every_s=0.03)
    await eventually(lambda: _at_least(pair.slow.runner.stats.price_ticks, 10), what="ticks on the slow side too",
                     tick=_ticker(pair), every_s=0.03)
    assert pair.slow.runner.stats.pos_writes <= 3  # the start, at most one leading edge, nothing periodic


@pytest.mark.parametrize("pair", [("closed_sync_sec", 0.2)], indirect=True)
async def test_closed_sync_sec(pair: Pair) -> None:
    for side in (pair.fast, pair.slow):  # no NOTIFY: only the poll can find these
        await insert_activities(pair.conn, side.dest.slug, [fill(2, "AAPL", "sell", "2", "110")], notify=False)

    async def fast_closed() -> bool:
        return bool(await pair.conn.fetchval(f"SELECT count(*) FROM closed_trades_{pair.fast.dest.slug}"))

    await eventually(fast_closed, what="the fast poll to find the closing fill")
    await eventually(lambda: _at_least(pair.fast.broker.calls["positions"], 4), what="fast reconciliations")
    assert await pair.conn.fetchval(f"SELECT count(*) FROM closed_trades_{pair.slow.dest.slug}") == 0
    # one reconciliation at the start, and one per SLOW seconds the test took (a loaded host may take that long)
    assert pair.slow.broker.calls["positions"] <= 1 + int((time.monotonic() - pair.started_mono) // SLOW)


@pytest.mark.parametrize("pair", [("equity_update_interval_s", 0.1)], indirect=True)
async def test_equity_update_interval_s(pair: Pair) -> None:
    await eventually(lambda: _at_least(pair.fast.broker.calls["account"], 6), what="fast account reads")
    assert pair.slow.broker.calls["account"] <= 1


async def _at_least(value: int, n: int) -> bool:
    return value >= n


async def _rows_at_least(pair: Pair, dest: Destination, n: int) -> bool:
    return int(await pair.conn.fetchval(f"SELECT count(*) FROM equity_full_{dest.slug}")) >= n
