"""What may be written to a derived table: finite numbers of a size money and quantities can have (pure).

The columns are unconstrained ``NUMERIC`` and ``float8``, which accept 1e300 (and ``float8`` accepts
NaN and infinity); every reader converts them to float64, where such values overflow into errors on
every page. A value beyond :data:`MAX_ABS_STORED` is a unit mistake, a hostile input or a bug, never
money, so writers refuse the row (and count it) instead of storing it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import Decimal

MAX_ABS_STORED = Decimal("1e15")
"""A quadrillion: above any account's equity, position size or price (float64 still resolves it to 1/8)."""
_MAX_ABS_FLOAT = float(MAX_ABS_STORED)


def bad_value(value: object) -> bool:
    """True for a non-finite number or one whose magnitude exceeds :data:`MAX_ABS_STORED`."""
    if isinstance(value, Decimal):
        return not value.is_finite() or abs(value) > MAX_ABS_STORED
    if isinstance(value, float):
        return not math.isfinite(value) or abs(value) > _MAX_ABS_FLOAT
    return False


def first_bad_value(row: Mapping[str, object], columns: Iterable[str]) -> str | None:
    """``"column=value"`` of the first unstorable value of ``row`` among ``columns``; ``None`` when all fit."""
    for name in columns:
        value = row.get(name)
        if bad_value(value):
            return f"{name}={str(value)[:40]}"
    return None
