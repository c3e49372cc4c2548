"""Valuing open positions at their marks, and the account's totals."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from core.exit_legs import Legs, OpenOrder, select_legs
from core.records import Direction, Lot, OpenPosition
from core.valuation import Mark, PriceSource, account_value, value_positions

T = datetime(2026, 1, 6, 15, 0, tzinfo=UTC)


def position(symbol: str, qty: str, avg: str, entry_order: str | None = "E", realized: str = "0") -> OpenPosition:
    q = Decimal(qty)
    direction = Direction.LONG if q > 0 else Direction.SHORT
    lot = Lot(symbol, "f1", entry_order, direction, T, Decimal(avg), abs(q), abs(q))
    return OpenPosition(symbol, direction, q, Decimal(avg), q * Decimal(avg), T, entry_order, Decimal(realized),
                        (lot,), False)


def mark(price: int) -> Mark:
    return Mark(price=Decimal(price), ts=T, source=PriceSource.ZMQ)


@pytest.mark.parametrize(
    ("qty", "avg", "price", "prev", "mv", "upl", "upl_pct", "day"),
    [
        ("10", "100", 120, 101, 1200, 200, 20.0, 190),
        ("-5", "200", 190, 195, -950, 50, 5.0, 25),  # a short gains when the price falls
        ("-5", "200", 210, 195, -1050, -50, -5.0, -75),
        ("3", "50", 50, None, 150, 0, 0.0, None),
    ],
)
def test_value_positions(qty: str, avg: str, price: int, prev: int | None, mv: int, upl: int, upl_pct: float,
                         day: int | None) -> None:
    (row,) = value_positions({"X": position("X", qty, avg)}, {"X": mark(price)}, equity=Decimal(10_000),
                             prev_close={} if prev is None else {"X": Decimal(prev)})

    assert (row.market_value, row.unrealized_pl, row.exposure) == (Decimal(mv), Decimal(upl), abs(Decimal(mv)))
    assert row.unrealized_plpc == pytest.approx(upl_pct)
    assert row.day_change == (None if day is None else Decimal(day))
    assert row.weight == pytest.approx(mv / 10_000)
    assert (row.price_source, row.price_stale) == ("zmq", False)


def test_unpriced_position_keeps_empty_valuation() -> None:
    (row,) = value_positions({"X": position("X", "1", "10")}, {}, equity=None)
    assert (row.mark_price, row.market_value, row.price_stale) == (None, None, True)


def test_account_value_carries_unmarked_positions_at_cost() -> None:
    positions = {"A": position("A", "10", "100", realized="4"), "B": position("B", "-2", "50")}

    value = account_value(positions, {"A": mark(110)}, cash=Decimal(500), realized_closed=Decimal(6),
                          net_deposits=Decimal(1000))

    assert value.market_values == (Decimal(1100), Decimal(-100))
    assert (value.unrealized_pl, value.realized_pl, value.cash) == (Decimal(100), Decimal(10), Decimal(500))


def test_bracket_children_win_over_standalone_orders() -> None:
    def order(oid: str, parent: str | None, side: str, kind: str, limit: int | None, stop: int | None) -> OpenOrder:
        return OpenOrder(order_id=oid, parent_order_id=parent, symbol="AAPL", side=side, order_type=kind,
                         limit_price=None if limit is None else Decimal(limit),
                         stop_price=None if stop is None else Decimal(stop))

    pos = position("AAPL", "10", "100")
    orders = [order("s1", None, "sell", "stop", None, 80), order("c1", "E", "sell", "limit", 120, None),
              order("c2", "E", "sell", "trailing_stop", None, 95), order("b1", None, "buy", "limit", 90, None)]
    assert select_legs(pos, orders) == Legs(stop_price=Decimal(95), take_profit_price=Decimal(120))
    assert select_legs(pos, orders[:1]) == Legs(stop_price=Decimal(80))
    assert select_legs(position("AAPL", "-1", "100"), orders) == Legs(take_profit_price=Decimal(90))
