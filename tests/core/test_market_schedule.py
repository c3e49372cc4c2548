"""NYSE sessions: holidays, half days, DST, next open/close, resampling rules."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest

from core import market_schedule as ms
from core.errors import InvalidInput


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (utc(2024, 7, 1, 13, 29), False),  # summer (EDT): opens 13:30 UTC
        (utc(2024, 7, 1, 13, 30), True),
        (utc(2024, 7, 1, 19, 59), True),
        (utc(2024, 7, 1, 20, 0), False),  # close is exclusive
        (utc(2024, 1, 2, 14, 29), False),  # winter (EST): opens 14:30 UTC
        (utc(2024, 1, 2, 20, 30), True),
        (utc(2024, 12, 25, 16, 0), False),  # Christmas
        (utc(2024, 11, 29, 17, 59), True),  # day after Thanksgiving: closes 13:00 ET
        (utc(2024, 11, 29, 18, 0), False),
        (utc(2024, 7, 6, 15, 0), False),  # Saturday
    ],
)
def test_is_open(t: datetime, expected: bool) -> None:
    assert ms.is_open(t) is expected


def test_session_for_a_half_day_and_a_holiday() -> None:
    half = ms.session(date(2024, 7, 3))
    assert half is not None
    assert half.open == utc(2024, 7, 3, 13, 30)
    assert half.close == utc(2024, 7, 3, 17, 0)
    assert half.is_half_day
    full = ms.session(date(2024, 7, 2))
    assert full is not None
    assert not full.is_half_day
    assert ms.session(date(2024, 7, 4)) is None
    assert ms.session(date(2024, 7, 6)) is None


def test_next_open_and_close_skip_weekends_and_holidays() -> None:
    friday_after_close = utc(2024, 3, 29, 12, 0)  # Good Friday: closed
    assert ms.next_open(friday_after_close) == utc(2024, 4, 1, 13, 30)
    assert ms.next_close(utc(2024, 12, 24, 18, 30)) == utc(2024, 12, 26, 21, 0)
    assert ms.next_open(utc(2024, 7, 1, 13, 30)) == utc(2024, 7, 2, 13, 30)  # strictly after
    assert ms.previous_close(utc(2024, 7, 1, 12, 0)) == utc(2024, 6, 28, 20, 0)


def test_trading_days_between() -> None:
    assert ms.trading_days_between(date(2024, 1, 1), date(2024, 12, 31)) == 252
    assert ms.trading_days_between(date(2024, 7, 1), date(2024, 7, 5)) == 4  # July 4th
    assert ms.trading_days_between(date(2024, 7, 5), date(2024, 7, 1)) == 0
    assert ms.sessions_between(date(2024, 7, 3), date(2024, 7, 8)) == [date(2024, 7, 3), date(2024, 7, 5), date(2024, 7, 8)]


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(InvalidInput, match="naive"):
        ms.is_open(datetime(2024, 7, 1, 15, 0))  # noqa: DTZ001


def test_resample_takes_last_value_at_or_before_each_close() -> None:
    idx = pd.DatetimeIndex([
        "2024-07-01 14:00", "2024-07-01 20:00",  # Monday: the 20:00 point is the close
        "2024-07-01 22:00", "2024-07-02 15:00",  # after hours rolls into Tuesday
        "2024-07-03 16:59", "2024-07-03 17:30",  # half day closes 17:00: 17:30 goes to Friday
        "2024-07-06 12:00",  # Saturday -> Monday 8th
    ], tz="UTC")
    s = pd.Series(np.arange(7, dtype=float), index=idx)

    out = ms.resample_to_sessions(s)

    assert list(out.index) == [pd.Timestamp(x, tz="UTC") for x in
                               ("2024-07-01 20:00", "2024-07-02 20:00", "2024-07-03 17:00", "2024-07-05 20:00",
                                "2024-07-08 20:00")]
    assert list(out) == [1.0, 3.0, 4.0, 5.0, 6.0]


def test_resample_refuses_naive_or_unsorted() -> None:
    with pytest.raises(InvalidInput):
        ms.resample_to_sessions(pd.Series([1.0], index=pd.DatetimeIndex(["2024-07-01"])))
    with pytest.raises(InvalidInput):
        ms.resample_to_sessions(pd.Series([1.0, 2.0], index=pd.DatetimeIndex(["2024-07-02", "2024-07-01"], tz="UTC")))


def test_schedule_extends_for_far_dates() -> None:
    assert ms.session(date(1995, 12, 25)) is None
    far = ms.session(date(2035, 3, 5))
    assert far is not None
    assert far.close == utc(2035, 3, 5, 21, 0)


def test_session_date_for_rolls_after_hours_forward() -> None:
    assert ms.session_date_for(utc(2024, 7, 1, 15, 0)) == date(2024, 7, 1)
    assert ms.session_date_for(utc(2024, 7, 1, 20, 0)) == date(2024, 7, 1)
    assert ms.session_date_for(utc(2024, 7, 1, 20, 1)) == date(2024, 7, 2)
    assert ms.session_date_for(utc(2024, 7, 3, 18, 0)) == date(2024, 7, 5)  # half day, then July 4th
