"""Lot events in the FIFO engine: each corporate action and option event, worked by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from core.corporate_actions import (
    AssetFee,
    CashInLieu,
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
    event_from_dict,
)
from core.errors import InvalidInput
from core.fifo import FifoBook, cash_flow_pl, match_fills
from core.instruments import AssetClass, instrument_for
from core.records import Direction, Fill, Side

T0 = datetime(2024, 6, 3, 14, 0, tzinfo=UTC)


def fill(fid: str, hours: float, symbol: str, side: Side, qty: str, price: str, fee: str = "0") -> Fill:
    return Fill(fill_id=fid, ts=T0 + timedelta(hours=hours), symbol=symbol, side=side, qty=D(qty), price=D(price),
                fee=D(fee))


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def test_nvda_forward_split_then_sale_is_a_thousand_dollar_gain_and_flat() -> None:
    # Arrange: the example
    fills = [fill("buy", 0, "NVDA", Side.BUY, "10", "1000"), fill("sell", 48, "NVDA", Side.SELL, "100", "110")]
    split = Split(event_id="split-1", ts=at(24), symbol="NVDA", new_rate=D(10), old_rate=D(1))
    # Act
    res = match_fills(fills, events=[split])
    # Assert
    (trip,) = res.round_trips
    assert trip.gross_pl == D(1000)
    assert res.open_positions == {}
    assert trip.qty == D(100)
    assert trip.entry_price == D(100)
    assert trip.exit_price == D(110)
    assert trip.entry_time == T0  # entry time kept through the split
    assert trip.gross_pl == cash_flow_pl(fills, [split])


def test_position_between_split_and_sale_matches_the_brokers_100_at_100() -> None:
    book = FifoBook()
    book.apply([fill("buy", 0, "NVDA", Side.BUY, "10", "1000")],
               events=[Split(event_id="s", ts=at(24), symbol="NVDA", new_rate=D(10), old_rate=D(1))])
    pos = book.open_positions()["NVDA"]
    assert (pos.qty, pos.avg_entry_price, pos.cost_basis) == (D(100), D(100), D(10000))
    assert pos.lots[0].entry_time == T0
    assert pos.lots[0].fill_id == "buy"


def test_reverse_split_with_cash_in_lieu_realizes_the_fraction() -> None:
    # 25 shares at 4 → 1-for-10 → 2.5 shares at 40; the broker pays $50 for the half share
    events = [Split(event_id="rs", ts=at(24), symbol="XYZ", new_rate=D(1), old_rate=D(10)),
              CashInLieu(event_id="cil", ts=at(25), symbol="XYZ", qty=D("0.5"), cash=D(50))]
    book = FifoBook()
    book.apply([fill("b", 0, "XYZ", Side.BUY, "25", "4")], events=events)
    pos = book.open_positions()["XYZ"]
    assert pos.qty == D(2)
    assert pos.avg_entry_price == D(40)
    assert pos.realized_pl == D(30)  # 50 received for half a share that cost 20
    book.apply([fill("s", 48, "XYZ", Side.SELL, "2", "45")])
    (trip,) = book.round_trips()
    assert trip.gross_pl == D(40) == cash_flow_pl([fill("b", 0, "XYZ", Side.BUY, "25", "4"),
                                                    fill("s", 48, "XYZ", Side.SELL, "2", "45")], events)


def test_partial_close_before_a_split_reports_the_trip_in_post_split_units() -> None:
    fills = [fill("b", 0, "NVDA", Side.BUY, "10", "1000"), fill("s1", 1, "NVDA", Side.SELL, "5", "1050"),
             fill("s2", 48, "NVDA", Side.SELL, "50", "110")]
    res = match_fills(fills, events=[Split(event_id="s", ts=at(24), symbol="NVDA", new_rate=D(10), old_rate=D(1))])
    (trip,) = res.round_trips
    assert trip.gross_pl == D(250) + D(500)
    assert trip.qty == D(100)
    assert trip.entry_price == D(100)


def test_name_change_continues_the_same_round_trip_under_the_new_symbol() -> None:
    fills = [fill("b", 0, "FB", Side.BUY, "10", "300"), fill("s", 48, "META", Side.SELL, "10", "350")]
    res = match_fills(fills, events=[SymbolChange(event_id="nc", ts=at(24), symbol="FB", new_symbol="META")])
    (trip,) = res.round_trips
    assert (trip.symbol, trip.gross_pl, trip.entry_time) == ("META", D(500), T0)
    assert trip.open_fills == (("b", D(10)),)
    assert res.open_positions == {}  # no phantom short under META, nothing left under FB


def test_stock_merger_into_a_held_symbol_joins_the_position_at_cost() -> None:
    fills = [fill("a", 0, "AAA", Side.BUY, "10", "20"), fill("b", 1, "BBB", Side.BUY, "5", "50")]
    merger = Merger(event_id="ma", ts=at(24), symbol="AAA", new_symbol="BBB", ratio=D("0.5"))
    res = match_fills(fills, events=[merger])
    pos = res.open_positions["BBB"]
    assert pos.qty == D(10)
    assert pos.cost_basis == D(450)
    (closed,) = res.round_trips
    assert closed.symbol == "AAA"
    assert closed.gross_pl == 0
    assert "AAA" not in res.open_positions


def test_cash_and_stock_merger_returns_capital_then_sale_realizes_all() -> None:
    fills = [fill("a", 0, "GRCL", Side.BUY, "100", "6"), fill("s", 48, "CVR", Side.SELL, "500", "1.5")]
    events = [Merger(event_id="ma", ts=at(24), symbol="GRCL", new_symbol="CVR", ratio=D(5), cash=D(100))]
    book = FifoBook()
    book.apply(fills[:1], events=events)
    pos = book.open_positions()["CVR"]
    assert pos.qty == D(500)
    assert pos.cost_basis == D(500)
    book.apply(fills[1:])
    assert sum(t.gross_pl for t in book.round_trips()) == D(250) == cash_flow_pl(fills, events)


def test_cash_merger_is_a_sale_of_the_whole_position() -> None:
    res = match_fills([fill("a", 0, "TGT", Side.BUY, "10", "20")],
                      events=[Merger(event_id="ma", ts=at(24), symbol="TGT", cash=D(300))])
    (trip,) = res.round_trips
    assert trip.gross_pl == D(100)
    assert trip.exit_price == D(30)


def test_spinoff_moves_the_documented_cost_fraction_to_new_lots() -> None:
    fills = [fill("p1", 0, "PAR", Side.BUY, "10", "100"), fill("p2", 1, "PAR", Side.BUY, "30", "100")]
    spin = Spinoff(event_id="sp", ts=at(24), symbol="PAR", new_symbol="KID", new_qty=D(20), basis_fraction=D("0.2"))
    book = FifoBook()
    book.apply(fills, events=[spin])
    parent, kid = book.open_positions()["PAR"], book.open_positions()["KID"]
    assert parent.qty == D(40)
    assert parent.cost_basis == D(3200)
    assert kid.qty == D(20)
    assert kid.cost_basis == D(800)
    assert [lot.entry_time for lot in kid.lots] == [T0, at(1)]  # the parents' entry times
    assert [lot.remaining for lot in kid.lots] == [D(5), D(15)]  # pro rata to the parent lots


def test_spinoff_at_the_brokers_allocated_price_per_new_share() -> None:
    # 40 parent shares costing 4000; the broker allocates 20 new shares at 40 each: 800 of the cost
    fills = [fill("p1", 0, "PAR", Side.BUY, "10", "100"), fill("p2", 1, "PAR", Side.BUY, "30", "100")]
    spin = Spinoff(event_id="sp", ts=at(24), symbol="PAR", new_symbol="KID", new_qty=D(20), new_price=D(40))
    positions = match_fills(fills, events=[spin]).open_positions
    assert positions["KID"].avg_entry_price == D(40)
    assert positions["PAR"].avg_entry_price == D(80)


def test_worthless_removal_realizes_the_whole_cost() -> None:
    res = match_fills([fill("a", 0, "DEAD", Side.BUY, "10", "3")],
                      events=[Worthless(event_id="w", ts=at(24), symbol="DEAD")])
    assert [t.gross_pl for t in res.round_trips] == [D(-30)]


OPT = "AAPL230721C00150000"
PUT = "AAPL230721P00150000"


def test_option_pnl_uses_the_contract_multiplier() -> None:
    res = match_fills([fill("b", 0, OPT, Side.BUY, "2", "3.50", fee="0.10"), fill("s", 1, OPT, Side.SELL, "2", "4.25")])
    (trip,) = res.round_trips
    assert trip.gross_pl == D(150)  # 0.75 x 2 contracts x 100
    assert trip.net_pl == D("149.90")
    assert trip.entry_price == D("3.50")  # prices stay per share
    assert trip.return_pct == pytest.approx(149.9 / 700 * 100)


def test_option_open_position_cost_basis_is_in_dollars() -> None:
    res = match_fills([fill("b", 0, OPT, Side.BUY, "2", "3.50")])
    assert res.open_positions[OPT].cost_basis == D(700)


def test_expired_long_option_closes_at_zero() -> None:
    res = match_fills([fill("b", 0, OPT, Side.BUY, "2", "3.50")],
                      events=[OptionExpiry(event_id="x", ts=at(30), symbol=OPT)])
    assert [t.gross_pl for t in res.round_trips] == [D(-700)]
    assert res.open_positions == {}


def test_expired_short_option_keeps_the_premium() -> None:
    res = match_fills([fill("s", 0, PUT, Side.SELL, "1", "2")],
                      events=[OptionExpiry(event_id="x", ts=at(30), symbol=PUT, contracts=D(1))])
    assert [t.gross_pl for t in res.round_trips] == [D(200)]


@pytest.mark.parametrize(("event_cls", "symbol", "option_side", "share_qty"), [
    (OptionExercise, OPT, Side.BUY, D(200)),  # long call exercised: buy 200 at the strike
    (OptionExercise, PUT, Side.BUY, D(-200)),  # long put exercised: sell 200
    (OptionAssignment, OPT, Side.SELL, D(-200)),  # short call assigned: sell 200
    (OptionAssignment, PUT, Side.SELL, D(200)),  # short put assigned: buy 200
])
def test_exercise_and_assignment_close_the_contract_and_deliver_shares_at_the_strike(
        event_cls: type, symbol: str, option_side: Side, share_qty: D) -> None:
    premium = fill("o", 0, symbol, option_side, "2", "3")
    ev = event_cls(event_id="ev", ts=at(30), symbol=symbol, contracts=D(2))
    book = FifoBook()
    book.apply([premium], events=[ev])
    (option_trip,) = book.round_trips()
    assert option_trip.gross_pl == (D(-600) if option_side is Side.BUY else D(600))  # premium realized
    shares = book.open_positions()["AAPL"]
    assert shares.qty == share_qty
    assert shares.avg_entry_price == D(150)
    assert OPT not in book.open_positions()
    assert PUT not in book.open_positions()


def test_assignment_of_a_covered_call_sells_the_held_shares() -> None:
    fills = [fill("stock", 0, "AAPL", Side.BUY, "100", "140"), fill("call", 1, OPT, Side.SELL, "1", "2")]
    res = match_fills(fills, events=[OptionAssignment(event_id="asn", ts=at(30), symbol=OPT, contracts=D(1))])
    assert sorted(t.gross_pl for t in res.round_trips) == [D(200), D(1000)]
    assert res.open_positions == {}
    assert sum(t.gross_pl for t in res.round_trips) == cash_flow_pl(
        fills, [OptionAssignment(event_id="asn", ts=at(30), symbol=OPT, contracts=D(1))])


def test_cash_settled_option_closes_for_its_cash() -> None:
    res = match_fills([fill("b", 0, "SPX240621C05000000", Side.BUY, "1", "10")],
                      events=[OptionCashSettlement(event_id="c", ts=at(30), symbol="SPX240621C05000000", cash=D(1500))])
    assert [t.gross_pl for t in res.round_trips] == [D(500)]


def test_crypto_fee_in_the_asset_reduces_the_lot_and_is_a_fee_of_the_trade() -> None:
    # buy 1 ETH at 2000; 0.0025 ETH fee taken at the end of the day; sell the 0.9975 left
    fills = [fill("b", 0, "ETH/USD", Side.BUY, "1", "2000"), fill("s", 2, "ETH/USD", Side.SELL, "0.9975", "2100")]
    fee = AssetFee(event_id="cfee", ts=at(10), symbol="ETH/USD", qty=D("0.0025"))
    book = FifoBook()
    book.apply(fills[:1], events=[fee])
    assert book.open_positions()["ETH/USD"].qty == D("0.9975")
    book.apply(fills[1:])
    (trip,) = book.round_trips()
    assert (trip.gross_pl, trip.fees, trip.net_pl) == (D("99.75"), D(5), D("94.75"))
    assert trip.net_pl == cash_flow_pl(fills, [fee])


def test_fee_posted_after_the_sale_closes_the_remainder_as_a_fee() -> None:
    fills = [fill("b", 0, "ETH/USD", Side.BUY, "1", "2000"), fill("s", 2, "ETH/USD", Side.SELL, "0.9975", "2100")]
    res = match_fills(fills, events=[AssetFee(event_id="cfee", ts=at(10), symbol="ETH/USD", qty=D("0.0025"))])
    (trip,) = res.round_trips
    assert trip.net_pl == D("94.75")
    assert res.open_positions == {}


def test_dust_below_the_minimum_increment_is_not_an_open_position() -> None:
    eth = instrument_for("ETH/USD")
    coarse = type(eth)(eth.symbol, eth.asset_class, eth.multiplier, D("0.0001"))
    book = FifoBook(instruments=[coarse])
    book.apply([fill("b", 0, "ETH/USD", Side.BUY, "1", "2000"), fill("s", 1, "ETH/USD", Side.SELL, "0.99995", "2100")])
    assert book.open_positions() == {}
    assert book.dust()["ETH/USD"].qty == D("0.00005")


def test_stock_journal_in_opens_a_lot_at_its_price_and_out_sells() -> None:
    events = [StockTransfer(event_id="in", ts=at(0), symbol="AAPL", qty=D(2), price=D(150)),
              StockTransfer(event_id="out", ts=at(5), symbol="AAPL", qty=D(-2), price=D(160))]
    res = match_fills([], events=events)
    assert [t.gross_pl for t in res.round_trips] == [D(20)] == [cash_flow_pl([], events)]


def test_duplicate_event_id_is_ignored_and_different_content_refused() -> None:
    book = FifoBook()
    split = Split(event_id="s", ts=at(24), symbol="NVDA", new_rate=D(10), old_rate=D(1))
    book.apply([fill("b", 0, "NVDA", Side.BUY, "10", "1000")], events=[split])
    again = book.apply([], events=[split])
    assert again.ignored_duplicates == 1
    assert book.net_position("NVDA") == D(100)
    with pytest.raises(InvalidInput, match="'s': id already applied with different content"):
        book.apply([], events=[Split(event_id="s", ts=at(24), symbol="NVDA", new_rate=D(2), old_rate=D(1))])
    assert book.net_position("NVDA") == D(100)


def test_a_late_split_replays_the_symbol_and_replaces_the_wrong_trip() -> None:
    book = FifoBook()
    first = book.apply([fill("b", 0, "NVDA", Side.BUY, "10", "1000"), fill("s", 48, "NVDA", Side.SELL, "100", "110")])
    wrong = {t.trade_id for t in first.upserted}
    update = book.apply([], events=[Split(event_id="s", ts=at(24), symbol="NVDA", new_rate=D(10), old_rate=D(1))])
    assert [t.gross_pl for t in update.upserted] == [D(1000)]
    assert set(update.removed_trade_ids) == wrong - {t.trade_id for t in update.upserted}
    assert book.open_positions() == {}


def test_state_round_trip_keeps_events_and_instruments() -> None:
    book = FifoBook()
    book.apply([fill("b", 0, OPT, Side.BUY, "1", "3")], events=[OptionExpiry(event_id="x", ts=at(30), symbol=OPT)])
    restored = FifoBook.from_dict(book.to_dict())
    assert restored.round_trips() == book.round_trips()
    assert restored.event_count == 1


@pytest.mark.parametrize("ev", [
    Split(event_id="a", ts=T0, symbol="X", new_rate=D(3), old_rate=D(2)),
    CashInLieu(event_id="b", ts=T0, symbol="X", qty=D("0.5"), cash=D("1.25")),
    Merger(event_id="c", ts=T0, symbol="X", new_symbol="Y", ratio=D(2), cash=D(3)),
    Spinoff(event_id="d", ts=T0, symbol="X", new_symbol="Y", new_qty=D(1), basis_fraction=D("0.1")),
    OptionExpiry(event_id="e", ts=T0, symbol=OPT),
    StockTransfer(event_id="f", ts=T0, symbol="X", qty=D(-1), price=D(2)),
])
def test_event_json_form_round_trips(ev: object) -> None:
    assert event_from_dict(ev.to_dict()) == ev  # type: ignore[attr-defined]


@pytest.mark.parametrize(("build", "message"), [
    (lambda: Split(event_id="", ts=T0, symbol="X", new_rate=D(2), old_rate=D(1)), "event_id must be a non-empty"),
    (lambda: Split(event_id="s", ts=T0, symbol="X", new_rate=D(0), old_rate=D(1)), "new_rate must be positive"),
    (lambda: Split(event_id="s", ts=T0.replace(tzinfo=None), symbol="X", new_rate=D(2), old_rate=D(1)), "naive"),
    (lambda: SymbolChange(event_id="n", ts=T0, symbol="X", new_symbol="X"), "must differ"),
    (lambda: Merger(event_id="m", ts=T0, symbol="X", ratio=D(2)), "needs new_symbol"),
    (lambda: Spinoff(event_id="p", ts=T0, symbol="X", new_symbol="Y", new_qty=D(1), basis_fraction=D(2)),
     "between 0 and 1"),
    (lambda: OptionExercise(event_id="o", ts=T0, symbol="AAPL", contracts=D(1)).symbols, "not an OCC symbol"),
    (lambda: StockTransfer(event_id="t", ts=T0, symbol="X", qty=D(0), price=D(1)), "qty must not be zero"),
])
def test_bad_events_are_refused_naming_the_event(build: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        build()  # type: ignore[operator]


def test_open_short_position_direction_survives_a_split() -> None:
    res = match_fills([fill("s", 0, "XYZ", Side.SELL, "3", "90")],
                      events=[Split(event_id="sp", ts=at(24), symbol="XYZ", new_rate=D(3), old_rate=D(1))])
    pos = res.open_positions["XYZ"]
    assert pos.direction is Direction.SHORT
    assert pos.qty == D(-9)
    assert pos.avg_entry_price == D(30)


def test_asset_class_hint_spellings() -> None:
    assert instrument_for("BTCUSD", AssetClass.CRYPTO).symbol == "BTC/USD"
