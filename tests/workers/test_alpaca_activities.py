"""Parser tests: every activity shape in tests/fixtures/alpaca (each file cites the Alpaca page its
shapes come from) → fills, lot events and cash entries, then through the lot engine."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

from core.corporate_actions import (
    AssetFee,
    CashInLieu,
    Merger,
    OptionAssignment,
    OptionExercise,
    OptionExpiry,
    Spinoff,
    Split,
    StockTransfer,
    SymbolChange,
)
from core.fifo import FifoBook
from core.income import pnl_breakdown
from core.records import Fill, Side
from workers.alpaca.activities import parse_activities

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alpaca"


def load(name: str) -> list[dict[str, Any]]:
    data = json.loads((FIXTURES / name).read_text())
    assert data["source"].startswith("http") or "alpaca-py" in data["source"]  # every fixture cites its page
    activities: list[dict[str, Any]] = data["activities"]
    return activities


def test_every_fixture_parses_without_problems() -> None:
    names = sorted(p.name for p in FIXTURES.glob("*.json"))
    assert len(names) >= 10
    for name in names:
        parsed = parse_activities(load(name))
        assert parsed.problems == (), name


def test_fills_including_partial_and_sell_short() -> None:
    parsed = parse_activities(load("fills.json"))
    assert [(f.symbol, f.side, f.qty) for f in parsed.fills] == [
        ("LPCN", Side.BUY, D(1)), ("AAPL", Side.BUY, D("0.38962051")), ("AMZN", Side.BUY, D("1.792161878")),
        ("TSLA", Side.SELL, D(2))]
    assert parsed.events == ()
    assert parsed.cash == ()


def test_dividend_withholding_and_interest_are_income_lines() -> None:
    parsed = parse_activities(load("dividends_withholding.json"))
    b = pnl_breakdown([], parsed.cash)
    assert (b.dividends, b.withholding, b.interest, b.deposits) == (D("1.02"), D("-0.31"), D("0.05"), D(0))


def test_transfers_are_deposits_and_a_canceled_one_counts_nothing() -> None:
    parsed = parse_activities(load("transfers.json"))
    assert pnl_breakdown([], parsed.cash).deposits == D("33324.35") - D(1000) + D(250)
    assert len(parsed.cash) == 3


def test_option_exercise_closes_the_calls_and_buys_200_shares_at_the_strike() -> None:
    parsed = parse_activities(load("option_exercise.json"))
    (ev,) = parsed.events
    assert isinstance(ev, OptionExercise)
    assert (ev.symbol, ev.contracts) == ("AAPL230721C00150000", D(2))
    assert ev.ts == datetime(2023, 7, 22, 3, 59, 59, 999999, tzinfo=UTC)  # end of the expiry day, New York
    assert sum(c.amount for c in parsed.cash) == D(-30000)  # the OPTRD's cash, not its odd price field
    book = FifoBook()
    calls = Fill(fill_id="buy-calls", ts=datetime(2023, 7, 10, 15, tzinfo=UTC), symbol="AAPL230721C00150000",
                 side=Side.BUY, qty=D(2), price=D("5.10"))
    book.apply([calls], events=parsed.events)
    shares = book.open_positions()["AAPL"]
    assert (shares.qty, shares.avg_entry_price) == (D(200), D(150))
    assert [t.gross_pl for t in book.round_trips()] == [D(-1020)]  # premium realized on the option


def test_option_assignment_and_expiry() -> None:
    (asn,) = parse_activities(load("option_assignment.json")).events
    assert isinstance(asn, OptionAssignment)
    assert asn.contracts == D(2)
    (exp,) = parse_activities(load("option_expiry.json")).events
    assert isinstance(exp, OptionExpiry)
    assert exp.contracts == D(2)


def test_crypto_fee_in_the_coin_becomes_an_asset_fee_under_the_canonical_pair() -> None:
    parsed = parse_activities(load("crypto_fee.json"))
    (fee,) = parsed.events
    assert isinstance(fee, AssetFee)
    assert (fee.symbol, fee.qty) == ("ETH/USD", D("0.000195"))
    assert [c.amount for c in parsed.cash] == [D(0), D("-0.47")]
    assert pnl_breakdown([], parsed.cash).unallocated_fees == D("0.47")


def test_documented_stock_and_cash_merger_lines_pair_into_one_merger() -> None:
    parsed = parse_activities(load("merger_stock_and_cash.json"))
    (ev,) = parsed.events
    assert isinstance(ev, Merger)
    assert (ev.symbol, ev.new_symbol, ev.ratio, ev.cash) == ("GRCL", "384CVR015", D(5), D("2832.55"))
    book = FifoBook()
    held = Fill(fill_id="grcl", ts=datetime(2024, 1, 5, 15, tzinfo=UTC), symbol="GRCL", side=Side.BUY,
                qty=D("284.678660686"), price=D(10))
    book.apply([held], events=parsed.events)
    pos = book.open_positions()["384CVR015"]
    assert pos.qty == D("1423.39330343")
    assert pos.cost_basis is not None
    # the cash returned part of the cost (an average price is money at 60 digits: compare to 1e-40)
    assert abs(pos.cost_basis - (D("284.678660686") * 10 - D("2832.55"))) < D("1e-40")
    assert "GRCL" not in book.open_positions()


def test_split_lines_give_the_exact_ratio_and_the_nvda_example_holds() -> None:
    parsed = parse_activities(load("splits.json"))
    splits = sorted((e for e in parsed.events if isinstance(e, Split)), key=lambda e: e.symbol)
    assert [(s.symbol, s.ratio) for s in splits] == [("NVDA", D(10)), ("XYZ", D("0.3333333333"))]
    (cil,) = [e for e in parsed.events if isinstance(e, CashInLieu)]
    assert (cil.qty, cil.cash) == (D("0.333333333"), D("4.00"))
    book = FifoBook()
    t0 = datetime(2024, 6, 3, 15, tzinfo=UTC)
    book.apply([Fill(fill_id="nvda", ts=t0, symbol="NVDA", side=Side.BUY, qty=D(10), price=D(1000)),
                Fill(fill_id="xyz", ts=t0, symbol="XYZ", side=Side.BUY, qty=D(10), price=D(4))], events=parsed.events)
    assert book.open_positions()["NVDA"].qty == D(100)
    assert book.open_positions()["XYZ"].qty == D(3)  # the broker's whole shares after the cash in lieu
    book.apply([Fill(fill_id="sell", ts=datetime(2024, 6, 14, 15, tzinfo=UTC), symbol="NVDA", side=Side.SELL,
                     qty=D(100), price=D(110))])
    assert [t.gross_pl for t in book.round_trips() if t.symbol == "NVDA"] == [D(1000)]


def test_name_change_spinoff_and_stock_journal() -> None:
    parsed = parse_activities(load("name_change_spinoff_journal.json"))
    kinds = {type(e): e for e in parsed.events}
    nc, spin, jnl = kinds[SymbolChange], kinds[Spinoff], kinds[StockTransfer]
    assert (nc.symbol, nc.new_symbol) == ("FB", "META")
    assert (spin.symbol, spin.new_symbol, spin.new_qty, spin.new_price) == ("PAR", "KID", D(20), D(40))
    assert (jnl.symbol, jnl.qty, jnl.price) == ("AAPL", D(2), D(150))
    assert pnl_breakdown([], parsed.cash).deposits == D(0)  # JNLS moves no cash; its value is a flow of shares


def test_regulatory_fees_memo_and_an_unknown_code() -> None:
    parsed = parse_activities(load("fees_and_unknown.json"))
    assert parsed.unknown == ("20240610000000000::d1000000-0005-4000-8000-000000000005",)
    assert [c.activity_type for c in parsed.cash] == ["FEE", "FEE", "FEE", "ZZNEW"]  # the memo books nothing
    b = pnl_breakdown([], parsed.cash)
    assert (b.other, b.unallocated_fees) == (D("1.23"), D("1.03"))  # no fills that day: nothing to attach to


def test_a_correction_replaces_the_version_it_corrects() -> None:
    first = {"id": "x1", "activity_type": "DIV", "date": "2024-01-02", "net_amount": "5.00", "status": "executed"}
    fixed = {**first, "net_amount": "4.50", "status": "correct"}
    parsed = parse_activities([first, fixed])
    assert [c.amount for c in parsed.cash] == [D("4.50")]
    canceled = {**first, "status": "canceled"}
    assert parse_activities([first, canceled]).cash == ()


def test_an_unpaired_split_line_is_reported_not_guessed() -> None:
    lone = {"id": "s1", "activity_type": "SPLIT", "date": "2024-06-10", "net_amount": "0", "symbol": "ABC",
            "qty": "-10", "description": "stock split"}
    parsed = parse_activities([lone])
    assert parsed.events == ()
    assert parsed.problems == ("s1: split line without its pair or a ratio",)
