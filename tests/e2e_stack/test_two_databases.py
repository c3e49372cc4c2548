"""The whole stack with two databases: the time series live where TIMESCALE_LIVE_CONN_STRING points.

The stack of :mod:`bench.stack` (embedded PostgreSQL, simulator, ``python -m workers all``, the
dashboard), with a second database on the same server as the time-series store: the workers write
``equity_full_<slug>`` and ``price_bars`` there, the primary database never holds them, and the
dashboard's equity export and KPIs read them from there.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests

from bench.stack import Stack, StackConfig
from core.db import connect, migrate
from core.destinations import equity_table, load_destinations
from core.dsn import parse_dsn
from core.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

WAIT_S = 60  # liveness bound for the waits below, not a timing assertion
SERIES_DB = "ch_series"


class TwoDatabaseStack(Stack):
    """A :class:`Stack` whose time-series store is a second database on its server."""

    series_dsn = ""

    def _settings(self) -> Settings:
        return Settings(postgresql_live_conn_string=self.dsn, timescale_live_conn_string=self.series_dsn,
                        data_dir=str(self.tmp / "data"))

    def _migrate(self) -> None:
        admin = connect(self.dsn)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{SERIES_DB}"')
        admin.close()
        self.series_dsn = parse_dsn(self.dsn).with_dbname(SERIES_DB).uri()
        self.config.env["TIMESCALE_LIVE_CONN_STRING"] = self.series_dsn  # workers and dashboard
        conn = connect(self.dsn)
        try:
            migrate(conn, self._settings(), load_destinations(self.dest_file, self.tmp / "none.toml"))
        finally:
            conn.close()

    def series_query(self, sql: str) -> list[tuple[object, ...]]:
        conn = connect(self.series_dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()


@pytest.fixture
def stack() -> Iterator[TwoDatabaseStack]:
    with TwoDatabaseStack(StackConfig(destinations=1, env={"SNAPSHOT_SEC": "1"})) as running:
        yield running


def tables(query: object) -> set[str]:
    rows = query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")  # type: ignore[operator]
    return {str(r[0]) for r in rows}


def test_workers_write_and_the_dashboard_reads_the_time_series_in_their_own_database(stack: TwoDatabaseStack) -> None:
    # Arrange: the workers own the destination; a position makes the feed subscribe and bars start
    stack.wait_ready(WAIT_S)
    (slug,) = stack.slugs
    equity = equity_table(slug)
    order = stack.admin("/fill", {"account": stack.names[0], "symbol": "MSFT", "side": "buy", "qty": "3"})
    assert order["status"] == "filled"

    # Act: wait for the manager's snapshots and one-minute bars
    stack.wait_for(lambda: stack.open_positions(slug), WAIT_S, f"open_trades_{slug} row")
    stack.wait_for(lambda: stack.series_query(f'SELECT count(*) FROM public."{equity}"')[0][0] >= 2, WAIT_S,
                   "equity snapshots in the time-series database")
    stack.wait_for(lambda: stack.series_query("SELECT count(*) FROM public.price_bars WHERE symbol = 'MSFT'")[0][0],
                   WAIT_S, "MSFT price bars in the time-series database")

    # Assert: the tables live where they belong, and nowhere else
    primary, series = tables(stack.query), tables(stack.series_query)
    assert {equity, "price_bars"} <= series
    assert not {equity, "price_bars"} & primary
    assert {f"open_trades_{slug}", "ch_versions", "ch_destinations"} <= primary
    assert stack.query("SELECT equity_version FROM public.ch_versions WHERE slug = %s", (slug,))[0][0] >= 1

    # ... and the dashboard reads them there: the equity export holds the stored snapshots
    stored = stack.series_query(f'SELECT count(*) FROM public."{equity}"')[0][0]
    resp = requests.get(f"{stack.web_url}/export/{slug}/equity.csv", timeout=30)
    assert resp.status_code == 200, resp.text[:500]
    exported = list(csv.DictReader(io.StringIO(resp.text)))
    assert len(exported) >= stored >= 2
    metrics = requests.get(f"{stack.web_url}/export/{slug}/metrics.csv", timeout=30)
    assert metrics.status_code == 200, metrics.text[:500]
    # ... and so does the overview: its cards carry the last snapshot (there) to the live marks
    latest = stack.series_query(f'SELECT equity FROM public."{equity}" ORDER BY ts DESC LIMIT 1')[0][0]
    card = overview_card_equity(stack.web_url)
    assert abs(card - latest) <= latest * Decimal("0.01"), (card, latest)
    for name in ("simulator", "workers", "web"):
        assert stack.error_lines(name) == [], f"{name} logged errors:\n{stack.log_tail(name)}"


def overview_card_equity(web_url: str) -> Decimal:
    """The equity on the overview's first card, as the page's render callback returns it over HTTP."""
    payload = {
        "output": "..ov-cards.children...ov-aggregate.figure...ov-aggregate-wrap.style..",
        "outputs": [{"id": "ov-cards", "property": "children"}, {"id": "ov-aggregate", "property": "figure"},
                    {"id": "ov-aggregate-wrap", "property": "style"}],
        "inputs": [{"id": "ov-versions", "property": "data", "value": {}},
                   {"id": "theme-store", "property": "data", "value": "light"},
                   {"id": "tz-choice", "property": "value", "value": "utc"},
                   {"id": "browser-tz", "property": "data", "value": None}],
        "changedPropIds": ["ov-versions.data"],
    }
    resp = requests.post(f"{web_url}/_dash-update-component", json=payload, timeout=60)
    assert resp.status_code == 200, resp.text[:500]

    def texts(node: Any) -> list[str]:
        if isinstance(node, list):
            return [t for child in node for t in texts(child)]
        if not isinstance(node, dict):
            return []
        props = node.get("props", {})
        own = [str(props.get("children"))] if "ch-card-equity" in str(props.get("className", "")).split() else []
        return own + texts(props.get("children"))

    shown = texts(resp.json()["response"]["ov-cards"]["children"])
    assert shown, "no equity card on the overview"
    return Decimal(re.sub(r"[$,]", "", shown[0].replace("\u2212", "-")))
