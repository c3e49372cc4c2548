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
from dash import Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate
from sqlalchemy.exc import SQLAlchemyError

from core import benchmark as bm
from dashboard import strategy_queries as sq
from dashboard.components import fmt, grids
from dashboard.components.strategy_figures import GROWTH_HEIGHT_PX, bench_kpis, growth_figure, kpi_row
from dashboard.context import model
from dashboard.pages import strategy
from dashboard.pages.common import GRAPH_CONFIG, section
from dashboard.pages.strategy import TRADE_COLUMNS
from dashboard.queries import ReadModel

log = logging.getLogger(__name__)

ALL = "*"
"""The selector's "every strategy" choice (never a strategy key: keys are slugs)."""
COLUMNS = [c for c in TRADE_COLUMNS if c["field"] != "destination"]
POLL_MS = 30_000
"""How often the section asks whether anything it shows changed (an unchanged answer is an empty 204)."""


def mount() -> Any:
    """The placeholder the page's layout holds; :func:`register`'s mount callback fills it."""
    return html.Div(id="dest-strategy", children=html.P("Strategies and benchmark follow…",
                                                         className="text-body-secondary small"))


def _token(m: ReadModel) -> tuple[Any, ...]:
    """What the section depends on: every destination's closed/pos versions and the published rules."""
    return sq.data_token(m, [d.slug for d in m.destinations()])


def strategies_here(m: ReadModel, slug: str) -> list[sq.StrategyKey]:
    """The strategies with a round trip or an open position in ``slug``, in the strategies page's order."""

    def compute() -> list[sq.StrategyKey]:
        present = set(sq.trades(m, slug)["strategy"].unique()) | set(sq.open_positions(m, slug)["strategy"].unique())
        return [s for s in sq.strategy_list(m, [d.slug for d in m.destinations()]) if s.name in present]

    return sq.local_memo(m, "views", ("dest-strategies-here", slug, _token(m)), compute)


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
        # its own slow poll, not the page's version stores: those move with every mark and snapshot of a
        # live account, and a strategy's book is not worth redrawing that often
        dcc.Interval(id="dest-strat-tick", interval=POLL_MS, n_intervals=0),
        dcc.Store(id="dest-strat-shown"),
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


def summary_lines(m: ReadModel, slug: str) -> list[dict[str, Any]]:
    """Per strategy of ``slug``: round trips, net P&L, fees, win rate, open positions, unrealized P&L (one
    pass over the round trips, memoised per the server's versions)."""

    def compute() -> list[dict[str, Any]]:
        closed, held = sq.trades(m, slug), sq.open_positions(m, slug)
        won = closed["net_pl"].to_numpy(dtype=float) > 0
        trips = pd.DataFrame({"strategy": closed["strategy"].to_numpy(dtype=object), "won": won,
                              "net_pl": closed["net_pl"].to_numpy(dtype=float),
                              "fees": closed["fees"].to_numpy(dtype=float)}).groupby("strategy")
        sums, counts, wins = trips[["net_pl", "fees"]].sum(), trips.size(), trips["won"].sum()
        opens = pd.DataFrame({"strategy": held["strategy"].to_numpy(dtype=object),
                              "unrealized": held["unrealized_pl"].to_numpy(dtype=float)}).groupby("strategy")
        n_open, unrealized = opens.size(), opens["unrealized"].sum(min_count=1)
        out = []
        for s in strategies_here(m, slug):
            n = int(counts.get(s.name, 0))
            out.append({"name": s.name, "key": s.key, "trips": n, "open": int(n_open.get(s.name, 0)),
                        "net_pl": float(sums["net_pl"].get(s.name, 0.0)), "fees": float(sums["fees"].get(s.name, 0.0)),
                        "win_rate": float(wins.get(s.name, 0)) / n if n else None,
                        "unrealized": float(np.nan_to_num(unrealized.get(s.name, 0.0)))})
        return out

    return sq.local_memo(m, "views", ("dest-strategy-lines", slug, _token(m)), compute)


def summary_table(m: ReadModel, slug: str) -> Any:
    """One line per strategy of ``slug`` (:func:`summary_lines`), each linked to its strategy page."""
    lines = [html.Tr([
        html.Td(dcc.Link(r["name"], href=f"/strategy/{r['key']}")), html.Td(f"{r['trips']:,}", className="text-end"),
        html.Td(fmt.money(r["net_pl"], sign=True), className="text-end"),
        html.Td(fmt.money(r["fees"]), className="text-end"), html.Td(fmt.pct(r["win_rate"]), className="text-end"),
        html.Td(f"{r['open']:,}", className="text-end"), html.Td(fmt.money(r["unrealized"], sign=True),
                                                                  className="text-end"),
    ]) for r in summary_lines(m, slug)]
    if not lines:
        return html.P("No round trips or open positions here yet.", className="text-body-secondary small mb-0")
    head = html.Thead(html.Tr([html.Th(t, className="" if i == 0 else "text-end") for i, t in enumerate(
        ("Strategy", "Round trips", "Net P&L", "Fees", "Win rate", "Open", "Unrealized"))]))
    return html.Div(dbc.Table([head, html.Tbody(lines)], size="sm", hover=True, className="mb-0"),
                    className="table-responsive")


def _account_base(m: ReadModel, slug: str, symbol: str | None) -> dict[str, Any]:
    """The account's growth of $1 against ``symbol``, whatever the theme or the switch."""

    def compute() -> dict[str, Any]:
        returns = sq.by_ny_day(m.session_returns(slug))
        bench = sq.against(returns, sq.benchmark_prices(m, symbol)) if symbol else None
        growth = bm.growth(returns) if len(returns) else pd.Series(dtype=float)
        return {"growth": growth, "cum": pd.Series(dtype=float), "bench": bench, "values": None,
                "table": summary_table(m, slug), "empty_text": "No equity history yet."}

    key = ("dest-strategy-account", slug, symbol, _token(m), m.current(slug).equity)
    return sq.local_memo(m, "views", key, compute)


def _strategy_base(m: ReadModel, slug: str, found: sq.StrategyKey) -> dict[str, Any]:
    """One strategy in ``slug``: the strategy page's own book of it narrowed to ``slug`` (shared memo)."""

    def compute() -> dict[str, Any]:
        b = strategy.base(m, found.name, slug)
        book = b["book"]
        growth = pd.Series(book["growth"].to_numpy(dtype=float), index=book.index) if len(book) else pd.Series(
            dtype=float)
        cum = pd.Series(book["cum_pnl"].to_numpy(dtype=float), index=book.index) if len(book) else pd.Series(
            dtype=float)
        href = f"/strategy/{found.key}/trades.csv?{urlencode({'destination': slug})}"
        table = html.Div([
            html.Div([html.Small(b["status"], id="dest-strat-status", className="text-body-secondary"),
                      html.A("CSV", id="dest-strat-csv", href=href, download=f"{found.key}_{slug}_trades.csv",
                             className="btn btn-sm btn-outline-secondary")],
                     className="d-flex justify-content-between align-items-center mb-1"),
            grids.client_grid("dest-strat-trades", COLUMNS, row_id="trade_id", height="360px", row_data=b["trades"]),
        ])
        return {"growth": growth, "cum": cum, "bench": b["bench"], "values": b["values"], "table": table,
                "empty_text": "No round trips for this strategy here yet.", "symbol": b["symbol"]}

    return sq.local_memo(m, "views", ("dest-strategy-one", slug, found.name, _token(m)), compute)


def view(m: ReadModel, slug: str, key: str, show_bench: bool, theme: str | None) -> dict[str, Any] | None:
    """What the section draws for one choice (``None``: a strategy key this destination does not have).
    The data is held per the server's versions whatever the theme or the switch; only the drawing differs."""
    if key == ALL:
        symbol = sq.benchmark_of(m, slug)
        b = _account_base(m, slug, symbol)
        name = None
    else:
        found = next((s for s in strategies_here(m, slug) if s.key == key), None)
        if found is None:
            return None
        b = _strategy_base(m, slug, found)
        symbol, name = b["symbol"], found.name

    def draw() -> dict[str, Any]:
        bench = b["bench"] if show_bench and symbol else None
        label = symbol if bench is not None else None
        bench_growth, rel_dd = _bench_series(bench)
        if name is None:
            kpis = bench_kpis(bench, label) if bench is not None and label else []
            note = (f"The account's growth of $1 (cash flows taken out) against {label}." if label
                    else "The account's growth of $1 (cash flows taken out); no benchmark.")
        else:
            kpis = kpi_row(b["values"], bench, label)
            note = (f"{name} in this account, on its gross exposure" + (f", against {label}." if label else ".")
                    + " A round trip belongs to the strategy of its opening order.")
        figure = growth_figure(b["growth"], b["cum"], bench_growth, rel_dd, bench_label=label or "", theme=theme,
                               empty_text=b["empty_text"])
        return {"kpis": kpis, "figure": figure, "table": b["table"], "note": note}

    held_for = (_token(m), m.current(slug).equity if key == ALL else None)  # the versions ``b`` was built for
    return sq.local_memo(m, "views", ("dest-strategy-view", slug, key, bool(show_bench), theme, held_for), draw)


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
        Output("dest-strat-shown", "data"),
        Input("dest-strat", "value"),
        Input("dest-strat-bench", "value"),
        Input("theme-store", "data"),
        Input("dest-strat-tick", "n_intervals"),
        State("dest-slug", "data"),
        State("dest-strat-shown", "data"),
    )
    def draw(key: str | None, show_bench: bool, theme: str | None, _n: int, slug: str | None,
             shown: str | None) -> Any:
        m = model()
        if not slug or m.destination(slug) is None:
            raise PreventUpdate
        try:
            token = repr((_token(m), m.current(slug).equity))  # the server's own versions
            if ctx.triggered_id == "dest-strat-tick" and token == shown:
                raise PreventUpdate  # nothing new: an empty 204, nothing redrawn
            v = view(m, slug, key or ALL, bool(show_bench), theme)
        except SQLAlchemyError:
            raise PreventUpdate from None
        if v is None:
            raise PreventUpdate  # a strategy key the client made up
        return v["kpis"], v["figure"], v["table"], v["note"], token
