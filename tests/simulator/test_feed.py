"""ZMQ price feed: the wire contract and live ticks from the simulator."""

from __future__ import annotations

import time

import pytest
import zmq

from simulator.feed import Tick, decode_tick, encode_tick


def test_encode_decode_round_trip_and_version_check():
    tick = Tick("AAPL", 190.12, 190.11, 190.13, 300, 1_700_000_000_123_456_789)
    topic, body = encode_tick(tick)
    assert topic == b"AAPL"
    assert body.startswith(b'{"v":1,"symbol":"AAPL","price":190.12,')
    assert decode_tick(topic, body) == tick
    with pytest.raises(ValueError, match="version"):
        decode_tick(b"AAPL", body.replace(b'"v":1', b'"v":2'))
    with pytest.raises(ValueError, match="topic"):
        decode_tick(b"MSFT", body)


def test_simulator_publishes_ticks_for_subscribed_symbols(sim):
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVTIMEO, 5000)
    sub.connect(sim.zmq_url)
    sub.setsockopt(zmq.SUBSCRIBE, b"MSFT")
    sub.setsockopt(zmq.SUBSCRIBE, b"SPY")
    try:
        seen: dict[str, Tick] = {}
        deadline = time.monotonic() + 15
        while len(seen) < 2 and time.monotonic() < deadline:
            topic, body = sub.recv_multipart()
            tick = decode_tick(topic, body)
            seen[tick.symbol] = tick
    finally:
        sub.close()
    assert set(seen) == {"MSFT", "SPY"}
    t = seen["SPY"]
    assert t.bid < t.ask
    assert t.bid <= t.price <= t.ask
    assert t.size > 0
    assert abs(t.ts_ns / 1e9 - time.time()) < 300
    prices = sim.admin("/state")["prices"]
    assert set(prices) >= {"MSFT", "SPY"}
