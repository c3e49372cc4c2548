"""ZMQ price client against real PUB sockets on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest
import zmq
import zmq.asyncio
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from core.settings import Settings
from workers.prices import PriceFeed, encode_message, feed_limits


def now_ns() -> int:
    return time.time_ns()


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


def test_conflation_keeps_latest_per_symbol_and_counts() -> None:
    feed = PriceFeed(["tcp://127.0.0.1:1"], stale_after_s=5)
    try:
        feed.set_symbols({"AAPL", "MSFT"})
        for i in range(50):
            feed.handle(encode_message("AAPL", Decimal(100 + i), now_ns()))
        feed.handle(encode_message("MSFT", "300", now_ns()))
        feed.handle(encode_message("TSLA", "200", now_ns()))
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
        tick = feed.handle(encode_message("AAPL", "1", now_ns()))
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
        feed.handle(encode_message("AAPL", "1", now_ns()))
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
        socks[0].send_multipart(encode_message("AAPL", "10", now_ns()))
        socks[0].send_multipart(encode_message("AAPLX", "11", now_ns()))  # prefix match, not ours
        socks[1].send_multipart(encode_message("MSFT", "20", now_ns()))  # filtered by ZMQ
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
                         tick=lambda: socks[0].send_multipart(encode_message("SPY", "100", now_ns())))
        feed.drain()
        received_before = feed.stats.received
        for i in range(1, 501):
            await socks[0].send_multipart(encode_message("SPY", Decimal(100) + Decimal(i) / 10, now_ns()))

        await eventually(lambda: (t := feed.latest("SPY")) is not None and t.price == 150, what="last burst tick")
        batch = feed.drain()

        assert batch["SPY"].price == Decimal(150)
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
    feed.handle(encode_message("MSFT", "10", now_ns()))  # not subscribed: not a sign of life for us
    assert feed.last_tick_age_s() is None
    feed.handle(encode_message("AAPL", "10", now_ns()))
    age = feed.last_tick_age_s(_time.monotonic_ns() + 2_000_000_000)
    assert age is not None
    assert 1.9 < age < 60
    feed.close()


async def test_hostile_messages_over_zmq_are_counted_and_the_feed_keeps_valuing(
    publishers: tuple[list[str], list[zmq.asyncio.Socket]],
) -> None:
    """Each high finding's message, sent over a real socket: rejected or held, counted, and the next good tick still lands."""
    urls, socks = publishers
    feed = PriceFeed(urls[:1], stale_after_s=5)
    feed.set_symbols({"AAPL"})
    task = asyncio.create_task(feed.run())
    pub = socks[0]
    try:
        await eventually(lambda: feed.latest("AAPL") is not None, what="first AAPL tick",
                         tick=lambda: pub.send_multipart(encode_message("AAPL", "100", now_ns())))
        hostile = [
            [b"AAPL", b'{"price":1,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"],  # ~200 KB nested
            encode_message("AAPL", "100", 3 * 10**20),  # a unit mix-up
            encode_message("AAPL", "100", 4_102_444_800 * 10**9),  # stamped in 2100
            [b"AAPL", b'{"v":1,"symbol":"AAPL","price":"101","ts_ns":0}'],  # a string price
            encode_message("AAPL", "1.7e308", now_ns()),
            encode_message("AAPL", "1e-30", now_ns()),
            encode_message("AAPL", "1000", now_ns()),  # 10x the last good price: suspect
        ]
        for frames in hostile:
            await pub.send_multipart(frames)
        await pub.send_multipart(encode_message("AAPL", "101", now_ns()))

        await eventually(lambda: (t := feed.latest("AAPL")) is not None and t.price == 101, what="the good tick after")

        assert not task.done()
        assert feed.stats.rejected == {"oversized": 1, "timestamp": 2, "schema": 1, "price": 2}
        assert (feed.stats.suspect, feed.stats.suspect_discarded, feed.stats.errors) == (1, 1, 0)
        assert feed.stats.last_rejection is not None
        assert feed.bars.take()[-1].high == 101.0  # nothing hostile reached the bars
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        feed.close()


def test_a_suspect_is_shown_in_stats_until_confirmed() -> None:
    feed = PriceFeed(["tcp://127.0.0.1:1"], stale_after_s=5)
    try:
        feed.set_symbols({"AAPL"})
        feed.handle(encode_message("AAPL", "100", now_ns()))
        feed.drain()

        assert feed.handle(encode_message("AAPL", "250", now_ns())) is None
        assert feed.stats.suspects == {"AAPL": "250"}
        assert feed.latest("AAPL").price == 100  # type: ignore[union-attr]  # the mark keeps the last good price
        assert feed.drain() == {}

        feed.handle(encode_message("AAPL", "251", now_ns()))
        confirmed = feed.handle(encode_message("AAPL", "252", now_ns()))

        assert confirmed is not None
        assert confirmed.price == 252
        assert feed.stats.suspects == {}
        assert (feed.stats.suspect, feed.stats.suspect_confirmed) == (3, 3)
        assert feed.drain()["AAPL"].price == 252
        (bar,) = feed.bars.take()
        assert (bar.open, bar.high, bar.close, bar.ticks) == (100.0, 252.0, 252.0, 4)
    finally:
        feed.close()


def test_band_and_window_follow_the_settings(settings: Settings) -> None:
    feed = PriceFeed(["tcp://127.0.0.1:1"], stale_after_s=5,
                     limits=feed_limits(settings.replace(price_band_pct=5.0, price_confirm_ticks=1, price_max_lead_s=0.0)))
    try:
        feed.set_symbols({"AAPL"})
        feed.handle(encode_message("AAPL", "100", now_ns()))
        feed.handle(encode_message("AAPL", "106", now_ns()))  # outside 5 %, confirmed at once (1 tick)
        feed.handle(encode_message("AAPL", "106", now_ns() + 5 * 10**9))  # 5 s ahead: no lead allowed

        assert (feed.stats.suspect, feed.stats.suspect_confirmed, feed.stats.rejected) == (1, 1, {"timestamp": 1})
    finally:
        feed.close()


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.binary(max_size=200), max_size=3), max_size=20))
def test_handle_never_raises_and_accounts_for_every_message(batch: list[list[bytes]]) -> None:
    feed = PriceFeed(["tcp://127.0.0.1:1"], stale_after_s=5)
    try:
        feed.set_symbols({"AAPL"})
        for frames in batch:
            feed.handle(frames)

        s = feed.stats
        assert s.errors == 0
        assert s.received + s.malformed + s.unsubscribed == len(batch)
    finally:
        feed.close()
