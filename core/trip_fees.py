"""Broker fees posted after the trade, charged to the round trips they belong to (pure).

Alpaca posts regulatory fees (REG/SEC, TAF, ORF, CAT) and a crypto sale's USD fee as activities of
their own, dated the trade's day and posted after it, usually after the round trip has closed. The cash
ledger books their cash on arrival; this module gives each one's cost to the fills it was charged on
(:func:`core.income.allocate_fees`: by order, else by the documented base among that New York day's
fills of the named symbol) and so to the round trips those fills belong to, pro rata to the quantity a
trip used. A fee with no fill to carry it stays on the account (``unallocated``).

The allocation is kept per *scope* (New York day, symbol): a fee line, or a late fill of a day that
already has fee lines, re-allocates its scope only, and :class:`core.fifo.FifoBook` re-emits the
round trips whose fills' shares changed. Everything here is derived from the fee lines and the fills,
so a rebuild or a restore from a checkpoint gives the same shares.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal, localcontext
from typing import Any

from core.activity_types import NEW_YORK, PnlLine, StatusEffect, effect_of, status_effect
from core.income import CashEntry, allocate_fees
from core.lots import CONTEXT
from core.records import ZERO, Fill, RoundTrip

Scope = tuple[date, str | None]
"""(New York day, symbol or ``None`` for a fee line that names none)."""
FillsOf = Callable[[date, str | None], Sequence[Fill]]
"""The book's fills of one New York day (of one symbol, or of all for ``None``)."""


def ny_day(entry_or_fill: CashEntry | Fill) -> date:
    return entry_or_fill.ts.astimezone(NEW_YORK).date()


def is_trade_fee(entry: CashEntry) -> bool:
    """A fee line with cash to give to trades (a fee taken in the coin is the lot engine's, not this)."""
    return (effect_of(entry.activity_type).line is PnlLine.FEE and status_effect(entry.status) is not StatusEffect.IGNORE
            and bool(entry.amount))


def fee_to_dict(entry: CashEntry) -> dict[str, Any]:
    """A fee line as the book's checkpoint stores it."""
    return {"id": entry.entry_id, "ts": entry.ts.isoformat(), "type": entry.activity_type, "amount": str(entry.amount),
            "symbol": entry.symbol, "order_id": entry.order_id, "description": entry.description,
            "status": entry.status}


def fee_from_dict(data: dict[str, Any]) -> CashEntry:
    return CashEntry(data["id"], datetime.fromisoformat(data["ts"]), data["type"], Decimal(data["amount"]),
                     symbol=data.get("symbol"), order_id=data.get("order_id"), description=data.get("description"),
                     status=data.get("status"))


class TripFees:
    """Fee lines by scope and each fill's share of them."""

    __slots__ = ("entries", "by_scope", "by_fill", "unallocated", "scope_share")

    def __init__(self) -> None:
        self.entries: dict[str, CashEntry] = {}
        self.by_scope: dict[Scope, list[str]] = defaultdict(list)
        self.by_fill: dict[str, tuple[Decimal, Decimal]] = {}
        """fill id -> (its fee cost, its quantity)."""
        self.unallocated: dict[str, CashEntry] = {}
        """Fee lines no fill could carry (per scope's latest allocation)."""
        self.scope_share: dict[tuple[Scope, str], Decimal] = {}
        """(scope, fill id) -> that scope's share of the fill's fee cost."""

    def __bool__(self) -> bool:
        return bool(self.entries)

    def add(self, entries: Iterable[CashEntry]) -> set[Scope]:
        """Register new fee lines (others and known ids are ignored); the scopes they make stale."""
        stale: set[Scope] = set()
        for e in entries:
            if e.entry_id in self.entries or not is_trade_fee(e):
                continue
            self.entries[e.entry_id] = e
            scope = (ny_day(e), e.symbol)
            self.by_scope[scope].append(e.entry_id)
            stale.add(scope)
        return stale

    def touched_by(self, fills: Iterable[Fill]) -> set[Scope]:
        """Scopes holding fee lines that new fills belong to (a fill that arrives after its day's fee)."""
        if not self.entries:
            return set()
        out: set[Scope] = set()
        for f in fills:
            day = ny_day(f)
            out.update(s for s in ((day, f.symbol), (day, None)) if s in self.by_scope)
        return out

    def reallocate(self, scopes: Iterable[Scope], fills_of: FillsOf) -> set[str]:
        """Allocate each scope's fee lines over its fills again; the fill ids whose share changed."""
        changed: set[str] = set()
        for scope in scopes:
            day, symbol = scope
            fills = fills_of(day, symbol)
            entries = [self.entries[i] for i in self.by_scope.get(scope, ())]
            allocation = allocate_fees(entries, fills)
            for e in entries:
                self.unallocated.pop(e.entry_id, None)
            for e in allocation.unallocated:
                self.unallocated[e.entry_id] = e
            fresh = {f.fill_id: allocation.by_fill[f.fill_id] for f in fills if f.fill_id in allocation.by_fill}
            # a scope's shares replace what the same fills had from it; a fill's shares of several scopes add up
            for f in fills:
                old = self.scope_share.get((scope, f.fill_id), ZERO)
                new = fresh.get(f.fill_id, ZERO)
                if old == new:
                    continue
                self.scope_share[(scope, f.fill_id)] = new
                amount = self.by_fill.get(f.fill_id, (ZERO, f.qty))[0] - old + new
                if amount:
                    self.by_fill[f.fill_id] = (amount, f.qty)
                else:
                    self.by_fill.pop(f.fill_id, None)
                changed.add(f.fill_id)
        return changed

    def charge(self, trip: RoundTrip, multiplier: Decimal) -> RoundTrip:
        """``trip`` with its fills' fee shares added to its fees (and taken from its net P&L and return)."""
        by_fill = self.by_fill
        if not by_fill:
            return trip
        extra = ZERO
        with localcontext(CONTEXT):
            for fill_id, used in (*trip.open_fills, *trip.close_fills):
                share = by_fill.get(fill_id)
                if share is not None:
                    amount, qty = share
                    extra += amount if used == qty else amount * used / qty  # a flip's fill: pro rata
            if not extra:
                return trip
            net = trip.net_pl - extra
            cost = trip.entry_price * trip.qty * multiplier  # what core.lots.build_trip divides by
        return replace(trip, fees=trip.fees + extra, net_pl=net,
                       return_pct=float(net) / float(cost) * 100 if cost else None)
