"""The cash ledger: each activity's effect on cash and deposits, booked once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.ledger import CashLedger, ledger_entry

T = datetime(2026, 1, 6, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kind", "side", "qty", "price", "net", "cash_delta", "deposit_delta"),
    [
        ("FILL", "buy", "10", "100", None, "-1000", "0"),
        ("FILL", "sell", "4", "110.5", None, "442.0", "0"),
        ("FILL", "sell_short", "2", "50", None, "100", "0"),
        ("partial_fill", "buy", "1", "3", None, "-3", "0"),
        ("FILL", "buy", None, "100", None, "0", "0"),
        ("CSD", None, None, None, "5000", "5000", "5000"),
        ("CSW", None, None, None, "-700", "-700", "-700"),
        ("JNLC", None, None, None, "25", "25", "25"),
        ("DIV", None, None, None, "3.2", "3.2", "0"),
        ("FEE", None, None, None, "-0.02", "-0.02", "0"),
        ("FEE", None, None, None, None, "0", "0"),
    ],
)
def test_ledger_entry(kind: str, side: str | None, qty: str | None, price: str | None, net: str | None,
                      cash_delta: str, deposit_delta: str) -> None:
    entry = ledger_entry("a", kind, side=side, qty=Decimal(qty) if qty else None,
                         price=Decimal(price) if price else None, net_amount=Decimal(net) if net else None)
    assert (entry.cash_delta, entry.deposit_delta) == (Decimal(cash_delta), Decimal(deposit_delta))


def test_an_activity_is_booked_once_and_deposits_are_dated() -> None:
    ledger = CashLedger()
    deposit = ledger_entry("d1", "CSD", side=None, qty=None, price=None, net_amount=Decimal(1000))
    buy = ledger_entry("f1", "FILL", side="buy", qty=Decimal(2), price=Decimal(100), net_amount=None)

    booked = [ledger.book(deposit, T), ledger.book(buy, T + timedelta(minutes=1)), ledger.book(deposit, T)]

    assert booked == [True, True, False]
    assert (ledger.cash, ledger.net_deposits) == (Decimal(800), Decimal(1000))
    assert ledger.deposits_until(T - timedelta(seconds=1), Decimal(5)) == Decimal(5)
    assert ledger.deposits_until(T, Decimal(0)) == Decimal(1000)


def test_ledger_round_trips_through_its_checkpoint_form() -> None:
    ledger = CashLedger()
    ledger.book(ledger_entry("d1", "CSD", side=None, qty=None, price=None, net_amount=Decimal("12.5")), T)
    ledger.skip("bad")

    again = CashLedger.from_dict(ledger.to_dict())

    assert (again.cash, again.net_deposits, again.applied, again.deposit_events, again.skipped) == (
        Decimal("12.5"), Decimal("12.5"), {"d1", "bad"}, [(T, Decimal("12.5"))], 1)
