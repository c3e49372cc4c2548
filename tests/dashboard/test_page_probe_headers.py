"""The page probe's grid-header and mode-bar checks, on probed data as the browser script returns it."""

from __future__ import annotations

from typing import Any

from scripts import page_probe


def _page(headers: list[dict[str, Any]] | None = None, overlays: list[dict[str, Any]] | None = None) -> page_probe.Page:
    chart = {"id": "g", "card": None, "texts": [], "ticks": [], "overlays": overlays or [], "plot_areas": [
        {"x": 0, "y": 40, "w": 300, "h": 200}], "card_box": None, "svg_box": None, "points": 2, "traces": 1, "axes": []}
    return page_probe.Page("/p", {"cards": [], "charts": [chart], "text": "", "svg_text": [], "verbatim": [],
                                  "headers": headers or []})


def test_an_empty_or_cut_header_is_a_problem() -> None:
    headers = [{"grid": "dest-positions", "col": "qty", "text": "Qty", "cut": False},
               {"grid": "dest-positions", "col": "right", "text": "", "cut": False},
               {"grid": "dest-closed", "col": "entry_time", "text": "Entry (America/New_York (EST))", "cut": True}]

    problems = page_probe.problems(_page(headers))

    assert problems == ["/p: grid #dest-positions: column 'right' has an empty header",
                        "/p: grid #dest-closed: the header 'Entry (America/New_York (EST))' of column 'entry_time' "
                        "is cut short"]


def test_the_mode_bar_on_the_range_buttons_is_a_problem_over_the_plot_it_is_not() -> None:
    buttons = {"name": "range buttons", "box": {"x": 0, "y": 0, "w": 200, "h": 20}}
    on_buttons = {"name": "mode bar", "box": {"x": 150, "y": 0, "w": 150, "h": 24}}
    over_plot = {"name": "mode bar", "box": {"x": 150, "y": 45, "w": 150, "h": 24}}

    assert page_probe.problems(_page(overlays=[buttons, on_buttons])) == [
        "/p: chart #g: range buttons drawn over the mode bar"]
    assert page_probe.problems(_page(overlays=[buttons, over_plot])) == []
