"""The app factory, its routes and callbacks through Flask's test client (no browser)."""

from __future__ import annotations

import json
import re
from typing import Any

import pandas as pd
import pytest
from dash import Dash

from core.db import connect
from core.settings import Settings
from dashboard.app import create_app
from tests.dashboard.conftest import Seeded
from tests.dashboard.seed import simulate_fill


def _update(client: Any, output: str, outputs: Any, inputs: list[dict[str, Any]], state: list[dict[str, Any]],
            changed: list[str]) -> Any:
    payload = {"output": output, "outputs": outputs, "inputs": inputs, "state": state, "changedPropIds": changed}
    return client.post("/_dash-update-component", json=payload)


def test_healthz_reports_database_and_heartbeats(app: Dash) -> None:
    response = app.server.test_client().get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["database"]["ok"] is True
    assert body["destinations"] == 2
    assert {(w["destination"], w["service"]) for w in body["workers"]} >= {("alpha_paper", "ingester")}
    assert all(w["age_s"] is not None for w in body["workers"])


def test_healthz_is_503_without_database(tmp_path) -> None:
    settings = Settings(postgresql_live_conn_string="postgresql://nobody@127.0.0.1:1/none",
                        db_connect_timeout_s=1, data_dir=str(tmp_path))
    app = create_app(settings, start_listener=False)
    response = app.server.test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["database"]["ok"] is False
    assert "nobody" not in response.get_data(as_text=True)


def test_every_asset_is_served_locally(app: Dash) -> None:
    client = app.server.test_client()
    html = client.get("/").get_data(as_text=True)
    urls = re.findall(r'(?:href|src)="([^"]+)"', html)
    assert urls, html[:500]
    assert not [u for u in urls if u.startswith(("http:", "https:", "//"))]
    css = client.get("/_vendor/bootstrap.min.css")
    assert css.status_code == 200
    assert b"Bootstrap" in css.data[:200]
    assert client.get("/_vendor/../app.py").status_code == 404
    assert "cdn" not in json.dumps(client.get("/_dash-layout").get_json()).lower()


@pytest.mark.parametrize("path", ["/", "/destination/alpha_paper", "/destination/alpha_paper/trade/T0000001",
                                  "/activities", "/health", "/destination/nope"])
def test_pages_render_their_layout(app: Dash, path: str) -> None:
    import dash

    with app.server.test_request_context(path):
        page = next(p for p in dash.page_registry.values()
                    if (p.get("path_template") and dash._pages._parse_path_variables(path, p["path_template"])
                        is not None) or p["path"] == path)
        variables = dash._pages._parse_path_variables(path, page["path_template"]) if page.get("path_template") else {}
        layout = page["layout"](**(variables or {}))
    text = json.dumps(layout.to_plotly_json(), default=str)
    if path == "/destination/nope":
        assert "Unknown destination" in text
    elif path.startswith("/destination/alpha_paper/trade"):
        assert "T0000001" in text
    elif path.startswith("/destination"):
        assert "dest-closed" in text
        assert "dest-positions" in text


def test_empty_database_explains_what_to_do(db_dsn: str, settings: Settings) -> None:
    import dash

    app = create_app(settings, start_listener=False)
    with app.server.test_request_context("/destination/x"):
        page = dash.page_registry["dashboard.pages.destination"]
        text = json.dumps(page["layout"](slug="x").to_plotly_json(), default=str)
    assert "No destinations configured" in text
    assert "destinations.toml" in text


def test_poll_answers_no_update_until_a_version_moves(app: Dash, seeded: Seeded) -> None:
    client = app.server.test_client()
    client.get("/")  # first request finalises the callback map
    outputs = [{"id": "dest-v-pos", "property": "data"}, {"id": "dest-v-closed", "property": "data"},
               {"id": "dest-v-equity", "property": "data"}]
    output = "..dest-v-pos.data...dest-v-closed.data...dest-v-equity.data.."
    inputs = [{"id": "dest-tick", "property": "n_intervals", "value": 3},
              {"id": "sse-hint", "property": "data", "value": None}]

    def state(pos: int) -> list[dict[str, Any]]:
        return [{"id": "dest-slug", "property": "data", "value": "alpha_paper"},
                {"id": "dest-v-pos", "property": "data", "value": pos},
                {"id": "dest-v-closed", "property": "data", "value": 1},
                {"id": "dest-v-equity", "property": "data", "value": 1}]

    unchanged = _update(client, output, outputs, inputs, state(1), ["dest-tick.n_intervals"])
    assert unchanged.status_code == 204, unchanged.get_data(as_text=True)[:300]
    simulate_fill(seeded.dsn, "alpha_paper", "NEWX")
    changed = _update(client, output, outputs, inputs, state(1), ["dest-tick.n_intervals"])
    assert changed.status_code == 200
    body = changed.get_json()["response"]
    assert body == {"dest-v-pos": {"data": 2}}


def test_positions_and_closed_grid_callbacks(app: Dash) -> None:
    client = app.server.test_client()
    client.get("/")
    tz = [{"id": "tz-choice", "property": "value", "value": "utc"},
          {"id": "browser-tz", "property": "data", "value": None}]
    positions = _update(
        client, "..dest-positions.rowData...dest-pos-status.children...dest-pos-key.data..",
        [{"id": "dest-positions", "property": "rowData"}, {"id": "dest-pos-status", "property": "children"},
         {"id": "dest-pos-key", "property": "data"}],
        [{"id": "dest-v-pos", "property": "data", "value": 1}, *tz],
        [{"id": "dest-slug", "property": "data", "value": "alpha_paper"},
         {"id": "dest-pos-key", "property": "data", "value": None}], ["dest-v-pos.data"],
    ).get_json()["response"]
    assert positions["dest-pos-key"]["data"] == [1, "UTC"]
    rows = positions["dest-positions"]["rowData"]
    assert {r["symbol"] for r in rows} == {"AAPL", "MSFT", "NVDA", "AMZN"}
    assert "1 stale" in positions["dest-pos-status"]["children"]

    request = {"startRow": 0, "endRow": 100, "sortModel": [{"colId": "net_pl", "sort": "asc"}], "filterModel": {}}
    block = _update(
        client, "dest-closed.getRowsResponse", {"id": "dest-closed", "property": "getRowsResponse"},
        [{"id": "dest-closed", "property": "getRowsRequest", "value": request}],
        [{"id": "dest-slug", "property": "data", "value": "alpha_paper"}, *[{**t} for t in tz],
         {"id": "dest-v-closed", "property": "data", "value": 1}],
        ["dest-closed.getRowsRequest"],
    )
    data = block.get_json()["response"]["dest-closed"]["getRowsResponse"]
    assert data["rowCount"] == 200
    assert len(data["rowData"]) == 100
    pls = [r["net_pl"] for r in data["rowData"]]
    assert pls == sorted(pls)
    assert len(block.data) < 300_000


def test_kpis_and_charts_compute_from_core_metrics(app: Dash) -> None:
    from dashboard.kpis import kpi_values
    from dashboard.pages.destination_view import equity_figure

    model = app.server.extensions["coldharbour"].model
    with app.server.test_request_context("/"):
        values = kpi_values(model, "alpha_paper", "America/New_York")
        figure = equity_figure("alpha_paper", "UTC", "dark")
    for key in ("equity", "sharpe", "smart_sharpe", "sortino", "cagr", "max_drawdown", "win_rate", "profit_factor"):
        assert values[key] is not None, key
    assert values["trades"] == 200
    assert values["max_drawdown"] < 0
    assert len(figure.data[0].x) <= 2000
    assert figure.layout.template.layout.paper_bgcolor is not None


def test_export_menu_links_resolve(app: Dash) -> None:
    import dash

    with app.server.test_request_context("/destination/alpha_paper"):
        layout = dash.page_registry["dashboard.pages.destination"]["layout"](slug="alpha_paper")
    text = json.dumps(layout.to_plotly_json(), default=str)
    links = sorted(set(re.findall(r"['\"](/export/alpha_paper/[a-z_]+\.(?:csv|xlsx))", text)))
    assert {"/export/alpha_paper/closed_trades.csv", "/export/alpha_paper/metrics.xlsx"} <= set(links)
    client = app.server.test_client()
    for link in links:
        with client.get(link) as response:  # a WSGI server closes each response: its export slot comes back
            assert response.status_code == 200, link
            assert len(response.data) > 20, link


def _callback_output(client: Any, input_ids: list[str]) -> tuple[str, list[dict[str, str]]]:
    """The callback key (``output``) and ``outputs`` of the callback with these input ids, as the renderer
    sends them (``allow_duplicate`` outputs carry an ``@hash`` suffix)."""
    deps = client.get("/_dash-dependencies").get_json()
    output = next(d["output"] for d in deps if [i["id"] for i in d["inputs"]] == input_ids)
    outs = [{"id": o.rsplit(".", 1)[0], "property": o.rsplit(".", 1)[1]} for o in output.strip(".").split("...")]
    return output, outs


def _equity_call(client: Any, relayout: Any, changed: str, cursor: Any = None, version: int = 1) -> Any:
    state = [{"id": "dest-slug", "property": "data", "value": "alpha_paper"},
             {"id": "dest-eq-cursor", "property": "data", "value": cursor}]
    if changed == "dest-equity.relayoutData":  # zoom: its own callback (see destination.register)
        output, outs = _callback_output(client, ["dest-equity"])
        return _update(client, output, outs,
                       [{"id": "dest-equity", "property": "relayoutData", "value": relayout}],
                       [{"id": "tz-choice", "property": "value", "value": "utc"},
                        {"id": "browser-tz", "property": "data", "value": None}, *state], [changed])
    return _update(
        client, "..dest-equity.figure...dest-eq-cursor.data..",
        [{"id": "dest-equity", "property": "figure"}, {"id": "dest-eq-cursor", "property": "data"}],
        [{"id": "dest-v-equity", "property": "data", "value": version},
         {"id": "theme-store", "property": "data", "value": "light"},
         {"id": "tz-choice", "property": "value", "value": "utc"},
         {"id": "browser-tz", "property": "data", "value": None}],
        state, [changed],
    )


def test_zoom_refines_the_chart_with_a_patch(app: Dash, seeded: Seeded) -> None:
    client = app.server.test_client()
    client.get("/")
    full = _equity_call(client, None, "dest-v-equity.data").get_json()["response"]["dest-equity"]["figure"]
    assert len(full["data"][0]["x"]) <= 2000
    first, last = full["data"][0]["x"][0], full["data"][0]["x"][-1]
    # zoom into the first tenth of the curve: a Patch of the trace arrays, at full resolution there
    lo = first[:19].replace("T", " ")
    hi = str(pd.Timestamp(first) + (pd.Timestamp(last) - pd.Timestamp(first)) / 10)
    zoom = {"xaxis.range[0]": lo, "xaxis.range[1]": hi}
    patch = _equity_call(client, zoom, "dest-equity.relayoutData").get_json()["response"]["dest-equity"]["figure"]
    assert patch["__dash_patch_update"] == "__dash_patch_update"
    ops = {tuple(op["location"]): op["params"]["value"] for op in patch["operations"]}
    xs = ops[("data", 0, "x")]
    assert 150 <= len(xs) <= 2000  # 2000 points over the whole year -> ~200 in a tenth: now all of them
    assert xs[0] >= lo[:10]
    assert xs[-1][:10] <= hi[:10]
    # double-click (autorange) goes back to the whole curve
    reset = _equity_call(client, {"xaxis.autorange": True}, "dest-equity.relayoutData").get_json()
    ops = {tuple(op["location"]): op["params"]["value"]
           for op in reset["response"]["dest-equity"]["figure"]["operations"]}
    assert pd.Timestamp(ops[("data", 0, "x")][0]) == pd.Timestamp(first)


def test_secondary_analytics_wait_for_the_deferred_tick(app: Dash) -> None:
    client = app.server.test_client()
    client.get("/")
    outputs = [{"id": "dest-by-symbol", "property": "figure"}, {"id": "dest-by-reason", "property": "figure"}]

    def call(deferred: int) -> Any:
        return _update(client, "..dest-by-symbol.figure...dest-by-reason.figure..", outputs,
                       [{"id": "dest-v-closed", "property": "data", "value": 1},
                        {"id": "theme-store", "property": "data", "value": "dark"},
                        {"id": "dest-defer", "property": "n_intervals", "value": deferred}],
                       [{"id": "dest-slug", "property": "data", "value": "alpha_paper"}], ["dest-v-closed.data"])

    assert call(0).get_json()["response"] == {}
    drawn = call(1).get_json()["response"]
    symbols = drawn["dest-by-symbol"]["figure"]["data"][0]["x"]
    assert set(symbols) <= {"AAPL", "MSFT", "NVDA", "AMZN", "TSLA", "META", "SPY", "QQQ", "AMD", "GOOGL"}
    assert len(symbols) >= 5


def test_new_equity_points_are_appended_with_their_cursor(app: Dash, seeded: Seeded) -> None:
    client = app.server.test_client()
    client.get("/")
    first = _equity_call(client, None, "dest-v-equity.data").get_json()["response"]
    cursor = first["dest-eq-cursor"]["data"]
    assert cursor["appended"] == 0
    conn = connect(seeded.dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("""INSERT INTO public.equity_full_alpha_paper (ts, equity, net_deposits)
                           SELECT max(ts) + k * interval '1 minute', 150000 + k, max(net_deposits)
                           FROM public.equity_full_alpha_paper, generate_series(1, 3) AS k GROUP BY k""")
            cur.execute("UPDATE public.ch_versions SET equity_version = 2 WHERE slug = 'alpha_paper'")
    finally:
        conn.close()
    update = _equity_call(client, None, "dest-v-equity.data", cursor=cursor, version=2).get_json()["response"]
    patch = update["dest-equity"]["figure"]
    assert patch["__dash_patch_update"] == "__dash_patch_update"
    extended = {tuple(op["location"]): op["params"]["value"] for op in patch["operations"] if op["operation"] == "Extend"}
    assert extended[("data", 0, "y")] == [150001.0, 150002.0, 150003.0]
    assert len(extended[("data", 1, "y")]) == 3
    new_cursor = update["dest-eq-cursor"]["data"]
    assert new_cursor["appended"] == 3
    assert new_cursor["last_ns"] > cursor["last_ns"]
    # nothing newer than the cursor: nothing is sent
    again = _equity_call(client, None, "dest-v-equity.data", cursor=new_cursor, version=2)
    assert again.status_code == 204 or again.get_json()["response"] == {}


@pytest.mark.parametrize(("choice", "browser", "expected"), [
    ("exchange", "Asia/Tokyo", "America/New_York"),
    (None, None, "America/New_York"),
    ("utc", "Asia/Tokyo", "UTC"),
    ("local", "Asia/Tokyo", "Asia/Tokyo"),
    ("local", None, "America/New_York"),
    ("local", "Not/A_Zone", "America/New_York"),
])
def test_time_zone_choice(choice: str | None, browser: str | None, expected: str) -> None:
    from dashboard.context import resolve_tz

    assert resolve_tz(choice, browser, Settings()) == expected


def test_poll_keeps_the_page_when_the_database_goes_away(app: Dash, seeded: Seeded, pg_server_dsn: str) -> None:
    client = app.server.test_client()
    client.get("/")
    model = app.server.extensions["coldharbour"].model
    model.engine.dispose()
    admin = connect(pg_server_dsn)
    admin.autocommit = True
    name = seeded.dsn.rsplit("/", 1)[1]
    with admin.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    try:
        response = _update(
            client, "..dest-v-pos.data...dest-v-closed.data...dest-v-equity.data..",
            [{"id": "dest-v-pos", "property": "data"}, {"id": "dest-v-closed", "property": "data"},
             {"id": "dest-v-equity", "property": "data"}],
            [{"id": "dest-tick", "property": "n_intervals", "value": 9},
             {"id": "sse-hint", "property": "data", "value": None}],
            [{"id": "dest-slug", "property": "data", "value": "alpha_paper"},
             {"id": "dest-v-pos", "property": "data", "value": 1},
             {"id": "dest-v-closed", "property": "data", "value": 1},
             {"id": "dest-v-equity", "property": "data", "value": 1}],
            ["dest-tick.n_intervals"])
        assert response.status_code == 204
        assert client.get("/healthz").status_code == 503
    finally:
        with admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        admin.close()


def test_plotly_is_the_preloaded_cartesian_bundle_of_the_same_version(app: Dash) -> None:
    from plotly.offline import get_plotlyjs_version

    from dashboard.static import PLOTLY_PATH, bundled_plotly_version

    assert bundled_plotly_version() == get_plotlyjs_version()  # keep package.json's version in step with plotly
    client = app.server.test_client()
    html = client.get("/").get_data(as_text=True)
    assert f'<link rel="preload" href="/{PLOTLY_PATH}" as="script">' in html
    bundle = client.get("/" + PLOTLY_PATH)
    assert bundle.status_code == 200
    assert b"plotly.js (cartesian" in bundle.data[:200]
    assert len(bundle.data) < 2_000_000  # the full bundle is 4.8 MB
    assert "max-age=" in bundle.headers["Cache-Control"]
    again = client.get("/" + PLOTLY_PATH, headers={"If-None-Match": bundle.headers["ETag"]})
    assert again.status_code == 304
    # every trace type the pages draw is in the partial bundle
    for trace in (b"scatter", b"bar", b"heatmap", b"histogram"):
        assert b'moduleType:"trace",name:"' + trace + b'"' in bundle.data, trace


def test_chart_times_travel_as_iso_strings() -> None:
    import numpy as np

    from dashboard.components import fmt

    ts = np.array([1_700_000_000_000_000_000, 1_700_003_600_000_000_000], dtype=np.int64)
    assert fmt.ns_to_local_str(ts, "America/New_York") == ["2023-11-14T17:13:20", "2023-11-14T18:13:20"]
    assert fmt.ns_to_local_str(ts + 250_000_000, "UTC")[0] == "2023-11-14T22:13:20.250"
    assert fmt.ns_to_local_str(ts[:0], "UTC") == []


def test_health_shows_the_price_feed_age_when_the_manager_reports_it(app: Dash, seeded: Seeded) -> None:
    from dashboard.heartbeats import FEED_AGE_KEY, feed_age_s
    from dashboard.pages.health import _feed_text

    assert feed_age_s({FEED_AGE_KEY: 2.5}, 10) == pytest.approx(12.5)  # reported age + heartbeat age
    assert feed_age_s({FEED_AGE_KEY: None, "price_feed": {"received": 0}}, 1) is None
    assert feed_age_s({"zmq_age_s": 3}, None) == 3  # the earlier key
    assert feed_age_s({}, 5) is None
    assert feed_age_s(None, 5) is None
    assert feed_age_s({FEED_AGE_KEY: "x"}) is None
    assert _feed_text({"price_feed": None}) == "no feed"
    assert _feed_text({"price_feed": {"received": 0}, FEED_AGE_KEY: None}).startswith("no tick yet")
    assert _feed_text({"stats": {}}) == "—"  # an older manager: no feed fields at all

    conn = connect(seeded.dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                f"""UPDATE {seeded.settings.account_schema}.heartbeats
                    SET details = %s::jsonb, updated_at = now() WHERE destination = 'alpha_paper'""",
                (json.dumps({"price_feed": {"received": 4321}, FEED_AGE_KEY: 42.0, "stale_symbols": []}),),
            )
    finally:
        conn.close()
    workers = app.server.test_client().get("/healthz").get_json()["workers"]
    ages = [w["price_feed_age_s"] for w in workers if w["destination"] == "alpha_paper"]
    assert ages
    assert all(42.0 <= a < 100 for a in ages)
    assert all("price_feed_age_s" not in w for w in workers if w["destination"] != "alpha_paper")
    response = _update(app.server.test_client(), "..health-summary.children...health-table.children..",
                       [{"id": "health-summary", "property": "children"}, {"id": "health-table", "property": "children"}],
                       [{"id": "health-tick", "property": "n_intervals", "value": 1},
                        {"id": "tz-choice", "property": "value", "value": "utc"},
                        {"id": "browser-tz", "property": "data", "value": None}], [], ["health-tick.n_intervals"])
    table = json.dumps(response.get_json()["response"]["health-table"])
    assert "last tick " in table
    assert "4,321 ticks" in table
    assert "text-warning" in table  # 42 s > 10 s stale


# --- the first render: primary content drawn into the layout ----------------------------------------

def _destination_layout(app: Dash, cookies: dict[str, str]) -> dict[str, Any]:
    import dash

    header = "; ".join(f"{k}={v}" for k, v in cookies.items())
    with app.server.test_request_context("/destination/alpha_paper", headers={"Cookie": header} if header else {}):
        layout = dash.page_registry["dashboard.pages.destination"]["layout"](slug="alpha_paper")
    return json.loads(json.dumps(layout.to_plotly_json(), default=lambda o: o.to_plotly_json()))


def _find(node: Any, component_id: str) -> dict[str, Any] | None:
    if isinstance(node, dict):
        if node.get("props", {}).get("id") == component_id:
            return node
        children = node.get("props", {}).get("children")
        nodes = children if isinstance(children, list) else [children]
        for child in nodes:
            found = _find(child, component_id)
            if found:
                return found
    elif isinstance(node, list):
        for child in node:
            found = _find(child, component_id)
            if found:
                return found
    return None


@pytest.mark.parametrize(("cookies", "tz", "theme"), [
    ({}, "America/New_York", "light"),
    ({"ch_tz": "utc", "ch_theme": "dark"}, "UTC", "dark"),
    ({"ch_tz": "local", "ch_btz": "Asia/Tokyo", "ch_theme": "light"}, "Asia/Tokyo", "light"),
    ({"ch_tz": "<script>", "ch_theme": "purple"}, "America/New_York", "light"),  # junk: the defaults
])
def test_destination_layout_carries_kpis_positions_and_equity(app: Dash, cookies: dict[str, str], tz: str,
                                                               theme: str) -> None:
    layout = _destination_layout(app, cookies)
    kpis = _find(layout, "dest-kpis")
    assert kpis is not None
    cards = json.dumps(kpis["props"]["children"])
    for label in ("Equity", "Smart Sharpe", "Max drawdown", "Trades"):
        assert label in cards, label
    grid = _find(layout, "dest-positions")
    assert grid is not None
    assert {r["symbol"] for r in grid["props"]["rowData"]} == {"AAPL", "MSFT", "NVDA", "AMZN"}
    headers = json.dumps(grid["props"]["columnDefs"])
    assert ("UTC" in headers) == (tz == "UTC")
    figure = _find(layout, "dest-equity")["props"]["figure"]
    assert figure["data"][0]["name"] == "Equity"
    assert 100 <= len(figure["data"][0]["x"]) <= 2000
    dark_bg = figure["layout"]["template"]["layout"].get("paper_bgcolor") not in (None, "white", "#fff", "#ffffff")
    cursor = _find(layout, "dest-eq-cursor")["props"]["data"]
    assert cursor["tz"] == tz
    assert cursor["theme"] == theme
    assert cursor["v"] == 1
    assert _find(layout, "dest-kpi-key")["props"]["data"] == [1, 1, tz]
    assert _find(layout, "dest-pos-key")["props"]["data"] == [1, tz]
    if theme == "dark":
        assert dark_bg


def test_data_callbacks_do_not_redraw_what_the_layout_drew(app: Dash) -> None:
    client = app.server.test_client()
    client.get("/")
    tz = [{"id": "tz-choice", "property": "value", "value": "utc"},
          {"id": "browser-tz", "property": "data", "value": None}]

    def kpis(shown: Any) -> Any:
        return _update(client, "..dest-kpis.children...dest-kpi-key.data..",
                       [{"id": "dest-kpis", "property": "children"}, {"id": "dest-kpi-key", "property": "data"}],
                       [{"id": "dest-v-equity", "property": "data", "value": 1},
                        {"id": "dest-v-closed", "property": "data", "value": 1}, *tz],
                       [{"id": "dest-slug", "property": "data", "value": "alpha_paper"},
                        {"id": "dest-kpi-key", "property": "data", "value": shown}], ["dest-v-equity.data"])

    assert kpis([1, 1, "UTC"]).status_code == 204  # drawn by the layout for this zone
    redrawn = kpis([1, 1, "America/New_York"])  # the visitor switched zone: drawn again
    assert redrawn.status_code == 200
    assert redrawn.get_json()["response"]["dest-kpi-key"]["data"] == [1, 1, "UTC"]
    cursor = {"last_ns": 1, "appended": 0, "tz": "UTC", "theme": "light", "v": 1, "first_ns": 0, "zoomed": False}
    assert _equity_call(client, None, "dest-v-equity.data", cursor=cursor).status_code == 204
    dark = _update(
        client, "..dest-equity.figure...dest-eq-cursor.data..",
        [{"id": "dest-equity", "property": "figure"}, {"id": "dest-eq-cursor", "property": "data"}],
        [{"id": "dest-v-equity", "property": "data", "value": 1},
         {"id": "theme-store", "property": "data", "value": "dark"}, *tz],
        [{"id": "dest-slug", "property": "data", "value": "alpha_paper"},
         {"id": "dest-eq-cursor", "property": "data", "value": cursor}], ["theme-store.data"])
    assert dark.status_code == 200
    assert dark.get_json()["response"]["dest-eq-cursor"]["data"]["theme"] == "dark"


def _layout_json(client: Any, referrer: str | None) -> str:
    response = client.get("/_dash-layout", headers={"Referer": referrer} if referrer else {})
    assert response.status_code == 200
    return json.dumps(response.get_json())


def test_the_layout_request_carries_the_page_the_browser_is_on(app: Dash) -> None:
    client = app.server.test_client()
    drawn = json.loads(_layout_json(client, "http://localhost/destination/alpha_paper?x=1"))
    location = _find(drawn, "_pages_location")
    # the page's Location already holds the browser's path and query: it does not route again on mount
    assert location["props"]["pathname"] == "/destination/alpha_paper"
    assert location["props"]["search"] == "?x=1"
    content = _find(drawn, "_pages_content")
    assert _find(content, "dest-kpis") is not None
    assert _find(drawn, "_pages_store")["props"]["data"]["title"]
    # anything else: Dash's own empty container, and the routing callback draws the page
    for referrer in (None, "http://elsewhere.example/destination/alpha_paper", "http://localhost/no/such/page"):
        stock = json.loads(_layout_json(client, referrer))
        assert _find(stock, "_pages_content")["props"].get("children") is None, referrer
        assert "pathname" not in _find(stock, "_pages_location")["props"], referrer


def test_a_page_that_fails_in_the_layout_falls_back_to_the_routing_callback(app: Dash, seeded: Seeded) -> None:
    client = app.server.test_client()
    model = app.server.extensions["coldharbour"].model
    broken = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom"))  # noqa: E731
    original = model.destinations
    model.destinations = broken  # type: ignore[method-assign]
    try:
        stock = json.loads(_layout_json(client, "http://localhost/destination/alpha_paper"))
    finally:
        model.destinations = original  # type: ignore[method-assign]
    assert _find(stock, "_pages_content")["props"].get("children") is None


def test_pages_load_regenerator_runtime_not_core_js(app: Dash) -> None:
    from dashboard.static import REGENERATOR_URL

    client = app.server.test_client()
    html = client.get("/destination/alpha_paper").get_data(as_text=True)
    scripts = re.findall(r'<script src="([^"]+)"', html)
    assert scripts[0] == REGENERATOR_URL  # first, where the polyfill was: components need it at load
    assert not [s for s in scripts if "polyfill" in s]
    runtime = client.get(REGENERATOR_URL)
    assert runtime.status_code == 200
    assert b"regeneratorRuntime" in runtime.data


def test_static_scripts_are_compressed_once_with_compile_hints(app: Dash, monkeypatch: pytest.MonkeyPatch) -> None:
    import brotli

    from dashboard.static import COMPILE_HINT

    calls: list[int] = []
    real = brotli.compress
    monkeypatch.setattr(brotli, "compress", lambda data, **kw: calls.append(len(data)) or real(data, **kw))
    client = app.server.test_client()
    html = client.get("/destination/alpha_paper").get_data(as_text=True)
    grid_js = next(s for s in re.findall(r'<script src="([^"]+)"', html) if "dash_renderer" in s)
    dbc_js = next(s for s in re.findall(r'<script src="([^"]+)"', html) if "dash_bootstrap_components" in s)
    first = client.get(grid_js, headers={"Accept-Encoding": "gzip, deflate, br, zstd"})
    second = client.get(grid_js, headers={"Accept-Encoding": "gzip, deflate, br, zstd"})
    assert first.headers["Content-Encoding"] == "br"
    assert first.data == second.data
    assert len(calls) == 1  # compressed once, served from memory after
    body = brotli.decompress(first.data)
    assert body.startswith(COMPILE_HINT)  # eagerly compiled: it runs while the page first renders
    plain = client.get(grid_js, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert plain.data == body
    assert not client.get(dbc_js).data.startswith(COMPILE_HINT)  # mostly unused at load: compiled lazily
    assert client.get("/_dash-component-suites/plotly/package_data/plotly.min.js").data.startswith(COMPILE_HINT)
    gz = client.get(dbc_js, headers={"Accept-Encoding": "gzip"})
    assert gz.headers["Content-Encoding"] == "gzip"
    chunk = client.get("/_dash-component-suites/dash_ag_grid/async-community.js", headers={"Accept-Encoding": "br"})
    assert chunk.headers["ETag"].endswith(':br"')
    again = client.get("/_dash-component-suites/dash_ag_grid/async-community.js",
                       headers={"Accept-Encoding": "br", "If-None-Match": chunk.headers["ETag"]})
    assert again.status_code == 304


def test_start_up_warms_what_the_first_visitor_needs(seeded: Seeded) -> None:
    import threading

    dash_app = create_app(seeded.settings, start_listener=False, warm_cache=True)
    try:
        warmer = next(t for t in threading.enumerate() if t.name == "ch-cache-warmup")
        warmer.join(60)
        assert not warmer.is_alive()
        model = dash_app.server.extensions["coldharbour"].model
        tz = seeded.settings.display_timezone
        with dash_app.server.app_context():
            v = model.version_of("alpha_paper")
            cached = model.memo(("eq-figure", "alpha_paper", v.equity, tz, "light"),
                                lambda: pytest.fail("the equity figure was not warmed"))
        assert cached["data"][0]["name"] == "Equity"
    finally:
        dash_app.server.extensions["coldharbour"].model.engine.dispose()


def test_shell_stores_start_from_the_visitors_cookies(app: Dash) -> None:
    client = app.server.test_client()
    client.set_cookie("ch_theme", "dark")
    client.set_cookie("ch_btz", "Asia/Tokyo")
    layout = client.get("/_dash-layout").get_json()
    assert _find(layout, "theme-store")["props"]["data"] == "dark"
    assert _find(layout, "browser-tz")["props"]["data"] == "Asia/Tokyo"
    fresh = app.server.test_client().get("/_dash-layout").get_json()
    assert _find(fresh, "theme-store")["props"]["data"] == "light"
    assert _find(fresh, "browser-tz")["props"]["data"] is None


def test_destination_data_callbacks_wait_for_a_change_not_the_page_load(app: Dash) -> None:
    client = app.server.test_client()
    client.get("/")
    deps = client.get("/_dash-dependencies").get_json()
    by_output = {d["output"]: d for d in deps}
    for output in ("..dest-v-pos.data...dest-v-closed.data...dest-v-equity.data..",
                   "..dest-positions.rowData...dest-pos-status.children...dest-pos-key.data..",
                   "..dest-kpis.children...dest-kpi-key.data..", "..dest-equity.figure...dest-eq-cursor.data..",
                   "dest-closed.getRowsResponse", "..dest-export-csv.href...dest-export-xlsx.href.."):
        assert by_output[output]["prevent_initial_call"] is True, output


def test_a_failed_first_render_leaves_the_versions_for_the_first_poll(app: Dash,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import OperationalError

    from dashboard.pages import destination_view

    def unavailable(*_a: Any, **_k: Any) -> Any:
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    monkeypatch.setattr(destination_view, "kpi_cards", unavailable)
    layout = _destination_layout(app, {})
    for store in ("dest-v-pos", "dest-v-closed", "dest-v-equity", "dest-kpi-key", "dest-pos-key", "dest-eq-cursor"):
        assert _find(layout, store)["props"].get("data") is None, store
    assert _find(layout, "dest-kpis")["props"].get("children") is None
    # the export links carry the zone even before any callback ran
    assert "tz=America%2FNew_York" in _find(layout, "dest-export-csv")["props"]["href"]


def test_activities_page_follows_the_ingester(app: Dash, seeded: Seeded) -> None:
    from tests.dashboard.seed import simulate_activity

    client = app.server.test_client()
    client.get("/")
    output = "..act-version.data...act-status.children.."
    outputs = [{"id": "act-version", "property": "data"}, {"id": "act-status", "property": "children"}]

    def poll(slug: str, shown: Any) -> Any:
        return _update(client, output, outputs,
                       [{"id": "act-tick", "property": "n_intervals", "value": 4},
                        {"id": "sse-hint", "property": "data", "value": None},
                        {"id": "act-dest", "property": "value", "value": slug}],
                       [{"id": "act-version", "property": "data", "value": shown}], ["act-tick.n_intervals"])

    model = app.server.extensions["coldharbour"].model
    with app.server.app_context():
        v = model.version_of("alpha_paper").activity
    assert poll("alpha_paper", {"slug": "alpha_paper", "v": v}).status_code == 204
    new_v = simulate_activity(seeded.dsn, seeded.settings, "alpha_paper", "ZNEW1", "ZZZ")
    moved = poll("alpha_paper", {"slug": "alpha_paper", "v": v})
    assert moved.status_code == 200
    assert moved.get_json()["response"]["act-version"]["data"] == {"slug": "alpha_paper", "v": new_v}
    # the grid's next block (newest first) holds the new activity
    request = {"startRow": 0, "endRow": 50, "sortModel": [{"colId": "ts", "sort": "desc"}], "filterModel": {}}
    block = _update(client, "act-grid.getRowsResponse", {"id": "act-grid", "property": "getRowsResponse"},
                    [{"id": "act-grid", "property": "getRowsRequest", "value": request}],
                    [{"id": "act-dest", "property": "value", "value": "alpha_paper"},
                     {"id": "tz-choice", "property": "value", "value": "utc"},
                     {"id": "browser-tz", "property": "data", "value": None}], ["act-grid.getRowsRequest"])
    rows = block.get_json()["response"]["act-grid"]["getRowsResponse"]["rowData"]
    assert rows[0]["activity_id"] == "ZNEW1"
    # another destination: its own version
    other = poll("beta_momentum", {"slug": "alpha_paper", "v": new_v})
    assert other.get_json()["response"]["act-version"]["data"]["slug"] == "beta_momentum"


def test_reads_leave_no_transaction_open(app: Dash, seeded: Seeded) -> None:
    """The read engine is autocommit; a streamed export runs in its own snapshot and ends it."""
    client = app.server.test_client()
    assert client.get("/export/alpha_paper/closed_trades.csv").status_code == 200
    assert client.get("/healthz").status_code == 200
    conn = connect(seeded.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("""SELECT count(*) FILTER (WHERE state LIKE 'idle in transaction%%'), count(*)
                           FROM pg_stat_activity WHERE application_name = 'coldharbour-dashboard'
                             AND datname = current_database()""")
            in_transaction, total = cur.fetchone()
    finally:
        conn.close()
    assert total >= 1
    assert in_transaction == 0


def test_day_pl_percent_is_the_same_day_as_the_dollar_figure(app: Dash) -> None:
    from dashboard.kpis import kpi_values

    model = app.server.extensions["coldharbour"].model
    with app.server.test_request_context("/"):
        values = kpi_values(model, "alpha_paper", "America/New_York")
        daily = model.daily_equity("alpha_paper", "America/New_York", 1)
    prev = float(daily["equity"].iloc[-2])
    flow = float(daily["net_deposits"].iloc[-1] - daily["net_deposits"].iloc[-2])
    assert values["day_pl"] == pytest.approx(float(daily["equity"].iloc[-1]) - prev - flow)
    assert values["day_return"] == pytest.approx(values["day_pl"] / prev)
