"""Reconciliation: does each destination's book tie out to the broker, now and on every past day, and why not.

The manager's tie-out loop writes ``public.ch_tieout`` (docs/reconciliation.md); this page only reads
it. Per destination: the status now with book and broker cash and equity and every difference with
its cause, a calendar of past days coloured by status (a day opens its differences), and when the
status last changed. ``trust_badge`` is the one-component badge the overview cards and the
destination header show; ``health_row`` is the Health page's line. Route:
``/reconciliation/export.csv?destination=<slug>`` (every latest day and now, one line per difference).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import dash_bootstrap_components as dbc
from dash import ALL, Dash, Input, Output, ctx, dcc, html
from flask import Flask, Response, request

from dashboard.components import fmt
from dashboard.context import model
from dashboard.export_formats import neutralise
from dashboard.pages.common import empty_state, section

PATH = "/reconciliation"
TITLE = "Reconciliation"
POLL_MS = 10_000  # the tie-out runs every few minutes: a slow poll is current enough
CALENDAR_DAYS = 62
BADGE_CACHE_S = 10
# "explained" is information (the book is behind the broker for a known reason), not an alarm: only
# drift is red, so that a trader does not read a known, passing difference as "the books do not match"
STATUS_COLOUR = {"tied_out": "success", "explained": "info", "drift": "danger"}
STATUS_TEXT = {"tied_out": "tied out", "explained": "explained", "drift": "drift"}
CAUSE_TEXT = {"fill_not_ingested": "fill not ingested yet", "posted_later": "posted later",
              "corporate_action": "corporate action not applied", "price": "price difference",
              "cost_method": "cost method (FIFO vs average)", "broker_quirk": "known broker quirk",
              "unexplained": "unexplained"}
CSV_COLUMNS = ("destination", "day", "status", "checked_at", "scope", "subject", "cause", "open", "amount_usd",
               "book", "broker", "age_s", "detail")


def _rows(sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        return model().rows(sql, params)
    except Exception:  # noqa: BLE001 - before migration 7 there is no table: the page says so
        return []


def latest_now(slug: str) -> dict[str, Any] | None:
    rows = _rows("""SELECT status, causes, unexplained_usd, first_seen_at, checked_at, book_cash, broker_cash,
                           book_equity, broker_equity, differences
                    FROM public.ch_tieout WHERE destination = :d AND day IS NULL ORDER BY id DESC LIMIT 1""",
                 {"d": slug})
    return rows[0] if rows else None


def latest_days(slug: str, limit: int = CALENDAR_DAYS) -> list[dict[str, Any]]:
    return _rows("""SELECT * FROM (SELECT DISTINCT ON (day) day, status, causes, book_equity, broker_equity,
                                          differences, checked_at
                                   FROM public.ch_tieout WHERE destination = :d AND day IS NOT NULL
                                   ORDER BY day DESC, id DESC) AS t ORDER BY day DESC LIMIT :n""",
                 {"d": slug, "n": limit})


def all_now() -> list[dict[str, Any]]:
    return _rows("""SELECT DISTINCT ON (destination) destination, status, causes, unexplained_usd, checked_at,
                           first_seen_at FROM public.ch_tieout WHERE day IS NULL ORDER BY destination, id DESC""", {})


def _diffs(value: Any) -> list[dict[str, Any]]:
    data = json.loads(value) if isinstance(value, str) else value
    return list(data) if isinstance(data, list) else []


# --- the badge (overview cards, destination header) ----------------------------------------------------
def trust_badge(slug: str, *, link: bool = False) -> Any:
    """The destination's tie-out status as a small badge (``link``: it opens the Reconciliation page).

    Cached for ``BADGE_CACHE_S``: the overview draws one per card on every poll, the tie-out changes
    every few minutes."""
    row = model().memo(("tieout-badge", slug), lambda: latest_now(slug), timeout_s=BADGE_CACHE_S)
    if row is None:
        badge = dbc.Badge("not tied out yet", color="secondary", className="ms-2 ch-trust-badge",
                          title="the manager has not compared this book with the broker yet")
    else:
        causes = ", ".join(CAUSE_TEXT.get(c, c) for c in row["causes"]) or "books match the broker"
        text = STATUS_TEXT.get(row["status"], row["status"])
        if row["status"] == "explained" and row["causes"]:  # say why on the badge itself
            text += " · " + CAUSE_TEXT.get(row["causes"][0], row["causes"][0])
        badge = dbc.Badge(text, color=STATUS_COLOUR.get(row["status"], "secondary"),
                          className="ms-2 ch-trust-badge", title=f"{causes} (checked {fmt.age(_age_s(row['checked_at']))})")
    if link:
        return html.A(badge, href=f"{PATH}?{urlencode({'destination': slug})}", className="text-decoration-none")
    return badge


def _age_s(ts: datetime | None) -> float | None:
    if ts is None:
        return None
    return (datetime.now(ts.tzinfo) - ts).total_seconds()


# --- the Health page's row -----------------------------------------------------------------------------
def health_row() -> Any:
    """The Health page's reconciliation line (filled by this page's callback on the Health tick)."""
    return section("Reconciliation", html.Div(id="health-tieout"))


def health_view() -> Any:
    rows = all_now()
    if not rows:
        return html.Div("No tie-out yet: the manager compares each book with the broker every TIEOUT_INTERVAL_S.",
                        className="small text-body-secondary")
    items = [html.Span([html.Span(className=f"ch-dot bg-{STATUS_COLOUR.get(r['status'], 'secondary')} me-1"),
                        html.A(r["destination"], href=f"{PATH}?{urlencode({'destination': r['destination']})}"),
                        f" {STATUS_TEXT.get(r['status'], r['status'])}",
                        f" · unexplained {fmt.money(r['unexplained_usd'])}" if r["unexplained_usd"] else "",
                        f" · checked {fmt.age(_age_s(r['checked_at']))}"], className="me-4 small")
             for r in rows]
    return html.Div(items, className="d-flex flex-wrap", id="health-tieout-row")


# --- the page ------------------------------------------------------------------------------------------
def layout(destination: str | None = None, **_: Any) -> Any:
    dests = model().destinations()
    slugs = [d.slug for d in dests]
    chosen = destination if destination in slugs else (slugs[0] if slugs else None)
    return html.Div([
        dcc.Interval(id="recon-tick", interval=POLL_MS, n_intervals=0),
        dcc.Store(id="recon-day"),
        html.H4("Reconciliation", className="mb-3"),
        dbc.Row([
            dbc.Col(dbc.Select(id="recon-destination", value=chosen, size="sm",
                               options=[{"label": d.name, "value": d.slug} for d in dests]), xs=8, md=4),
            dbc.Col(html.A("Export CSV", id="recon-export", href=_export_href(chosen or ""),
                           className="btn btn-outline-secondary btn-sm w-100"), xs=4, md=2),
        ], className="g-2 mb-3"),
        section("Now", html.Div(id="recon-now")),
        section("Past days", html.Div(id="recon-calendar"),
                html.Div(id="recon-day-detail", className="mt-3")),
    ])


def _export_href(slug: str) -> str:
    return f"{PATH}/export.csv?{urlencode({'destination': slug})}"


def now_view(row: dict[str, Any] | None) -> Any:
    if row is None:
        return empty_state("Not compared yet", "The manager (`python -m workers manager`, part of `workers all`) ties "
                           "each book out to the broker every TIEOUT_INTERVAL_S; `python -m workers reconcile "
                           "--destination D` does it now.")
    status = row["status"]
    figures = dbc.Table([
        html.Thead(html.Tr([html.Th(""), html.Th("Book"), html.Th("Broker"), html.Th("Difference")])),
        html.Tbody([_figure("Cash", row["book_cash"], row["broker_cash"]),
                    _figure("Equity", row["book_equity"], row["broker_equity"])]),
    ], size="sm", className="mb-2", id="recon-figures")
    head = html.Div([dbc.Badge(STATUS_TEXT.get(status, status), color=STATUS_COLOUR.get(status, "secondary"),
                               className="me-2", id="recon-status"),
                     html.Span(f"since {fmt.age(_age_s(row['first_seen_at']))} · checked "
                               f"{fmt.age(_age_s(row['checked_at']))}",
                               className="small text-body-secondary")], className="mb-2")
    return html.Div([head, figures, differences_table(_diffs(row["differences"]), "recon-now-diffs")])


def _figure(label: str, book: Decimal | None, broker: Decimal | None) -> Any:
    diff = None if book is None or broker is None else broker - book
    return html.Tr([html.Td(label), html.Td(fmt.money(book)), html.Td(fmt.money(broker)),
                    html.Td(fmt.money(diff, sign=True))])


def differences_table(diffs: list[dict[str, Any]], table_id: str) -> Any:
    if not diffs:
        return html.Div("Every figure agrees within its tolerance.", className="small text-body-secondary",
                        id=table_id)
    body = [html.Tr([
        html.Td(d.get("scope", "").replace("_", " ")),
        html.Td(d.get("subject") or "—"),
        html.Td(fmt.money(_dec(d.get("amount_usd")), sign=True), className="text-nowrap"),
        html.Td(dbc.Badge(CAUSE_TEXT.get(d.get("cause", ""), d.get("cause", "")),
                          color="danger" if d.get("cause") == "unexplained" and d.get("open", True) else
                          "secondary" if not d.get("open", True) else "warning")),
        # not open: the money agrees (a settled shift) or the figures are the same under another convention
        # or at another instant (a note)
        html.Td(("" if d.get("open", True) else "note · ") + str(d.get("detail", "")), className="small"),
    ]) for d in diffs]
    head = ["Figure", "Subject", "Broker − book", "Cause", "Detail"]
    return dbc.Table([html.Thead(html.Tr([html.Th(c) for c in head])), html.Tbody(body)], size="sm", hover=True,
                     responsive=True, className="mb-0", id=table_id)


def _dec(v: Any) -> Decimal | None:
    return None if v is None else Decimal(str(v))


def calendar_view(days: list[dict[str, Any]]) -> Any:
    if not days:
        return html.Div("No past day compared yet (the broker's daily history starts with the account).",
                        className="small text-body-secondary")
    cells = [html.Button(
        [html.Div(d["day"].strftime("%b %d"), className="small"), html.Div(STATUS_TEXT.get(d["status"], d["status"]),
                                                                            className="ch-recon-day-status")],
        id={"type": "recon-day-cell", "day": d["day"].isoformat()},
        className=f"btn btn-sm btn-{STATUS_COLOUR.get(d['status'], 'secondary')} m-1 ch-recon-day",
        title=", ".join(CAUSE_TEXT.get(c, c) for c in d["causes"]) or "tied out",
        n_clicks=0) for d in sorted(days, key=lambda r: r["day"])]
    return html.Div(cells, className="d-flex flex-wrap", id="recon-days")


def day_detail(slug: str, day: str | None) -> Any:
    if not day:
        return html.Div("Pick a day to see its differences and their causes.", className="small text-body-secondary")
    rows = [r for r in latest_days(slug) if r["day"].isoformat() == day]
    if not rows:
        return html.Div(f"{day}: not compared.", className="small text-body-secondary")
    r = rows[0]
    return html.Div([
        html.H6([f"{day} ", dbc.Badge(STATUS_TEXT.get(r["status"], r["status"]),
                                      color=STATUS_COLOUR.get(r["status"], "secondary"))]),
        html.Div(f"End-of-day equity: book {fmt.money(r['book_equity'])}, broker {fmt.money(r['broker_equity'])}",
                 className="small mb-2"),
        differences_table(_diffs(r["differences"]), "recon-day-diffs"),
    ])


# --- export --------------------------------------------------------------------------------------------
def export_lines(slug: str) -> Iterator[str]:
    """CSV of the latest "now" row and every latest day of ``slug``, one line per difference."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    now = latest_now(slug)
    rows: list[tuple[str, dict[str, Any]]] = [("now", now)] if now else []
    rows += [(r["day"].isoformat(), r) for r in latest_days(slug, limit=10_000)]
    for day, r in rows:
        diffs = _diffs(r["differences"]) or [{}]
        for d in diffs:
            cells = [slug, day, r["status"], r["checked_at"].isoformat(), d.get("scope", ""), d.get("subject", ""),
                     d.get("cause", ""), d.get("open", ""), d.get("amount_usd", ""), d.get("book", ""),
                     d.get("broker", ""), d.get("age_s", ""), d.get("detail", "")]
            writer.writerow([neutralise(c) if isinstance(c, str) and not _numeric(c) else c for c in cells])
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()


def _numeric(text: str) -> bool:
    try:
        Decimal(text)
    except ArithmeticError:
        return False
    return bool(text)


def register_routes(server: Flask) -> None:
    @server.route(f"{PATH}/export.csv")
    def reconciliation_csv() -> Response:
        slug = str(request.args.get("destination", ""))[:64]
        body = "".join(export_lines(slug))  # read here, in the request's context (a few hundred lines)
        return Response(body, mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="coldharbour-reconciliation-'
                                                        f'{"".join(c for c in slug if c.isalnum() or c == "_")}.csv"'})


def register(app: Dash) -> None:
    register_routes(app.server)

    @app.callback(Output("health-tieout", "children"), Input("health-tick", "n_intervals"))
    def health(_n: int | None) -> Any:
        return health_view()

    @app.callback(Output("recon-day", "data"), Input({"type": "recon-day-cell", "day": ALL}, "n_clicks"),
                  prevent_initial_call=True)
    def pick_day(clicks: list[int | None]) -> str | None:
        trigger = ctx.triggered_id
        if not isinstance(trigger, dict) or not any(clicks or []):
            return None
        return str(trigger.get("day"))

    @app.callback(Output("recon-now", "children"), Output("recon-calendar", "children"),
                  Output("recon-day-detail", "children"), Output("recon-export", "href"),
                  Input("recon-tick", "n_intervals"), Input("recon-destination", "value"), Input("recon-day", "data"))
    def render(_n: int, slug: str | None, day: str | None) -> Any:
        if not slug:
            return empty_state("No destination", "Add one to the destinations file."), [], [], _export_href("")
        return now_view(latest_now(slug)), calendar_view(latest_days(slug)), day_detail(slug, day), _export_href(slug)

