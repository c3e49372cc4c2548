"""Alpaca's wire conventions: how numbers, times and ids are spelled, and the broker's error type.

Money fields carry at most cents (``"equity": "103643.11"``), quantities at most 9 decimals, prices
as given; timestamps of REST objects are RFC 3339 UTC with microseconds and ``Z``, the
``timestamp`` of a trade update has nanoseconds and a New York offset
(``2026-12-01T10:31:02.123456789-05:00``), as Alpaca's stream sends. Activity ids are
``YYYYMMDDHHMMSSmmm::<uuid>`` with the time part in **New York local time** (Alpaca's own ids:
``20220202135509981`` for a fill at 18:55:09.981Z); end-of-day postings that carry only a date
use midnight (``20220812000000000::…``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

NY = ZoneInfo("America/New_York")
ZERO = Decimal(0)
CENT = Decimal("0.01")
QTY_STEP = Decimal("0.000000001")  # Alpaca accepts up to 9 decimals for fractional shares and crypto
PRICE_STEP = Decimal("0.0001")  # averaged prices (filled_avg_price, avg_entry_price)
RATIO_STEP = Decimal("0.0000001")  # percentages such as unrealized_plpc


class OrderError(Exception):
    """An order or request the broker refuses: HTTP status plus Alpaca's ``{code, message}`` body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def rfc3339(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339_ns_ny(ts: datetime, ns_extra: int = 0) -> str:
    """Nanosecond timestamp with the New York offset; ``ns_extra`` (0-999) fills the digits past the µs."""
    local = ts.astimezone(NY)
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%dT%H:%M:%S}.{local.microsecond:06d}{ns_extra % 1000:03d}{offset[:3]}:{offset[3:]}"


def fmt(value: Decimal | None) -> str | None:
    """Plain decimal string without exponent or trailing zeros (``"12.5"``, ``"100"``)."""
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def money(value: Decimal | None) -> str | None:
    """A dollar amount as Alpaca sends it: rounded to the cent (banker's rounding, as its ledger)."""
    return None if value is None else fmt(value.quantize(CENT, ROUND_HALF_EVEN))


def qty_str(value: Decimal | None) -> str | None:
    return None if value is None else fmt(value.quantize(QTY_STEP, ROUND_HALF_EVEN))


def dec(value: Any, name: str) -> Decimal:
    try:
        out = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise OrderError(422, 40010000, f"invalid {name}: {value!r}") from None
    if not out.is_finite():
        raise OrderError(422, 40010000, f"invalid {name}: {value!r}")
    return out


def activity_id(ts: datetime) -> str:
    """``YYYYMMDDHHMMSSmmm::<uuid>`` with the New York local time of ``ts``."""
    local = ts.astimezone(NY)
    return f"{local:%Y%m%d%H%M%S}{local.microsecond // 1000:03d}::{uuid.uuid4()}"


def date_activity_id(day: date) -> str:
    """The id of an activity Alpaca posts with a date only (end-of-day fees): midnight of that day."""
    return f"{day:%Y%m%d}000000000::{uuid.uuid4()}"


def ny_midnight(day: date) -> datetime:
    """00:00 New York on ``day``, as UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=NY).astimezone(UTC)


def parse_time(value: str | None, *, end_of_day: bool = False) -> datetime | None:
    """RFC 3339 timestamp or ``YYYY-MM-DD`` (as UTC midnight; ``end_of_day`` for the next midnight)."""
    if value is None or value == "":
        return None
    text = value.strip().replace(" ", "+")
    try:
        if len(text) == 10:
            ts = datetime.fromisoformat(text).replace(tzinfo=UTC)
            return ts + timedelta(days=1) if end_of_day else ts
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise OrderError(422, 40010001, f"invalid timestamp {value!r}") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)
