"""The positions grid set from the stream (issue 18): a ``pos`` event carries the grid's rows and the
page draws them without asking its server callbacks; what may have lost an event makes it re-read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from core.db import connect
from core.destinations import open_trades_table
from dashboard.app import create_app
from tests.dashboard.seed import insert_open_position, simulate_fill
from tests.e2e.conftest import E2EData

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WAIT_S = 20  # liveness bound for waits (not a timing assertion)
SLUG = "alpha_paper"

# Every Dash callback request from now on, by the outputs it asks for.
SPY_JS = """
window.__chCalls = [];
if (!window.__chFetch) {
  window.__chFetch = window.fetch;
  window.fetch = function (url, init) {
    if (String(url).indexOf('_dash-update-component') >= 0 && init && init.body) {
      try { window.__chCalls.push(JSON.parse(init.body).output); } catch (e) { window.__chCalls.push('?'); }
    }
    return window.__chFetch.apply(this, arguments);
  };
}
"""


def _wait(driver: Any, condition: Any, message: str) -> Any:
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(lambda _d: condition(), message)


def _cells(driver: Any, col: str) -> dict[str, str]:
    return driver.execute_script(
        "const out = {};"
        "for (const row of document.querySelectorAll('#dest-positions .ag-body .ag-row[row-id]')) {"
        "  const cell = row.querySelector('[col-id=\"' + arguments[0] + '\"]');"
        "  if (cell) { out[row.getAttribute('row-id')] = cell.textContent.trim(); } }"
        "return out;", col)


def _grid_calls(driver: Any) -> list[str]:
    return [c for c in driver.execute_script("return window.__chCalls;") if "dest-positions.rowData" in str(c)]


@pytest.fixture
def live_page(dash_duo: Any, e2e_db: E2EData) -> Iterator[Any]:
    """The destination page, polling every hour, its stream open for its own rows, and the spy on."""
    app = create_app(e2e_db.settings.replace(ui_snapshot_sec=3600.0))
    try:
        dash_duo.start_server(app)
        driver = dash_duo.driver
        driver.get(dash_duo.server_url + f"/destination/{SLUG}")
        dash_duo.wait_for_element("#dest-positions .ag-body .ag-cell[col-id='symbol']", timeout=WAIT_S)
        _wait(driver, lambda: f"slug={SLUG}" in str(driver.execute_script(
            "return window.chSSE && window.chSSE.stats.openUrl;")), "the page never asked the stream for its rows")
        # the open's re-read has been asked for and answered (nothing changed: no grid callback)
        _wait(driver, lambda: driver.execute_script(
            "return !window.dash_clientside || !document.querySelector('._dash-loading-callback');"), "still loading")
        driver.execute_script(SPY_JS)
        yield driver, app
    finally:
        app.server.extensions["coldharbour"].hub.stop()


def test_a_pushed_position_is_drawn_without_the_grid_callback(live_page: Any, e2e_db: E2EData) -> None:
    driver, _app = live_page
    simulate_fill(e2e_db.dsn, SLUG, "ZPUSH", qty=3, entry=10.0, mark=11.0)

    _wait(driver, lambda: "ZPUSH" in _cells(driver, "symbol"), "the pushed position never showed up")
    assert _cells(driver, "qty")["ZPUSH"] == "3"
    assert driver.execute_script("return window.chSSE.stats.pushed;") >= 1
    assert _grid_calls(driver) == []  # drawn from the event: the server's positions callback was not asked


def test_a_reset_makes_the_page_re_read_what_no_event_announced(live_page: Any, e2e_db: E2EData) -> None:
    driver, app = live_page
    conn = connect(e2e_db.dsn)
    try:  # a change whose NOTIFY was lost: rows and version written, nothing announced
        with conn, conn.cursor() as cur:
            insert_open_position(cur, SLUG, "ZGAP", qty=5, entry=20.0, mark=21.0)
            cur.execute("UPDATE public.ch_versions SET pos_version = pos_version + 1 WHERE slug = %s", (SLUG,))
            cur.execute(f'SELECT count(*) FROM public."{open_trades_table(SLUG)}" WHERE symbol = %s', ("ZGAP",))
            assert cur.fetchone()[0] == 1
    finally:
        conn.close()
    # what the hub sends after its LISTEN connection came back, or to a stream whose queue overflowed
    app.server.extensions["coldharbour"].hub.publish({"slug": None, "kind": "reset", "v": None})

    _wait(driver, lambda: "ZGAP" in _cells(driver, "symbol"), "the reset never made the page re-read")
    assert _grid_calls(driver)  # the re-read went through the server's callback
