"""A position sold down to less than the minimum increment (the remainder a coin fee leaves) ends its round
trip: the trip closes with its fees, the dust is not an open position, and it carries into the next trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from core.corporate_actions import AssetFee
from core.fifo import FifoBook
from core.records import Fill, Side

T = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
SYM = "ETH/USD"


def _fill(fid: str, side: Side, qty: str, price: str, minutes: int) -> Fill:
    return Fill(fill_id=fid, ts=T + timedelta(minutes=minutes), symbol=SYM, side=side, qty=D(qty), price=D(price))


def _sold_to_dust() -> FifoBook:
    book = FifoBook()
    book.apply([_fill("buy", Side.BUY, "0.5", "3000", 0)],
               events=[AssetFee(event_id="cfee", ts=T + timedelta(minutes=1), symbol=SYM, qty=D("0.0012500004"))])
    book.apply([_fill("sell", Side.SELL, "0.498749999", "3100", 2)])
    return book


def test_selling_all_but_dust_closes_the_round_trip_with_the_coin_fee() -> None:
    book = _sold_to_dust()
    (trip,) = book.round_trips()
    assert trip.qty == D("0.4999999994")  # what left the position: the fee's units and the sale
    assert trip.fees == D("0.0012500004") * 3000  # the coin fee's units at their cost
    assert trip.gross_pl == D("0.498749999") * 100
    assert trip.close_fills[-1][0] == "sell"
    assert book.open_positions() == {}
    assert book.dust()[SYM].qty == D("0.0000000006")
    assert book.net_position(SYM) == D("0.0000000006")  # the broker's quantity, dust included


def test_the_dust_carries_into_the_next_round_trip_without_restarting_its_clock() -> None:
    book = _sold_to_dust()
    book.apply([_fill("buy2", Side.BUY, "1", "3200", 10), _fill("sell2", Side.SELL, "1.0000000006", "3300", 20)])
    first, second = sorted(book.round_trips(), key=lambda t: t.exit_time)
    assert second.entry_time == T + timedelta(minutes=10)  # the new buy, not the dust's old lot
    assert second.qty == D("1.0000000006")
    assert dict(second.open_fills) == {"buy": D("0.0000000006"), "buy2": D("1")}
    assert dict(first.open_fills)["buy"] == D("0.4999999994")  # every unit of "buy" in exactly one trip
    assert book.open_positions() == {}
    assert book.dust() == {}
    assert book.net_position(SYM) == 0


def test_the_same_trips_whatever_the_batches() -> None:
    fills = [_fill("buy", Side.BUY, "0.5", "3000", 0), _fill("sell", Side.SELL, "0.4999999995", "3100", 2),
             _fill("buy2", Side.BUY, "1", "3200", 10), _fill("sell2", Side.SELL, "1.0000000005", "3300", 20)]
    whole = FifoBook()
    whole.apply(fills)
    parts = FifoBook()
    for f in reversed(fills):
        parts.apply([f])
    assert [(t.trade_id, t.qty, t.gross_pl) for t in parts.round_trips()] == \
        [(t.trade_id, t.qty, t.gross_pl) for t in whole.round_trips()]
    assert len(whole.round_trips()) == 2
    assert FifoBook.from_dict(whole.to_dict()).round_trips() == whole.round_trips()
