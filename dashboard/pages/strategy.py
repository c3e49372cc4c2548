"""One strategy: KPIs (with the benchmark's), growth of $1 against the benchmark, open positions, round trips.

A destination selector narrows the book to one account (default: across every destination the
strategy trades in); the benchmark is the chosen destination's (across destinations: the one most of
them use), and a switch hides it.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import dash_bootstrap_components as dbc
import pandas as pd
from dash import Dash, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate
from sqlalchemy.exc import SQLAlchemyError

from core import benchmark as bm
from dashboard import strategy_queries as sq
from dashboard.components import grids
from dashboard.components.strategy_figures import GROWTH_HEIGHT_PX, growth_figure, kpi_row
from dashboard.context import model, view_prefs
from dashboard.pages.common import GRAPH_CONFIG, empty_state, no_destinations, poll_interval_ms, section
from dashboard.queries import ReadModel

PATH_TEMPLATE = "/strategy/<key>"
TITLE = "Strategy"
ALL = "*"
"""The destination selector's "every destination" choice (never a slug: slugs are [a-z0-9_])."""
GRID_MAX_ROWS = 500
"""Newest round trips sent to the grid (the CSV export has all of them): keeps a callback under 300 KB."""

TRADE_COLUMNS = [
    {"field": "trade_id", "headerName": "Trade", "pinned": "left", "width": 120},
    {"field": "destination", "headerName": "Destination", "width": 140},
    {"field": "symbol", "headerName": "Symbol", "width": 100},
    {"field": "direction", "headerName": "Dir", "width": 80},
    {"field": "qty", "headerName": "Qty", "type": "rightAligned", "valueFormatter": grids.QTY, "width": 90},
    {"field": "entry_time", "headerName": "Entry (UTC)", "width": 165},
    {"field": "exit_time", "headerName": "Exit (UTC)", "width": 165, "sort": "desc"},
    {"field": "entry_price", "headerName": "Entry px", "type": "rightAligned", "valueFormatter": grids.PRICE, "width": 100},
    {"field": "exit_price", "headerName": "Exit px", "type": "rightAligned", "valueFormatter": grids.PRICE, "width": 100},
    {"field": "net_pl", "headerName": "Net P&L", "type": "rightAligned", "valueFormatter": grids.MONEY,
     "cellStyle": grids.PL_STYLE, "width": 115},
    {"field": "fees", "headerName": "Fees", "type": "rightAligned", "valueFormatter": grids.MONEY, "width": 85},
    {"field": "return_pct", "headerName": "Return", "type": "rightAligned", "valueFormatter": grids.PCT_POINTS,
     "cellStyle": grids.PL_STYLE, "width": 95},
    {"field": "exit_reason", "headerName": "Exit reason", "width": 120},
]
OPEN_COLUMNS = [
    {"field": "symbol", "headerName": "Symbol", "pinned": "left", "width": 100},
    {"field": "destination", "headerName": "Destination", "width": 140},
    {"field": "side", "headerName": "Side", "width": 80},
    {"field": "qty", "headerName": "Qty", "type": "rightAligned", "valueFormatter": grids.QTY, "width": 90},
    {"field": "avg_entry_price", "headerName": "Avg entry", "type": "rightAligned", "valueFormatter": grids.PRICE,
     "width": 105},
    {"field": "market_value", "headerName": "Value", "type": "rightAligned", "valueFormatter": grids.MONEY, "width": 115},
    {"field": "unrealized_pl", "headerName": "Unrealized", "type": "rightAligned", "valueFormatter": grids.MONEY,
     "cellStyle": grids.PL_STYLE, "width": 115},
]


def find(m: ReadModel, key: str) -> sq.StrategyKey | None:
    return next((s for s in sq.strategy_list(m, [d.slug for d in m.destinations()]) if s.key == key), None)


def benchmark_for(m: ReadModel, dests: list[str], chosen: str | None) -> str | None:
    if chosen:
        return sq.benchmark_of(m, chosen)
    counts = Counter(sq.benchmark_of(m, d) for d in dests)
    return counts.most_common(1)[0][0] if counts else sq.benchmark_of(m, "")


def _rows(frame: pd.DataFrame, columns: list[dict[str, Any]], names: dict[str, str]) -> list[dict[str, Any]]:
    """Grid rows (times as text, NaN as null) through pandas' JSON writer: ~10x faster than row objects."""
    fields = [c["field"] for c in columns]
    out = frame[[f for f in fields if f in frame.columns]].copy()
    if "destination" in out.columns:
        out["destination"] = out["destination"].map(lambda s: names.get(s, s))
    for col in ("entry_time", "exit_time"):
        if col in out.columns:
            out[col] = pd.DatetimeIndex(out[col]).strftime("%Y-%m-%d %H:%M:%S")
    rows: list[dict[str, Any]] = json.loads(out.to_json(orient="records"))
    return rows


def version_token(m: ReadModel) -> str:
    return repr((sorted((s, v.closed, v.pos) for s, v in m.versions().items()), sq.rules_token(m)))


def base(m: ReadModel, name: str, destination: str | None) -> dict[str, Any]:
    """The book of one selection with its figures and benchmark comparison (whatever the theme or toggle)."""
    slugs = [d.slug for d in m.destinations()]
    names = {d.slug: d.name for d in m.destinations()}

    def compute() -> dict[str, Any]:
        closed, held, book = sq.book_for(m, slugs, name, destination)
        returns = sq.returns_of(book)
        dests = sorted(set(closed["destination"]) | set(held["destination"])) if len(closed) + len(held) else []
        symbol = benchmark_for(m, dests, destination)
        bench = sq.against(returns, sq.benchmark_prices(m, symbol)) if symbol else None
        return {
            "values": sq.kpis(closed, held, returns), "bench": bench, "symbol": symbol, "book": book,
            "trades": _rows(closed.iloc[::-1].head(GRID_MAX_ROWS), TRADE_COLUMNS, names),
            "open": _rows(held, OPEN_COLUMNS, names), "destinations": dests,
            "status": f"{len(closed):,} round trips" + (f", newest {GRID_MAX_ROWS} shown" if len(closed) > GRID_MAX_ROWS
                                                      else ""),
        }

    return sq.local_memo(m, "views", ("strategy-base", name, destination, sq.data_token(m, slugs)), compute)


def view(m: ReadModel, name: str, destination: str | None, show_bench: bool, theme: str | None) -> dict[str, Any]:
    """Everything the page draws for one selection, memoised per the server's versions."""
    b = base(m, name, destination)

    def compute() -> dict[str, Any]:
        book, bench = b["book"], b["bench"] if show_bench else None
        symbol = b["symbol"] if bench is not None else None
        growth = pd.Series(book["growth"].to_numpy(dtype=float), index=book.index) if len(book) else pd.Series(dtype=float)
        cum = pd.Series(book["cum_pnl"].to_numpy(dtype=float), index=book.index) if len(book) else pd.Series(dtype=float)
        bench_growth = rel_dd = None
        if bench is not None and len(bench["benchmark_returns"]):
            bench_growth = bm.growth(bench["benchmark_returns"])
            rel_dd = bench["relative_drawdown"]
        return {
            "kpis": kpi_row(b["values"], bench, symbol),
            "figure": growth_figure(growth, cum, bench_growth, rel_dd, bench_label=symbol or "", theme=theme),
            "trades": b["trades"], "open": b["open"], "destinations": b["destinations"], "status": b["status"],
            "bench_note": f"Benchmark: {symbol}" if symbol else "No benchmark",
        }

    token = sq.data_token(m, [d.slug for d in m.destinations()])
    return sq.local_memo(m, "views", ("strategy-view", name, destination, show_bench, theme, token), compute)


def layout(key: str | None = None, **_: Any) -> Any:
    m = model()
    dests = m.destinations()
    if not dests:
        return no_destinations()
    found = find(m, key or "")
    if found is None:
        return empty_state(f"Unknown strategy {str(key)[:64]!r}",
                           html.Span(["Pick one on the ", dcc.Link("strategies page", href="/strategies"), "."]))
    _tz, _btz, theme = view_prefs()
    first = view(m, found.name, None, True, theme)
    names = {d.slug: d.name for d in dests}
    trades_in = first["destinations"]
    options = [{"label": "All destinations", "value": ALL}] + [{"label": names.get(s, s), "value": s} for s in trades_in]
    return html.Div([
        dcc.Store(id="strat-name", data=found.name),
        dcc.Store(id="strat-token", data=version_token(m)),
        dcc.Interval(id="strat-tick", interval=max(5000, poll_interval_ms()), n_intervals=0),
        html.Div([
            html.Div([html.H4(found.name, className="mb-0"),
                      html.Small(first["bench_note"], id="strat-bench-note", className="text-body-secondary")]),
            html.Div([
                dbc.Select(id="strat-dest", options=options, value=ALL, size="sm", style={"minWidth": "11rem"}),
                dbc.Switch(id="strat-bench", label="Benchmark", value=True, className="mb-0 text-nowrap"),
                html.A("CSV", id="strat-export-csv", href=f"/strategy/{found.key}/trades.csv",
                       download=f"{found.key}_trades.csv", className="btn btn-sm btn-outline-secondary"),
            ], className="d-flex align-items-center gap-2 flex-wrap"),
        ], className="d-flex justify-content-between align-items-start gap-2 mb-3 flex-wrap"),
        html.Div(first["kpis"], id="strat-kpis", className="ch-kpi-grid mb-3"),
        section("Growth of $1 and drawdown (New York business days)",
                dcc.Loading(dcc.Graph(id="strat-growth", figure=first["figure"], config=GRAPH_CONFIG,
                                      style={"height": f"{GROWTH_HEIGHT_PX}px"}), type="dot", delay_show=400)),
        section("Open positions", grids.client_grid("strat-open", OPEN_COLUMNS, row_id="symbol", height="220px",
                                                    row_data=first["open"])),
        section("Closed trades", grids.client_grid("strat-trades", TRADE_COLUMNS, row_id="trade_id", height="420px",
                                                   row_data=first["trades"]),
                right=html.Small(first["status"], id="strat-status", className="text-body-secondary")),
        html.Small("A round trip belongs to the strategy of its opening order, also when another strategy's "
                   "order closed it. Returns are P&L on the strategy's gross exposure.", className="text-body-secondary"),
    ])


def register(app: Dash) -> None:
    @app.callback(
        Output("strat-kpis", "children"), Output("strat-growth", "figure"), Output("strat-trades", "rowData"),
        Output("strat-open", "rowData"), Output("strat-status", "children"), Output("strat-bench-note", "children"),
        Output("strat-export-csv", "href"), Output("strat-token", "data"),
        Input("strat-dest", "value"), Input("strat-bench", "value"), Input("theme-store", "data"),
        Input("strat-tick", "n_intervals"), State("strat-name", "data"), State("strat-token", "data"),
        prevent_initial_call=True)
    def render(dest: str | None, show_bench: bool, theme: str | None, _n: int, name: str | None,
               held: str | None) -> Any:
        m = model()
        if not name:
            raise PreventUpdate
        token = version_token(m)
        if ctx.triggered_id == "strat-tick" and token == held:
            raise PreventUpdate  # nothing new: an empty 204, nothing redrawn
        destination = dest if dest and dest != ALL else None
        if destination is not None and m.destination(destination) is None:
            raise PreventUpdate  # a slug the client made up
        try:
            v = view(m, name, destination, bool(show_bench), theme)
        except SQLAlchemyError:
            raise PreventUpdate from None
        from urllib.parse import urlencode

        href = f"/strategy/{sq.strategy_key(name)}/trades.csv" + (f"?{urlencode({'destination': destination})}"
                                                                   if destination else "")
        return v["kpis"], v["figure"], v["trades"], v["open"], v["status"], v["bench_note"], href, token

