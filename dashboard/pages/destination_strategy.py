"""The destination page's strategy filter and benchmark comparison (issue 20).

Mounted with the secondary analytics, once ``dest-defer`` fires after the primary content is drawn,
so the page's first render does not pay for attributing its orders. A selector narrows it:

- **every strategy** (the default): the account's own cash-flow-neutral growth of $1 (the session
  returns its KPI row is computed from) against the destination's benchmark, the benchmark's cards
  (alpha, beta, correlation and R², information ratio, tracking error, excess return, capture), the
  drawdown relative to the benchmark, and one line per strategy that trades here;
- **one strategy**: that strategy's book in this destination exactly as its strategy page narrowed
  to this destination shows it (its KPIs on its gross exposure, growth of $1 against the benchmark,
  its newest round trips, with a CSV of all of them).

A switch hides the benchmark. The page's own closed-trades grid above stays the whole account's
(it is filtered and sorted in SQL; the strategy is an attribution over the orders, not a column).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

import dash_bootstrap_components as dbc
import numpy as np
import pandas as pd
from dash import Dash, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate
from sqlalchemy.exc import SQLAlchemyError

from core import benchmark as bm
from dashboard import strategy_queries as sq
from dashboard.components import fmt, grids
from dashboard.components.strategy_figures import GROWTH_HEIGHT_PX, bench_kpis, growth_figure, kpi_row
from dashboard.context import model
from dashboard.pages.common import GRAPH_CONFIG, section
from dashboard.pages.strategy import GRID_MAX_ROWS, TRADE_COLUMNS, _rows
from dashboard.queries import ReadModel

log = logging.getLogger(__name__)

ALL = "*"
"""The selector's "every strategy" choice (never a strategy key: keys are slugs)."""
COLUMNS = [c for c in TRADE_COLUMNS if c["field"] != "destination"]


def mount() -> Any:
    """The placeholder the page's layout holds; :func:`register`'s mount callback fills it."""
    return html.Div(id="dest-strategy", children=html.P("Strategies and benchmark follow…",
                                                         className="text-body-secondary small"))


def strategies_here(m: ReadModel, slug: str) -> list[sq.StrategyKey]:
    """The strategies with a round trip or an open position in ``slug``, in the strategies page's order."""
    present = set(sq.trades(m, slug)["strategy"]) | set(sq.open_positions(m, slug)["strategy"])
    return [s for s in sq.strategy_list(m, [d.slug for d in m.destinations()]) if s.name in present]


def panel(m: ReadModel, slug: str) -> Any:
    """The mounted section: selector, benchmark switch, KPI row, growth chart and the table below it."""
    options = [{"label": "Every strategy", "value": ALL}] + [
        {"label": s.name, "value": s.key} for s in strategies_here(m, slug)]
    controls = html.Div([
        dbc.Select(id="dest-strat", options=options, value=ALL, size="sm", style={"minWidth": "10rem"}),
        dbc.Switch(id="dest-strat-bench", label="Benchmark", value=True, className="mb-0 text-nowrap"),
    ], className="d-flex align-items-center gap-2 flex-wrap")
    return section(
        "Strategies and benchmark",
        html.Small(id="dest-strat-note", className="text-body-secondary d-block mb-2"),
        html.Div(id="dest-strat-kpis", className="ch-kpi-grid mb-2"),
        dcc.Loading(dcc.Graph(id="dest-strat-growth", config=GRAPH_CONFIG, style={"height": f"{GROWTH_HEIGHT_PX}px"}),
                    type="dot", delay_show=400),
        html.Div(id="dest-strat-table", className="mt-2"),
        right=controls,
    )


def _bench_series(bench: dict[str, Any] | None) -> tuple[pd.Series | None, pd.Series | None]:
    if bench is None or not len(bench["benchmark_returns"]):
        return None, None
    return bm.growth(bench["benchmark_returns"]), bench["relative_drawdown"]


def summary_table(m: ReadModel, slug: str) -> Any:
    """One line per strategy of ``slug``: round trips, net P&L, fees, win rate, open positions."""
    closed, held = sq.trades(m, slug), sq.open_positions(m, slug)
    lines = []
    for s in strategies_here(m, slug):
        c, h = closed[closed["strategy"] == s.name], held[held["strategy"] == s.name]
        pl = float(c["net_pl"].sum()) if len(c) else 0.0
        unrealized = float(np.nansum(h["unrealized_pl"].to_numpy(dtype=float))) if len(h) else 0.0
        win = float((c["net_pl"] > 0).mean()) if len(c) else None
        lines.append(html.Tr([
            html.Td(dcc.Link(s.name, href=f"/strategy/{s.key}")), html.Td(f"{len(c):,}", className="text-end"),
            html.Td(fmt.money(pl, sign=True), className="text-end"),
            html.Td(fmt.money(float(c["fees"].sum()) if len(c) else 0.0), className="text-end"),
            html.Td(fmt.pct(win), className="text-end"), html.Td(f"{len(h):,}", className="text-end"),
            html.Td(fmt.money(unrealized, sign=True), className="text-end"),
        ]))
    if not lines:
        return html.P("No round trips or open positions here yet.", className="text-body-secondary small mb-0")
    head = html.Thead(html.Tr([html.Th(t, className="" if i == 0 else "text-end") for i, t in enumerate(
        ("Strategy", "Round trips", "Net P&L", "Fees", "Win rate", "Open", "Unrealized"))]))
    return html.Div(dbc.Table([head, html.Tbody(lines)], size="sm", hover=True, className="mb-0"),
                    className="table-responsive")


def _account_view(m: ReadModel, slug: str, symbol: str | None, theme: str | None) -> dict[str, Any]:
    returns = sq.by_ny_day(m.session_returns(slug))
    bench = sq.against(returns, sq.benchmark_prices(m, symbol)) if symbol else None
    growth = bm.growth(returns) if len(returns) else pd.Series(dtype=float)
    bench_growth, rel_dd = _bench_series(bench)
    return {
        "kpis": bench_kpis(bench, symbol) if bench is not None and symbol else [],
        "figure": growth_figure(growth, pd.Series(dtype=float), bench_growth, rel_dd, bench_label=symbol or "",
                                theme=theme, empty_text="No equity history yet."),
        "table": summary_table(m, slug),
        "note": (f"The account's growth of $1 (cash flows taken out) against {symbol}." if symbol
                 else "The account's growth of $1 (cash flows taken out); no benchmark."),
    }


def _strategy_view(m: ReadModel, slug: str, found: sq.StrategyKey, symbol: str | None,
                   theme: str | None) -> dict[str, Any]:
    closed, held, book = sq.book_for(m, [d.slug for d in m.destinations()], found.name, slug)
    returns = sq.returns_of(book)
    bench = sq.against(returns, sq.benchmark_prices(m, symbol)) if symbol else None
    growth = pd.Series(book["growth"].to_numpy(dtype=float), index=book.index) if len(book) else pd.Series(dtype=float)
    cum = pd.Series(book["cum_pnl"].to_numpy(dtype=float), index=book.index) if len(book) else pd.Series(dtype=float)
    bench_growth, rel_dd = _bench_series(bench)
    names = {d.slug: d.name for d in m.destinations()}
    rows = _rows(closed.iloc[::-1].head(GRID_MAX_ROWS), COLUMNS, names)
    href = f"/strategy/{found.key}/trades.csv?{urlencode({'destination': slug})}"
    status = f"{len(closed):,} round trips" + (f", newest {GRID_MAX_ROWS} shown" if len(closed) > GRID_MAX_ROWS else "")
    table = html.Div([
        html.Div([html.Small(status, id="dest-strat-status", className="text-body-secondary"),
                  html.A("CSV", id="dest-strat-csv", href=href, download=f"{found.key}_{slug}_trades.csv",
                         className="btn btn-sm btn-outline-secondary")],
                 className="d-flex justify-content-between align-items-center mb-1"),
        grids.client_grid("dest-strat-trades", COLUMNS, row_id="trade_id", height="360px", row_data=rows),
    ])
    return {
        "kpis": kpi_row(sq.kpis(closed, held, returns), bench, symbol),
        "figure": growth_figure(growth, cum, bench_growth, rel_dd, bench_label=symbol or "", theme=theme),
        "table": table,
        "note": (f"{found.name} in this account, on its gross exposure" + (f", against {symbol}." if symbol else ".")
                 + " A round trip belongs to the strategy of its opening order."),
    }


def view(m: ReadModel, slug: str, key: str, show_bench: bool, theme: str | None) -> dict[str, Any] | None:
    """What the section draws for one choice (``None``: a strategy key this destination does not have),
    memoised per the server's versions."""
    symbol = sq.benchmark_of(m, slug) if show_bench else None
    token = (sq.data_token(m, [d.slug for d in m.destinations()]), m.current(slug).equity)

    def compute() -> dict[str, Any] | None:
        if key == ALL:
            return _account_view(m, slug, symbol, theme)
        found = next((s for s in strategies_here(m, slug) if s.key == key), None)
        return None if found is None else _strategy_view(m, slug, found, symbol, theme)

    return sq.local_memo(m, "views", ("dest-strategy", slug, key, symbol, theme, token), compute)


def register(app: Dash) -> None:
    @app.callback(
        Output("dest-strategy", "children"),
        Input("dest-defer", "n_intervals"),
        State("dest-slug", "data"),
        prevent_initial_call=True,
    )
    def mount_panel(deferred: int, slug: str | None) -> Any:
        if not deferred or not slug or model().destination(slug) is None:
            return no_update
        try:
            return panel(model(), slug)
        except SQLAlchemyError:
            log.warning("destination %s: strategy section not drawn (database error)", slug)
            return no_update

    @app.callback(
        Output("dest-strat-kpis", "children"),
        Output("dest-strat-growth", "figure"),
        Output("dest-strat-table", "children"),
        Output("dest-strat-note", "children"),
        Input("dest-strat", "value"),
        Input("dest-strat-bench", "value"),
        Input("theme-store", "data"),
        Input("dest-v-closed", "data"),
        Input("dest-v-equity", "data"),
        State("dest-slug", "data"),
    )
    def draw(key: str | None, show_bench: bool, theme: str | None, _v_closed: Any, _v_eq: Any,
             slug: str | None) -> Any:
        # the client's versions only say when to look again: the memo key holds the server's own
        m = model()
        if not slug or m.destination(slug) is None:
            raise PreventUpdate
        try:
            v = view(m, slug, key or ALL, bool(show_bench), theme)
        except SQLAlchemyError:
            raise PreventUpdate from None
        if v is None:
            raise PreventUpdate  # a strategy key the client made up
        return v["kpis"], v["figure"], v["table"], v["note"]
