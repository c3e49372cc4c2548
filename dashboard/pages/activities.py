"""Activities: a destination's raw ingested activities and its orders, both server-side paged grids.

While a bot trades, the ingester stores a batch (and bumps ``activity_version``) every second or so.
Both grids use AG Grid's infinite row model, so the browser only ever holds the blocks in view and a
new version re-asks those blocks (:data:`REFRESH_MIN_S` apart at most), never re-renders a table of
every row. Non-trade activities (corporate actions, option events, fees, dividends, cash flows) get a
readable type label (:func:`type_label`), next to Alpaca's code.
"""

from __future__ import annotations

from typing import Any

import dash_bootstrap_components as dbc
from dash import Dash, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate
from flask import abort
from sqlalchemy.exc import SQLAlchemyError

from core.activity_types import ACTIVITY_EFFECTS
from core.schema import quote_ident
from dashboard import grid_sql
from dashboard.components import fmt, grids
from dashboard.context import model, resolve_tz, runtime
from dashboard.pages.common import no_destinations, poll_interval_ms, section
from dashboard.queries import ORDER_SEARCH_MAX_CHARS

PATH = "/activities"
TITLE = "Activities"

# A new version refreshes the grids at most this often: a bot's fills arrive every second, and a
# refresh that re-asks the visible blocks each time keeps the page busy while a person reads it.
REFRESH_MIN_S = 5.0
BLOCK_ROWS = 100

# Short labels where the documented description (core.activity_types) is long or technical;
# every other code shows its description up to the first parenthesis or colon.
_SHORT_LABELS = {
    "FILL": "Fill", "EXTRD": "External trade", "CSD": "Cash deposit", "CSW": "Cash withdrawal",
    "JNLC": "Journal (cash)", "JNLS": "Journal (stock)", "ACATC": "ACATS (cash)", "ACATS": "ACATS (securities)",
    "DIVCGL": "Dividend (long-term gain)", "DIVCGS": "Dividend (short-term gain)", "DIVTXEX": "Dividend (tax exempt)",
    "DIVFT": "Dividend foreign tax", "DIVNRA": "Dividend NRA withholding", "DIVTW": "Dividend Tefra withholding",
    "INT": "Interest", "INTNRA": "Interest NRA withholding", "INTTW": "Interest Tefra withholding",
    "FEE": "Regulatory fee", "CFEE": "Crypto fee", "SPLIT": "Stock split", "SSP": "Stock split",
    "CIL": "Cash in lieu", "MA": "Merger / acquisition", "SSO": "Spinoff", "OPEXP": "Option expiry",
    "OPXRC": "Option exercise", "OPTRD": "Option exercise/assignment shares", "OPCA": "Option contract adjustment",
    "FXTRD": "FX trade", "FXCNV": "FX conversion", "SWP": "Cash sweep", "TRANS": "Cash transaction",
    "MISC": "Miscellaneous", "TRD": "Trade",
}


# A person looking for a dividend or a split should not page through a bot's fills: the choice sets
# the grid's own filter on the code (so the floating filter shows it, and the server applies it).
KIND_OPTIONS = [{"label": "All", "value": "all"}, {"label": "Fills", "value": "fills"},
                {"label": "Everything but fills (cash, fees, dividends, corporate actions, options)",
                 "value": "other"}]


def type_label(code: str) -> str:
    """What a person calls an activity type (``DIV`` -> ``Dividend``); an unknown code as it is."""
    if code in _SHORT_LABELS:
        return _SHORT_LABELS[code]
    effect = ACTIVITY_EFFECTS.get(code)
    if effect is None:
        return code
    return effect.description.split(" (")[0].split(":")[0].strip()


def _label_sql() -> str:
    """``activity_type`` mapped to :func:`type_label` in SQL, so the label sorts and filters on the server."""
    def lit(s: str) -> str:
        return "'" + s.replace("'", "''") + "'"

    whens = " ".join(f"WHEN {lit(code)} THEN {lit(type_label(code))}" for code in sorted(ACTIVITY_EFFECTS))
    return f"CASE activity_type {whens} ELSE activity_type END"


_T, _N, _TS = grid_sql.ColumnKind.TEXT, grid_sql.ColumnKind.NUMBER, grid_sql.ColumnKind.TIMESTAMP
_ACTIVITY_COLUMNS = {
    "ts": grid_sql.ColumnSpec.column("ts", _TS),
    "type_label": grid_sql.ColumnSpec(_label_sql(), _T),
    "activity_type": grid_sql.ColumnSpec.column("activity_type", _T),
    "symbol": grid_sql.ColumnSpec.column("symbol", _T),
    "side": grid_sql.ColumnSpec.column("side", _T),
    "qty": grid_sql.ColumnSpec.column("qty", _N),
    "price": grid_sql.ColumnSpec.column("price", _N),
    "net_amount": grid_sql.ColumnSpec.column("net_amount", _N),
    "order_status": grid_sql.ColumnSpec.column("order_status", _T),
    "description": grid_sql.ColumnSpec.column("description", _T),
    "activity_id": grid_sql.ColumnSpec.column("activity_id", _T),
    "order_id": grid_sql.ColumnSpec("order_id::text", _T),
}
_ORDER_COLUMNS = {
    "submitted_at": grid_sql.ColumnSpec.column("submitted_at", _TS),
    "symbol": grid_sql.ColumnSpec.column("symbol", _T),
    "side": grid_sql.ColumnSpec.column("side", _T),
    "order_type": grid_sql.ColumnSpec.column("order_type", _T),
    "order_class": grid_sql.ColumnSpec.column("order_class", _T),
    "qty": grid_sql.ColumnSpec.column("qty", _N),
    "filled_qty": grid_sql.ColumnSpec.column("filled_qty", _N),
    "filled_avg_price": grid_sql.ColumnSpec.column("filled_avg_price", _N),
    "status": grid_sql.ColumnSpec.column("status", _T),
    "order_id": grid_sql.ColumnSpec("order_id::text", _T),
    "client_order_id": grid_sql.ColumnSpec.column("client_order_id", _T),
}
_ORDER_SEARCH = ("(symbol ILIKE :q ESCAPE '\\' OR status ILIKE :q ESCAPE '\\' OR order_id::text ILIKE :q ESCAPE '\\'"
                 " OR client_order_id ILIKE :q ESCAPE '\\')")


def activities_table(slug: str) -> grid_sql.GridTable:
    """One destination's activities, with the type label as a column of its own."""
    schema = quote_ident(runtime().settings.account_schema)
    return grid_sql.GridTable(f"{schema}.activities", _ACTIVITY_COLUMNS, ("ts", "activity_id"),
                              base_where="destination = :dest", base_params={"dest": slug})


def orders_table(slug: str, search: str = "") -> grid_sql.GridTable:
    """One destination's orders whose symbol, status or ids contain ``search`` (literally)."""
    needle = search.strip()
    if len(needle) > ORDER_SEARCH_MAX_CHARS:
        raise grid_sql.GridRequestError(f"search is limited to {ORDER_SEARCH_MAX_CHARS} characters")
    if "\x00" in needle:
        raise grid_sql.GridRequestError("search contains a NUL character")
    schema = quote_ident(runtime().settings.account_schema)
    where, params = "destination = :dest", {"dest": slug}
    if needle:
        where += " AND " + _ORDER_SEARCH
        params["q"] = f"%{grid_sql.like_escape(needle)}%"
    return grid_sql.GridTable(f"{schema}.orders", _ORDER_COLUMNS, ("order_id",), base_where=where,
                              base_params=params)


def _text(field: str, header: str, width: int, **extra: Any) -> dict[str, Any]:
    return {"field": field, "headerName": header, "width": width, "filter": "agTextColumnFilter",
            "filterParams": {"buttons": ["reset"], "debounceMs": 400, "maxNumConditions": 1}, **extra}


def _number(field: str, header: str, width: int, formatter: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"field": field, "headerName": header, "width": width, "type": "rightAligned", "valueFormatter": formatter,
            "filter": "agNumberColumnFilter",
            "filterParams": {"buttons": ["reset"], "debounceMs": 400, "maxNumConditions": 1}, **extra}


def _time(field: str, header: str, **extra: Any) -> dict[str, Any]:
    return {"field": field, "headerName": header, "width": 200, "filter": "agDateColumnFilter",
            "filterParams": {"buttons": ["reset"], "maxNumConditions": 1}, **extra}


# crypto fees take a few hundred-millionths of a coin: more places than a share count needs
QTY = {"function": "params.value == null ? '' : d3.format(',.8~f')(params.value)"}


def activity_columns(tz_label: str) -> list[dict[str, Any]]:
    return [
        _time("ts", f"Time ({tz_label})", sort="desc"),
        _text("type_label", "Type", 150, tooltipField="activity_type"),
        _text("activity_type", "Code", 85),
        _text("symbol", "Symbol", 110),
        _text("side", "Side", 75),
        _number("qty", "Qty", 105, QTY),
        _number("price", "Price", 100, grids.PRICE),
        _number("net_amount", "Net amount", 125, grids.MONEY, cellStyle=grids.PL_STYLE),
        _text("description", "Description", 240, tooltipField="description"),
        _text("order_status", "Status", 95),
        _text("activity_id", "Activity id", 140),
        _text("order_id", "Order id", 280),
    ]


def order_columns(tz_label: str) -> list[dict[str, Any]]:
    return [
        _time("submitted_at", f"Submitted ({tz_label})", sort="desc"),
        _text("symbol", "Symbol", 110),
        _text("side", "Side", 75),
        _text("order_type", "Type", 95),
        _text("order_class", "Class", 90),
        _number("qty", "Qty", 95, QTY),
        _number("filled_qty", "Filled", 95, QTY),
        _number("filled_avg_price", "Avg fill", 105, grids.PRICE),
        _text("status", "Status", 110),
        _text("order_id", "Order id", 280),
        _text("client_order_id", "Client order id", 200),
    ]


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
            # change (REFRESH_MIN_S apart at most) re-asks the grids' visible blocks, sorted and
            # filtered on the server, so nothing is appended client-side and nothing can be skipped
            dcc.Interval(id="act-tick", interval=max(poll_interval_ms(), int(REFRESH_MIN_S * 1000)), n_intervals=0),
            dcc.Store(id="act-version", data={"slug": chosen, "v": version}),
            dbc.Row(
                [
                    dbc.Col(html.H4("Activities", className="mb-0"), xs=12, md="auto"),
                    dbc.Col(dbc.Select(id="act-dest", options=[{"label": d.name, "value": d.slug} for d in dests],
                                       value=chosen, size="sm"), xs=12, md=4),
                ],
                className="align-items-center g-2 mb-3",
            ),
            section("Account activities",
                    html.Div(
                        [dbc.RadioItems(id="act-kind", options=KIND_OPTIONS, value="all", inline=True,
                                        className="small"),
                         html.Small("Filter any column in the row under the headers; filtering and sorting run on "
                                    "the server.", className="text-body-secondary")],
                        className="d-flex flex-wrap align-items-center column-gap-3 mb-2"),
                    grids.infinite_grid("act-grid", activity_columns(label), height="420px", block_size=BLOCK_ROWS),
                    right=html.Small(f"activity version {version}", id="act-status",
                                     className="text-body-secondary d-none d-md-inline")),
            section("Orders",
                    dbc.Input(id="act-search", placeholder="Search symbol, status, order id…", type="search",
                              debounce=True, size="sm", className="mb-2", maxLength=ORDER_SEARCH_MAX_CHARS),
                    grids.infinite_grid("act-orders", order_columns(label), height="360px", block_size=BLOCK_ROWS)),
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
    def rows(request: dict[str, Any] | None, slug: str | None, tz_choice: str, browser_tz: str | None) -> Any:
        if not request or not slug:
            return no_update
        tz = resolve_tz(tz_choice, browser_tz)
        try:
            v = model().trusted(slug, "activity")  # an unknown slug: UnknownDestination, a 400
            return model().grid_block(("act-page", slug, v), activities_table(slug), request, tz)
        except grid_sql.GridRequestError as exc:
            abort(400, str(exc))

    @app.callback(
        Output("act-orders", "getRowsResponse"),
        Input("act-orders", "getRowsRequest"),
        State("act-dest", "value"),
        State("act-search", "value"),
        State("tz-choice", "value"),
        State("browser-tz", "data"),
    )
    def orders(request: dict[str, Any] | None, slug: str | None, search: str | None, tz_choice: str,
               browser_tz: str | None) -> Any:
        if not request or not slug:
            return no_update
        tz = resolve_tz(tz_choice, browser_tz)
        try:
            v = model().trusted(slug, "activity")  # the ingester stores orders with the activities
            table = orders_table(slug, search or "")
            return model().grid_block(("act-orders", slug, v, (search or "").strip()), table, request, tz)
        except grid_sql.GridRequestError as exc:
            abort(400, str(exc))

    app.clientside_callback(  # type: ignore[no-untyped-call]
        """async function(kind) {
            const api = await dash_ag_grid.getApiAsync('act-grid');
            const code = {filterType: 'text', filter: 'FILL', type: kind === 'fills' ? 'equals' : 'notEqual'};
            const model = Object.assign({}, api.getFilterModel() || {});
            if (kind === 'all') { delete model.activity_type; } else { model.activity_type = code; }
            api.setFilterModel(model);
            return window.dash_clientside.no_update;
        }""",
        Output("act-kind", "id"),
        Input("act-kind", "value"),
        prevent_initial_call=True,
    )

    # A new version re-asks both grids' blocks in view REFRESH_MIN_S apart at most (one asked for
    # sooner is held and done once, when that is up): SSE hints arrive with every ingested batch,
    # faster than the page's own tick. Another destination or another search re-asks at once.
    app.clientside_callback(  # type: ignore[no-untyped-call]
        """function(version, _search) {
            const gap_ms = __GAP_MS__;
            const state = window.__chActRefresh || (window.__chActRefresh = {last_ms: 0, timer: null, slug: null});
            const purge = async () => {
                if (state.timer) { clearTimeout(state.timer); state.timer = null; }
                state.last_ms = Date.now();
                for (const id of ['act-grid', 'act-orders']) {
                    try { const api = await dash_ag_grid.getApiAsync(id); api.purgeInfiniteCache(); } catch (e) {}
                }
            };
            const slug = version ? version.slug : null;
            const searched = (dash_clientside.callback_context.triggered || [])
                .some(t => t.prop_id.startsWith('act-search.'));
            const wait_ms = state.last_ms + gap_ms - Date.now();
            if (searched || slug !== state.slug || wait_ms <= 0) { state.slug = slug; purge(); }
            else if (!state.timer) { state.timer = setTimeout(purge, wait_ms); }
            return window.dash_clientside.no_update;
        }""".replace("__GAP_MS__", str(int(REFRESH_MIN_S * 1000))),
        Output("act-grid", "id"),
        Input("act-version", "data"),
        Input("act-search", "value"),
        prevent_initial_call=True,
    )
