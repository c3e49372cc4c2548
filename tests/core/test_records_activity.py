"""ActivityRecord: the one activity shape, and the Fill it produces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from core.errors import InvalidInput
from core.records import ActivityRecord, Side

T0 = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)


def fill_record(**overrides: object) -> ActivityRecord:
    values: dict[str, object] = {"activity_id": "a1", "ts": T0, "activity_type": "FILL", "symbol": "AAPL",
                                 "side": "buy", "qty": Decimal("2"), "price": Decimal("10.5"), "order_id": "o1"}
    values.update(overrides)
    return ActivityRecord(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("side", "expected"),
    [("buy", Side.BUY), ("sell", Side.SELL), ("sell_short", Side.SELL), ("buy_to_cover", Side.BUY)],
)
def test_to_fill_normalises_the_side(side: str, expected: Side) -> None:
    fill = fill_record(side=side).to_fill()
    assert (fill.fill_id, fill.ts, fill.symbol, fill.side, fill.qty, fill.price, fill.order_id) == (
        "a1", T0, "AAPL", expected, Decimal("2"), Decimal("10.5"), "o1")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"activity_type": "DIV"}, "not a fill"),
        ({"parse_error": "qty: missing"}, "not parsed"),
        ({"symbol": None}, "needs symbol"),
        ({"qty": None}, "needs symbol, qty and price"),
        ({"price": None}, "needs symbol, qty and price"),
        ({"side": "sideways"}, "unknown side"),
        ({"qty": Decimal("-1")}, "qty must be positive"),
    ],
)
def test_to_fill_refuses_unusable_rows_naming_them(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        fill_record(**overrides).to_fill()
    assert "'a1'" in str(info.value)


@pytest.mark.parametrize(("activity_type", "is_fill"), [("FILL", True), ("partial_fill", True), ("DIV", False),
                                                         ("CSD", False)])
def test_is_fill(activity_type: str, is_fill: bool) -> None:
    assert fill_record(activity_type=activity_type).is_fill is is_fill


def test_times_are_utc_and_naive_ones_refused() -> None:
    paris = fill_record(ts=T0.astimezone(timezone(timedelta(hours=1))))
    assert paris.ts == T0
    assert paris.ts.tzinfo is UTC
    with pytest.raises(InvalidInput, match="naive"):
        fill_record(ts=T0.replace(tzinfo=None))
    with pytest.raises(InvalidInput, match="activity_id"):
        fill_record(activity_id="")


def test_raw_payload_is_not_compared_nor_shown() -> None:
    a, b = fill_record(raw={"id": "a1"}), fill_record(raw={"id": "a1", "extra": 1})
    assert a == b
    assert "extra" not in repr(b)
    with pytest.raises(TypeError):
        ActivityRecord("a1", T0, "FILL")  # type: ignore[call-arg]  # keyword-only
