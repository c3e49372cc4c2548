"""The destination page's strategy filter and benchmark in headless Chromium: mounted after the first
render with the account against SPY, a strategy chosen narrows it to that strategy's round trips, the
benchmark switch removes the benchmark's curve, no console errors, no overflow at phone width."""

from __future__ import annotations

from typing import Any

import pytest
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.e2e.test_strategy_browser import WAIT_S, N, _errors, _traces
from tests.e2e.test_strategy_browser import app as app  # the seeded app (strategy-tagged orders, SPY bars)
from tests.e2e.test_strategy_browser import tagged as tagged

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.parametrize("width", [1400, 390])
def test_destination_strategy_filter_and_benchmark(dash_duo: Any, app: Any, width: int) -> None:
    # Arrange
    dash_duo.start_server(app)
    driver = dash_duo.driver
    driver.set_window_size(width, 900)
    slug = app.server.extensions["coldharbour"].model.destinations()[0].slug

    # Act: the page, then its strategy section once it has mounted
    driver.get(dash_duo.server_url + f"/destination/{slug}")
    dash_duo.wait_for_element("#dest-strat-growth .main-svg", timeout=WAIT_S)
    WebDriverWait(driver, WAIT_S).until(lambda _d: "SPY" in _traces(dash_duo, "dest-strat-growth"),
                                        "benchmark curve missing")
    every = dash_duo.find_element("#dest-strat-table").text
    kpis = dash_duo.find_element("#dest-strat-kpis").text.lower()
    Select(dash_duo.find_element("#dest-strat")).select_by_visible_text("s2")
    dash_duo.wait_for_element("#dest-strat-trades .ag-body .ag-cell[col-id='trade_id']", timeout=WAIT_S)
    narrowed_kpis = dash_duo.find_element("#dest-strat-kpis").text.lower()
    driver.execute_script("document.querySelector('#dest-strat-bench').click()")
    WebDriverWait(driver, WAIT_S).until(
        lambda _d: "SPY" not in _traces(dash_duo, "dest-strat-growth"), "benchmark still drawn")

    # Assert
    assert "beta vs spy" in kpis  # labels are upper-cased by CSS
    assert all(f"s{k}" in every for k in range(N))
    assert len(dash_duo.find_elements("#dest-strat-table tbody tr")) == 0  # the per-strategy table gave way
    assert "win rate" in narrowed_kpis
    assert "beta vs" not in dash_duo.find_element("#dest-strat-kpis").text.lower()
    inner = driver.execute_script("return window.innerWidth")
    scroll = driver.execute_script("return document.documentElement.scrollWidth")
    assert scroll <= inner, f"page is {scroll}px wide in a {inner}px viewport"
    assert _errors(dash_duo) == []
