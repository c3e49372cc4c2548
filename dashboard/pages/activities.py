"""Activities: the raw ingested activities (server-side grid) and orders (searchable) of a destination."""

from __future__ import annotations

from typing import Any

import dash_bootstrap_components as dbc
from dash import Dash, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate
from flask import abort
from sqlalchemy.exc import SQLAlchemyError

from dashboard import grid_sql
from dashboard.components import fmt, grids
from dashboard.context import model, resolve_tz, runtime
from dashboard.pages.common import no_destinations, poll_interval_ms, section

PATH = "/activities"
TITLE = "Activities"


def layout(slug: str | None = None, **_: Any) -> Any:
    dests = model().destinations()
    if not dests:
        return no_destinations()
    chosen = slug if slug and any(d.slug == slug for d in dests) else dests[0].slug
    label = fmt.tz_label(runtime().settings.display_timezone)
    version = model().version_of(chosen).activity
    return html.Div(
        [
            # live: the ingester bumps activity_version (and NOTIFYs) with every batch it stores; a
            # change re-asks the grid's visible blocks (sorted and filtered on the server, so nothing
            # is appended client-side and nothing can be skipped) and the orders table
            dcc.Interval(id="act-tick", interval=poll_interval_ms(), n_intervals=0),
            dcc.Store(id="act-version", data={"slug": chosen, "v": version}),
            dbc.Row(
                [
                    dbc.Col(html.H4("Activities", className="mb-0"), xs=12, md="auto"),
                    dbc.Col(dbc.Select(id="act-dest", options=[{"label": d.name, "value": d.slug} for d in dests],
                                       value=chosen, size="sm"), xs=12, md=4),
                ],
                className="align-items-center g-2 mb-3",
            ),
            section("Account activities (fills, deposits, fees…)",
                    html.Small("Filter any column in the row under the headers; filtering and sorting run on the "
                               "server.", className="text-body-secondary d-block mb-2"),
                    grids.infinite_grid("act-grid", grids.activity_columns(label), height="420px"),
                    right=html.Small(f"activity version {version}", id="act-status",
                                     className="text-body-secondary")),
            section("Orders",
                    dbc.Input(id="act-search", placeholder="Search symbol, status, order id…", type="search",
                              debounce=True, size="sm", className="mb-2"),
                    dcc.Loading(html.Div(id="act-orders"), type="dot", delay_show=400)),
        ]
    )


def register(app: Dash) -> None:
    @app.callback(
        Output("act-version", "data"),
        Output("act-status", "children"),
        Input("act-tick", "n_intervals"),
        Input("sse-hint", "data"),
        Input("act-dest", "value"),
        State("act-version", "data"),
        prevent_initial_call=True,
    )
    def poll(_n: int, _hint: Any, slug: str | None, shown: dict[str, Any] | None) -> Any:
        if not slug:
            raise PreventUpdate
        try:
            version = model().version_of(slug).activity
        except SQLAlchemyError:
            raise PreventUpdate from None  # database away: keep what is shown
        if shown == {"slug": slug, "v": version}:
            raise PreventUpdate  # nothing new: 204
        return {"slug": slug, "v": version}, f"activity version {version}"

    @app.callback(
        Output("act-grid", "getRowsResponse"),
        Input("act-grid", "getRowsRequest"),
        State("act-dest", "value"),
        State("tz-choice", "value"),
        State("browser-tz", "data"),
    )
    def rows(request: dict[str, Any] | None, slug: str, tz_choice: str, browser_tz: str | None) -> Any:
        if not request or not slug:
            return no_update
        try:
            return model().activities_block(slug, request, resolve_tz(tz_choice, browser_tz))
        except grid_sql.GridRequestError as exc:
            abort(400, str(exc))

    app.clientside_callback(  # type: ignore[no-untyped-call]
        """async function(slug) {
            try { const api = await dash_ag_grid.getApiAsync('act-grid'); api.purgeInfiniteCache(); } catch (e) {}
            return window.dash_clientside.no_update;
        }""",
        Output("act-grid", "id"),
        Input("act-version", "data"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output("act-orders", "children"),
        Input("act-dest", "value"),
        Input("act-version", "data"),
        Input("act-search", "value"),
        Input("tz-choice", "value"),
        Input("browser-tz", "data"),
    )
    def orders(slug: str | None, _version: Any, search: str | None, tz_choice: str, browser_tz: str | None) -> Any:
        if not slug:
            return no_update
        tz = resolve_tz(tz_choice, browser_tz)
        try:
            rows = model().orders(slug, search or "", tz=tz)
        except grid_sql.GridRequestError as exc:
            return html.P(str(exc), className="text-warning mb-0")
        if not rows:
            return html.P("No orders match." if search else "No orders ingested yet: the ingester fills this "
                          "from the broker's order history.", className="text-body-secondary mb-0")
        cols = ["submitted_at", "symbol", "side", "order_type", "order_class", "qty", "filled_qty",
                "filled_avg_price", "status", "order_id"]
        head = html.Thead(html.Tr([html.Th(c.replace("_", " ") + (f" ({fmt.tz_label(tz)})" if c == "submitted_at"
                                                                   else "")) for c in cols]))
        body = html.Tbody([html.Tr([html.Td("" if r.get(c) is None else str(r.get(c))) for c in cols]) for r in rows])
        return dbc.Table([head, body], size="sm", hover=True, responsive=True, className="mb-0 small")
