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
    # inside the window, plus at most the one neighbour past each edge (the line reaches the edge;
    # dashboard.equity_store.equity_window): comparing dates alone failed when hi fell late in a day
    stamps = [pd.Timestamp(x) for x in xs]
    assert sum(t < pd.Timestamp(lo) for t in stamps) <= 1
    assert sum(t > pd.Timestamp(hi).tz_localize(None) for t in stamps) <= 1
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
    symbols = drawn["dest-by-symbol"]["figure"]["data"][0]["customdata"]  # horizontal bars: the full symbols
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
