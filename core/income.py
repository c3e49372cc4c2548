"""Fees and income: which trade a broker fee belongs to, and the P&L breakdown lines.

- **Per-trade fees.** A fee activity that names an order (``order_id``) belongs to that order's
  fills, pro rata to their quantity. Alpaca's regulatory fees are posted at the end of the day
  without an order, one line per kind; their documented bases give the rule
  (:data:`REGULATORY_BASES`): TAF is charged on sells per share, the SEC/REG fee on sells per
  dollar sold, ORF and the OCC fee per option contract traded, CAT per share or contract traded.
  Such a fee is spread over that New York day's fills that carry its base (only the named symbol's
  when the line names one, as the simulator's do), pro rata to it. A crypto fee in dollars (``CFEE``
  with a ``net_amount``) is a sale's, so it goes by the dollars sold. A fee
  with neither (or whose day has no such fill) stays **unallocated** on the account.
- **Income lines.** Dividends, withholding, interest, fees and other cash are summed per
  :class:`core.activity_types.PnlLine` from the activities' own amounts, never folded into trading P&L.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, localcontext
from enum import StrEnum

from core.activity_types import NEW_YORK, PnlLine, StatusEffect, effect_of, status_effect
from core.errors import InvalidInput
from core.instruments import AssetClass, instrument_for
from core.lots import CONTEXT
from core.records import ZERO, Fill, RoundTrip, Side, to_decimal, to_utc


@dataclass(frozen=True, slots=True)
class CashEntry:
    """One non-fill activity's cash as the breakdown needs it (built from an activity record)."""

    entry_id: str
    ts: datetime
    activity_type: str
    amount: Decimal
    """Signed ``net_amount`` (a fee or a withholding is negative)."""
    symbol: str | None = None
    order_id: str | None = None
    description: str | None = None
    status: str | None = None

    def __post_init__(self) -> None:
        row = f"cash entry {self.entry_id!r}"
        if not isinstance(self.entry_id, str) or not self.entry_id:
            raise InvalidInput(f"{row}: entry_id must be a non-empty string")
        object.__setattr__(self, "ts", to_utc(self.ts, "ts", row))
        object.__setattr__(self, "amount", to_decimal(self.amount, "amount", row))


class FeeBasis(StrEnum):
    """What a regulatory fee is charged on (Alpaca "Regulatory Fees")."""

    SHARES_SOLD = "shares_sold"
    NOTIONAL_SOLD = "notional_sold"
    CONTRACTS_TRADED = "contracts_traded"
    UNITS_TRADED = "units_traded"


REGULATORY_BASES: tuple[tuple[re.Pattern[str], FeeBasis], ...] = (
    (re.compile(r"\bTAF\b|TRADING ACTIVITY", re.I), FeeBasis.SHARES_SOLD),
    (re.compile(r"\b(REG|SEC)\b|SECTION 31", re.I), FeeBasis.NOTIONAL_SOLD),
    (re.compile(r"\b(ORF|OCC)\b|OPTIONS REGULATORY|OPTIONS CLEARING", re.I), FeeBasis.CONTRACTS_TRADED),
    (re.compile(r"\bCAT\b|CONSOLIDATED AUDIT", re.I), FeeBasis.UNITS_TRADED),
)


def regulatory_basis(description: str | None) -> FeeBasis | None:
    """The basis a fee line's description names (``None``: not a recognised regulatory fee)."""
    for pattern, basis in REGULATORY_BASES:
        if description and pattern.search(description):
            return basis
    return None


def _weight(f: Fill, basis: FeeBasis) -> Decimal:
    is_option = instrument_for(f.symbol).asset_class is AssetClass.US_OPTION
    if basis is FeeBasis.SHARES_SOLD:
        return f.qty if f.side is Side.SELL else ZERO
    if basis is FeeBasis.NOTIONAL_SOLD:
        return f.qty * f.price * instrument_for(f.symbol).multiplier if f.side is Side.SELL else ZERO
    if basis is FeeBasis.CONTRACTS_TRADED:
        return f.qty if is_option else ZERO
    return f.qty


@dataclass(frozen=True, slots=True)
class FeeAllocation:
    """Fees per fill id (positive = cost) and the fees no trade could be found for."""

    by_fill: dict[str, Decimal] = field(default_factory=dict)
    unallocated: tuple[CashEntry, ...] = ()

    @property
    def unallocated_total(self) -> Decimal:
        return sum((-e.amount for e in self.unallocated), ZERO)


def _ny_day(ts: datetime) -> date:
    return ts.astimezone(NEW_YORK).date()


def allocate_fees(entries: Iterable[CashEntry], fills: Sequence[Fill]) -> FeeAllocation:
    """Attribute fee activities to fills (rules in the module docstring); other entries are skipped."""
    by_order: dict[str, list[Fill]] = defaultdict(list)
    by_day: dict[date, list[Fill]] = defaultdict(list)
    for f in fills:
        if f.order_id:
            by_order[f.order_id].append(f)
        by_day[_ny_day(f.ts)].append(f)
    out: dict[str, Decimal] = defaultdict(lambda: ZERO)
    unallocated: list[CashEntry] = []
    with localcontext(CONTEXT):
        for e in entries:
            if effect_of(e.activity_type).line is not PnlLine.FEE or status_effect(e.status) is StatusEffect.IGNORE:
                continue
            if e.activity_type.upper() == "CFEE" and not e.amount:
                continue  # a fee in the asset: the lot engine books it (AssetFee), its cash is 0
            cost = -e.amount
            # a crypto fee in dollars is the fee of a sale (the asset received is the quote currency)
            basis = FeeBasis.NOTIONAL_SOLD if e.activity_type.upper() == "CFEE" else regulatory_basis(e.description)
            if e.order_id and e.order_id in by_order:
                targets = [(f, f.qty) for f in by_order[e.order_id]]
            elif basis is not None:  # the day's fills carrying the fee's base (of its symbol, if it names one)
                targets = [(f, _weight(f, basis)) for f in by_day.get(_ny_day(e.ts), ())
                           if e.symbol is None or f.symbol == e.symbol]
            else:
                targets = []
            total = sum((w for _, w in targets), ZERO)
            if not total:
                unallocated.append(e)
                continue
            carriers = [(f, w) for f, w in targets if w]
            given = ZERO
            for f, w in carriers[:-1]:
                share = cost * w / total
                out[f.fill_id] += share
                given += share
            out[carriers[-1][0].fill_id] += cost - given  # the remainder: the shares add up to the line exactly
    return FeeAllocation(dict(out), tuple(unallocated))


def fees_by_trip(trips: Iterable[RoundTrip], allocation: FeeAllocation, fills: Sequence[Fill]) -> dict[str, Decimal]:
    """Allocated fees per trade id: each fill's fee share, pro rata to the part of it the trip used."""
    qty_of = {f.fill_id: f.qty for f in fills}
    out: dict[str, Decimal] = {}
    with localcontext(CONTEXT):
        for t in trips:
            total = ZERO
            for fill_id, used in (*t.open_fills, *t.close_fills):
                fee = allocation.by_fill.get(fill_id)
                if fee:
                    full = qty_of.get(fill_id, used)
                    total += fee if used == full else fee * used / full
            if total:
                out[t.trade_id] = total
    return out


@dataclass(frozen=True, slots=True)
class PnlBreakdown:
    """Account P&L by line, in dollars; deposits beside it, not in it."""

    trading_gross: Decimal
    trade_fees: Decimal
    """Fees inside the round trips (fill fees, fees in the asset) plus broker fees allocated to them."""
    unallocated_fees: Decimal
    dividends: Decimal
    withholding: Decimal
    interest: Decimal
    other: Decimal
    deposits: Decimal
    """Net external flows (deposits minus withdrawals, journals, transfers): not P&L."""

    @property
    def net(self) -> Decimal:
        return (self.trading_gross - self.trade_fees - self.unallocated_fees + self.dividends + self.withholding
                + self.interest + self.other)


def pnl_breakdown(trips: Iterable[RoundTrip], entries: Iterable[CashEntry], fills: Sequence[Fill] = ()) -> PnlBreakdown:
    """Sum round trips and cash activities into the breakdown lines (canceled entries count nothing)."""
    trips = list(trips)
    entries = [e for e in entries if status_effect(e.status) is not StatusEffect.IGNORE]
    allocation = allocate_fees(entries, fills)
    lines: dict[PnlLine, Decimal] = defaultdict(lambda: ZERO)
    deposits = ZERO
    with localcontext(CONTEXT):
        for e in entries:
            effect = effect_of(e.activity_type)
            if effect.external_flow:
                deposits += e.amount
            elif effect.books_cash and effect.line not in (PnlLine.TRADING, PnlLine.FEE, PnlLine.NONE):
                lines[effect.line] += e.amount
        allocated = sum(allocation.by_fill.values(), ZERO)
        return PnlBreakdown(
            trading_gross=sum((t.gross_pl for t in trips), ZERO),
            trade_fees=sum((t.fees for t in trips), ZERO) + allocated,
            unallocated_fees=allocation.unallocated_total,
            dividends=lines[PnlLine.DIVIDEND],
            withholding=lines[PnlLine.WITHHOLDING],
            interest=lines[PnlLine.INTEREST],
            other=lines[PnlLine.OTHER],
            deposits=deposits,
        )
