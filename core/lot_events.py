"""How each lot event (``core.corporate_actions``) changes the per-symbol lot state.

Two mechanisms, so that every event keeps the engine's guarantees:

- **implied fills** (:class:`core.lots.EventFill`) go through the same FIFO hot loop as real fills:
  an expiry or a worthless removal closes at 0, cash in lieu and cash mergers close at
  ``cash / qty``, exercise/assignment deliver shares at the strike, a fee in the asset closes at
  cost as a fee, a stock transfer opens or closes at its price;
- **lot rewrites** change lots in place, keeping each lot's cost and entry time: a split scales
  quantities and prices, a symbol change or stock merger moves the open position to the new symbol,
  a spinoff moves part of each lot's cost to new lots in the spun-off symbol.

Call under ``core.lots.CONTEXT``: prices like ``cash / qty`` are money (60 digits); quantities are
rounded to :data:`QTY_QUANTUM` so later matching stays exact.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from decimal import Decimal

from core.corporate_actions import (
    AssetFee,
    CashInLieu,
    LotEvent,
    Merger,
    OptionAssignment,
    OptionCashSettlement,
    OptionExercise,
    OptionExpiry,
    Spinoff,
    Split,
    StockTransfer,
    SymbolChange,
    Worthless,
)
from core.errors import InvalidInput
from core.instruments import OPTION_MULTIPLIER, OptionRight, parse_occ
from core.lots import ONE, EventFill, LotSource, Source, SymbolBook, is_orphan_source, run_fills
from core.records import ZERO, Side

QTY_QUANTUM = Decimal("0.000000001")
"""Quantities a lot event computes (split, merger, spinoff shares) are rounded to 9 decimals, the
broker's precision, so matching stays exact."""

BookFor = Callable[[str], SymbolBook]


def _held(sb: SymbolBook) -> Decimal:
    return sb.pos if sb.pos > 0 else -sb.pos


def _close(sb: SymbolBook, ev: LotEvent, qty: Decimal | None, price: Decimal | None, *, is_fee: bool = False,
           fill_id: str | None = None) -> None:
    """Close ``qty`` (all when ``None``; never more than is held, so an event never flips a position)."""
    held = _held(sb)
    take = held if qty is None or qty > held else qty
    if not take:
        return
    side = Side.SELL if sb.pos > 0 else Side.BUY
    f = EventFill(fill_id or ev.event_id, ev.ts, sb.symbol, side, take, price, is_fee=is_fee)
    run_fills(sb, [f], True)


def _rewrite(sb: SymbolBook, fn: Callable[[Source, Decimal], tuple[Decimal | None, Decimal, Decimal]]) -> None:
    """Replace every open lot by ``fn(lot, remaining) -> (price, shown qty, remaining)``; keeps ids and times."""
    ep = sb.episode
    assert ep is not None
    new_src: deque[Source] = deque()
    new_rem: deque[Decimal] = deque()
    for src, rem in zip(sb.lot_src, sb.lot_rem, strict=True):
        price, shown, left = fn(src, rem)
        if not left:
            continue  # a lot that rounds to nothing (below the broker's precision) is gone
        shown_src = LotSource(src.fill_id, src.ts, price, shown, order_id=src.order_id, orphan=is_orphan_source(src))
        new_src.append(shown_src)
        new_rem.append(left)
    sb.lot_src, sb.lot_rem = new_src, new_rem
    total = sum(new_rem, ZERO)
    sb.pos = total if ep.sign > 0 else -total
    if not total:  # everything rounded away: the position is flat without a closing fill
        sb.episode = None


def _shown(sb: SymbolBook, src: Source) -> Decimal:
    ep = sb.episode
    return src.qty if type(src) is LotSource or ep is None else ep.used(src)


def scale(sb: SymbolBook, ratio: Decimal) -> None:
    """Multiply every open lot's quantity by ``ratio`` and divide its price by it (cost kept)."""
    if sb.episode is None or ratio == ONE:
        return

    def fn(src: Source, rem: Decimal) -> tuple[Decimal | None, Decimal, Decimal]:
        left = (rem * ratio).quantize(QTY_QUANTUM)
        price = None if src.price is None or not left else src.price * rem / left  # the lot's cost is unchanged
        return price, (_shown(sb, src) * ratio).quantize(QTY_QUANTUM), left

    ep = sb.episode
    if ep.scale_marks is None:
        ep.scale_marks = []
    ep.scale_marks.append((len(ep.m_qty), ratio))
    _rewrite(sb, fn)


def _reprice(sb: SymbolBook, fn: Callable[[Decimal], Decimal]) -> None:
    """Change every known lot price (quantities unchanged)."""
    if sb.episode is None:
        return
    _rewrite(sb, lambda src, rem: (None if src.price is None else fn(src.price), _shown(sb, src), rem))


def move(src_sb: SymbolBook, dst_sb: SymbolBook, ev: LotEvent, allow_short: bool) -> None:
    """Move the open position of ``src_sb`` to ``dst_sb``.

    Into a flat symbol the episode itself moves (the same round trip continues under the new symbol).
    Into a symbol already held, the old position closes at cost (a zero-P&L round trip) and its lots
    join the held position with their own prices and entry times.
    """
    ep = src_sb.episode
    if ep is None:
        return
    if dst_sb.episode is None and not dst_sb.pos:
        dst_sb.lot_src, dst_sb.lot_rem, dst_sb.pos, dst_sb.episode = (
            src_sb.lot_src, src_sb.lot_rem, src_sb.pos, ep)
        ep.symbol = dst_sb.symbol
        src_sb.lot_src, src_sb.lot_rem, src_sb.pos, src_sb.episode = deque(), deque(), ZERO, None
        return
    side = Side.BUY if src_sb.pos > 0 else Side.SELL
    arriving = [EventFill(f"{ev.event_id}:{src.fill_id}", src.ts, dst_sb.symbol, side, rem, src.price)
                for src, rem in zip(src_sb.lot_src, src_sb.lot_rem, strict=True)]
    _close(src_sb, ev, None, None)
    run_fills(dst_sb, arriving, allow_short)


def _split(ev: Split, book_for: BookFor, allow_short: bool) -> None:
    scale(book_for(ev.symbol), ev.ratio)


def _cash_in_lieu(ev: CashInLieu, book_for: BookFor, allow_short: bool) -> None:
    sb = book_for(ev.symbol)
    # the fraction at the split's own precision: a remainder given to more digits (2500 / 30 shares)
    # must not leave a sliver of a share the broker no longer holds
    qty = ev.qty.quantize(QTY_QUANTUM) or ev.qty
    _close(sb, ev, qty, ev.cash / (qty * sb.multiplier))


def _symbol_change(ev: SymbolChange, book_for: BookFor, allow_short: bool) -> None:
    move(book_for(ev.symbol), book_for(ev.new_symbol), ev, allow_short)


def _merger(ev: Merger, book_for: BookFor, allow_short: bool) -> None:
    sb = book_for(ev.symbol)
    held = _held(sb)
    if not held:
        return
    if ev.new_symbol is None:  # cash only: a sale of the whole position
        _close(sb, ev, None, ev.cash / (held * sb.multiplier))
        return
    if ev.cash:  # stock and cash: the cash is a return of capital, per share held
        per_unit = ev.cash / (held * sb.multiplier)
        _reprice(sb, lambda price: price - per_unit)
    scale(sb, ev.ratio)
    move(sb, book_for(ev.new_symbol), ev, allow_short)


def _spinoff(ev: Spinoff, book_for: BookFor, allow_short: bool) -> None:
    parent = book_for(ev.symbol)
    ep = parent.episode
    if ep is None:
        return
    child = book_for(ev.new_symbol)
    held = _held(parent)
    fraction = ev.basis_fraction
    if ev.new_price is not None:  # the broker's allocated cost per new share: fraction of the known cost
        cost = sum((src.price * rem for src, rem in zip(parent.lot_src, parent.lot_rem, strict=True)
                    if src.price is not None), ZERO)
        fraction = min(ONE, ev.new_qty * ev.new_price / cost) if cost > 0 else ZERO
    side = Side.BUY if parent.pos > 0 else Side.SELL
    arriving: list[EventFill] = []
    given = ZERO
    last = len(parent.lot_rem) - 1
    for i, (src, rem) in enumerate(zip(parent.lot_src, parent.lot_rem, strict=True)):
        # each parent lot gets its share of the new shares; the last takes the rounding remainder
        qty = ev.new_qty - given if i == last else (ev.new_qty * rem / held).quantize(QTY_QUANTUM)
        given += qty
        if qty <= 0:
            continue
        price = None if src.price is None else src.price * rem * fraction / qty
        arriving.append(EventFill(f"{ev.event_id}:{src.fill_id}", src.ts, child.symbol, side, qty, price))
    keep = ONE - fraction
    if fraction:
        _reprice(parent, lambda price: price * keep)
    run_fills(child, arriving, allow_short)


def _worthless(ev: Worthless, book_for: BookFor, allow_short: bool) -> None:
    _close(book_for(ev.symbol), ev, None, ZERO)


def _expiry(ev: OptionExpiry, book_for: BookFor, allow_short: bool) -> None:
    _close(book_for(ev.symbol), ev, ev.contracts, ZERO)


def _deliver(ev: OptionExercise | OptionAssignment, book_for: BookFor, allow_short: bool, *, buys_on_call: bool) -> None:
    sb = book_for(ev.symbol)
    contract = parse_occ(ev.symbol)
    _close(sb, ev, ev.contracts, ZERO)
    buys = (contract.right is OptionRight.CALL) is buys_on_call
    shares = ev.contracts * OPTION_MULTIPLIER
    underlying = book_for(contract.underlying)
    f = EventFill(f"{ev.event_id}:shares", ev.ts, underlying.symbol, Side.BUY if buys else Side.SELL, shares,
                  contract.strike)
    run_fills(underlying, [f], allow_short)


def _exercise(ev: OptionExercise, book_for: BookFor, allow_short: bool) -> None:
    _deliver(ev, book_for, allow_short, buys_on_call=True)  # a call exercised buys; a put sells


def _assignment(ev: OptionAssignment, book_for: BookFor, allow_short: bool) -> None:
    _deliver(ev, book_for, allow_short, buys_on_call=False)  # an assigned call sells; a put buys


def _cash_settlement(ev: OptionCashSettlement, book_for: BookFor, allow_short: bool) -> None:
    sb = book_for(ev.symbol)
    held = _held(sb)
    contracts = held if ev.contracts is None or ev.contracts > held else ev.contracts
    if contracts:
        _close(sb, ev, contracts, abs(ev.cash) / (contracts * sb.multiplier))


def _asset_fee(ev: AssetFee, book_for: BookFor, allow_short: bool) -> None:
    sb = book_for(ev.symbol)
    held = sb.pos if sb.pos > 0 else ZERO
    if held:  # units held leave at their cost: the fee of their round trip
        _close(sb, ev, ev.qty, None, is_fee=True)
    excess = ev.qty - held
    if excess > 0:
        # The fee is posted after the day's sales sold the units it is taken from: the broker's position
        # goes below zero by the rest (and the next buy covers it). A short at price 0: covering it
        # costs what the fee took.
        run_fills(sb, [EventFill(f"{ev.event_id}:excess", ev.ts, sb.symbol, Side.SELL, excess, ZERO)], True)


def _transfer(ev: StockTransfer, book_for: BookFor, allow_short: bool) -> None:
    sb = book_for(ev.symbol)
    if ev.qty > 0:
        run_fills(sb, [EventFill(ev.event_id, ev.ts, sb.symbol, Side.BUY, ev.qty, ev.price)], allow_short)
    elif sb.pos > 0:
        _close(sb, ev, -ev.qty, ev.price)


_APPLY: dict[type, Callable[..., None]] = {
    Split: _split, CashInLieu: _cash_in_lieu, SymbolChange: _symbol_change, Merger: _merger, Spinoff: _spinoff,
    Worthless: _worthless, OptionExpiry: _expiry, OptionExercise: _exercise, OptionAssignment: _assignment,
    OptionCashSettlement: _cash_settlement, AssetFee: _asset_fee, StockTransfer: _transfer,
}


def apply_event(ev: LotEvent, book_for: BookFor, allow_short: bool) -> None:
    """Apply one lot event to the books (``book_for(symbol)`` creates a symbol's book on first use)."""
    fn = _APPLY.get(type(ev))
    if fn is None:
        raise InvalidInput(f"lot event {getattr(ev, 'event_id', ev)!r}: not a lot event")
    fn(ev, book_for, allow_short)


def event_cash_flow(ev: LotEvent, multiplier_of: Callable[[str], Decimal]) -> Decimal:
    """The cash an event moves, from its own terms only (for an independent cash ledger).

    A stock transfer in counts as a deposit spent on the shares (−value), out as a sale (+value), so
    that the ledger ends at the P&L of a flat book; corporate actions without cash move none.
    """
    if isinstance(ev, CashInLieu | Merger):
        return ev.cash
    if isinstance(ev, OptionCashSettlement):
        return ev.cash
    if isinstance(ev, OptionExercise | OptionAssignment):
        contract = parse_occ(ev.symbol)
        buys = (contract.right is OptionRight.CALL) is isinstance(ev, OptionExercise)
        value = ev.contracts * OPTION_MULTIPLIER * contract.strike
        return -value if buys else value
    if isinstance(ev, StockTransfer):
        return -(ev.qty * ev.price * multiplier_of(ev.symbol))
    return ZERO
