"""The trade drill-down in a real headless Chromium: the FIFO lots table reads in the page's formats
(money, exact quantities, local times, words for booleans) and the split and name change that touched
the trip are listed, at desktop width and at 390 px without overflowing the page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dashboard.app import create_app
from tests.dashboard.real_seed import SPLIT_TRIP, seed_real
from tests.e2e.conftest import E2EData

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WAIT_S = 20  # liveness bound for waits (not a timing assertion)


@pytest.fixture
def app(e2e_db: E2EData) -> Iterator[Any]:
    seed_real(e2e_db.dsn, e2e_db.settings, "alpha_paper")
    dash_app = create_app(e2e_db.settings)
    yield dash_app
    runtime = dash_app.server.extensions["coldharbour"]
    if runtime.hub is not None:
        runtime.hub.stop()
    runtime.model.engine.dispose()


def _text(dash_duo: Any, selector: str) -> str:
    return str(dash_duo.driver.execute_script("return document.querySelector(arguments[0]).innerText", selector))


def test_trade_page_shows_formatted_lots_and_events(dash_duo: Any, app: Any) -> None:
    dash_duo.start_server(app)
    dash_duo.driver.get(f"{dash_duo.server_url}/destination/alpha_paper/trade/{SPLIT_TRIP}")
    dash_duo.wait_for_element("#trade-lots-table", timeout=WAIT_S)
    dash_duo.wait_for_element("#trade-events-table", timeout=WAIT_S)

    lots = _text(dash_duo, "#trade-lots-table")
    assert "✓ known" in lots
    assert "+$1,000.00" in lots
    assert "110.00" in lots
    for raw in ("True", "False", "None", "nan", "+00:00"):  # Python's spellings, an ISO offset
        assert raw not in lots
    headers = dash_duo.driver.execute_script(
        "return [...document.querySelectorAll('#trade-lots-table th')].map(th => th.innerText.trim())")
    assert headers[:6] == ["Qty", "Entry", "Entry px", "Exit", "Exit px", "Gross P&L"]

    events = _text(dash_duo, "#trade-events-table")
    assert events.count("\tNC\t") == 2  # the old and the new symbol's line
    assert events.count("\tSPLIT\t") == 1  # under the old name, inside the holding time only
    assert "10-for-1 forward split" in events

    driver = dash_duo.driver
    driver.set_window_size(390, 844)
    driver.get(f"{dash_duo.server_url}/destination/alpha_paper/trade/{SPLIT_TRIP}")
    dash_duo.wait_for_element("#trade-events-table", timeout=WAIT_S)
    # the tables scroll inside their own box: the page itself never gets wider than the phone
    inner = driver.execute_script("return window.innerWidth")
    scroll = driver.execute_script("return document.documentElement.scrollWidth")
    assert scroll <= inner, f"page is {scroll}px wide in a {inner}px viewport"
    assert [e for e in dash_duo.get_logs() or [] if e.get("level") == "SEVERE"] == []
