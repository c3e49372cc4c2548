"""A standing hostile-input suite: whatever a client sends to a grid callback or an export, the answer
is 200 (or 204) or a 400 with a message, never a 500 with a traceback.

Hypothesis generates grid requests (paging, sort and filter models, time zones) from the shapes AG Grid
sends plus the values that broke the dashboard before (dates like 9999-12-31, numbers like 1e999999,
startRow=1e20, zones like ``America``/``posixrules``/``localtime``, lone surrogates, oversized or
deeply nested models, unregistered slugs); the tables below pin each finding down by name.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from dash import Dash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.export import export_url
from dashboard.export_formats import neutralise

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
OK, REFUSED = {200, 204}, {400}

NASTY_VALUES = ["9999-12-31", "0001-01-01", "2024-02-30", "1e999999", "-1e999999", "NaN", "Infinity", "\ud800",
                "America", "posixrules", "localtime", "%", "_", "\\", "x" * 600, "", " ", "\x00", "＝1+1"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**25), max_value=10**25),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), st.sampled_from(NASTY_VALUES),
)
column_ids = st.sampled_from(["trade_id", "symbol", "net_pl", "exit_time", "is_orphan", "qty", "holding_s",
                              "nope", "", "x;drop", "__proto__"])
operators = st.sampled_from(["contains", "notContains", "startsWith", "endsWith", "equals", "notEqual", "lessThan",
                             "greaterThan", "lessThanOrEqual", "greaterThanOrEqual", "inRange", "blank", "notBlank",
                             "bogus", None])
condition = st.fixed_dictionaries({
    "filterType": st.sampled_from(["text", "number", "date", "boolean", "set", None]), "type": operators,
    "filter": scalars, "filterTo": scalars, "dateFrom": scalars, "dateTo": scalars,
})
combined = st.fixed_dictionaries({"filterType": st.sampled_from(["text", "number", "date"]),
                                  "operator": st.sampled_from(["AND", "OR", "XOR"]),
                                  "conditions": st.lists(condition, max_size=12)})
filter_models = st.one_of(st.none(), st.dictionaries(column_ids, st.one_of(condition, combined), max_size=5),
                          scalars, st.lists(scalars, max_size=3))
sort_models = st.one_of(
    st.none(), scalars,
    st.lists(st.fixed_dictionaries({"colId": column_ids, "sort": st.sampled_from(["asc", "desc", "up", None])}),
             max_size=12),
)
rows = st.one_of(st.integers(min_value=-5, max_value=300), st.integers(min_value=10**8, max_value=10**22), scalars)
grid_requests = st.fixed_dictionaries({"startRow": rows, "endRow": rows, "sortModel": sort_models,
                                       "filterModel": filter_models})
zones = st.one_of(st.sampled_from(["UTC", "Asia/Tokyo", "America", "posixrules", "localtime", "Nowhere/City",
                                   "\ud800", "../../etc/passwd"]), st.text(max_size=12))


def closed_grid(client: Any, request: Any, *, slug: Any = "alpha_paper", choice: Any = "utc",
                browser_tz: Any = None) -> Any:
    payload = {
        "output": "dest-closed.getRowsResponse",
        "outputs": {"id": "dest-closed", "property": "getRowsResponse"},
        "inputs": [{"id": "dest-closed", "property": "getRowsRequest", "value": request}],
        "state": [{"id": "dest-slug", "property": "data", "value": slug},
                  {"id": "tz-choice", "property": "value", "value": choice},
                  {"id": "browser-tz", "property": "data", "value": browser_tz},
                  {"id": "dest-v-closed", "property": "data", "value": 1}],
        "changedPropIds": ["dest-closed.getRowsRequest"],
    }
    return client.post("/_dash-update-component", data=json.dumps(payload), content_type="application/json")


@FUZZ
@given(request=grid_requests, zone=zones)
def test_any_grid_request_is_answered_or_refused_never_a_500(app: Dash, request: Any, zone: Any) -> None:
    client = app.server.test_client()
    response = closed_grid(client, request, choice="local", browser_tz=zone)
    assert response.status_code in OK | REFUSED, response.get_data(as_text=True)[:300]
    if response.status_code == 400:
        assert response.get_data(as_text=True).strip()  # a message, not an empty page


@FUZZ
@given(sort=sort_models, filt=filter_models, zone=zones, columns=st.lists(column_ids, max_size=4),
       fmt=st.sampled_from(["csv", "xlsx"]))
def test_any_export_request_is_answered_or_refused_never_a_500(app: Dash, sort: Any, filt: Any, zone: Any,
                                                              columns: list[str], fmt: str) -> None:
    client = app.server.test_client()
    query = {"sort": json.dumps(sort), "filter": json.dumps(filt), "tz": zone, "columns": ",".join(columns)}
    # a raw client can send any bytes: lone surrogates travel as their UTF-8-like byte forms
    encoded = urlencode(query, errors="surrogatepass")
    with client.get(f"/export/alpha_paper/closed_trades.{fmt}", query_string=encoded) as response:
        body = response.get_data()  # a stream that fails half-way raises here
    assert response.status_code in OK | REFUSED, body[:300]


def _cond(kind: str, op: str, **values: Any) -> dict[str, Any]:
    return {"filterType": kind, "type": op, **values}


COSTLY = {"symbol": {"filterType": "text", "operator": "OR",
                     "conditions": [_cond("text", "contains", filter="x" * 500)] * 10},
          "exit_reason": {"filterType": "text", "operator": "OR",
                          "conditions": [_cond("text", "contains", filter="y" * 500)] * 10}}
DEEP: Any = {"filterType": "text", "type": "contains", "filter": "a"}
for _ in range(100):
    DEEP = {"operator": "AND", "conditions": [DEEP]}


@pytest.mark.parametrize(("request_", "message"), [
    ({"startRow": 0, "endRow": 10, "filterModel": {"exit_time": _cond("date", "equals", dateFrom="9999-12-31")}},
     "years"),
    ({"startRow": 0, "endRow": 10, "filterModel": {"net_pl": _cond("number", "greaterThan", filter="1e999999")}},
     "numbers must lie"),
    ({"startRow": 1e20, "endRow": 1e20 + 10}, "non-negative integer"),
    ({"startRow": 10**20, "endRow": 10**20 + 10}, "at most"),
    ({"startRow": 0, "endRow": 10, "filterModel": {"symbol": _cond("text", "contains", filter="\ud800")}},
     "surrogate"),
    ({"startRow": 0, "endRow": 10, "filterModel": COSTLY}, "at most"),
    ({"startRow": 0, "endRow": 10, "sortModel": [{"colId": "net_pl", "sort": "asc"}] * 1000}, "more than"),
    ({"startRow": 0, "endRow": 10, "filterModel": {"symbol": DEEP}}, "nested"),
])
def test_each_bad_grid_request_is_a_400_with_its_reason(app: Dash, request_: Any, message: str) -> None:
    response = closed_grid(app.server.test_client(), request_)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)


@pytest.mark.parametrize("zone", ["America", "posixrules", "localtime", "\ud800"])
def test_a_browser_zone_that_names_no_zone_falls_back_to_the_exchange_zone(app: Dash, zone: str) -> None:
    response = closed_grid(app.server.test_client(), {"startRow": 0, "endRow": 5}, choice="local", browser_tz=zone)
    assert response.status_code == 200
    assert response.get_json()["response"]["dest-closed"]["getRowsResponse"]["rowCount"] == 200


def test_an_unregistered_slug_is_a_400_in_a_callback(app: Dash) -> None:
    response = closed_grid(app.server.test_client(), {"startRow": 0, "endRow": 5}, slug="nope")
    assert response.status_code == 400
    assert "unknown destination" in response.get_data(as_text=True)


def test_json_nested_beyond_the_parser_is_a_400(app: Dash) -> None:
    body = '{"output": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = app.server.test_client().post("/_dash-update-component", data=body, content_type="application/json")
    assert response.status_code == 400


def test_a_request_body_past_the_size_limit_is_a_413(app: Dash) -> None:
    body = json.dumps({"output": "x", "pad": "y" * (3 * 1024 * 1024)})
    response = app.server.test_client().post("/_dash-update-component", data=body, content_type="application/json")
    assert response.status_code == 413


@pytest.mark.parametrize(("query", "message"), [
    ({"tz": "America"}, "unknown time zone"),
    ({"tz": "posixrules"}, "unknown time zone"),
    ({"tz": "localtime"}, "unknown time zone"),
    ({"filter": json.dumps({"exit_time": _cond("date", "lessThan", dateFrom="9999-12-31")})}, "years"),
    ({"filter": json.dumps({"net_pl": _cond("number", "equals", filter="1e999999")})}, "numbers must lie"),
    ({"filter": json.dumps({"symbol": _cond("text", "equals", filter="\ud800")})}, "surrogate"),
    ({"filter": json.dumps(COSTLY)}, "at most"),
    ({"filter": "[" * 5000 + "]" * 5000}, "JSON"),
    ({"sort": json.dumps([{"colId": "net_pl", "sort": "asc"}] * 100)}, "more than"),
    ({"sort": json.dumps([{"colId": "net_pl", "sort": "asc"}] * 1000)}, "too long"),
])
def test_each_bad_export_request_is_a_400_with_its_reason(app: Dash, query: dict[str, str], message: str) -> None:
    encoded = urlencode(query, errors="surrogatepass")
    response = app.server.test_client().get("/export/alpha_paper/closed_trades.csv", query_string=encoded)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)


def test_an_unregistered_slug_is_a_404_in_an_export(app: Dash) -> None:
    assert app.server.test_client().get(export_url("nope", "closed_trades")).status_code == 404


@pytest.mark.parametrize(("text", "expected"), [
    ("=1", "'=1"), ("+1", "'+1"), ("-1", "'-1"), ("@x", "'@x"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    (" =1", "' =1"), ("\u00a0=1", "'\u00a0=1"), ("\ufeff=1", "'\ufeff=1"), ("\n=1", "'\n=1"), ("\u3000+1", "'\u3000+1"),
    ("＝1+1", "'＝1+1"), ("＋1", "'＋1"), ("－1", "'－1"), ("＠x", "'＠x"),
    ("a=1", "a=1"), ("", ""), ("1", "1"), (" x", " x"), ("AAPL", "AAPL"),
])
def test_formula_neutralisation_sees_past_leading_space_and_fullwidth_signs(text: str, expected: str) -> None:
    assert neutralise(text) == expected


def test_orders_search_is_length_limited_and_literal(app: Dash, seeded: Any) -> None:
    model = app.server.extensions["coldharbour"].model
    with app.server.test_request_context("/"):
        everything = model.orders("alpha_paper", "")
        assert everything  # the seed has orders
        assert model.orders("alpha_paper", "%") == []  # a literal percent sign: no order id holds one
        assert model.orders("alpha_paper", "_") == []
        with pytest.raises(ValueError, match="limited to 100"):
            model.orders("alpha_paper", "a" * 101)
