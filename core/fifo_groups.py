"""Which symbols replay together: groups of symbols tied by lot events, and the timeline order.

An event that touches two symbols (a symbol change, a merger, a spinoff, an option exercise and its
underlying) ties them into one group (union-find); each group keeps its events and the key of the
last item it applied. Symbols no event ever touched stay out of every group and keep the fast
per-symbol path of :class:`core.fifo.FifoBook`.

Timeline order: ``(ts, 0, event_id)`` for events and ``(ts, 1, fill_id)`` for fills, so at an equal
timestamp the corporate action applies before the trading.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from core.corporate_actions import LotEvent, is_lot_event
from core.errors import InvalidInput
from core.lots import SymbolBook
from core.records import Fill

TimelineKey = tuple[datetime, int, str]


def fill_key(f: Fill) -> TimelineKey:
    return (f.ts, 1, f.fill_id)


class EventGroups:
    """The lot events a book has applied, and the symbol groups they tie together."""

    __slots__ = ("events", "_parent", "_members", "_events_of", "_last")

    def __init__(self) -> None:
        self.events: dict[str, LotEvent] = {}
        self._parent: dict[str, str] = {}
        self._members: dict[str, set[str]] = {}
        self._events_of: dict[str, list[LotEvent]] = {}
        self._last: dict[str, TimelineKey] = {}

    def __bool__(self) -> bool:
        return bool(self.events)

    @staticmethod
    def key(ev: LotEvent) -> TimelineKey:
        return (ev.ts, 0, ev.event_id)

    def validate(self, events: Iterable[LotEvent]) -> tuple[list[LotEvent], int]:
        """New events of a batch (duplicates dropped) without registering anything; a known id with
        different content is refused."""
        fresh: list[LotEvent] = []
        taken: dict[str, LotEvent] = {}
        duplicates = 0
        for ev in events:
            if not is_lot_event(ev):
                raise InvalidInput(f"lot event {ev!r}: not a lot event record")
            seen = taken.get(ev.event_id) or self.events.get(ev.event_id)
            if seen is not None:
                if seen != ev:
                    raise InvalidInput(f"lot event {ev.event_id!r}: id already applied with different content")
                duplicates += 1
                continue
            taken[ev.event_id] = ev
            fresh.append(ev)
        for ev in fresh:
            _ = ev.symbols  # an option event's OCC symbol must parse before anything is registered
        return fresh, duplicates

    def root(self, symbol: str) -> str:
        parent = self._parent
        while True:
            up = parent.get(symbol, symbol)
            if up == symbol:
                return symbol
            parent[symbol] = parent.get(up, up)  # path halving
            symbol = up

    def register(self, events: Sequence[LotEvent]) -> None:
        """Record new events and tie their symbols' groups together."""
        for ev in events:
            self.events[ev.event_id] = ev
            roots = sorted({self.root(s) for s in ev.symbols})
            target = roots[0]
            members = self._members.setdefault(target, {target})
            group_events = self._events_of.setdefault(target, [])
            for s in ev.symbols:
                members.add(s)
            for other in roots[1:]:
                self._parent[other] = target
                members |= self._members.pop(other, {other})
                group_events.extend(self._events_of.pop(other, ()))
                last = self._last.pop(other, None)
                if last is not None and (target not in self._last or last > self._last[target]):
                    self._last[target] = last
            group_events.append(ev)

    def is_eventful(self, symbol: str) -> bool:
        return self.root(symbol) in self._events_of

    def affected(self, grouped: dict[str, list[Fill]], new_events: Sequence[LotEvent]) -> list[tuple[str, set[str]]]:
        """``(root, members)`` of every event group with a new fill or a new event."""
        roots = {self.root(s) for s in grouped if self.is_eventful(s)}
        roots |= {self.root(e.symbol) for e in new_events}
        return [(r, set(self._members[r])) for r in sorted(roots)]

    def events_of(self, root: str) -> list[LotEvent]:
        return list(self._events_of.get(root, ()))

    def last_key(self, root: str, books: Iterable[SymbolBook]) -> TimelineKey | None:
        """The latest item the group has applied (its events, its symbols' fills)."""
        best = self._last.get(root)
        for sb in books:
            if sb.last_key is not None:
                key = (sb.last_key[0], 1, sb.last_key[1])
                if best is None or key > best:
                    best = key
        return best

    def advance(self, root: str, key: TimelineKey) -> None:
        last = self._last.get(root)
        if last is None or key > last:
            self._last[root] = key
