"""Pure choice of the mark that values each position, and the tick -> mark conversion.

A mark is the newest ZMQ tick while the feed keeps it fresh, the broker's REST price when the feed is
silent, else the last mark flagged stale, else the last entry price (stale). Nothing here reads a
clock or a socket: freshness comes in as a predicate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from core.records import OpenPosition
from core.valuation import Mark, PriceSource

NS_PER_S = 1_000_000_000
MAX_TICK_AHEAD_NS = 60 * NS_PER_S
"""A stamp further ahead of the receive clock is a publisher mistake: one such mark must never look
newer than every later one."""


def ns_to_utc(ns: int) -> datetime | None:
    """``ns`` since the epoch as an aware UTC datetime; ``None`` for 0, negative or out of range."""
    if ns <= 0:
        return None
    try:
        return datetime.fromtimestamp(ns / NS_PER_S, tz=UTC)
    except (OverflowError, OSError, ValueError):  # beyond datetime's year 9999 (a unit mix-up)
        return None


def tick_time(ts_event_ns: int, received_wall_ns: int) -> datetime | None:
    """When a tick happened: the publisher's time, unless it is ahead of the receive time by more than
    ``MAX_TICK_AHEAD_NS`` (or not representable), then the receive time.

    The feed already refuses a ``ts_ns`` far from its receive time; this guarantees on its own that no
    stamp can raise here or push ``as_of_ns`` past what a ``bigint`` holds.
    """
    if ts_event_ns <= received_wall_ns + MAX_TICK_AHEAD_NS:
        event = ns_to_utc(ts_event_ns)
        if event is not None:
            return event
    return ns_to_utc(received_wall_ns)


def choose_marks(positions: Mapping[str, OpenPosition], marks: Mapping[str, Mark],
                 rest_marks: Mapping[str, Mark], *, zmq_fresh: Callable[[str], bool],
                 use_rest: bool) -> dict[str, Mark]:
    """The mark of every held symbol that has one (see the module docstring for the order)."""
    out: dict[str, Mark] = {}
    for symbol, pos in positions.items():
        mark = marks.get(symbol)
        if mark is not None and mark.source is PriceSource.ZMQ and zmq_fresh(symbol):
            out[symbol] = mark
            continue
        rest = rest_marks.get(symbol) if use_rest else None
        if rest is not None and (mark is None or mark.ts is None or rest.ts is None or rest.ts >= mark.ts):
            out[symbol] = rest
        elif mark is not None:
            out[symbol] = mark.as_stale()
        elif pos.lots:
            last = pos.lots[-1]
            if last.entry_price is not None:
                out[symbol] = Mark(price=last.entry_price, ts=last.entry_time, source=PriceSource.FILL, stale=True)
    return out


def newly_stale(marks: Mapping[str, Mark], is_stale: Callable[[str], bool]) -> dict[str, Mark]:
    """ZMQ marks the feed has just let go stale (to rewrite their rows flagged)."""
    return {s: m.as_stale() for s, m in marks.items()
            if m.source is PriceSource.ZMQ and not m.stale and is_stale(s)}
