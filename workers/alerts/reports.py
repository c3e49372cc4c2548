"""Scheduled reports: build each due report once, store it (downloadable from the Alerts page) and queue it.

One replica (whoever holds the ``alerts/_reports`` lock) writes reports; the table's unique key
``(name, destination, period_end)`` makes a second writer a no-op. A report is written when its
scheduled instant has passed by less than :data:`REPORT_GRACE_S` (a worker down at 16:30 and back at
16:50 still sends the daily report; one back the next morning does not send yesterday's).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime

import asyncpg

from core.alert_reports import (
    ALL,
    AlertLine,
    EquityPoint,
    ReportInput,
    ReportSummary,
    ReportWindow,
    TradeLine,
    combine,
    last_due,
    render_text,
    summarize,
    summary_dict,
)
from core.alert_rules import AlertConfig, ReportSchedule
from core.alerts import PositionRecord
from core.destinations import closed_trades_table, equity_table, open_trades_table
from core.schema import quote_ident

log = logging.getLogger(__name__)

REPORT_GRACE_S = 3600.0
REPORTS_LOCK = "_reports"


async def _input(conn: asyncpg.Connection, slug: str, label: str, window: ReportWindow,
                 series: asyncpg.Pool | None = None) -> ReportInput:
    eq = f"public.{quote_ident(equity_table(slug))}"
    rows = await (series or conn).fetch(  # the time-series database when it is one of its own
        f"""(SELECT ts, equity, net_deposits FROM {eq} WHERE ts < $1 ORDER BY ts DESC LIMIT 1)
            UNION ALL (SELECT ts, equity, net_deposits FROM {eq} WHERE ts >= $1 AND ts <= $2) ORDER BY ts""",
        window.start, window.end)
    trades = await conn.fetch(f"SELECT symbol, net_pl, exit_time FROM public.{quote_ident(closed_trades_table(slug))} "
                              "WHERE exit_time > $1 AND exit_time <= $2", window.start, window.end)
    positions = await conn.fetch(f"SELECT symbol, qty, market_value, price_stale "
                                 f"FROM public.{quote_ident(open_trades_table(slug))}")
    alerts = await conn.fetch("SELECT opened_at, severity, message FROM public.ch_alerts WHERE destination = $1 "
                              "AND opened_at > $2 AND opened_at <= $3", slug, window.start, window.end)
    return ReportInput(
        label=label,
        equity=tuple(EquityPoint(r["ts"], r["equity"], r["net_deposits"]) for r in rows),
        trades=tuple(TradeLine(r["symbol"], r["net_pl"], r["exit_time"]) for r in trades),
        positions=tuple(PositionRecord(r["symbol"], r["qty"], r["market_value"], r["price_stale"]) for r in positions),
        alerts=tuple(AlertLine(r["opened_at"], r["severity"], r["message"]) for r in alerts))


async def _store(conn: asyncpg.Connection, schedule: ReportSchedule, destination: str, summary: ReportSummary,
                 tz: str) -> int | None:
    title = f"{schedule.period} report '{schedule.name}'"
    text = render_text(summary, title, tz)
    async with conn.transaction():
        report_id = await conn.fetchval(
            """INSERT INTO public.ch_reports (name, destination, period, period_start, period_end, body, summary)
               VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) ON CONFLICT (name, destination, period_end) DO NOTHING
               RETURNING id""",
            schedule.name, destination, schedule.period.value, summary.window.start, summary.window.end, text,
            json.dumps(summary_dict(summary)))
        if report_id is None:
            return None
        payload = json.dumps({"event": "report", "report_id": report_id, "report": schedule.name,
                              "destination": destination, "period": schedule.period.value, "text": text,
                              "summary": summary_dict(summary)})
        await conn.executemany(
            """INSERT INTO public.ch_alert_outbox (dedupe_key, channel, report_id, event, payload)
               VALUES ($1, $2, $3, 'report', $4::jsonb) ON CONFLICT (dedupe_key) DO NOTHING""",
            [(f"report:{report_id}:{c}", c, report_id, payload) for c in schedule.channels])
    return int(report_id)


async def run_due_reports(conn: asyncpg.Connection, config: AlertConfig, names: Mapping[str, str], tz: str,
                          now: datetime, enabled_slugs: Sequence[str], series: asyncpg.Pool | None = None) -> list[int]:
    """Write every report due at ``now`` that is not stored yet; returns the new report ids."""
    written: list[int] = []
    for schedule in config.reports:
        window = last_due(schedule, now, tz)
        if (now - window.end).total_seconds() > REPORT_GRACE_S:
            continue
        slugs = [s for s in schedule.slugs if s in enabled_slugs]
        done = {r["destination"] for r in await conn.fetch(
            "SELECT destination FROM public.ch_reports WHERE name = $1 AND period_end = $2", schedule.name, window.end)}
        wanted = [*slugs, ALL] if schedule.combined and len(slugs) > 1 else slugs
        if all(w in done for w in wanted):
            continue
        parts = {s: summarize(await _input(conn, s, names.get(s, s), window, series), window) for s in slugs}
        for slug in wanted:
            if slug in done:
                continue
            summary = parts[slug] if slug != ALL else combine("all destinations", list(parts.values()), window)
            report_id = await _store(conn, schedule, slug, summary, tz)
            if report_id is not None:
                log.info("report %s for %s (%s → %s) stored as #%d", schedule.name, slug, window.start, window.end,
                         report_id)
                written.append(report_id)
    return written
