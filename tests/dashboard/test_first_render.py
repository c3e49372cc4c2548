"""The first render: the page drawn into the layout response, the static files (cartesian plotly.js,
regenerator-runtime, compress-once, compile hints), the start-up warm-up, and no callback on load."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from dash import Dash

from dashboard.app import create_app
from tests.dashboard.conftest import Seeded
from tests.dashboard.test_app import _equity_call, _update


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


def test_a_new_app_serves_concurrent_first_requests(seeded: Seeded) -> None:
    """Dash's own set-up runs on the first request, unlocked: requests racing it got a 500 for AG Grid's chunk."""
    import threading

    # Arrange: a fresh app that has served nothing yet
    dash_app = create_app(seeded.settings, start_listener=False, warm_cache=False)
    statuses: list[int] = []
    start = threading.Barrier(6)

    def fetch(path: str) -> None:
        client = dash_app.server.test_client()
        start.wait()
        statuses.append(client.get(path).status_code)

    paths = ["/_dash-component-suites/dash_ag_grid/async-community.js", "/_dash-layout", "/_dash-dependencies"] * 2
    try:
        # Act: six first requests at once
        threads = [threading.Thread(target=fetch, args=(p,)) for p in paths]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)

        # Assert: every one answered, and the lazily loaded chunk is registered before any request
        assert statuses == [200] * 6
        assert "async-community.js" in dash_app.registered_paths["dash_ag_grid"]
    finally:
        dash_app.server.extensions["coldharbour"].model.engine.dispose()


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
