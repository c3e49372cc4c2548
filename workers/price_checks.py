"""What a price message must be before its price is used (wire format: ``docs/price_feed.md``).

Pure: no sockets, no clock except the receive times the caller passes in. Two layers:

* :func:`parse_message` turns one raw ZMQ message into a :class:`PriceTick` or raises
  :class:`MalformedMessage` with a :class:`RejectReason`. Whatever the bytes, nothing else escapes:
  the body is bounded in size and in nesting *before* it is decoded (a deeply nested JSON would
  otherwise raise ``RecursionError`` inside ``json``), numbers must be JSON/msgpack numbers (a
  string price is refused, as the wire format says), finite, positive and within absolute bounds,
  and ``ts_ns`` must lie in a window around the receive time (a unit mix-up or a tick stamped in
  2100 would otherwise poison the one-minute bars).
* :class:`SanityBand` holds a tick that jumps too far from its symbol's last good price as
  *suspect* instead of valuing it. The rule (documented in ``docs/price_feed.md``): a tick is
  suspect when ``max(price / ref, ref / price) > 1 + band_pct / 100``; ``confirm_ticks``
  consecutive suspects that agree with the first of them (same test against it) confirm the new
  level, and then all of them are accepted, in arrival order; a tick back within the band of
  ``ref`` discards the held suspects (an outlier). So one bad print is never valued, and a real
  gap (a halt, an overnight move) costs ``confirm_ticks - 1`` ticks of delay, not a blocked symbol.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

import msgpack

WIRE_VERSION = 1
NS_PER_S = 1_000_000_000


class RejectReason(StrEnum):
    """Why a message was dropped (the keys of ``PriceFeedStats.rejected``)."""

    FRAMES = "frames"
    """Not exactly two frames."""
    OVERSIZED = "oversized"
    """Body or topic longer than the limit, or nested deeper than it."""
    UNDECODABLE = "undecodable"
    """Not JSON (or has NaN/Infinity literals) nor msgpack, or not a mapping."""
    SCHEMA = "schema"
    """A field missing or of the wrong type (a string price), a bad version, topic and symbol differing."""
    PRICE = "price"
    """A number that is not finite, not > 0, or outside the absolute price bounds."""
    TIMESTAMP = "timestamp"
    """``ts_ns`` outside ``[receive - max_age_s, receive + max_lead_s]``."""


class MalformedMessage(ValueError):
    """A price message that does not follow the wire format; ``reason`` says which rule it broke."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PriceTick:
    """One price for one symbol, as received."""

    symbol: str
    price: Decimal
    ts_event_ns: int
    """Exchange (publisher) timestamp, ns since the epoch; 0 when the publisher sent none."""
    received_mono_ns: int
    """This process's ``time.monotonic_ns()`` at receipt (for staleness)."""
    received_wall_ns: int
    """This process's ``time.time_ns()`` at receipt."""
    bid: Decimal | None = None
    ask: Decimal | None = None
    size: Decimal | None = None


@dataclass(frozen=True, slots=True)
class FeedLimits:
    """Every bound the parser and the band apply. Defaults are the documented ones."""

    max_body_bytes: int = 4096
    """A tick is ~120 bytes; room for extra fields, never for a payload."""
    max_topic_bytes: int = 64
    max_containers: int = 16
    """JSON ``[``/``{`` in the body (counted before decoding, so nesting is bounded too)."""
    min_price: Decimal = Decimal("1e-8")
    """Below the smallest crypto quote increments: 1e-30 is a bug, not a price."""
    max_price: Decimal = Decimal("1e7")
    """Above any listed share or coin; 1e100 or 1.7e308 would overflow stored equity."""
    max_lead_s: float = 60.0
    """How far in the future ``ts_ns`` may be (publisher clock skew). Kept under the bar builder's
    two-minute window, so an early tick can never make the present's ticks "late"."""
    max_age_s: float = 86_400.0
    """How old ``ts_ns`` may be: a feed is live data; older is a unit mix-up (ms or µs for ns)."""
    band_pct: float = 50.0
    """A tick more than this far (ratio ``1 + band_pct/100`` either way) from the last good price is suspect."""
    confirm_ticks: int = 3
    """Consecutive agreeing suspects that confirm a new level."""

    def __post_init__(self) -> None:
        if not (0 < self.min_price < self.max_price) or not self.max_price.is_finite():
            raise ValueError("FeedLimits: need 0 < min_price < max_price, finite")
        if not (math.isfinite(self.band_pct) and self.band_pct > 0):
            raise ValueError("FeedLimits: band_pct must be finite and > 0")
        if self.confirm_ticks < 1 or self.max_body_bytes < 64 or self.max_containers < 1:
            raise ValueError("FeedLimits: confirm_ticks >= 1, max_body_bytes >= 64, max_containers >= 1")
        if not (0 <= self.max_lead_s <= 100 and 0 < self.max_age_s < math.inf):
            raise ValueError("FeedLimits: 0 <= max_lead_s <= 100 and max_age_s finite > 0")


DEFAULT_LIMITS = FeedLimits()


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# json.loads accepts NaN and Infinity by default; the wire format is strict JSON.
_JSON = json.JSONDecoder(parse_constant=_no_constants)


def _decode_body(body: bytes, limits: FeedLimits) -> dict[Any, Any]:
    if len(body) > limits.max_body_bytes:
        raise MalformedMessage(RejectReason.OVERSIZED, f"body of {len(body)} bytes > {limits.max_body_bytes}")
    is_json = body[:1] == b"{"
    # Depth <= containers, so counting brackets (also inside strings: conservative) bounds the
    # recursion of the decoder before it starts.
    if is_json and body.count(b"[") + body.count(b"{") > limits.max_containers:
        raise MalformedMessage(RejectReason.OVERSIZED, f"more than {limits.max_containers} nested values")
    try:
        if is_json:
            decoded: Any = _JSON.decode(body.decode("utf-8"))
        else:
            # msgpack bounds its own depth (StackError) and lengths (by the buffer's size).
            decoded = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as exc:  # JSONDecodeError/UnicodeDecodeError/StackError are ValueErrors
        raise MalformedMessage(RejectReason.UNDECODABLE, type(exc).__name__) from None
    if not isinstance(decoded, dict):
        raise MalformedMessage(RejectReason.UNDECODABLE, "body is not a mapping")
    return decoded


def _number(value: Any, what: str, limits: FeedLimits, *, is_price: bool) -> Decimal:
    """A JSON/msgpack number (never a string or a bool), finite and > 0 (prices: within the bounds)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedMessage(RejectReason.SCHEMA, f"{what} must be a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise MalformedMessage(RejectReason.PRICE, f"{what} not finite")
    try:
        result = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, ValueError):  # pragma: no cover - every finite float/int converts
        raise MalformedMessage(RejectReason.PRICE, f"{what} not a number") from None
    if result <= 0:
        raise MalformedMessage(RejectReason.PRICE, f"{what} must be > 0")
    if is_price and not limits.min_price <= result <= limits.max_price:
        raise MalformedMessage(RejectReason.PRICE, f"{what} outside [{limits.min_price}, {limits.max_price}]")
    return result


def _optional_number(data: dict[Any, Any], key: str, limits: FeedLimits, *, is_price: bool) -> Decimal | None:
    value = data.get(key)
    return None if value is None else _number(value, key, limits, is_price=is_price)


def _timestamp(data: dict[Any, Any], received_wall_ns: int, limits: FeedLimits) -> int:
    ts = data.get("ts_ns", data.get("ts_event_ns", 0))
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise MalformedMessage(RejectReason.SCHEMA, "ts_ns must be an integer (ns since the epoch)")
    if ts == 0:
        return 0  # unknown exchange time: the receive time stands in
    earliest = received_wall_ns - int(limits.max_age_s * NS_PER_S)
    latest = received_wall_ns + int(limits.max_lead_s * NS_PER_S)
    if not earliest <= ts <= latest:
        raise MalformedMessage(RejectReason.TIMESTAMP, "ts_ns outside the window around the receive time")
    return ts


def parse_message(
    frames: Any,
    *,
    received_wall_ns: int,
    received_mono_ns: int = 0,
    limits: FeedLimits = DEFAULT_LIMITS,
) -> PriceTick:
    """Decode one two-frame message ``[topic=symbol, body]``; raise :class:`MalformedMessage` otherwise.

    Never raises anything else, whatever ``frames`` holds. The body is a JSON object or a msgpack
    map with ``price`` (``v``, ``symbol``, ``bid``, ``ask``, ``size``, ``ts_ns`` optional). A body
    ``symbol`` that disagrees with the topic is refused. ``received_wall_ns`` anchors the ``ts_ns`` window.
    """
    if not isinstance(frames, list | tuple) or len(frames) != 2:
        raise MalformedMessage(RejectReason.FRAMES, "expected 2 frames")
    topic_raw, body = frames
    if not isinstance(topic_raw, bytes | bytearray | memoryview) or not isinstance(body, bytes | bytearray | memoryview):
        raise MalformedMessage(RejectReason.FRAMES, "frames must be bytes")
    if len(topic_raw) > limits.max_topic_bytes:
        raise MalformedMessage(RejectReason.OVERSIZED, f"topic longer than {limits.max_topic_bytes} bytes")
    try:
        topic = bytes(topic_raw).decode("ascii").strip()
    except UnicodeDecodeError:
        raise MalformedMessage(RejectReason.SCHEMA, "topic is not ASCII") from None
    data = _decode_body(bytes(body), limits)
    version = data.get("v", WIRE_VERSION)
    if isinstance(version, bool) or version != WIRE_VERSION:
        raise MalformedMessage(RejectReason.SCHEMA, "unsupported wire version")
    symbol = data.get("symbol", topic)
    if not isinstance(symbol, str) or not symbol or symbol != topic:
        raise MalformedMessage(RejectReason.SCHEMA, "symbol missing or different from topic")
    if "price" not in data:
        raise MalformedMessage(RejectReason.SCHEMA, "price missing")
    price = _number(data["price"], "price", limits, is_price=True)
    ts = _timestamp(data, received_wall_ns, limits)
    bid = _optional_number(data, "bid", limits, is_price=True)
    ask = _optional_number(data, "ask", limits, is_price=True)
    size = _optional_number(data, "size", limits, is_price=False)
    return PriceTick(symbol, price, ts, received_mono_ns, received_wall_ns, bid, ask, size)


def _json_number(value: Decimal | float | int | str) -> str:
    number = Decimal(str(value))
    return format(number, "f") if number == number.to_integral_value() else str(number)


def encode_message(symbol: str, price: Decimal | float | int | str, ts_ns: int, **extra: Any) -> list[bytes]:
    """The two frames a publisher sends (JSON body, ``price`` a JSON number). Used by tests and benchmarks."""
    head = f'{{"v":{WIRE_VERSION},"symbol":{json.dumps(symbol)},"price":{_json_number(price)},"ts_ns":{int(ts_ns)}'
    tail = "".join(f",{json.dumps(k)}:{json.dumps(v)}" for k, v in extra.items())
    return [symbol.encode("ascii"), (head + tail + "}").encode()]


@dataclass(slots=True)
class _Level:
    ref: Decimal | None = None
    held: list[PriceTick] = field(default_factory=list)


@dataclass(slots=True)
class BandCounts:
    """What the band did since start."""

    suspect: int = 0
    """Ticks held because they jumped outside the band."""
    confirmed: int = 0
    """Held ticks accepted after ``confirm_ticks`` agreed on the new level."""
    discarded: int = 0
    """Held ticks dropped: the price came back within the band (an outlier), or a different jump replaced them."""


class SanityBand:
    """Per-symbol band around the last good price (rule in the module docstring). Pure and bounded:
    at most ``confirm_ticks - 1`` ticks held per symbol."""

    def __init__(self, band_pct: float = DEFAULT_LIMITS.band_pct, confirm_ticks: int = DEFAULT_LIMITS.confirm_ticks) -> None:
        if not (math.isfinite(band_pct) and band_pct > 0) or confirm_ticks < 1:
            raise ValueError("band_pct must be finite and > 0, confirm_ticks >= 1")
        self._ratio = Decimal(1) + Decimal(repr(float(band_pct))) / 100
        self.confirm_ticks = confirm_ticks
        self.counts = BandCounts()
        self.held_changed = False
        """Set when some symbol's held ticks changed; the owner clears it after reading :meth:`held`."""
        self._levels: dict[str, _Level] = {}

    def _within(self, price: Decimal, ref: Decimal) -> bool:
        return price <= ref * self._ratio and ref <= price * self._ratio

    def screen(self, tick: PriceTick) -> list[PriceTick]:
        """The ticks to accept now, in arrival order: ``[tick]``, ``[]`` (held), or a confirmed run ending with it."""
        level = self._levels.setdefault(tick.symbol, _Level())
        if level.ref is None or self._within(tick.price, level.ref):
            if level.held:
                self.counts.discarded += len(level.held)
                level.held.clear()
                self.held_changed = True
            level.ref = tick.price
            return [tick]
        self.counts.suspect += 1
        self.held_changed = True
        if level.held and not self._within(tick.price, level.held[0].price):
            self.counts.discarded += len(level.held)  # a different jump: start over from this one
            level.held.clear()
        level.held.append(tick)
        if len(level.held) < self.confirm_ticks:
            return []
        run, level.held = level.held, []
        level.ref = tick.price
        self.counts.confirmed += len(run)
        return run

    def set_reference(self, symbol: str, price: Decimal) -> None:
        """Judge ``symbol``'s next ticks against ``price`` (e.g. the broker's, before the first tick)."""
        if price.is_finite() and price > 0:
            self._levels.setdefault(symbol, _Level()).ref = price

    def reference(self, symbol: str) -> Decimal | None:
        level = self._levels.get(symbol)
        return level.ref if level else None

    def held(self) -> dict[str, Decimal]:
        """Symbol -> newest suspect price, for every symbol with ticks held now."""
        return {s: lv.held[-1].price for s, lv in self._levels.items() if lv.held}

    def forget(self, symbol: str) -> None:
        level = self._levels.pop(symbol, None)
        if level is not None and level.held:
            self.held_changed = True
