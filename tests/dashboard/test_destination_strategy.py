"""The destination page's strategy filter and benchmark (dashboard.pages.destination_strategy) through
Flask's test client on a seeded PostgreSQL: mounted after the first render, every strategy's line equal
to SQL, one strategy's round trips equal to the seeding rule, the benchmark drawn and hidden."""

from __future__ import annotations

import json
from typing import Any

import pytest
from dash import Dash

from core.db import connect
from dashboard.components import fmt
from tests.dashboard.conftest import Seeded
from tests.dashboard.strategy_seed import expected_sql
from tests.dashboard.test_strategy_pages import N, _layout, _update
from tests.dashboard.test_strategy_pages import sapp as sapp  # the seeded app with SPY bars

OUTPUTS = [("dest-strat-kpis", "children"), ("dest-strat-growth", "figure"), ("dest-strat-table", "children"),
           ("dest-strat-note", "children"), ("dest-strat-shown", "data")]


@pytest.fixture
def client(sapp: Dash) -> Any:
    return sapp.server.test_client()


def _sql(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def _draw(client: Any, slug: str, key: str, bench: bool, changed: str = "dest-strat.value",
          shown: str | None = None) -> Any:
    inputs = [{"id": "dest-strat", "property": "value", "value": key},
              {"id": "dest-strat-bench", "property": "value", "value": bench},
              {"id": "theme-store", "property": "data", "value": "light"},
              {"id": "dest-strat-tick", "property": "n_intervals", "value": 1}]
    state = [{"id": "dest-slug", "property": "data", "value": slug},
             {"id": "dest-strat-shown", "property": "data", "value": shown}]
    return _update(client, OUTPUTS, inputs, state, [changed])


def _traces(body: dict[str, Any]) -> list[str]:
    return [t["name"] for t in body["dest-strat-growth"]["figure"]["data"]]


def test_mounted_after_the_first_render_with_the_strategies_here(sapp: Dash, client: Any, seeded: Seeded) -> None:
    slug = seeded.slugs[0]
    page = _layout(sapp, f"/destination/{slug}")
    assert "id='dest-strategy'" in page
    assert "dest-strat-growth" not in page  # nothing of it drawn in the first render
    resp = client.post("/_dash-update-component", json={  # one output: no "..a..b.." wrapping
        "output": "dest-strategy.children", "outputs": {"id": "dest-strategy", "property": "children"},
        "inputs": [{"id": "dest-defer", "property": "n_intervals", "value": 1}],
        "state": [{"id": "dest-slug", "property": "data", "value": slug}], "changedPropIds": ["dest-defer.n_intervals"]})
    assert resp.status_code == 200
    text = json.dumps(resp.get_json()["response"])
    for k in range(N):
        assert f'"value": "s{k}"' in text
    assert '"value": "unattributed"' in text
    assert "dest-strat-growth" in text


def test_every_strategy_account_against_the_benchmark(client: Any, seeded: Seeded) -> None:
    slug = seeded.slugs[0]
    resp = _draw(client, slug, "*", True)
    assert resp.status_code == 200
    body = resp.get_json()["response"]
    assert _traces(body) == ["Growth of $1", "SPY", "Drawdown vs SPY"]
    kpis = json.dumps(body["dest-strat-kpis"]["children"])
    assert "Beta vs SPY" in kpis
    assert "Alpha vs SPY" in kpis
    table = json.dumps(body["dest-strat-table"]["children"])
    sums = _sql(seeded.dsn, f"SELECT strategy, count(*), sum(net_pl) FROM ({expected_sql(slug, N)}) e GROUP BY 1")
    assert len(sums) == N + 1
    for name, count, pl in sums:
        assert f"/strategy/{name}" in table
        assert f"{count:,}" in table
        assert fmt.money(float(pl), sign=True) in table
    # the section's poll with nothing new answers 204; a changed version draws again
    shown = body["dest-strat-shown"]["data"]
    assert _draw(client, slug, "*", True, "dest-strat-tick.n_intervals", shown).status_code == 204
    assert _draw(client, slug, "*", True, "dest-strat-tick.n_intervals", "older").status_code == 200
    hidden = _draw(client, slug, "*", False).get_json()["response"]
    assert _traces(hidden) == ["Growth of $1", "Drawdown"]
    assert hidden["dest-strat-kpis"]["children"] == []


def test_one_strategy_narrows_round_trips_and_metrics(client: Any, seeded: Seeded) -> None:
    slug = seeded.slugs[1]
    resp = _draw(client, slug, "s2", True)
    assert resp.status_code == 200
    body = resp.get_json()["response"]
    expected = {t: float(pl) for t, s, pl, _f in _sql(seeded.dsn, expected_sql(slug, N)) if s == "s2"}
    grid = body["dest-strat-table"]["children"]["props"]["children"][1]["props"]
    assert grid["id"] == "dest-strat-trades"
    assert {r["trade_id"]: r["net_pl"] for r in grid["rowData"]} == pytest.approx(expected)
    table = json.dumps(body["dest-strat-table"]["children"])
    assert f"destination={slug}" in table
    kpis = json.dumps(body["dest-strat-kpis"]["children"])
    assert fmt.money(sum(expected.values()), sign=True) in kpis  # realized P&L of s2 here only
    assert "Beta vs SPY" in kpis
    assert "SPY" in _traces(body)
    assert _draw(client, slug, "no-such-strategy", True).status_code == 204
    assert _draw(client, "nope", "*", True).status_code == 204
