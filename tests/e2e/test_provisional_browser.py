"""The "provisional" tag in a real headless Chromium: a position and a round trip resting on stream fills
not yet confirmed show it in their symbol cell, in the warning colour of the theme, light and dark, and
lose it when the broker's activities confirm them (docs/freshness.md, "Provisional rows").

``CH_PROVISIONAL_SHOTS=<dir>`` saves a screenshot of each state there (for a person to look at)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from core.db import connect
from dashboard.app import create_app
from tests.dashboard.seed import simulate_fill
from tests.e2e.conftest import E2EData

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WAIT_S = 20  # liveness bound for waits (not a timing assertion)
SLUG = "gamma_live"
TAG_JS = """
const out = {};
for (const cell of document.querySelectorAll(arguments[0])) {
  const row = cell.closest('.ag-row');
  const key = row && (row.getAttribute('row-id') || row.getAttribute('row-index'));
  const after = getComputedStyle(cell, '::after');
  out[key] = {tagged: cell.classList.contains('ch-provisional'), content: after.content, color: after.color,
              text: cell.innerText.trim()};
}
return out;"""
WARN_JS = """
const probe = document.createElement('span');
probe.style.color = 'var(--ch-warn)';
document.body.appendChild(probe);
const color = getComputedStyle(probe).color;
probe.remove();
return color;"""


def _wait(driver: Any, condition: Any, message: str) -> Any:
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(lambda _d: condition(), message)


def _set(dsn: str, sql: str, *args: object) -> None:
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, args)
            cur.execute("UPDATE public.ch_versions SET pos_version = pos_version + 1, "
                        "closed_version = closed_version + 1 WHERE slug = %s", (SLUG,))
    finally:
        conn.close()


def _shot(driver: Any, name: str) -> None:
    out = os.environ.get("CH_PROVISIONAL_SHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(out) / f"{name}.png"))


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_rows_on_unconfirmed_stream_fills_carry_the_tag_until_confirmed(dash_duo: Any, e2e_db: E2EData,
                                                                        theme: str) -> None:
    # Arrange: a stream-only position (one fill) and the newest round trip resting on two stream fills
    symbol = f"ZPRV{theme[0].upper()}"
    simulate_fill(e2e_db.dsn, SLUG, symbol, qty=3, entry=10.0, mark=11.0)
    _set(e2e_db.dsn, f"UPDATE public.open_trades_{SLUG} SET provisional_fills = 1 WHERE symbol = %s", symbol)
    _set(e2e_db.dsn, f"""UPDATE public.closed_trades_{SLUG} SET provisional_fills = 2 WHERE trade_id =
                         (SELECT trade_id FROM public.closed_trades_{SLUG} ORDER BY exit_time DESC LIMIT 1)""")
    app = create_app(e2e_db.settings)
    try:
        dash_duo.start_server(app)
        driver = dash_duo.driver
        driver.get(dash_duo.server_url + "/")
        # the theme switch's persisted value, which assets/theme.js applies before the page renders
        driver.execute_script("window.localStorage.setItem('_dash_persistence.theme-switch.value.true', arguments[0]);",
                              f"[{'true' if theme == 'dark' else 'false'}, false]")
        # Act 1: open the destination page
        driver.get(dash_duo.server_url + f"/destination/{SLUG}")
        open_cells = "#dest-positions .ag-body .ag-row[row-id] .ag-cell[col-id='symbol']"
        closed_cells = "#dest-closed .ag-body .ag-row .ag-cell[col-id='symbol']"
        dash_duo.wait_for_element(open_cells, timeout=WAIT_S)
        _wait(driver, lambda: bool(driver.execute_script(TAG_JS, closed_cells)), "no closed trades drawn")
        warn = driver.execute_script(WARN_JS)
        shown = driver.execute_script(TAG_JS, open_cells)
        trips = driver.execute_script(TAG_JS, closed_cells)
        _shot(driver, f"provisional-{theme}")
        if os.environ.get("CH_PROVISIONAL_SHOTS"):
            driver.execute_script("document.getElementById('dest-closed').scrollIntoView({block: 'center'});")
            _shot(driver, f"provisional-trips-{theme}")
        # Assert 1: only the stream-only rows are tagged, in the theme's warning colour; the symbol is intact
        assert driver.execute_script("return document.documentElement.getAttribute('data-bs-theme')") == theme
        assert {k for k, v in shown.items() if v["tagged"]} == {symbol}
        assert shown[symbol]["content"] == '"provisional"'
        assert shown[symbol]["color"] == warn
        assert shown[symbol]["text"] == symbol
        assert all(v["content"] in ("none", "normal") for k, v in shown.items() if k != symbol)
        assert [v["tagged"] for v in trips.values()].count(True) == 1
        tooltip = driver.execute_script(
            "const def = dash_ag_grid.getApi('dest-positions').getColumnDef('symbol');"
            "return [def.tooltipValueGetter({value: 'X', data: {provisional_fills: 2}}),"
            "        def.tooltipValueGetter({value: 'Y', data: {provisional_fills: 0}})];")
        assert tooltip == ["X · provisional: 2 fills seen on the live stream, not yet confirmed by the broker's "
                           "activities", "Y"]
        # Act 2: the broker's activities confirm them (the manager's rewrite)
        _set(e2e_db.dsn, f"UPDATE public.open_trades_{SLUG} SET provisional_fills = 0")
        _set(e2e_db.dsn, f"UPDATE public.closed_trades_{SLUG} SET provisional_fills = 0")
        # Assert 2: the tag goes (the page's poll or stream re-reads the rows)
        _wait(driver, lambda: not any(v["tagged"] for v in driver.execute_script(TAG_JS, open_cells).values()),
              "the position's tag did not clear")
        _shot(driver, f"confirmed-{theme}")
    finally:
        app.server.extensions["coldharbour"].hub.stop()
