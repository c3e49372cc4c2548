"""What the destination page draws from the read model: KPI cards, open positions, the equity chart
and the secondary analytics. Pure drawing over :mod:`dashboard.queries` and :mod:`dashboard.kpis`; the
page's layout and callbacks (:mod:`dashboard.pages.destination`) call these."""

from __future__ import annotations

import logging
import math
from typing import Any

import dash_bootstrap_components as dbc
import numpy as np
import pandas as pd
from dash import html
from sqlalchemy.exc import SQLAlchemyError

from dashboard import analytics, kpis
from dashboard.components import figures, fmt
from dashboard.context import model
from dashboard.instrument_cols import instrument_fields
from dashboard.pages.common import graph, kpi, section, tone_of

log = logging.getLogger(__name__)

def first_render(slug: str, v_pos: int, v_closed: int, v_eq: int, tz: str, theme: str) -> dict[str, Any]:
    """The primary content (KPIs, open positions, equity chart) for the page's layout itself.

    Drawn here, a fresh browser shows the page after one round trip (the page route) instead of three
    (route, then the data callbacks, then plotly redrawing its placeholder). On a database error it
    returns what it has: the data callbacks then fill in the rest as before.
    """
    out: dict[str, Any] = {}
    try:
        out["kpis"] = kpi_cards(slug, tz)
        out["kpi_key"] = [v_eq, v_closed, tz]
        out["rows"], out["pos_status"] = position_rows(slug, v_pos, tz)
        out["pos_key"] = [v_pos, tz]
        out["figure"], out["cursor"] = equity_full(slug, v_eq, tz, theme)
    except SQLAlchemyError as exc:
        log.warning("destination %s: first render from the database failed (%s); callbacks will retry",
                    slug, type(exc).__name__)
        return {}
    return out


def position_rows(slug: str, v_pos: int, tz: str) -> tuple[list[dict[str, Any]], str]:
    """Open positions as grid rows (times in ``tz``) and the status line above the grid.

    A stored number that is not finite (NaN, infinity) is sent as an empty cell and counted in the
    status line, so a corrupt row is visible without breaking the page. Rows resting on stream fills
    not confirmed yet (``provisional_fills``) are counted there too; the grid tags their symbol.
    """
    v_pos = model().trusted(slug, "pos", v_pos)
    rows = model().open_positions(slug)
    out, bad = [], 0
    for r in rows:
        row = dict(r) | instrument_fields(r.get("symbol"))
        for key in ("entry_time", "mark_ts", "updated_at"):
            row[key] = fmt.local_time(row.get(key), tz)
        for key, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                row[key] = None
                bad += 1
        out.append(row)
    stale = sum(1 for r in rows if r.get("price_stale"))
    provisional = sum(1 for r in rows if (r.get("provisional_fills") or 0) > 0)
    status = f"{len(rows)} open · version {v_pos}" + (f" · {stale} stale price(s)" if stale else "") + (
        f" · {provisional} provisional (stream fills not yet confirmed)" if provisional else "")
    return out, status + (f" · ⚠ {bad} invalid stored value(s)" if bad else "")


def kpi_cards(slug: str, tz: str) -> list[Any]:
    return _kpi_cards(kpis.kpi_values(model(), slug, tz))


def equity_full(slug: str, v_eq: int, tz: str, theme: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The whole-curve equity figure of version ``v_eq`` and the cursor that live appends continue from."""
    m = model()
    v_eq = m.trusted(slug, "equity", v_eq)
    series = m.equity_series(slug)
    # the same for every visitor of this version: built once (cached as a plain dict: unpickling a
    # go.Figure re-validates it, ~30 ms a figure)
    figure = m.memo(("eq-figure", slug, v_eq, tz, theme), lambda: figures.plain(equity_figure(slug, tz, theme)))
    last_ns = int(series.ts_ns[-1]) if len(series) else 0
    return figure, {"last_ns": last_ns, "appended": 0, "tz": tz, "theme": theme, "v": v_eq,
                    "first_ns": series.first_ts_ns, "zoomed": False}


def secondary_sections() -> list[Any]:
    """Drawdown periods, monthly heatmap, daily P&L, P&L by symbol/reason, rolling, distribution."""
    return [
        section("Income & fees", html.Div(id="dest-income", className="ch-income")),
        dbc.Row(
            [
                dbc.Col(section("Drawdown periods (worst 10)", html.Div(id="dest-dd-table")), lg=6),
                dbc.Col(section("Monthly returns", graph("dest-monthly")), lg=6),
            ]
        ),
        section("Daily P&L", graph("dest-calendar")),
        dbc.Row(
            [
                dbc.Col(section("P&L by symbol", graph("dest-by-symbol")), lg=6),
                dbc.Col(section("P&L by exit reason", graph("dest-by-reason")), lg=6),
            ]
        ),
        dbc.Row(
            [
                dbc.Col(section("Rolling Sharpe and volatility", graph("dest-rolling")), lg=6),
                dbc.Col(section("Daily return distribution", graph("dest-dist")), lg=6),
            ]
        ),
    ]


def export_menu(slug: str) -> Any:
    """Downloads served by :mod:`dashboard.export` (times in the exchange zone unless the link says)."""
    base = f"/export/{slug}"
    items = [
        dbc.DropdownMenuItem("QuantStats tearsheet (HTML)", href=f"{base}/tearsheet.html", external_link=True,
                             target="_blank"),
        dbc.DropdownMenuItem("Static report (HTML)", href=f"{base}/report.html", external_link=True, target="_blank"),
        dbc.DropdownMenuItem(divider=True),
        dbc.DropdownMenuItem("Metrics (Excel)", href=f"{base}/metrics.xlsx", external_link=True),
        dbc.DropdownMenuItem("Open positions (CSV)", href=f"{base}/open_positions.csv", external_link=True),
        dbc.DropdownMenuItem("Equity series (CSV)", href=f"{base}/equity.csv", external_link=True),
        dbc.DropdownMenuItem("Activities (CSV)", href=f"{base}/activities.csv", external_link=True),
    ]
    return dbc.DropdownMenu(items, label="Export", size="sm", color="secondary", align_end=True,
                            id="dest-export-menu")


# --- computations (memoised per version) ------------------------------------------------------------


def _returns(slug: str, tz: str) -> tuple[pd.DataFrame, pd.Series]:
    """Calendar-day equity in ``tz`` (for day P&L) and per-session returns (for every metric)."""
    m = model()
    return m.daily_equity(slug, tz), m.session_returns(slug)


def _kpi_cards(k: dict[str, float | None]) -> list[Any]:
    return [
        kpi("Equity", fmt.money(k.get("equity"))),
        kpi("Day P&L", fmt.money(k.get("day_pl"), sign=True), tone=tone_of(k.get("day_pl")),
            sub=fmt.pct(k.get("day_return"), sign=True)),
        kpi("Total return", fmt.pct(k.get("total_return"), sign=True), tone=tone_of(k.get("total_return"))),
        kpi("CAGR", fmt.pct(k.get("cagr"), sign=True), tone=tone_of(k.get("cagr"))),
        kpi("Sharpe", fmt.num(k.get("sharpe"))),
        kpi("Smart Sharpe", fmt.num(k.get("smart_sharpe"))),
        kpi("Sortino", fmt.num(k.get("sortino"))),
        kpi("Calmar", fmt.num(k.get("calmar"))),
        kpi("Max drawdown", fmt.pct(k.get("max_drawdown")), tone="danger" if k.get("max_drawdown") else None,
            sub=f"now {fmt.pct(k.get('current_drawdown'))}"),
        kpi("Win rate", fmt.pct(k.get("win_rate"), decimals=1)),
        kpi("Profit factor", fmt.num(k.get("profit_factor"))),
        kpi("Expectancy", fmt.money(k.get("expectancy"), sign=True), tone=tone_of(k.get("expectancy"))),
        kpi("Trades", f"{int(trades):,}" if (trades := k.get("trades")) is not None else fmt.DASH),
    ]


def equity_figure(slug: str, tz: str, theme: str | None, start_ns: int | None = None,
                  end_ns: int | None = None) -> Any:
    w = model().equity_window(slug, start_ns, end_ns)
    if w["ts"].size == 0:
        return figures.empty("No equity history yet: once it runs, the manager writes a point every SNAPSHOT_SEC "
                             "in market hours (15 × that outside them).", theme, height=460)
    return figures.equity_underwater(
        fmt.ns_to_local_str(w["ts"], tz), w["equity"], fmt.ns_to_local_str(w["dd_ts"], tz), w["drawdown"],
        fmt.ns_to_local_str(w["flow_ts"], tz), w["flow"], w["flow_equity"], tz_label=fmt.tz_label(tz), theme=theme,
    )


def equity_tail(slug: str, after_ns: int) -> dict[str, np.ndarray]:
    """Raw equity/drawdown points strictly after ``after_ns`` (for live appends)."""
    series = model().equity_series(slug)
    start = int(np.searchsorted(series.ts_ns, after_ns, side="right"))
    return {"ts": series.ts_ns[start:], "equity": series.equity[start:], "drawdown": series.drawdown()[start:]}


def relayout_window(relayout: dict[str, Any] | None, tz: str) -> tuple[int | None, int | None] | None:
    """``(start_ns, end_ns)`` for a zoom/range-button event, ``(None, None)`` for autorange, else ``None``."""
    if not relayout:
        return None
    for axis in ("xaxis", "xaxis2"):
        lo, hi = relayout.get(f"{axis}.range[0]"), relayout.get(f"{axis}.range[1]")
        if lo is None and isinstance(relayout.get(f"{axis}.range"), list):
            lo, hi = relayout[f"{axis}.range"][:2]
        if lo is not None and hi is not None:
            return fmt.local_to_ns(str(lo), tz), fmt.local_to_ns(str(hi), tz)
        if relayout.get(f"{axis}.autorange"):
            return None, None
    return None



def equity_analytics(slug: str, v_eq: int, tz: str, theme: str | None) -> tuple[Any, ...]:
    """Drawdown table, monthly heatmap, daily calendar, rolling and distribution (plotly JSON, cacheable)."""
    label = fmt.tz_label(tz)
    v_eq = model().trusted(slug, "equity", v_eq)
    daily, returns = _returns(slug, tz)
    if returns.empty:
        msg = "Not enough equity history yet (two days are needed)."
        return (html.P(msg, className="text-body-secondary"),) + tuple(figures.plain(figures.empty(msg, theme))
                                                                       for _ in range(4))
    m = model()
    periods = m.memo(("ddp", slug, v_eq, tz), lambda: analytics.drawdown_periods(returns, 10))
    monthly = m.memo(("monthly", slug, v_eq, tz), lambda: analytics.monthly_table(returns))
    roll = m.memo(("rolling", slug, v_eq, tz), lambda: analytics.rolling(returns))
    day_pl = (daily["equity"].diff() - daily["net_deposits"].diff()).dropna()
    return (
        _periods_table(periods),
        figures.plain(figures.monthly_heatmap(monthly, theme) if not monthly.empty
                      else figures.empty("No monthly data", theme)),
        figures.plain(figures.daily_calendar(day_pl, theme)),
        figures.plain(figures.rolling(_local_index(roll[0].index, tz), roll[0].to_numpy(), roll[1].to_numpy(),
                                      window=analytics.ROLLING_WINDOW_DAYS, tz_label=label, theme=theme)
                      if len(roll[0])
                      else figures.empty(f"Rolling metrics need {analytics.ROLLING_WINDOW_DAYS} days", theme)),
        figures.plain(figures.distribution(returns.to_numpy(), theme)),
    )


def income_table(slug: str) -> Any:
    """The "Income & fees" breakdown: one line per kind with its count and signed total, then the net."""
    lines = kpis.income_lines(model(), slug)
    if not lines:
        return html.P("No dividends, interest or fees yet: they appear as the broker posts them.",
                      className="text-body-secondary mb-0")
    rows = [html.Tr([html.Td(line.label if line.is_pnl else [line.label, html.Small(" (not P&L)",
                                                                                  className="text-body-secondary")]),
                     html.Td(f"{line.count:,}", className="text-end text-body-secondary"),
                     html.Td(fmt.money(line.amount, sign=True),
                             className=f"text-end {'text-' + tone if (tone := tone_of(line.amount)) else ''}")],
                    id=f"dest-income-{line.key}")
            for line in lines]
    net = kpis.income_net(lines)
    rows.append(html.Tr([html.Th("Net income & fees"), html.Td(""),
                         html.Th(fmt.money(net, sign=True), className="text-end")], id="dest-income-net"))
    header = html.Thead(html.Tr([html.Th("Line"), html.Th("Activities", className="text-end"),
                                 html.Th("Amount", className="text-end")]))
    return dbc.Table([header, html.Tbody(rows)], size="sm", hover=True, responsive=True, className="mb-0")


def _local_index(index: pd.Index, tz: str) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(index)
    return (idx.tz_localize("UTC") if idx.tz is None else idx).tz_convert(tz).tz_localize(None)


def _periods_table(periods: pd.DataFrame) -> Any:
    if periods is None or periods.empty:
        return html.P("No drawdowns yet.", className="text-body-secondary")
    cols = list(periods.columns)
    header = html.Thead(html.Tr([html.Th(c.replace("_", " ").capitalize()) for c in cols]))
    body_rows = []
    for _, row in periods.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, pd.Timestamp):
                cells.append(html.Td(v.strftime("%Y-%m-%d")))
            elif isinstance(v, bool | np.bool_):
                cells.append(html.Td("yes" if v else "ongoing"))
            elif isinstance(v, float) and ("depth" in c or "drawdown" in c):
                cells.append(html.Td(fmt.pct(v), className="text-danger"))
            elif isinstance(v, float):
                cells.append(html.Td(fmt.num(v, 0)))
            else:
                cells.append(html.Td("ongoing" if v is None or v is pd.NaT else str(v)))
        body_rows.append(html.Tr(cells))
    return dbc.Table([header, html.Tbody(body_rows)], size="sm", hover=True, responsive=True, className="mb-0")
