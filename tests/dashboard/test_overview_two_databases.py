"""The overview with two databases: its live equity reads ``equity_full_<slug>`` from the time-series one.

The seeded destinations (``tests.dashboard.seed``) are moved apart the way the workers keep them when
``TIMESCALE_LIVE_CONN_STRING`` names another database: the equity snapshots live only in the
time-series database, the positions and round trips only in the primary one. The overview's cards
and its aggregate chart must read each where it lives (a read of the wrong one fails: the table is
not there).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from dash import Dash

from core.db import connect, migrate
from core.destinations import closed_trades_table, equity_table, open_trades_table
from core.dsn import parse_dsn
from core.schema import quote_ident
from core.settings import Settings
from dashboard.app import create_app
from dashboard.components import fmt
from dashboard.pages import overview
from tests.dashboard.seed import SeedSpec, destination_for, seed

SPECS = (SeedSpec("Alpha Paper", closed_trades=120, equity_points=900),
         SeedSpec("Beta Momentum", closed_trades=40, equity_points=300, open_positions=2))


@dataclass(frozen=True, slots=True)
class TwoDatabases:
    primary_dsn: str
    series_dsn: str
    settings: Settings
    slugs: list[str]


def _one(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> Any:
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
            return row[0] if row else None
    finally:
        conn.close()


def _move_equity(primary_dsn: str, series_dsn: str, slug: str) -> None:
    """Copy ``equity_full_<slug>`` to the time-series database and drop it from the primary one."""
    table = f"public.{quote_ident(equity_table(slug))}"
    buffer = io.StringIO()
    source, target = connect(primary_dsn), connect(series_dsn)
    try:
        with source, source.cursor() as cur:
            cur.copy_expert(f"COPY {table} TO STDOUT", buffer)
        buffer.seek(0)
        with target, target.cursor() as cur:
            cur.copy_expert(f"COPY {table} FROM STDIN", buffer)
        with source, source.cursor() as cur:
            cur.execute(f"DROP TABLE {table}")
    finally:
        source.close()
        target.close()


@pytest.fixture
def two(db_dsn: str, pg_server_dsn: str, settings: Settings) -> Iterator[TwoDatabases]:
    series_name = f"ch_ts_{uuid.uuid4().hex[:12]}"
    admin = connect(pg_server_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{series_name}"')
    try:
        series_dsn = parse_dsn(pg_server_dsn).with_dbname(series_name).uri()
        slugs = seed(db_dsn, settings, SPECS)
        split = settings.replace(timescale_live_conn_string=series_dsn)
        conn = connect(db_dsn)
        try:
            migrate(conn, split, [destination_for(s) for s in SPECS])  # the time-series tables, there
        finally:
            conn.close()
        for slug in slugs:
            _move_equity(db_dsn, series_dsn, slug)
        yield TwoDatabases(db_dsn, series_dsn, split, slugs)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{series_name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def app(two: TwoDatabases) -> Iterator[Dash]:
    dash_app = create_app(two.settings, start_listener=False)
    yield dash_app
    dash_app.server.extensions["coldharbour"].model.dispose()


def _expected_live_equity(two: TwoDatabases, slug: str) -> Decimal:
    """The last snapshot (time-series database) carried to the positions and round trips (primary)."""
    equity = quote_ident(equity_table(slug))
    ts, snapshot, unrealized_then = (
        _one(two.series_dsn, f"SELECT ts FROM public.{equity} ORDER BY ts DESC LIMIT 1"),
        _one(two.series_dsn, f"SELECT equity FROM public.{equity} ORDER BY ts DESC LIMIT 1"),
        _one(two.series_dsn, f"SELECT unrealized_pl FROM public.{equity} ORDER BY ts DESC LIMIT 1"),
    )
    realized = _one(two.primary_dsn, f"SELECT coalesce(sum(net_pl), 0) FROM public."
                                     f"{quote_ident(closed_trades_table(slug))} WHERE exit_time > %s", (ts,))
    unrealized_now = _one(two.primary_dsn, f"SELECT coalesce(sum(unrealized_pl), 0) FROM public."
                                           f"{quote_ident(open_trades_table(slug))}")
    return Decimal(snapshot) + Decimal(realized) + Decimal(unrealized_now) - Decimal(unrealized_then)


def test_the_time_series_live_only_in_their_own_database(two: TwoDatabases) -> None:
    for slug in two.slugs:
        table = equity_table(slug)
        assert _one(two.primary_dsn, "SELECT to_regclass(%s)", (f"public.{table}",)) is None
        assert _one(two.series_dsn, f"SELECT count(*) FROM public.{quote_ident(table)}") > 0
        assert _one(two.series_dsn, "SELECT to_regclass(%s)", (f"public.{closed_trades_table(slug)}",)) is None


def test_live_equity_reads_the_snapshot_from_the_time_series_database(app: Dash, two: TwoDatabases) -> None:
    # Arrange
    model = app.server.extensions["coldharbour"].model
    slug = two.slugs[0]

    # Act
    with app.server.test_request_context("/"):
        live = overview.live_equity(slug, model.open_positions(slug))

    # Assert
    assert live is not None
    assert abs(Decimal(str(live)) - _expected_live_equity(two, slug)) < Decimal("0.01")


def test_overview_cards_and_aggregate_chart_in_two_database_mode(app: Dash, two: TwoDatabases) -> None:
    # Arrange
    client = app.server.test_client()
    client.get("/")
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

    # Act
    response = client.post("/_dash-update-component", json=payload)

    # Assert: every card shows the live equity computed from both databases, the chart has the curve
    assert response.status_code == 200, response.data[:500]
    body = response.get_json()["response"]
    shown = _texts_with_class(body["ov-cards"]["children"], "ch-card-equity")
    expected = [fmt.money(float(_expected_live_equity(two, slug))) for slug in sorted(
        two.slugs, key=lambda s: next(spec.name for spec in SPECS if destination_for(spec).slug == s))]
    assert shown == expected
    traces = body["ov-aggregate"]["figure"]["data"]
    assert len(traces[0]["x"]) > 100


def _texts_with_class(node: Any, class_name: str) -> list[str]:
    """The children of every component in a Dash layout JSON whose className holds ``class_name``."""
    if isinstance(node, list):
        return [t for child in node for t in _texts_with_class(child, class_name)]
    if not isinstance(node, dict):
        return []
    props = node.get("props", {})
    found = [str(props.get("children"))] if class_name in str(props.get("className", "")).split() else []
    return found + _texts_with_class(props.get("children"), class_name)
