"""What may be stored in a derived table: finite numbers within MAX_ABS_STORED."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.storable import MAX_ABS_STORED, bad_value, first_bad_value


@pytest.mark.parametrize(
    ("value", "bad"),
    [
        (Decimal("101.25"), False),
        (Decimal("-1e14"), False),
        (MAX_ABS_STORED, False),
        (Decimal("1e-30"), False),  # tiny is storable (a plausibility band judges prices, not storage)
        (Decimal("1.7e309"), True),
        (-MAX_ABS_STORED * 2, True),
        (Decimal("NaN"), True),
        (Decimal("Infinity"), True),
        (0.25, False),
        (float("nan"), True),
        (float("-inf"), True),
        (1e100, True),
        ("text", False),
        (None, False),
        (True, False),
    ],
)
def test_bad_value(value: object, bad: bool) -> None:
    assert bad_value(value) is bad


def test_first_bad_value_names_the_column() -> None:
    row = {"qty": Decimal(1), "market_value": Decimal("1e100"), "weight": float("inf")}

    assert first_bad_value(row, ("qty", "market_value", "weight")) == "market_value=1E+100"
    assert first_bad_value(row, ("qty",)) is None
