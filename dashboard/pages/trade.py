"""Trade drill-down: one round trip's fills and FIFO lots, the corporate-action and option events that
touched them, levels on the price path, holding time, P&L."""

from __future__ import annotations

import json
from typing import Any

import dash_bootstrap_components as dbc
import pandas as pd
from dash import Dash, Input, Output, State, dcc, html, no_update

from dashboard import analytics
from dashboard.components import figures, fmt
from dashboard.context import model, resolve_tz
from dashboard.instrument_cols import contract_label
from dashboard.pages.common import GRAPH_CONFIG, empty_state, graph_style, kpi, section, tone_of
from dashboard.trade_events import MAX_EVENTS, trade_events

PATH_TEMPLATE = "/destination/<slug>/trade/<trade_id>"
TITLE = "Trade"
MIN_EXCURSION_COVERAGE = 0.5  # MAE/MFE from bars covering less of the holding time would mislead
ID_SHOWN_CHARS = 14  # fill, lot and order ids are long: the cell shows their start, the tooltip all of it

# How each column of the fills, lots, orders and events tables is shown (anything else: as text).
TIME_COLUMNS = frozenset({"ts", "entry_time", "exit_time", "submitted_at", "filled_at"})
QTY_COLUMNS = frozenset({"qty", "filled_qty"})
PRICE_COLUMNS = frozenset({"price", "entry_price", "exit_price", "filled_avg_price", "limit_price", "stop_price"})
MONEY_COLUMNS = frozenset({"gross_pl", "net_pl", "fees", "net_amount"})
LABELS = {
    "open_fill_id": "Opened by", "close_fill_id": "Closed by", "fill_id": "Fill", "order_id": "Order",
    "parent_order_id": "Parent order", "qty": "Qty", "entry_time": "Entry", "exit_time": "Exit",
    "entry_price": "Entry px", "exit_price": "Exit px", "gross_pl": "Gross P&L", "price_known": "Price",
    "net_amount": "Net amount", "filled_qty": "Filled", "filled_avg_price": "Avg fill px", "ts": "Time",
    "activity_id": "Activity", "activity_type": "Code", "event": "Event",
}
BOOLEAN_WORDS = {"price_known": ("✓ known", "⚠ unknown (orphan lot)")}
LOT_COLUMNS = ("qty", "entry_time", "entry_price", "exit_time", "exit_price", "gross_pl", "price_known",
               "open_fill_id", "close_fill_id")
EVENT_COLUMNS = ("ts", "event", "activity_type", "symbol", "qty", "price", "net_amount", "description", "status")


def _f(x: Any) -> float | None:
    try:
        return float(x) if x is not None else None
    except (TypeError, ValueError):
        return None


def _points_to_fraction(x: float | None) -> float | None:
    """``return_pct`` is stored in percentage points (core.fifo); ``fmt.pct`` takes a fraction."""
    return None if x is None else x / 100


def layout(slug: str | None = None, trade_id: str | None = None, **_: Any) -> Any:
    m = model()
    dest = m.destination(slug or "")
    if dest is None:
        return empty_state(f"Unknown destination {slug!r}", html.Span(["Back to the ", dcc.Link("overview", href="/")]))
    trade = m.trade(dest.slug, trade_id or "")
    back = dcc.Link(f"← {dest.name}", href=f"/destination/{dest.slug}", className="small")
    if trade is None:
        return html.Div([back, empty_state(f"Trade {trade_id!r} not found",
                                           "It may have been rebuilt under a new id; pick it from the closed trades grid.")])
    return html.Div(
        [
            dcc.Store(id="trade-key", data={"slug": dest.slug, "trade_id": trade["trade_id"]}),
            back,
            html.H4([f"{trade['symbol']} ", html.Small(f"{trade['direction']} · {trade['trade_id']}",
                                                      className="text-body-secondary")], className="mt-2 mb-0"),
            html.Div(contract_label(trade["symbol"]), id="trade-instrument", className="text-body-secondary mb-3"),
            html.Div(id="trade-kpis", className="ch-kpi-grid mb-3"),
            section("Price path", dcc.Graph(id="trade-path", config=GRAPH_CONFIG, style=graph_style("trade-path"))),
            # full width: a lot has nine columns, two of them times, and must read without scrolling
            section("FIFO lots", html.Div(id="trade-lots")),
            section("Corporate actions and option events", html.Div(id="trade-events"),
                    html.Small("Splits, name changes, mergers, spinoffs, expiries, exercises, assignments and fees "
                               "in the asset that touched this trade's lots or its symbols while it was held.",
                               className="text-body-secondary")),
            section("Fills", html.Div(id="trade-fills")),
            section("Orders", html.Div(id="trade-orders")),
        ]
    )


def _cell(col: str, v: Any, tz: str) -> Any:
    """One table cell in the page's formats: local times, exact quantities, money, words for booleans."""
    numeric = col in QTY_COLUMNS | PRICE_COLUMNS | MONEY_COLUMNS
    if v is None or v == "":
        text: Any = fmt.DASH
    elif isinstance(v, bool) or col in BOOLEAN_WORDS:
        text = fmt.yes_no(v, *BOOLEAN_WORDS.get(col, ("✓ yes", "✗ no")))
    elif col in TIME_COLUMNS:
        text = fmt.local_time(v, tz)
    elif col in QTY_COLUMNS:
        text = fmt.qty(_f(v))
    elif col in PRICE_COLUMNS:
        text = fmt.num(_f(v))
    elif col in MONEY_COLUMNS:
        number = _f(v)
        tone = tone_of(number) if col != "fees" else None
        return html.Td(fmt.money(number, sign=col != "fees"),
                       className=f"text-end text-nowrap{' text-' + tone if tone else ''}")
    elif col.endswith("_id"):
        shown = str(v) if len(str(v)) <= ID_SHOWN_CHARS else str(v)[:ID_SHOWN_CHARS] + "…"
        return html.Td(html.Span(shown, title=str(v)), className="font-monospace small text-nowrap")
    else:
        text = str(v)
    return html.Td(text, className="text-end text-nowrap" if numeric else "text-nowrap" if col in TIME_COLUMNS
                   else None)


def _table(rows: list[dict[str, Any]], tz: str, empty: str, columns: tuple[str, ...] | None = None,
           table_id: str | None = None) -> Any:
    if not rows:
        return html.P(empty, className="text-body-secondary mb-0")
    present = {k for r in rows for k in r}
    # the preferred order first, then whatever else the rows carry (older rows, seeded data)
    cols = [c for c in columns or () if c in present] + [k for k in rows[0] if k not in (columns or ())]
    body = [html.Tr([_cell(c, r.get(c), tz) for c in cols]) for r in rows]
    numeric = QTY_COLUMNS | PRICE_COLUMNS | MONEY_COLUMNS
    header = html.Thead(html.Tr([html.Th(LABELS.get(c, c.replace("_", " ").capitalize()),
                                         className="text-end text-nowrap" if c in numeric else "text-nowrap")
                                 for c in cols]))
    return dbc.Table([header, html.Tbody(body)], size="sm", responsive=True, hover=True, className="mb-0",
                     id=table_id or "")


def _events_table(slug: str, t: dict[str, Any], tz: str) -> Any:
    events = trade_events(model(), slug, t)
    table = _table(events, tz, "No corporate action or option event touched this trade.", EVENT_COLUMNS,
                   table_id="trade-events-table")
    if len(events) >= MAX_EVENTS:
        return html.Div([table, html.Small(f"The first {MAX_EVENTS} events are shown.",
                                           className="text-body-secondary")])
    return table


def _price_bars(t: dict[str, Any]) -> list[dict[str, Any]]:
    """The symbol's one-minute bars over the holding time plus a margin each side (a tenth, >= 5 min)."""
    entry, exit_ = t.get("entry_time"), t.get("exit_time")
    if entry is None or exit_ is None:
        return []
    start, end = pd.Timestamp(entry), pd.Timestamp(exit_)
    pad = max((end - start) / 10, pd.Timedelta(minutes=5))
    return model().price_bars(str(t["symbol"]), (start - pad).to_pydatetime(), (end + pad).to_pydatetime())


def _excursion_card(t: dict[str, Any], bars: list[dict[str, Any]]) -> Any:
    """MAE/MFE: the stored figures when the manager wrote them, else measured on the price bars."""
    mae, mfe = _f(t.get("mae")), _f(t.get("mfe"))
    if mae is not None and mfe is not None:
        return kpi("MAE / MFE", f"{fmt.money(mae)} / {fmt.money(mfe)}")
    entry, exit_ = _f(t.get("entry_price")), _f(t.get("exit_price"))
    qty = _f(t.get("qty"))
    found = None
    if bars and None not in (entry, exit_, qty) and t.get("entry_time") and t.get("exit_time"):
        found = analytics.excursions(str(t.get("direction") or "long"), abs(qty or 0.0), entry or 0.0, exit_ or 0.0,
                                     pd.Timestamp(t["entry_time"]).value, pd.Timestamp(t["exit_time"]).value, bars)
    if found is None:
        return kpi("MAE / MFE", fmt.DASH, sub="no price history for this period")
    if found.coverage < MIN_EXCURSION_COVERAGE:
        return kpi("MAE / MFE", fmt.DASH,
                   sub=f"price history covers only {found.coverage:.0%} of the holding time")
    bars_text = "1 one-minute bar" if found.bars == 1 else f"{found.bars} one-minute bars"
    return kpi("MAE / MFE", f"{fmt.money(found.mae)} / {fmt.money(found.mfe)}",
               sub=f"{bars_text}, {found.coverage:.0%} of the holding time")


def _as_list(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = json.loads(value)
    return [dict(x) for x in value or [] if isinstance(x, dict)]


def register(app: Dash) -> None:
    @app.callback(
        Output("trade-kpis", "children"),
        Output("trade-path", "figure"),
        Output("trade-fills", "children"),
        Output("trade-lots", "children"),
        Output("trade-orders", "children"),
        Input("trade-key", "data"),
        Input("theme-store", "data"),
        Input("tz-choice", "value"),
        Input("browser-tz", "data"),
        State("trade-key", "data"),
    )
    def render(key: dict[str, str] | None, theme: str, tz_choice: str, browser_tz: str | None, _k: Any) -> Any:
        if not key:
            return (no_update,) * 5
        m = model()
        tz = resolve_tz(tz_choice, browser_tz)
        t = m.trade(key["slug"], key["trade_id"])
        if t is None:
            return (no_update,) * 5
        fills = _as_list(t.get("fills"))
        lots = _as_list(t.get("lots"))
        orders = m.trade_orders(key["slug"], [str(t.get("entry_order_id") or ""), str(t.get("exit_order_id") or "")])
        stop = next((o.get("stop_price") for o in orders if o.get("stop_price")), None)
        target = next((o.get("limit_price") for o in orders if o.get("order_type") == "limit" and o.get("parent_order_id")),
                      None)
        bars = _price_bars(t)
        net = _f(t.get("net_pl"))
        cards = [
            kpi("Net P&L", fmt.money(net, sign=True), tone=tone_of(net)),
            kpi("Gross P&L", fmt.money(_f(t.get("gross_pl")), sign=True)),
            kpi("Fees", fmt.money(_f(t.get("fees")))),
            kpi("Return", fmt.pct(_points_to_fraction(_f(t.get("return_pct"))), sign=True),
                tone=tone_of(_f(t.get("return_pct")))),
            kpi("Quantity", fmt.qty(_f(t.get("qty")))),
            kpi("Entry", fmt.num(_f(t.get("entry_price"))), sub=fmt.local_time(t.get("entry_time"), tz)),
            kpi("Exit", fmt.num(_f(t.get("exit_price"))), sub=fmt.local_time(t.get("exit_time"), tz)),
            kpi("Held", fmt.duration(_f(t.get("holding_s")))),
            kpi("Exit reason", str(t.get("exit_reason") or "—")),
            _excursion_card(t, bars),
        ]
        points = []
        for f in fills:
            if f.get("price") is None or f.get("ts") is None:
                continue
            points.append({"x": fmt.local_time(f["ts"], tz), "price": _f(f["price"]), "side": f.get("side", ""),
                           "qty": f.get("qty")})
        if not points:
            points = [
                {"x": fmt.local_time(t["entry_time"], tz), "price": _f(t["entry_price"]),
                 "side": "buy" if t["direction"] == "long" else "sell", "qty": _f(t["qty"])},
                {"x": fmt.local_time(t["exit_time"], tz), "price": _f(t["exit_price"]),
                 "side": "sell" if t["direction"] == "long" else "buy", "qty": _f(t["qty"])},
            ]
        levels = {"Entry": _f(t.get("entry_price")), "Exit": _f(t.get("exit_price")), "Stop": _f(stop),
                  "Take profit": _f(target)}
        path: dict[str, list[Any]] | None = None
        if bars:
            x = [fmt.local_time(b["ts"], tz) for b in bars]
            path = {"x": x, "close": [float(b["close"]) for b in bars], "high": [float(b["high"]) for b in bars],
                    "low": [float(b["low"]) for b in bars]}
        fig = figures.trade_path(points, levels, theme, tz_label=fmt.tz_label(tz), path=path)
        return (cards, fig, _table(fills, tz, "No fills recorded for this round trip.", table_id="trade-fills-table"),
                _table(lots, tz, "No lot detail recorded.", LOT_COLUMNS, table_id="trade-lots-table"),
                _table(orders, tz, "No matching orders ingested.", table_id="trade-orders-table"))

    # its own callback: the events read the raw activities, and a slow or failing read there must not
    # hold back (or blank) the trade's figures, path, fills and lots
    @app.callback(
        Output("trade-events", "children"),
        Input("trade-key", "data"),
        Input("tz-choice", "value"),
        Input("browser-tz", "data"),
    )
    def events(key: dict[str, str] | None, tz_choice: str, browser_tz: str | None) -> Any:
        t = model().trade(key["slug"], key["trade_id"]) if key else None
        if t is None or key is None:
            return no_update
        return _events_table(key["slug"], t, resolve_tz(tz_choice, browser_tz))
