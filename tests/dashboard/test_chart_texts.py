"""Chart texts readable at a phone's width: the destination page's heatmaps (monthly returns, daily P&L
calendar), its P&L by symbol (long OCC option symbols) and the trade drill-down's level labels.

The figures are drawn by the dashboard's own plotly.js bundle in headless Chromium, in a card as wide
as the destination page gives them at 390 px, and read back with :mod:`scripts.page_probe` (the visual
tests' probe): no two texts overlap, none is drawn under 8 px, ticks stay upright.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dashboard.components import figures
from dashboard.static import PLOTLY_BUNDLE
from scripts import page_probe

PHONE_CARD_PX = 390 - 2 * 12 - 2 * 16  # the window less the page's and the card's padding
DESKTOP_CARD_PX = 640


def _monthly() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    table = pd.DataFrame(rng.normal(0, 0.05, (3, 12)), index=[2024, 2025, 2026], columns=range(1, 13))
    table.iloc[0, :4] = np.nan
    table.iloc[2, 11], table.iloc[1, 0] = -0.1234, 0.2567  # the widest cell texts: two digits and a sign
    return table


def _daily_pl() -> pd.Series:
    days = pd.bdate_range("2025-11-03", "2026-11-30")
    return pd.Series(np.random.default_rng(8).normal(0, 800, len(days)), index=days)


@pytest.mark.parametrize(("value", "text"), [
    (-0.025, "\u22122.5"), (0.0031, "0.3"), (0.1234, "12"), (-0.0996, "\u221210"), (-0.0004, "0.0"),
    (0.0, "0.0"), (float("nan"), ""),
])
def test_percent_points(value: float, text: str) -> None:
    assert figures.percent_points(value) == text


def test_calendar_marks_the_quarters_with_the_year_on_january() -> None:
    fig = figures.daily_calendar(_daily_pl(), None).to_plotly_json()
    assert list(fig["layout"]["xaxis"]["ticktext"]) == ["Jan 2026", "Apr", "Jul", "Oct"]


def test_a_calendar_starting_mid_year_names_the_year_on_its_first_label() -> None:
    days = pd.bdate_range("2026-06-01", "2026-11-30")
    fig = figures.daily_calendar(pd.Series(1.0, index=days), None).to_plotly_json()
    assert list(fig["layout"]["xaxis"]["ticktext"]) == ["Jul 2026", "Oct"]


@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        raise pytest.UsageError("browser tests need chromium and chromedriver: run `make system-deps`")
    if not PLOTLY_BUNDLE.exists():
        raise pytest.UsageError("the plotly.js bundle is missing: run `make node-deps`")
    from scripts.look import browser

    with contextlib.closing(browser(1400, 900)) as driver:
        yield driver


def _draw(chrome: Any, tmp_path: Path, figure: dict[str, Any], width_px: int, height_px: int) -> page_probe.Page:
    page = tmp_path / "figure.html"
    page.write_text(
        f"<html><body style='margin:0'><script src='{PLOTLY_BUNDLE.as_uri()}'></script>"
        f"<div class='card' style='width:{width_px}px'><div id='g' style='height:{height_px}px'></div></div>"
        f"<script>const f = {json.dumps(figure, default=str)};"
        "Plotly.newPlot('g', f.data, f.layout, {responsive: true, displayModeBar: false});</script></body></html>")
    chrome.get(page.as_uri())
    page_probe.settle(chrome, timeout_s=60)
    return page_probe.probe(chrome)


@pytest.mark.e2e
@pytest.mark.parametrize("width_px", [PHONE_CARD_PX, DESKTOP_CARD_PX])
@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("name", ["monthly", "calendar"])
def test_heatmap_texts_do_not_overlap_and_stay_readable(chrome: Any, tmp_path: Path, name: str, theme: str,
                                                        width_px: int) -> None:
    # Arrange
    if name == "monthly":
        fig, height = figures.monthly_heatmap(_monthly(), theme), figures.MONTHLY_HEIGHT_PX
    else:
        fig, height = figures.daily_calendar(_daily_pl(), theme), figures.CALENDAR_HEIGHT_PX

    # Act
    page = _draw(chrome, tmp_path, figures.plain(fig), width_px, height)

    # Assert
    assert page_probe.problems(page) == []
    (chart,) = page.data["charts"]
    texts = [t["text"] for t in chart["texts"]]
    assert {"Jan", "Apr"} <= set(texts) or "Jan 2026" in texts
    rotated = [t for t in chart["texts"] if t["text"] in figures.MONTHS and t["box"]["h"] > t["box"]["w"]]
    assert rotated == []  # a month turned on its side reads sideways


@pytest.mark.e2e
@pytest.mark.parametrize("width_px", [PHONE_CARD_PX, DESKTOP_CARD_PX])
@pytest.mark.parametrize(("entry", "exit_", "stop", "target"), [
    (149.99, 149.99, 149.5, 150.5),  # a scratch trade: entry and exit at one price
    (100.0, 104.0, 99.8, 104.1),     # a tight stop under the entry, the target just above the exit
])
def test_trade_level_labels_do_not_overlap(chrome: Any, tmp_path: Path, entry: float, exit_: float, stop: float,
                                           target: float, width_px: int) -> None:
    # Arrange
    points: list[dict[str, object]] = [
        {"x": "2026-03-02T14:31:00", "price": entry, "side": "buy", "qty": 10},
        {"x": "2026-03-02T15:02:00", "price": exit_, "side": "sell", "qty": 10},
    ]
    levels: dict[str, float | None] = {"Entry": entry, "Exit": exit_, "Stop": stop, "Take profit": target}
    fig = figures.trade_path(points, levels, None, tz_label="New York")

    # Act
    page = _draw(chrome, tmp_path, figures.plain(fig), width_px, figures.TRADE_PATH_HEIGHT_PX)

    # Assert: no overlap, and every level still named with its price
    assert page_probe.problems(page) == []
    labels = " ".join(t["text"] for t in page.data["charts"][0]["texts"])
    for name, value in levels.items():
        assert f"{name} {value:,.2f}" in labels


@pytest.mark.e2e
@pytest.mark.parametrize("width_px", [PHONE_CARD_PX, DESKTOP_CARD_PX])
@pytest.mark.parametrize("name", ["rolling", "aggregate"])
def test_secondary_axes_read_in_their_units_without_repeated_ticks(chrome: Any, tmp_path: Path, name: str,
                                                                   width_px: int) -> None:
    # Arrange: a volatility within one point (7.0-7.9 %), a growth of $1 within a few cents
    x = [str(d.date()) for d in pd.bdate_range("2026-06-01", periods=120)]
    wave = np.sin(np.linspace(0, 6, len(x)))
    if name == "rolling":
        fig = figures.rolling(x, list(1 + wave), list(0.0745 + 0.004 * wave), window=63, tz_label="New York",
                              theme=None)
        height = figures.PANEL_HEIGHT_PX
    else:
        fig = figures.aggregate(x, list(300_000 + 20_000 * wave), list(1.01 + 0.05 * wave), tz_label="New York",
                                theme=None)
        height = figures.AGGREGATE_HEIGHT_PX

    # Act
    page = _draw(chrome, tmp_path, figures.plain(fig), width_px, height)

    # Assert: no repeated tick labels, and the growth of $1 reads in the page's money format
    assert page_probe.problems(page) == []
    (chart,) = page.data["charts"]
    right = next(a["texts"] for a in chart["ticks"] if a["name"] == "yaxis2")
    assert right
    if name == "aggregate":
        assert all(t.startswith("$") for t in right), right


# The destination page's "P&L by symbol": the best 12 and the worst 12 symbols, long OCC option symbols among them
BREAKDOWN = {**{f"MSFT2612{d:02d}P00{400 + d:03d}000": -100.0 * d for d in range(1, 11)},
             **{f"SPY2612{d:02d}C00{500 + d:03d}500": 50.0 * d for d in range(11, 21)},
             "AAPL": 4100.0, "GOOGL": -20.0, "BRK.B": 310.0, "XYZ": -0.5}


@pytest.mark.parametrize(("symbol", "label"), [
    ("AAPL250117C00150000", "AAPL 150C 17 Jan 25"), ("SPY261204P00512500", "SPY 512.5P 4 Dec 26"),
    ("AAPL", "AAPL"), ("BTC/USD", "BTC/USD"), ("AAPL2501", "AAPL2501"),
])
def test_symbol_labels_spell_an_option_out_short(symbol: str, label: str) -> None:
    assert figures.symbol_label(symbol) == label


@pytest.mark.e2e
@pytest.mark.parametrize("width_px", [PHONE_CARD_PX, DESKTOP_CARD_PX])
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_pl_by_symbol_names_every_symbol_without_overlap(chrome: Any, tmp_path: Path, theme: str,
                                                         width_px: int) -> None:
    # Arrange
    by_symbol = pd.Series(BREAKDOWN).sort_values(ascending=False)
    fig = figures.bars(list(by_symbol.index), list(by_symbol.to_numpy()), "Net P&L", theme)

    # Act
    page = _draw(chrome, tmp_path, figures.plain(fig), width_px, figures.GRAPH_HEIGHT_PX["dest-by-symbol"])

    # Assert: no text over another, and every symbol named (none left out for lack of room)
    assert page_probe.problems(page) == []
    texts = {t["text"] for t in page.data["charts"][0]["texts"]}
    missing = [s for s in by_symbol.index if figures.symbol_label(s) not in texts and s not in texts]
    assert missing == []


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["equity", "aggregate"])
def test_the_mode_bar_leaves_the_range_buttons_free_on_a_phone(chrome: Any, tmp_path: Path, name: str) -> None:
    """With the page's own graph config and stylesheets, in a phone-wide window (the stylesheets' media
    queries apply): the mode bar, which a tap shows, must not sit on the range buttons."""
    from dashboard.pages.common import GRAPH_CONFIG
    from dashboard.static import ASSETS_DIR, _bootstrap_dir

    # Arrange
    x = [str(d.date()) for d in pd.bdate_range("2026-01-05", periods=200)]
    wave = list(100_000 + 5_000 * np.sin(np.linspace(0, 6, len(x))))
    if name == "equity":
        drawdown = [w / max(wave[:k + 1]) - 1 for k, w in enumerate(wave)]
        fig = figures.equity_underwater(x, wave, x, drawdown, [], [], [], tz_label="New York", theme=None)
        slot = "dest-equity"
    else:
        fig = figures.aggregate(x, wave, [w / 100_000 for w in wave], tz_label="New York", theme=None)
        slot = "ov-aggregate"
    # the page's stylesheets: bootstrap's (its font sizes) and the app's (their media queries)
    sheets = [_bootstrap_dir() / "bootstrap.min.css", *sorted(ASSETS_DIR.glob("*.css"))]
    styles = "".join(f"<link rel='stylesheet' href='{p.as_uri()}'>" for p in sheets)
    page = tmp_path / "figure.html"
    page.write_text(
        f"<html><head><meta name='viewport' content='width=device-width'>{styles}</head><body style='margin:0'>"
        f"<script src='{PLOTLY_BUNDLE.as_uri()}'></script>"
        f"<div class='card' style='width:{PHONE_CARD_PX}px'><div id='g' style='height:{figures.GRAPH_HEIGHT_PX[slot]}px'>"
        f"</div></div><script>const f = {json.dumps(figures.plain(fig), default=str)};"
        f"Plotly.newPlot('g', f.data, f.layout, {json.dumps(GRAPH_CONFIG)});</script></body></html>")
    size = chrome.get_window_size()
    chrome.set_window_size(390, 844)
    try:
        # Act
        chrome.get(page.as_uri())
        page_probe.settle(chrome, timeout_s=60)
        probed = page_probe.probe(chrome)
    finally:
        chrome.set_window_size(size["width"], size["height"])

    # Assert
    # Assert: the range buttons were drawn and nothing covers them (the figures' other texts at a phone's
    # width are the business of the tests above and of the live stack's visual tests)
    assert "range buttons" in {o["name"] for o in probed.data["charts"][0]["overlays"]}
    assert [p for p in page_probe.problems(probed) if "mode bar" in p] == []
