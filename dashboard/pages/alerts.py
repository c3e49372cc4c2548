"""Alerts: every alert episode (open and resolved) with filters and a CSV export, the scheduled reports
(each downloadable), and the navigation bar's live count of open alerts.

The alerts worker writes ``public.ch_alerts`` and ``public.ch_reports`` (docs/alerts.md); this page only
reads them. Routes: ``/alerts/export.csv?state=&destination=&severity=&q=`` and
``/alerts/reports/<id>.txt``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import dash_bootstrap_components as dbc
from dash import Dash, Input, Output, dcc, html
from flask import Flask, Response, abort, request

from dashboard.context import model, resolve_tz
from dashboard.pages.common import empty_state, section

PATH = "/alerts"
TITLE = "Alerts"
BADGE_POLL_MS = 5000  # the navigation badge's refresh (a count on a partial index: cheap)
PAGE_ROWS = 500
EXPORT_MAX_ROWS = 100_000
STATES = ("all", "open", "resolved")
SEVERITIES = ("all", "critical", "warning", "info")
_SEVERITY_COLOUR = {"critical": "danger", "warning": "warning", "info": "info"}
CSV_COLUMNS = ("id", "opened_at", "resolved_at", "state", "severity", "destination", "rule", "kind", "subject",
               "message", "resolved_message", "value")


def open_count() -> int | None:
    """Open alert episodes now (``None`` before the alerts migration ran)."""
    try:
        rows = model().rows("SELECT count(*) AS n FROM public.ch_alerts WHERE state = 'open'")
    except Exception:  # noqa: BLE001 - an unmigrated database has no alerts table yet
        return None
    return int(rows[0]["n"])


def badge_view(n: int | None) -> tuple[str, str]:
    """The badge's text and classes: hidden while nothing is open."""
    return (str(n), "ms-1") if n else ("", "ms-1 d-none")


def nav_item() -> Any:
    """The Alerts link with its badge and the badge's poll (the shell's ``NavLink(badge_id=...)`` twin)."""
    text, classes = badge_view(open_count())
    return dbc.NavItem(dbc.NavLink(
        ["Alerts", dbc.Badge(text, id="alerts-badge", color="danger", pill=True, className=classes),
         dcc.Interval(id="alerts-badge-tick", interval=BADGE_POLL_MS)], href=PATH, active="exact"))


def _where(state: str, destination: str, severity: str, query: str) -> tuple[str, dict[str, Any]]:
    """A parameterised WHERE clause for the filters (user text is a bound parameter, never SQL)."""
    clauses, params = ["TRUE"], {}
    if state in ("open", "resolved"):
        clauses.append("state = :state")
        params["state"] = state
    if destination and destination != "all":
        clauses.append("destination = :destination")
        params["destination"] = destination
    if severity in SEVERITIES[1:]:
        clauses.append("severity = :severity")
        params["severity"] = severity
    if query.strip():
        clauses.append("(message ILIKE :q OR rule ILIKE :q OR subject ILIKE :q)")
        params["q"] = f"%{query.strip()[:100]}%"
    return " AND ".join(clauses), params


def _filters_from(args: Any) -> tuple[str, str, str, str]:
    state = args.get("state", "all")
    severity = args.get("severity", "all")
    return (state if state in STATES else "all", str(args.get("destination", "all"))[:64],
            severity if severity in SEVERITIES else "all", str(args.get("q", ""))[:100])


def _export_href(state: str, destination: str, severity: str, query: str) -> str:
    from urllib.parse import urlencode

    return f"{PATH}/export.csv?" + urlencode({"state": state, "destination": destination, "severity": severity,
                                               "q": query})


def layout(**_: Any) -> Any:
    names = {d.slug: d.name for d in model().destinations()}
    return html.Div([
        dcc.Interval(id="alerts-tick", interval=BADGE_POLL_MS, n_intervals=0),
        html.H4("Alerts", className="mb-3"),
        dbc.Row([
            dbc.Col(dbc.Select(id="alerts-state", options=[{"label": s.title(), "value": s} for s in STATES],
                               value="open", size="sm"), xs=6, md=2),
            dbc.Col(dbc.Select(id="alerts-destination", value="all", size="sm",
                               options=[{"label": "All destinations", "value": "all"}]
                               + [{"label": n, "value": s} for s, n in sorted(names.items(), key=lambda x: x[1])]),
                    xs=6, md=3),
            dbc.Col(dbc.Select(id="alerts-severity", value="all", size="sm",
                               options=[{"label": s.title() if s != "all" else "All severities", "value": s}
                                        for s in SEVERITIES]), xs=6, md=2),
            dbc.Col(dbc.Input(id="alerts-q", placeholder="Search rule or message", size="sm", debounce=True),
                    xs=6, md=3),
            dbc.Col(html.A("Export CSV", id="alerts-export", href=_export_href("open", "all", "all", ""),
                           className="btn btn-outline-secondary btn-sm w-100"), xs=12, md=2),
        ], className="g-2 mb-3"),
        section("Alert episodes", html.Div(id="alerts-table")),
        section("Scheduled reports", html.Div(id="alerts-reports")),
    ])


def _alert_rows(state: str, destination: str, severity: str, query: str, limit: int) -> list[dict[str, Any]]:
    where, params = _where(state, destination, severity, query)
    return model().rows(f"SELECT {', '.join(CSV_COLUMNS)} FROM public.ch_alerts WHERE {where} "
                        f"ORDER BY opened_at DESC, id DESC LIMIT {int(limit)}", params)


def _when(ts: datetime | None, tz: str) -> str:
    return ts.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S") if ts else "—"


def alerts_table(rows: list[dict[str, Any]], tz: str, names: dict[str, str]) -> Any:
    if not rows:
        return empty_state("No alerts match", "Rules live in ALERT_RULES_FILE (see alerts.example.toml); "
                           "the alerts worker (`python -m workers alerts`, part of `workers all`) evaluates them.")
    wide = "d-none d-md-table-cell"  # columns a phone's width leaves out (the message says it all)
    head = [("Opened", ""), ("Resolved", wide), ("Destination", ""), ("Rule", wide), ("Subject", wide),
            ("Severity", ""), ("State", ""), ("Message", "")]
    body = [html.Tr([
        html.Td(_when(r["opened_at"], tz), className="text-nowrap"),
        html.Td(_when(r["resolved_at"], tz), className=f"text-nowrap {wide}"),
        html.Td(names.get(r["destination"], r["destination"])),
        html.Td(r["rule"], className=wide),
        html.Td(r["subject"] or "—", className=wide),
        html.Td(dbc.Badge(r["severity"], color=_SEVERITY_COLOUR.get(r["severity"], "secondary"))),
        html.Td(dbc.Badge(r["state"], color="danger" if r["state"] == "open" else "success")),
        html.Td(r["message"], className="small", style={"minWidth": "16rem"}),
    ], className="ch-alert-row") for r in rows]
    return dbc.Table([html.Thead(html.Tr([html.Th(c, className=k) for c, k in head])), html.Tbody(body)], size="sm",
                     hover=True, responsive=True, className="mb-0", id="alerts-grid")


def reports_table(tz: str, names: dict[str, str], destination: str) -> Any:
    where = "WHERE destination = :d OR destination = '*'" if destination not in ("", "all") else ""
    rows = model().rows(f"SELECT id, name, destination, period, period_start, period_end FROM public.ch_reports "
                        f"{where} ORDER BY period_end DESC, id DESC LIMIT 50", {"d": destination})
    if not rows:
        return empty_state("No reports yet", "Add a [[reports]] entry (daily or weekly, at a local time) to the "
                           "rules file; each report is stored here and sent to its channels.")
    body = [html.Tr([
        html.Td(r["name"]), html.Td(r["period"]),
        html.Td("All destinations" if r["destination"] == "*" else names.get(r["destination"], r["destination"])),
        html.Td(f"{_when(r['period_start'], tz)} → {_when(r['period_end'], tz)}", className="text-nowrap"),
        html.Td(html.A("Download", href=f"{PATH}/reports/{int(r['id'])}.txt", className="ch-report-link")),
    ]) for r in rows]
    head = ["Report", "Period", "Destination", "Covers", ""]
    return dbc.Table([html.Thead(html.Tr([html.Th(c) for c in head])), html.Tbody(body)], size="sm", hover=True,
                     responsive=True, className="mb-0")


def _csv_lines(rows: list[dict[str, Any]]) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        # a leading = + - @ would make a spreadsheet evaluate the cell: quote it as text
        writer.writerow([("'" + v if isinstance(v, str) and v[:1] in "=+-@" else
                          v.isoformat() if isinstance(v, datetime) else v) for v in (r[c] for c in CSV_COLUMNS)])
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()


def register_routes(server: Flask) -> None:
    @server.route(f"{PATH}/export.csv")
    def alerts_csv() -> Response:
        rows = _alert_rows(*_filters_from(request.args), limit=EXPORT_MAX_ROWS)
        return Response(_csv_lines(rows), mimetype="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="coldharbour-alerts.csv"'})

    @server.route(f"{PATH}/reports/<int:report_id>.txt")
    def report_text(report_id: int) -> Response:
        rows = model().rows("SELECT name, destination, period_end, body FROM public.ch_reports WHERE id = :id",
                            {"id": report_id})
        if not rows:
            abort(404)
        r = rows[0]
        filename = f"coldharbour-{r['name']}-{r['destination'].replace('*', 'all')}-{r['period_end']:%Y%m%d}.txt"
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in filename)
        return Response(r["body"], mimetype="text/plain",
                        headers={"Content-Disposition": f'attachment; filename="{safe}"'})


def register(app: Dash) -> None:
    register_routes(app.server)

    @app.callback(Output("alerts-badge", "children"), Output("alerts-badge", "className"),
                  Input("alerts-badge-tick", "n_intervals"))
    def badge(_n: int | None) -> tuple[str, str]:
        return badge_view(open_count())

    @app.callback(
        Output("alerts-table", "children"),
        Output("alerts-reports", "children"),
        Output("alerts-export", "href"),
        Input("alerts-tick", "n_intervals"),
        Input("alerts-state", "value"),
        Input("alerts-destination", "value"),
        Input("alerts-severity", "value"),
        Input("alerts-q", "value"),
        Input("tz-choice", "value"),
        Input("browser-tz", "data"),
    )
    def render(_n: int, state: str, destination: str, severity: str, query: str | None, tz_choice: str,
               browser_tz: str | None) -> Any:
        state, destination, severity, q = _filters_from({"state": state, "destination": destination,
                                                          "severity": severity, "q": query or ""})
        tz = resolve_tz(tz_choice, browser_tz)
        names = {d.slug: d.name for d in model().destinations()}
        try:
            rows = _alert_rows(state, destination, severity, q, PAGE_ROWS)
            reports = reports_table(tz, names, destination)
        except Exception:  # noqa: BLE001 - before the alerts migration: say so instead of failing the page
            hint = empty_state("Alerts are not set up yet", "Run `python -m workers migrate` (or start the workers).")
            return hint, [], _export_href(state, destination, severity, q)
        return alerts_table(rows, tz, names), reports, _export_href(state, destination, severity, q)
