"""Valuing open positions at their marks: the ``open_trades_<slug>`` rows and the account's totals (pure).

``equity = cash + long_market_value + short_market_value`` (short market value is negative). A
position without a mark is carried at its cost basis, so it adds nothing to unrealized P&L. Every
price × quantity is multiplied by the instrument's multiplier (100 per option contract,
:func:`core.instruments.multiplier_for`): marks and average prices are per share, values in dollars.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from core.errors import InvalidInput
from core.exit_legs import Legs
from core.instruments import multiplier_for
from core.records import OpenPosition

ZERO = Decimal(0)


class PriceSource(StrEnum):
    """Where a mark came from (stored in ``open_trades_<slug>.price_source``)."""

    ZMQ = "zmq"
    """The live price feed."""
    REST = "rest"
    """The broker's ``/v2/positions`` ``current_price`` (fallback when the feed is silent)."""
    FILL = "fill"
    """The last entry price (nothing else known)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Mark:
    """The price used to value one symbol, when it was observed, and whether it is stale."""

    price: Decimal
    ts: datetime | None
    source: PriceSource
    stale: bool = False

    def as_stale(self) -> Mark:
        return Mark(price=self.price, ts=self.ts, source=self.source, stale=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenTradeRow:
    """Everything one ``open_trades_<slug>`` row holds."""

    symbol: str
    side: str
    qty: Decimal
    avg_entry_price: Decimal
    cost_basis: Decimal
    entry_time: datetime
    mark_price: Decimal | None
    mark_ts: datetime | None
    price_source: str | None
    price_stale: bool
    market_value: Decimal | None
    unrealized_pl: Decimal | None
    unrealized_plpc: float | None
    prev_close: Decimal | None
    day_change: Decimal | None
    day_change_pct: float | None
    exposure: Decimal | None
    weight: float | None
    entry_order_id: str | None
    stop_price: Decimal | None
    take_profit_price: Decimal | None
    broker_qty: Decimal | None
    qty_mismatch: bool
    lots: list[dict[str, Any]]
    provisional_fills: int = 0
    """Fills of the position only the live stream has reported so far (docs/freshness.md): 0 once the
    broker's activities confirm them all."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountValue:
    """The account's totals at one set of marks (the inputs of an equity snapshot)."""

    cash: Decimal
    market_values: tuple[Decimal, ...]
    unrealized_pl: Decimal
    realized_pl: Decimal
    net_deposits: Decimal


def multiplier_of(symbol: str) -> Decimal:
    """Dollars per unit of price × quantity of a held symbol (1 for one the instrument table cannot read)."""
    try:
        return multiplier_for(symbol)
    except InvalidInput:
        return Decimal(1)


def _ratio(num: Decimal, den: Decimal) -> float | None:
    if den == 0:
        return None
    value = float(num / den)
    return value if math.isfinite(value) else None


def value_positions(
    positions: Mapping[str, OpenPosition],
    marks: Mapping[str, Mark],
    *,
    equity: Decimal | None,
    prev_close: Mapping[str, Decimal] | None = None,
    legs: Mapping[str, Legs] | None = None,
    broker_qty: Mapping[str, Decimal] | None = None,
    provisional: Mapping[str, int] | None = None,
) -> list[OpenTradeRow]:
    """One row per open position (by symbol), valued at ``marks`` (unpriced symbols keep ``None`` values).

    Unrealized P&L is ``(mark - avg_entry) * qty * multiplier`` (signed qty, so shorts gain when the price
    falls); the percentage is relative to ``|cost_basis|``. Day change is ``(mark - prev_close) * qty * multiplier``.
    Exposure is ``|market_value|``; weight is ``market_value / equity``. Lots of unknown price (orphans)
    value at the mark, so they contribute no unrealized P&L. ``provisional``: symbol -> fills of the
    position not confirmed by REST yet (absent: none).
    """
    prev_close = prev_close or {}
    legs = legs or {}
    broker_qty = broker_qty or {}
    provisional = provisional or {}
    return [_row(positions[s], marks.get(s), equity, prev_close.get(s), legs.get(s, Legs()), broker_qty.get(s),
                 provisional.get(s, 0)) for s in sorted(positions)]


def _row(pos: OpenPosition, mark: Mark | None, equity: Decimal | None, pc: Decimal | None, leg: Legs,
         bq: Decimal | None, provisional: int) -> OpenTradeRow:
    qty = pos.qty
    units = qty * multiplier_of(pos.symbol)
    avg = pos.avg_entry_price
    if avg is None:
        avg = mark.price if mark is not None else ZERO
    cost = units * avg
    mv = upl = day = exposure = None
    upl_pc = day_pc = weight = None
    if mark is not None:
        mv = units * mark.price
        upl = mv - cost
        upl_pc = _ratio(upl * 100, abs(cost))
        exposure = abs(mv)
        if pc is not None:
            day = (mark.price - pc) * units
            day_pc = _ratio((mark.price - pc) * 100, pc)
        if equity is not None:
            weight = _ratio(mv, equity)
    return OpenTradeRow(
        symbol=pos.symbol, side=pos.direction.value, qty=qty, avg_entry_price=avg, cost_basis=cost,
        entry_time=pos.entry_time, mark_price=mark.price if mark else None, mark_ts=mark.ts if mark else None,
        price_source=str(mark.source) if mark else None, price_stale=mark.stale if mark else True,
        market_value=mv, unrealized_pl=upl, unrealized_plpc=upl_pc, prev_close=pc, day_change=day,
        day_change_pct=day_pc, exposure=exposure, weight=weight, entry_order_id=pos.entry_order_id,
        stop_price=leg.stop_price, take_profit_price=leg.take_profit_price, broker_qty=bq,
        qty_mismatch=bq is not None and bq != qty, lots=[lot.to_dict() for lot in pos.lots],
        provisional_fills=provisional)


def account_value(positions: Mapping[str, OpenPosition], marks: Mapping[str, Mark], *, cash: Decimal,
                  realized_closed: Decimal, net_deposits: Decimal) -> AccountValue:
    """Totals at ``marks``: a marked position at ``qty * mark * multiplier``, an unmarked one at its cost basis.

    Realized P&L is the closed trips' plus the partial closes inside the open positions.
    """
    mvs: list[Decimal] = []
    upl = ZERO
    for symbol, pos in positions.items():
        mark = marks.get(symbol)
        if mark is not None:
            units = pos.qty * multiplier_of(symbol)
            mv = units * mark.price
            avg = pos.avg_entry_price
            upl += mv - units * (avg if avg is not None else mark.price)
        else:
            mv = pos.cost_basis if pos.cost_basis is not None else ZERO
        mvs.append(mv)
    realized = realized_closed + sum((p.realized_pl for p in positions.values()), ZERO)
    return AccountValue(cash=cash, market_values=tuple(mvs), unrealized_pl=upl, realized_pl=realized,
                        net_deposits=net_deposits)
