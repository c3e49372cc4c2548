"""The lot engine's internals: per-symbol lot state, the FIFO hot loop and the round-trip builder.

:class:`core.fifo.FifoBook` is the public face; this module holds the mutable state it keeps per
symbol and the pure functions that move quantities (:func:`run_fills`) and compute money
(:func:`build_trip`, :func:`open_position`). Rules are in ``core/fifo.py`` and ``docs/core_analytics.md``.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Context, Decimal, Inexact, InvalidOperation

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
)

CONTEXT = Context(prec=60)
# Matching only adds and subtracts quantities: with 60 digits that is exact, and the trap makes sure.
MATCH_CONTEXT = Context(prec=60, traps=[Inexact, InvalidOperation])
sort_key = operator.attrgetter("ts", "fill_id")
ts_key = operator.attrgetter("ts")
id_key = operator.attrgetter("fill_id")
ONE = Decimal(1)


def strictly_increasing(group: Sequence[Fill | EventFill]) -> bool:
    times = list(map(ts_key, group))
    return all(map(operator.lt, times, itertools.islice(times, 1, None)))


def sort_fills(group: list[Fill]) -> None:
    """Sort by ``(ts, fill_id)`` with C-level passes: an ordered group costs one check; otherwise a
    sort on the timestamp alone, and the tuple-keyed sort only if equal timestamps need their ids."""
    if strictly_increasing(group):
        return
    group.sort(key=ts_key)
    if not strictly_increasing(group):
        group.sort(key=sort_key)


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


class LotSource:
    """An open lot that is not (or no longer) a fill as received: a position held before the data
    window (an *orphan*), or a lot whose quantity/price a lot event rewrote (split, spinoff…)."""

    __slots__ = ("fill_id", "order_id", "ts", "price", "qty", "fee", "orphan")

    def __init__(self, fill_id: str, ts: datetime, price: Decimal | None, qty: Decimal, *,
                 order_id: str | None = None, orphan: bool = False) -> None:
        self.fill_id = fill_id
        self.order_id = order_id
        self.ts = ts
        self.price = price
        self.qty = qty
        self.fee = ZERO  # the opening fill's fee stays with that fill in the episode's opens
        self.orphan = orphan


class EventFill:
    """A fill a lot event implies (an expiry closing at 0, shares delivered at the strike…).

    ``price`` ``None`` closes *at cost* (each lot's own price: zero P&L); with ``is_fee`` that cost
    is the round trip's fee (a fee taken in the asset).
    """

    __slots__ = ("fill_id", "ts", "symbol", "side", "qty", "price", "fee", "order_id", "is_fee")

    def __init__(self, fill_id: str, ts: datetime, symbol: str, side: Side, qty: Decimal, price: Decimal | None,
                 *, is_fee: bool = False) -> None:
        self.fill_id = fill_id
        self.ts = ts
        self.symbol = symbol
        self.side = side
        self.qty = qty
        self.price = price
        self.fee = ZERO
        self.order_id: str | None = None
        self.is_fee = is_fee


Source = Fill | LotSource | EventFill
Closer = Fill | EventFill


class Episode:
    """A position of one symbol from flat to flat (mutable, internal).

    The hot loop only records quantities, in flat lists (no per-fill containers, so the cyclic GC
    has nothing to scan): the opening sources, the closing fills and the FIFO matches as three
    parallel lists. Prices, P&L and fees are computed exactly (Decimal) when the round-trip record
    is built.
    """

    __slots__ = ("symbol", "sign", "opens", "closes", "m_src", "m_close", "m_qty", "part_qty", "orphan", "trip",
                 "scale_marks", "carried")

    def __init__(self, symbol: str, sign: int, orphan: bool) -> None:
        self.symbol = symbol
        self.sign = sign
        self.opens: list[Source] = []
        self.closes: list[Closer] = []
        self.m_src: list[Source] = []
        self.m_close: list[Closer] = []
        self.m_qty: list[Decimal] = []
        # quantity this episode used from a fill that it shares with a neighbour (a flip); else fill.qty
        self.part_qty: dict[str, Decimal] | None = None
        self.orphan = orphan
        self.trip: RoundTrip | None = None
        # (matches recorded before, quantity ratio) per split/stock merger inside the episode: the
        # round trip reports its quantity in the units of its end
        self.scale_marks: list[tuple[int, Decimal]] | None = None
        # leading opens carried over as dust from the episode before (see close_at_dust): not this
        # episode's start, which is its first own opening fill
        self.carried = 0

    @property
    def first_open(self) -> Source:
        return self.opens[self.carried] if self.carried < len(self.opens) else self.opens[0]

    def used(self, src: Source) -> Decimal:
        if self.part_qty is not None:
            return self.part_qty.get(src.fill_id, src.qty)
        return src.qty


class SymbolBook:
    __slots__ = ("symbol", "pos", "lot_src", "lot_rem", "episode", "fills", "last_key", "closed", "multiplier", "dust")

    def __init__(self, symbol: str, multiplier: Decimal = ONE, dust: Decimal = ZERO) -> None:
        self.symbol = symbol
        self.pos = ZERO
        self.lot_src: deque[Source] = deque()  # open lots, oldest first ...
        self.lot_rem: deque[Decimal] = deque()  # ... and what remains of each
        self.episode: Episode | None = None
        self.fills: list[Fill] = []
        self.last_key: tuple[datetime, str] | None = None
        self.closed: list[Episode] = []
        self.multiplier = multiplier
        self.dust = dust
        """A position smaller than this (the instrument's minimum increment) is dust: it ends a round trip."""


def run_fills(sb: SymbolBook, fills: Sequence[Fill | EventFill], allow_short: bool) -> None:
    """The hot loop: FIFO-match sorted fills of one symbol (quantities only; kept flat for speed)."""
    symbol = sb.symbol
    lot_src = sb.lot_src
    lot_rem = sb.lot_rem
    src_append, rem_append = lot_src.append, lot_rem.append
    src_popleft, rem_popleft = lot_src.popleft, lot_rem.popleft
    closed = sb.closed
    pos = sb.pos
    ep = sb.episode
    opens: list[Source] = ep.opens if ep is not None else []
    buy = Side.BUY
    dust, neg_dust = sb.dust, -sb.dust
    for f in fills:
        qty = f.qty
        is_buy = f.side is buy
        if not allow_short and not is_buy and pos >= 0 and qty > pos:
            # Selling more than is held in a long-only book: the excess closes an orphan lot
            # opened before the data window, at an unknown price.
            excess = qty - pos
            since = ep.opens[0].ts if ep is not None and ep.opens else f.ts
            orphan = LotSource(f"orphan:{f.fill_id}", since, None, excess, orphan=True)
            lot_src.appendleft(orphan)
            lot_rem.appendleft(excess)
            if ep is None:
                ep = Episode(symbol, 1, True)
                opens = ep.opens
            ep.orphan = True
            opens.insert(0, orphan)
            pos = qty
        if not pos or (pos > 0) is is_buy:
            if ep is None:
                ep = Episode(symbol, 1 if is_buy else -1, False)
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
        if pos and neg_dust < pos < dust:
            ep = close_at_dust(sb, ep, pos)
            opens = ep.opens
            continue
        if not pos:
            closed.append(ep)
            if qty != close_q:  # flip: the rest opens the other direction
                rest = qty - close_q
                if ep.part_qty is None:
                    ep.part_qty = {}
                ep.part_qty[f.fill_id] = close_q
                ep = Episode(symbol, 1 if is_buy else -1, False)
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


def close_at_dust(sb: SymbolBook, ep: Episode, pos: Decimal) -> Episode:
    """A fill left less than the minimum increment (a coin fee's remainder the broker cannot sell): the round
    trip ends here, and the dust lots carry on in a new episode, hidden from the open positions.

    The closed episode keeps the part of each carried lot it used; the new one starts from what remains,
    so every unit is in exactly one round trip and the fill fees split the same way (as in a flip)."""
    sb.closed.append(ep)
    nxt = Episode(sb.symbol, 1 if pos > 0 else -1, ep.orphan)
    part = ep.part_qty if ep.part_qty is not None else {}
    carried: dict[str, Decimal] = {}
    for src, rem in zip(sb.lot_src, sb.lot_rem, strict=True):
        part[src.fill_id] = ep.used(src) - rem
        carried[src.fill_id] = rem
        nxt.opens.append(src)
    ep.part_qty = part
    nxt.part_qty = carried
    nxt.carried = len(nxt.opens)
    return nxt


def _final_qty(ep: Episode) -> Decimal:
    """Matched quantity in the units of the episode's end (each split/merger ratio applied to the
    matches recorded before it)."""
    marks = ep.scale_marks
    if not marks:
        return sum(ep.m_qty, ZERO)
    total = ZERO
    for i, take in enumerate(ep.m_qty):
        for before, ratio in marks:
            if i < before:
                take *= ratio
        total += take
    return total


def _fill_fees(ep: Episode) -> Decimal:
    part = ep.part_qty
    fees = ZERO
    for src in itertools.chain(ep.opens, ep.closes):
        if src.fee:
            fees += src.fee if part is None or src.fill_id not in part else src.fee * part[src.fill_id] / src.qty
    return fees


def build_trip(ep: Episode, orders: dict[str, OrderMeta], multiplier: Decimal) -> RoundTrip:
    """The round-trip record of a closed episode (exact Decimal money; call under :data:`CONTEXT`)."""
    entry_notional = exit_notional = gross = asset_fees = ZERO
    long = ep.sign > 0
    scale = None if multiplier == ONE else multiplier
    lot_rows: list[LotRow] = []
    for src, close, take in zip(ep.m_src, ep.m_close, ep.m_qty, strict=True):
        exit_px = close.price
        entry_px = src.price
        known = entry_px is not None
        if exit_px is None:  # closed at cost: a fee taken in the asset, a conversion
            exit_px = entry_px = entry_px if entry_px is not None else ZERO
            if close.is_fee:  # type: ignore[union-attr]  # only EventFill has no price
                asset_fees += take * entry_px
        elif entry_px is None:
            entry_px = exit_px
        pnl = (exit_px - entry_px) * take if long else (entry_px - exit_px) * take
        if scale is not None:
            pnl *= scale
        entry_notional += take * entry_px
        exit_notional += take * exit_px
        gross += pnl
        lot_rows.append((src.fill_id, close.fill_id, take, src.ts, close.ts, entry_px, exit_px, pnl, known))
    qty = _final_qty(ep)
    part = ep.part_qty
    if part is None:
        open_fills = tuple([(src.fill_id, src.qty) for src in ep.opens])
        close_fills = tuple([(c.fill_id, c.qty) for c in ep.closes])
    else:
        open_fills = tuple([(src.fill_id, part.get(src.fill_id, src.qty)) for src in ep.opens])
        close_fills = tuple([(c.fill_id, part.get(c.fill_id, c.qty)) for c in ep.closes])
    if scale is not None:
        asset_fees *= scale
    fees = _fill_fees(ep) + asset_fees
    net = gross - fees
    first = ep.first_open
    last = ep.closes[-1]
    cost = entry_notional if scale is None else entry_notional * scale
    return RoundTrip(
        trade_id=trade_id_for(ep.symbol, first.fill_id, [c.fill_id for c in ep.closes]),
        symbol=ep.symbol,
        direction=Direction.LONG if long else Direction.SHORT,
        qty=qty,
        entry_time=first.ts,
        exit_time=last.ts,
        entry_price=entry_notional / qty if qty else ZERO,
        exit_price=exit_notional / qty if qty else ZERO,
        gross_pl=gross,
        fees=fees,
        net_pl=net,
        return_pct=float(net) / float(cost) * 100 if cost else None,
        holding_s=(last.ts - first.ts).total_seconds(),
        exit_reason=exit_reason_for(orders.get(last.order_id) if last.order_id else None),
        entry_order_id=first.order_id,
        exit_order_id=last.order_id,
        is_orphan=ep.orphan,
        open_fills=open_fills,
        close_fills=close_fills,
        lot_rows=tuple(lot_rows),
    )


def is_orphan_source(src: Source) -> bool:
    return type(src) is LotSource and src.orphan


def open_position(sb: SymbolBook) -> OpenPosition | None:
    """The open part of a symbol's book (call under :data:`CONTEXT`); ``None`` when flat.

    ``cost_basis`` is in dollars: ``qty × avg_entry_price × multiplier``.
    """
    ep = sb.episode
    if ep is None or not sb.pos:
        return None
    direction = Direction.LONG if sb.pos > 0 else Direction.SHORT
    lots = tuple(
        Lot(symbol=sb.symbol, fill_id=src.fill_id, order_id=src.order_id, direction=direction,
            entry_time=src.ts, entry_price=src.price, qty=src.qty if type(src) is LotSource else ep.used(src),
            remaining=rem, is_orphan=is_orphan_source(src))
        for src, rem in zip(sb.lot_src, sb.lot_rem, strict=True)
    )
    realized = ZERO
    for src, close, take in zip(ep.m_src, ep.m_close, ep.m_qty, strict=True):
        if src.price is not None and close.price is not None:
            realized += (close.price - src.price) * take if ep.sign > 0 else (src.price - close.price) * take
    realized *= sb.multiplier
    avg: Decimal | None = None
    cost: Decimal | None = None
    if all(lot.entry_price is not None for lot in lots):
        total = sum((lot.remaining for lot in lots), ZERO)
        notional = sum((lot.remaining * lot.entry_price for lot in lots if lot.entry_price is not None), ZERO)
        avg = notional / total
        cost = sb.pos * avg * sb.multiplier
    first = ep.first_open
    return OpenPosition(
        symbol=sb.symbol, direction=direction, qty=sb.pos, avg_entry_price=avg, cost_basis=cost,
        entry_time=first.ts, entry_order_id=first.order_id, realized_pl=realized, lots=lots,
        is_orphan=ep.orphan, fill_ids=tuple([src.fill_id for src in ep.opens] + [c.fill_id for c in ep.closes]),
    )
