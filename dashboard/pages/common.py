"""Pieces every page uses: KPI cards, empty states, the live "what changed?" poll."""

from __future__ import annotations

from typing import Any

import dash_bootstrap_components as dbc
from dash import dcc, html

from dashboard.components import figures
from dashboard.context import runtime

TZ_INPUTS = ("tz-choice", "browser-tz")


def poll_interval_ms() -> int:
    """How often a page asks ``ch_versions`` whether anything changed."""
    return max(500, int(runtime().settings.ui_snapshot_sec * 1000))


def live_stores(prefix: str) -> list[Any]:
    """An interval (inside the page, so it stops when the user navigates away) and version stores."""
    return [
        dcc.Interval(id=f"{prefix}-tick", interval=poll_interval_ms(), n_intervals=0),
        dcc.Store(id=f"{prefix}-versions"),
    ]


def kpi(label: str, value: str, *, tone: str | None = None, sub: str | None = None, kpi_id: str | None = None) -> Any:
    body = [html.Div(label, className="ch-kpi-label"),
            html.Div(value, className=f"ch-kpi-value{' text-' + tone if tone else ''}")]
    if sub:
        body.append(html.Div(sub, className="ch-kpi-sub"))
    # Bootstrap's card classes on plain divs: the same markup as dbc.Card/CardBody, with less React
    # work per card (a page draws 13 of them in its first render)
    inner = html.Div(body, className="card-body p-2")
    if kpi_id:
        return html.Div(inner, id=kpi_id, className="card ch-kpi h-100")
    return html.Div(inner, className="card ch-kpi h-100")


def tone_of(x: float | None) -> str | None:
    if x is None:
        return None
    return "success" if x > 0 else ("danger" if x < 0 else None)


def empty_state(title: str, *lines: Any, icon: str = "ⓘ") -> Any:
    return dbc.Card(
        dbc.CardBody(
            [html.Div(icon, className="ch-empty-icon"), html.H5(title, className="mt-2")]
            + [html.P(line, className="text-body-secondary mb-1") for line in lines]
        ),
        className="ch-empty text-center my-4",
    )


def no_destinations() -> Any:
    return empty_state(
        "No destinations configured",
        "Add your Alpaca accounts to destinations.toml (see destinations.example.toml), then start the workers "
        "with `python -m workers all`: they create the tables this dashboard reads.",
        html.Span(["Or run ", html.Code("make demo"), " for a simulated account."]),
    )


def section(title: str, *children: Any, right: Any = None) -> Any:
    header = html.Div([html.H6(title, className="mb-0"), right] if right is not None else [html.H6(title, className="mb-0")],
                      className="d-flex justify-content-between align-items-center mb-2")
    return html.Div(html.Div([header, *children], className="card-body"), className="card mb-3 ch-section")


GRAPH_CONFIG: Any = {"displaylogo": False, "responsive": True,
                "modeBarButtonsToRemove": ["lasso2d", "select2d", "autoScale2d"]}


def graph_style(graph_id: str) -> dict[str, str]:
    """The graph slot's fixed height (``figures.GRAPH_HEIGHT_PX``): plotly fills its container."""
    return {"height": f"{figures.GRAPH_HEIGHT_PX[graph_id]}px"}


def graph(graph_id: str, **kwargs: Any) -> Any:
    return dcc.Loading(dcc.Graph(id=graph_id, config=GRAPH_CONFIG, style=graph_style(graph_id), **kwargs),
                       type="dot", delay_show=400)
