"""The activities page: both grids server-side paged, refreshes bounded, non-trade activities labelled."""

from __future__ import annotations

from typing import Any

import pytest
from dash import Dash

from core.db import connect
from core.schema import quote_ident
from dashboard.pages import activities
from tests.dashboard.conftest import Seeded


def _update(client: Any, grid_id: str, request: dict[str, Any], *, search: str | None = None,
            slug: str = "alpha_paper") -> Any:
    state: list[dict[str, Any]] = [{"id": "act-dest", "property": "value", "value": slug}]
    if grid_id == "act-orders":
        state.append({"id": "act-search", "property": "value", "value": search})
    state += [{"id": "tz-choice", "property": "value", "value": "utc"},
              {"id": "browser-tz", "property": "data", "value": None}]
    payload = {"output": f"{grid_id}.getRowsResponse", "outputs": {"id": grid_id, "property": "getRowsResponse"},
               "inputs": [{"id": grid_id, "property": "getRowsRequest", "value": request}], "state": state,
               "changedPropIds": [f"{grid_id}.getRowsRequest"]}
    return client.post("/_dash-update-component", json=payload)


def _block(client: Any, grid_id: str, request: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    response = _update(client, grid_id, request, **kwargs)
    assert response.status_code == 200, response.data[:500]
    return dict(response.get_json()["response"][grid_id]["getRowsResponse"])


def _request(start: int, end: int, sort: str, filter_model: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"startRow": start, "endRow": end, "sortModel": [{"colId": sort, "sort": "desc"}],
            "filterModel": filter_model or {}}


@pytest.mark.parametrize(("code", "label"), [
    ("FILL", "Fill"), ("DIV", "Dividend"), ("DIVWH", "Dividend withholding"), ("CFEE", "Crypto fee"),
    ("FEE", "Regulatory fee"), ("CSD", "Cash deposit"), ("SPLIT", "Stock split"), ("SPIN", "Spinoff"),
    ("NC", "Name change"), ("MA", "Merger / acquisition"), ("OPEXP", "Option expiry"),
    ("OPASN", "Option assignment"), ("OPEXC", "Option exercise"), ("OPTRD", "Option exercise/assignment shares"),
    ("INT", "Interest"), ("NOT_A_CODE", "NOT_A_CODE"),
])
def test_type_label(code: str, label: str) -> None:
    assert activities.type_label(code) == label


NON_TRADE = [
    # id, type, symbol, qty, price, net amount, description
    ("N1", "DIV", "AAPL", 40, None, 9.6, "Cash DIV @ 0.24"),
    ("N2", "CFEE", "BTC/USD", -0.00001234, 97000.5, 0, "Crypto fee on fill"),
    ("N3", "OPEXP", "AAPL250117C00200000", -1, None, 0, "Option Expiry"),
    ("N4", "SPLIT", "NVDA", 30, 12.5, 0, "Split 4:1"),
]


def _insert_non_trade(seeded: Seeded) -> None:
    schema = quote_ident(seeded.settings.account_schema)
    conn = connect(seeded.dsn)
    try:
        with conn, conn.cursor() as cur:
            for k, (aid, kind, symbol, qty, price, amount, text) in enumerate(NON_TRADE):
                cur.execute(
                    f"""INSERT INTO {schema}.activities (destination, activity_id, ts, activity_type, symbol, qty,
                                                         price, net_amount, description, raw)
                        VALUES ('alpha_paper', %s, now() + %s * interval '1 minute', %s, %s, %s, %s, %s, %s, '{{}}')""",
                    (aid, k + 1, kind, symbol, qty, price, amount, text),
                )
            cur.execute("UPDATE public.ch_versions SET activity_version = activity_version + 1 WHERE slug = 'alpha_paper'")
    finally:
        conn.close()


def test_non_trade_activities_show_their_label_symbol_qty_amount_and_description(app: Dash, seeded: Seeded) -> None:
    # Arrange
    _insert_non_trade(seeded)
    client = app.server.test_client()

    # Act: the newest four, then a server-side filter on the label
    newest = _block(client, "act-grid", _request(0, 4, "ts"))["rowData"]
    dividends = _block(client, "act-grid", _request(0, 50, "ts", {"type_label": {
        "filterType": "text", "type": "contains", "filter": "dividend"}}))

    # Assert
    shown = [(r["activity_id"], r["type_label"], r["symbol"], r["qty"], r["price"], r["net_amount"], r["description"])
             for r in newest]
    expected = [(aid, activities.type_label(kind), symbol, qty, price, amount, text)
                for aid, kind, symbol, qty, price, amount, text in reversed(NON_TRADE)]
    assert shown == expected
    assert dividends["rowCount"] == 1
    assert dividends["rowData"][0]["activity_type"] == "DIV"


def test_orders_are_a_paged_server_side_grid_with_search(app: Dash, seeded: Seeded) -> None:
    # Arrange: the seed holds 200 orders for alpha_paper
    client = app.server.test_client()

    # Act
    first = _block(client, "act-orders", _request(0, activities.BLOCK_ROWS, "submitted_at"))
    second = _block(client, "act-orders", _request(activities.BLOCK_ROWS, 2 * activities.BLOCK_ROWS,
                                                   "submitted_at"))
    searched = _block(client, "act-orders", _request(0, 100, "submitted_at"), search="cli-17")
    percent = _block(client, "act-orders", _request(0, 100, "submitted_at"), search="%")
    too_long = _update(client, "act-orders", _request(0, 100, "submitted_at"), search="x" * 101)

    # Assert: one block at a time, newest first, no row twice
    assert first["rowCount"] == second["rowCount"] == 200
    assert len(first["rowData"]) == len(second["rowData"]) == activities.BLOCK_ROWS
    ids = [r["order_id"] for r in first["rowData"] + second["rowData"]]
    assert len(set(ids)) == 200
    times = [r["submitted_at"] for r in first["rowData"] + second["rowData"]]
    assert times == sorted(times, reverse=True)
    assert {r["client_order_id"] for r in searched["rowData"]} == {"cli-17", *(f"cli-17{d}" for d in range(10))}
    assert searched["rowCount"] == 11
    assert percent["rowCount"] == 0  # literal: no order holds a percent sign
    assert too_long.status_code == 400


def test_the_page_holds_no_full_table_and_refreshes_boundedly(app: Dash, seeded: Seeded) -> None:
    # Arrange / Act
    with app.server.test_request_context("/activities"):
        page = activities.layout()

    # Assert: both lists are infinite-row-model grids (only the blocks in view live in the browser)
    def walk(node: Any) -> list[Any]:
        kids = getattr(node, "children", None)
        kids = kids if isinstance(kids, list) else [kids] if kids is not None else []
        return [node, *[n for k in kids for n in walk(k)]]

    nodes = {getattr(n, "id", None): n for n in walk(page)}
    for grid_id in ("act-grid", "act-orders"):
        assert nodes[grid_id].rowModelType == "infinite"
    assert not [n for n in walk(page) if type(n).__name__ in ("Table", "Tbody", "Tr")]
    assert nodes["act-tick"].interval >= activities.REFRESH_MIN_S * 1000
