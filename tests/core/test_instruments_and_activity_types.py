"""Instruments (OCC symbols, crypto spellings), the activity-type table, fees and income lines."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal as D

import pytest

from core.activity_types import (
    ACTIVITY_EFFECTS,
    LotEffect,
    PnlLine,
    StatusEffect,
    activity_time,
    effect_of,
    status_effect,
)
from core.errors import InvalidInput
from core.fifo import match_fills
from core.income import CashEntry, FeeBasis, allocate_fees, fees_by_trip, pnl_breakdown, regulatory_basis
from core.instruments import AssetClass, OptionRight, canonical_symbol, instrument_for, parse_occ
from core.records import Fill, Side


@pytest.mark.parametrize(("symbol", "underlying", "expiry", "right", "strike"), [
    ("AAPL230721C00150000", "AAPL", date(2023, 7, 21), OptionRight.CALL, D(150)),
    ("SPY240621P00512500", "SPY", date(2024, 6, 21), OptionRight.PUT, D("512.5")),
    ("F261218C00012000", "F", date(2026, 12, 18), OptionRight.CALL, D(12)),
    ("BRK.B250117C00400000", "BRK.B", date(2025, 1, 17), OptionRight.CALL, D(400)),
])
def test_occ_symbols_parse(symbol: str, underlying: str, expiry: date, right: OptionRight, strike: D) -> None:
    c = parse_occ(symbol)
    assert (c.underlying, c.expiry, c.right, c.strike) == (underlying, expiry, right, strike)
    inst = instrument_for(symbol)
    assert inst.asset_class is AssetClass.US_OPTION
    assert inst.multiplier == D(100)


@pytest.mark.parametrize(("symbol", "message"), [
    ("AAPL231321C00150000", "expiry '231321' is not a date"),
    ("AAPL230721X00150000", "not an OCC symbol"),
    ("AAPL230721C0015000", "not an OCC symbol"),
    ("AAPL230721C00000000", "strike must be positive"),
])
def test_malformed_occ_symbols_are_refused_with_the_reason(symbol: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        instrument_for(symbol)


@pytest.mark.parametrize(("symbol", "hint", "canonical"), [
    ("BTC/USD", None, "BTC/USD"),
    ("BTCUSD", "crypto", "BTC/USD"),
    ("btc-usd", AssetClass.CRYPTO, "BTC/USD"),
    ("ETHUSDT", "crypto", "ETH/USDT"),
    ("ETH/BTC", None, "ETH/BTC"),
    ("AAPL", None, "AAPL"),
    ("BTCUSD", None, "BTCUSD"),  # without the class a slashless pair is indistinguishable from a ticker
])
def test_one_spelling_per_instrument(symbol: str, hint: str | None, canonical: str) -> None:
    assert canonical_symbol(symbol, hint) == canonical


def test_unknown_asset_class_and_bad_pair_are_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown asset class 'bond'"):
        instrument_for("X", "bond")
    with pytest.raises(InvalidInput, match="no known quote currency"):
        instrument_for("DOGEEUR", "crypto")


# Every code Alpaca documents: trading API list, alpaca-py ActivityType, Broker API changelog 2026-11-06.
DOCUMENTED = """FILL TRANS MISC ACATC ACATS CFEE CSD CSW DIV DIVCGL DIVCGS DIVFEE DIVFT DIVNRA DIVROC DIVTW DIVTXEX
FEE INT INTNRA INTTW JNL JNLC JNLS MA NC OPASN OPEXP OPXRC PTC PTR REORG SC SSO SSP CIL DIVWH EXTRD FXTRD INTPNL
MEM OCT OPCSH OPEXC OPTRD SPIN SPLIT SWP VOF WH ALLOC CORR CSR DTCS DVF ECEXP FIMAT FXCNV INVPNL SEG SUB TRD
OPCA""".split()


def test_every_documented_type_has_an_effect() -> None:
    missing = [code for code in DOCUMENTED if code not in ACTIVITY_EFFECTS]
    assert missing == []
    assert all(effect_of(code).known for code in DOCUMENTED)


@pytest.mark.parametrize(("code", "lots", "line", "external"), [
    ("FILL", LotEffect.FILL, PnlLine.TRADING, False),
    ("CSD", LotEffect.NONE, PnlLine.NONE, True),
    ("JNLC", LotEffect.NONE, PnlLine.NONE, True),
    ("JNLS", LotEffect.STOCK_TRANSFER, PnlLine.NONE, True),
    ("DIV", LotEffect.NONE, PnlLine.DIVIDEND, False),
    ("DIVNRA", LotEffect.NONE, PnlLine.WITHHOLDING, False),
    ("INT", LotEffect.NONE, PnlLine.INTEREST, False),
    ("CFEE", LotEffect.ASSET_FEE, PnlLine.FEE, False),
    ("SPLIT", LotEffect.SPLIT, PnlLine.TRADING, False),
    ("OPEXP", LotEffect.OPTION_EXPIRY, PnlLine.TRADING, False),
    ("OPTRD", LotEffect.NONE, PnlLine.TRADING, False),
])
def test_effects_of_the_main_types(code: str, lots: LotEffect, line: PnlLine, external: bool) -> None:
    e = effect_of(code)
    assert (e.lots, e.line, e.external_flow) == (lots, line, external)


def test_an_unknown_future_type_is_flagged_and_still_books_its_cash() -> None:
    e = effect_of("NEWTHING")
    assert (e.known, e.books_cash, e.line, e.external_flow) == (False, True, PnlLine.OTHER, False)


@pytest.mark.parametrize(("status", "effect"), [
    (None, StatusEffect.BOOK), ("executed", StatusEffect.BOOK), ("correct", StatusEffect.REPLACE),
    ("canceled", StatusEffect.IGNORE), ("pending", StatusEffect.IGNORE),
])
def test_status(status: str | None, effect: StatusEffect) -> None:
    assert status_effect(status) is effect


@pytest.mark.parametrize(("code", "expected"), [
    ("SPLIT", datetime(2024, 6, 10, 4, 0, tzinfo=UTC)),  # 00:00 EDT
    ("OPEXP", datetime(2024, 6, 11, 3, 59, 59, 999999, tzinfo=UTC)),  # 23:59:59.999999 EDT
    ("CFEE", datetime(2024, 6, 11, 3, 59, 59, 999999, tzinfo=UTC)),
])
def test_date_only_activities_get_a_time_by_kind(code: str, expected: datetime) -> None:
    assert activity_time(code, date(2024, 6, 10)) == expected


T = datetime(2024, 6, 10, 15, 0, tzinfo=UTC)


def _fill(fid: str, side: Side, qty: str, price: str, order: str, symbol: str = "AAPL") -> Fill:
    return Fill(fill_id=fid, ts=T, symbol=symbol, side=side, qty=D(qty), price=D(price), order_id=order)


@pytest.mark.parametrize(("description", "basis"), [
    ("REG FEE", FeeBasis.NOTIONAL_SOLD), ("TAF fee", FeeBasis.SHARES_SOLD), ("ORF", FeeBasis.CONTRACTS_TRADED),
    ("CAT Fee", FeeBasis.UNITS_TRADED), ("Monthly data fee", None),
])
def test_regulatory_fee_kinds(description: str, basis: FeeBasis | None) -> None:
    assert regulatory_basis(description) is basis


def test_fee_with_an_order_id_goes_to_that_orders_fills_and_taf_to_the_days_sells() -> None:
    fills = [_fill("b", Side.BUY, "10", "100", "o1"), _fill("s1", Side.SELL, "6", "110", "o2"),
             _fill("s2", Side.SELL, "4", "110", "o3")]
    entries = [CashEntry("fee1", T, "FEE", D("-1.00"), order_id="o1", description="commission"),
               CashEntry("taf", datetime(2024, 6, 10, 22, 0, tzinfo=UTC), "FEE", D("-0.10"), description="TAF"),
               CashEntry("misc", T, "FEE", D("-2"), description="ADR fee")]
    alloc = allocate_fees(entries, fills)
    assert alloc.by_fill == {"b": D("1.00"), "s1": D("0.06"), "s2": D("0.04")}
    assert alloc.unallocated_total == D(2)
    trips = match_fills(fills).round_trips
    assert list(fees_by_trip(trips, alloc, fills).values()) == [D("1.10")]


def test_a_regulatory_fee_naming_its_symbol_goes_to_that_symbols_fills_only() -> None:
    fills = [_fill("a", Side.SELL, "10", "100", "o1"), _fill("m", Side.SELL, "10", "100", "o2", symbol="MSFT")]
    alloc = allocate_fees([CashEntry("reg", T, "FEE", D("-0.03"), symbol="MSFT", description="REG fee")], fills)
    assert alloc.by_fill == {"m": D("0.03")}


def test_breakdown_keeps_income_withholding_and_deposits_apart() -> None:
    fills = [_fill("b", Side.BUY, "10", "100", "o1"), _fill("s", Side.SELL, "10", "110", "o2")]
    entries = [CashEntry("d", T, "CSD", D(1000)), CashEntry("x", T, "CSD", D(500), status="canceled"),
               CashEntry("div", T, "DIV", D("1.02"), symbol="T"), CashEntry("wh", T, "DIVNRA", D("-0.31")),
               CashEntry("int", T, "INT", D("0.50")), CashEntry("fx", T, "NEWCODE", D("0.07")),
               CashEntry("reg", T, "FEE", D("-0.02"), description="REG fee")]
    b = pnl_breakdown(match_fills(fills).round_trips, entries, fills)
    assert (b.trading_gross, b.dividends, b.withholding, b.interest, b.other) == (
        D(100), D("1.02"), D("-0.31"), D("0.50"), D("0.07"))
    assert (b.trade_fees, b.unallocated_fees, b.deposits) == (D("0.02"), D(0), D(1000))
    assert b.net == D(100) - D("0.02") + D("1.02") - D("0.31") + D("0.50") + D("0.07")


def test_the_docs_table_lists_every_activity_type() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "core_analytics.md").read_text()
    missing = [code for code in ACTIVITY_EFFECTS if f"| `{code}`" not in text]
    assert missing == []
