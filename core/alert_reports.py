"""Scheduled reports: when one is due, and what it says. Pure (no clock, no I/O).

A report covers the period that ends at its scheduled local time (``at`` in ``DISPLAY_TIMEZONE``)
and starts one day (daily) or one week (weekly) earlier on the wall clock, so a daylight-saving
change gives a 23- or 25-hour day rather than a report at the wrong hour. Its identity is
``(name, destination, period_end)``: the worker stores it once however many replicas run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from core.alert_rules import ReportPeriod, ReportSchedule
from core.alerts import PositionRecord, usd

ZERO = Decimal(0)
ALL = "*"  # the destination label of a report over every destination in scope


@dataclass(frozen=True, slots=True)
class ReportWindow:
    start: datetime  # UTC
    end: datetime  # UTC: the scheduled instant


def last_due(schedule: ReportSchedule, now: datetime, tz: str) -> ReportWindow:
    """The most recent scheduled instant at or before ``now`` and the period it closes."""
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    end = datetime.combine(local.date(), schedule.at, tzinfo=zone)
    if schedule.period is ReportPeriod.DAILY:
        if end > local:
            end -= timedelta(days=1)
        start = end - timedelta(days=1)  # aware arithmetic on one zone: wall-clock days
    else:
        end -= timedelta(days=(end.weekday() - schedule.weekday) % 7)
        if end > local:
            end -= timedelta(days=7)
        start = end - timedelta(days=7)
    # re-attach the zone so a DST change between start and end gives the right UTC offsets
    start = datetime.combine(start.date(), schedule.at, tzinfo=zone)
    end = datetime.combine(end.date(), schedule.at, tzinfo=zone)
    return ReportWindow(start.astimezone(UTC), end.astimezone(UTC))


@dataclass(frozen=True, slots=True)
class EquityPoint:
    ts: datetime
    equity: Decimal
    net_deposits: Decimal


@dataclass(frozen=True, slots=True)
class TradeLine:
    symbol: str
    net_pl: Decimal
    exit_time: datetime


@dataclass(frozen=True, slots=True)
class AlertLine:
    opened_at: datetime
    severity: str
    message: str


@dataclass(frozen=True, slots=True)
class ReportInput:
    """One destination's data for a period: equity points in time order (the last one before the
    period first, when there is one), trips closed in it, positions now, alerts opened in it."""

    label: str
    equity: tuple[EquityPoint, ...] = ()
    trades: tuple[TradeLine, ...] = ()
    positions: tuple[PositionRecord, ...] = ()
    alerts: tuple[AlertLine, ...] = ()


@dataclass(frozen=True, slots=True)
class ReportSummary:
    label: str
    window: ReportWindow
    equity_start: Decimal | None
    equity_end: Decimal | None
    pnl: Decimal  # flow-adjusted: deposits and withdrawals are not P&L
    max_drawdown_pct: float  # deepest fall below the period's running (flow-adjusted) high, >= 0
    trades: int
    wins: int
    best: TradeLine | None
    worst: TradeLine | None
    gross_exposure: Decimal
    open_positions: int
    alerts: tuple[AlertLine, ...] = field(default=())

    @property
    def pnl_pct(self) -> float | None:
        return float(self.pnl / self.equity_start * 100) if self.equity_start else None


def _max_drawdown_pct(points: Sequence[EquityPoint]) -> float:
    high: Decimal | None = None
    worst = 0.0
    for p in points:
        excess = p.equity - p.net_deposits
        high = excess if high is None or excess > high else high
        peak = high + p.net_deposits
        if peak > 0:
            worst = max(worst, float((1 - p.equity / peak) * 100))
    return worst


def summarize(data: ReportInput, window: ReportWindow) -> ReportSummary:
    """The summary of one destination over ``window``."""
    points = data.equity
    first, last = (points[0], points[-1]) if points else (None, None)
    pnl = ZERO
    if first is not None and last is not None:
        pnl = (last.equity - last.net_deposits) - (first.equity - first.net_deposits)
    trades = sorted(data.trades, key=lambda t: t.net_pl)
    return ReportSummary(
        label=data.label, window=window, equity_start=first.equity if first else None,
        equity_end=last.equity if last else None, pnl=pnl, max_drawdown_pct=_max_drawdown_pct(points),
        trades=len(trades), wins=sum(1 for t in trades if t.net_pl > 0),
        best=trades[-1] if trades else None, worst=trades[0] if trades else None,
        gross_exposure=sum((abs(p.market_value) for p in data.positions if p.market_value is not None), ZERO),
        open_positions=len(data.positions), alerts=tuple(sorted(data.alerts, key=lambda a: a.opened_at)))


def combine(label: str, parts: Sequence[ReportSummary], window: ReportWindow) -> ReportSummary:
    """Every destination together: sums, the best and worst trip of all, the deepest drawdown of any."""
    best = [p.best for p in parts if p.best is not None]
    worst = [p.worst for p in parts if p.worst is not None]
    starts = [p.equity_start for p in parts if p.equity_start is not None]
    ends = [p.equity_end for p in parts if p.equity_end is not None]
    return ReportSummary(
        label=label, window=window, equity_start=sum(starts, ZERO) if starts else None,
        equity_end=sum(ends, ZERO) if ends else None, pnl=sum((p.pnl for p in parts), ZERO),
        max_drawdown_pct=max((p.max_drawdown_pct for p in parts), default=0.0),
        trades=sum(p.trades for p in parts), wins=sum(p.wins for p in parts),
        best=max(best, key=lambda t: t.net_pl) if best else None,
        worst=min(worst, key=lambda t: t.net_pl) if worst else None,
        gross_exposure=sum((p.gross_exposure for p in parts), ZERO),
        open_positions=sum(p.open_positions for p in parts),
        alerts=tuple(sorted((a for p in parts for a in p.alerts), key=lambda a: a.opened_at)))


def _trade(t: TradeLine | None) -> str:
    return f"{t.symbol} {usd(t.net_pl)}" if t else "—"


def render_text(s: ReportSummary, title: str, tz: str) -> str:
    """A plain-text report (what e-mail, Telegram, Slack and the download carry)."""
    zone = ZoneInfo(tz)
    span = f"{s.window.start.astimezone(zone):%Y-%m-%d %H:%M} → {s.window.end.astimezone(zone):%Y-%m-%d %H:%M} {tz}"
    pct = f" ({s.pnl_pct:+.2f}%)" if s.pnl_pct is not None else ""
    win_rate = f", {s.wins / s.trades:.0%} won" if s.trades else ""
    lines = [
        f"Cold Harbour {title} · {s.label}",
        span,
        f"Equity: {usd(s.equity_start) if s.equity_start is not None else '—'} → "
        f"{usd(s.equity_end) if s.equity_end is not None else '—'}",
        f"P&L: {usd(s.pnl)}{pct}",
        f"Max drawdown in the period: {s.max_drawdown_pct:.2f}%",
        f"Round trips closed: {s.trades}{win_rate}; best {_trade(s.best)}, worst {_trade(s.worst)}",
        f"Open risk: {s.open_positions} position(s), gross exposure {usd(s.gross_exposure)}",
        f"Alerts: {len(s.alerts)}",
    ]
    lines += [f"  {a.opened_at.astimezone(zone):%m-%d %H:%M} {a.message}" for a in s.alerts[:50]]
    if len(s.alerts) > 50:
        lines.append(f"  … and {len(s.alerts) - 50} more")
    return "\n".join(lines)


def summary_dict(s: ReportSummary) -> dict[str, Any]:
    """JSON-ready summary (money as strings: exact)."""
    def trade(t: TradeLine | None) -> dict[str, str] | None:
        return {"symbol": t.symbol, "net_pl": str(t.net_pl), "exit_time": t.exit_time.isoformat()} if t else None

    return {"label": s.label, "start": s.window.start.isoformat(), "end": s.window.end.isoformat(),
            "equity_start": None if s.equity_start is None else str(s.equity_start),
            "equity_end": None if s.equity_end is None else str(s.equity_end), "pnl": str(s.pnl),
            "pnl_pct": s.pnl_pct, "max_drawdown_pct": round(s.max_drawdown_pct, 4), "trades": s.trades,
            "wins": s.wins, "best": trade(s.best), "worst": trade(s.worst), "gross_exposure": str(s.gross_exposure),
            "open_positions": s.open_positions, "alerts": len(s.alerts)}
