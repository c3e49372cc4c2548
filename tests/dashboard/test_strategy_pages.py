"""The strategies, strategy and comparison pages through Flask's test client on a seeded PostgreSQL:
layouts, callbacks (a destination narrowed, the benchmark toggled, an idle tick answering 204), CSV exports."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import dash
import pytest
from dash import Dash

from core.db import connect
from dashboard.app import create_app
from tests.dashboard.conftest import Seeded
from tests.dashboard.strategy_seed import expected_sql, seed_strategies

N = 4


@pytest.fixture
def sapp(seeded: Seeded) -> Iterator[Dash]:
    seed_strategies(seeded.dsn, seeded.settings, seeded.slugs, N)
    conn = connect(seeded.dsn)
    with conn, conn.cursor() as cur:
        cur.execute("""INSERT INTO public.benchmark_bars (symbol, day, open, high, low, close)
                       SELECT 'SPY', d::date, 1, 1, 1, 400 * exp(0.0003 * i + 0.01 * sin(i))
                       FROM generate_series(now() - interval '400 days', now(), interval '1 day') WITH ORDINALITY AS g(d, i)
                       WHERE extract(isodow FROM d) < 6""")
    conn.close()
    dash_app = create_app(seeded.settings, start_listener=False)
    yield dash_app
    dash_app.server.extensions["coldharbour"].model.dispose()


def _layout(app: Dash, path: str) -> str:
    with app.server.test_request_context(path):
        page = next(p for p in dash.page_registry.values()
                    if (p.get("path_template") and dash._pages._parse_path_variables(path, p["path_template"])
                        is not None) or p["path"] == path)
        variables = dash._pages._parse_path_variables(path, page["path_template"]) if page.get("path_template") else {}
        return json.dumps(page["layout"](**(variables or {})).to_plotly_json(), default=str)


def _update(client: Any, outputs: list[tuple[str, str]], inputs: list[dict[str, Any]],
            state: list[dict[str, Any]], changed: list[str]) -> Any:
    output = "...".join(f"{i}.{p}" for i, p in outputs)
    payload = {"output": f"..{output}..", "outputs": [{"id": i, "property": p} for i, p in outputs],
               "inputs": inputs, "state": state, "changedPropIds": changed}
    return client.post("/_dash-update-component", json=payload)


def test_layouts(sapp: Dash) -> None:
    text = _layout(sapp, "/strategies")
    for k in range(N):
        assert f"/strategy/s{k}" in text
    assert "unattributed" in text
    strat = _layout(sapp, "/strategy/s1")
    assert "strat-growth" in strat
    assert "Beta vs SPY" in strat
    assert "Unknown strategy" in _layout(sapp, "/strategy/nope")
    assert "cmp-items" in _layout(sapp, "/compare")


STRAT_OUTPUTS = [("strat-kpis", "children"), ("strat-growth", "figure"), ("strat-trades", "rowData"),
                 ("strat-open", "rowData"), ("strat-status", "children"), ("strat-bench-note", "children"),
                 ("strat-export-csv", "href"), ("strat-token", "data")]


def _strat_call(client: Any, dest: str, bench: bool, changed: str, token: str | None = None) -> Any:
    inputs = [{"id": "strat-dest", "property": "value", "value": dest},
              {"id": "strat-bench", "property": "value", "value": bench},
              {"id": "theme-store", "property": "data", "value": "light"},
              {"id": "strat-tick", "property": "n_intervals", "value": 1}]
    state = [{"id": "strat-name", "property": "data", "value": "s1"},
             {"id": "strat-token", "property": "data", "value": token}]
    return _update(client, STRAT_OUTPUTS, inputs, state, [changed])


def test_strategy_callback_narrows_to_a_destination(sapp: Dash, seeded: Seeded) -> None:
    client = sapp.server.test_client()
    slug = seeded.slugs[0]
    resp = _strat_call(client, slug, False, "strat-dest.value")
    assert resp.status_code == 200
    body = resp.get_json()["response"]
    rows = body["strat-trades"]["rowData"]
    assert rows
    assert {r["destination"] for r in rows} == {"Alpha Paper"}  # the destination's name, as everywhere
    assert body["strat-bench-note"]["children"] == "No benchmark"
    assert f"destination={slug}" in body["strat-export-csv"]["href"]
    # an idle tick with the same versions: nothing is sent again
    idle = _strat_call(client, slug, False, "strat-tick.n_intervals", body["strat-token"]["data"])
    assert idle.status_code == 204
    every = _strat_call(client, "*", True, "strat-dest.value").get_json()["response"]
    assert {r["destination"] for r in every["strat-trades"]["rowData"]} == {"Alpha Paper", "Beta Momentum"}
    assert every["strat-bench-note"]["children"] == "Benchmark: SPY"
    # a slug the client made up is refused without a query
    assert _strat_call(client, "nope", True, "strat-dest.value").status_code == 204


def test_strategy_trades_export_equals_sql(sapp: Dash, seeded: Seeded) -> None:
    client = sapp.server.test_client()
    resp = client.get("/strategy/s2/trades.csv")
    assert resp.status_code == 200
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    conn = connect(seeded.dsn)
    with conn, conn.cursor() as cur:
        cur.execute(" UNION ALL ".join(f"SELECT trade_id, net_pl FROM ({expected_sql(s, N)}) e WHERE strategy = 's2'"
                                       for s in seeded.slugs))
        expected = {t: float(pl) for t, pl in cur.fetchall()}
    conn.close()
    assert {r["trade_id"]: float(r["net_pl"]) for r in rows} == pytest.approx(expected)
    assert {r["strategy"] for r in rows} == {"s2"}
    assert client.get("/strategy/nope/trades.csv").status_code == 404
    summary = list(csv.DictReader(io.StringIO(client.get("/strategies/export.csv").get_data(as_text=True))))
    assert [r["name"] for r in summary][:N] == [f"s{k}" for k in range(N)]


def test_compare_callback_and_export(sapp: Dash, seeded: Seeded) -> None:
    client = sapp.server.test_client()
    items = [f"d:{seeded.slugs[0]}", "s:s0", "s:s3", "x:bogus"]
    inputs = [{"id": "cmp-items", "property": "value", "value": items},
              {"id": "cmp-bench", "property": "value", "value": "SPY"},
              {"id": "theme-store", "property": "data", "value": "dark"}]
    resp = _update(client, [("cmp-table", "children"), ("cmp-growth", "figure"), ("cmp-export-csv", "href")],
                   inputs, [], ["cmp-items.value"])
    assert resp.status_code == 200
    body = resp.get_json()["response"]
    names = [t["name"] for t in body["cmp-growth"]["figure"]["data"]]
    assert names == ["Alpha Paper", "s0 (strategy)", "s3 (strategy)", "Benchmark SPY"]
    exported = list(csv.DictReader(io.StringIO(client.get(body["cmp-export-csv"]["href"]).get_data(as_text=True))))
    assert [r["item"] for r in exported] == items[:3]
    assert all(r["beta"] not in ("", "nan") for r in exported)
