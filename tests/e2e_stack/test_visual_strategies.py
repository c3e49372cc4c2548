"""The strategy pages and the destination page's strategy section, looked at the way tests/e2e_stack/
test_visual.py looks at the others: the real workers (with the simulator bots' strategy prefixes in the
destinations file, and SPY's daily bars fetched from the simulator within the REST budget), the
dashboard under gunicorn, one headless Chromium, and :mod:`scripts.page_probe` on every page: charts
with data on date axes, no overlap, clean text, one money format, a clean console."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver.support.ui import Select, WebDriverWait

from bench import stack as stack_module
from bench.stack import Stack, StackConfig
from scripts import page_probe
from scripts.look import browser

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(900)]

WAIT_S = 120  # liveness bound of each wait below (the stack generates and ingests its history first)
DESKTOP = (1400, 1000)
PHONE = (390, 844)
# the simulator bots' prefixes (as in destinations.example.toml), so the demo data is attributed
STRATEGIES_TOML = """
[[strategies]]
name = "momentum breakout"
prefix = "momo-brk-"

[[strategies]]
name = "momentum"
prefix = "momo-"

[[strategies]]
name = "mr_{1}"
pattern = "^mr_([a-z]+)-"
"""


def _count(stack: Stack, sql: str) -> int:
    return int(stack.query(sql)[0][0])


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        raise pytest.UsageError("browser tests need chromium and chromedriver: run `make system-deps`")
    plain = stack_module.destinations_toml
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stack_module, "destinations_toml", lambda n, url: plain(n, url) + STRATEGIES_TOML)
        # 120 days of history as in test_visual.py: the destination page's rolling charts need a full window
        # Alpaca's whole allowance as the budget: at the default 20 a minute, SPY's first bars (reconciliation
        # priority, the lowest) wait about a minute for the start-up's catch-up calls to leave the window.
        # That is the budget working (tests/workers/test_rest_budget*.py), not what this module looks at.
        config = StackConfig(destinations=2, history_days=120, bot_rate=1.0, web="gunicorn", web_workers=2,
                             env={"SNAPSHOT_SEC": "3600", "UI_SNAPSHOT_SEC": "1", "REST_BUDGET_CALLS_PER_MIN": "200"})
        with Stack(config) as running:
            running.wait_ready(WAIT_S)
            for slug in running.slugs:
                running.wait_for(lambda s=slug: _count(running, f'SELECT count(*) FROM public."closed_trades_{s}"') > 0,
                                 WAIT_S, f"{slug} round trips")
                running.wait_for(lambda s=slug: _count(running, f'SELECT count(*) FROM public."equity_full_{s}"') > 60,
                                 WAIT_S, f"{slug} equity history")
            running.wait_for(lambda: _count(running, "SELECT count(*) FROM public.ch_strategy_rules") == 3,
                             WAIT_S, "the strategy rules published")
            running.wait_for(lambda: _count(running, "SELECT count(*) FROM public.benchmark_bars WHERE symbol = 'SPY'")
                             > 20, WAIT_S, "SPY's daily bars")
            yield running


@pytest.fixture(scope="module")
def driver(stack: Stack) -> Iterator[Any]:
    with contextlib.closing(browser(*DESKTOP)) as chrome:
        yield chrome


def _look_here(driver: Any) -> list[str]:
    page_probe.settle(driver)
    # AG Grid's root has content-visibility: auto, so a grid away from the viewport (a phone's long page)
    # is not rendered and its headers read as empty text to the probe: render every grid, as when in view
    driver.execute_script("const s = document.createElement('style');"
                          "s.textContent = '.ag-root-wrapper { content-visibility: visible !important; }';"
                          "document.head.appendChild(s);")
    page_probe.settle(driver)
    page = page_probe.probe(driver)
    return page_probe.problems(page) + [f"{page.path}: console: {e}" for e in page_probe.console_errors(driver)]


def _strategy_path(stack: Stack, driver: Any) -> str:
    driver.get(stack.web_url + "/strategies")
    page_probe.settle(driver)
    href = driver.execute_script("const a = document.querySelector('a[href=\"/strategy/momentum\"]');"
                                 "return a && a.getAttribute('href');")
    assert href, "no card for the momentum strategy"
    return str(href)


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
@pytest.mark.parametrize("name", ["strategies", "strategy", "compare"])
def test_strategy_pages_look_right(stack: Stack, driver: Any, name: str, size: tuple[int, int]) -> None:
    # Arrange
    driver.set_window_size(*DESKTOP)
    path = {"strategies": "/strategies", "compare": "/compare"}.get(name) or _strategy_path(stack, driver)
    driver.set_window_size(*size)
    try:
        # Act
        driver.get(stack.web_url + path)
        problems = _look_here(driver)
        overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    finally:
        driver.set_window_size(*DESKTOP)

    # Assert
    assert problems == []
    assert overflow <= 0


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_destination_strategy_section_looks_right(stack: Stack, driver: Any, size: tuple[int, int]) -> None:
    # Arrange: the destination page with its strategy section mounted (the account against SPY)
    driver.set_window_size(*size)
    try:
        driver.get(stack.web_url + f"/destination/{stack.slugs[0]}")
        WebDriverWait(driver, WAIT_S).until(lambda d: d.find_elements("css selector", "#dest-strat-growth .main-svg"))
        every = _look_here(driver)
        traces = driver.execute_script(
            "const g = document.querySelector('#dest-strat-growth .js-plotly-plot');"
            "return g && g.data ? g.data.map(t => t.name) : [];")

        # Act: one strategy chosen
        Select(driver.find_element("css selector", "#dest-strat")).select_by_visible_text("momentum")
        WebDriverWait(driver, WAIT_S).until(
            lambda d: d.find_elements("css selector", "#dest-strat-trades .ag-cell[col-id='trade_id']"))
        narrowed = _look_here(driver)
        overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    finally:
        driver.set_window_size(*DESKTOP)

    # Assert
    assert "SPY" in traces
    assert every == []
    assert narrowed == []
    assert overflow <= 0
