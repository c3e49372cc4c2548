"""CSV exports of the strategy pages: the strategies' summary, a strategy's round trips, a comparison.

- ``/strategies/export.csv``: one line per strategy, the figures of its card;
- ``/strategy/<key>/trades.csv[?destination=<slug>]``: every round trip of the strategy (all of them,
  not the grid's newest 500), with its destination and strategy;
- ``/compare/export.csv?items=d:<slug>,s:<key>&benchmark=SPY``: the comparison page's metrics table.

Behind the same sign-in as every route (``dashboard.auth``); text cells are neutralised against
spreadsheet formulas (:func:`dashboard.export_formats.neutralise`). An unknown strategy is a 404.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

import flask
import pandas as pd
from dash import Dash

from dashboard import strategy_queries as sq
from dashboard.context import model
from dashboard.export_formats import neutralise

TRADE_FIELDS = ("trade_id", "strategy", "destination", "symbol", "direction", "qty", "entry_time", "exit_time",
                "entry_price", "exit_price", "gross_pl", "fees", "net_pl", "return_pct", "holding_s", "exit_reason",
                "entry_order_id", "exit_order_id")
SUMMARY_FIELDS = ("name", "destinations", "realized_pl", "unrealized_pl", "fees", "trades", "win_rate",
                  "profit_factor", "total_return", "cagr", "sharpe", "sortino", "max_drawdown", "volatility",
                  "open_positions", "gross_exposure")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, list | tuple):
        value = " ".join(str(v) for v in value)
    return neutralise(str(value))


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]], filename: str) -> flask.Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return flask.Response(buffer.getvalue(), mimetype="text/csv",
                          headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                   "Cache-Control": "no-store"})


def register_exports(app: Dash) -> None:
    server = app.server

    def summary() -> flask.Response:
        from dashboard.pages.strategies import card_values

        rows = card_values(model())
        return _csv(SUMMARY_FIELDS, ([r.get(f) for f in SUMMARY_FIELDS] for r in rows), "strategies.csv")

    def trades(key: str) -> flask.Response:
        from dashboard.pages.strategy import find

        m = model()
        found = find(m, key)
        destination = flask.request.args.get("destination") or None
        if found is None or (destination is not None and m.destination(destination) is None):
            return flask.Response("unknown strategy or destination\n", status=404, mimetype="text/plain")
        closed, _held, _book = sq.book_for(m, [d.slug for d in m.destinations()], found.name, destination)
        frame = closed.reindex(columns=list(TRADE_FIELDS)).copy()
        for col in ("entry_time", "exit_time"):
            frame[col] = pd.DatetimeIndex(frame[col]).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
        for col in ("trade_id", "strategy", "destination", "symbol", "direction", "exit_reason"):
            frame[col] = frame[col].map(lambda v: neutralise(v) if isinstance(v, str) else v)
        body = frame.to_csv(index=False, lineterminator="\r\n", float_format=None)
        return flask.Response(body, mimetype="text/csv",
                              headers={"Content-Disposition": f'attachment; filename="{found.key}_trades.csv"',
                                       "Cache-Control": "no-store"})

    def comparison() -> flask.Response:
        from dashboard.pages.compare import COLUMNS, MAX_ITEMS, compare_rows

        items = [i for i in flask.request.args.get("items", "").split(",") if i][:MAX_ITEMS]
        symbol = (flask.request.args.get("benchmark") or "").strip().upper()[:21] or None
        rows, _curves = compare_rows(model(), items, symbol)
        keys = [k for k, _label, _fmt in COLUMNS]
        return _csv(["item", "label", *keys], ([r["item"], r["label"], *[r.get(k) for k in keys]] for r in rows),
                    "compare.csv")

    server.add_url_rule("/strategies/export.csv", "ch_strategies_export", summary, methods=["GET"])
    server.add_url_rule("/strategy/<key>/trades.csv", "ch_strategy_trades_export", trades, methods=["GET"])
    server.add_url_rule("/compare/export.csv", "ch_compare_export", comparison, methods=["GET"])
