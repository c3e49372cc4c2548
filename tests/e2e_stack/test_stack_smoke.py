"""The whole product, wired as ``make demo`` wires it: a fill in the simulator reaches the dashboard.

One test, through :mod:`bench.stack` (embedded PostgreSQL, simulator, ``python -m workers all``,
``python -m dashboard`` on free ports in a temp dir; everything stopped afterwards).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from bench.stack import DashClient, Stack, StackConfig

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WAIT_S = 45  # liveness bound for the waits below, not a timing assertion


@pytest.fixture
def stack() -> Iterator[Stack]:
    with Stack(StackConfig(destinations=2)) as running:
        yield running


def test_a_simulator_fill_reaches_the_positions_table_and_the_dashboard(stack: Stack) -> None:
    # Arrange: the workers own both destinations
    stack.wait_ready(WAIT_S)
    slug, other = stack.slugs
    dash = DashClient(stack.web_url)
    positions = dash.find("..dest-positions.rowData")

    # Act: a fill on the first account only
    order = stack.admin("/fill", {"account": stack.names[0], "symbol": "MSFT", "side": "buy", "qty": "7"})
    assert order["status"] == "filled"

    # Assert: the derived table has the row, the other destination stays empty
    rows = stack.wait_for(lambda: stack.open_positions(slug), WAIT_S, f"open_trades_{slug} row")
    assert rows == {"MSFT": Decimal("7")}
    assert stack.open_positions(other) == {}

    # ... and the dashboard's positions callback serves it (the request the browser sends)
    version = stack.query("SELECT pos_version FROM public.ch_versions WHERE slug = %s", (slug,))[0][0]
    resp = dash.call(positions, {"dest-v-pos.data": version, "tz-choice.value": "utc", "dest-slug.data": slug})
    assert resp.status_code == 200, resp.text[:500]
    body = resp.json()["response"]
    row_data = body["dest-positions"]["rowData"]
    assert [(r["symbol"], Decimal(str(r["qty"])), r["side"]) for r in row_data] == [("MSFT", Decimal("7"), "long")]
    assert body["dest-pos-status"]["children"].startswith("1 open")
    for name in ("simulator", "workers", "web"):
        assert stack.error_lines(name) == [], f"{name} logged errors:\n{stack.log_tail(name)}"
