"""trade_updates websocket through alpaca-py's TradingStream, plus the stream fault knobs."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime

from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.models import TradeUpdate
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest, ReplaceOrderRequest, StopOrderRequest
from websockets.sync.client import connect

from tests.simulator.conftest import wait_for


def raw_auth(stream_url: str, key: str, secret: str):
    ws = connect(stream_url, open_timeout=5, legacy=True)
    ws.send(json.dumps({"action": "authenticate", "data": {"key_id": key, "secret_key": secret}}))
    return ws, json.loads(ws.recv(timeout=5))


def fill(sim, index: int, symbol: str = "AAPL", side: str = "buy", qty: str = "2") -> dict:
    return sim.admin("/fill", {"account": sim.accounts[index]["name"], "symbol": symbol, "side": side, "qty": qty})


def test_trade_updates_for_new_fill_and_cancel(sim, recorder):
    rec = recorder(sim, 0).start()
    order = fill(sim, 0, qty="3")
    got = rec.collect(lambda us: sum(u.order.id.hex == order["id"].replace("-", "") for u in us) >= 2)
    mine = [u for u in got if str(u.order.id) == order["id"]]
    assert [u.event for u in mine] == ["new", "fill"]
    done = mine[1]
    assert isinstance(done, TradeUpdate)
    assert done.qty == 3
    assert done.price == float(order["filled_avg_price"])
    assert done.position_qty == 3
    assert done.execution_id is not None
    assert done.order.status == "filled"
    client = sim.trading_client(0)
    resting = client.submit_order(LimitOrderRequest(symbol="SPY", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, limit_price=1))
    client.cancel_order_by_id(resting.id)
    got = rec.collect(lambda us: [u.event for u in us if u.order.id == resting.id] == ["new", "canceled"])
    assert got[-1].order.canceled_at is not None


def test_bad_credentials_get_the_unauthorized_reply_and_a_close(sim):
    acct = sim.accounts[1]
    ws, reply = raw_auth(sim.stream_url, acct["key_id"], "wrong")
    assert reply == {"stream": "authorization", "data": {"action": "authenticate", "status": "unauthorized", "message": "access key verification failed"}}
    wait_for(lambda: ws.state.name == "CLOSED" or _closed(ws), "server closes")


def _closed(ws) -> bool:
    try:
        ws.recv(timeout=0.2)
    except TimeoutError:
        return False
    except Exception:
        return True
    return False


def test_second_connection_is_rejected_with_connection_limit_exceeded(sim, recorder):
    rec = recorder(sim, 1).start()
    acct = sim.accounts[1]
    ws, reply = raw_auth(sim.stream_url, acct["key_id"], acct["secret_key"])
    assert reply["data"]["status"] == "unauthorized"
    assert reply["data"]["message"] == "connection limit exceeded"
    ws.close()
    order = fill(sim, 1)
    rec.collect(lambda us: any(str(u.order.id) == order["id"] and u.event == "fill" for u in us))


def test_replace_and_allow_modes_for_a_second_connection(sim):
    acct = sim.accounts[2]
    try:
        sim.admin("/faults", {"stream_conflict": "replace"})
        first, r1 = raw_auth(sim.stream_url, acct["key_id"], acct["secret_key"])
        second, r2 = raw_auth(sim.stream_url, acct["key_id"], acct["secret_key"])
        assert r1["data"]["status"] == r2["data"]["status"] == "authorized"
        wait_for(lambda: _closed(first), "first connection replaced")
        second.close()
        wait_for(lambda: sim.admin("/state")["stream_connections"].get(acct["name"], 0) == 0, "closed")
        sim.admin("/faults", {"stream_conflict": "allow"})
        a, ra = raw_auth(sim.stream_url, acct["key_id"], acct["secret_key"])
        b, rb = raw_auth(sim.stream_url, acct["key_id"], acct["secret_key"])
        assert ra["data"]["status"] == rb["data"]["status"] == "authorized"
        assert sim.admin("/state")["stream_connections"][acct["name"]] == 2
        a.close()
        b.close()
    finally:
        sim.admin("/faults", {"stream_conflict": "reject"})


def test_drop_on_command_and_the_sdk_reconnects(sim, recorder):
    rec = recorder(sim, 3).start()
    assert sim.admin("/drop-streams", {})["dropped"] >= 1
    rec.wait_listening()  # the SDK's own reconnect
    order = fill(sim, 3)
    rec.collect(lambda us: any(str(u.order.id) == order["id"] and u.event == "fill" for u in us))


def test_periodic_drop(sim):
    acct = sim.accounts[4]
    try:
        sim.admin("/faults", {"ws_drop_every_s": 0.5})
        ws, reply = raw_auth(sim.stream_url, acct["key_id"], acct["secret_key"])
        assert reply["data"]["status"] == "authorized"
        wait_for(lambda: _closed(ws), "periodic drop")
    finally:
        sim.admin("/faults", {"ws_drop_every_s": 0})


def test_listen_reply_and_raw_message_shape(sim):
    acct = sim.accounts[5]
    ws, _ = raw_auth(sim.stream_url, acct["key_id"], acct["secret_key"])
    ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
    assert json.loads(ws.recv(timeout=5)) == {"stream": "listening", "data": {"streams": ["trade_updates"]}}
    order = fill(sim, 5)
    msgs = [json.loads(ws.recv(timeout=5)) for _ in range(2)]
    ws.close()
    assert [m["stream"] for m in msgs] == ["trade_updates"] * 2
    data = msgs[1]["data"]
    assert set(data) == {"event", "order", "timestamp", "price", "qty", "position_qty", "execution_id"}
    assert data["order"]["id"] == order["id"]
    # Alpaca's trade updates carry nanoseconds and the New York offset (…T10:31:02.123456789-05:00).
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}-0[45]:00", data["timestamp"]), data["timestamp"]
    stamp = datetime.fromisoformat(data["timestamp"][:26] + data["timestamp"][29:])
    assert stamp == datetime.fromisoformat(data["order"]["filled_at"].replace("Z", "+00:00"))
    assert isinstance(data["price"], str)
    assert isinstance(data["qty"], str)


def test_duplicate_reorder_and_delay_knobs(sim, recorder):
    rec = recorder(sim, 6).start()
    try:
        sim.admin("/faults", {"ws_duplicate_rate": 1.0})
        order = fill(sim, 6)
        got = rec.collect(lambda us: sum(str(u.order.id) == order["id"] for u in us) >= 4)
        events = [u.event for u in got if str(u.order.id) == order["id"]]
        assert events == ["new", "new", "fill", "fill"]
        sim.admin("/faults", {"ws_duplicate_rate": 0.0, "ws_reorder_rate": 1.0})
        order = fill(sim, 6)
        got = rec.collect(lambda us: sum(str(u.order.id) == order["id"] for u in us) >= 2)
        assert [u.event for u in got if str(u.order.id) == order["id"]] == ["fill", "new"]
        sim.admin("/faults", {"ws_reorder_rate": 0.0, "ws_delay_ms": 400})
        order = fill(sim, 6)
        rec.collect(lambda us: any(str(u.order.id) == order["id"] and u.event == "fill" for u in us))
        received = time.time()
        stamped = datetime.fromisoformat(order["filled_at"].replace("Z", "+00:00")).timestamp()
        # A lower bound only: the sender sleeps the delay before each of the two updates (new, fill).
        assert received - stamped >= 0.75
    finally:
        sim.admin("/faults", {"ws_duplicate_rate": 0.0, "ws_reorder_rate": 0.0, "ws_delay_ms": 0})


def test_pending_new_replaced_rejected_and_expired_events(sim, recorder):
    rec = recorder(sim, 7).start()
    client = sim.trading_client(7)
    try:
        sim.admin("/faults", {"emit_pending_new": True})
        lim = client.submit_order(LimitOrderRequest(symbol="SPY", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, limit_price=1))
        sim.admin("/faults", {"emit_pending_new": False})
        new = client.replace_order_by_id(lim.id, ReplaceOrderRequest(limit_price=2))
        sim.admin("/session-close", {})
        got = rec.collect(lambda us: any(u.event == "expired" for u in us))
        assert [(u.event, u.order.id) for u in got] == [("pending_new", lim.id), ("new", lim.id), ("replaced", lim.id), ("new", new.id), ("expired", new.id)]
        assert got[2].order.replaced_by == new.id
        # Buying power is checked again at execution: spend it, then a resting order that triggers is rejected.
        sim.admin("/price", {"symbol": "SPY", "price": "500"})
        stop = client.submit_order(StopOrderRequest(symbol="SPY", qty=40, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, stop_price=510))
        big = client.submit_order(MarketOrderRequest(symbol="AAPL", qty=int(190_000 / float(sim.admin("/state")["prices"]["AAPL"])), side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
        rec.collect(lambda us: any(u.event == "fill" and u.order.id == big.id for u in us), timeout_s=30)
        sim.admin("/price", {"symbol": "SPY", "price": "511"})
        got = rec.collect(lambda us: any(u.order.id == stop.id and u.event == "rejected" for u in us))
        assert client.get_order_by_id(stop.id).status == "rejected"
    finally:
        sim.admin("/faults", {"emit_pending_new": False})
        sim.admin("/price", {"symbol": "SPY", "price": None})


def test_abort_drop_resets_the_tcp_connection_and_the_sdk_reconnects(sim, recorder):
    rec = recorder(sim, 4).start()
    assert sim.admin("/drop-streams", {"abort": True})["dropped"] >= 1
    rec.wait_listening()
    order = fill(sim, 4)
    rec.collect(lambda us: any(str(u.order.id) == order["id"] and u.event == "fill" for u in us))
