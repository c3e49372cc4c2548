"""core.tieout: each cause and each status, from plain records (no I/O)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.tieout import (
    BookDay,
    BookPosition,
    BrokerDay,
    BrokerPositionFigures,
    Cause,
    DayTieOut,
    Difference,
    PendingFill,
    Scope,
    Status,
    TieOut,
    Tolerances,
    average_cost,
    status_of,
    tie_out,
    worst,
)

NOW = datetime(2026, 3, 10, 18, 0, tzinfo=UTC)  # 14:00 New York, a Tuesday
TODAY = date(2026, 3, 10)


def book(symbol: str, qty: str, avg: str, mark: str | None = None) -> BookPosition:
    return BookPosition(symbol=symbol, qty=D(qty), avg_entry_price=D(avg), mark_price=None if mark is None else D(mark),
                        price_source="zmq")


def broker(symbol: str, qty: str, avg: str, price: str, asset_class: str | None = None) -> BrokerPositionFigures:
    q, a, p = D(qty), D(avg), D(price)
    mult = D(100) if asset_class == "us_option" else D(1)
    return BrokerPositionFigures(symbol=symbol, qty=q, cost_basis=q * a * mult, market_value=q * p * mult,
                                 current_price=p, asset_class=asset_class)


def causes(result: TieOut | DayTieOut, scope: Scope | None = None) -> list[Cause]:
    return [d.cause for d in result.differences if scope is None or d.scope is scope]


def test_books_that_agree_tie_out() -> None:
    # Arrange: one position at the same price on both sides, cash equal
    positions = [book("AAPL", "10", "150", "155")]
    # Act
    result = tie_out(now=NOW, book_positions=positions, broker_positions=[broker("AAPL", "10", "150", "155")],
                     book_cash=D("1000"), broker_cash=D("1000"), broker_equity=D("2550"))
    # Assert
    assert result.status is Status.TIED_OUT
    assert result.differences == ()
    assert result.book_equity == D("2550")
    assert result.repair_since is None


def test_crypto_and_option_symbols_meet_under_one_key_with_the_multiplier() -> None:
    # BTCUSD (positions) is BTC/USD (orders); an option contract is worth 100 shares
    occ = "AAPL260320C00150000"
    positions = [book("BTC/USD", "0.5", "60000", "61000"), book(occ, "2", "3.10", "3.50")]
    theirs = [broker("BTCUSD", "0.5", "60000", "61000", "crypto"), broker(occ, "2", "3.10", "3.50", "us_option")]
    result = tie_out(now=NOW, book_positions=positions, broker_positions=theirs, book_cash=D(0), broker_cash=D(0),
                     broker_equity=D("30500") + D("700"))
    assert result.status is Status.TIED_OUT, result.differences
    assert result.book_equity == D("31200")


def test_a_fill_not_ingested_is_named_with_its_age_and_asks_for_a_repair() -> None:
    # Arrange: the broker holds 5 more MSFT, bought 90 s ago, which no stored activity books
    filled_at = NOW - timedelta(seconds=90)
    pending = [PendingFill(symbol="MSFT", qty=D(5), price=D(400), ts=filled_at, order_id="o1")]
    # Act
    result = tie_out(now=NOW, book_positions=[], broker_positions=[broker("MSFT", "5", "400", "400")],
                     book_cash=D("10000"), broker_cash=D("8000"), broker_equity=D("10000"), pending=pending)
    # Assert
    qty = next(d for d in result.differences if d.scope is Scope.POSITION_QTY)
    assert qty.cause is Cause.FILL_NOT_INGESTED
    assert qty.age_s == pytest.approx(90.0)
    assert causes(result, Scope.CASH) == [Cause.FILL_NOT_INGESTED]
    assert result.status is Status.EXPLAINED
    assert result.repair_since == filled_at - timedelta(minutes=5)


def test_a_quantity_difference_without_evidence_is_drift() -> None:
    result = tie_out(now=NOW, book_positions=[book("MSFT", "5", "400", "400")], broker_positions=[],
                     book_cash=D(0), broker_cash=D(0), broker_equity=D(0))
    assert causes(result, Scope.POSITION_QTY) == [Cause.UNEXPLAINED]
    assert result.status is Status.DRIFT
    assert result.repair_since is None


def test_a_corporate_action_not_applied_explains_the_quantity() -> None:
    # a 10-for-1 split the book has not applied: the broker holds 100, the book 10
    result = tie_out(now=NOW, book_positions=[book("NVDA", "10", "1000", "100")],
                     broker_positions=[broker("NVDA", "100", "100", "100")], book_cash=D(0), broker_cash=D(0),
                     broker_equity=D("10000"), corporate_symbols=["NVDA"])
    assert causes(result, Scope.POSITION_QTY) == [Cause.CORPORATE_ACTION]
    assert result.status is Status.EXPLAINED


def test_a_live_mark_a_moment_apart_from_the_broker_is_a_note_and_ties_out() -> None:
    # Arrange: quantities and cost agree; the feed's last tick (155) and the broker's price (156) are
    # two reads of a moving market
    marked = BookPosition(symbol="AAPL", qty=D(10), avg_entry_price=D(150), mark_price=D(155), price_source="zmq",
                          mark_ts=NOW - timedelta(seconds=2))
    # Act
    result = tie_out(now=NOW, book_positions=[marked], broker_positions=[broker("AAPL", "10", "150", "156")],
                     book_cash=D(0), broker_cash=D(0), broker_equity=D("1560"))
    # Assert: both prices shown, kept as notes, the books tie out
    price = next(d for d in result.differences if d.scope is Scope.POSITION_VALUE)
    assert (price.cause, price.open, price.amount_usd) == (Cause.PRICE, False, D(10))
    assert "155" in price.detail
    assert "156" in price.detail
    assert "2 s old" in price.detail
    equity = next(d for d in result.differences if d.scope is Scope.EQUITY)
    assert (equity.cause, equity.open) == (Cause.PRICE, False)
    assert result.status is Status.TIED_OUT


@pytest.mark.parametrize(("mark", "stale"), [("155", True), ("140", False)])
def test_a_stale_mark_or_one_far_from_the_broker_is_an_explained_price_difference(mark: str, stale: bool) -> None:
    marked = BookPosition(symbol="AAPL", qty=D(10), avg_entry_price=D(150), mark_price=D(mark), price_source="zmq",
                          mark_stale=stale)
    result = tie_out(now=NOW, book_positions=[marked], broker_positions=[broker("AAPL", "10", "150", "156")],
                     book_cash=D(0), broker_cash=D(0), broker_equity=D("1560"))
    price = next(d for d in result.differences if d.scope is Scope.POSITION_VALUE)
    assert (price.cause, price.open) == (Cause.PRICE, True)
    assert mark in price.detail
    assert "156" in price.detail
    assert causes(result, Scope.EQUITY) == [Cause.PRICE]
    assert result.status is Status.EXPLAINED
    assert result.repair_since is None


def test_a_split_the_broker_applied_before_listing_its_activity_is_a_corporate_action() -> None:
    # Arrange: 10-for-1: the broker holds 100 at the same $10,000 cost; no stored activity names it
    result = tie_out(now=NOW, book_positions=[book("NVDA", "10", "1000", "100")],
                     broker_positions=[broker("NVDA", "100", "100", "100")], book_cash=D(0), broker_cash=D(0),
                     broker_equity=D("10000"))
    # Assert: named, explained, and a backfill is asked for (its activity is missing raw data)
    assert causes(result, Scope.POSITION_QTY) == [Cause.CORPORATE_ACTION]
    assert result.status is Status.EXPLAINED
    assert result.repair_since is not None


def test_a_symbol_change_the_book_has_not_seen_is_a_corporate_action_on_both_symbols() -> None:
    result = tie_out(now=NOW, book_positions=[book("OLDN", "20", "50", "55")],
                     broker_positions=[broker("NEWN", "20", "50", "55")], book_cash=D(0), broker_cash=D(0),
                     broker_equity=D("1100"))
    assert [(d.subject, d.cause) for d in result.differences if d.scope is Scope.POSITION_QTY] == [
        ("NEWN", Cause.CORPORATE_ACTION), ("OLDN", Cause.CORPORATE_ACTION)]
    assert result.status is Status.EXPLAINED


def test_a_quantity_change_that_moves_the_cost_is_not_a_corporate_action() -> None:
    # 5 more shares at the same average: cost grew by 5 x 400, a fill, not a split
    result = tie_out(now=NOW, book_positions=[book("MSFT", "5", "400", "400")],
                     broker_positions=[broker("MSFT", "10", "400", "400")], book_cash=D(0), broker_cash=D(0),
                     broker_equity=D(4000))
    assert causes(result, Scope.POSITION_QTY) == [Cause.UNEXPLAINED]
    assert result.status is Status.DRIFT


def test_fifo_lots_against_the_broker_average_cost_are_the_cost_method() -> None:
    # buy 10 @100, buy 10 @110, sell 10: FIFO keeps 10 @110, the broker's average is 105
    fills = [("AAPL", D(10), D(100)), ("AAPL", D(10), D(110)), ("AAPL", D(-10), D(120))]
    avg = average_cost(fills)
    assert avg == {"AAPL": D(1050)}
    result = tie_out(now=NOW, book_positions=[book("AAPL", "10", "110", "120")],
                     broker_positions=[broker("AAPL", "10", "105", "120")], book_cash=D(0), broker_cash=D(0),
                     broker_equity=D(1200), avg_cost=avg)
    assert causes(result, Scope.POSITION_COST) == [Cause.COST_METHOD]
    assert not next(d for d in result.differences if d.scope is Scope.POSITION_COST).open  # a note
    assert result.status is Status.TIED_OUT


def test_an_unexplained_cash_difference_is_drift_and_a_cent_is_not() -> None:
    drift = tie_out(now=NOW, book_positions=[], broker_positions=[], book_cash=D(100), broker_cash=D(95),
                    broker_equity=D(95))
    assert drift.status is Status.DRIFT
    assert set(causes(drift)) == {Cause.UNEXPLAINED}
    within = tie_out(now=NOW, book_positions=[], broker_positions=[], book_cash=D(100), broker_cash=D("99.50"),
                     broker_equity=D("99.50"))
    assert within.status is Status.TIED_OUT


def test_tolerances_are_configurable() -> None:
    strict = Tolerances(position_usd=D("0.01"), account_day_usd=D("0.10"))
    result = tie_out(now=NOW, book_positions=[], broker_positions=[], book_cash=D(100), broker_cash=D("99.50"),
                     broker_equity=D("99.50"), tolerances=strict)
    assert result.status is Status.DRIFT


def test_a_fee_the_broker_posted_and_the_book_has_not_ingested_is_posted_later() -> None:
    # Arrange: the broker took a $2.50 fee today; the book has no such activity
    days = [BrokerDay(day=TODAY, equity=D("97.50"), cashflow={"FEE": D("-2.50")})]
    # Act
    result = tie_out(now=NOW, book_positions=[], broker_positions=[], book_cash=D(100), broker_cash=D("97.50"),
                     broker_equity=D("97.50"), broker_days=days, book_days={})
    # Assert
    cash = [d for d in result.differences if d.scope is Scope.CASH]
    assert [(d.cause, d.amount_usd) for d in cash] == [(Cause.POSTED_LATER, D("-2.50"))]
    assert result.status is Status.EXPLAINED
    assert result.repair_since is not None


def test_a_fee_dated_yesterday_posted_today_settles_once_ingested() -> None:
    # the book now holds the fee, dated yesterday; the broker's history shows it in today's cashflow
    yesterday = TODAY - timedelta(days=1)
    days = [BrokerDay(day=yesterday, equity=D(100)), BrokerDay(day=TODAY, equity=D("97.50"), cashflow={"FEE": D("-2.50")})]
    books = {yesterday: BookDay(day=yesterday, equity=D(100), flows={"FEE": D("-2.50")})}
    result = tie_out(now=NOW, book_positions=[], broker_positions=[], book_cash=D("97.50"), broker_cash=D("97.50"),
                     broker_equity=D("97.50"), broker_days=days, book_days=books)
    assert result.status is Status.TIED_OUT
    (day,) = result.days
    assert day.status is Status.TIED_OUT
    note = day.differences[0]
    assert (note.cause, note.open) == (Cause.POSTED_LATER, False)


def test_the_repeated_end_of_day_point_is_the_broker_quirk() -> None:
    d1, d2 = date(2026, 3, 6), date(2026, 3, 9)
    days = [BrokerDay(day=d1, equity=D(1000)), BrokerDay(day=d2, equity=D(1000))]
    books = {d1: BookDay(day=d1, equity=D(1000)), d2: BookDay(day=d2, equity=D(1040))}
    result = tie_out(now=NOW, book_positions=[], broker_positions=[], book_cash=D(0), broker_cash=D(0),
                     broker_equity=D(0), broker_days=days, book_days=books)
    assert [d.status for d in result.days] == [Status.TIED_OUT, Status.EXPLAINED]
    assert causes(result.days[1]) == [Cause.BROKER_QUIRK]


def test_a_null_base_value_is_noted_as_a_quirk_without_changing_the_status() -> None:
    result = tie_out(now=NOW, book_positions=[], broker_positions=[], book_cash=D(0), broker_cash=D(0),
                     broker_equity=D(0), base_value_null=True)
    assert causes(result) == [Cause.BROKER_QUIRK]
    assert result.status is Status.TIED_OUT


def test_past_day_differences() -> None:
    d1, d2 = date(2026, 3, 6), date(2026, 3, 9)
    days = [BrokerDay(day=d1, equity=D(1000)), BrokerDay(day=d2, equity=D(1100))]
    books = {d1: BookDay(day=d1, equity=D(990)), d2: BookDay(day=d2, equity=D(1050), corporate_actions=1)}
    result = tie_out(now=NOW, book_positions=[], broker_positions=[], book_cash=D(0), broker_cash=D(0),
                     broker_equity=D(0), broker_days=days, book_days=books)
    assert [causes(d) for d in result.days] == [[Cause.UNEXPLAINED], [Cause.CORPORATE_ACTION]]
    assert [d.status for d in result.days] == [Status.DRIFT, Status.EXPLAINED]
    assert result.status is Status.EXPLAINED  # now ties out; a drifting past day keeps it from "tied out"


def test_a_past_day_with_a_fill_not_ingested_is_explained() -> None:
    d1 = date(2026, 3, 9)
    pending = [PendingFill(symbol="MSFT", qty=D(1), price=D(400), ts=datetime(2026, 3, 9, 15, tzinfo=UTC))]
    result = tie_out(now=NOW, book_positions=[], broker_positions=[broker("MSFT", "1", "400", "400")],
                     book_cash=D(400), broker_cash=D(0), broker_equity=D(400), pending=pending,
                     broker_days=[BrokerDay(day=d1, equity=D(400))], book_days={d1: BookDay(day=d1, equity=D(390))})
    assert causes(result.days[0]) == [Cause.FILL_NOT_INGESTED]


@pytest.mark.parametrize(("statuses", "expected"), [
    ([], Status.TIED_OUT),
    ([Status.TIED_OUT, Status.EXPLAINED], Status.EXPLAINED),
    ([Status.EXPLAINED, Status.DRIFT, Status.TIED_OUT], Status.DRIFT),
])
def test_worst_status(statuses: list[Status], expected: Status) -> None:
    assert worst(statuses) is expected


def test_differences_round_trip_through_json_dicts() -> None:
    d = Difference(scope=Scope.DAY_CASH, subject="FEE", amount_usd=D("-2.50"), cause=Cause.POSTED_LATER,
                   book=D(0), broker=D("-2.50"), day=TODAY, open=False, detail="x", age_s=3.0)
    assert Difference.from_dict(d.to_dict()) == d


@given(st.lists(st.tuples(st.integers(-50, 50), st.integers(1, 500)), max_size=30))
def test_average_cost_keeps_the_net_quantity(trades: list[tuple[int, int]]) -> None:
    fills = [("X", D(q), D(p)) for q, p in trades if q]
    net = sum((q for _, q, _ in fills), D(0))
    cost = average_cost(fills)
    assert ("X" in cost) == (net != 0)
    if net:
        assert (cost["X"] > 0) == (net > 0)  # long positions cost money, shorts are negative


def test_status_ignores_settled_and_tiny_differences() -> None:
    tol = Tolerances()
    small = Difference(scope=Scope.POSITION_VALUE, subject="A", amount_usd=D("0.01"), cause=Cause.UNEXPLAINED)
    settled = Difference(scope=Scope.CASH, subject="", amount_usd=D(50), cause=Cause.UNEXPLAINED, open=False)
    assert status_of([small, settled], tol) is Status.TIED_OUT


def test_a_deposit_the_broker_buckets_on_the_next_day_is_a_settled_shift() -> None:
    # an evening deposit: the book dates it Monday, the broker's Tuesday point holds it
    mon, tue = date(2026, 3, 2), date(2026, 3, 3)
    days = [BrokerDay(day=mon, equity=D(100)), BrokerDay(day=tue, equity=D(10100), cashflow={"CSD": D(10000)})]
    books = {mon: BookDay(day=mon, equity=D(100), flows={"CSD": D(10000)}), tue: BookDay(day=tue, equity=D(10100))}
    result = tie_out(now=NOW, book_positions=[], broker_positions=[], book_cash=D(0), broker_cash=D(0),
                     broker_equity=D(0), broker_days=days, book_days=books)
    assert [d.status for d in result.days] == [Status.TIED_OUT, Status.TIED_OUT]
    assert [(x.cause, x.open) for d in result.days for x in d.differences] == [(Cause.POSTED_LATER, False)] * 2


def test_a_deposit_missing_from_the_book_is_unexplained_on_its_day() -> None:
    mon = date(2026, 3, 2)
    days = [BrokerDay(day=mon, equity=D(10100), cashflow={"CSD": D(10000)})]
    books = {mon: BookDay(day=mon, equity=D(10100))}
    result = tie_out(now=NOW, book_positions=[], broker_positions=[], book_cash=D(0), broker_cash=D(0),
                     broker_equity=D(0), broker_days=days, book_days=books)
    assert [(x.cause, x.open) for x in result.days[0].differences] == [(Cause.UNEXPLAINED, True)]
    assert result.days[0].status is Status.DRIFT


def test_the_broker_prices_moving_between_its_two_answers_is_not_drift() -> None:
    # positions answered at 156, the account a moment later valued them at 157 (equity 1570)
    marked = BookPosition(symbol="AAPL", qty=D(10), avg_entry_price=D(150), mark_price=D(156), price_source="zmq")
    result = tie_out(now=NOW, book_positions=[marked], broker_positions=[broker("AAPL", "10", "150", "156")],
                     book_cash=D(0), broker_cash=D(0), broker_equity=D(1570), broker_positions_value=D(1570))
    equity = next(d for d in result.differences if d.scope is Scope.EQUITY)
    assert (equity.cause, equity.open) == (Cause.PRICE, False)
    assert result.status is Status.TIED_OUT
    unknown = tie_out(now=NOW, book_positions=[marked], broker_positions=[broker("AAPL", "10", "150", "156")],
                      book_cash=D(0), broker_cash=D(0), broker_equity=D(1570))
    assert unknown.status is Status.DRIFT


def test_a_split_with_the_book_still_marked_before_it_is_explained_not_drift() -> None:
    # the broker holds 100 at 12 after a 10-for-1 split; the book 10, still marked at 120
    result = tie_out(now=NOW, book_positions=[book("NVDA", "10", "120", "120")],
                     broker_positions=[broker("NVDA", "100", "12", "12")], book_cash=D(0), broker_cash=D(0),
                     broker_equity=D(1200))
    assert sorted(causes(result)) == sorted([Cause.CORPORATE_ACTION, Cause.PRICE])
    assert result.status is Status.EXPLAINED


def test_the_deposit_in_the_first_points_base_value_is_a_note_when_that_days_equity_agrees() -> None:
    d1, d2 = date(2026, 3, 6), date(2026, 3, 9)
    days = [BrokerDay(day=d1, equity=D(1000)), BrokerDay(day=d2, equity=D(1000))]
    agree = tie_out(now=NOW, book_positions=[], broker_positions=[], book_cash=D(1000), broker_cash=D(1000),
                    broker_equity=D(1000), broker_days=days,
                    book_days={d1: BookDay(day=d1, equity=D(1000), flows={"CSD": D(1000)}), d2: BookDay(day=d2, equity=D(1000))})
    assert [d.status for d in agree.days] == [Status.TIED_OUT, Status.TIED_OUT]
    assert [(x.cause, x.open) for x in agree.days[0].differences] == [(Cause.BROKER_QUIRK, False)]
    differ = tie_out(now=NOW, book_positions=[], broker_positions=[], book_cash=D(1000), broker_cash=D(1000),
                     broker_equity=D(1000), broker_days=days,
                     book_days={d1: BookDay(day=d1, equity=D(2000), flows={"CSD": D(1000)})})
    assert differ.days[0].status is Status.DRIFT
