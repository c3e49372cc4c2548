"""Comparison: any set of destinations and strategies side by side (metrics table, overlaid growth of $1).

Items are ``d:<slug>`` (a destination's cash-flow-neutral session returns, as on its page) and
``s:<key>`` (a strategy across its destinations, :mod:`dashboard.strategy_queries`). The benchmark's
metrics are computed per item on the item's own days (:func:`dashboard.strategy_queries.against`).
"""

from __future__ import annotations

import math
from typing import Any

import dash_bootstrap_components as dbc
import numpy as np
import pandas as pd
from dash import Dash, Input, Output, dcc, html
from dash.exceptions import PreventUpdate
from sqlalchemy.exc import SQLAlchemyError

from dashboard import analytics
from dashboard import strategy_queries as sq
from dashboard.components import fmt
from dashboard.components.strategy_figures import COMPARE_HEIGHT_PX, compare_figure
from dashboard.context import model, view_prefs
from dashboard.pages.common import GRAPH_CONFIG, no_destinations, section
from dashboard.queries import ReadModel

PATH = "/compare"
TITLE = "Compare"
MAX_ITEMS = 12
COLUMNS = (("total_return", "Total return", "pct"), ("cagr", "CAGR", "pct"), ("sharpe", "Sharpe", "num"),
           ("sortino", "Sortino", "num"), ("max_drawdown", "Max DD", "pct"), ("volatility", "Volatility", "pct"),
           ("alpha", "Alpha", "pct"), ("beta", "Beta", "num"), ("correlation", "Corr.", "num"),
           ("information_ratio", "IR", "num"), ("excess_return", "Excess", "pct"), ("trades", "Trades", "int"))


def options(m: ReadModel) -> list[dict[str, str]]:
    dests = m.destinations()
    slugs = [d.slug for d in dests]
    out = [{"label": f"Destination · {d.name}", "value": f"d:{d.slug}"} for d in dests]
    out += [{"label": f"Strategy · {s.name}", "value": f"s:{s.key}"} for s in sq.strategy_list(m, slugs)]
    return out


def benchmark_options(m: ReadModel) -> list[dict[str, str]]:
    symbols = sorted({s for s in sq.benchmarks(m).values() if s} | {"SPY"})
    return [{"label": "No benchmark", "value": ""}] + [{"label": s, "value": s} for s in symbols]


def item_returns(m: ReadModel, item: str) -> tuple[str, pd.Series, pd.DataFrame] | None:
    """``(label, daily returns, closed trades)`` of one item; ``None`` for an unknown one."""
    kind, _, ident = item.partition(":")
    slugs = [d.slug for d in m.destinations()]
    if kind == "d":
        dest = m.destination(ident)
        if dest is None:
            return None
        # the round trips as attributed (held in this process), not closed_pl's frame from the shared cache
        return dest.name, sq.by_ny_day(m.session_returns(dest.slug)), sq.trades(m, dest.slug)
    if kind == "s":
        found = next((s for s in sq.strategy_list(m, slugs) if s.key == ident), None)
        if found is None:
            return None
        closed, _held, book = sq.book_for(m, slugs, found.name)
        return f"{found.name} (strategy)", sq.by_ny_day(sq.returns_of(book)), closed
    return None


def compare_rows(m: ReadModel, items: list[str], symbol: str | None) -> tuple[list[dict[str, Any]], list[Any]]:
    """The metrics table's rows and the growth curves (label, series) of ``items`` against ``symbol``."""
    prices = sq.benchmark_prices(m, symbol) if symbol else pd.Series(dtype=float)
    rows: list[dict[str, Any]] = []
    curves: list[tuple[str, pd.Series]] = []
    first_day: pd.Timestamp | None = None
    for item in items[:MAX_ITEMS]:
        got = item_returns(m, item)
        if got is None:
            continue
        label, returns, trades = got
        values: dict[str, Any] = dict(analytics.summary(returns))
        values["trades"] = float(len(trades))
        if symbol:
            values |= {k: v for k, v in sq.against(returns, prices).items() if k in dict.fromkeys(
                ("alpha", "beta", "correlation", "information_ratio", "excess_return"))}
        rows.append({"item": item, "label": label, **values})
        if len(returns):
            curves.append((label, analytics.growth_index(returns)))
            first_day = returns.index[0] if first_day is None else min(first_day, returns.index[0])
    if symbol and not prices.empty and first_day is not None:
        window = prices[prices.index >= first_day - pd.Timedelta(days=1)]
        if len(window) > 1:
            curves.append((f"Benchmark {symbol}", window / float(window.iloc[0])))
    return rows, curves


def _cell(value: Any, kind: str) -> str:
    if kind == "int":
        return f"{int(value):,}" if isinstance(value, float) and math.isfinite(value) else fmt.DASH
    return fmt.pct(value) if kind == "pct" else fmt.num(value)


def metrics_table(rows: list[dict[str, Any]]) -> Any:
    if not rows:
        return html.P("Nothing to compare yet.", className="text-body-secondary")
    head = html.Thead(html.Tr([html.Th("")] + [html.Th(label, className="text-end") for _k, label, _f in COLUMNS]))
    body = html.Tbody([html.Tr([html.Td(r["label"], className="fw-semibold text-nowrap")]
                               + [html.Td(_cell(r.get(k), f), className="text-end") for k, _l, f in COLUMNS])
                       for r in rows])
    return html.Div(dbc.Table([head, body], size="sm", hover=True, className="mb-0 ch-compare-table"),
                    className="table-responsive")


def layout(items: str | None = None, **_: Any) -> Any:
    m = model()
    if not m.destinations():
        return no_destinations()
    opts = options(m)
    chosen = [i for i in (items or "").split(",") if i] or [o["value"] for o in opts if o["value"].startswith("s:")][:4] \
        or [o["value"] for o in opts[:4]]
    _tz, _btz, theme = view_prefs()
    return html.Div([
        html.Div([html.H4("Compare", className="mb-0"),
                  html.A("CSV", id="cmp-export-csv", href="/compare/export.csv", download="compare.csv",
                         className="btn btn-sm btn-outline-secondary")],
                 className="d-flex justify-content-between align-items-center mb-3"),
        dbc.Row([
            dbc.Col(dcc.Dropdown(id="cmp-items", options=opts, value=chosen, multi=True,
                                 placeholder="Destinations and strategies…"), xs=12, md=9, className="mb-2"),
            dbc.Col(dcc.Dropdown(id="cmp-bench", options=benchmark_options(m), value="SPY", clearable=False),
                    xs=12, md=3, className="mb-2"),
        ]),
        section("Metrics", html.Div(id="cmp-table")),
        section("Growth of $1 (cash-flow neutral, New York days)",
                dcc.Loading(dcc.Graph(id="cmp-growth", config=GRAPH_CONFIG, style={"height": f"{COMPARE_HEIGHT_PX}px"}),
                            type="dot", delay_show=400)),
        html.Small("Destinations: time-weighted returns of the account; strategies: P&L on gross exposure. "
                   "Benchmark metrics on each item's own days (docs/strategies.md).", className="text-body-secondary"),
        dcc.Store(id="cmp-theme-seed", data=theme),
    ])


def register(app: Dash) -> None:
    @app.callback(Output("cmp-table", "children"), Output("cmp-growth", "figure"), Output("cmp-export-csv", "href"),
                  Input("cmp-items", "value"), Input("cmp-bench", "value"), Input("theme-store", "data"))
    def render(items: list[str] | None, bench: str | None, theme: str | None) -> Any:
        m = model()
        chosen = [i for i in (items or []) if isinstance(i, str)][:MAX_ITEMS]
        symbol = bench or None
        try:
            token = (tuple(chosen), symbol, theme, repr(sorted((s, v.closed, v.pos, v.equity)
                                                               for s, v in m.versions().items())))

            def compute() -> tuple[Any, Any]:
                rows, curves = compare_rows(m, chosen, symbol)
                return [_plain_row(r) for r in rows], compare_figure(curves, theme)

            rows, figure = sq.local_memo(m, "views", ("compare", token), compute)
        except SQLAlchemyError:
            raise PreventUpdate from None
        from urllib.parse import urlencode

        href = "/compare/export.csv?" + urlencode({"items": ",".join(chosen), "benchmark": symbol or ""})
        return metrics_table(rows), figure, href


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, float | np.floating) else v) for k, v in row.items()}
