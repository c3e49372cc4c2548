"""Strategies: one card per strategy (configured ``[[strategies]]`` and what the data names), with its destinations."""

from __future__ import annotations

from typing import Any

import dash_bootstrap_components as dbc
from dash import Dash, Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate
from sqlalchemy.exc import SQLAlchemyError

from core.strategies import UNATTRIBUTED
from dashboard import strategy_queries as sq
from dashboard.components import fmt
from dashboard.context import model
from dashboard.pages.common import empty_state, no_destinations, poll_interval_ms, tone_of
from dashboard.queries import ReadModel

PATH = "/strategies"
TITLE = "Strategies"


def version_token(m: ReadModel) -> list[Any]:
    """What the cards depend on: every destination's closed/pos versions and the published rules."""
    return [sorted((s, v.closed, v.pos) for s, v in m.versions().items()), sq.rules_token(m)]


def card_values(m: ReadModel) -> list[dict[str, Any]]:
    """Per strategy: name, key, destinations and headline figures, memoised per :func:`version_token`."""
    slugs = [d.slug for d in m.destinations()]

    def compute() -> list[dict[str, Any]]:
        closed_all, open_all = sq.all_trades(m, slugs), sq.all_open(m, slugs)
        out = []
        for s in sq.strategy_list(m, slugs):
            closed, held = sq.select(closed_all, s.name), sq.select(open_all, s.name)
            book = sq.daily_book(closed, held, today=_now(), capital_usd=sq.capital_of(m, s.name))
            values = sq.kpis(closed, held, sq.returns_of(book))
            dests = sorted(set(closed["destination"]) | set(held["destination"])) if len(closed) + len(held) else []
            out.append({"name": s.name, "key": s.key, "destinations": dests, **values})
        return out

    return sq.local_memo(m, "views", ("strategy-cards", repr(version_token(m))), compute)


def _now() -> Any:
    import pandas as pd

    return pd.Timestamp.now(tz="UTC")


def _stat(label: str, value: str, tone: str | None = None) -> Any:
    return html.Div([html.Div(label, className="ch-kpi-label"),
                     html.Div(value, className=f"ch-stat-value{' text-' + tone if tone else ''}")], className="ch-stat")


def _card(values: dict[str, Any], names: dict[str, str]) -> Any:
    dest_badges = [dbc.Badge(names.get(d, d), color="secondary", className="me-1 fw-normal") for d in values["destinations"]]
    muted = values["name"] == UNATTRIBUTED
    total = (values.get("realized_pl") or 0.0) + (values.get("unrealized_pl") or 0.0)
    body = [
        html.Div(fmt.money(total, sign=True), className=f"ch-card-equity text-{tone_of(total) or 'body'}"),
        html.Div("realized + unrealized P&L", className="small text-body-secondary mb-2"),
        html.Div([
            _stat("Realized", fmt.money(values.get("realized_pl"), sign=True), tone_of(values.get("realized_pl"))),
            _stat("Unrealized", fmt.money(values.get("unrealized_pl"), sign=True), tone_of(values.get("unrealized_pl"))),
            _stat("Fees", fmt.money(values.get("fees"))),
            _stat("Trades", f"{int(values.get('trades') or 0):,}"),
            _stat("Win rate", fmt.pct(values.get("win_rate"))),
            _stat("Return", fmt.pct(values.get("total_return"), sign=True), tone_of(values.get("total_return"))),
            _stat("Sharpe", fmt.num(values.get("sharpe"))),
            _stat("Max DD", fmt.pct(values.get("max_drawdown"))),
        ], className="ch-stat-grid"),
        html.Div(dest_badges or [html.Span("no trades yet", className="small text-body-secondary")], className="mt-2"),
    ]
    header = html.Div([html.Span(values["name"], className="fw-semibold" + (" fst-italic" if muted else "")),
                       html.Span(f"{len(values['destinations'])} destination(s)", className="small text-body-secondary")],
                      className="d-flex justify-content-between align-items-center gap-2")
    return dbc.Col(dcc.Link(dbc.Card([dbc.CardHeader(header), dbc.CardBody(body)], className="ch-dest-card h-100",
                                     id={"type": "strat-card", "key": values["key"]}),
                            href=f"/strategy/{values['key']}", className="text-reset text-decoration-none"),
                   xs=12, md=6, xl=4, className="mb-3")


def cards(m: ReadModel) -> Any:
    dests = m.destinations()
    if not dests:
        return no_destinations()
    values = card_values(m)
    if not values:
        return empty_state("No strategies yet",
                           "Name strategies by client order id prefix or pattern in [[strategies]] tables of "
                           "destinations.toml (see docs/strategies.md); round trips show here once they close.")
    names = {d.slug: d.name for d in dests}
    return dbc.Row([_card(v, names) for v in values])


def layout(**_: Any) -> Any:
    m = model()
    return html.Div([
        dcc.Interval(id="strats-tick", interval=max(5000, poll_interval_ms()), n_intervals=0),
        dcc.Store(id="strats-token", data=repr(version_token(m))),
        html.Div([html.H4("Strategies", className="mb-0"),
                  html.Div([dcc.Link("Compare", href="/compare", className="btn btn-sm btn-outline-secondary"),
                            html.A("CSV", href="/strategies/export.csv", id="strats-export-csv", download="strategies.csv",
                                   className="btn btn-sm btn-outline-secondary")], className="d-flex gap-1")],
                 className="d-flex justify-content-between align-items-center mb-3"),
        html.Div(cards(m), id="strats-cards"),
        html.Small("P&L by each round trip's opening order; returns on the strategy's gross exposure (or its "
                   "configured capital). A strategy's page has its books per destination.",
                   className="text-body-secondary"),
    ])


def register(app: Dash) -> None:
    @app.callback(Output("strats-cards", "children"), Output("strats-token", "data"),
                  Input("strats-tick", "n_intervals"), State("strats-token", "data"), prevent_initial_call=True)
    def refresh(_n: int, held: str | None) -> Any:
        m = model()
        try:
            token = repr(version_token(m))
            if token == held:
                raise PreventUpdate
            return cards(m), token
        except SQLAlchemyError:
            raise PreventUpdate from None

    from dashboard.strategy_export import register_exports

    register_exports(app)
