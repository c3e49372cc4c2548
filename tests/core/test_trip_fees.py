"""Broker fee lines posted after the trade reach the round trips they were charged on (core.trip_fees
through core.fifo.FifoBook): the same shares whichever order fills and fee lines arrive in, after a
checkpoint, and only for the fills that carry the fee's base."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D

import pytest

from core.activity_types import activity_time
from core.fifo import FifoBook
from core.income import CashEntry
from core.records import Fill, Side

DAY = date(2026, 12, 2)
OPEN = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)  # 10:00 in New York


def _fill(fid: str, symbol: str, side: Side, qty: str, price: str, minutes: int = 0) -> Fill:
    return Fill(fill_id=fid, ts=OPEN + timedelta(minutes=minutes), symbol=symbol, side=side, qty=D(qty), price=D(price))


def _fee(fid: str, symbol: str | None, amount: str, kind: str = "REG", day: date = DAY, *,
         code: str = "FEE", status: str = "executed") -> CashEntry:
    return CashEntry(fid, activity_time(code, day), code, D(amount), symbol=symbol,
                     description=f"{kind} fee for proceed on {day}", status=status)


FILLS = [_fill("b1", "SHRT", Side.BUY, "10", "20"), _fill("s1", "SHRT", Side.SELL, "4", "21", 1),
         _fill("s2", "SHRT", Side.SELL, "6", "22", 2), _fill("b2", "ACQ", Side.BUY, "5", "80", 3),
         _fill("s3", "ACQ", Side.SELL, "5", "82", 4)]
FEES = [_fee("reg-shrt", "SHRT", "-0.03"), _fee("taf-shrt", "SHRT", "-0.01", "TAF"), _fee("reg-acq", "ACQ", "-0.01")]


def _by_symbol(book: FifoBook) -> dict[str, tuple[D, D, D]]:
    return {t.symbol: (t.gross_pl, t.fees, t.net_pl) for t in book.round_trips()}


def test_fee_lines_posted_after_the_trips_closed_are_charged_to_them() -> None:
    book = FifoBook()
    book.apply(FILLS)
    before = _by_symbol(book)
    update = book.apply([], fees=FEES)
    after = _by_symbol(book)
    assert {t.symbol for t in update.upserted} == {"SHRT", "ACQ"}  # the trips are written again
    assert after["SHRT"] == (before["SHRT"][0], D("0.04"), before["SHRT"][0] - D("0.04"))
    assert after["ACQ"][1:] == (D("0.01"), before["ACQ"][0] - D("0.01"))


@pytest.mark.parametrize("order", ["fees first", "interleaved", "one batch"])
def test_the_shares_do_not_depend_on_arrival_order(order: str) -> None:
    whole = FifoBook()
    whole.apply(FILLS, fees=FEES)
    book = FifoBook()
    if order == "fees first":
        book.apply([], fees=FEES)
        book.apply(FILLS)
    elif order == "interleaved":
        book.apply(FILLS[3:], fees=FEES[:1])
        book.apply(FILLS[:3], fees=FEES[1:])
    else:
        book.apply(FILLS, fees=FEES)
    assert _by_symbol(book) == _by_symbol(whole)
    assert sum(t.fees for t in book.round_trips()) == D("0.05")


def test_a_checkpoint_keeps_the_fee_lines() -> None:
    book = FifoBook()
    book.apply(FILLS, fees=FEES)
    assert _by_symbol(FifoBook.from_dict(book.to_dict())) == _by_symbol(book)


def test_taf_goes_by_shares_sold_and_reg_by_dollars_sold_across_two_trips() -> None:
    fills = [_fill("b1", "X", Side.BUY, "10", "10"), _fill("s1", "X", Side.SELL, "10", "10", 1),
             _fill("b2", "X", Side.BUY, "30", "20", 2), _fill("s2", "X", Side.SELL, "30", "20", 3)]
    book = FifoBook()
    book.apply(fills, fees=[_fee("taf", "X", "-0.04", "TAF"), _fee("reg", "X", "-0.07")])
    first, second = sorted(book.round_trips(), key=lambda t: t.exit_time)
    # TAF 0.04 by shares sold 10:30 -> 0.01 / 0.03; REG 0.07 by dollars sold 100:600 -> 0.01 / 0.06
    assert (first.fees, second.fees) == (D("0.02"), D("0.09"))


def test_a_fee_of_another_day_symbol_or_a_canceled_one_touches_nothing() -> None:
    book = FifoBook()
    book.apply(FILLS, fees=[_fee("other-day", "SHRT", "-0.02", day=DAY + timedelta(days=1)),
                            _fee("other-symbol", "NVDA", "-0.02"), _fee("canceled", "SHRT", "-0.02", status="canceled")])
    assert all(t.fees == 0 for t in book.round_trips())


def test_a_crypto_fee_in_dollars_goes_to_the_sale() -> None:
    fills = [_fill("b", "ETH/USD", Side.BUY, "0.5", "3000"), _fill("s", "ETH/USD", Side.SELL, "0.5", "3100", 5)]
    book = FifoBook()
    book.apply(fills, fees=[_fee("cfee", "ETH/USD", "-3.74", code="CFEE")])
    (trip,) = book.round_trips()
    assert trip.fees == D("3.74")
    assert trip.net_pl == trip.gross_pl - D("3.74")
    assert trip.return_pct == pytest.approx(float(trip.net_pl) / 1500 * 100)
