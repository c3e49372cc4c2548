"""The first look, tested the way a person looks: pages served by the real workers from simulator data.

One stack for the module (:mod:`bench.stack`: embedded PostgreSQL, the simulator with 120 days of history
and its bot trading, ``python -m workers all``, the dashboard under gunicorn as in production) and one
headless Chromium that goes from page to page. On every page :mod:`scripts.page_probe` reads the DOM:
every chart has data, every time axis is a date axis within its data's dates, no card or chart overlaps
another, no NaN/Infinity/undefined/None or scientific notation, one money format, and the console stays
clean. The overview's equity must agree with the broker's (cash + live marks).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from bench.stack import Stack, StackConfig
from scripts import page_probe
from scripts.look import browser

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(900)]

WAIT_S = 120  # liveness bound of each wait below (the stack generates and ingests its history first)
DESKTOP = (1400, 1000)
PHONE = (390, 844)
# the equity card follows the broker within this share of equity: the marks of both sides move between
# the two reads (the simulator keeps quoting), a lag of a snapshot interval is far larger
EQUITY_TOLERANCE = Decimal("0.0005")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        raise pytest.UsageError("browser tests need chromium and chromedriver: run `make system-deps`")
    # hourly snapshots: between two of them only the live marks can move the overview's equity
    config = StackConfig(destinations=2, history_days=120, bot_rate=1.0, web="gunicorn", web_workers=2,
                         env={"SNAPSHOT_SEC": "3600", "UI_SNAPSHOT_SEC": "1"})
    with Stack(config) as running:
        running.wait_ready(WAIT_S)
        for slug in running.slugs:
            running.wait_for(lambda s=slug: _count(running, f"closed_trades_{s}") > 0, WAIT_S, f"{slug} round trips")
            running.wait_for(lambda s=slug: _count(running, f"equity_full_{s}") > 60, WAIT_S, f"{slug} equity history")
        yield running


@pytest.fixture(scope="module")
def driver(stack: Stack) -> Iterator[Any]:
    with contextlib.closing(browser(*DESKTOP)) as chrome:
        yield chrome


def _count(stack: Stack, table: str) -> int:
    return int(stack.query(f'SELECT count(*) FROM public."{table}"')[0][0])


def _recent_trade(stack: Stack, slug: str) -> str:
    """The latest round trip: recent enough for the manager's one-minute bars to draw its price path."""
    return str(stack.query(f'SELECT trade_id FROM public."closed_trades_{slug}" ORDER BY exit_time DESC LIMIT 1')[0][0])


def _look(driver: Any, url: str) -> list[str]:
    driver.get(url)
    return _look_here(driver)


def _look_here(driver: Any) -> list[str]:
    page_probe.settle(driver)
    page = page_probe.probe(driver)
    return page_probe.problems(page) + [f"{page.path}: console: {e}" for e in page_probe.console_errors(driver)]


PAGES = ["overview", "destination", "destination-other", "trade", "activities", "health"]


def _path(stack: Stack, name: str) -> str:
    slug, other = stack.slugs
    return {"overview": "/", "destination": f"/destination/{slug}", "destination-other": f"/destination/{other}",
            "trade": f"/destination/{slug}/trade/{_recent_trade(stack, slug)}", "activities": "/activities",
            "health": "/health"}[name]


@pytest.mark.parametrize("name", PAGES)
def test_page_has_data_dates_no_overlap_clean_text_one_money_format(stack: Stack, driver: Any, name: str) -> None:
    # Arrange: the same browser went through the pages before this one
    driver.set_window_size(*DESKTOP)

    # Act
    problems = _look(driver, stack.web_url + _path(stack, name))

    # Assert
    assert problems == []


def test_destination_opened_from_the_overview_then_resized_keeps_its_layout(stack: Stack, driver: Any) -> None:
    # Arrange: the overview, then a click on a destination card (the app's own navigation)
    driver.set_window_size(*DESKTOP)
    assert _look(driver, stack.web_url + "/") == []
    slug = stack.slugs[0]
    card = driver.find_element("css selector", f"a[href='/destination/{slug}']")
    driver.execute_script("arguments[0].click();", card)
    WebDriverWait(driver, WAIT_S).until(lambda d: d.current_url.endswith(f"/destination/{slug}"))
    assert _look_here(driver) == []

    # Act: the width changes under the drawn charts (a scrollbar appearing, a window resized)
    driver.set_window_size(DESKTOP[0] - 200, DESKTOP[1])
    after_resize = _look_here(driver)
    driver.set_window_size(*DESKTOP)

    # Assert
    assert after_resize == []


@pytest.mark.parametrize("name", ["overview", "destination", "trade"])
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_dark_theme_and_phone_width(stack: Stack, driver: Any, name: str, theme: str) -> None:
    from scripts.look import set_theme

    set_theme(driver, stack.web_url, theme)
    try:
        driver.set_window_size(*PHONE)
        phone = _look(driver, stack.web_url + _path(stack, name))
        overflow, wide = _overflow(driver)
    finally:
        set_theme(driver, stack.web_url, "light")
        driver.set_window_size(*DESKTOP)
    assert phone == []
    assert overflow <= 0, f"the page is {overflow} px wider than the phone; past its right edge: {wide}"


# How far the page reaches past the window's right edge (px), and what does (tag, id, right edge, text)
OVERFLOW_JS = """const W = window.innerWidth; const wide = [];
for (const el of document.querySelectorAll('body *')) {
  const r = el.getBoundingClientRect();
  if (r.width > 0 && r.right > W + 0.5) { wide.push([el.tagName, el.id, Math.round(r.right), (el.textContent || '').slice(0, 40)]); }
}
return [document.documentElement.scrollWidth - W, wide.slice(0, 6)];"""
OVERFLOW_SETTLE_S = 5.0  # a chart redrawn as new bars arrive may be wider for a moment; a layout that stays wide fails


def _overflow(driver: Any) -> tuple[int, list[Any]]:
    reading = driver.execute_script(OVERFLOW_JS)
    deadline = time.monotonic() + OVERFLOW_SETTLE_S
    while reading[0] > 0 and time.monotonic() < deadline:
        time.sleep(0.25)
        reading = driver.execute_script(OVERFLOW_JS)
    return int(reading[0]), list(reading[1])


# The activities page keeps only the rows in view: two infinite-row-model grids, each drawing the rows of
# its viewport plus AG Grid's rowBuffer (10) on either side; a table of every order is hundreds.
MAX_ROWS_IN_DOM = 100


def test_activities_page_holds_only_the_rows_in_view(stack: Stack, driver: Any) -> None:
    # Arrange: the bot trades, so far more activities and orders are stored than a screen shows
    slug = stack.slugs[0]
    stored = _count_raw(stack, "activities", slug) + _count_raw(stack, "orders", slug)
    driver.set_window_size(*DESKTOP)

    # Act
    problems = _look(driver, stack.web_url + "/activities")
    rows = driver.execute_script("return document.querySelectorAll('tr, .ag-row').length")

    # Assert
    assert problems == []
    assert stored > MAX_ROWS_IN_DOM
    assert rows <= MAX_ROWS_IN_DOM, f"{rows} rows in the page's DOM (of {stored} stored)"


def test_activities_page_shows_the_non_trade_activities_in_words(stack: Stack, driver: Any) -> None:
    from dashboard.pages.activities import type_label

    # Arrange: the newest activities are the bot's fills
    driver.set_window_size(*DESKTOP)
    driver.get(stack.web_url + "/activities")
    page_probe.settle(driver)
    cells = ("return [...document.querySelectorAll('#act-grid .ag-center-cols-container .ag-row')]"
             ".map(r => [...r.querySelectorAll('.ag-cell')].map(c => [c.getAttribute('col-id'), c.innerText]))"
             ".map(Object.fromEntries);")

    # Act: everything but fills
    driver.execute_script("document.querySelectorAll('#act-kind input')[2].click();")
    WebDriverWait(driver, WAIT_S).until(
        lambda d: (rows := d.execute_script(cells))
        and all(r.get("activity_type") not in ("", None, "FILL") and r.get("type_label") for r in rows))
    rows = driver.execute_script(cells)
    problems = _look_here(driver)

    # Assert: each row's type in words, next to its code
    assert problems == []
    assert rows
    assert all(r["type_label"] == type_label(r["activity_type"]) for r in rows), rows[:3]
    assert any(r["type_label"] != r["activity_type"] for r in rows)


def _count_raw(stack: Stack, table: str, slug: str) -> int:
    return int(stack.query(f"SELECT count(*) FROM account_activities.{table} WHERE destination = %s", (slug,))[0][0])


def test_activities_grid_labels_the_non_trade_activities(stack: Stack) -> None:
    import requests

    from dashboard.pages.activities import type_label

    # Arrange: the simulator's history holds deposits, fees, dividends and the like next to the fills
    slug = stack.slugs[0]
    request = {"startRow": 0, "endRow": 100, "sortModel": [{"colId": "ts", "sort": "desc"}],
               "filterModel": {"activity_type": {"filterType": "text", "type": "notEqual", "filter": "FILL"}}}
    payload: dict[str, Any] = {"output": "act-grid.getRowsResponse",
               "outputs": {"id": "act-grid", "property": "getRowsResponse"},
               "inputs": [{"id": "act-grid", "property": "getRowsRequest", "value": request}],
               "state": [{"id": "act-dest", "property": "value", "value": slug},
                         {"id": "tz-choice", "property": "value", "value": "utc"},
                         {"id": "browser-tz", "property": "data", "value": None}],
               "changedPropIds": ["act-grid.getRowsRequest"]}

    # Act
    resp = requests.post(f"{stack.web_url}/_dash-update-component", json=payload, timeout=60)

    # Assert: each row named in words, with the symbol, quantity, amount and description stored for it
    assert resp.status_code == 200, resp.text[:500]
    rows = resp.json()["response"]["act-grid"]["getRowsResponse"]["rowData"]
    assert rows, "no non-trade activity in the grid"
    stored = {r[0]: r[1:] for r in stack.query(
        "SELECT activity_id, symbol, qty, net_amount, description FROM account_activities.activities "
        "WHERE destination = %s AND activity_type <> 'FILL'", (slug,))}
    for row in rows:
        assert row.get("type_label") == type_label(row["activity_type"]), row
        assert row["type_label"] != row["activity_type"] or row["activity_type"] == type_label(row["activity_type"])
        symbol, qty, amount, description = stored[row["activity_id"]]
        assert (row["symbol"], row["description"]) == (symbol, description)
        assert (row["qty"], row["net_amount"]) == (None if qty is None else float(qty),
                                                   None if amount is None else float(amount))


def _card_equity(driver: Any, name: str) -> Decimal:
    text = driver.execute_script(
        "const card = [...document.querySelectorAll('.ch-dest-card')]"
        ".find(c => c.querySelector('.card-header').innerText.includes(arguments[0]));"
        "return card ? card.querySelector('.ch-card-equity').innerText : null;", name)
    assert text, f"no overview card for {name}"
    return Decimal(re.sub(r"[$,]", "", text.replace("\u2212", "-")))


def _broker_equity(stack: Stack, index: int) -> Decimal:
    from alpaca.trading.client import TradingClient

    client = TradingClient(f"PKBENCH{index:011d}", f"bench-secret-{index:06d}", paper=True, url_override=stack.rest_url)
    return Decimal(str(client.get_account().equity))


def test_overview_equity_is_cash_plus_the_live_marks(stack: Stack, driver: Any) -> None:
    # Arrange: the bot rests; a position of our own whose price we then move, long after the last snapshot
    stack.admin("/bot", {"rate": 0})
    try:
        slug, name = stack.slugs[0], stack.names[0]
        symbol = "MSFT"
        start = Decimal(str(stack.admin("/price", {"symbol": symbol, "price": "400"})["price"]))
        stack.admin("/fill", {"account": name, "symbol": symbol, "side": "buy", "qty": "50"})
        moved = start * Decimal("1.2")

        # Act
        stack.admin("/price", {"symbol": symbol, "price": str(moved)})
        stack.wait_for(lambda: stack.query(f'SELECT mark_price FROM public."open_trades_{slug}" WHERE symbol = %s',
                                           (symbol,)) == [(moved,)], WAIT_S, f"{symbol} marked at {moved}")
        driver.set_window_size(*DESKTOP)
        driver.get(stack.web_url + "/")
        page_probe.settle(driver)
        card, broker = _card_equity(driver, name), _broker_equity(stack, 0)
    finally:
        stack.admin("/price", {"symbol": "MSFT", "price": None})
        stack.admin("/bot", {"rate": 1.0})

    # Assert: the headline agrees with the broker's cash + marks, not with the snapshot before the move
    assert abs(card - broker) <= broker * EQUITY_TOLERANCE, (card, broker)
