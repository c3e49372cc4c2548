"""Which working orders protect an open position: its live stop and take-profit (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from core.records import OpenPosition

EXIT_ORDER_TYPES = ("limit", "stop", "stop_limit", "trailing_stop")
"""Order types that can be an exit leg (the manager reads only these from ``orders``)."""
STOP_ORDER_TYPES = frozenset({"stop", "stop_limit", "trailing_stop"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Legs:
    """The live exit legs protecting a position."""

    stop_price: Decimal | None = None
    take_profit_price: Decimal | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenOrder:
    """A working (not terminal) order that could protect a position; ``side``/``order_type`` lower case."""

    order_id: str
    parent_order_id: str | None
    symbol: str
    side: str
    order_type: str
    limit_price: Decimal | None
    stop_price: Decimal | None


def select_legs(position: OpenPosition, orders: Iterable[OpenOrder]) -> Legs:
    """The live stop and take-profit of a position.

    Exit-side working orders on the symbol count; children of the position's entry order (its bracket
    legs) win over unrelated standalone orders. A stop leg gives ``stop_price`` (stop, stop-limit,
    trailing stop); a limit leg gives ``take_profit_price``.
    """
    exit_side = "sell" if position.qty > 0 else "buy"
    candidates = [o for o in orders if o.symbol == position.symbol and o.side.startswith(exit_side)]
    children = [o for o in candidates
                if position.entry_order_id is not None and o.parent_order_id == position.entry_order_id]
    chosen = children or candidates
    stop = next((o.stop_price for o in chosen if o.order_type in STOP_ORDER_TYPES and o.stop_price is not None), None)
    take = next((o.limit_price for o in chosen if o.order_type == "limit" and o.limit_price is not None), None)
    return Legs(stop_price=stop, take_profit_price=take)
