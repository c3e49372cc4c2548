"""The dashboard in a real headless Chromium: pages, live updates, server-side grid, theme, phone width.

Set ``CH_SCREENSHOTS=1`` to (re)write ``docs/screenshots/*.png`` from these tests.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from core.db import connect
from dashboard.app import create_app
from tests.dashboard.seed import simulate_fill
from tests.e2e.conftest import E2EData

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WAIT_S = 20  # liveness bound for waits (not a timing assertion)


def _shot(dash_duo: Any, name: str) -> None:
    if os.environ.get("CH_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        driver = dash_duo.driver
        height = driver.execute_script("return document.documentElement.scrollHeight")
        width = driver.execute_script("return window.outerWidth")
        driver.set_window_size(width, min(int(height) + 120, 4200))
        dash_duo.wait_for_no_elements(".dash-spinner, ._dash-loading", timeout=WAIT_S)
        driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def _wait(dash_duo: Any, condition: Any, message: str) -> Any:
    return WebDriverWait(dash_duo.driver, WAIT_S, poll_frequency=0.1).until(lambda _d: condition(), message)


def _grid_cells(dash_duo: Any, grid_id: str, col: str) -> list[str]:
    """Texts of a column's rendered cells, in row order (pinned or not)."""
    return dash_duo.driver.execute_script(
        "const cells = [...document.querySelectorAll(arguments[0])];"
        "cells.sort((a, b) => +a.parentElement.getAttribute('row-index') - +b.parentElement.getAttribute('row-index'));"
        "return cells.map(c => c.innerText.replace(/\\u2212/g, '-').trim());",  # d3 formats with U+2212
        f"#{grid_id} .ag-body .ag-row .ag-cell[col-id='{col}']")


def _click(dash_duo: Any, selector: str) -> None:
    element = dash_duo.find_element(selector)
    # a DOM click: a real pointer click can land on whatever overlaps the element at that moment
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", element)


def _scalar(dsn: str, sql: str) -> Any:
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]
    finally:
        conn.close()


def _errors(dash_duo: Any) -> list[dict[str, Any]]:
    return [e for e in dash_duo.get_logs() or [] if e.get("level") == "SEVERE"]


@pytest.fixture
def app(e2e_db: E2EData):
    dash_app = create_app(e2e_db.settings)
    yield dash_app
    runtime = dash_app.server.extensions["coldharbour"]
    if runtime.hub is not None:
        runtime.hub.stop()
    runtime.model.engine.dispose()


PAGES = [
    ("overview", "/", "#ov-cards .ch-dest-card"),
    ("destination", "/destination/alpha_paper", "#dest-closed .ag-body .ag-cell[col-id='trade_id']"),
    ("trade", "/destination/alpha_paper/trade/T0000007", "#trade-kpis .ch-kpi"),
    ("activities", "/activities", "#act-grid .ag-body .ag-cell[col-id='activity_type']"),
    ("health", "/health", "#health-table table"),
]


@pytest.mark.parametrize(("name", "path", "ready"), PAGES, ids=[p[0] for p in PAGES])
def test_page_renders_with_data_and_no_console_errors(dash_duo: Any, app: Any, name: str, path: str,
                                                      ready: str) -> None:
    dash_duo.start_server(app)
    dash_duo.driver.get(dash_duo.server_url + path)
    dash_duo.wait_for_element(ready, timeout=WAIT_S)
    if name == "destination":
        dash_duo.wait_for_element("#dest-equity .main-svg", timeout=WAIT_S)
        _wait(dash_duo, lambda: len(dash_duo.find_elements("#dest-kpis .ch-kpi")) >= 13, "KPI cards missing")
        assert "sharpe" in dash_duo.find_element("#dest-kpis").text.lower()
        dash_duo.wait_for_element("#dest-positions .ag-body .ag-cell[col-id='symbol']", timeout=WAIT_S)
        # plotly.js was started early (assets/plotly_early.js) and loaded once: dcc.Graph waited for
        # that copy instead of adding its own script
        where = dash_duo.driver.execute_script(
            "return [...document.querySelectorAll('script[src$=\"/plotly/package_data/plotly.min.js\"]')]"
            ".map(s => s.parentElement.tagName);")
        assert where == ["HEAD"], where
        assert dash_duo.driver.execute_script("return typeof window.Plotly.newPlot") == "function"
    if name == "overview":
        dash_duo.wait_for_element("#ov-aggregate .main-svg", timeout=WAIT_S)
        assert len(dash_duo.find_elements(".ch-dest-card")) == 3
    _shot(dash_duo, name)
    assert _errors(dash_duo) == []


def test_new_fill_appears_in_positions_without_reload(dash_duo: Any, e2e_db: E2EData) -> None:
    # polling every hour: only the NOTIFY -> LISTEN -> SSE -> store path can deliver within the wait
    app = create_app(e2e_db.settings.replace(ui_snapshot_sec=3600.0))
    try:
        dash_duo.start_server(app)
        dash_duo.driver.get(dash_duo.server_url + "/destination/alpha_paper")
        dash_duo.wait_for_element("#dest-positions .ag-body .ag-cell[col-id='symbol']", timeout=WAIT_S)
        hub = app.server.extensions["coldharbour"].hub
        _wait(dash_duo, lambda: hub.subscriber_count >= 1, "browser never opened /stream/events")
        dash_duo.driver.execute_script("window.__chNoReload = 42;")

        simulate_fill(e2e_db.dsn, "alpha_paper", "ZLIVE", qty=3, entry=10.0, mark=11.0)

        _wait(dash_duo, lambda: "ZLIVE" in _grid_cells(dash_duo, "dest-positions", "symbol"),
              "the new position never showed up")
        assert dash_duo.driver.execute_script("return window.__chNoReload;") == 42
        assert _errors(dash_duo) == []
    finally:
        app.server.extensions["coldharbour"].hub.stop()


def test_new_activity_appears_in_the_activities_grid_without_reload(dash_duo: Any, app: Any,
                                                                   e2e_db: E2EData) -> None:
    from tests.dashboard.seed import simulate_activity

    dash_duo.start_server(app)
    dash_duo.driver.get(dash_duo.server_url + "/activities")
    dash_duo.wait_for_element("#act-grid .ag-body .ag-cell[col-id='activity_type']", timeout=WAIT_S)
    # the grid opens newest first, as a trader watches fills arrive
    dash_duo.driver.execute_script("window.__chNoReload = 7;")

    simulate_activity(e2e_db.dsn, e2e_db.settings, "alpha_paper", "ZACT-LIVE", "ZACT")

    _wait(dash_duo, lambda: "ZACT" in _grid_cells(dash_duo, "act-grid", "symbol"),
          "the new activity never showed up in the grid")
    assert dash_duo.driver.execute_script("return window.__chNoReload;") == 7
    assert _errors(dash_duo) == []


def test_polling_alone_converges_with_sse_disabled(dash_duo: Any, e2e_db: E2EData) -> None:
    app = create_app(e2e_db.settings.replace(disable_sse=True, ui_snapshot_sec=0.5))
    dash_duo.start_server(app)
    dash_duo.driver.get(dash_duo.server_url + "/destination/beta_momentum")
    dash_duo.wait_for_element("#dest-positions .ag-body .ag-cell[col-id='symbol']", timeout=WAIT_S)
    simulate_fill(e2e_db.dsn, "beta_momentum", "ZPOLL")
    _wait(dash_duo, lambda: "ZPOLL" in _grid_cells(dash_duo, "dest-positions", "symbol"),
          "polling never picked up the new position")
    assert _errors(dash_duo) == []


def test_closed_grid_sorts_and_filters_on_the_server_and_exports_the_same_rows(
        dash_duo: Any, app: Any, e2e_db: E2EData) -> None:
    dash_duo.start_server(app)
    dash_duo.driver.get(dash_duo.server_url + "/destination/alpha_paper")
    dash_duo.wait_for_element("#dest-closed .ag-body .ag-cell[col-id='trade_id']", timeout=WAIT_S)

    # sort by net P&L ascending: the first row must be the database's minimum
    lowest = float(_scalar(e2e_db.dsn, "SELECT min(net_pl) FROM public.closed_trades_alpha_paper"))
    expected = f"-${abs(lowest):,.2f}"
    _click(dash_duo, "#dest-closed .ag-header-cell[col-id='net_pl'] .ag-header-cell-label")
    _wait(dash_duo, lambda: (_grid_cells(dash_duo, "dest-closed", "net_pl") or [""])[0].strip() == expected,
          f"first row after sorting is not {expected}")

    # filter symbol = NVDA: the grid's row count comes from the server's count query
    nvda = int(_scalar(e2e_db.dsn, "SELECT count(*) FROM public.closed_trades_alpha_paper WHERE symbol = 'NVDA'"))
    box = dash_duo.find_element("#dest-closed .ag-floating-filter[col-id='symbol'] input")
    box.send_keys("NVDA", Keys.ENTER)

    def displayed() -> int:
        return int(dash_duo.driver.execute_script(
            "return dash_ag_grid.getApi('dest-closed').getDisplayedRowCount();"))

    _wait(dash_duo, lambda: displayed() == nvda and set(_grid_cells(dash_duo, "dest-closed", "symbol")) == {"NVDA"},
          f"filtered grid does not show the {nvda} NVDA trades")

    # the export link carries the same sort and filter: its CSV has exactly those rows, in that order
    href = dash_duo.find_element("#dest-export-csv").get_attribute("href")
    assert "filter=" in href
    assert "sort=" in href
    response = requests.get(href, timeout=WAIT_S)
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.text)))
    header, body = rows[0], rows[1:]
    assert len(body) == nvda
    symbol_col = next(i for i, h in enumerate(header) if h.startswith("symbol"))
    assert {r[symbol_col] for r in body} == {"NVDA"}
    pl_col = next(i for i, h in enumerate(header) if h.startswith("net_pl"))
    pls = [float(r[pl_col]) for r in body]
    assert pls == sorted(pls)
    assert _errors(dash_duo) == []


def test_dark_mode_switch_persists(dash_duo: Any, app: Any) -> None:
    dash_duo.start_server(app)
    dash_duo.driver.get(dash_duo.server_url + "/destination/alpha_paper")
    dash_duo.wait_for_element("#dest-equity .main-svg", timeout=WAIT_S)
    _click(dash_duo, "#theme-switch")
    driver = dash_duo.driver
    _wait(dash_duo, lambda: driver.execute_script("return document.documentElement.getAttribute('data-bs-theme')")
          == "dark", "theme attribute not dark")
    assert driver.execute_script("return document.body.getAttribute('data-ag-theme-mode')") == "dark"

    def plot_is_dark() -> bool:
        bg = driver.execute_script(
            "const g = document.querySelector('#dest-equity .js-plotly-plot');"
            "return g && g._fullLayout ? g._fullLayout.font.color : null;")
        return bg is not None and bg.lower() in {"#f2f5fa", "rgb(242, 245, 250)"}

    _wait(dash_duo, plot_is_dark, "equity chart did not switch to the dark template")
    dash_duo.wait_for_element("#dest-closed .ag-body .ag-cell[col-id='trade_id']", timeout=WAIT_S)
    _shot(dash_duo, "destination-dark")
    driver.refresh()
    dash_duo.wait_for_element("#dest-equity .main-svg", timeout=WAIT_S)
    _wait(dash_duo, lambda: driver.execute_script("return document.documentElement.getAttribute('data-bs-theme')")
          == "dark", "theme did not persist across a reload")
    # the server drew the reloaded page's chart dark from the first layout (the choice travels as a cookie)
    assert "ch_theme=dark" in driver.execute_script("return document.cookie")
    _wait(dash_duo, plot_is_dark, "equity chart not dark after a reload")
    assert _errors(dash_duo) == []


@pytest.mark.parametrize("path", ["/", "/destination/alpha_paper"])
def test_phone_width_has_no_horizontal_overflow(dash_duo: Any, app: Any, path: str) -> None:
    dash_duo.start_server(app)
    driver = dash_duo.driver
    driver.set_window_size(390, 844)
    driver.get(dash_duo.server_url + path)
    dash_duo.wait_for_element(".ch-dest-card" if path == "/" else "#dest-kpis .ch-kpi", timeout=WAIT_S)
    inner = driver.execute_script("return window.innerWidth")
    scroll = driver.execute_script("return document.documentElement.scrollWidth")
    assert scroll <= inner, f"page is {scroll}px wide in a {inner}px viewport"
    assert dash_duo.find_element(".navbar-toggler").is_displayed()
    _shot(dash_duo, "overview-phone" if path == "/" else "destination-phone")
    assert _errors(dash_duo) == []
