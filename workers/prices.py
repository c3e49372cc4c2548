"""Live prices from one or more ZMQ PUB endpoints (wire format: ``docs/price_feed.md``).

A :class:`PriceFeed` owns one SUB socket connected to every endpoint. It subscribes only to the
symbols someone holds (:meth:`PriceFeed.set_symbols`), keeps the latest tick per symbol, and hands
the consumer a conflated batch (:meth:`PriceFeed.drain`): however many ticks a symbol received
between two flushes, the consumer sees only the newest. Each symbol's freshness is tracked on this
process's monotonic clock, so a silent publisher makes its symbols stale (:meth:`PriceFeed.is_stale`)
and the manager falls back to the broker's REST ``current_price``.

Every message goes through :mod:`workers.price_checks` first: a message that breaks the wire
format (size, nesting, types, bounds, a ``ts_ns`` far from now) is dropped and counted by reason in
:attr:`PriceFeed.stats`; a tick that jumps outside its symbol's sanity band is held as *suspect*
(counted, listed in ``stats.suspects``, never valued) until later ticks confirm or refute it.
:meth:`PriceFeed.handle` never raises, so no message can end the receive loop.

Every accepted tick (not only the conflated ones) also goes to :attr:`PriceFeed.bars`, a
:class:`BarBuilder` of one-minute OHLC bars that the manager stores in ``public.price_bars``
(:mod:`workers.bars`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import zmq
import zmq.asyncio

from core.settings import Settings
from workers.price_checks import (
    DEFAULT_LIMITS,
    WIRE_VERSION,
    FeedLimits,
    MalformedMessage,
    PriceTick,
    RejectReason,
    SanityBand,
    encode_message,
    parse_message,
)

__all__ = ["WIRE_VERSION", "Bar", "BarBuilder", "FeedLimits", "MalformedMessage", "PriceFeed", "PriceFeedStats",
           "PriceTick", "RejectReason", "encode_message", "feed_limits", "parse_message"]

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 1 << 20
"""ZMQ drops (and disconnects) a peer sending a bigger frame, so a hostile publisher cannot make us
buffer gigabytes; anything over ``FeedLimits.max_body_bytes`` is refused by the parser anyway."""


def feed_limits(settings: Settings) -> FeedLimits:
    """The parser's and band's limits from the ``PRICE_*`` settings."""
    return FeedLimits(max_lead_s=settings.price_max_lead_s, max_age_s=settings.price_max_age_s,
                      band_pct=settings.price_band_pct, confirm_ticks=settings.price_confirm_ticks)


@dataclass(slots=True)
class PriceFeedStats:
    """Counters since start (the manager's heartbeat shows them as ``details.price_feed``)."""

    received: int = 0
    """Well-formed ticks for subscribed symbols (suspects included)."""
    malformed: int = 0
    """Messages dropped by the parser, all reasons together (``rejected`` splits them)."""
    rejected: dict[str, int] = field(default_factory=dict)
    """Dropped messages by :class:`RejectReason` value."""
    last_rejection: str | None = None
    """The latest drop's reason and rule (never the message body)."""
    conflated: int = 0
    """Ticks replaced by a newer one before the consumer drained them."""
    unsubscribed: int = 0
    """Ticks for symbols nobody holds (prefix matches, or before an unsubscribe took effect)."""
    suspect: int = 0
    """Ticks held for jumping outside their symbol's sanity band."""
    suspect_confirmed: int = 0
    """Held ticks accepted once later ticks confirmed the new level."""
    suspect_discarded: int = 0
    """Held ticks dropped (the price came back: an outlier)."""
    suspects: dict[str, str] = field(default_factory=dict)
    """Symbols with ticks held right now -> the newest held price (their mark keeps the last good price)."""
    errors: int = 0
    """Unexpected exceptions while handling a message (a bug; logged with its traceback)."""
    last_tick_mono_ns: int | None = None
    """``time.monotonic_ns()`` of the newest well-formed tick of any symbol (feed liveness)."""


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


def _worth_logging(count: int) -> bool:
    """Log the 1st, 10th, 100th, 1000th and every 10,000th occurrence: visible, never a flood."""
    return count in (1, 10, 100, 1000) or count % 10_000 == 0


class PriceFeed:
    """A conflating SUB client over several endpoints. Run :meth:`run` as a task; call the rest from the loop."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        stale_after_s: float,
        limits: FeedLimits = DEFAULT_LIMITS,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("PriceFeed needs at least one endpoint")
        if not (math.isfinite(stale_after_s) and stale_after_s > 0):
            raise ValueError("stale_after_s must be finite and > 0")
        self.endpoints = tuple(endpoints)
        self.stale_after_ns = int(stale_after_s * 1e9)
        self.limits = limits
        self.stats = PriceFeedStats()
        self.band = SanityBand(limits.band_pct, limits.confirm_ticks)
        """Per-symbol sanity band; :meth:`SanityBand.set_reference` seeds it (e.g. with the broker's price)."""
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
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
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
            self.band.forget(symbol)
        self._symbols = wanted
        self._sync_band_stats()

    # -- receiving -----------------------------------------------------------------------------
    def handle(self, frames: Sequence[bytes]) -> PriceTick | None:
        """Account for one raw message; the newest tick it made current, ``None`` when dropped or held.

        Never raises: a rejected message is counted by reason, and an unexpected exception (a bug)
        is counted in ``stats.errors`` and logged, because one message must not end the feed.
        """
        try:
            return self._handle(frames)
        except Exception:
            self.stats.errors += 1
            if _worth_logging(self.stats.errors):
                log.exception("price message handling failed; %d so far", self.stats.errors)
            return None

    def _handle(self, frames: Sequence[bytes]) -> PriceTick | None:
        try:
            tick = parse_message(frames, received_mono_ns=time.monotonic_ns(), received_wall_ns=time.time_ns(),
                                 limits=self.limits)
        except MalformedMessage as exc:
            self._reject(exc)
            return None
        if tick.symbol not in self._symbols:
            self.stats.unsubscribed += 1
            return None
        self.stats.received += 1
        self.stats.last_tick_mono_ns = tick.received_mono_ns
        accepted = self.band.screen(tick)
        self._sync_band_stats()
        for t in accepted:
            if t.symbol in self._pending:
                self.stats.conflated += 1
            self._pending[t.symbol] = t
            self.bars.add(t.symbol, float(t.price), t.ts_event_ns or t.received_wall_ns)
        if not accepted:
            return None
        newest = accepted[-1]
        self._latest[newest.symbol] = newest
        self.changed.set()
        return newest

    def _reject(self, exc: MalformedMessage) -> None:
        stats = self.stats
        stats.malformed += 1
        stats.rejected[exc.reason.value] = stats.rejected.get(exc.reason.value, 0) + 1
        stats.last_rejection = str(exc)[:200]
        if _worth_logging(stats.malformed):
            log.warning("dropped price message (%s); %d so far", exc, stats.malformed)

    def _sync_band_stats(self) -> None:
        counts, stats = self.band.counts, self.stats
        stats.suspect, stats.suspect_confirmed, stats.suspect_discarded = (
            counts.suspect, counts.confirmed, counts.discarded)
        if self.band.held_changed:
            self.band.held_changed = False
            stats.suspects = {s: str(p) for s, p in self.band.held().items()}

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
