"""Live prices from one or more ZMQ PUB endpoints (wire format: ``docs/price_feed.md``).

A :class:`PriceFeed` owns one SUB socket connected to every endpoint. It subscribes only to the
symbols someone holds (:meth:`PriceFeed.set_symbols`), keeps the latest tick per symbol, and hands
the consumer a conflated batch (:meth:`PriceFeed.drain`): however many ticks a symbol received
between two flushes, the consumer sees only the newest. Each symbol's freshness is tracked on this
process's monotonic clock, so a silent publisher makes its symbols stale (:meth:`PriceFeed.is_stale`)
and the manager falls back to the broker's REST ``current_price``.

Malformed messages (wrong frame count, undecodable body, missing or non-finite price, topic and body
disagreeing) are dropped and counted in :attr:`PriceFeed.stats`; they never stop the loop.

Every accepted tick (not only the conflated ones) also goes to :attr:`PriceFeed.bars`, a
:class:`BarBuilder` of one-minute OHLC bars that the manager stores in ``public.price_bars``
(:mod:`workers.bars`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import msgpack
import zmq
import zmq.asyncio

log = logging.getLogger(__name__)

WIRE_VERSION = 1


class MalformedMessage(ValueError):
    """A price message that does not follow the wire format."""


@dataclass(frozen=True, slots=True)
class PriceTick:
    """One price for one symbol, as received."""

    symbol: str
    price: Decimal
    ts_event_ns: int
    """Exchange (publisher) timestamp, ns since the epoch."""
    received_mono_ns: int
    """This process's ``time.monotonic_ns()`` at receipt (for staleness)."""
    received_wall_ns: int
    """This process's ``time.time_ns()`` at receipt."""
    bid: Decimal | None = None
    ask: Decimal | None = None


@dataclass(slots=True)
class PriceFeedStats:
    """Counters since start."""

    received: int = 0
    """Well-formed ticks for subscribed symbols."""
    malformed: int = 0
    """Messages dropped because they did not parse."""
    conflated: int = 0
    """Ticks replaced by a newer one before the consumer drained them."""
    unsubscribed: int = 0
    """Ticks for symbols nobody holds (prefix matches, or before an unsubscribe took effect)."""
    last_tick_mono_ns: int | None = None
    """``time.monotonic_ns()`` of the newest well-formed tick of any symbol (feed liveness)."""


def _decimal(value: Any, what: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise MalformedMessage(f"{what} missing or not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise MalformedMessage(f"{what} not finite")
    try:
        result = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except InvalidOperation:
        raise MalformedMessage(f"{what} not a number") from None
    if not result.is_finite():
        raise MalformedMessage(f"{what} not finite")
    return result


def _decode_body(body: bytes) -> dict[str, Any]:
    try:
        decoded: Any = json.loads(body) if body[:1] == b"{" else msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.UnpackException, UnicodeDecodeError) as exc:
        raise MalformedMessage(f"undecodable body: {type(exc).__name__}") from None
    if not isinstance(decoded, dict):
        raise MalformedMessage("body is not a mapping")
    return decoded


def parse_message(frames: Sequence[bytes], *, received_mono_ns: int = 0, received_wall_ns: int = 0) -> PriceTick:
    """Decode one two-frame message ``[topic=symbol, body]``; raise :class:`MalformedMessage` otherwise.

    The body is a JSON object or a msgpack map with at least ``symbol`` and ``price`` (``v``, ``bid``,
    ``ask``, ``size``, ``ts_ns`` optional). A body ``symbol`` that disagrees with the topic is refused.
    """
    if len(frames) != 2:
        raise MalformedMessage(f"expected 2 frames, got {len(frames)}")
    try:
        topic = bytes(frames[0]).decode("ascii").strip()
    except UnicodeDecodeError:
        raise MalformedMessage("topic is not ASCII") from None
    data = _decode_body(bytes(frames[1]))
    version = data.get("v", WIRE_VERSION)
    if not isinstance(version, int) or version > WIRE_VERSION:
        raise MalformedMessage(f"unsupported wire version {version!r}")
    symbol = data.get("symbol", topic)
    if not isinstance(symbol, str) or not symbol or symbol != topic:
        raise MalformedMessage("symbol missing or different from topic")
    price = _decimal(data.get("price"), "price")
    if price <= 0:
        raise MalformedMessage("price must be positive")
    ts_raw = data.get("ts_ns", data.get("ts_event_ns", 0))
    if isinstance(ts_raw, bool) or not isinstance(ts_raw, int) or ts_raw < 0:
        raise MalformedMessage("ts_ns must be a non-negative integer")
    bid = _decimal(data["bid"], "bid") if data.get("bid") is not None else None
    ask = _decimal(data["ask"], "ask") if data.get("ask") is not None else None
    return PriceTick(symbol, price, ts_raw, received_mono_ns, received_wall_ns, bid, ask)


def encode_message(symbol: str, price: Decimal | float | str, ts_ns: int, **extra: Any) -> list[bytes]:
    """The two frames a publisher sends (JSON body). Used by tests and the benchmark."""
    body = {"v": WIRE_VERSION, "symbol": symbol, "price": str(price), "ts_ns": ts_ns, **extra}
    return [symbol.encode("ascii"), json.dumps(body, separators=(",", ":")).encode()]


NS_PER_MINUTE = 60_000_000_000
BAR_KEEP_MINUTES = 2
"""A symbol's bars older than its newest minute minus this many minutes are forgotten after a
:meth:`BarBuilder.take`; ticks for them arrive too late and are dropped (counted)."""
_INF = math.inf


@dataclass(frozen=True, slots=True)
class Bar:
    """The whole current state of one symbol's one-minute bar."""

    symbol: str
    ts: datetime
    """Start of the UTC minute (aware)."""
    open: float
    high: float
    low: float
    close: float
    ticks: int

    def merged(self, later: Bar) -> Bar:
        """``later`` (a state of the same bar sent after this one) merged the way ``public.price_bars`` merges."""
        return Bar(self.symbol, self.ts, self.open, max(self.high, later.high), min(self.low, later.low),
                   later.close, max(self.ticks, later.ticks))


class _OpenBar:
    __slots__ = ("symbol", "minute", "open", "high", "low", "close", "ticks", "dirty")

    def __init__(self, symbol: str, minute: int, price: float) -> None:
        self.symbol = symbol
        self.minute = minute
        self.open = self.high = self.low = self.close = price
        self.ticks = 1
        self.dirty = False


class _Series:
    __slots__ = ("newest", "bars")

    def __init__(self, newest: int) -> None:
        self.newest = newest
        self.bars: dict[int, _OpenBar] = {}


class BarBuilder:
    """One-minute OHLC bars from individual ticks. Pure (no I/O, no clock): time is the tick's.

    :meth:`add` updates the bar of the UTC minute holding ``ts_ns``: open is the first price, close
    the latest *by arrival*, high/low and a tick count. :meth:`take` returns every bar touched since
    the previous take, each as its whole current state (a bar touched again is returned again, fuller:
    writers upsert it). Memory: after a take each symbol keeps at most ``keep_minutes + 1`` bars (its
    newest minute and the ``keep_minutes`` before it); a tick for an older minute is dropped and
    counted in :attr:`late`. :meth:`forget` drops a symbol (its untaken bars are still returned).
    """

    def __init__(self, keep_minutes: int = BAR_KEEP_MINUTES) -> None:
        if keep_minutes < 0:
            raise ValueError("keep_minutes must be >= 0")
        self.keep_minutes = keep_minutes
        self._series: dict[str, _Series] = {}
        self._dirty: list[_OpenBar] = []
        self.ignored = 0
        """Ticks refused for a price that is not finite or not > 0."""
        self.late = 0
        """Ticks refused for a minute already forgotten (older than newest - ``keep_minutes``)."""

    def add(self, symbol: str, price: float, ts_ns: int) -> bool:
        """Count one tick; ``False`` when it was ignored (bad price, or too late)."""
        if not 0.0 < price < _INF:  # also refuses NaN
            self.ignored += 1
            return False
        minute = ts_ns // NS_PER_MINUTE
        series = self._series.get(symbol)
        if series is None:
            series = self._series[symbol] = _Series(minute)
        elif minute > series.newest:
            series.newest = minute
        elif minute < series.newest - self.keep_minutes:
            self.late += 1
            return False
        bar = series.bars.get(minute)
        if bar is None:
            bar = series.bars[minute] = _OpenBar(symbol, minute, price)
        else:
            if price > bar.high:
                bar.high = price
            elif price < bar.low:
                bar.low = price
            bar.close = price
            bar.ticks += 1
        if not bar.dirty:
            bar.dirty = True
            self._dirty.append(bar)
        return True

    def take(self) -> list[Bar]:
        """Every bar touched since the previous take (whole state), then forget the minutes too old to keep."""
        dirty, self._dirty = self._dirty, []
        out: list[Bar] = []
        touched: set[str] = set()
        for bar in dirty:
            bar.dirty = False
            out.append(Bar(bar.symbol, datetime.fromtimestamp(bar.minute * 60, tz=UTC), bar.open, bar.high,
                           bar.low, bar.close, bar.ticks))
            touched.add(bar.symbol)
        # Only a touched symbol's newest minute can have moved since its last eviction.
        for symbol in touched:
            series = self._series.get(symbol)
            if series is None:
                continue
            horizon = series.newest - self.keep_minutes
            for minute in [m for m in series.bars if m < horizon]:
                del series.bars[minute]
        return out

    def forget(self, symbol: str) -> None:
        """Drop a symbol's state (unsubscribed); bars touched and not taken yet are still returned by :meth:`take`."""
        self._series.pop(symbol, None)

    @property
    def pending(self) -> int:
        """Bars touched since the previous take."""
        return len(self._dirty)

    @property
    def open_bars(self) -> int:
        """Bars held in memory (the bound :meth:`take` enforces: symbols x (``keep_minutes`` + 1))."""
        return sum(len(s.bars) for s in self._series.values())


class PriceFeed:
    """A conflating SUB client over several endpoints. Run :meth:`run` as a task; call the rest from the loop."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        stale_after_s: float,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("PriceFeed needs at least one endpoint")
        self.endpoints = tuple(endpoints)
        self.stale_after_ns = int(stale_after_s * 1e9)
        self.stats = PriceFeedStats()
        self._own_context = context is None
        self._context = context or zmq.asyncio.Context()
        self._socket: zmq.asyncio.Socket | None = None
        self._symbols: set[str] = set()
        self._latest: dict[str, PriceTick] = {}
        self._pending: dict[str, PriceTick] = {}
        self.changed = asyncio.Event()
        """Set whenever :meth:`drain` has something to return."""
        self.bars = BarBuilder()
        """One-minute bars of every accepted tick (event time, else receive time); the manager takes them."""

    # -- subscriptions -------------------------------------------------------------------------
    @property
    def symbols(self) -> frozenset[str]:
        return frozenset(self._symbols)

    def _sock(self) -> zmq.asyncio.Socket:
        if self._socket is None:
            sock = self._context.socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, 100_000)
            for endpoint in self.endpoints:
                sock.connect(endpoint)
            for symbol in self._symbols:
                sock.setsockopt(zmq.SUBSCRIBE, symbol.encode("ascii"))
            self._socket = sock
        return self._socket

    def set_symbols(self, symbols: Iterable[str]) -> None:
        """Subscribe to exactly ``symbols`` (held somewhere); forget prices of dropped ones."""
        wanted = {s for s in symbols if s}
        sock = self._sock()
        for symbol in wanted - self._symbols:
            sock.setsockopt(zmq.SUBSCRIBE, symbol.encode("ascii"))
        for symbol in self._symbols - wanted:
            sock.setsockopt(zmq.UNSUBSCRIBE, symbol.encode("ascii"))
            self._latest.pop(symbol, None)
            self._pending.pop(symbol, None)
            self.bars.forget(symbol)
        self._symbols = wanted

    # -- receiving -----------------------------------------------------------------------------
    def handle(self, frames: Sequence[bytes]) -> PriceTick | None:
        """Account for one raw message; the tick when it was kept, ``None`` when dropped."""
        try:
            tick = parse_message(frames, received_mono_ns=time.monotonic_ns(), received_wall_ns=time.time_ns())
        except MalformedMessage as exc:
            self.stats.malformed += 1
            if self.stats.malformed in (1, 10, 100, 1000) or self.stats.malformed % 10_000 == 0:
                log.warning("dropped malformed price message (%s); %d so far", exc, self.stats.malformed)
            return None
        if tick.symbol not in self._symbols:
            self.stats.unsubscribed += 1
            return None
        self.stats.received += 1
        self.stats.last_tick_mono_ns = tick.received_mono_ns
        if tick.symbol in self._pending:
            self.stats.conflated += 1
        self._latest[tick.symbol] = tick
        self._pending[tick.symbol] = tick
        self.bars.add(tick.symbol, float(tick.price), tick.ts_event_ns or tick.received_wall_ns)
        self.changed.set()
        return tick

    async def run(self) -> None:
        """Receive until cancelled. Never raises for bad messages."""
        sock = self._sock()
        # A blocking-API twin of the same socket: drains what is already queued without another
        # trip through the event loop per message.
        sync: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
        while True:
            self.handle(await sock.recv_multipart())
            for _ in range(1000):
                try:
                    frames = sync.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.handle(frames)

    def drain(self) -> dict[str, PriceTick]:
        """The newest tick per symbol received since the previous drain (conflated)."""
        pending, self._pending = self._pending, {}
        self.changed.clear()
        return pending

    # -- reading -------------------------------------------------------------------------------
    def latest(self, symbol: str) -> PriceTick | None:
        return self._latest.get(symbol)

    def last_tick_age_s(self, now_mono_ns: int | None = None) -> float | None:
        """Seconds since the newest tick of any subscribed symbol; ``None`` before the first."""
        if self.stats.last_tick_mono_ns is None:
            return None
        now = time.monotonic_ns() if now_mono_ns is None else now_mono_ns
        return (now - self.stats.last_tick_mono_ns) / 1e9

    def is_stale(self, symbol: str, now_mono_ns: int | None = None) -> bool:
        """No tick for ``symbol`` within ``stale_after_s`` (or never)."""
        tick = self._latest.get(symbol)
        if tick is None:
            return True
        now = time.monotonic_ns() if now_mono_ns is None else now_mono_ns
        return now - tick.received_mono_ns > self.stale_after_ns

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        if self._own_context:
            self._context.term()
