"""The rarer events a real Alpaca account produces, over real HTTP: a reorganisation (``REORG``), a
worthless removal (``REORG``/``WRM``, Alpaca's changelog of 2026-08-27), a cash-settled index option
(``OPCSH``), crypto dust left by a coin fee finer than an order's 9 decimals, a canceled activity and
an activity type Alpaca may add one day. After each, the broker's positions and cash are exactly what
replaying its own activities gives (the documented rule: cash += ``net_amount`` of executed lines).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alpaca.trading.models import NonTradeActivity
from alpaca.trading.requests import GetOptionContractsRequest

from tests.simulator.conftest import wait_for
from tests.simulator.test_alpaca_shapes import acts_of, broker_positions, buy
from tests.simulator_fixtures import SimHandle, start_simulator

NY = ZoneInfo("America/New_York")
INCOME = {"DIV", "DIVNRA", "DIVWH", "DIVTW", "INT"}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimHandle]:
    handle = start_simulator(tmp_path_factory.mktemp("real"), accounts=6, seed=9,
                             extra_args=["--symbols", "AAPL=200,MSFT=400,XSP=500,BTC/USD=60000,ETH/USD=3000"])
    yield handle
    handle.stop()


def replay(acts: list[dict[str, Any]]) -> tuple[Decimal, dict[str, Decimal]]:
    """Cash and positions from the activities alone (executed lines only; multiplier 100 for options)."""
    cash = Decimal(0)
    pos: dict[str, Decimal] = defaultdict(Decimal)
    for a in acts:
        if a.get("status", "executed") != "executed":
            continue
        if a["activity_type"] == "FILL":
            mult = 100 if len(a["symbol"]) > 15 else 1
            signed = Decimal(a["qty"]) * (1 if a["side"] == "buy" else -1)
            cash -= signed * Decimal(a["price"]) * mult
            pos[a["symbol"].replace("/", "")] += signed
            continue
        cash += Decimal(a["net_amount"])
        if a.get("qty") is not None and a["activity_type"] in {"REORG", "OPCSH", "CFEE", "OPEXP"}:
            pos[a["symbol"]] += Decimal(a["qty"])
    return cash, {s: q for s, q in pos.items() if q}


def cash_of(sim: SimHandle, index: int) -> Decimal:
    return Decimal(sim.trading_client(index).get_account().cash)


def test_reorganisation_moves_shares_and_cost_to_the_new_symbol(sim: SimHandle) -> None:
    buy(sim, 0, "AAPL", "20")
    before = {p.symbol: p for p in sim.trading_client(0).get_all_positions()}["AAPL"]
    sim.admin("/corporate-action", {"type": "reorg", "symbol": "AAPL", "new": "APLN", "ratio": "2"})
    lines = acts_of(sim, 0, activity_types="REORG")
    for a in lines:
        NonTradeActivity(**a)
    assert [(a["symbol"], a["qty"], a["net_amount"]) for a in lines] == [("AAPL", "-20", "0"), ("APLN", "40", "0")]
    assert lines[0]["description"] == lines[1]["description"]
    after = {p.symbol: p for p in sim.trading_client(0).get_all_positions()}
    assert "AAPL" not in after
    assert Decimal(after["APLN"].qty) == 40
    assert Decimal(after["APLN"].cost_basis) == Decimal(before.cost_basis)
    assert broker_positions(sim, 0) == replay(acts_of(sim, 0))[1]


def test_worthless_removal_is_a_reorg_with_sub_type_wrm_at_zero_cash(sim: SimHandle) -> None:
    buy(sim, 1, "MSFT", "3")
    cash = cash_of(sim, 1)
    sim.admin("/corporate-action", {"type": "worthless", "symbol": "MSFT"})
    [line] = acts_of(sim, 1, activity_types="REORG")
    NonTradeActivity(**line)
    assert (line["activity_sub_type"], line["symbol"], line["qty"], line["net_amount"]) == ("WRM", "MSFT", "-3", "0")
    assert broker_positions(sim, 1) == {}
    assert cash_of(sim, 1) == cash


def test_index_options_settle_in_cash_at_the_close(sim: SimHandle) -> None:
    client = sim.trading_client(2)
    sim.admin("/price", {"symbol": "XSP", "price": "500"})
    today = datetime.now(NY).date().isoformat()
    call, put = sim.admin("/option-chain", {"underlying": "XSP", "expiry": today, "strikes": ["510"]})["contracts"]
    contract = next(c for c in client.get_option_contracts(
        GetOptionContractsRequest(underlying_symbols=["XSP"])).option_contracts if c.symbol == put)
    assert contract.style == "european"
    buy(sim, 2, put, "2")  # 10 in the money
    buy(sim, 2, call, "1", side="sell")  # short, out of the money: expires
    sim.admin("/session-close", {})
    [settled] = acts_of(sim, 2, activity_types="OPCSH")
    NonTradeActivity(**settled)
    assert (settled["symbol"], settled["qty"], settled["net_amount"]) == (put, "-2", "2000")
    [expired] = acts_of(sim, 2, activity_types="OPEXP")
    assert (expired["symbol"], expired["qty"]) == (call, "1")
    assert broker_positions(sim, 2) == {}
    cash, _ = replay(acts_of(sim, 2))
    assert cash == cash_of(sim, 2)


def test_a_coin_fee_finer_than_an_order_leaves_dust_after_selling_everything_an_order_can(sim: SimHandle) -> None:
    client = sim.trading_client(3)
    buy(sim, 3, "ETH/USD", "0.5")
    sim.admin("/corporate-action", {"type": "crypto_dust", "account": sim.accounts[3]["name"], "symbol": "ETHUSD",
                                    "qty": "0.0000000004"})
    [fee] = acts_of(sim, 3, activity_types="CFEE")
    assert (fee["symbol"], fee["qty"], fee["net_amount"]) == ("ETHUSD", "-0.0000000004", "0")
    assert fee["id"].startswith(fee["date"].replace("-", "") + "000000000::")
    buy(sim, 3, "ETH/USD", "0.499999999", side="sell")
    [pos] = client.get_all_positions()
    assert (pos.symbol, Decimal(pos.qty)) == ("ETHUSD", Decimal("0.0000000006"))
    assert Decimal(pos.market_value) < Decimal("0.01")


def test_a_canceled_activity_is_listed_and_moves_nothing(sim: SimHandle) -> None:
    cash = cash_of(sim, 4)
    sim.admin("/activity", {"account": sim.accounts[4]["name"], "type": "CSD", "amount": "5000", "status": "canceled",
                            "description": "returned deposit"})
    [dep] = [a for a in acts_of(sim, 4, activity_types="CSD") if a["status"] == "canceled"]
    NonTradeActivity(**dep)
    assert dep["net_amount"] == "5000"
    assert cash_of(sim, 4) == cash


def test_an_unknown_future_type_books_its_cash_only_when_asked_for(sim: SimHandle) -> None:
    name = sim.accounts[5]["name"]
    with pytest.raises(Exception, match="422"):
        sim.admin("/activity", {"account": name, "type": "ZZNEW", "amount": "-12.34"})
    cash = cash_of(sim, 5)
    sim.admin("/activity", {"account": name, "type": "ZZNEW", "amount": "-12.34", "allow_unknown": True,
                            "description": "a type from the future"})
    [line] = acts_of(sim, 5, activity_types="ZZNEW")
    assert (line["net_amount"], line["status"]) == ("-12.34", "executed")
    assert cash_of(sim, 5) == cash - Decimal("12.34")


def test_a_clock_started_yesterday_jumps_to_today_and_posts_yesterdays_fees_at_midnight(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    handle = start_simulator(tmp_path_factory.mktemp("clock"), accounts=1, seed=3,
                             extra_args=["--clock-offset-s", "-86400", "--symbols", "AAPL=200,BTC/USD=60000"])
    try:
        today = datetime.now(NY).date()
        buy(handle, 0, "BTC/USD", "0.1")
        [fill] = acts_of(handle, 0, activity_types="FILL")
        assert datetime.fromisoformat(fill["transaction_time"].replace("Z", "+00:00")).astimezone(NY).date() < today
        assert acts_of(handle, 0, activity_types="CFEE") == []
        with pytest.raises(Exception, match="422"):
            handle.admin("/clock", {"advance_s": -60})
        moved = handle.admin("/clock", {"to": "wall"})
        assert datetime.fromisoformat(moved["sim_time"].replace("Z", "+00:00")).astimezone(NY).date() == today
        [fee] = wait_for(lambda: acts_of(handle, 0, activity_types="CFEE"), "yesterday's coin fee, posted at midnight")
        assert fee["date"] == (today - timedelta(days=1)).isoformat()  # dated its trade day, posted at midnight
        assert Decimal(fee["qty"]) == Decimal("-0.00025")
    finally:
        handle.stop()
