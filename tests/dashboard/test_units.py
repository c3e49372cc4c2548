"""The ``*_pct`` / ``*_plpc`` columns hold percentage points (core.fifo, workers.equity): 1.5 means 1.5 %."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from core.fifo import match_fills
from core.records import Fill, Side
from dashboard.components.grids import PCT_POINTS, closed_columns, open_columns
from dashboard.pages.trade import _points_to_fraction


def _formatter(columns: list[dict], field: str) -> dict:
    (col,) = [c for c in columns if c.get("field") == field]
    return col["valueFormatter"]


def test_percent_point_columns_are_not_formatted_as_fractions() -> None:
    assert _formatter(closed_columns("UTC"), "return_pct") == PCT_POINTS
    assert _formatter(open_columns("UTC"), "unrealized_plpc") == PCT_POINTS
    assert "+ '%'" in PCT_POINTS["function"]
    assert ".2%" not in PCT_POINTS["function"]  # d3's % would multiply by 100 again


def test_the_lot_engine_reports_return_in_percentage_points() -> None:
    t0 = datetime(2026, 1, 5, 15, tzinfo=UTC)
    fills = [
        Fill(fill_id="a", order_id="o1", symbol="X", side=Side.BUY, qty=Decimal(10), price=Decimal(100), ts=t0),
        Fill(fill_id="b", order_id="o2", symbol="X", side=Side.SELL, qty=Decimal(10), price=Decimal("101.5"),
             ts=t0 + timedelta(minutes=5)),
    ]
    (trip,) = match_fills(fills).round_trips
    assert trip.return_pct is not None
    assert abs(trip.return_pct - 1.5) < 1e-9
    assert _points_to_fraction(trip.return_pct) == 0.015
    assert _points_to_fraction(None) is None


def test_plain_figures_send_lists_so_live_appends_can_extend_them() -> None:
    import json

    import numpy as np
    import plotly.graph_objects as go
    from plotly.utils import PlotlyJSONEncoder

    from dashboard.components.figures import plain

    fig = go.Figure(go.Scatter(x=np.arange(5), y=np.linspace(1.0, 2.0, 5)))
    out = plain(fig)
    encoded = json.loads(json.dumps(out, cls=PlotlyJSONEncoder))
    assert encoded["data"][0]["y"] == [1.0, 1.25, 1.5, 1.75, 2.0]
    assert encoded["data"][0]["x"] == [0, 1, 2, 3, 4]
    assert "bdata" not in json.dumps(encoded)
