"""Alpaca's exact shapes over real HTTP (alpaca-py where a client reads or trades): money rounding,
corporate actions, option events, crypto, short sales, activity ids, the admin token.

Shapes follow Alpaca's documentation: "Account Activities" (FILL, NTA objects, ids
``YYYYMMDDHHMMSSmmm::uuid``), "Non-Trade Activities for Option Events" (OPEXC/OPASN/OPEXP with OPTRD),
"Crypto Spot Trading Fees" (CFEE: date only, ``BTCUSD``, negative ``qty`` in the coin) and the
Activities integration guide (SPLIT with FSPLIT/RSPLIT sub-types, NC, SPIN, MA).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import requests
from alpaca.trading.enums import AssetClass, OrderSide, TimeInForce
from alpaca.trading.models import NonTradeActivity, TradeActivity
from alpaca.trading.requests import GetOptionContractsRequest, GetPortfolioHistoryRequest, MarketOrderRequest

from tests.simulator.conftest import wait_for
from tests.simulator_fixtures import SimHandle, start_simulator

NY = ZoneInfo("America/New_York")
MONEY_RE = re.compile(r"^-?\d+(\.\d{1,2})?$")
DIVIDEND_FAMILY = {"DIV", "DIVNRA", "DIVWH", "DIVTW", "INT"}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimHandle]:
    handle = start_simulator(tmp_path_factory.mktemp("shapes"), accounts=8, seed=5,
                             extra_args=["--style", "sim-7=crypto", "--style", "sim-8=options"])
    yield handle
    handle.stop()


def acts_of(sim: SimHandle, index: int, **params: str) -> list[dict]:
    client = sim.trading_client(index)
    out: list[dict] = []
    token = None
    while True:
        page = client.get("/account/activities", {"direction": "asc", **params, **({"page_token": token} if token else {})})
        if not page:
            return out
        out.extend(page)
        token = page[-1]["id"]


def replay_positions(acts: list[dict]) -> dict[str, Decimal]:
    """The documented replay rule: fills move by ±qty; non-trade activities by ``qty`` except income."""
    pos: dict[str, Decimal] = defaultdict(Decimal)
    for a in acts:
        if a["activity_type"] == "FILL":
            pos[a["symbol"].replace("/", "")] += Decimal(a["qty"]) * (1 if a["side"] == "buy" else -1)
        elif a.get("qty") is not None and a["activity_type"] not in DIVIDEND_FAMILY:
            pos[a["symbol"]] += Decimal(a["qty"])
    return {s: q for s, q in pos.items() if q}


def broker_positions(sim: SimHandle, index: int) -> dict[str, Decimal]:
    return {p.symbol: Decimal(p.qty) for p in sim.trading_client(index).get_all_positions()}


def buy(sim: SimHandle, index: int, symbol: str, qty: str, side: str = "buy") -> dict:
    return sim.admin("/fill", {"account": sim.accounts[index]["name"], "symbol": symbol, "side": side, "qty": qty})


def test_money_fields_carry_cents_only_after_fractional_fills(sim):
    buy(sim, 0, "AAPL", "0.123456789")
    buy(sim, 0, "MSFT", "1.333333333")
    raw = requests.get(f"{sim.rest_url}/v2/account", headers=headers(sim, 0), timeout=5).json()
    for key in ("cash", "equity", "portfolio_value", "last_equity", "long_market_value", "buying_power", "sma"):
        assert MONEY_RE.match(raw[key]), (key, raw[key])
    for p in requests.get(f"{sim.rest_url}/v2/positions", headers=headers(sim, 0), timeout=5).json():
        for key in ("market_value", "cost_basis", "unrealized_pl", "unrealized_intraday_pl"):
            assert MONEY_RE.match(p[key]), (key, p[key])
    hist = sim.trading_client(0).get_portfolio_history(GetPortfolioHistoryRequest(period="1D", timeframe="1Min"))
    assert all(round(v, 2) == v for v in hist.equity + hist.profit_loss)


def headers(sim: SimHandle, index: int) -> dict[str, str]:
    acct = sim.accounts[index]
    return {"APCA-API-KEY-ID": acct["key_id"], "APCA-API-SECRET-KEY": acct["secret_key"]}


def test_admin_api_needs_the_token_and_never_shows_secrets(sim):
    assert requests.get(f"{sim.rest_url}/admin/state", timeout=5).status_code == 401
    wrong = requests.get(f"{sim.rest_url}/admin/state", headers={"Authorization": "Bearer nope"}, timeout=5)
    assert wrong.status_code == 401
    assert requests.post(f"{sim.rest_url}/admin/fill", json={"account": "sim-1", "symbol": "AAPL", "side": "buy", "qty": "1"},
                         timeout=5).status_code == 401
    state = sim.admin("/state")
    text = str(state)
    for acct in sim.accounts:
        assert acct["secret_key"] not in text
    assert sim["admin_token"] not in text


def test_ids_are_new_york_local_and_sells_that_open_shorts_say_sell_short(sim):
    buy(sim, 1, "TSLA", "3", side="sell")
    fills = acts_of(sim, 1, activity_types="FILL")
    [fill] = fills
    TradeActivity(**{**fill, "side": "sell"})  # alpaca-py's OrderSide knows buy/sell only; the rest parses
    assert fill["side"] == "sell_short"
    at = datetime.fromisoformat(fill["transaction_time"]).astimezone(NY)
    assert fill["id"].split("::")[0] == f"{at:%Y%m%d%H%M%S}{at.microsecond // 1000:03d}"
    deposit = acts_of(sim, 1, activity_types="CSD")[0]
    assert "created_at" not in deposit
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", deposit["date"])
    NonTradeActivity(**deposit)


def test_forward_and_reverse_splits_with_cash_in_lieu(sim):
    # Arrange
    buy(sim, 2, "NVDA", "10")
    buy(sim, 2, "JPM", "45")
    before = {p.symbol: p for p in sim.trading_client(2).get_all_positions()}
    # Act
    sim.admin("/corporate-action", {"type": "split", "symbol": "NVDA", "new_rate": 10, "old_rate": 1})
    sim.admin("/corporate-action", {"type": "split", "symbol": "JPM", "new_rate": 1, "old_rate": 30})
    # Assert
    acts = acts_of(sim, 2)
    splits = [a for a in acts if a["activity_type"] == "SPLIT"]
    assert [(a["symbol"], a["activity_sub_type"], a["qty"]) for a in splits] == [
        ("NVDA", "FSPLIT", "-10"), ("NVDA", "FSPLIT", "100"), ("JPM", "RSPLIT", "-45"), ("JPM", "RSPLIT", "1.5")]
    assert Decimal(splits[1]["price"]) == (Decimal(splits[0]["price"]) / 10).quantize(Decimal(splits[1]["price"]))
    [cil] = [a for a in acts if a["activity_type"] == "CIL"]
    assert (cil["symbol"], cil["qty"]) == ("JPM", "-0.5")
    assert Decimal(cil["net_amount"]) > 0
    for a in splits + [cil]:
        NonTradeActivity(**a)
    after = {p.symbol: p for p in sim.trading_client(2).get_all_positions()}
    assert Decimal(after["NVDA"].qty) == 100
    assert Decimal(after["JPM"].qty) == 1
    assert Decimal(after["NVDA"].cost_basis) == Decimal(before["NVDA"].cost_basis)
    assert replay_positions(acts) == broker_positions(sim, 2)


def test_name_change_spinoff_merger_and_dividend_with_withholding(sim):
    for sym, qty in (("META", "8"), ("AMZN", "20"), ("GOOGL", "10"), ("AAPL", "12")):
        buy(sim, 3, sym, qty)
    sim.admin("/corporate-action", {"type": "name_change", "old": "META", "new": "FBX"})
    sim.admin("/corporate-action", {"type": "spinoff", "parent": "AMZN", "new": "AWSX", "ratio": "0.5", "price": "20"})
    sim.admin("/corporate-action", {"type": "merger", "target": "GOOGL", "acquirer": "MSFT", "ratio": "0.4", "cash": "10"})
    sim.admin("/corporate-action", {"type": "dividend", "symbol": "AAPL", "per_share": "0.25", "withholding": "0.3"})
    acts = acts_of(sim, 3)
    kinds = [(a["activity_type"], a.get("symbol"), a.get("qty"), a["net_amount"]) for a in acts if a["activity_type"] != "FILL"][1:]
    assert kinds == [
        ("NC", "META", "-8", "0"), ("NC", "FBX", "8", "0"), ("SPIN", "AWSX", "10", "0"),
        ("MA", "GOOGL", "-10", "100"), ("MA", "MSFT", "4", "0"), ("DIV", "AAPL", "12", "3"), ("DIVNRA", "AAPL", "12", "-0.9"),
    ]
    positions = broker_positions(sim, 3)
    assert positions == replay_positions(acts)
    assert "META" not in positions
    assert positions["FBX"] == 8
    assert positions["AWSX"] == 10
    assert "GOOGL" not in positions
    assert sim.trading_client(3).get_asset("FBX").symbol == "FBX"


def test_option_chain_exercise_assignment_and_expiry(sim):
    name = sim.accounts[7]["name"]
    client = sim.trading_client(7)
    sim.admin("/price", {"symbol": "AAPL", "price": "200"})
    today = datetime.now(NY).date()
    call, put = sim.admin("/option-chain", {"underlying": "AAPL", "expiry": today.isoformat(), "strikes": ["190"]})["contracts"]
    far = sim.admin("/option-chain", {"underlying": "AAPL", "weeks": 1})["contracts"][0]
    assert re.fullmatch(r"AAPL\d{6}[CP]\d{8}", call)
    listed = client.get_option_contracts(GetOptionContractsRequest(underlying_symbols=["AAPL"]))
    contract = next(c for c in listed.option_contracts if c.symbol == call)
    assert (contract.strike_price, contract.expiration_date, contract.underlying_symbol) == (190.0, today, "AAPL")
    order = client.submit_order(MarketOrderRequest(symbol=call, qty=2, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    wait_for(lambda: client.get_order_by_id(order.id).status == "filled", "the call to fill")
    pos = {p.symbol: p for p in client.get_all_positions()}[call]
    assert pos.asset_class == AssetClass.US_OPTION
    assert Decimal(pos.market_value) == (Decimal(pos.current_price) * 2 * 100).quantize(Decimal("0.01"))
    buy(sim, 7, far, "1", side="sell")  # a short contract, then assigned
    buy(sim, 7, put, "1")  # out of the money: expires
    sim.admin("/corporate-action", {"type": "assign", "account": name, "symbol": far})
    sim.admin("/corporate-action", {"type": "exercise", "account": name, "symbol": call, "qty": "1"})
    sim.admin("/session-close", {})  # today's contracts settle at the close: the other call, the put
    acts = [a for a in acts_of(sim, 7) if a["activity_type"] in ("OPEXC", "OPASN", "OPEXP", "OPTRD")]
    for a in acts:
        NonTradeActivity(**a)
    shapes = [(a["activity_type"], a["symbol"], a["qty"]) for a in acts]
    far_strike = Decimal(far[-8:]) / 1000
    assert shapes[:4] == [("OPASN", far, "1"), ("OPTRD", "AAPL", "-100" if far[10] == "C" else "100"),
                          ("OPEXC", call, "-1"), ("OPTRD", "AAPL", "100")]
    assert Decimal(acts[1]["price"]) == far_strike
    assert sorted(shapes[4:]) == sorted([("OPEXC", call, "-1"), ("OPTRD", "AAPL", "100"), ("OPEXP", put, "-1")])
    assert Decimal(acts[3]["net_amount"]) == -100 * 190
    positions = broker_positions(sim, 7)
    assert call not in positions
    assert put not in positions
    assert far not in positions
    assert positions == replay_positions(acts_of(sim, 7))


def test_crypto_pairs_fees_in_the_coin_posted_at_the_end_of_the_day(sim):
    client = sim.trading_client(6)
    order = client.submit_order(MarketOrderRequest(symbol="BTC/USD", qty=0.3, side=OrderSide.BUY, time_in_force=TimeInForce.GTC))
    wait_for(lambda: client.get_order_by_id(order.id).status == "filled", "the BTC buy")
    assert client.get_order_by_id(order.id).symbol == "BTC/USD"
    [pos] = [p for p in client.get_all_positions() if p.asset_class == AssetClass.CRYPTO]
    assert (pos.symbol, Decimal(pos.qty)) == ("BTCUSD", Decimal("0.3"))
    assert acts_of(sim, 6, activity_types="CFEE") == []  # posted after the day ends, not at the fill
    sim.admin("/end-of-day", {})
    [fee] = acts_of(sim, 6, activity_types="CFEE")
    NonTradeActivity(**fee)
    assert (fee["symbol"], fee["qty"], fee["net_amount"]) == ("BTCUSD", "-0.00075", "0")
    assert fee["id"].startswith(fee["date"].replace("-", "") + "000000000::")
    assert "transaction_time" not in fee
    assert Decimal(client.get_open_position("BTCUSD").qty) == Decimal("0.29925")
    assert client.get_open_position("BTC/USD").symbol == "BTCUSD"
    with pytest.raises(Exception, match="insufficient balance"):
        client.submit_order(MarketOrderRequest(symbol="ETH/USD", qty=1, side=OrderSide.SELL, time_in_force=TimeInForce.GTC))


def test_regulatory_fees_are_date_only_and_posted_at_the_end_of_the_day(sim):
    buy(sim, 4, "AMZN", "10")
    buy(sim, 4, "AMZN", "10", side="sell")
    assert acts_of(sim, 4, activity_types="FEE") == []
    sim.admin("/end-of-day", {})
    fees = acts_of(sim, 4, activity_types="FEE")
    assert sorted(f["activity_sub_type"] for f in fees) == ["REG", "TAF"]
    for f in fees:
        NonTradeActivity(**f)
        assert f["description"].startswith(f["activity_sub_type"] + " fee")
        assert f["id"].startswith(f["date"].replace("-", "") + "000000000::")
        assert Decimal(f["net_amount"]) < 0


def test_a_corporate_action_scheduled_for_later_applies_when_its_time_comes(sim):
    buy(sim, 5, "QQQ", "6")
    at = datetime.now(NY) + timedelta(seconds=1.5)
    answer = sim.admin("/corporate-action", {"type": "split", "symbol": "QQQ", "new_rate": 3, "old_rate": 2, "at": at.isoformat()})
    assert answer["scheduled_for"]
    assert broker_positions(sim, 5)["QQQ"] == 6  # not yet
    wait_for(lambda: broker_positions(sim, 5)["QQQ"] == 9, "the scheduled 3-for-2 split")
    assert [a["qty"] for a in acts_of(sim, 5, activity_types="SPLIT")] == ["-6", "9"]
