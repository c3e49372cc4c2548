"""ZMQ price feed: the wire contract (see docs/price_feed.md) and the simulator's publisher.

Each tick is one two-frame message on a PUB socket:

* frame 1, the topic: the symbol as ASCII bytes (``b"AAPL"``), so subscribers filter by prefix;
* frame 2, the body: compact UTF-8 JSON ``{"v": 1, "symbol", "price", "bid", "ask", "size", "ts_ns"}``
  with prices as JSON numbers, ``size`` an integer and ``ts_ns`` the exchange timestamp in
  nanoseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import zmq

FEED_VERSION = 1
DEFAULT_ZMQ_URL = "tcp://127.0.0.1:5556"


@dataclass(frozen=True, slots=True)
class Tick:
    symbol: str
    price: float
    bid: float
    ask: float
    size: int
    ts_ns: int


def encode_tick(tick: Tick) -> tuple[bytes, bytes]:
    """Both frames of one tick."""
    body = (
        f'{{"v":{FEED_VERSION},"symbol":"{tick.symbol}","price":{tick.price!r},"bid":{tick.bid!r},'
        f'"ask":{tick.ask!r},"size":{tick.size},"ts_ns":{tick.ts_ns}}}'
    )
    return tick.symbol.encode("ascii"), body.encode()


def decode_tick(topic: bytes, body: bytes) -> Tick:
    """Parse one message; raises ``ValueError`` on an unknown version or a malformed body."""
    data: dict[str, Any] = json.loads(body)
    if data.get("v") != FEED_VERSION:
        raise ValueError(f"unsupported price feed version {data.get('v')!r}")
    symbol = str(data["symbol"])
    if topic and topic.decode("ascii") != symbol:
        raise ValueError(f"topic {topic!r} does not match symbol {symbol!r}")
    return Tick(symbol, float(data["price"]), float(data["bid"]), float(data["ask"]), int(data["size"]), int(data["ts_ns"]))


class Publisher:
    """Non-blocking PUB socket; a slow subscriber loses ticks (ZMQ high-water mark), never blocks us."""

    def __init__(self, url: str, *, context: zmq.Context[Any] | None = None, sndhwm: int = 100_000) -> None:
        self._ctx = context or zmq.Context.instance()
        self.socket = self._ctx.socket(zmq.PUB)
        self.socket.setsockopt(zmq.SNDHWM, sndhwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(url)
        # ``tcp://127.0.0.1:*`` binds a free port; report the real endpoint.
        self.url = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sent = 0

    def publish(self, tick: Tick) -> None:
        topic, body = encode_tick(tick)
        try:
            self.socket.send_multipart((topic, body), flags=zmq.NOBLOCK)
            self.sent += 1
        except zmq.Again:
            pass

    def close(self) -> None:
        self.socket.close(linger=0)
