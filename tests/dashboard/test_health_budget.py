"""The Health page's REST budget column (from the ingester heartbeat's ``details.budget``)."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.pages.health import budget_text


@pytest.mark.parametrize(("details", "text"), [
    (None, "—"),
    ({}, "—"),
    ({"budget": None}, "—"),
    ({"budget": {"calls_per_min": 12, "budget_per_min": 20, "headroom": 8, "rate_limited": 0, "catching_up": [],
                 "lowered_by_broker": False}}, "12/20 calls/min · headroom 8 · 429s 0"),
    ({"budget": {"calls_per_min": 41, "budget_per_min": 60, "headroom": 19, "rate_limited": 2,
                 "catching_up": ["gap repair"], "lowered_by_broker": False}},
     "41/60 calls/min · headroom 19 · 429s 2 · catching up"),
    ({"budget": {"calls_per_min": 5, "budget_per_min": 5, "headroom": 0, "rate_limited": 0, "catching_up": [],
                 "lowered_by_broker": True}}, "5/5 calls/min · headroom 0 · 429s 0 · lowered by X-RateLimit-Remaining"),
])
def test_budget_text(details: Any, text: str) -> None:
    assert budget_text(details) == text
