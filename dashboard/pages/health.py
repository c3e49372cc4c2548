"""Health: every worker's heartbeat, ingest lag, last error, price feed freshness, the SSE listener."""

from __future__ import annotations

from typing import Any

import dash_bootstrap_components as dbc
from dash import Dash, Input, Output, dcc, html

from dashboard.components import fmt
from dashboard.context import model, resolve_tz, runtime
from dashboard.heartbeats import HEARTBEAT_OK_FACTOR, HEARTBEAT_WARN_FACTOR, feed_age_s, status_colour
from dashboard.pages import reconciliation
from dashboard.pages.common import empty_state, section

PATH = "/health"
TITLE = "Health"


def layout(**_: Any) -> Any:
    return html.Div(
        [
            dcc.Interval(id="health-tick", interval=5000, n_intervals=0),
            html.H4("Health", className="mb-3"),
            html.Div(id="health-summary", className="mb-3"),
            section("Workers", html.Div(id="health-table")),
            reconciliation.health_row(),
        ]
    )


def register(app: Dash) -> None:
    @app.callback(
        Output("health-summary", "children"),
        Output("health-table", "children"),
        Input("health-tick", "n_intervals"),
        Input("tz-choice", "value"),
        Input("browser-tz", "data"),
    )
    def render(_n: int, tz_choice: str, browser_tz: str | None) -> Any:
        rt = runtime()
        tz = resolve_tz(tz_choice, browser_tz)
        m = model()
        try:
            m.ping()
            db = dbc.Badge("database reachable", color="success", className="me-2")
        except Exception:  # noqa: BLE001 - shown, not raised
            db = dbc.Badge("database unreachable", color="danger", className="me-2")
        hub = rt.hub
        if hub is None:
            sse = dbc.Badge("live push off (DISABLE_SSE): polling only", color="secondary")
        else:
            sse = dbc.Badge(f"live push {'listening' if hub.connected.is_set() else 'reconnecting'} on "
                            f"{len(hub.listening)} channels · {hub.subscriber_count} browser(s)",
                            color="success" if hub.connected.is_set() else "warning")
        summary = html.Div([db, sse])
        rows = m.heartbeats()
        if not rows:
            return summary, empty_state("No worker has reported yet",
                                        "Start them with `python -m workers all` (or `make demo`); each writes a "
                                        f"heartbeat every {rt.settings.heartbeat_sec:g}s.")
        ok_s = rt.settings.heartbeat_sec * HEARTBEAT_OK_FACTOR
        warn_s = rt.settings.heartbeat_sec * HEARTBEAT_WARN_FACTOR
        body = []
        for h in rows:
            colour = status_colour(h["state"], h["age_s"], ok_s=ok_s, warn_s=warn_s)
            feed = _feed_text(h.get("details"), h.get("age_s"))
            body.append(html.Tr([
                html.Td([html.Span(className=f"ch-dot bg-{colour} me-2"), h["destination"]]),
                html.Td(h["service"]),
                html.Td(h["state"]),
                html.Td(fmt.age(h["age_s"])),
                html.Td(fmt.local_time(h["last_event_at"], tz)),
                html.Td(fmt.duration(h["lag_s"]) if h["lag_s"] is not None else "—"),
                html.Td(f"{h['rows_ingested']:,}"),
                html.Td(str(h["errors"])),
                html.Td(feed, className=_feed_class(feed_age_s(h.get("details"), h["age_s"]),
                                                    rt.settings.price_stale_after_s)),
                html.Td(budget_text(h.get("details")), className="small"),
                html.Td(h["last_error"] or "", className="text-danger small"),
            ]))
        head = ["Destination", "Service", "State", "Heartbeat", f"Last event ({fmt.tz_label(tz)})", "Ingest lag",
                "Rows", "Errors", "Price feed", "REST budget", "Last error"]
        table = dbc.Table([html.Thead(html.Tr([html.Th(c) for c in head])), html.Tbody(body)], size="sm",
                          hover=True, responsive=True, className="mb-0")
        return summary, table


def _feed_class(age: float | None, stale_after_s: float) -> str:
    return "text-warning" if age is not None and age > stale_after_s else ""


def _feed_text(details: Any, heartbeat_age_s: Any = None) -> str:
    """The manager's price-feed freshness, counters and stale symbols (from its heartbeat details)."""
    if not isinstance(details, dict):
        return "—"
    parts = []
    age = feed_age_s(details, heartbeat_age_s)
    feed = details.get("price_feed")
    if age is not None:
        parts.append(f"last tick {fmt.age(age)}")
    elif "price_feed" in details and feed is None:
        parts.append("no feed")
    elif isinstance(feed, dict) and feed.get("received") == 0:
        parts.append("no tick yet")
    if isinstance(feed, dict) and feed.get("received") is not None:
        parts.append(f"{int(feed['received']):,} ticks")
    stale = details.get("stale_symbols")
    if isinstance(stale, list):
        parts.append(f"stale: {', '.join(map(str, stale[:5]))}" if stale else "all fresh")
    stats = details.get("stats")
    unknown = stats.get("activities_unknown") if isinstance(stats, dict) else None
    if unknown:  # booked as cash, but a type Alpaca does not document: worth a look
        parts.append(f"⚠ {int(unknown):,} activities of an unknown type")
    return " · ".join(parts) or "—"


def budget_text(details: Any) -> str:
    """The destination's REST budget as its ingester reports it (ingester and manager share it):
    calls in the last minute / the budget now, headroom, our 429s, and why it is raised or lowered."""
    budget = details.get("budget") if isinstance(details, dict) else None
    if not isinstance(budget, dict):
        return "—"
    parts = [f"{budget.get('calls_per_min', 0)}/{budget.get('budget_per_min', 0)} calls/min",
             f"headroom {budget.get('headroom', 0)}", f"429s {budget.get('rate_limited', 0)}"]
    if budget.get("catching_up"):
        parts.append("catching up")
    if budget.get("lowered_by_broker"):
        parts.append("lowered by X-RateLimit-Remaining")
    return " · ".join(parts)
