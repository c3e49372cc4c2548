"""FIFO lot engine: fills in, open lots and closed round trips out.

Rules (the full text is in ``docs/core_analytics.md``):

- Fills are applied per symbol in ``(ts, fill_id)`` order, whatever order they arrive in. A fill id
  seen before is ignored; the same id with different content is refused (:class:`InvalidInput`).
- A fill in the direction of the position (or from flat) opens a lot. A fill against it closes the
  oldest lots first (FIFO); the part of a fill that goes beyond flat opens a new position in the
  other direction (a *flip*: one fill, split into a close and an open, its fee split pro rata).
- A **round trip** is the position from flat to flat: every opening and closing fill between, its
  lot matches, weighted entry/exit prices and realised P&L. Its ``trade_id`` is a hash of the symbol,
  the first opening fill id and the closing fill ids, so recomputation gives the same id.
- Orphans: a starting position (from the broker's position list) seeds an orphan lot at its average
  price; with ``allow_short=False`` a sell beyond the long position closes an orphan lot of unknown
  price instead of opening a short. Unknown-price lots carry zero P&L and flag the trip ``is_orphan``.
- Exit reason: the order of the fill that brought the position back to flat. A chained exit leg
  (a child of a bracket/OTO, or an OCO order) is ``stop_loss`` for stop/stop-limit/trailing-stop
  types and ``take_profit`` for limit types; anything else is ``manual``.

Arithmetic is exact :class:`~decimal.Decimal` (60 significant digits while matching).
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import operator
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Context, Decimal, Inexact, InvalidOperation, localcontext
from typing import Any

from core.errors import InvalidInput
from core.records import (
    STOP_TYPES,
    ZERO,
    Direction,
    ExitReason,
    Fill,
    Lot,
    LotRow,
    OpenPosition,
    OrderClass,
    OrderMeta,
    OrderType,
    RoundTrip,
    Side,
    StartingPosition,
)

STATE_FORMAT = 1
_CONTEXT = Context(prec=60)
# Matching only adds and subtracts quantities: with 60 digits that is exact, and the trap makes sure.
_MATCH_CONTEXT = Context(prec=60, traps=[Inexact, InvalidOperation])
_sort_key = operator.attrgetter("ts", "fill_id")
_ts_key = operator.attrgetter("ts")
_id_key = operator.attrgetter("fill_id")


def _strictly_increasing(group: list[Fill]) -> bool:
    times = list(map(_ts_key, group))
    return all(map(operator.lt, times, itertools.islice(times, 1, None)))


def _sort_fills(group: list[Fill]) -> None:
    """Sort by ``(ts, fill_id)`` with C-level passes: an ordered group costs one check; otherwise a
    sort on the timestamp alone, and the tuple-keyed sort only if equal timestamps need their ids."""
    if _strictly_increasing(group):
        return
    group.sort(key=_ts_key)
    if not _strictly_increasing(group):
        group.sort(key=_sort_key)


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


def exit_reason_for(order: OrderMeta | None) -> ExitReason:
    """The exit reason implied by the order whose fill closed a round trip."""
    if order is None:
        return ExitReason.MANUAL
    is_exit_leg = order.parent_order_id is not None or order.order_class is OrderClass.OCO
    if not is_exit_leg:
        return ExitReason.MANUAL
    if order.order_type in STOP_TYPES:
        return ExitReason.STOP_LOSS
    if order.order_type is OrderType.LIMIT:
        return ExitReason.TAKE_PROFIT
    return ExitReason.MANUAL


def trade_id_for(symbol: str, first_open_fill_id: str, close_fill_ids: Iterable[str]) -> str:
    """Deterministic round-trip id: stable across recomputation from the same fills."""
    text = "\x1f".join((symbol, first_open_fill_id, *close_fill_ids))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class _Orphan:
    """Stand-in for the opening fill of a lot held before the data window."""

    __slots__ = ("fill_id", "order_id", "ts", "price", "qty", "fee")

    def __init__(self, fill_id: str, ts: datetime, price: Decimal | None, qty: Decimal) -> None:
        self.fill_id = fill_id
        self.order_id: str | None = None
        self.ts = ts
        self.price = price
        self.qty = qty
        self.fee = ZERO


_Source = Fill | _Orphan


class _Episode:
    """A position of one symbol from flat to flat (mutable, internal).

    The hot loop only records quantities, in flat lists (no per-fill containers, so the cyclic GC
    has nothing to scan): the opening sources, the closing fills and the FIFO matches as three
    parallel lists. Prices, P&L and fees are computed exactly (Decimal) when the round-trip record
    is built.
    """

    __slots__ = ("symbol", "sign", "opens", "closes", "m_src", "m_close", "m_qty", "part_qty", "orphan", "trip")

    def __init__(self, symbol: str, sign: int, orphan: bool) -> None:
        self.symbol = symbol
        self.sign = sign
        self.opens: list[_Source] = []
        self.closes: list[Fill] = []
        self.m_src: list[_Source] = []
        self.m_close: list[Fill] = []
        self.m_qty: list[Decimal] = []
        # quantity this episode used from a fill that it shares with a neighbour (a flip); else fill.qty
        self.part_qty: dict[str, Decimal] | None = None
        self.orphan = orphan
        self.trip: RoundTrip | None = None

    def used(self, src: _Source) -> Decimal:
        if self.part_qty is not None:
            return self.part_qty.get(src.fill_id, src.qty)
        return src.qty


class _SymbolBook:
    __slots__ = ("symbol", "pos", "lot_src", "lot_rem", "episode", "fills", "last_key", "closed")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.pos = ZERO
        self.lot_src: deque[_Source] = deque()  # open lots, oldest first ...
        self.lot_rem: deque[Decimal] = deque()  # ... and what remains of each
        self.episode: _Episode | None = None
        self.fills: list[Fill] = []
        self.last_key: tuple[datetime, str] | None = None
        self.closed: list[_Episode] = []


class BookUpdate:
    """What one :meth:`FifoBook.apply` changed: round trips to upsert and trade ids to delete."""

    __slots__ = ("_book", "_pending", "removed_trade_ids", "symbols", "ignored_duplicates")

    def __init__(self, book: FifoBook, pending: list[_Episode], removed: tuple[str, ...], symbols: frozenset[str],
                 ignored_duplicates: int) -> None:
        self._book = book
        self._pending = pending
        self.removed_trade_ids = removed
        self.symbols = symbols
        """Symbols whose open position may have changed."""
        self.ignored_duplicates = ignored_duplicates

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

    Feeding fills in any batches, in any order, gives exactly the state a single full
    recomputation over the union of the fills gives. A fill older than what a symbol has already
    applied makes that symbol replay from its stored fills (round trips it invalidates are reported
    in :attr:`BookUpdate.removed_trade_ids`).
    """

    def __init__(self, *, orders: Iterable[OrderMeta] = (), starting_positions: Iterable[StartingPosition] = (),
                 allow_short: bool = True) -> None:
        self.allow_short = allow_short
        self._orders: dict[str, OrderMeta] = {o.order_id: o for o in orders}
        self._starting: dict[str, StartingPosition] = {}
        for sp in starting_positions:
            if sp.symbol in self._starting:
                raise InvalidInput(f"starting position {sp.symbol!r}: given twice")
            self._starting[sp.symbol] = sp
        self._ids: set[str] = set()
        # id -> fill, built only once a duplicate id shows up (needed to compare contents)
        self._by_id: dict[str, Fill] | None = None
        self._books: dict[str, _SymbolBook] = {}
        for symbol in self._starting:
            self._books[symbol] = self._new_symbol_book(symbol)

    # ----------------------------------------------------------------- public API

    def apply(self, fills: Iterable[Fill], orders: Iterable[OrderMeta] = ()) -> BookUpdate:
        """Apply new fills (and order metadata); duplicates by fill id are ignored."""
        new_orders = [o for o in orders if self._orders.get(o.order_id) != o]
        for o in new_orders:
            self._orders[o.order_id] = o
        with _gc_paused():
            grouped, duplicates = self._ingest(fills)

        pending: list[_Episode] = []
        removed: list[str] = []
        try:
            with localcontext(_MATCH_CONTEXT), _gc_paused():
                self._apply_grouped(grouped, pending, removed)
        except (Inexact, InvalidOperation) as exc:  # only with quantities beyond 60 significant digits
            raise InvalidInput(f"fills: quantity arithmetic is not exact in 60 digits ({exc!r})") from exc
        if new_orders:
            pending.extend(self._refresh_exit_reasons({o.order_id for o in new_orders}, pending))
        return BookUpdate(self, pending, tuple(removed), frozenset(grouped), duplicates)

    def _ingest(self, fills: Iterable[Fill]) -> tuple[dict[str, list[Fill]], int]:
        """Drop known fill ids, group the new fills by symbol, each group in ``(ts, fill_id)`` order.

        The usual batch (no duplicates, already in time order) takes C-level passes only.
        """
        batch = fills if isinstance(fills, list) else list(fills)
        if any(t is not Fill for t in set(map(type, batch))):
            bad = next(f for f in batch if type(f) is not Fill)
            raise InvalidInput(f"fill row {bad!r}: not a Fill record")
        ids = list(map(_id_key, batch))
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
            by_id = self._by_id
            if collides and by_id is None:
                by_id = self._by_id = {f.fill_id: f for sb in self._books.values() for f in sb.fills}
            # validate the whole batch before registering anything, so a refused batch leaves no trace
            fresh = []
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
        in_order = _strictly_increasing(fresh)
        grouped: dict[str, list[Fill]] = {}
        for f in fresh:
            group = grouped.get(f.symbol)
            if group is None:
                grouped[f.symbol] = [f]
            else:
                group.append(f)
        if not in_order:
            for group in grouped.values():
                _sort_fills(group)
        return grouped, duplicates

    def _apply_grouped(self, grouped: dict[str, list[Fill]], pending: list[_Episode], removed: list[str]) -> None:
        for symbol, new in grouped.items():
            sb = self._books.get(symbol)
            if sb is None:
                sb = self._books[symbol] = self._new_symbol_book(symbol)
            if sb.last_key is None or _sort_key(new[0]) > sb.last_key:
                before = len(sb.closed)
                self._run(sb, new)
                sb.fills.extend(new)
                pending.extend(sb.closed[before:])
            else:  # a late fill: replay this symbol from its stored history
                with localcontext(_CONTEXT):
                    old = {t.trade_id: t for t in (self._trip(ep) for ep in sb.closed)}
                history = sorted(sb.fills + new, key=_sort_key)
                sb = self._books[symbol] = self._new_symbol_book(symbol)
                self._run(sb, history)
                sb.fills = history
                new_ids = set()
                for ep in sb.closed:
                    with localcontext(_CONTEXT):
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
        """Open position per symbol (flat symbols are absent)."""
        out = {}
        for symbol, sb in sorted(self._books.items()):
            pos = self._open_position(sb)
            if pos is not None:
                out[symbol] = pos
        return out

    def open_lots(self, symbol: str) -> list[Lot]:
        pos = self._open_position(self._books[symbol]) if symbol in self._books else None
        return list(pos.lots) if pos is not None else []

    def net_position(self, symbol: str) -> Decimal:
        sb = self._books.get(symbol)
        return sb.pos if sb is not None else ZERO

    @property
    def fill_count(self) -> int:
        return len(self._ids)

    def result(self) -> FifoResult:
        return FifoResult(tuple(self.round_trips()), self.open_positions())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state. Restoring replays the stored fills, so it is exact by construction."""
        fills = [f for sb in self._books.values() for f in sb.fills]
        return {
            "format": STATE_FORMAT,
            "allow_short": self.allow_short,
            "orders": [o.to_dict() for o in self._orders.values()],
            "starting_positions": [sp.to_dict() for sp in self._starting.values()],
            "fills": [f.to_dict() for f in fills],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FifoBook:
        if data.get("format") != STATE_FORMAT:
            raise InvalidInput(f"fifo state: unsupported format {data.get('format')!r}")
        book = cls(
            orders=[OrderMeta.from_dict(o) for o in data["orders"]],
            starting_positions=[StartingPosition.from_dict(s) for s in data["starting_positions"]],
            allow_short=bool(data["allow_short"]),
        )
        book.apply(Fill.from_dict(f) for f in data["fills"])
        return book

    # ----------------------------------------------------------------- engine

    def _new_symbol_book(self, symbol: str) -> _SymbolBook:
        sb = _SymbolBook(symbol)
        sp = self._starting.get(symbol)
        if sp is not None and sp.qty != 0:
            qty = abs(sp.qty)
            src = _Orphan(f"start:{symbol}", sp.as_of, sp.avg_entry_price, qty)
            sb.lot_src.append(src)
            sb.lot_rem.append(qty)
            sb.pos = sp.qty
            ep = _Episode(symbol, 1 if sp.qty > 0 else -1, True)
            ep.opens.append(src)
            sb.episode = ep
        return sb

    def _run(self, sb: _SymbolBook, fills: list[Fill]) -> None:
        """The hot loop: FIFO-match sorted fills of one symbol (quantities only; kept flat for speed)."""
        symbol = sb.symbol
        lot_src = sb.lot_src
        lot_rem = sb.lot_rem
        src_append, rem_append = lot_src.append, lot_rem.append
        src_popleft, rem_popleft = lot_src.popleft, lot_rem.popleft
        closed = sb.closed
        pos = sb.pos
        ep = sb.episode
        opens: list[_Source] = ep.opens if ep is not None else []
        allow_short = self.allow_short
        buy = Side.BUY
        for f in fills:
            qty = f.qty
            is_buy = f.side is buy
            if not allow_short and not is_buy and pos >= 0 and qty > pos:
                # Selling more than is held in a long-only book: the excess closes an orphan lot
                # opened before the data window, at an unknown price.
                excess = qty - pos
                since = ep.opens[0].ts if ep is not None and ep.opens else f.ts
                orphan = _Orphan(f"orphan:{f.fill_id}", since, None, excess)
                lot_src.appendleft(orphan)
                lot_rem.appendleft(excess)
                if ep is None:
                    ep = _Episode(symbol, 1, True)
                    opens = ep.opens
                ep.orphan = True
                opens.insert(0, orphan)
                pos = qty
            if not pos or (pos > 0) is is_buy:
                if ep is None:
                    ep = _Episode(symbol, 1 if is_buy else -1, False)
                    opens = ep.opens
                src_append(f)
                rem_append(qty)
                opens.append(f)
                pos = pos + qty if is_buy else pos - qty
                continue
            assert ep is not None
            abs_pos = pos if pos > 0 else -pos
            close_q = qty if qty <= abs_pos else abs_pos
            m_src, m_close, m_qty = ep.m_src, ep.m_close, ep.m_qty
            remaining = close_q
            while remaining:
                lot_q = lot_rem[0]
                if lot_q <= remaining:
                    m_src.append(src_popleft())
                    m_close.append(f)
                    m_qty.append(rem_popleft())
                    remaining -= lot_q
                else:
                    m_src.append(lot_src[0])
                    m_close.append(f)
                    m_qty.append(remaining)
                    lot_rem[0] = lot_q - remaining
                    break
            ep.closes.append(f)
            pos = pos + close_q if is_buy else pos - close_q
            if not pos:
                closed.append(ep)
                if qty != close_q:  # flip: the rest opens the other direction
                    rest = qty - close_q
                    if ep.part_qty is None:
                        ep.part_qty = {}
                    ep.part_qty[f.fill_id] = close_q
                    ep = _Episode(symbol, 1 if is_buy else -1, False)
                    opens = ep.opens
                    ep.part_qty = {f.fill_id: rest}
                    src_append(f)
                    rem_append(rest)
                    opens.append(f)
                    pos = rest if is_buy else -rest
                else:
                    ep = None
        sb.pos = pos
        sb.episode = ep
        if fills:
            sb.last_key = _sort_key(fills[-1])

    def _trip(self, ep: _Episode) -> RoundTrip:
        """The round-trip record of a closed episode (exact Decimal money; cached)."""
        trip = ep.trip
        if trip is not None:
            return trip
        with localcontext(_CONTEXT):
            trip = ep.trip = self._build_trip(ep)
        return trip

    def _build_trip(self, ep: _Episode) -> RoundTrip:
        qty = entry_notional = exit_notional = gross = ZERO
        long = ep.sign > 0
        lot_rows: list[LotRow] = []
        for src, close, take in zip(ep.m_src, ep.m_close, ep.m_qty, strict=True):
            exit_px = close.price
            entry_px = src.price
            known = entry_px is not None
            if entry_px is None:
                entry_px = exit_px
            pnl = (exit_px - entry_px) * take if long else (entry_px - exit_px) * take
            qty += take
            entry_notional += take * entry_px
            exit_notional += take * exit_px
            gross += pnl
            lot_rows.append((src.fill_id, close.fill_id, take, src.ts, close.ts, entry_px, exit_px, pnl, known))
        part = ep.part_qty
        if part is None:
            open_fills = tuple([(src.fill_id, src.qty) for src in ep.opens])
            close_fills = tuple([(c.fill_id, c.qty) for c in ep.closes])
        else:
            open_fills = tuple([(src.fill_id, part.get(src.fill_id, src.qty)) for src in ep.opens])
            close_fills = tuple([(c.fill_id, part.get(c.fill_id, c.qty)) for c in ep.closes])
        fees = ZERO
        for src in ep.opens:
            if src.fee:
                fees += src.fee if part is None or src.fill_id not in part else src.fee * part[src.fill_id] / src.qty
        for c in ep.closes:
            if c.fee:
                fees += c.fee if part is None or c.fill_id not in part else c.fee * part[c.fill_id] / c.qty
        net = gross - fees
        first = ep.opens[0]
        last = ep.closes[-1]
        return RoundTrip(
            trade_id=trade_id_for(ep.symbol, first.fill_id, [c.fill_id for c in ep.closes]),
            symbol=ep.symbol,
            direction=Direction.LONG if long else Direction.SHORT,
            qty=qty,
            entry_time=first.ts,
            exit_time=last.ts,
            entry_price=entry_notional / qty,
            exit_price=exit_notional / qty,
            gross_pl=gross,
            fees=fees,
            net_pl=net,
            return_pct=float(net) / float(entry_notional) * 100 if entry_notional else None,
            holding_s=(last.ts - first.ts).total_seconds(),
            exit_reason=exit_reason_for(self._orders.get(last.order_id) if last.order_id else None),
            entry_order_id=first.order_id,
            exit_order_id=last.order_id,
            is_orphan=ep.orphan,
            open_fills=open_fills,
            close_fills=close_fills,
            lot_rows=tuple(lot_rows),
        )

    def _trips(self, episodes: Iterable[_Episode]) -> list[RoundTrip]:
        """Records of many episodes under one decimal context and one GC pause."""
        out: list[RoundTrip] = []
        with localcontext(_CONTEXT), _gc_paused():
            for ep in episodes:
                trip = ep.trip
                if trip is None:
                    trip = ep.trip = self._build_trip(ep)
                out.append(trip)
        return out

    def _open_position(self, sb: _SymbolBook) -> OpenPosition | None:
        ep = sb.episode
        if ep is None or not sb.pos:
            return None
        direction = Direction.LONG if sb.pos > 0 else Direction.SHORT
        lots = tuple(
            Lot(symbol=sb.symbol, fill_id=src.fill_id, order_id=src.order_id, direction=direction,
                entry_time=src.ts, entry_price=src.price, qty=ep.used(src), remaining=rem,
                is_orphan=type(src) is _Orphan)
            for src, rem in zip(sb.lot_src, sb.lot_rem, strict=True)
        )
        with localcontext(_CONTEXT):
            realized = ZERO
            for src, close, take in zip(ep.m_src, ep.m_close, ep.m_qty, strict=True):
                if src.price is not None:
                    realized += (close.price - src.price) * take if ep.sign > 0 else (src.price - close.price) * take
            avg: Decimal | None = None
            cost: Decimal | None = None
            if all(lot.entry_price is not None for lot in lots):
                total = sum((lot.remaining for lot in lots), ZERO)
                notional = sum((lot.remaining * lot.entry_price for lot in lots if lot.entry_price is not None), ZERO)
                avg = notional / total
                cost = sb.pos * avg
        first = ep.opens[0]
        return OpenPosition(
            symbol=sb.symbol, direction=direction, qty=sb.pos, avg_entry_price=avg, cost_basis=cost,
            entry_time=first.ts, entry_order_id=first.order_id, realized_pl=realized, lots=lots,
            is_orphan=ep.orphan,
        )

    def _refresh_exit_reasons(self, order_ids: set[str], already: list[_Episode]) -> list[_Episode]:
        """Order metadata that arrives after the fills re-labels the round trips it closed."""
        changed: list[_Episode] = []
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
                starting_positions: Iterable[StartingPosition] = (), allow_short: bool = True) -> FifoResult:
    """Full recomputation: round trips and open positions from a set of fills."""
    book = FifoBook(orders=orders, starting_positions=starting_positions, allow_short=allow_short)
    book.apply(fills)
    return book.result()


def cash_flow_pl(fills: Iterable[Fill]) -> Decimal:
    """Gross cash flow of fills (sells minus buys, fees excluded): the P&L of a book that ends flat."""
    total = ZERO
    with localcontext(_CONTEXT):
        for f in fills:
            total += f.qty * f.price if f.side is Side.SELL else -(f.qty * f.price)
    return total
