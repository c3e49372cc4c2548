"""ZMQ price client against real PUB sockets on loopback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import msgpack
import pytest
import zmq
import zmq.asyncio

from workers.prices import MalformedMessage, PriceFeed, encode_message, parse_message


async def eventually(cond: Callable[[], bool], *, what: str, timeout_s: float = 10.0,
                     tick: Callable[[], object] | None = None) -> None:
    """Poll ``cond`` (calling ``tick`` each round, e.g. to re-publish past the slow-joiner window)."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        if tick is not None:
            tick()
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("frames", "symbol", "price"),
    [
        (encode_message("AAPL", "187.25", 1), "AAPL", Decimal("187.25")),
        ([b"MSFT", json.dumps({"symbol": "MSFT", "price": 411.5, "ts_ns": 5}).encode()], "MSFT", Decimal("411.5")),
        ([b"SPY", msgpack.packb({"v": 1, "symbol": "SPY", "price": "500.01", "bid": "500", "ask": "500.02",
                                 "ts_ns": 7})], "SPY", Decimal("500.01")),
    ],
)
def test_parse_accepts_json_and_msgpack(frames: list[bytes], symbol: str, price: Decimal) -> None:
    tick = parse_message(frames)
    assert (tick.symbol, tick.price) == (symbol, price)


@pytest.mark.parametrize(
    "frames",
    [
        [b"AAPL"],
        [b"AAPL", b"{}", b"extra"],
        [b"AAPL", b"{not json"],
        [b"AAPL", b"\xc1\xc1"],
        [b"AAPL", json.dumps([1, 2]).encode()],
        [b"AAPL", json.dumps({"symbol": "AAPL"}).encode()],
        [b"AAPL", json.dumps({"symbol": "AAPL", "price": "abc"}).encode()],
        [b"AAPL", json.dumps({"symbol": "AAPL", "price": "NaN"}).encode()],
        [b"AAPL", json.dumps({"symbol": "AAPL", "price": -1}).encode()],
        [b"AAPL", json.dumps({"symbol": "MSFT", "price": 1}).encode()],
        [b"AAPL", json.dumps({"v": 99, "symbol": "AAPL", "price": 1}).encode()],
        [b"AAPL", json.dumps({"symbol": "AAPL", "price": 1, "ts_ns": "soon"}).encode()],
        [b"\xff\xfe", json.dumps({"price": 1}).encode()],
    ],
)
def test_parse_refuses_malformed(frames: list[bytes]) -> None:
    with pytest.raises(MalformedMessage):
        parse_message(frames)


def test_conflation_keeps_latest_per_symbol_and_counts() -> None:
    feed = PriceFeed(["tcp://127.0.0.1:1"], stale_after_s=5)
    try:
        feed.set_symbols({"AAPL", "MSFT"})
        for i in range(50):
            feed.handle(encode_message("AAPL", Decimal(100 + i), i))
        feed.handle(encode_message("MSFT", "300", 1))
        feed.handle(encode_message("TSLA", "200", 1))
        feed.handle([b"AAPL", b"garbage"])

        batch = feed.drain()

        assert {s: t.price for s, t in batch.items()} == {"AAPL": Decimal(149), "MSFT": Decimal(300)}
        assert (feed.stats.received, feed.stats.conflated, feed.stats.unsubscribed, feed.stats.malformed) == (51, 49, 1, 1)
        assert feed.drain() == {}
    finally:
        feed.close()


def test_staleness_is_per_symbol() -> None:
    feed = PriceFeed(["tcp://127.0.0.1:1"], stale_after_s=2)
    try:
        feed.set_symbols({"AAPL", "MSFT"})
        tick = feed.handle(encode_message("AAPL", "1", 1))
        assert tick is not None
        t0 = tick.received_mono_ns

        assert not feed.is_stale("AAPL", t0 + 1_900_000_000)
        assert feed.is_stale("AAPL", t0 + 2_100_000_000)
        assert feed.is_stale("MSFT", t0)  # never priced
    finally:
        feed.close()


def test_unsubscribe_forgets_prices() -> None:
    feed = PriceFeed(["tcp://127.0.0.1:1"], stale_after_s=2)
    try:
        feed.set_symbols({"AAPL"})
        feed.handle(encode_message("AAPL", "1", 1))
        feed.set_symbols(set())

        assert feed.latest("AAPL") is None
        assert feed.drain() == {}
    finally:
        feed.close()


@pytest.fixture
async def publishers() -> AsyncIterator[tuple[list[str], list[zmq.asyncio.Socket]]]:
    ctx = zmq.asyncio.Context()
    socks, urls = [], []
    for _ in range(2):
        sock = ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.LINGER, 0)
        port = sock.bind_to_random_port("tcp://127.0.0.1")
        socks.append(sock)
        urls.append(f"tcp://127.0.0.1:{port}")
    yield urls, socks
    for sock in socks:
        sock.close(linger=0)
    ctx.term()


async def test_live_subscribes_only_to_held_symbols_across_endpoints(
    publishers: tuple[list[str], list[zmq.asyncio.Socket]],
) -> None:
    urls, socks = publishers
    feed = PriceFeed(urls, stale_after_s=5)
    feed.set_symbols({"AAPL"})
    task = asyncio.create_task(feed.run())
    seen: dict[str, Decimal] = {}

    def publish() -> None:
        socks[0].send_multipart(encode_message("AAPL", "10", 1))
        socks[0].send_multipart(encode_message("AAPLX", "11", 1))  # prefix match, not ours
        socks[1].send_multipart(encode_message("MSFT", "20", 1))  # filtered by ZMQ
        socks[1].send_multipart([b"AAPL", b"\x00garbage"])

    def got_aapl() -> bool:
        seen.update({s: t.price for s, t in feed.drain().items()})
        return "AAPL" in seen and feed.stats.malformed > 0

    try:
        await eventually(got_aapl, what="AAPL tick and a malformed one", tick=publish)
        feed.set_symbols({"AAPL", "MSFT"})  # subscribe on the fly; endpoint 2 delivers it
        await eventually(lambda: bool(seen.update({s: t.price for s, t in feed.drain().items()})) or "MSFT" in seen,
                         what="MSFT after subscribing", tick=publish)

        assert set(seen) == {"AAPL", "MSFT"}
        assert feed.stats.unsubscribed > 0  # AAPLX reached the socket but was not taken
        assert not task.done()  # malformed messages did not kill the loop
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        feed.close()


async def test_live_burst_is_conflated_to_the_last_price(
    publishers: tuple[list[str], list[zmq.asyncio.Socket]],
) -> None:
    urls, socks = publishers
    feed = PriceFeed(urls[:1], stale_after_s=5)
    feed.set_symbols({"SPY"})
    task = asyncio.create_task(feed.run())
    try:
        await eventually(lambda: feed.latest("SPY") is not None, what="first SPY tick",
                         tick=lambda: socks[0].send_multipart(encode_message("SPY", "1", 1)))
        feed.drain()
        received_before = feed.stats.received
        for i in range(1, 501):
            await socks[0].send_multipart(encode_message("SPY", Decimal(i), i))

        await eventually(lambda: (t := feed.latest("SPY")) is not None and t.price == 500, what="last burst tick")
        batch = feed.drain()

        assert batch["SPY"].price == Decimal(500)
        assert feed.stats.received - received_before == 500  # nothing lost over loopback (HWM 100k)
        assert feed.stats.conflated >= 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        feed.close()


def test_last_tick_age_tracks_the_newest_subscribed_tick() -> None:
    import time as _time

    from workers.prices import PriceFeed, encode_message

    feed = PriceFeed(["tcp://127.0.0.1:1"], stale_after_s=5)
    feed.set_symbols(["AAPL"])
    assert feed.last_tick_age_s() is None
    feed.handle(encode_message("MSFT", "10", 1))  # not subscribed: not a sign of life for us
    assert feed.last_tick_age_s() is None
    feed.handle(encode_message("AAPL", "10", 1))
    age = feed.last_tick_age_s(_time.monotonic_ns() + 2_000_000_000)
    assert age is not None
    assert 1.9 < age < 60
    feed.close()
