"""The dashboard on what a real account holds (issue 15, item 7): asset class and option contract
columns in the position and trade grids and their exports, the events on the trade drill-down, the
formatted lots table, and the "Income & fees" lines, on the real PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import date
from typing import Any

import openpyxl
import pytest
from dash import Dash

from core.db import connect
from dashboard import kpis
from dashboard.instrument_cols import INSTRUMENT_FIELDS, contract_label, instrument_fields, instrument_specs
from dashboard.pages import destination_view, trade
from dashboard.queries import ReadModel
from dashboard.trade_events import trade_events
from tests.dashboard.conftest import Seeded
from tests.dashboard.real_seed import (
    CRYPTO,
    CRYPTO_TRIP,
    EXPECTED_INCOME,
    EXPECTED_NET,
    OPTION,
    OPTION_TRIP,
    SPLIT_TRIP,
    seed_real,
)

SLUG = "alpha_paper"


@pytest.fixture
def real(seeded: Seeded) -> Seeded:
    seed_real(seeded.dsn, seeded.settings, SLUG)
    return seeded


@pytest.fixture
def model(app: Dash, real: Seeded) -> Iterator[ReadModel]:
    m: ReadModel = app.server.extensions["coldharbour"].model
    with app.server.test_request_context("/"):
        yield m


# --- one rule, two spellings -----------------------------------------------------------------------

SYMBOLS = ["AAPL", "BRK.B", OPTION, "SPY240229P00400500", "AB1240719P00001000", "aapl240719c00150000",
           "X230231C00010000",  # 31 February: core.instruments refuses it
           "AAPL240719C00000000",  # strike 0: refused
           "AAPL24071C0015",  # OCC-like but short: refused
           CRYPTO, "BTC/", "A/B/C", "BTCUSD", "", None]


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_sql_derivation_equals_core_instruments(db_dsn: str, symbol: str | None) -> None:
    specs = instrument_specs()
    select = ", ".join(f"{expr} AS {name}" for name, (expr, _kind) in specs.items())
    conn = connect(db_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"SELECT {select} FROM (SELECT %s::text AS symbol) AS t", (symbol,))
            row = cur.fetchone()
    finally:
        conn.close()
    assert row is not None
    got = {name: (v.isoformat() if isinstance(v, date) else float(v) if name in ("strike", "multiplier") and v
                  is not None else v) for name, v in zip(specs, row, strict=True)}
    assert got == instrument_fields(symbol)


def test_python_fields_and_label() -> None:
    assert instrument_fields(OPTION) == {"asset_class": "us_option", "underlying": "AAPL", "expiry": "2024-07-19",
                                         "right": "call", "strike": 150.0, "multiplier": 100.0}
    assert instrument_fields(CRYPTO)["asset_class"] == "crypto"
    assert contract_label(OPTION) == "Option · AAPL call 150 · exp 2024-07-19 · ×100"
    assert contract_label("X230231C00010000") == "Option (unreadable OCC symbol)"


# --- grids ---------------------------------------------------------------------------------------

def _block(model: ReadModel, filter_model: dict[str, Any], sort: list[dict[str, str]] | None = None
           ) -> list[dict[str, Any]]:
    request = {"startRow": 0, "endRow": 100, "sortModel": sort or [], "filterModel": filter_model}
    return list(model.closed_block(SLUG, request, "UTC")["rowData"])


def test_closed_grid_filters_and_sorts_the_derived_columns(model: ReadModel) -> None:
    options = _block(model, {"asset_class": {"filterType": "text", "type": "contains", "filter": "option"}})
    assert [r["trade_id"] for r in options] == [OPTION_TRIP]
    assert {k: options[0][k] for k in INSTRUMENT_FIELDS} == instrument_fields(OPTION)

    crypto = _block(model, {"asset_class": {"filterType": "text", "type": "equals", "filter": "crypto"}})
    assert [(r["trade_id"], r["multiplier"], r["underlying"]) for r in crypto] == [(CRYPTO_TRIP, 1.0, None)]

    by_expiry = _block(model, {"expiry": {"filterType": "date", "type": "equals", "dateFrom": "2024-07-19"}})
    by_strike = _block(model, {"strike": {"filterType": "number", "type": "greaterThan", "filter": 100}})
    assert [r["trade_id"] for r in by_expiry] == [r["trade_id"] for r in by_strike] == [OPTION_TRIP]

    # NULLs last ascending (PostgreSQL), so the one contract with an expiry leads
    first = _block(model, {}, [{"colId": "expiry", "sort": "asc"}])[0]
    assert first["trade_id"] == OPTION_TRIP
    equities = model.closed_block(SLUG, {"startRow": 0, "endRow": 1, "sortModel": [], "filterModel": {
        "asset_class": {"filterType": "text", "type": "equals", "filter": "us_equity"}}}, "UTC")
    assert equities["rowCount"] == 200 + 1  # the seeded trades and the split trip


def test_open_positions_carry_class_and_contract(model: ReadModel) -> None:
    rows, _status = destination_view.position_rows(SLUG, 0, "UTC")
    by_symbol = {r["symbol"]: r for r in rows}
    assert {k: by_symbol[OPTION][k] for k in INSTRUMENT_FIELDS} == instrument_fields(OPTION)
    assert by_symbol[CRYPTO]["asset_class"] == "crypto"
    assert by_symbol["AAPL"]["asset_class"] == "us_equity"
    assert by_symbol["AAPL"]["expiry"] is None


# --- the trade drill-down --------------------------------------------------------------------------

@pytest.mark.parametrize(("trade_id", "expected"), [
    (SPLIT_TRIP, ["SPLIT-1", "NC-1", "NC-2"]),  # held through a split under the old name, then renamed
    (OPTION_TRIP, ["20240719000000000::opexp-1"]),  # named by the lot its expiry closed
    (CRYPTO_TRIP, ["CFEE-1"]),  # the fee spelled BTCUSD; the USD fee after the exit is not this trip's
])
def test_trade_events(model: ReadModel, trade_id: str, expected: list[str]) -> None:
    t = model.trade(SLUG, trade_id)
    assert t is not None
    events = trade_events(model, SLUG, t)
    assert [e["activity_id"] for e in events] == expected
    labels = {e["activity_type"]: e["event"] for e in events}
    assert labels.get("SPLIT", "Split") == "Split"
    assert labels.get("NC", "Name change") == "Name change"


def _post(client: Any, outputs: list[str], inputs: list[dict[str, Any]], state: list[dict[str, Any]]
          ) -> dict[str, Any]:
    payload = {"output": outputs[0] if len(outputs) == 1 else ".." + "...".join(outputs) + "..",
               "outputs": [{"id": o.split(".")[0], "property": o.split(".")[1]} for o in outputs]
               if len(outputs) > 1 else {"id": outputs[0].split(".")[0], "property": outputs[0].split(".")[1]},
               "inputs": inputs, "state": state, "changedPropIds": ["trade-key.data"]}
    response = client.post("/_dash-update-component", json=payload)
    assert response.status_code == 200, response.data[:500]
    return dict(response.get_json()["response"])


def _trade_page(app: Dash, trade_id: str) -> dict[str, Any]:
    """What the trade page's two callbacks draw for one trip."""
    client = app.server.test_client()
    key: dict[str, Any] = {"id": "trade-key", "property": "data", "value": {"slug": SLUG, "trade_id": trade_id}}
    zone: list[dict[str, Any]] = [{"id": "tz-choice", "property": "value", "value": "utc"},
            {"id": "browser-tz", "property": "data", "value": None}]
    out = _post(client, ["trade-kpis.children", "trade-path.figure", "trade-fills.children", "trade-lots.children",
                         "trade-orders.children"],
                [key, {"id": "theme-store", "property": "data", "value": "light"}, *zone], [key])
    return out | _post(client, ["trade-events.children"], [key, *zone], [])


def _texts(node: Any) -> list[str]:
    """Every string in a rendered component tree, in order."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [t for n in node for t in _texts(n)]
    if isinstance(node, dict):
        return _texts(node.get("props", {}).get("children")) if "props" in node else []
    if hasattr(node, "to_plotly_json"):  # a component not yet serialised
        return _texts(getattr(node, "children", None))
    return []


def test_trade_page_formats_lots_and_lists_events(app: Dash, real: Seeded) -> None:
    out = _trade_page(app, SPLIT_TRIP)
    lots = _texts(out["trade-lots"]["children"])
    assert "True" not in lots
    assert "1000" not in lots
    assert {"Qty", "Entry px", "Gross P&L", "✓ known", "+$1,000.00", "100.00", "110.00"} <= set(lots)
    assert "2024-07-01 14:00:00" in lots  # local time (UTC chosen), not an ISO string with an offset
    events = _texts(out["trade-events"]["children"])
    assert events.count("Name change") == 2
    assert events.count("Split") == 1
    assert "10-for-1 forward split" in events
    assert "2-for-1 forward split" not in events

    crypto_lots = _texts(_trade_page(app, CRYPTO_TRIP)["trade-lots"]["children"])
    assert "0.4995" in crypto_lots
    assert "60,000.00" in crypto_lots


def test_trade_layout_names_the_contract(app: Dash, real: Seeded) -> None:
    with app.server.test_request_context(f"/destination/{SLUG}/trade/{OPTION_TRIP}"):
        text = json.dumps(trade.layout(SLUG, OPTION_TRIP).to_plotly_json(), default=str)
    assert "AAPL call 150 \\u00b7 exp 2024-07-19 \\u00b7 \\u00d7100" in text


# --- income and fees ------------------------------------------------------------------------------

def test_income_lines(model: ReadModel) -> None:
    lines = kpis.income_lines(model, SLUG)
    got = {line.key: (round(line.amount, 6), line.count) for line in lines}
    assert got == EXPECTED_INCOME  # the canceled dividend, deposits and fills count nothing
    assert round(kpis.income_net(lines), 6) == round(EXPECTED_NET, 6)
    assert [line.is_pnl for line in lines if line.key == "stock_journals"] == [False]
    card = _texts(destination_view.income_table(SLUG))
    assert {"Dividends", "Withholding", "Crypto fees (in the asset)", "Regulatory fees (TAF, REG, ORF, CAT)",
            "+$50.00", "\u2212$7.50", "\u2212$31.25", "+$200.00"} <= set(card)
    assert f"+${EXPECTED_NET:,.2f}" in card


# --- exports --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["closed_trades", "open_positions"])
def test_exports_carry_the_instrument_columns(app: Dash, real: Seeded, kind: str) -> None:
    client = app.server.test_client()
    key = "trade_id" if kind == "closed_trades" else "symbol"
    wanted = OPTION_TRIP if kind == "closed_trades" else OPTION
    response = client.get(f"/export/{SLUG}/{kind}.csv?tz=UTC")
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.data.decode())))
    header = list(rows[0])
    assert header[header.index("symbol") + 1: header.index("symbol") + 7] == list(INSTRUMENT_FIELDS)
    option = next(r for r in rows if r[key] == wanted)
    assert (option["asset_class"], option["underlying"], option["expiry"], option["right"]) == \
        ("us_option", "AAPL", "2024-07-19", "call")
    assert float(option["strike"]) == 150
    assert float(option["multiplier"]) == 100

    xlsx = client.get(f"/export/{SLUG}/{kind}.xlsx?tz=UTC")
    assert xlsx.status_code == 200
    sheet = openpyxl.load_workbook(io.BytesIO(xlsx.data), read_only=True).worksheets[0]
    table = [list(r) for r in sheet.iter_rows(values_only=True)]
    cols = {name: i for i, name in enumerate(table[0])}
    row = next(r for r in table[1:] if r[cols[key]] == wanted)
    assert row[cols["asset_class"]] == "us_option"
    assert row[cols["strike"]] == 150
    assert row[cols["expiry"]].date() == date(2024, 7, 19)  # a real date cell, not text


def test_metrics_export_has_the_income_lines(app: Dash, real: Seeded) -> None:
    response = app.server.test_client().get(f"/export/{SLUG}/metrics.csv")
    assert response.status_code == 200
    figures = dict(csv.reader(io.StringIO(response.data.decode())))
    assert float(figures["income.dividends"]) == 50.0
    assert float(figures["income.crypto_fees"]) == -31.25
