"""Every REST endpoint through the real alpaca-py TradingClient (no mocks)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
import requests
from alpaca.common.enums import Sort
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import (
    OrderClass,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionSide,
    QueryOrderStatus,
    TimeInForce,
)
from alpaca.trading.models import NonTradeActivity, TradeActivity
from alpaca.trading.requests import (
    ClosePositionRequest,
    GetOrderByIdRequest,
    GetOrdersRequest,
    GetPortfolioHistoryRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLimitOrderRequest,
    StopLossRequest,
    StopOrderRequest,
    TakeProfitRequest,
    TrailingStopOrderRequest,
)

from tests.simulator.conftest import client_for, wait_for


def wait_status(client: TradingClient, order_id, *statuses: OrderStatus):
    return wait_for(lambda: (o := client.get_order_by_id(order_id)).status in statuses and o, f"order in {statuses}")


def pin(sim, symbol: str, price: str | None) -> None:
    sim.admin("/price", {"symbol": symbol, "price": price})


def all_activities(client: TradingClient, **params) -> list[dict]:
    out: list[dict] = []
    token = None
    while True:
        page = client.get("/account/activities", {**params, **({"page_token": token} if token else {})})
        if not page:
            return out
        out.extend(page)
        token = page[-1]["id"]


def activity_time(a: dict) -> datetime:
    """A fill's transaction_time; a non-trade activity has only a date, and its id's prefix is the New
    York local time it was booked (as Alpaca's ids are)."""
    if a.get("transaction_time"):
        return datetime.fromisoformat(a["transaction_time"])
    prefix = a["id"].split("::")[0]
    local = datetime.strptime(prefix[:14], "%Y%m%d%H%M%S").replace(microsecond=int(prefix[14:]) * 1000)
    return local.replace(tzinfo=ZoneInfo("America/New_York"))


def test_account_model_and_initial_deposit(sim):
    client = client_for(sim, 0)
    acct = client.get_account()
    assert acct.status == "ACTIVE"
    assert acct.currency == "USD"
    assert Decimal(acct.cash) == Decimal(acct.equity) == Decimal(100_000)
    assert Decimal(acct.buying_power) == Decimal(200_000)
    assert isinstance(acct.id, UUID)
    acts = client.get("/account/activities")
    assert [a["activity_type"] for a in acts] == ["CSD"]
    NonTradeActivity(**acts[0])


def test_market_order_fills_and_opens_a_position(sim):
    client = client_for(sim, 1)
    order = client.submit_order(MarketOrderRequest(symbol="AAPL", qty=7, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    assert order.status in (OrderStatus.NEW, OrderStatus.FILLED)
    assert order.order_type == OrderType.MARKET
    filled = wait_status(client, order.id, OrderStatus.FILLED)
    assert filled.filled_qty == "7"
    assert filled.filled_at is not None
    pos = client.get_open_position("AAPL")
    assert pos.qty == "7"
    assert pos.side == PositionSide.LONG
    assert Decimal(pos.avg_entry_price) == Decimal(filled.filled_avg_price)
    assert [p.symbol for p in client.get_all_positions()] == ["AAPL"]
    by_asset = client.get_open_position(pos.asset_id)
    assert by_asset.symbol == "AAPL"
    acct = client.get_account()
    assert Decimal(acct.cash) == Decimal(100_000) - 7 * Decimal(filled.filled_avg_price)
    fills = client.get("/account/activities/FILL")
    assert len(fills) == 1
    fill = TradeActivity(**fills[0])
    assert fill.order_id == filled.id
    assert fill.qty == 7
    assert fill.type == "fill"
    ts, _, uid = fills[0]["id"].partition("::")
    assert len(ts) == 17
    assert ts.isdigit()
    UUID(uid)


def test_bracket_order_produces_legs_and_take_profit_cancels_stop(sim):
    client = client_for(sim, 2)
    pin(sim, "MSFT", "400")
    try:
        order = client.submit_order(
            MarketOrderRequest(
                symbol="MSFT", qty=5, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, order_class=OrderClass.BRACKET,
                take_profit=TakeProfitRequest(limit_price=420), stop_loss=StopLossRequest(stop_price=380, limit_price=379),
            )
        )
        assert order.order_class == OrderClass.BRACKET
        assert len(order.legs) == 2
        tp, sl = order.legs
        assert (tp.order_type, tp.side, tp.limit_price) == (OrderType.LIMIT, OrderSide.SELL, "420")
        assert (sl.order_type, sl.stop_price, sl.limit_price) == (OrderType.STOP_LIMIT, "380", "379")
        assert tp.status == sl.status == OrderStatus.HELD
        wait_status(client, order.id, OrderStatus.FILLED)
        nested = client.get_order_by_id(order.id, GetOrderByIdRequest(nested=True))
        assert {leg.status for leg in nested.legs} == {OrderStatus.NEW}
        open_nested = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN, nested=True))
        assert [o.id for o in open_nested] == [order.id]
        assert len(open_nested[0].legs) == 2
        flat = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN))
        assert {o.id for o in flat} == {tp.id, sl.id}
        pin(sim, "MSFT", "421")
        wait_status(client, tp.id, OrderStatus.FILLED)
        assert client.get_order_by_id(sl.id).status == OrderStatus.CANCELED
        assert client.get_all_positions() == []
    finally:
        pin(sim, "MSFT", None)


def test_oco_and_oto_orders(sim):
    client = client_for(sim, 2)
    pin(sim, "JPM", "200")
    try:
        buy = client.submit_order(MarketOrderRequest(symbol="JPM", qty=4, side=OrderSide.BUY, time_in_force=TimeInForce.GTC))
        wait_status(client, buy.id, OrderStatus.FILLED)
        oco = client.submit_order(
            LimitOrderRequest(symbol="JPM", qty=4, side=OrderSide.SELL, time_in_force=TimeInForce.GTC, order_class=OrderClass.OCO,
                              limit_price=210, take_profit=TakeProfitRequest(limit_price=210), stop_loss=StopLossRequest(stop_price=190))
        )
        assert oco.order_class == OrderClass.OCO
        assert len(oco.legs) == 1
        assert oco.legs[0].status == OrderStatus.NEW
        pin(sim, "JPM", "189")
        wait_status(client, oco.legs[0].id, OrderStatus.FILLED)
        assert client.get_order_by_id(oco.id).status == OrderStatus.CANCELED
        oto = client.submit_order(
            MarketOrderRequest(symbol="JPM", qty=2, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, order_class=OrderClass.OTO,
                               stop_loss=StopLossRequest(stop_price=150))
        )
        assert len(oto.legs) == 1
        assert oto.legs[0].status == OrderStatus.HELD
        wait_status(client, oto.legs[0].id, OrderStatus.NEW)
        client.cancel_order_by_id(oto.legs[0].id)
    finally:
        pin(sim, "JPM", None)


def test_limit_stop_stop_limit_and_trailing_trigger_when_price_crosses(sim):
    client = client_for(sim, 3)
    pin(sim, "NVDA", "100")
    try:
        lim = client.submit_order(LimitOrderRequest(symbol="NVDA", qty=10, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, limit_price=95))
        stp = client.submit_order(StopOrderRequest(symbol="NVDA", qty=3, side=OrderSide.SELL, time_in_force=TimeInForce.GTC, stop_price=90))
        stl = client.submit_order(
            StopLimitOrderRequest(symbol="NVDA", qty=2, side=OrderSide.SELL, time_in_force=TimeInForce.GTC, stop_price=91, limit_price=85)
        )
        trl = client.submit_order(
            TrailingStopOrderRequest(symbol="NVDA", qty=1, side=OrderSide.SELL, time_in_force=TimeInForce.GTC, trail_price=5)
        )
        assert trl.stop_price == "95"
        assert trl.hwm == "100"
        assert client.get_order_by_id(lim.id).status == OrderStatus.NEW
        pin(sim, "NVDA", "94.5")
        wait_status(client, lim.id, OrderStatus.FILLED)
        wait_status(client, trl.id, OrderStatus.FILLED)
        assert client.get_order_by_id(stp.id).status == OrderStatus.NEW
        pin(sim, "NVDA", "89")
        wait_status(client, stp.id, OrderStatus.FILLED)
        wait_status(client, stl.id, OrderStatus.FILLED)
        assert Decimal(client.get_open_position("NVDA").qty) == 10 - 3 - 2 - 1
    finally:
        pin(sim, "NVDA", None)


def test_partial_fills_of_a_large_order(sim):
    client = client_for(sim, 4)
    pin(sim, "QQQ", "100")
    try:
        order = client.submit_order(MarketOrderRequest(symbol="QQQ", qty=900, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
        wait_status(client, order.id, OrderStatus.FILLED)
        fills = [a for a in all_activities(client, activity_types="FILL", direction="asc") if a["order_id"] == str(order.id)]
        assert len(fills) >= 3
        assert [f["type"] for f in fills] == ["partial_fill"] * (len(fills) - 1) + ["fill"]
        assert [f["order_status"] for f in fills][:-1] == ["partially_filled"] * (len(fills) - 1)
        assert sum(Decimal(f["qty"]) for f in fills) == 900
        assert Decimal(fills[-1]["leaves_qty"]) == 0
        assert Decimal(fills[0]["leaves_qty"]) == 900 - Decimal(fills[0]["qty"])
    finally:
        pin(sim, "QQQ", None)


def test_position_flip_and_close_position(sim):
    client = client_for(sim, 5)
    buy = client.submit_order(MarketOrderRequest(symbol="TSLA", qty=10, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    wait_status(client, buy.id, OrderStatus.FILLED)
    sell = client.submit_order(MarketOrderRequest(symbol="TSLA", qty=30, side=OrderSide.SELL, time_in_force=TimeInForce.DAY))
    wait_status(client, sell.id, OrderStatus.FILLED)
    pos = client.get_open_position("TSLA")
    assert pos.qty == "-20"
    assert pos.side == PositionSide.SHORT
    assert Decimal(pos.market_value) < 0
    part = client.close_position("TSLA", ClosePositionRequest(percentage="25"))
    assert part.side == OrderSide.BUY
    assert part.qty == "5"
    wait_status(client, part.id, OrderStatus.FILLED)
    assert client.get_open_position("TSLA").qty == "-15"
    rest = client.close_position("TSLA", ClosePositionRequest(qty="15"))
    wait_status(client, rest.id, OrderStatus.FILLED)
    with pytest.raises(APIError) as info:
        client.get_open_position("TSLA")
    assert info.value.status_code == 404
    assert info.value.code == 40410000
    with pytest.raises(APIError):
        client.close_position("TSLA")


def test_close_all_positions_and_fractional_notional_orders(sim):
    client = client_for(sim, 5)
    frac = client.submit_order(MarketOrderRequest(symbol="AMZN", qty=1.25, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    notional = client.submit_order(MarketOrderRequest(symbol="GOOGL", notional=150.55, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    assert notional.notional == "150.55"
    assert notional.qty is None
    wait_status(client, frac.id, OrderStatus.FILLED)
    done = wait_status(client, notional.id, OrderStatus.FILLED)
    assert Decimal(done.filled_qty) * Decimal(done.filled_avg_price) <= Decimal("150.55")
    assert client.get_open_position("AMZN").qty == "1.25"
    responses = client.close_all_positions(cancel_orders=True)
    assert {r.symbol for r in responses} == {"AMZN", "GOOGL"}
    assert {r.status for r in responses} == {200}
    wait_for(lambda: client.get_all_positions() == [], "positions closed")


def test_order_queries_filters_and_cancels(sim):
    client = client_for(sim, 6)
    first = client.submit_order(
        LimitOrderRequest(symbol="META", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, limit_price=1, client_order_id="mine-1")
    )
    second = client.submit_order(LimitOrderRequest(symbol="SPY", qty=1, side=OrderSide.SELL, time_in_force=TimeInForce.DAY, limit_price=9999))
    third = client.submit_order(LimitOrderRequest(symbol="SPY", qty=2, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, limit_price=1))
    assert client.get_order_by_client_id("mine-1").id == first.id
    with pytest.raises(APIError) as dup:
        client.submit_order(LimitOrderRequest(symbol="META", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, limit_price=1, client_order_id="mine-1"))
    assert dup.value.status_code == 422
    assert [o.id for o in client.get_orders()] == [third.id, second.id, first.id]
    asc = client.get_orders(GetOrdersRequest(direction=Sort.ASC, limit=2))
    assert [o.id for o in asc] == [first.id, second.id]
    assert [o.id for o in client.get_orders(GetOrdersRequest(symbols=["SPY"], side=OrderSide.BUY))] == [third.id]
    after = client.get_orders(GetOrdersRequest(after=first.submitted_at))
    assert first.id not in {o.id for o in after}
    assert second.id in {o.id for o in after}
    until = client.get_orders(GetOrdersRequest(until=second.submitted_at))
    assert [o.id for o in until] == [first.id]
    client.cancel_order_by_id(first.id)
    assert client.get_order_by_id(first.id).status == OrderStatus.CANCELED
    with pytest.raises(APIError) as again:
        client.cancel_order_by_id(first.id)
    assert again.value.status_code == 422
    with pytest.raises(APIError) as missing:
        client.get_order_by_id("00000000-0000-0000-0000-000000000000")
    assert missing.value.status_code == 404
    cancelled = client.cancel_orders()
    assert {c.id for c in cancelled} == {second.id, third.id}
    assert {c.status for c in cancelled} == {200}
    assert client.get_orders() == []
    closed = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED))
    assert {o.id for o in closed} == {first.id, second.id, third.id}
    assert len(client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL))) == 3


def test_invalid_orders_answer_422_or_403_with_alpaca_error_body(sim):
    client = client_for(sim, 6)
    with pytest.raises(APIError) as unknown:
        client.submit_order(MarketOrderRequest(symbol="ZZZZ", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    assert unknown.value.status_code == 422
    assert "not found" in unknown.value.message
    with pytest.raises(APIError) as poor:
        client.submit_order(MarketOrderRequest(symbol="SPY", qty=100_000, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    assert poor.value.status_code == 403
    assert poor.value.code == 40310000
    with pytest.raises(APIError) as frac:
        client.submit_order(StopOrderRequest(symbol="SPY", qty=0.5, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, stop_price=900))
    assert frac.value.status_code == 422


def test_auth_failures(sim):
    good = sim.accounts[0]
    wrong_key = TradingClient("PKNOTAKEY", good["secret_key"], paper=True, url_override=sim.rest_url)
    with pytest.raises(APIError) as e401:
        wrong_key.get_account()
    assert e401.value.status_code == 401
    assert e401.value.code == 40110000
    wrong_secret = TradingClient(good["key_id"], "nope", paper=True, url_override=sim.rest_url)
    with pytest.raises(APIError) as e403:
        wrong_secret.get_all_positions()
    assert e403.value.status_code == 403
    assert "message" in e403.value._error
    bare = requests.get(f"{sim.rest_url}/v2/account", timeout=5)
    assert bare.status_code == 401
    assert set(bare.json()) == {"code", "message"}


def test_accounts_are_isolated(sim):
    a, b = client_for(sim, 7), client_for(sim, 0)
    order = a.submit_order(LimitOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, limit_price=1))
    with pytest.raises(APIError) as other:
        b.get_order_by_id(order.id)
    assert other.value.status_code == 404
    a.cancel_order_by_id(order.id)


def test_activities_pagination_filters_and_types(sim):
    client = client_for(sim, 7)
    name = sim.accounts[7]["name"]
    for i in range(230):
        kind = ["DIV", "FEE", "INT", "JNLC", "CSW", "CSD"][i % 6]
        amount = {"FEE": "-1.25", "CSW": "-10"}.get(kind, "3.5")
        sim.admin("/activity", {"account": name, "type": kind, "amount": amount, "description": f"n{i}", "symbol": "AAPL" if kind == "DIV" else None})
    sim.admin("/fill", {"account": name, "symbol": "AAPL", "side": "buy", "qty": "3"})
    everything = all_activities(client)
    assert len(everything) == 1 + 230 + 1
    ids = [a["id"] for a in everything]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == len(ids)
    pages = []
    token = None
    while True:
        page = client.get("/account/activities", {"page_size": 100, "direction": "asc", **({"page_token": token} if token else {})})
        if not page:
            break
        pages.append(page)
        token = page[-1]["id"]
    assert [len(p) for p in pages] == [100, 100, 32]
    assert [a["id"] for p in pages for a in p] == sorted(ids)
    with pytest.raises(APIError) as big:
        client.get("/account/activities", {"page_size": 101})
    assert big.value.status_code == 422
    divs = all_activities(client, activity_types="DIV,FEE")
    assert {a["activity_type"] for a in divs} == {"DIV", "FEE"}
    assert len(divs) == 78
    assert client.get("/account/activities/CSW", {"page_size": 100})[0]["activity_type"] == "CSW"
    for a in divs:
        NonTradeActivity(**a)
    newest = datetime.fromisoformat(everything[0]["transaction_time"]).astimezone(ZoneInfo("America/New_York")).date()
    on_day = all_activities(client, date=newest.isoformat())
    assert 0 < len(on_day) <= len(everything)
    assert on_day[0]["id"] == everything[0]["id"]
    assert all_activities(client, date=(newest - timedelta(days=400)).isoformat()) == []
    mid = activity_time(everything[100])
    after = all_activities(client, after=mid.isoformat())
    until = all_activities(client, until=mid.isoformat())
    assert len(after) == 100
    assert len(until) == len(everything) - 101


def test_portfolio_history_clock_assets_configuration(sim):
    client = client_for(sim, 1)
    hist = client.get_portfolio_history(GetPortfolioHistoryRequest(period="1W", timeframe="1H"))
    assert hist.timeframe == "1H"
    assert len(hist.timestamp) == len(hist.equity) == len(hist.profit_loss) >= 1
    assert hist.base_value == 100_000
    assert hist.equity[-1] == pytest.approx(float(client.get_account().equity), abs=1.0)
    clock = client.get_clock()
    assert clock.is_open
    assert abs(clock.timestamp - datetime.now(UTC)) < timedelta(minutes=5)
    assert client.get_asset("AAPL").symbol == "AAPL"
    assert client.get_account_configurations().fractional_trading is True


def test_replaying_rest_activities_matches_account_and_ground_truth(simulator_factory):
    sim = simulator_factory(accounts=2, history_days=3, bot_rate=30, extra_args=["--fees"])
    client = sim.trading_client(0)
    history_fills = len(all_activities(client, activity_types="FILL"))
    wait_for(lambda: len(all_activities(client, activity_types="FILL")) >= history_fills + 3, "live bot fills")
    sim.admin("/bot", {"rate": 0})
    sim.admin("/pause", {"paused": True})
    client.cancel_orders()
    wait_for(lambda: client.get_orders() == [], "quiet book")
    acts = all_activities(client, direction="asc")
    cash = Decimal(0)
    pos: dict[str, Decimal] = defaultdict(Decimal)
    for a in acts:
        if a["activity_type"] == "FILL":
            signed = Decimal(a["qty"]) * (1 if a["side"] == "buy" else -1)
            cash -= signed * Decimal(a["price"])
            pos[a["symbol"]] += signed
        else:
            cash += Decimal(a["net_amount"])
    assert {a["activity_type"] for a in acts} >= {"FILL", "CSD", "CSW", "DIV", "FEE", "INT", "JNLC"}
    assert cash.quantize(Decimal("0.01")) == Decimal(client.get_account().cash)  # Alpaca shows cents
    assert {s: q for s, q in pos.items() if q} == {p.symbol: Decimal(p.qty) for p in client.get_all_positions()}
    truth = sim.admin("/ground-truth")["accounts"][sim.accounts[0]["name"]]
    assert Decimal(truth["cash"]) == cash
    assert [a["id"] for a in truth["activities"]] == [a["id"] for a in acts]
    assert len(truth["orders"]) >= len({a["order_id"] for a in acts if a["activity_type"] == "FILL"})


def test_replace_order_moves_a_limit_and_a_bracket_stop(sim):
    client = client_for(sim, 4)
    pin(sim, "META", "500")
    try:
        lim = client.submit_order(LimitOrderRequest(symbol="META", qty=2, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, limit_price=450))
        new = client.replace_order_by_id(lim.id, ReplaceOrderRequest(qty=3, limit_price=455))
        assert new.replaces == lim.id
        assert new.qty == "3"
        assert new.limit_price == "455"
        old = client.get_order_by_id(lim.id)
        assert old.status == OrderStatus.REPLACED
        assert old.replaced_by == new.id
        bracket = client.submit_order(
            MarketOrderRequest(symbol="META", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, order_class=OrderClass.BRACKET,
                               take_profit=TakeProfitRequest(limit_price=600), stop_loss=StopLossRequest(stop_price=400))
        )
        wait_status(client, bracket.id, OrderStatus.FILLED)
        stop_leg = bracket.legs[1]
        moved = client.replace_order_by_id(stop_leg.id, ReplaceOrderRequest(stop_price=490))
        legs = client.get_order_by_id(bracket.id, GetOrderByIdRequest(nested=True)).legs
        assert {leg.id for leg in legs} == {bracket.legs[0].id, moved.id}
        pin(sim, "META", "489")
        wait_status(client, moved.id, OrderStatus.FILLED)
        assert client.get_order_by_id(bracket.legs[0].id).status == OrderStatus.CANCELED
        with pytest.raises(APIError) as info:
            client.replace_order_by_id(moved.id, ReplaceOrderRequest(stop_price=1))
        assert info.value.status_code == 422
        client.cancel_order_by_id(new.id)
    finally:
        pin(sim, "META", None)


def test_day_orders_expire_at_session_close(sim):
    client = client_for(sim, 4)
    day = client.submit_order(LimitOrderRequest(symbol="SPY", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, limit_price=1))
    gtc = client.submit_order(LimitOrderRequest(symbol="SPY", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, limit_price=1))
    sim.admin("/session-close", {})
    assert client.get_order_by_id(day.id).status == OrderStatus.EXPIRED
    assert client.get_order_by_id(gtc.id).status == OrderStatus.NEW
    client.cancel_order_by_id(gtc.id)
