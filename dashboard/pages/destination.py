"""Destination page: KPIs, live positions, closed trades (server-side grid), equity and analytics."""

from __future__ import annotations

import logging
from typing import Any

import dash_bootstrap_components as dbc
import pandas as pd
from dash import Dash, Input, Output, Patch, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate
from flask import abort
from sqlalchemy.exc import SQLAlchemyError

from dashboard import grid_sql
from dashboard.components import figures, fmt, grids
from dashboard.context import model, resolve_tz, view_prefs
from dashboard.pages import destination_strategy
from dashboard.pages.common import empty_state, graph, no_destinations, poll_interval_ms, section
from dashboard.pages.destination_view import (
    equity_analytics,
    equity_full,
    equity_tail,
    export_menu,
    first_render,
    income_table,
    kpi_cards,
    position_rows,
    relayout_window,
    secondary_sections,
)
from dashboard.pages.positions_push import push_stores, register_push
from dashboard.pages.reconciliation import trust_badge

PATH_TEMPLATE = "/destination/<slug>"
DEFER_MS = 100  # after the primary content is drawn and the browser is idle (see the clientside callback)
DEFER_IDLE_TIMEOUT_MS = 2500  # the longest the secondary analytics wait for an idle moment
POLL_START_MAX_MS = 3000  # the longest polling waits for the first idle moment after the page is drawn
APPEND_MAX_POINTS = 1000  # live-appended raw points before the chart is rebuilt (and re-downsampled)
TITLE = "Destination"

log = logging.getLogger(__name__)


def layout(slug: str | None = None, **_: Any) -> Any:
    m = model()
    dests = m.destinations()
    if not dests:
        return no_destinations()
    dest = m.destination(slug or "")
    if dest is None:
        return empty_state(f"Unknown destination {slug!r}",
                           html.Span(["Pick one on the ", dcc.Link("overview", href="/"), "."]))
    tz_choice, browser_tz, theme = view_prefs()
    tz = resolve_tz(tz_choice, browser_tz)
    label = fmt.tz_label(tz)
    v = m.version_of(dest.slug)
    first = first_render(dest.slug, v.pos, v.closed, v.equity, tz, theme)
    badge = dbc.Badge("LIVE" if dest.is_live else "PAPER", color="danger" if dest.is_live else "secondary",
                      className="ms-2 align-middle")
    from dashboard.export import export_url

    export_links = html.Div(
        [
            html.A("CSV", id="dest-export-csv", href=export_url(dest.slug, "closed_trades", "csv", tz=tz),
                   className="btn btn-sm btn-outline-secondary"),
            html.A("Excel", id="dest-export-xlsx", href=export_url(dest.slug, "closed_trades", "xlsx", tz=tz),
                   className="btn btn-sm btn-outline-secondary"),
        ],
        className="d-flex gap-1",
    )
    return html.Div(
        [
            dcc.Store(id="dest-slug", data=dest.slug),
            # polling starts once the browser is first idle (or after POLL_START_MAX_MS): the layout holds
            # the current versions, and a poll per UI_SNAPSHOT_SEC during the first render only competes
            # with it for the main thread. With the first render failed it starts at once.
            dcc.Interval(id="dest-tick", interval=poll_interval_ms(), n_intervals=0, disabled=bool(first)),
            # the secondary analytics (six charts below the fold) draw once the primary content (KPIs,
            # positions, equity, grid) is up: a clientside callback enables this one-shot interval when
            # the KPIs and the equity chart have arrived and the browser is idle, so they do not compete
            # with the first paint for the main thread
            dcc.Interval(id="dest-defer", interval=DEFER_MS, n_intervals=0, max_intervals=1, disabled=True),
            # the versions the layout drew. The data callbacks do not run on load (the layout holds
            # their output); when the first render failed these start empty and the first poll sets
            # them, which runs the data callbacks then
            dcc.Store(id="dest-v-pos", data=v.pos if first else None),
            dcc.Store(id="dest-v-closed", data=v.closed if first else None),
            dcc.Store(id="dest-v-equity", data=v.equity if first else None),
            # what the page shows now (drawn into this layout for the visitor's zone and theme): the data
            # callbacks' first calls find their key equal and answer 204 instead of drawing it again
            dcc.Store(id="dest-kpi-key", data=first.get("kpi_key")),
            dcc.Store(id="dest-pos-key", data=first.get("pos_key")),
            *push_stores(),  # the positions grid set from the stream (dashboard.pages.positions_push)
            dcc.Store(id="dest-eq-cursor", data=first.get("cursor")),  # live appends send only newer points
            html.Div(
                [
                    html.Div(
                        [
                            html.H4([dest.name, badge, trust_badge(dest.slug, link=True)], className="mb-0"),
                            html.Small(f"{dest.slug} · key {dest.masked_key or '—'}",
                                       className="text-body-secondary"),
                        ]
                    ),
                    export_menu(dest.slug),
                ],
                className="d-flex justify-content-between align-items-start gap-2 mb-3",
            ),
            dcc.Loading(html.Div(first.get("kpis"), id="dest-kpis", className="ch-kpi-grid mb-3"), type="dot",
                        delay_show=500),
            section("Open positions", grids.client_grid("dest-positions", grids.open_columns(label), row_id="symbol",
                                                        height="260px", row_data=first.get("rows")),
                    right=html.Small(first.get("pos_status"), id="dest-pos-status", className="text-body-secondary")),
            section("Equity and drawdown",
                    graph("dest-equity", figure=first.get("figure") or figures.empty("Loading…", theme, height=460))),
            section("Closed trades", grids.infinite_grid("dest-closed", grids.closed_columns(label)),
                    html.Small("Click a trade id for its fills and lots. Sorting and filtering run on the server.",
                               className="text-body-secondary"),
                    right=export_links),
            destination_strategy.mount(),  # strategy filter and benchmark, mounted on dest-defer too
            # the secondary analytics mount when dest-defer fires (see secondary_sections): six empty
            # plotly charts drawn at page load cost ~0.3 s of the first render's main thread
            html.Div(id="dest-secondary", children=html.P("More analytics follow…",
                                                          className="text-body-secondary small")),
        ]
    )


# --- callbacks ------------------------------------------------------------------------------------


def register(app: Dash) -> None:
    _register_live(app)
    register_push(app)
    _register_equity(app)
    _register_analytics(app)
    _register_grid(app)
    _register_timing(app)
    destination_strategy.register(app)


def _register_live(app: Dash) -> None:
    """The version poll, and the positions and KPIs it drives."""

    @app.callback(
        Output("dest-v-pos", "data"),
        Output("dest-v-closed", "data"),
        Output("dest-v-equity", "data"),
        Input("dest-tick", "n_intervals"),
        Input("sse-hint", "data"),
        State("dest-slug", "data"),
        State("dest-v-pos", "data"),
        State("dest-v-closed", "data"),
        State("dest-v-equity", "data"),
        prevent_initial_call=True,
    )
    def poll(_n: int, _hint: Any, slug: str, v_pos: int | None, v_closed: int | None, v_eq: int | None) -> Any:
        try:
            v = model().version_of(slug)
        except SQLAlchemyError:
            raise PreventUpdate from None  # database away: keep what is shown; /health and /healthz say why
        if (v.pos, v.closed, v.equity) == (v_pos, v_closed, v_eq):
            raise PreventUpdate  # nothing changed: an empty 204, no re-render anywhere
        return (
            v.pos if v.pos != v_pos else no_update,
            v.closed if v.closed != v_closed else no_update,
            v.equity if v.equity != v_eq else no_update,
        )

    @app.callback(
        Output("dest-positions", "rowData"),
        Output("dest-pos-status", "children"),
        Output("dest-pos-key", "data"),
        Input("dest-v-pos", "data"),
        Input("tz-choice", "value"),
        Input("browser-tz", "data"),
        State("dest-slug", "data"),
        State("dest-pos-key", "data"),
        prevent_initial_call=True,
    )
    def positions(v_pos: int | None, tz_choice: str, browser_tz: str | None, slug: str, shown: Any) -> Any:
        if v_pos is None:
            return no_update, no_update, no_update
        tz = resolve_tz(tz_choice, browser_tz)
        if shown == [v_pos, tz]:
            raise PreventUpdate  # the layout drew exactly this
        rows, status = position_rows(slug, v_pos, tz)
        return rows, status, [v_pos, tz]

    @app.callback(
        Output("dest-kpis", "children"),
        Output("dest-kpi-key", "data"),
        Input("dest-v-equity", "data"),
        Input("dest-v-closed", "data"),
        Input("tz-choice", "value"),
        Input("browser-tz", "data"),
        State("dest-slug", "data"),
        State("dest-kpi-key", "data"),
        prevent_initial_call=True,
    )
    def kpis(v_eq: int | None, v_closed: int | None, tz_choice: str, browser_tz: str | None, slug: str,
             shown: Any) -> Any:
        if v_eq is None or v_closed is None:
            return no_update, no_update
        tz = resolve_tz(tz_choice, browser_tz)
        if shown == [v_eq, v_closed, tz]:
            raise PreventUpdate  # the layout drew exactly this
        return kpi_cards(slug, tz), [v_eq, v_closed, tz]


def _register_equity(app: Dash) -> None:
    """The equity chart: whole-curve redraws, live appends and zoom refinement."""

    # Zoom/range buttons are their own callback: plotly reports a relayout (autosize) when it first
    # draws the placeholder, and in one callback with the data inputs that event superseded the
    # pending whole-curve request (Dash keeps only the newest answer of a callback), so on a slow
    # first load the chart could stay on "Loading…".
    @app.callback(
        Output("dest-equity", "figure", allow_duplicate=True),
        Output("dest-eq-cursor", "data", allow_duplicate=True),
        Input("dest-equity", "relayoutData"),
        State("tz-choice", "value"),
        State("browser-tz", "data"),
        State("dest-slug", "data"),
        State("dest-eq-cursor", "data"),
        prevent_initial_call=True,
    )
    def equity_zoom(relayout: Any, tz_choice: str, browser_tz: str | None, slug: str,
                    cursor: dict[str, Any] | None) -> Any:
        tz = resolve_tz(tz_choice, browser_tz)
        m = model()
        window = relayout_window(relayout, tz)
        if window is None:  # autosize and the like: nothing to refine
            return no_update, no_update
        w = m.equity_window(slug, *window)
        patch = Patch()
        patch["data"][0]["x"] = fmt.ns_to_local_str(w["ts"], tz)
        patch["data"][0]["y"] = w["equity"]
        patch["data"][1]["x"] = fmt.ns_to_local_str(w["dd_ts"], tz)
        patch["data"][1]["y"] = w["drawdown"]
        zoomed = window != (None, None)
        last = int(w["ts"][-1]) if w["ts"].size else None
        new_cursor = dict(cursor or {}, zoomed=zoomed)
        if not zoomed and last is not None:
            new_cursor.update(last_ns=last, appended=0)
        return patch, new_cursor

    @app.callback(
        Output("dest-equity", "figure"),
        Output("dest-eq-cursor", "data"),
        Input("dest-v-equity", "data"),
        Input("theme-store", "data"),
        Input("tz-choice", "value"),
        Input("browser-tz", "data"),
        State("dest-slug", "data"),
        State("dest-eq-cursor", "data"),
        prevent_initial_call=True,
    )
    def equity(v_eq: int | None, theme: str, tz_choice: str, browser_tz: str | None, slug: str,
               cursor: dict[str, Any] | None) -> Any:
        if v_eq is None:
            return no_update, no_update
        tz = resolve_tz(tz_choice, browser_tz)
        if (cursor is not None and cursor.get("v") == v_eq and cursor.get("tz") == tz
                and cursor.get("theme") == theme):
            raise PreventUpdate  # the chart shows this version already (drawn by the layout, or appended)
        series = model().equity_series(slug)
        same_view = (cursor is not None and cursor.get("tz") == tz and cursor.get("theme") == theme
                     and cursor.get("first_ns") == series.first_ts_ns and ctx.triggered_id == "dest-v-equity")
        if same_view and cursor is not None and len(series):
            # live append: only the points after the cursor travel, with the cursor in the same response
            if cursor.get("zoomed"):
                return no_update, no_update  # a zoomed view is refreshed on its next relayout
            tail = equity_tail(slug, int(cursor["last_ns"]))
            if tail["ts"].size == 0:
                return no_update, dict(cursor, v=v_eq)
            if int(cursor.get("appended", 0)) + tail["ts"].size <= APPEND_MAX_POINTS:
                patch = Patch()
                x = fmt.ns_to_local_str(tail["ts"], tz)
                patch["data"][0]["x"].extend(x)
                patch["data"][0]["y"].extend(tail["equity"].tolist())
                patch["data"][1]["x"].extend(x)
                patch["data"][1]["y"].extend(tail["drawdown"].tolist())
                return patch, dict(cursor, last_ns=int(tail["ts"][-1]), v=v_eq,
                                   appended=int(cursor.get("appended", 0)) + int(tail["ts"].size))
        return equity_full(slug, v_eq, tz, theme)


def _register_analytics(app: Dash) -> None:
    """The secondary analytics below the fold, drawn once the deferred tick fires."""

    @app.callback(
        Output("dest-dd-table", "children"),
        Output("dest-monthly", "figure"),
        Output("dest-calendar", "figure"),
        Output("dest-rolling", "figure"),
        Output("dest-dist", "figure"),
        Input("dest-v-equity", "data"),
        Input("theme-store", "data"),
        Input("tz-choice", "value"),
        Input("browser-tz", "data"),
        Input("dest-defer", "n_intervals"),
        State("dest-slug", "data"),
    )
    def draw_equity_analytics(v_eq: int | None, theme: str, tz_choice: str, browser_tz: str | None, deferred: int,
                              slug: str) -> Any:
        if v_eq is None or not deferred:
            return (no_update,) * 5
        tz = resolve_tz(tz_choice, browser_tz)
        m = model()
        v_eq = m.trusted(slug, "equity", v_eq)
        return m.memo(("eq-analytics", slug, v_eq, tz, theme), lambda: equity_analytics(slug, v_eq, tz, theme))

    @app.callback(
        Output("dest-by-symbol", "figure"),
        Output("dest-by-reason", "figure"),
        Input("dest-v-closed", "data"),
        Input("theme-store", "data"),
        Input("dest-defer", "n_intervals"),
        State("dest-slug", "data"),
    )
    def trade_breakdowns(v_closed: int | None, theme: str, deferred: int, slug: str) -> Any:
        if v_closed is None or not deferred:
            return no_update, no_update
        m = model()
        v_closed = m.trusted(slug, "closed", v_closed)

        def compute() -> tuple[pd.Series, pd.Series]:
            trades = m.closed_pl(slug)
            if trades.empty:
                return pd.Series(dtype=float), pd.Series(dtype=float)
            by_symbol = trades.groupby("symbol")["net_pl"].sum().sort_values(ascending=False)
            by_reason = trades.groupby("exit_reason")["net_pl"].sum().sort_values(ascending=False)
            return by_symbol, by_reason

        def draw() -> tuple[dict[str, Any], dict[str, Any]]:
            by_symbol, by_reason = m.memo(("breakdown", slug, v_closed), compute)
            if by_symbol.empty:
                msg = "No closed trades yet: they appear when the manager matches a round trip."
                return figures.plain(figures.empty(msg, theme)), figures.plain(figures.empty(msg, theme))
            top = by_symbol if len(by_symbol) <= 25 else pd.concat([by_symbol.head(12), by_symbol.tail(12)])
            return (figures.plain(figures.bars(top.index, top.to_numpy(), "Net P&L", theme)),
                    figures.plain(figures.bars(by_reason.index, by_reason.to_numpy(), "Net P&L", theme)))

        return m.memo(("breakdown-fig", slug, v_closed, theme), draw)

    @app.callback(
        Output("dest-income", "children"),
        Input("dest-v-equity", "data"),
        Input("dest-defer", "n_intervals"),
        State("dest-slug", "data"),
    )
    def income(v_eq: int | None, deferred: int, slug: str) -> Any:
        # cash from dividends, interest and fees moves equity: its version says when to look again
        # (the lines themselves are memoised per activity version)
        if v_eq is None or not deferred:
            return no_update
        return income_table(slug)

    @app.callback(
        Output("dest-secondary", "children"),
        Input("dest-defer", "n_intervals"),
        prevent_initial_call=True,
    )
    def mount_secondary(deferred: int) -> Any:
        # their data callbacks (equity_analytics, trade_breakdowns) run when these outputs appear
        return secondary_sections() if deferred else no_update


def _register_grid(app: Dash) -> None:
    """The closed-trades grid: blocks from the server, headers, export links, trade drill-down."""

    @app.callback(
        Output("dest-closed", "getRowsResponse"),
        Input("dest-closed", "getRowsRequest"),
        State("dest-slug", "data"),
        State("tz-choice", "value"),
        State("browser-tz", "data"),
        State("dest-v-closed", "data"),
        prevent_initial_call=True,
    )
    def closed_rows(request: dict[str, Any] | None, slug: str, tz_choice: str, browser_tz: str | None,
                    v_closed: int | None) -> Any:
        if not request:
            return no_update
        tz = resolve_tz(tz_choice, browser_tz)
        try:
            # the cache key holds the server's own version, never the one the client sent
            return model().closed_block(slug, request, tz)
        except grid_sql.GridRequestError as exc:
            abort(400, str(exc))

    @app.callback(
        Output("dest-closed", "columnDefs"),
        Output("dest-positions", "columnDefs"),
        Input("tz-choice", "value"),
        Input("browser-tz", "data"),
        prevent_initial_call=True,
    )
    def column_headers(tz_choice: str, browser_tz: str | None) -> Any:
        label = fmt.tz_label(resolve_tz(tz_choice, browser_tz))
        return grids.closed_columns(label), grids.open_columns(label)

    # new closed trades or another time zone: drop the grid's cached blocks so it asks again
    app.clientside_callback(  # type: ignore[no-untyped-call]
        """async function(v, tz, btz) {
            if (v === undefined || v === null) { return window.dash_clientside.no_update; }
            try {
                const api = await dash_ag_grid.getApiAsync('dest-closed');
                api.purgeInfiniteCache();
            } catch (e) { /* grid not mounted yet */ }
            return window.dash_clientside.no_update;
        }""",
        Output("dest-closed", "id"),
        Input("dest-v-closed", "data"),
        Input("tz-choice", "value"),
        Input("browser-tz", "data"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output("dest-export-csv", "href"),
        Output("dest-export-xlsx", "href"),
        Input("dest-closed", "getRowsRequest"),
        Input("tz-choice", "value"),
        Input("browser-tz", "data"),
        State("dest-slug", "data"),
        prevent_initial_call=True,
    )
    def export_links(request: dict[str, Any] | None, tz_choice: str, browser_tz: str | None, slug: str) -> Any:
        from dashboard.export import export_url

        tz = resolve_tz(tz_choice, browser_tz)
        request = request or {}
        sort_model, filter_model = request.get("sortModel") or None, request.get("filterModel") or None
        return tuple(export_url(slug, "closed_trades", kind, sort_model=sort_model, filter_model=filter_model, tz=tz)
                     for kind in ("csv", "xlsx"))

    @app.callback(
        Output("url", "pathname", allow_duplicate=True),
        Input("dest-closed", "cellClicked"),
        State("dest-slug", "data"),
        prevent_initial_call=True,
    )
    def open_trade(cell: dict[str, Any] | None, slug: str) -> Any:
        if not cell or cell.get("colId") != "trade_id" or not cell.get("value"):
            return no_update
        return f"/destination/{slug}/trade/{cell['value']}"


def _register_timing(app: Dash) -> None:
    """When the secondary analytics and the polling start: at the browser's first idle moment."""
    app.clientside_callback(  # type: ignore[no-untyped-call]
        """function(cursor, kpis, disabled) {
            if (!disabled || !cursor || !kpis) { return window.dash_clientside.no_update; }
            return new Promise(function(resolve) {
                const go = function() { resolve(false); };
                requestAnimationFrame(function() {
                    if (window.requestIdleCallback) { requestIdleCallback(go, {timeout: TIMEOUT}); }
                    else { setTimeout(go, 200); }
                });
            });
        }""".replace("TIMEOUT", str(DEFER_IDLE_TIMEOUT_MS)),
        Output("dest-defer", "disabled"),
        Input("dest-eq-cursor", "data"),
        Input("dest-kpis", "children"),
        State("dest-defer", "disabled"),
    )

    app.clientside_callback(  # type: ignore[no-untyped-call]
        """function(slug, disabled) {
            if (!disabled) { return window.dash_clientside.no_update; }
            return new Promise(function(resolve) {
                const go = function() { resolve(false); };
                if (window.requestIdleCallback) { requestIdleCallback(go, {timeout: TIMEOUT}); }
                else { setTimeout(go, 1000); }
            });
        }""".replace("TIMEOUT", str(POLL_START_MAX_MS)),
        Output("dest-tick", "disabled"),
        Input("dest-slug", "data"),
        State("dest-tick", "disabled"),
    )
