"""NYSE trading sessions (regular hours, holidays, half days) from ``exchange_calendars``.

The calendar is built once per covered year range and cached; every query is a binary search over
int64 nanosecond arrays of session opens and closes, and :func:`resample_to_sessions` is fully
vectorised. All datetimes in and out are timezone-aware UTC (naive input is refused).

Session boundaries: the market is open on ``[open, close)``. An observation at ``t`` belongs to the
first session whose close is at or after ``t`` (so after-hours and overnight points roll forward to
the next session, and a point stamped exactly at the close belongs to that session).
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import numpy.typing as npt
import pandas as pd

from core.errors import InvalidInput
from core.records import to_utc

CALENDAR_NAME = "XNYS"
_FIRST_YEAR = 1990
_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Session:
    """One trading session."""

    date: date
    open: datetime
    close: datetime

    @property
    def is_half_day(self) -> bool:
        """Early close (e.g. the day after Thanksgiving): under six hours of trading."""
        return (self.close - self.open) < timedelta(hours=6)


class MarketSchedule:
    """Session arithmetic over one precomputed span of the NYSE calendar."""

    def __init__(self, first_year: int, last_year: int) -> None:
        import exchange_calendars as xcals  # heavy import: only when a schedule is first built

        with warnings.catch_warnings():
            # exchange_calendars 4.13 reads Series.values on tz-aware data while building; pandas 3.1
            # deprecates that (Pandas4Warning). Harmless for us: we only read the finished schedule.
            warnings.filterwarnings("ignore", message=".*values returning an ndarray that drops timezone.*")
            cal = xcals.get_calendar(CALENDAR_NAME, start=f"{first_year}-01-01", end=f"{last_year}-12-31")
        schedule = cal.schedule
        self.first_year = first_year
        self.last_year = last_year
        self._dates: npt.NDArray[np.datetime64] = schedule.index.values.astype("datetime64[D]")
        self._opens: npt.NDArray[np.int64] = _to_ns(schedule["open"])
        self._closes: npt.NDArray[np.int64] = _to_ns(schedule["close"])

    # ------------------------------------------------------------------ scalar queries

    def covers(self, t: datetime) -> bool:
        return self.first_year < t.year < self.last_year

    def is_open(self, t: datetime) -> bool:
        """Whether the regular session is open at ``t`` (open inclusive, close exclusive)."""
        ns = _ns(to_utc(t, "t", "is_open"))
        i = int(np.searchsorted(self._opens, ns, side="right")) - 1
        return i >= 0 and ns < int(self._closes[i])

    def session(self, day: date) -> Session | None:
        """The session on ``day`` (its open/close in UTC), or ``None`` on a weekend or holiday."""
        target = np.datetime64(day, "D")
        i = int(np.searchsorted(self._dates, target))
        if i >= len(self._dates) or self._dates[i] != target:
            return None
        return Session(day, _dt(self._opens[i]), _dt(self._closes[i]))

    def next_open(self, t: datetime) -> datetime:
        """The first session open strictly after ``t``."""
        ns = _ns(to_utc(t, "t", "next_open"))
        return _dt(self._opens[self._index_after(self._opens, ns)])

    def next_close(self, t: datetime) -> datetime:
        """The first session close strictly after ``t``."""
        ns = _ns(to_utc(t, "t", "next_close"))
        return _dt(self._closes[self._index_after(self._closes, ns)])

    def previous_close(self, t: datetime) -> datetime:
        """The last session close at or before ``t``."""
        ns = _ns(to_utc(t, "t", "previous_close"))
        i = int(np.searchsorted(self._closes, ns, side="right")) - 1
        if i < 0:
            raise InvalidInput(f"previous_close: {t.isoformat()} is before the calendar's first session")
        return _dt(self._closes[i])

    def session_date_for(self, t: datetime) -> date:
        """The session a moment belongs to: the first whose close is at or after ``t``."""
        ns = _ns(to_utc(t, "t", "session_date_for"))
        i = int(np.searchsorted(self._closes, ns, side="left"))
        if i >= len(self._closes):
            raise InvalidInput("session_date_for: beyond the calendar's last session")
        d: date = self._dates[i].item()
        return d

    def sessions_between(self, start: date, end: date) -> list[date]:
        """Session dates in ``[start, end]`` (both inclusive)."""
        lo, hi = self._date_range(start, end)
        return [d.item() for d in self._dates[lo:hi]]

    def trading_days_between(self, start: date, end: date) -> int:
        """Number of sessions in ``[start, end]`` (both inclusive); 0 if ``end < start``."""
        lo, hi = self._date_range(start, end)
        return max(hi - lo, 0)

    # ------------------------------------------------------------------ vectorised

    def session_index(self, ts_ns: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
        """For each timestamp, the index of the first session whose close is at or after it."""
        idx = np.searchsorted(self._closes, ts_ns, side="left")
        if len(idx) and idx.max() >= len(self._closes):
            raise InvalidInput("timestamps beyond the calendar's last session")
        return idx

    def session_closes(self, idx: npt.NDArray[np.intp]) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(pd.to_datetime(self._closes[idx], utc=True))

    # ------------------------------------------------------------------ helpers

    def _index_after(self, arr: npt.NDArray[np.int64], ns: int) -> int:
        i = int(np.searchsorted(arr, ns, side="right"))
        if i >= len(arr):
            raise InvalidInput("beyond the calendar's last session")
        return i

    def _date_range(self, start: date, end: date) -> tuple[int, int]:
        lo = int(np.searchsorted(self._dates, np.datetime64(start, "D"), side="left"))
        hi = int(np.searchsorted(self._dates, np.datetime64(end, "D"), side="right"))
        return lo, hi


_current: MarketSchedule | None = None


def get_schedule(*moments: datetime | date) -> MarketSchedule:
    """The cached schedule; rebuilt (once) with a wider span if a moment falls outside it."""
    global _current
    sched = _current
    if sched is not None and all(sched.first_year < m.year < sched.last_year for m in moments):
        return sched
    with _lock:
        sched = _current
        years = [m.year for m in moments]
        first = min([_FIRST_YEAR, *[y - 1 for y in years]])
        last = max([datetime.now(UTC).year + 2, *[y + 1 for y in years]])
        if sched is not None:
            first, last = min(first, sched.first_year), max(last, sched.last_year)
            if sched.first_year <= first and last <= sched.last_year:
                return sched
        sched = MarketSchedule(first, last)
        _current = sched
        return sched


def is_open(t: datetime) -> bool:
    """Is the NYSE regular session open at ``t``?"""
    return get_schedule(t).is_open(t)


def session(day: date) -> Session | None:
    """The NYSE session on ``day`` (half days have the early close), ``None`` if closed all day."""
    return get_schedule(day).session(day)


def next_open(t: datetime) -> datetime:
    return get_schedule(t).next_open(t)


def next_close(t: datetime) -> datetime:
    return get_schedule(t).next_close(t)


def previous_close(t: datetime) -> datetime:
    return get_schedule(t).previous_close(t)


def session_date_for(t: datetime) -> date:
    """The NYSE session ``t`` belongs to (after-hours and weekends roll forward to the next one)."""
    return get_schedule(t).session_date_for(t)


def sessions_between(start: date, end: date) -> list[date]:
    return get_schedule(start, end).sessions_between(start, end)


def trading_days_between(start: date, end: date) -> int:
    """Number of NYSE sessions in ``[start, end]``, both inclusive."""
    return get_schedule(start, end).trading_days_between(start, end)


def resample_to_sessions(series: pd.Series) -> pd.Series:
    """Intraday values -> one value per NYSE session: the last observation at or before its close.

    Observations after a close (after hours, overnight, weekends) belong to the next session.
    Sessions without any observation are absent (not forward-filled). The result is indexed by the
    session close (UTC). NaN observations are skipped.
    """
    if not isinstance(series.index, pd.DatetimeIndex) or series.index.tz is None:
        raise InvalidInput("resample_to_sessions: series needs a timezone-aware DatetimeIndex")
    s = series.dropna()
    if s.empty:
        return pd.Series([], index=pd.DatetimeIndex([], tz=UTC), dtype=float, name=series.name)
    index = s.index.tz_convert(UTC)
    sched = get_schedule(index[0].to_pydatetime(), index[-1].to_pydatetime())
    ts_ns = index.as_unit("ns").asi8
    if len(ts_ns) > 1 and np.any(np.diff(ts_ns) < 0):
        raise InvalidInput("resample_to_sessions: index is not sorted")
    idx = sched.session_index(ts_ns)
    last_of_group = np.flatnonzero(np.r_[idx[1:] != idx[:-1], True])
    values = s.to_numpy()[last_of_group]
    return pd.Series(values, index=sched.session_closes(idx[last_of_group]), name=series.name)


def _to_ns(col: pd.Series) -> npt.NDArray[np.int64]:
    return np.asarray(pd.DatetimeIndex(col).as_unit("ns").asi8, dtype=np.int64)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _ns(t: datetime) -> int:
    return (t - _EPOCH) // _US * 1000


def _dt(ns: np.int64 | int) -> datetime:
    out: datetime = pd.Timestamp(int(ns), tz=UTC).to_pydatetime()
    return out
