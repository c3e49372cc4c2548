"""Scheduled reports: when one is due (local wall clock, DST), and what the summary says."""

from __future__ import annotations

from datetime import UTC, datetime, time
from decimal import Decimal

import pytest

from core.alert_reports import (
    AlertLine,
    EquityPoint,
    ReportInput,
    ReportWindow,
    TradeLine,
    combine,
    last_due,
    render_text,
    summarize,
    summary_dict,
)
from core.alert_rules import ReportPeriod, ReportSchedule
from core.alerts import PositionRecord

NY = "America/New_York"
D = Decimal


def schedule(period: ReportPeriod, at: time, weekday: int = 0) -> ReportSchedule:
    return ReportSchedule(name="r", period=period, at=at, weekday=weekday, slugs=("a",))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(("label", "sched", "now", "start", "end"), [
    ("daily, after today's time", schedule(ReportPeriod.DAILY, time(16, 30)), utc(2026, 3, 4, 22, 0),
     utc(2026, 3, 3, 21, 30), utc(2026, 3, 4, 21, 30)),  # EST: 16:30 = 21:30Z
    ("daily, before today's time", schedule(ReportPeriod.DAILY, time(16, 30)), utc(2026, 3, 4, 20, 0),
     utc(2026, 3, 2, 21, 30), utc(2026, 3, 3, 21, 30)),
    ("daily, exactly at the time", schedule(ReportPeriod.DAILY, time(16, 30)), utc(2026, 3, 4, 21, 30),
     utc(2026, 3, 3, 21, 30), utc(2026, 3, 4, 21, 30)),
    ("daily across the spring DST change: a 23-hour day", schedule(ReportPeriod.DAILY, time(16, 30)),
     utc(2026, 3, 8, 21, 0), utc(2026, 3, 7, 21, 30), utc(2026, 3, 8, 20, 30)),  # EDT from 8 March: 20:30Z
    ("weekly on Friday, asked on Monday", schedule(ReportPeriod.WEEKLY, time(17, 0), weekday=4),
     utc(2026, 3, 2, 15, 0), utc(2026, 2, 20, 22, 0), utc(2026, 2, 27, 22, 0)),
    ("weekly on Friday, asked Friday before the time", schedule(ReportPeriod.WEEKLY, time(17, 0), weekday=4),
     utc(2026, 2, 27, 21, 0), utc(2026, 2, 13, 22, 0), utc(2026, 2, 20, 22, 0)),
])
def test_last_due(label: str, sched: ReportSchedule, now: datetime, start: datetime, end: datetime) -> None:
    window = last_due(sched, now, NY)

    assert (window.start, window.end) == (start, end)


WINDOW = ReportWindow(utc(2026, 3, 3, 21, 30), utc(2026, 3, 4, 21, 30))
T = utc(2026, 3, 4, 15, 0)


def data(label: str = "Alpha") -> ReportInput:
    return ReportInput(
        label=label,
        equity=(EquityPoint(utc(2026, 3, 3, 21, 0), D("10000"), D("10000")),  # the point before the period
                EquityPoint(T, D("11000"), D("10000")),
                EquityPoint(T, D("10450"), D("10000")),  # 5 % below the period's high of 11000
                EquityPoint(T, D("15500"), D("15000"))),  # a 5000 deposit: no P&L
        trades=(TradeLine("AAPL", D("120"), T), TradeLine("MSFT", D("-40"), T), TradeLine("NVDA", D("10"), T)),
        positions=(PositionRecord("SPY", D(2), D("1000")), PositionRecord("QQQ", D(-1), D("-500"))),
        alerts=(AlertLine(T, "warning", "[warning] big fill · alpha: …"),))


def test_summary() -> None:
    s = summarize(data(), WINDOW)

    assert (s.equity_start, s.equity_end, s.pnl) == (D("10000"), D("15500"), D("500"))
    assert s.pnl_pct == pytest.approx(5.0)
    assert s.max_drawdown_pct == pytest.approx(5.0)
    assert (s.trades, s.wins) == (3, 2)
    assert (s.best.symbol, s.worst.symbol) == ("AAPL", "MSFT")  # type: ignore[union-attr]
    assert (s.gross_exposure, s.open_positions, len(s.alerts)) == (D("1500"), 2, 1)


def test_empty_period() -> None:
    s = summarize(ReportInput(label="Quiet"), WINDOW)

    assert (s.equity_start, s.pnl, s.trades, s.best, s.pnl_pct) == (None, D(0), 0, None, None)
    assert "Round trips closed: 0; best —, worst —" in render_text(s, "daily report", NY)


def test_combined_and_rendered() -> None:
    parts = [summarize(data("Alpha"), WINDOW), summarize(data("Beta"), WINDOW)]

    s = combine("all destinations", parts, WINDOW)
    text = render_text(s, "daily report 'd'", NY)

    assert (s.equity_start, s.pnl, s.trades, s.open_positions) == (D("20000"), D("1000"), 6, 4)
    assert text.splitlines()[:2] == ["Cold Harbour daily report 'd' · all destinations",
                                     "2026-03-03 16:30 → 2026-03-04 16:30 America/New_York"]
    assert "P&L: $1,000.00 (+5.00%)" in text
    assert "best AAPL $120.00, worst MSFT -$40.00" in text
    assert "Alerts: 2" in text
    assert summary_dict(s)["pnl"] == "1000"
