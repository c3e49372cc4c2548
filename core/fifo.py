"""FIFO lot engine: fills and lot events in, open lots and closed round trips out.

Rules (the full text is in ``docs/core_analytics.md``):

- Fills are applied per symbol in ``(ts, fill_id)`` order, whatever order they arrive in. A fill id
  seen before is ignored; the same id with different content is refused (:class:`InvalidInput`).
- A fill in the direction of the position (or from flat) opens a lot. A fill against it closes the
  oldest lots first (FIFO); the part of a fill that goes beyond flat opens a new position in the
  other direction (a *flip*: one fill, split into a close and an open, its fee split pro rata).
- **Lot events** (``core.corporate_actions``: splits, symbol changes, mergers, spinoffs, worthless
  removals, option expiry/exercise/assignment/cash settlement, fees in the asset, stock transfers)
  are applied in time order with the fills of the symbols they touch, at an equal timestamp before
  the fills. They are idempotent on ``event_id`` like fills on theirs. Symbols tied by an event
  (old and new symbol, option and underlying, parent and spinoff) form one group that replays
  together when a late fill or event arrives.
- Every price × quantity is multiplied by the instrument's multiplier (100 for an option contract).
- A **round trip** is the position from flat to flat: every opening and closing fill between, its
  lot matches, weighted entry/exit prices and realised P&L. Its ``trade_id`` is a hash of the symbol,
  the first opening fill id and the closing fill ids, so recomputation gives the same id.
- Orphans: a starting position (from the broker's position list) seeds an orphan lot at its average
  price; with ``allow_short=False`` a sell beyond the long position closes an orphan lot of unknown
  price instead of opening a short. Unknown-price lots carry zero P&L and flag the trip ``is_orphan``.
- Exit reason: the order of the fill that brought the position back to flat. A chained exit leg
  (a child of a bracket/OTO, or an OCO order) is ``stop_loss`` for stop/stop-limit/trailing-stop
  types and ``take_profit`` for limit types; anything else is ``manual``.
- A position smaller than the instrument's ``min_increment`` is *dust*: reported by :meth:`FifoBook.dust`,
  not by :meth:`FifoBook.open_positions`. A fill that leaves only dust ends the round trip (a coin sold
  down to a fee's remainder is closed); the dust lots carry on into the symbol's next round trip.

Arithmetic is exact :class:`~decimal.Decimal` (60 significant digits while matching).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal, Inexact, InvalidOperation, localcontext
from typing import Any

from core.corporate_actions import LotEvent, event_from_dict, is_lot_event
from core.errors import InvalidInput
from core.fifo_groups import EventGroups, TimelineKey, fill_key
from core.income import CashEntry
from core.instruments import Instrument, instrument_for
from core.lot_events import apply_event, event_cash_flow
from core.lots import (
    CONTEXT,
    MATCH_CONTEXT,
    Episode,
    LotSource,
    SymbolBook,
    build_trip,
    exit_reason_for,
    id_key,
    open_position,
    run_fills,
    sort_fills,
    sort_key,
    strictly_increasing,
    trade_id_for,
)
from core.records import ZERO, Fill, Lot, OpenPosition, OrderMeta, RoundTrip, Side, StartingPosition
from core.trip_fees import TripFees, fee_from_dict, fee_to_dict, ny_day

__all__ = ["STATE_FORMAT", "BookUpdate", "FifoBook", "FifoResult", "cash_flow_pl", "exit_reason_for",
           "match_fills", "trade_id_for"]

STATE_FORMAT = 2
"""2 adds lot events and instruments; format 1 (fills only) is still read."""


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while allocating many small acyclic objects (halves the matching time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class BookUpdate:
    """What one :meth:`FifoBook.apply` changed: round trips to upsert and trade ids to delete."""

    __slots__ = ("_book", "_pending", "removed_trade_ids", "symbols", "ignored_duplicates")

    def __init__(self, book: FifoBook, pending: list[Episode], removed: tuple[str, ...], symbols: frozenset[str],
                 ignored_duplicates: int) -> None:
        self._book = book
        self._pending = pending
        self.removed_trade_ids = removed
        self.symbols = symbols
        """Symbols whose open position may have changed."""
        self.ignored_duplicates = ignored_duplicates
        """Fills and lot events whose id had already been applied (same content)."""

    @property
    def upserted(self) -> tuple[RoundTrip, ...]:
        """New or changed round trips (built on first access)."""
        return tuple(self._book._trips(self._pending))


@dataclass(frozen=True, slots=True)
class FifoResult:
    round_trips: tuple[RoundTrip, ...]
    open_positions: dict[str, OpenPosition]


class FifoBook:
    """Incremental FIFO book over all symbols of one account.

    Feeding fills and lot events in any batches, in any order, gives exactly the state a single full
    recomputation over their union gives. A fill older than what a symbol has already applied makes
    that symbol (with its event group) replay from its stored history (round trips it invalidates
    are reported in :attr:`BookUpdate.removed_trade_ids`).

    ``instruments`` overrides what a symbol is (multiplier, dust threshold); by default it is read
    from the symbol (:func:`core.instruments.instrument_for`: OCC symbols are options × 100).
    """

    def __init__(self, *, orders: Iterable[OrderMeta] = (), starting_positions: Iterable[StartingPosition] = (),
                 allow_short: bool = True, instruments: Iterable[Instrument] = ()) -> None:
        self.allow_short = allow_short
        self._orders: dict[str, OrderMeta] = {o.order_id: o for o in orders}
        self._instruments: dict[str, Instrument] = {i.symbol: i for i in instruments}
        self._starting: dict[str, StartingPosition] = {}
        for sp in starting_positions:
            if sp.symbol in self._starting:
                raise InvalidInput(f"starting position {sp.symbol!r}: given twice")
            self._starting[sp.symbol] = sp
        self._ids: set[str] = set()
        # id -> fill, built only once a duplicate id shows up (needed to compare contents)
        self._by_id: dict[str, Fill] | None = None
        self._books: dict[str, SymbolBook] = {}
        self._groups = EventGroups()
        self._fees = TripFees()
        for symbol in self._starting:
            self._books[symbol] = self._new_symbol_book(symbol)

    # ----------------------------------------------------------------- public API

    def apply(self, fills: Iterable[Fill], orders: Iterable[OrderMeta] = (),
              events: Iterable[LotEvent] = (), fees: Iterable[CashEntry] = ()) -> BookUpdate:
        """Apply new fills, order metadata, lot events and broker fee lines (:mod:`core.trip_fees`;
        other cash entries are ignored); duplicates by id are ignored."""
        new_events, dup_events = self._groups.validate(events)  # refuses before anything is registered
        new_orders = [o for o in orders if self._orders.get(o.order_id) != o]
        for o in new_orders:
            self._orders[o.order_id] = o
        with _gc_paused():
            grouped, duplicates = self._ingest(fills)
        self._groups.register(new_events)

        pending: list[Episode] = []
        removed: list[str] = []
        touched = set(grouped)
        try:
            with localcontext(MATCH_CONTEXT), _gc_paused():
                if self._groups:
                    plain = {s: g for s, g in grouped.items() if not self._groups.is_eventful(s)}
                    touched |= self._apply_groups(grouped, new_events, pending, removed)
                else:
                    plain = grouped
                self._apply_grouped(plain, pending, removed)
        except (Inexact, InvalidOperation) as exc:  # only with quantities beyond 60 significant digits
            raise InvalidInput(f"fills: quantity arithmetic is not exact in 60 digits ({exc!r})") from exc
        if new_orders:
            pending.extend(self._refresh_exit_reasons({o.order_id for o in new_orders}, pending))
        stale = self._fees.add(fees) | self._fees.touched_by(f for g in grouped.values() for f in g)
        if stale:
            pending.extend(self._recharge(self._fees.reallocate(stale, self._fills_of_day), pending))
        return BookUpdate(self, pending, tuple(removed), frozenset(touched), duplicates + dup_events)

    def _ingest(self, fills: Iterable[Fill]) -> tuple[dict[str, list[Fill]], int]:
        """Drop known fill ids, group the new fills by symbol, each group in ``(ts, fill_id)`` order.

        The usual batch (no duplicates, already in time order) takes C-level passes only.
        """
        batch = fills if isinstance(fills, list) else list(fills)
        if any(t is not Fill for t in set(map(type, batch))):
            bad = next(f for f in batch if type(f) is not Fill)
            raise InvalidInput(f"fill row {bad!r}: not a Fill record")
        ids = list(map(id_key, batch))
        unique = set(ids)
        duplicates = 0
        collides = not unique.isdisjoint(self._ids)
        if len(unique) == len(batch) and not collides:
            if self._ids:
                self._ids |= unique
            else:
                self._ids = unique
            if self._by_id is not None:
                self._by_id.update(zip(ids, batch, strict=True))
            fresh = batch
        else:
            fresh, duplicates = self._dedupe(batch, collides)
        in_order = strictly_increasing(fresh)
        grouped: dict[str, list[Fill]] = {}
        for f in fresh:
            group = grouped.get(f.symbol)
            if group is None:
                grouped[f.symbol] = [f]
            else:
                group.append(f)
        if not in_order:
            for group in grouped.values():
                sort_fills(group)
        return grouped, duplicates

    def _dedupe(self, batch: list[Fill], collides: bool) -> tuple[list[Fill], int]:
        by_id = self._by_id
        if collides and by_id is None:
            by_id = self._by_id = {f.fill_id: f for sb in self._books.values() for f in sb.fills}
        # validate the whole batch before registering anything, so a refused batch leaves no trace
        fresh = []
        duplicates = 0
        taken: dict[str, Fill] = {}
        for f in batch:
            seen = taken.get(f.fill_id)
            if seen is None and collides and by_id is not None:
                seen = by_id.get(f.fill_id)
            if seen is not None:
                if seen is not f and seen != f:
                    raise InvalidInput(f"fill {f.fill_id!r}: id already applied with different content")
                duplicates += 1
                continue
            taken[f.fill_id] = f
            fresh.append(f)
        self._ids.update(taken)
        if self._by_id is not None:
            self._by_id.update(taken)
        return fresh, duplicates

    def _apply_grouped(self, grouped: dict[str, list[Fill]], pending: list[Episode], removed: list[str]) -> None:
        """Symbols without lot events: each matches on from its state, or replays on a late fill."""
        for symbol, new in grouped.items():
            sb = self._books.get(symbol)
            if sb is None:
                sb = self._books[symbol] = self._new_symbol_book(symbol)
            if sb.last_key is None or sort_key(new[0]) > sb.last_key:
                before = len(sb.closed)
                run_fills(sb, new, self.allow_short)
                sb.last_key = sort_key(new[-1])
                sb.fills.extend(new)
                pending.extend(sb.closed[before:])
            else:  # a late fill: replay this symbol from its stored history
                old = self._trip_map([sb])
                history = sorted(sb.fills + new, key=sort_key)
                sb = self._books[symbol] = self._new_symbol_book(symbol)
                run_fills(sb, history, self.allow_short)
                sb.last_key = sort_key(history[-1])
                sb.fills = history
                self._diff(old, [sb], pending, removed)

    def _apply_groups(self, grouped: dict[str, list[Fill]], new_events: list[LotEvent], pending: list[Episode],
                      removed: list[str]) -> set[str]:
        """Symbols tied by lot events: one time-ordered timeline per group (forward, or a replay)."""
        touched: set[str] = set()
        for root, members in self._groups.affected(grouped, new_events):
            fills = [f for s in sorted(members) for f in grouped.get(s, ())]
            events = [e for e in new_events if self._groups.root(e.symbol) == root]
            if not fills and not events:
                continue
            last = self._groups.last_key(root, [self._books[s] for s in members if s in self._books])
            first = min([fill_key(f) for f in fills] + [self._groups.key(e) for e in events])
            books = [self._books[s] for s in sorted(members) if s in self._books]
            if last is None or first > last:
                before = {sb.symbol: len(sb.closed) for sb in books}
                self._run_timeline(fills, events, root)
                for s in members:
                    sb = self._books.get(s)
                    if sb is not None:
                        pending.extend(sb.closed[before.get(s, 0):])
            else:  # a late fill or event: replay the whole group from its history
                old = self._trip_map(books)
                history = [f for sb in books for f in sb.fills] + fills
                for s in members:
                    if s in self._books:
                        self._books[s] = self._new_symbol_book(s)
                self._run_timeline(history, self._groups.events_of(root), root)
                self._diff(old, [self._books[s] for s in members if s in self._books], pending, removed)
            touched |= members
        return touched

    def _run_timeline(self, fills: list[Fill], events: list[LotEvent], root: str) -> None:
        """Fills and events of one group in ``(ts, events first, id)`` order."""
        items: list[tuple[TimelineKey, Fill | LotEvent]] = [(fill_key(f), f) for f in fills]
        items.extend((self._groups.key(e), e) for e in events)
        items.sort(key=lambda item: item[0])
        i = 0
        while i < len(items):
            key, item = items[i]
            if isinstance(item, Fill):  # a run of consecutive fills of one symbol goes through the hot loop
                j = i + 1
                while j < len(items) and isinstance(items[j][1], Fill) and items[j][1].symbol == item.symbol:
                    j += 1
                run = [it for _, it in items[i:j] if isinstance(it, Fill)]
                sb = self._book_for(item.symbol)
                run_fills(sb, run, self.allow_short)
                sb.fills.extend(run)
                sb.last_key = sort_key(run[-1])
                i = j
            else:
                with localcontext(CONTEXT):
                    apply_event(item, self._book_for, self.allow_short)
                i += 1
            self._groups.advance(root, key)

    def _book_for(self, symbol: str) -> SymbolBook:
        sb = self._books.get(symbol)
        if sb is None:
            sb = self._books[symbol] = self._new_symbol_book(symbol)
        return sb

    def _trip_map(self, books: list[SymbolBook]) -> dict[str, RoundTrip]:
        return {t.trade_id: t for t in self._trips(ep for sb in books for ep in sb.closed)}

    def _diff(self, old: dict[str, RoundTrip], books: list[SymbolBook], pending: list[Episode],
              removed: list[str]) -> None:
        """After a replay: changed or new trips are pending, vanished ones removed."""
        new_ids = set()
        for sb in books:
            for ep in sb.closed:
                with localcontext(CONTEXT):
                    trip = self._trip(ep)
                new_ids.add(trip.trade_id)
                if old.get(trip.trade_id) != trip:
                    pending.append(ep)
        removed.extend(tid for tid in old if tid not in new_ids)

    def round_trips(self) -> list[RoundTrip]:
        """All closed round trips, ordered by exit time then trade id."""
        out = self._trips(ep for sb in self._books.values() for ep in sb.closed)
        out.sort(key=lambda t: (t.exit_time, t.trade_id))
        return out

    def open_positions(self) -> dict[str, OpenPosition]:
        """Open position per symbol (flat symbols and dust are absent)."""
        return {s: p for s, p in self._positions().items() if abs(p.qty) >= self.instrument(s).min_increment}

    def dust(self) -> dict[str, OpenPosition]:
        """Positions smaller than their instrument's minimum increment (e.g. a crypto remainder)."""
        return {s: p for s, p in self._positions().items() if abs(p.qty) < self.instrument(s).min_increment}

    def _positions(self) -> dict[str, OpenPosition]:
        out = {}
        with localcontext(CONTEXT):
            for symbol, sb in sorted(self._books.items()):
                pos = open_position(sb)
                if pos is not None:
                    out[symbol] = pos
        return out

    def open_lots(self, symbol: str) -> list[Lot]:
        pos = self._positions().get(symbol)
        return list(pos.lots) if pos is not None else []

    def net_position(self, symbol: str) -> Decimal:
        sb = self._books.get(symbol)
        return sb.pos if sb is not None else ZERO

    def instrument(self, symbol: str) -> Instrument:
        """What ``symbol`` is to this book (the override given, else read from the symbol)."""
        inst = self._instruments.get(symbol)
        return inst if inst is not None else instrument_for(symbol)

    @property
    def fill_count(self) -> int:
        return len(self._ids)

    @property
    def event_count(self) -> int:
        return len(self._groups.events)

    def result(self) -> FifoResult:
        return FifoResult(tuple(self.round_trips()), self.open_positions())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state. Restoring replays the stored fills and events, so it is exact by construction."""
        return self.snapshot()()

    def snapshot(self) -> Callable[[], dict[str, Any]]:
        """The state as of now, to be turned into :meth:`to_dict`'s document later (in another thread).

        Only the containers are copied here; what they hold (fills, orders, events, fee lines) is
        immutable, so the book may go on changing while the document is built from the copy.
        """
        fills = [f for sb in self._books.values() for f in sb.fills]
        orders, starting = list(self._orders.values()), list(self._starting.values())
        instruments, events = list(self._instruments.values()), list(self._groups.events.values())
        fees, allow_short = list(self._fees.entries.values()), self.allow_short

        def document() -> dict[str, Any]:
            return {
                "format": STATE_FORMAT,
                "allow_short": allow_short,
                "orders": [o.to_dict() for o in orders],
                "starting_positions": [sp.to_dict() for sp in starting],
                "instruments": [{"symbol": i.symbol, "asset_class": i.asset_class.value,
                                 "multiplier": str(i.multiplier), "min_increment": str(i.min_increment)}
                                for i in instruments],
                "fills": [f.to_dict() for f in fills],
                "events": [e.to_dict() for e in events],
                "fees": [fee_to_dict(e) for e in fees],
            }

        return document

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FifoBook:
        if data.get("format") not in (1, STATE_FORMAT):
            raise InvalidInput(f"fifo state: unsupported format {data.get('format')!r}")
        instruments = [
            replace(instrument_for(i["symbol"], i["asset_class"]), multiplier=Decimal(i["multiplier"]),
                    min_increment=Decimal(i["min_increment"]))
            for i in data.get("instruments", ())
        ]
        book = cls(
            orders=[OrderMeta.from_dict(o) for o in data["orders"]],
            starting_positions=[StartingPosition.from_dict(s) for s in data["starting_positions"]],
            allow_short=bool(data["allow_short"]),
            instruments=instruments,
        )
        book.apply([Fill.from_dict(f) for f in data["fills"]],
                   events=[event_from_dict(e) for e in data.get("events", ())],
                   fees=[fee_from_dict(e) for e in data.get("fees", ())])
        return book

    # ----------------------------------------------------------------- engine

    def _new_symbol_book(self, symbol: str) -> SymbolBook:
        inst = self.instrument(symbol)
        sb = SymbolBook(symbol, inst.multiplier, inst.min_increment)
        sp = self._starting.get(symbol)
        if sp is not None and sp.qty != 0:
            qty = abs(sp.qty)
            src = LotSource(f"start:{symbol}", sp.as_of, sp.avg_entry_price, qty, orphan=True)
            sb.lot_src.append(src)
            sb.lot_rem.append(qty)
            sb.pos = sp.qty
            ep = Episode(symbol, 1 if sp.qty > 0 else -1, True)
            ep.opens.append(src)
            sb.episode = ep
        return sb

    def _fills_of_day(self, day: date, symbol: str | None) -> list[Fill]:
        books = self._books.values() if symbol is None else [b for b in (self._books.get(symbol),) if b is not None]
        return [f for sb in books for f in sb.fills if ny_day(f) == day]

    def _recharge(self, fill_ids: set[str], already: list[Episode]) -> list[Episode]:
        """Closed episodes holding a fill whose fee share changed: their trips are built again."""
        if not fill_ids:
            return []
        pending = {id(ep) for ep in already}
        out: list[Episode] = []
        for sb in self._books.values():
            for ep in sb.closed:
                if any(src.fill_id in fill_ids for src in (*ep.opens, *ep.closes)):
                    ep.trip = None
                    if id(ep) not in pending:
                        out.append(ep)
        return out

    def _multiplier(self, symbol: str) -> Decimal:
        sb = self._books.get(symbol)
        return sb.multiplier if sb is not None else self.instrument(symbol).multiplier

    def _trip(self, ep: Episode) -> RoundTrip:
        """The round-trip record of a closed episode (exact Decimal money; cached)."""
        trip = ep.trip
        if trip is not None:
            return trip
        with localcontext(CONTEXT):
            multiplier = self._multiplier(ep.symbol)
            trip = ep.trip = self._fees.charge(build_trip(ep, self._orders, multiplier), multiplier)
        return trip

    def _trips(self, episodes: Iterable[Episode]) -> list[RoundTrip]:
        """Records of many episodes under one decimal context and one GC pause."""
        out: list[RoundTrip] = []
        orders = self._orders
        with localcontext(CONTEXT), _gc_paused():
            for ep in episodes:
                trip = ep.trip
                if trip is None:
                    multiplier = self._multiplier(ep.symbol)
                    trip = ep.trip = self._fees.charge(build_trip(ep, orders, multiplier), multiplier)
                out.append(trip)
        return out

    def _refresh_exit_reasons(self, order_ids: set[str], already: list[Episode]) -> list[Episode]:
        """Order metadata that arrives after the fills re-labels the round trips it closed."""
        changed: list[Episode] = []
        pending = {id(ep) for ep in already}
        for sb in self._books.values():
            for ep in sb.closed:
                last = ep.closes[-1]
                if last.order_id in order_ids and ep.trip is not None:
                    reason = exit_reason_for(self._orders[last.order_id])
                    if reason is not ep.trip.exit_reason:
                        ep.trip = replace(ep.trip, exit_reason=reason)
                        if id(ep) not in pending:
                            changed.append(ep)
        return changed


def match_fills(fills: Iterable[Fill], *, orders: Iterable[OrderMeta] = (),
                starting_positions: Iterable[StartingPosition] = (), allow_short: bool = True,
                events: Iterable[LotEvent] = (), instruments: Iterable[Instrument] = ()) -> FifoResult:
    """Full recomputation: round trips and open positions from a set of fills and lot events."""
    book = FifoBook(orders=orders, starting_positions=starting_positions, allow_short=allow_short,
                    instruments=instruments)
    book.apply(fills, events=events)
    return book.result()


def cash_flow_pl(fills: Iterable[Fill], events: Iterable[LotEvent] = (), *,
                 instruments: Iterable[Instrument] = ()) -> Decimal:
    """Gross cash flow (sells minus buys, × multiplier, fees excluded, plus the cash lot events move):
    the P&L of a book that ends flat, computed without the lot engine."""
    override = {i.symbol: i.multiplier for i in instruments}

    def multiplier_of(symbol: str) -> Decimal:
        m = override.get(symbol)
        return m if m is not None else instrument_for(symbol).multiplier

    total = ZERO
    with localcontext(CONTEXT):
        for f in fills:
            value = f.qty * f.price * multiplier_of(f.symbol)
            total += value if f.side is Side.SELL else -value
        for ev in events:
            if not is_lot_event(ev):
                raise InvalidInput(f"lot event {ev!r}: not a lot event")
            total += event_cash_flow(ev, multiplier_of)
    return total

