"""The strategies, strategy and comparison pages in headless Chromium: drawn with data, no console
errors, the benchmark toggle redraws the chart, no horizontal overflow at phone width."""

from __future__ import annotations

from typing import Any

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from core.db import connect
from dashboard.app import create_app
from tests.dashboard.strategy_seed import seed_strategies
from tests.e2e.conftest import E2EData

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
WAIT_S = 20  # liveness bound for waits (not a timing assertion)
N = 4


@pytest.fixture(scope="module")
def tagged(e2e_db: E2EData) -> E2EData:
    seed_strategies(e2e_db.dsn, e2e_db.settings, e2e_db.slugs, N)
    conn = connect(e2e_db.dsn)
    with conn, conn.cursor() as cur:
        cur.execute("""INSERT INTO public.benchmark_bars (symbol, day, open, high, low, close)
                       SELECT 'SPY', d::date, 1, 1, 1, 400 * exp(0.0003 * i + 0.01 * sin(i))
                       FROM generate_series(now() - interval '400 days', now(), interval '1 day') WITH ORDINALITY AS g(d, i)
                       WHERE extract(isodow FROM d) < 6 ON CONFLICT DO NOTHING""")
    conn.close()
    return e2e_db


@pytest.fixture
def app(tagged: E2EData):
    dash_app = create_app(tagged.settings)
    yield dash_app
    runtime = dash_app.server.extensions["coldharbour"]
    if runtime.hub is not None:
        runtime.hub.stop()
    runtime.model.engine.dispose()


def _errors(dash_duo: Any) -> list[dict[str, Any]]:
    return [e for e in dash_duo.get_logs() or [] if e.get("level") == "SEVERE"]


def _traces(dash_duo: Any, graph_id: str) -> list[str]:
    return dash_duo.driver.execute_script(
        "const g = document.querySelector(arguments[0] + ' .js-plotly-plot');"
        "return g && g.data ? g.data.map(t => t.name) : [];", f"#{graph_id}")


def test_strategies_page(dash_duo: Any, app: Any) -> None:
    dash_duo.start_server(app)
    dash_duo.driver.get(dash_duo.server_url + "/strategies")
    dash_duo.wait_for_element("#strats-cards .ch-dest-card", timeout=WAIT_S)
    assert len(dash_duo.find_elements("#strats-cards .ch-dest-card")) == N + 1  # and unattributed
    assert "s0" in dash_duo.find_element("#strats-cards").text
    assert _errors(dash_duo) == []


def test_strategy_page_benchmark_toggle(dash_duo: Any, app: Any) -> None:
    dash_duo.start_server(app)
    dash_duo.driver.get(dash_duo.server_url + "/strategy/s1")
    dash_duo.wait_for_element("#strat-growth .main-svg", timeout=WAIT_S)
    dash_duo.wait_for_element("#strat-trades .ag-body .ag-cell[col-id='trade_id']", timeout=WAIT_S)
    assert "beta vs spy" in dash_duo.find_element("#strat-kpis").text.lower()  # labels are upper-cased by CSS
    assert "SPY" in _traces(dash_duo, "strat-growth")
    dash_duo.driver.execute_script("document.querySelector('#strat-bench').click()")
    WebDriverWait(dash_duo.driver, WAIT_S).until(
        lambda _d: "SPY" not in _traces(dash_duo, "strat-growth"), "benchmark still drawn")
    assert "beta vs" not in dash_duo.find_element("#strat-kpis").text.lower()
    assert _errors(dash_duo) == []


@pytest.mark.parametrize("width", [1400, 390])
def test_compare_page(dash_duo: Any, app: Any, width: int) -> None:
    dash_duo.start_server(app)
    driver = dash_duo.driver
    driver.set_window_size(width, 900)
    driver.get(dash_duo.server_url + "/compare")
    dash_duo.wait_for_element("#cmp-table table", timeout=WAIT_S)
    dash_duo.wait_for_element("#cmp-growth .main-svg", timeout=WAIT_S)
    WebDriverWait(driver, WAIT_S).until(lambda _d: "Benchmark SPY" in _traces(dash_duo, "cmp-growth"),
                                        "benchmark curve missing")
    assert len(dash_duo.find_elements("#cmp-table tbody tr")) == N
    inner = driver.execute_script("return window.innerWidth")
    scroll = driver.execute_script("return document.documentElement.scrollWidth")
    assert scroll <= inner, f"page is {scroll}px wide in a {inner}px viewport"
    assert _errors(dash_duo) == []
