"""FIFO lot engine: scenarios, orphans, chains, idempotence, incremental use, bad input."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from core.errors import InvalidInput
from core.fifo import FifoBook, cash_flow_pl, match_fills, trade_id_for
from core.records import (
    Direction,
    ExitReason,
    Fill,
    OrderClass,
    OrderMeta,
    OrderType,
    Side,
    StartingPosition,
)
from core.schema import destination_ddl

T0 = datetime(2024, 5, 6, 14, 0, tzinfo=UTC)


def fill(i: int, side: str, qty: str, price: str, *, symbol: str = "AAPL", fee: str = "0", order: str | None = None,
         minutes: int | None = None) -> Fill:
    return Fill(fill_id=f"f{i}", ts=T0 + timedelta(minutes=i if minutes is None else minutes), symbol=symbol,
                side=Side(side), qty=D(qty), price=D(price), fee=D(fee), order_id=order)


def test_simple_long_round_trip() -> None:
    res = match_fills([fill(1, "buy", "10", "100", fee="1"), fill(2, "sell", "10", "110", fee="1")])

    (trip,) = res.round_trips
    assert trip.direction is Direction.LONG
    assert (trip.qty, trip.entry_price, trip.exit_price) == (D(10), D(100), D(110))
    assert (trip.gross_pl, trip.fees, trip.net_pl) == (D(100), D(2), D(98))
    assert trip.return_pct == pytest.approx(9.8)
    assert trip.holding_s == 60.0
    assert trip.exit_reason is ExitReason.MANUAL
    assert not trip.is_orphan
    assert res.open_positions == {}


def test_scale_in_and_out_matches_oldest_lots_first() -> None:
    fills = [fill(1, "buy", "5", "100"), fill(2, "buy", "5", "110"), fill(3, "sell", "3", "120"),
             fill(4, "sell", "7", "130")]

    (trip,) = match_fills(fills).round_trips

    assert trip.gross_pl == D(3 * 20 + 2 * 30 + 5 * 20)
    assert trip.entry_price == D(105)
    assert trip.exit_price == D("127")
    assert [(m.open_fill_id, m.close_fill_id, m.qty) for m in trip.lots] == [
        ("f1", "f3", D(3)), ("f1", "f4", D(2)), ("f2", "f4", D(5))]
    assert trip.open_fills == (("f1", D(5)), ("f2", D(5)))
    assert trip.close_fills == (("f3", D(3)), ("f4", D(7)))


def test_partial_close_leaves_fifo_remainder_open() -> None:
    book = FifoBook()
    book.apply([fill(1, "buy", "5", "100"), fill(2, "buy", "5", "110"), fill(3, "sell", "7", "120")])

    pos = book.open_positions()["AAPL"]

    assert pos.qty == D(3)
    assert pos.direction is Direction.LONG
    assert [(lot.fill_id, lot.remaining) for lot in pos.lots] == [("f2", D(3))]
    assert pos.avg_entry_price == D(110)
    assert pos.cost_basis == D(330)
    assert pos.realized_pl == D(5 * 20 + 2 * 10)
    assert pos.entry_time == T0 + timedelta(minutes=1)
    assert book.round_trips() == []


def test_short_round_trip() -> None:
    (trip,) = match_fills([fill(1, "sell", "10", "50"), fill(2, "buy", "4", "40"), fill(3, "buy", "6", "45")]).round_trips
    assert trip.direction is Direction.SHORT
    assert trip.gross_pl == D(4 * 10 + 6 * 5)


def test_flip_splits_one_fill_into_close_and_open_with_fee_pro_rata() -> None:
    res = match_fills([fill(1, "buy", "10", "100"), fill(2, "sell", "15", "110", fee="1.5")])

    (trip,) = res.round_trips
    assert trip.qty == D(10)
    assert trip.gross_pl == D(100)
    assert trip.fees == D("1.0")
    pos = res.open_positions["AAPL"]
    assert pos.direction is Direction.SHORT
    assert pos.qty == D(-5)
    assert pos.avg_entry_price == D(110)

    closed_later = match_fills([fill(1, "buy", "10", "100"), fill(2, "sell", "15", "110", fee="1.5"),
                                fill(3, "buy", "5", "100")])
    second = closed_later.round_trips[1]
    assert second.direction is Direction.SHORT
    assert second.gross_pl == D(50)
    assert second.fees == D("0.5")
    assert second.open_fills == (("f2", D(5)),)


def test_fractional_quantities_are_exact() -> None:
    fills = [fill(1, "buy", "0.1", "100.10"), fill(2, "buy", "0.2", "100.20"), fill(3, "sell", "0.3", "101")]
    (trip,) = match_fills(fills).round_trips
    assert trip.gross_pl == D("0.1") * D("0.90") + D("0.2") * D("0.80")
    assert trip.qty == D("0.3")


def test_duplicates_are_ignored_and_conflicting_duplicates_refused() -> None:
    fills = [fill(1, "buy", "10", "100"), fill(2, "sell", "10", "110")]
    book = FifoBook()
    book.apply(fills)

    update = book.apply(fills)

    assert update.ignored_duplicates == 2
    assert update.upserted == ()
    assert len(book.round_trips()) == 1
    with pytest.raises(InvalidInput, match="f2"):
        book.apply([fill(2, "sell", "10", "111")])


def test_out_of_order_input_is_sorted_by_time_then_id() -> None:
    fills = [fill(1, "buy", "10", "100"), fill(2, "buy", "10", "105"), fill(3, "sell", "20", "110")]
    assert match_fills(list(reversed(fills))).round_trips == match_fills(fills).round_trips


def test_late_fill_replays_the_symbol_and_reports_removed_trips() -> None:
    book = FifoBook()
    book.apply([fill(1, "buy", "10", "100"), fill(3, "sell", "10", "110")])
    (old,) = book.round_trips()

    update = book.apply([fill(2, "sell", "4", "105")])

    assert update.removed_trade_ids == (old.trade_id,)
    assert len(update.upserted) == 1
    assert book.round_trips() == list(match_fills([fill(1, "buy", "10", "100"), fill(2, "sell", "4", "105"),
                                                   fill(3, "sell", "10", "110")]).round_trips)
    assert book.net_position("AAPL") == D(-4)


def test_trade_id_is_deterministic() -> None:
    fills = [fill(1, "buy", "10", "100"), fill(2, "sell", "10", "110")]
    a = match_fills(fills).round_trips[0].trade_id
    assert a == match_fills(fills).round_trips[0].trade_id == trade_id_for("AAPL", "f1", ["f2"])
    assert a != match_fills([fill(1, "buy", "10", "100"), fill(3, "sell", "10", "110")]).round_trips[0].trade_id


BRACKET = [
    OrderMeta("entry", OrderType.MARKET, OrderClass.BRACKET),
    OrderMeta("tp", OrderType.LIMIT, OrderClass.BRACKET, parent_order_id="entry", limit_price=D(110)),
    OrderMeta("sl", OrderType.STOP, OrderClass.BRACKET, parent_order_id="entry", stop_price=D(95)),
    OrderMeta("oco_tp", OrderType.LIMIT, OrderClass.OCO, limit_price=D(110)),
    OrderMeta("oco_sl", OrderType.STOP_LIMIT, OrderClass.OCO, parent_order_id="oco_tp", stop_price=D(95)),
    OrderMeta("trail", "trailing_stop", "oto", parent_order_id="entry"),
    OrderMeta("plain", OrderType.LIMIT, OrderClass.SIMPLE),
]


@pytest.mark.parametrize(
    ("exit_order", "reason"),
    [("tp", ExitReason.TAKE_PROFIT), ("sl", ExitReason.STOP_LOSS), ("oco_tp", ExitReason.TAKE_PROFIT),
     ("oco_sl", ExitReason.STOP_LOSS), ("trail", ExitReason.STOP_LOSS), ("plain", ExitReason.MANUAL),
     ("unknown", ExitReason.MANUAL), ("entry", ExitReason.MANUAL)],
)
def test_exit_reason_from_the_chained_leg(exit_order: str, reason: ExitReason) -> None:
    fills = [fill(1, "buy", "10", "100", order="entry"), fill(2, "sell", "10", "110", order=exit_order)]

    (trip,) = match_fills(fills, orders=BRACKET).round_trips

    assert trip.exit_reason is reason
    assert trip.entry_order_id == "entry"
    assert trip.exit_order_id == exit_order


def test_order_metadata_arriving_later_relabels_the_trip() -> None:
    book = FifoBook()
    book.apply([fill(1, "buy", "10", "100", order="entry"), fill(2, "sell", "10", "90", order="sl")])
    assert book.round_trips()[0].exit_reason is ExitReason.MANUAL

    update = book.apply([], orders=BRACKET)

    assert [t.exit_reason for t in update.upserted] == [ExitReason.STOP_LOSS]
    assert book.round_trips()[0].exit_reason is ExitReason.STOP_LOSS


def test_orphan_close_uses_starting_snapshot_price() -> None:
    start = StartingPosition("AAPL", D(10), T0 - timedelta(days=3), avg_entry_price=D(90))

    res = match_fills([fill(1, "sell", "10", "100")], starting_positions=[start])

    (trip,) = res.round_trips
    assert trip.is_orphan
    assert trip.gross_pl == D(100)
    assert trip.entry_price == D(90)
    assert trip.entry_time == start.as_of
    assert trip.lots[0].open_fill_id == "start:AAPL"


def test_snapshot_position_without_fills_is_open() -> None:
    start = StartingPosition("MSFT", D(-3), T0, avg_entry_price=D(400))
    pos = match_fills([], starting_positions=[start]).open_positions["MSFT"]
    assert pos.direction is Direction.SHORT
    assert pos.is_orphan
    assert pos.qty == D(-3)


def test_orphan_close_without_price_has_zero_pnl_and_is_flagged() -> None:
    res = match_fills([fill(1, "buy", "5", "100"), fill(2, "sell", "8", "120")], allow_short=False)

    (trip,) = res.round_trips
    assert trip.is_orphan
    # 3 units of unknown cost close at 120 with zero P&L; the 5 known units make 100
    assert trip.gross_pl == D(100)
    assert [m.price_known for m in trip.lots] == [False, True]
    assert res.open_positions == {}


def test_orphan_with_unknown_snapshot_price() -> None:
    start = StartingPosition("AAPL", D(2), T0 - timedelta(days=1))
    book = FifoBook(starting_positions=[start])
    book.apply([fill(1, "buy", "1", "50")])
    pos = book.open_positions()["AAPL"]
    assert pos.avg_entry_price is None
    assert pos.is_orphan
    assert pos.qty == D(3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"price": D("NaN")}, "price is not finite"),
        ({"price": float("inf")}, "price is not finite"),
        ({"price": D("-1")}, "price must not be negative"),
        ({"qty": D("-1")}, "qty must be positive"),
        ({"qty": D("0")}, "qty must be positive"),
        ({"side": "hold"}, "unknown side"),
        ({"ts": datetime(2024, 1, 1)}, "naive"),  # noqa: DTZ001
        ({"fee": "abc"}, "fee is not a number"),
    ],
)
def test_bad_fill_is_refused_naming_the_row(kwargs: dict[str, object], match: str) -> None:
    base: dict[str, object] = {"fill_id": "act-42", "ts": T0, "symbol": "AAPL", "side": "buy", "qty": D(1),
                               "price": D(1)}
    base.update(kwargs)
    with pytest.raises(InvalidInput, match=match) as err:
        Fill(**base)  # type: ignore[arg-type]
    assert "act-42" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_broker_side_spellings_and_timezone_conversion() -> None:
    from zoneinfo import ZoneInfo

    f = Fill("x", datetime(2024, 5, 6, 10, 0, tzinfo=ZoneInfo("America/New_York")), "A", "sell_short", "1", 2.5)
    assert f.side is Side.SELL
    assert f.ts == datetime(2024, 5, 6, 14, 0, tzinfo=UTC)
    assert f.price == D("2.5")


def _columns(ddl: str) -> set[str]:
    body = ddl[ddl.index("(") + 1:]
    return {m.group(1) for m in re.finditer(r"^\s*([a-z_]+) [a-z]", body, re.M)}


def test_rows_match_the_destination_tables() -> None:
    ddl = destination_ddl("acct")
    open_cols = _columns(ddl[0])
    closed_cols = _columns(ddl[1])
    book = FifoBook()
    book.apply([fill(1, "buy", "10", "100"), fill(2, "sell", "10", "110"), fill(3, "buy", "2", "100")])

    trip_row = book.round_trips()[0].to_row()
    pos_row = book.open_positions()["AAPL"].to_row()

    assert set(trip_row) == closed_cols - {"created_at"}
    assert set(pos_row) <= open_cols
    assert {"qty", "side", "avg_entry_price", "cost_basis", "entry_time", "lots", "entry_order_id"} <= set(pos_row)
    json.dumps(trip_row["fills"]), json.dumps(trip_row["lots"]), json.dumps(pos_row["lots"])


def test_state_round_trips_through_json() -> None:
    book = FifoBook(orders=BRACKET, starting_positions=[StartingPosition("MSFT", D(1), T0, D(10))])
    book.apply([fill(1, "buy", "10", "100", order="entry"), fill(2, "sell", "4", "110", order="tp")])

    restored = FifoBook.from_dict(json.loads(json.dumps(book.to_dict())))
    more = [fill(3, "sell", "6", "111", order="tp"), fill(4, "sell", "1", "12", symbol="MSFT")]
    book.apply(more)
    restored.apply(more)

    assert restored.round_trips() == book.round_trips()
    assert restored.open_positions() == book.open_positions()
    assert [t.exit_reason for t in book.round_trips()] == [ExitReason.TAKE_PROFIT, ExitReason.MANUAL]


def test_cash_flow_of_a_flat_book_equals_realised_pnl() -> None:
    fills = [fill(1, "buy", "3", "10"), fill(2, "sell", "5", "12"), fill(3, "buy", "2", "11")]
    res = match_fills(fills)
    assert sum((t.gross_pl for t in res.round_trips), D(0)) == cash_flow_pl(fills)
    assert not math.isnan(float(cash_flow_pl(fills)))


def test_a_refused_batch_leaves_no_trace() -> None:
    book = FifoBook()
    book.apply([fill(1, "buy", "10", "100")])

    with pytest.raises(InvalidInput, match="f1"):
        book.apply([fill(2, "sell", "10", "110"), fill(1, "buy", "10", "99")])

    update = book.apply([fill(2, "sell", "10", "110")])
    assert update.ignored_duplicates == 0
    assert [t.gross_pl for t in book.round_trips()] == [D(100)]
    assert book.fill_count == 2
