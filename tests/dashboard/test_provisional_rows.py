"""Rows resting on stream fills not yet confirmed (``provisional_fills`` > 0, docs/freshness.md) are
marked on the destination page, in its closed-trades grid and in the exports."""

from __future__ import annotations

import csv
import io
import json

from dash import Dash

from core.db import connect
from dashboard.components import grids
from dashboard.export import export_url
from dashboard.queries import ReadModel
from tests.dashboard.conftest import Seeded
from tests.dashboard.test_first_render import _destination_layout, _find

SLUG = "alpha_paper"


def _mark(seeded: Seeded, *, symbol: str, fills: int) -> str:
    """The manager's write: AAPL's position and one round trip rest on ``fills`` stream fills; the trade id."""
    conn = connect(seeded.dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"UPDATE public.open_trades_{SLUG} SET provisional_fills = %s WHERE symbol = %s", (fills, symbol))
            cur.execute(f"""UPDATE public.closed_trades_{SLUG} SET provisional_fills = %s
                            WHERE trade_id = (SELECT min(trade_id) FROM public.closed_trades_{SLUG}) RETURNING trade_id""",
                        (fills,))
            row = cur.fetchone()
            assert row is not None
            cur.execute("UPDATE public.ch_versions SET pos_version = pos_version + 1, "
                        "closed_version = closed_version + 1 WHERE slug = %s", (SLUG,))
            return str(row[0])
    finally:
        conn.close()


def test_the_positions_grid_tags_a_provisional_row_and_the_status_line_counts_it(app: Dash, seeded: Seeded) -> None:
    # Arrange: AAPL rests on two stream fills REST has not confirmed
    _mark(seeded, symbol="AAPL", fills=2)
    # Act: the page as a visitor gets it
    layout = _destination_layout(app, {})
    # Assert: the row carries the count, the symbol column tags it and says why on hover, the status counts it
    grid = _find(layout, "dest-positions")
    assert grid is not None
    counts = {r["symbol"]: r["provisional_fills"] for r in grid["props"]["rowData"]}
    assert counts == {"AAPL": 2, "MSFT": 0, "NVDA": 0, "AMZN": 0}
    symbol = next(c for c in grid["props"]["columnDefs"] if c["field"] == "symbol")
    assert symbol["cellClassRules"] == grids.PROVISIONAL_CLASS
    assert "not yet confirmed by the broker" in json.dumps(symbol["tooltipValueGetter"])
    status = _find(layout, "dest-pos-status")
    assert status is not None
    assert "1 provisional" in status["props"]["children"]


def test_the_closed_trades_grid_and_the_exports_carry_the_count(app: Dash, seeded: Seeded) -> None:
    # Arrange
    trade_id = _mark(seeded, symbol="AAPL", fills=1)
    model = ReadModel(seeded.settings, seeded.dsn)
    client = app.server.test_client()
    # Act
    block = model.closed_block(SLUG, {"startRow": 0, "endRow": 500, "sortModel": [], "filterModel": {}}, "UTC")
    closed_csv = client.get(export_url(SLUG, "closed_trades", "csv"))
    open_csv = client.get(export_url(SLUG, "open_positions", "csv"))
    # Assert: the block's rows and both CSVs hold the column with the stored counts
    rows = {r["trade_id"]: r["provisional_fills"] for r in block["rowData"]}
    assert rows[trade_id] == 1
    assert sum(rows.values()) == 1
    closed = {r["trade_id"]: r["provisional_fills"] for r in csv.DictReader(io.StringIO(closed_csv.get_data(as_text=True)))}
    opened = {r["symbol"]: r["provisional_fills"] for r in csv.DictReader(io.StringIO(open_csv.get_data(as_text=True)))}
    assert closed[trade_id] == "1"
    assert {v for k, v in closed.items() if k != trade_id} == {"0"}
    assert opened == {"AAPL": "1", "MSFT": "0", "NVDA": "0", "AMZN": "0"}
    closed_symbol = next(c for c in grids.closed_columns("UTC") if c["field"] == "symbol")
    assert closed_symbol["cellClassRules"] == grids.PROVISIONAL_CLASS
    model.dispose()
