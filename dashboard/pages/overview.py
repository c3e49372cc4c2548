"""Overview: one card per destination and the aggregate, cash-flow-neutral equity curve."""

from __future__ import annotations

from typing import Any

import dash_bootstrap_components as dbc
import numpy as np
import pandas as pd
from dash import Dash, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate
from sqlalchemy.exc import SQLAlchemyError

from core.destinations import closed_trades_table, equity_table
from core.schema import quote_ident
from dashboard import analytics
from dashboard.components import figures, fmt
from dashboard.context import model, resolve_tz, runtime
from dashboard.pages.common import graph, no_destinations, poll_interval_ms, section, tone_of
from dashboard.pages.reconciliation import trust_badge
from dashboard.queries import DestinationRow, Versions, f8

PATH = "/"
TITLE = "Overview"


def layout(**_: Any) -> Any:
    return html.Div(
        [
            dcc.Interval(id="ov-tick", interval=poll_interval_ms(), n_intervals=0),
            dcc.Store(id="ov-versions", data={s: v.as_dict() for s, v in model().versions().items()}),
            html.Div(id="ov-cards"),
            html.Div(section("All destinations: total equity and growth of $1", graph("ov-aggregate")),
                     id="ov-aggregate-wrap"),
        ]
    )


def live_equity(slug: str, positions: list[dict[str, Any]]) -> float | None:
    """The latest equity snapshot carried forward to the live marks of ``positions``: cash + live marks.

    Between two of the manager's snapshots (minutes apart outside market hours) equity moves by P&L:
    what round trips closed since the snapshot realized, plus the change in unrealized P&L of what is
    held. Cash flows show from the next snapshot on. A snapshot without marks (seeded from portfolio
    history) is shown as it is. ``None`` without any snapshot.
    """
    m = model()
    snapshot = m.rows(f"SELECT ts, {f8('equity')} AS equity, {f8('unrealized_pl')} AS unrealized_pl "
                      f"FROM public.{quote_ident(equity_table(slug))} ORDER BY ts DESC LIMIT 1")
    if not snapshot:
        return None
    row = snapshot[0]
    if row["unrealized_pl"] is None:
        return float(row["equity"])
    realized = m.rows(f"SELECT {f8('coalesce(sum(net_pl), 0)')} AS pl FROM public.{quote_ident(closed_trades_table(slug))} "
                      "WHERE exit_time > :ts", {"ts": row["ts"]})[0]["pl"]
    unrealized = sum(float(p.get("unrealized_pl") or 0.0) for p in positions)
    return float(row["equity"]) + float(realized) + unrealized - float(row["unrealized_pl"])


def _with_live_equity(daily: pd.DataFrame, equity: float, tz: str) -> pd.DataFrame:
    """``daily`` whose last day (today's, added when the last snapshot is older) closes at ``equity``."""
    out = daily.copy()
    today = pd.Timestamp.now(tz=tz).normalize().tz_localize(None)
    if out.index[-1] < today:
        out.loc[today] = {"equity": equity, "net_deposits": out["net_deposits"].iloc[-1]}
    else:
        out.loc[out.index[-1], "equity"] = equity
    return out


def card_values(dest: DestinationRow, v: Versions, tz: str) -> dict[str, Any]:
    m = model()

    def compute() -> dict[str, Any]:
        positions = m.open_positions(dest.slug, v.pos)
        daily = m.daily_equity(dest.slug, tz, v.equity)
        equity = live_equity(dest.slug, positions) if not daily.empty else None
        if equity is not None:
            daily = _with_live_equity(daily, equity, tz)
        returns = m.session_returns(dest.slug, v.equity)
        summary = analytics.summary(returns)
        exposures = [float(p.get("market_value") or 0.0) for p in positions]
        out: dict[str, Any] = {
            "equity": equity,
            "total_return": summary.get("total_return"),
            "sharpe": summary.get("sharpe"),
            "max_drawdown": summary.get("max_drawdown"),
            "current_drawdown": analytics.current_drawdown(returns),
            "open_positions": len(positions),
            "gross_exposure": float(np.sum(np.abs(exposures))) if exposures else 0.0,
            "net_exposure": float(np.sum(exposures)) if exposures else 0.0,
        }
        out["day_pl"], out["day_return"] = analytics.day_change(daily)
        return out

    return m.memo(("card", dest.slug, v.pos, v.closed, v.equity, tz), compute)


def _health(dest_slug: str, heartbeats: list[dict[str, Any]]) -> tuple[str, str]:
    settings = runtime().settings
    rows = [h for h in heartbeats if h["destination"] == dest_slug]
    if not rows:
        return "danger", "workers not running"
    worst = max(float(h["age_s"] or 1e9) for h in rows)
    colour = fmt.health_colour(worst, ok_s=settings.heartbeat_sec * 3, warn_s=settings.heartbeat_sec * 10)
    return colour, f"updated {fmt.age(worst)}"


def _card(dest: DestinationRow, values: dict[str, Any], health: tuple[str, str]) -> Any:
    colour, health_text = health

    def stat(label: str, value: str, tone: str | None = None) -> Any:
        return html.Div([html.Div(label, className="ch-kpi-label"),
                         html.Div(value, className=f"ch-stat-value{' text-' + tone if tone else ''}")],
                        className="ch-stat")

    return dbc.Col(
        dcc.Link(
            dbc.Card(
                [
                    dbc.CardHeader(
                        html.Div(
                            [
                                html.Span([dest.name, trust_badge(dest.slug)], className="fw-semibold"),
                                html.Span([html.Span(className=f"ch-dot bg-{colour} me-1"), health_text],
                                          className="small text-body-secondary", title="worker heartbeat age"),
                            ],
                            className="d-flex justify-content-between align-items-center gap-2",
                        )
                    ),
                    dbc.CardBody(
                        [
                            html.Div(fmt.money(values.get("equity")), className="ch-card-equity"),
                            html.Div(
                                [fmt.money(values.get("day_pl"), sign=True), " · ",
                                 fmt.pct(values.get("day_return"), sign=True), " today"],
                                className=f"small text-{tone_of(values.get('day_pl')) or 'body-secondary'} mb-2",
                            ),
                            html.Div(
                                [
                                    stat("Total return", fmt.pct(values.get("total_return"), sign=True),
                                         tone_of(values.get("total_return"))),
                                    stat("Sharpe", fmt.num(values.get("sharpe"))),
                                    stat("Max DD", fmt.pct(values.get("max_drawdown"))),
                                    stat("Current DD", fmt.pct(values.get("current_drawdown"))),
                                    stat("Open", str(values.get("open_positions", 0))),
                                    stat("Gross exp.", fmt.money(values.get("gross_exposure"), decimals=0)),
                                    stat("Net exp.", fmt.money(values.get("net_exposure"), decimals=0)),
                                ],
                                className="ch-stat-grid",
                            ),
                        ]
                    ),
                ],
                className="ch-dest-card h-100",
                id={"type": "ov-card", "slug": dest.slug},
            ),
            href=f"/destination/{dest.slug}",
            className="text-reset text-decoration-none",
        ),
        xs=12, md=6, xl=4, className="mb-3",
    )


def aggregate_figure(dests: list[DestinationRow], versions: dict[str, Versions], tz: str, theme: str | None) -> Any:
    """Sum of equities and the cash-flow-neutral growth of $1 of the combined book (one currency: USD)."""
    m = model()
    frames = []
    for d in dests:
        v = versions.get(d.slug, Versions())
        daily = m.daily_equity(d.slug, tz, v.equity)
        if not daily.empty:
            frames.append(daily[["equity", "net_deposits"]])
    if not frames:
        return figures.empty("No equity history yet: start the workers (`python -m workers all`).", theme)
    total = pd.concat(frames, axis=1, keys=range(len(frames))).sort_index().ffill()
    combined = pd.DataFrame({
        "equity": total.xs("equity", axis=1, level=1).sum(axis=1, min_count=1),
        "net_deposits": total.xs("net_deposits", axis=1, level=1).sum(axis=1, min_count=1),
    }).dropna()
    returns = analytics.daily_returns(combined)
    growth = analytics.growth_index(returns)
    growth.index = pd.DatetimeIndex(growth.index).tz_localize(None) if len(growth) else growth.index
    growth = growth.reindex(combined.index)
    return figures.aggregate(combined.index, combined["equity"].to_numpy(), growth.to_numpy(),
                             tz_label=fmt.tz_label(tz), theme=theme)


def register(app: Dash) -> None:
    @app.callback(
        Output("ov-versions", "data"),
        Input("ov-tick", "n_intervals"),
        Input("sse-hint", "data"),
        State("ov-versions", "data"),
    )
    def poll(_n: int, _hint: Any, held: dict[str, Any] | None) -> Any:
        try:
            current = {slug: v.as_dict() for slug, v in model().versions().items()}
        except SQLAlchemyError:
            raise PreventUpdate from None
        if not current and held:
            raise PreventUpdate  # an unreadable registry during an outage: keep the cards shown
        if current == held:
            raise PreventUpdate  # nothing changed: an empty 204, no re-render anywhere
        return current

    @app.callback(
        Output("ov-cards", "children"),
        Output("ov-aggregate", "figure"),
        Output("ov-aggregate-wrap", "style"),
        Input("ov-versions", "data"),
        Input("theme-store", "data"),
        Input("tz-choice", "value"),
        Input("browser-tz", "data"),
    )
    def render(versions: dict[str, Any] | None, theme: str, tz_choice: str, browser_tz: str | None) -> Any:
        if versions is None:
            return no_update, no_update, no_update
        m = model()
        dests = m.destinations()
        if not dests:
            return no_destinations(), figures.empty("", theme), {"display": "none"}
        tz = resolve_tz(tz_choice, browser_tz)
        vs = m.versions()  # the server's own: the client's copy only says that something changed
        heartbeats = m.heartbeats()
        cards = [
            _card(d, card_values(d, vs.get(d.slug, Versions()), tz), _health(d.slug, heartbeats)) for d in dests
        ]
        token = tuple((d.slug, vs.get(d.slug, Versions()).equity) for d in dests)
        figure = m.memo(("ov-aggregate", token, tz, theme),
                        lambda: figures.plain(aggregate_figure(dests, vs, tz, theme)))
        return dbc.Row(cards), figure, {}

