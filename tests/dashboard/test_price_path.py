"""Trade drill-down: the price path from the manager's one-minute bars and MAE/MFE measured on it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from dash import Dash

from core.db import connect
from dashboard import analytics
from tests.dashboard.conftest import Seeded

MINUTE_NS = 60_000_000_000


def _bars(start: datetime, prices: list[tuple[float, float, float, float]]) -> list[dict[str, Any]]:
    return [{"ts": start + timedelta(minutes=i), "open": o, "high": h, "low": lo, "close": c, "ticks": 5}
            for i, (o, h, lo, c) in enumerate(prices)]


def _insert(dsn: str, symbol: str, bars: list[dict[str, Any]]) -> None:
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO public.price_bars (symbol, ts, open, high, low, close, ticks) VALUES (%s,%s,%s,%s,%s,%s,%s)",
                [(symbol, b["ts"], b["open"], b["high"], b["low"], b["close"], b["ticks"]) for b in bars])
    finally:
        conn.close()


def test_excursions_of_a_long_and_a_short_round_trip() -> None:
    start = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    bars = _bars(start, [(100, 101, 99, 100.5), (100.5, 104, 100, 103), (103, 103.5, 97, 98), (98, 99, 98, 99)])
    entry_ns = pd.Timestamp(start + timedelta(seconds=20)).value
    exit_ns = pd.Timestamp(start + timedelta(minutes=3, seconds=10)).value
    long = analytics.excursions("long", 10, 100.2, 99.0, entry_ns, exit_ns, bars)
    assert long is not None
    assert long.mae == pytest.approx((97 - 100.2) * 10)
    assert long.mfe == pytest.approx((104 - 100.2) * 10)
    assert long.bars == 4
    assert long.coverage == 1.0
    short = analytics.excursions("short", 5, 100.2, 99.0, entry_ns, exit_ns, bars)
    assert short is not None
    assert short.mae == pytest.approx((100.2 - 104) * 5)
    assert short.mfe == pytest.approx((100.2 - 97) * 5)
    # bars outside the holding time do not count; a gap lowers the coverage
    later = analytics.excursions("long", 10, 100.2, 99.0, entry_ns, exit_ns + 10 * MINUTE_NS, bars[:2])
    assert later is not None
    assert later.mae == pytest.approx((99 - 100.2) * 10)  # the exit fill bounds it
    assert later.coverage < 0.25
    assert analytics.excursions("long", 10, 100.2, 99.0, entry_ns, exit_ns, []) is None
    # fills beyond every bar's range bound the extremes
    wide = analytics.excursions("long", 1, 110.0, 90.0, entry_ns, exit_ns, bars)
    assert wide is not None
    assert (wide.mae, wide.mfe) == (pytest.approx(-20.0), pytest.approx(0.0))


def test_price_bars_merge_into_wider_buckets_for_long_windows(app: Dash, seeded: Seeded) -> None:
    start = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    prices = [(100 + i, 100.5 + i, 99.5 + i, 100.25 + i) for i in range(30)]
    _insert(seeded.dsn, "WIDE", _bars(start, prices))
    model = app.server.extensions["coldharbour"].model
    fine = model.price_bars("WIDE", start, start + timedelta(minutes=29))
    assert len(fine) == 30
    assert [b["close"] for b in fine[:2]] == [100.25, 101.25]
    merged = model.price_bars("WIDE", start, start + timedelta(minutes=29), max_bars=10)
    assert len(merged) in (10, 11)  # 3-minute buckets on a fixed origin
    whole = [b for b in merged if b["ticks"] == 15]
    assert whole, merged
    first = whole[0]
    i = next(k for k, b in enumerate(fine) if b["ts"] == first["ts"])
    assert first["open"] == fine[i]["open"]
    assert first["close"] == fine[i + 2]["close"]
    assert first["high"] == max(b["high"] for b in fine[i:i + 3])
    assert first["low"] == min(b["low"] for b in fine[i:i + 3])
    assert model.price_bars("NOPE", start, start + timedelta(minutes=29)) == []


def _render(app: Dash, trade_id: str, theme: str = "light") -> dict[str, Any]:
    client = app.server.test_client()
    client.get("/")
    outputs = [{"id": "trade-kpis", "property": "children"}, {"id": "trade-path", "property": "figure"},
               {"id": "trade-fills", "property": "children"}, {"id": "trade-lots", "property": "children"},
               {"id": "trade-orders", "property": "children"}]
    key = {"slug": "alpha_paper", "trade_id": trade_id}
    payload = {
        "output": "..trade-kpis.children...trade-path.figure...trade-fills.children...trade-lots.children"
                  "...trade-orders.children..",
        "outputs": outputs,
        "inputs": [{"id": "trade-key", "property": "data", "value": key},
                   {"id": "theme-store", "property": "data", "value": theme},
                   {"id": "tz-choice", "property": "value", "value": "utc"},
                   {"id": "browser-tz", "property": "data", "value": None}],
        "state": [{"id": "trade-key", "property": "data", "value": key}],
        "changedPropIds": ["trade-key.data"],
    }
    response = client.post("/_dash-update-component", json=payload)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    return response.get_json()["response"]


def _trade_without_excursions(app: Dash, dsn: str, trade_id: str, also: str = "") -> dict[str, Any]:
    """The round trip as the manager writes it (no stored MAE/MFE), after ``also`` (extra SET clauses)."""
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"UPDATE public.closed_trades_alpha_paper SET mae = NULL, mfe = NULL{also} "
                        "WHERE trade_id = %s", (trade_id,))
    finally:
        conn.close()
    model = app.server.extensions["coldharbour"].model
    with app.server.app_context():
        trade = model.trade("alpha_paper", trade_id)
    assert trade is not None
    return trade


def test_trade_page_draws_the_price_path_and_measures_mae_mfe(app: Dash, seeded: Seeded) -> None:
    trade = _trade_without_excursions(app, seeded.dsn, "T0000007")
    before = _render(app, "T0000007")
    assert "no price history" in json.dumps(before["trade-kpis"]["children"])
    assert [t.get("name") for t in before["trade-path"]["figure"]["data"]] == ["Fills"]

    entry, exit_ = pd.Timestamp(trade["entry_time"]), pd.Timestamp(trade["exit_time"])
    minutes = int((exit_ - entry).total_seconds() // 60) + 1
    first = entry.floor("min").to_pydatetime()
    ep, xp, qty = float(trade["entry_price"]), float(trade["exit_price"]), float(trade["qty"])
    lo, hi = min(ep, xp) - 2.0, max(ep, xp) + 3.0
    span = max(1, min(minutes, 1400))
    # a path that dips to lo midway and peaks at hi near the end of the holding time
    prices = []
    for i in range(span):
        mid = ep + (xp - ep) * i / span
        prices.append((mid, hi if i == span - 2 else mid + 0.1, lo if i == span // 2 else mid - 0.1, mid))
    _insert(seeded.dsn, str(trade["symbol"]), _bars(first, prices))
    after = _render(app, "T0000007")
    cards = json.dumps(after["trade-kpis"]["children"])
    long = trade["direction"] != "short"
    mae = (lo - ep) * qty if long else (ep - hi) * qty
    mfe = (hi - ep) * qty if long else (ep - lo) * qty
    assert f"{abs(mae):,.2f}" in cards, cards
    assert f"{abs(mfe):,.2f}" in cards, cards
    assert "one-minute bars" in cards
    names = [t.get("name") for t in after["trade-path"]["figure"]["data"]]
    assert "Price (1-min close)" in names
    assert "Fills" in names
    path = next(t for t in after["trade-path"]["figure"]["data"] if t.get("name") == "Price (1-min close)")
    assert len(path["x"]) <= 1500


def test_mae_mfe_are_withheld_when_bars_cover_little_of_the_holding_time(app: Dash, seeded: Seeded) -> None:
    trade = _trade_without_excursions(app, seeded.dsn, "T0000009", ", exit_time = entry_time + interval '10 hours'")
    first = pd.Timestamp(trade["entry_time"]).floor("min").to_pydatetime()
    ep = float(trade["entry_price"])
    _insert(seeded.dsn, str(trade["symbol"]), _bars(first, [(ep, ep + 1, ep - 1, ep)] * 30))  # 30 of 600 minutes
    cards = json.dumps(_render(app, "T0000009")["trade-kpis"]["children"])
    assert "covers only 5% of the holding time" in cards
    assert "one-minute bars" not in cards
