"""Parsing broker JSON (alpaca-py's documented shapes) into rows, and the pure backoff maths."""

from __future__ import annotations

import uuid
import warnings
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.alpaca.parse import (
    parse_account,
    parse_activity,
    parse_order,
    parse_portfolio_history,
    parse_position,
    parse_trade_update,
)
from workers.alpaca.wire import EPOCH
from workers.backoff import (
    BackoffPolicy,
    backoff_delay_s,
    parse_retry_after_s,
    rate_limit_wait_s,
    retry_delay_s,
    should_retry,
)

with warnings.catch_warnings():
    # alpaca-py 0.44 imports websockets.legacy, deprecated since websockets 14; not ours to change.
    warnings.filterwarnings("ignore", "websockets.legacy is deprecated", DeprecationWarning)
    from alpaca.trading.models import NonTradeActivity, Order, TradeActivity, TradeUpdate

ORDER_ID = "61e69015-8549-4bfd-b9c3-01e75843f47d"
LEG_ID = "8a6c2b6e-54a1-4b7e-9a49-7e5c1b0f1a22"


def order_json(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": ORDER_ID,
        "client_order_id": "eb9e2aaa-f71a-4f51-b5b4-52a6c565dad4",
        "created_at": "2021-03-16T18:38:01.942282Z",
        "updated_at": "2021-03-16T18:38:01.942282Z",
        "submitted_at": "2021-03-16T18:38:01.937734Z",
        "filled_at": None,
        "expired_at": None,
        "canceled_at": None,
        "failed_at": None,
        "replaced_at": None,
        "replaced_by": None,
        "replaces": None,
        "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
        "symbol": "AAPL",
        "asset_class": "us_equity",
        "notional": None,
        "qty": "10",
        "filled_qty": "0",
        "filled_avg_price": None,
        "order_class": "simple",
        "order_type": "market",
        "type": "market",
        "side": "buy",
        "time_in_force": "day",
        "limit_price": None,
        "stop_price": None,
        "status": "accepted",
        "extended_hours": False,
        "legs": None,
        "trail_percent": None,
        "trail_price": None,
        "hwm": None,
    }
    data.update(over)
    return data


FILL = {
    "id": "20210316183801942::8f1b3fd2-0c62-4b43-9f38-5a0f1c3b1e11",
    "account_id": "a5a8c6b2-4f0e-4f5c-9e8d-3b1a2c4d5e6f",
    "activity_type": "FILL",
    "transaction_time": "2021-03-16T18:38:01.942282Z",
    "type": "fill",
    "price": "121.23",
    "qty": "10",
    "side": "buy",
    "symbol": "AAPL",
    "leaves_qty": "0",
    "order_id": ORDER_ID,
    "cum_qty": "10",
    "order_status": "filled",
}
DIVIDEND = {
    "id": "20210317000000000::a1b2c3d4-0000-4000-8000-000000000001",
    "account_id": "a5a8c6b2-4f0e-4f5c-9e8d-3b1a2c4d5e6f",
    "activity_type": "DIV",
    "date": "2021-03-17",
    "net_amount": "1.57",
    "description": "Cash DIV @ 0.157",
    "symbol": "AAPL",
    "qty": "10",
    "per_share_amount": "0.157",
    "status": "executed",
}


def test_fixtures_match_alpaca_py_models() -> None:
    # Arrange / Act: the real SDK accepts our sample payloads, so they are the documented shapes.
    TradeActivity(**FILL)
    NonTradeActivity(**DIVIDEND)
    Order(**order_json())
    TradeUpdate(event="fill", execution_id=str(uuid.uuid4()), order=order_json(), timestamp="2021-03-16T18:38:02Z",
                price="121.23", qty="10", position_qty="10")


def test_fill_activity_parses_exactly() -> None:
    row = parse_activity(FILL)
    assert row.parse_error is None
    assert row.activity_id == FILL["id"]
    assert row.ts == datetime(2021, 3, 16, 18, 38, 1, 942282, tzinfo=UTC)
    assert (row.qty, row.price, row.cum_qty, row.leaves_qty) == (Decimal("10"), Decimal("121.23"), Decimal("10"), Decimal("0"))
    assert row.order_id == ORDER_ID
    assert row.is_fill
    assert row.fill_type == "fill"
    assert row.side == "buy"


def test_non_trade_activity_keyed_by_date() -> None:
    row = parse_activity(DIVIDEND)
    assert row.parse_error is None
    assert row.ts == datetime(2021, 3, 17, tzinfo=UTC)
    assert row.net_amount == Decimal("1.57")
    assert not row.is_fill


@pytest.mark.parametrize(
    ("patch", "error_fragment"),
    [
        ({"qty": "ten"}, "qty: not a number"),
        ({"price": None}, "price: missing"),
        ({"transaction_time": "yesterday"}, "transaction_time: not a timestamp"),
        ({"order_id": "not-a-uuid"}, "order_id: not a UUID"),
        ({"activity_type": "WEIRD"}, "unknown 'WEIRD'"),
        ({"price": True}, "price: expected a number"),
        ({"price": "NaN"}, "not a finite number"),
    ],
)
def test_malformed_activity_is_flagged_not_raised(patch: dict[str, Any], error_fragment: str) -> None:
    row = parse_activity({**FILL, **patch})
    assert row.parse_error is not None
    assert error_fragment in row.parse_error
    assert row.activity_id == FILL["id"]
    assert row.raw == {**FILL, **patch}


def test_activity_without_id_gets_stable_key() -> None:
    item = {k: v for k, v in FILL.items() if k != "id"}
    first, second = parse_activity(item), parse_activity(dict(item))
    assert first.activity_id.startswith("malformed:")
    assert first.activity_id == second.activity_id
    assert first.parse_error is not None
    assert "id: missing" in first.parse_error


def test_order_with_legs_is_flattened_with_parent() -> None:
    leg = order_json(id=LEG_ID, order_type="limit", type="limit", side="sell", limit_price="130", status="held")
    rows = parse_order(order_json(order_class="bracket", legs=[leg]))
    assert [r.order_id for r in rows] == [uuid.UUID(ORDER_ID), uuid.UUID(LEG_ID)]
    assert rows[0].parent_order_id is None
    assert rows[1].parent_order_id == uuid.UUID(ORDER_ID)
    assert rows[1].limit_price == Decimal("130")
    assert rows[1].status == "held"
    assert all(r.parse_error is None for r in rows)


def test_trade_update_keys_by_execution_id_else_stable_hash() -> None:
    execution_id = str(uuid.uuid4())
    fill = {"event": "fill", "execution_id": execution_id, "timestamp": "2021-03-16T18:38:02Z", "price": "121.23",
            "qty": "10", "position_qty": "10", "order": order_json(status="filled", filled_qty="10")}
    row = parse_trade_update(fill)
    assert row.event_key == f"x:{execution_id}"
    assert row.is_fill
    assert row.parse_error is None
    assert row.orders[0].status == "filled"
    assert row.price == Decimal("121.23")
    new = {"event": "new", "timestamp": "2021-03-16T18:38:01Z", "order": order_json()}
    assert parse_trade_update(new).event_key == parse_trade_update(dict(new)).event_key
    assert parse_trade_update(new).event_key != parse_trade_update({**new, "event": "accepted"}).event_key


def test_trade_update_missing_order_is_flagged() -> None:
    row = parse_trade_update({"event": "fill", "timestamp": "garbage"})
    assert row.parse_error is not None
    assert "order: missing" in row.parse_error
    assert row.ts == EPOCH
    assert row.orders == ()


def test_account_position_history_parse() -> None:
    acct = parse_account({"id": "x", "equity": "1000.5", "cash": "10", "status": "ACTIVE", "currency": "USD"})
    assert acct.equity == Decimal("1000.5")
    assert acct.parse_error is None
    pos = parse_position({"symbol": "AAPL", "qty": "-3", "avg_entry_price": "10.5", "side": "short"})
    assert pos.qty == Decimal("-3")
    assert pos.parse_error is None
    hist = parse_portfolio_history({"timestamp": [1700000000, 1700086400], "equity": ["1", None],
                                    "profit_loss": [0, 1], "profit_loss_pct": [0, 0.01], "base_value": 1,
                                    "timeframe": "1D"})
    assert hist.timestamps[1] - hist.timestamps[0] == timedelta(days=1)
    assert hist.equity == (Decimal("1"), None)
    assert hist.parse_error is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(["id", "activity_type", "transaction_time", "date", "qty", "price", "order_id",
                               "event", "timestamp", "order", "updated_at", "status", "legs", "execution_id"])


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(field_names, json_values, max_size=8) | json_values)
def test_parsers_never_raise(payload: Any) -> None:
    for parse in (parse_activity, parse_trade_update, parse_account, parse_position, parse_portfolio_history):
        parse(payload)
    parse_order(payload)


# --- backoff ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [(1, 1.0, 1.0), (2, 1.0, 2.0), (3, 1.0, 4.0), (4, 1.0, 8.0), (5, 1.0, 10.0), (100, 1.0, 10.0), (1, 0.0, 0.5),
     (3, 0.0, 2.0)],
)
def test_backoff_table(attempt: int, rand: float, expected: float) -> None:
    policy = BackoffPolicy(base_s=1.0, cap_s=10.0, multiplier=2.0, jitter=0.5)
    assert backoff_delay_s(policy, attempt, rand) == pytest.approx(expected)


@given(st.integers(min_value=1, max_value=10_000), st.floats(min_value=0, max_value=1))
def test_backoff_bounded_and_jittered_within_band(attempt: int, rand: float) -> None:
    policy = BackoffPolicy(base_s=0.1, cap_s=30.0, jitter=0.5)
    delay = backoff_delay_s(policy, attempt, rand)
    ceiling = min(30.0, 0.1 * 2.0 ** min(attempt - 1, 64))
    assert 0.5 * ceiling - 1e-9 <= delay <= ceiling + 1e-9 <= 30.0 + 1e-9


def test_retry_after_and_rate_limit_headers() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after_s("3", now) == 3.0
    assert parse_retry_after_s("Thu, 01 Jan 2026 12:00:05 GMT", now) == 5.0
    assert parse_retry_after_s("soon", now) is None
    assert parse_retry_after_s(None, now) is None
    assert rate_limit_wait_s("0", str(now.timestamp() + 7), now) == 7.0
    assert rate_limit_wait_s("5", str(now.timestamp() + 7), now) == 0.0
    assert rate_limit_wait_s("x", "y", now) == 0.0
    policy = BackoffPolicy(base_s=1.0, cap_s=10.0, jitter=0.0)
    assert retry_delay_s(policy, 3, 0.5, retry_after_s=2.0) >= 2.0
    assert retry_delay_s(policy, 3, 0.5, retry_after_s=500.0, max_wait_s=60.0) == 60.0
    assert should_retry(BackoffPolicy(max_attempts=3), 2)
    assert not should_retry(BackoffPolicy(max_attempts=3), 3)
