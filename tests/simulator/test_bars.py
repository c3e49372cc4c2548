"""Market-data bars (``/v2/stocks/{symbol}/bars``, ``/v2/stocks/bars``) through alpaca-py's
StockHistoricalDataClient and raw HTTP: timeframes, pagination, adjustment."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from alpaca.data.historical import StockHistoricalDataClient
    from alpaca.data.requests import StockBarsRequest
    from alpaca.data.timeframe import TimeFrame

from tests.simulator.test_alpaca_shapes import headers
from tests.simulator_fixtures import SimHandle, start_simulator

NY = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimHandle]:
    handle = start_simulator(tmp_path_factory.mktemp("bars"), accounts=1, seed=3, history_days=6, zmq=False)
    yield handle
    handle.stop()


def get_bars(sim: SimHandle, path: str, **params: object) -> requests.Response:
    return requests.get(f"{sim.rest_url}/v2/stocks{path}", params=params, headers=headers(sim, 0), timeout=10)


def test_daily_spy_bars_through_alpaca_py(sim):
    acct = sim.accounts[0]
    client = StockHistoricalDataClient(acct["key_id"], acct["secret_key"], url_override=sim.rest_url)
    start = datetime.now(UTC) - timedelta(days=20)
    barset = client.get_stock_bars(StockBarsRequest(symbol_or_symbols=["SPY", "AAPL"], timeframe=TimeFrame.Day, start=start))
    spy = barset["SPY"]
    assert len(spy) >= 6
    assert len(barset["AAPL"]) == len(spy)
    for bar in spy:
        local = bar.timestamp.astimezone(NY)
        assert (local.hour, local.minute) == (0, 0)
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert bar.low <= bar.vwap <= bar.high
        assert bar.volume > 0
        assert bar.trade_count > 0
    assert [b.timestamp for b in spy] == sorted({b.timestamp for b in spy})


def test_pagination_returns_every_bar_once(sim):
    start = (datetime.now(UTC) - timedelta(days=12)).isoformat()
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).isoformat()  # history only: live bars grow
    whole = get_bars(sim, "/SPY/bars", timeframe="1Hour", start=start, end=end, limit=10_000).json()
    assert whole["next_page_token"] is None
    assert whole["symbol"] == "SPY"
    pages, token = [], None
    while True:
        body = get_bars(sim, "/SPY/bars", timeframe="1Hour", start=start, end=end, limit=7,
                        **({"page_token": token} if token else {})).json()
        pages.append(body["bars"])
        token = body["next_page_token"]
        if token is None:
            break
    assert len(pages) > 2
    assert all(len(p) == 7 for p in pages[:-1])
    assert [b for p in pages for b in p] == whole["bars"]
    desc = get_bars(sim, "/SPY/bars", timeframe="1Hour", start=start, end=end, sort="desc").json()["bars"]
    assert desc == whole["bars"][::-1]


def test_split_adjustment_rescales_bars_before_the_split(sim):
    start = (datetime.now(UTC) - timedelta(days=12)).isoformat()
    before = get_bars(sim, "/MSFT/bars", timeframe="1Day", start=start).json()["bars"]
    sim.admin("/corporate-action", {"type": "split", "symbol": "MSFT", "new_rate": 4, "old_rate": 1})
    raw = get_bars(sim, "/MSFT/bars", timeframe="1Day", start=start, adjustment="raw").json()["bars"]
    adjusted = get_bars(sim, "/MSFT/bars", timeframe="1Day", start=start, adjustment="split").json()["bars"]
    assert [b["c"] for b in raw[: len(before) - 1]] == [b["c"] for b in before[:-1]]
    for r, a in zip(raw[:-1], adjusted[:-1], strict=True):
        assert a["c"] == pytest.approx(r["c"] / 4, abs=1e-4)
        assert a["v"] == r["v"] * 4


def test_bad_requests_are_refused_with_alpacas_codes(sim):
    assert get_bars(sim, "/NOPE/bars").status_code == 404
    assert get_bars(sim, "/SPY/bars", timeframe="7Fortnight").status_code == 400
    assert get_bars(sim, "/SPY/bars", adjustment="magic").status_code == 400
    assert get_bars(sim, "/SPY/bars", limit=0).status_code == 400
    assert requests.get(f"{sim.rest_url}/v2/stocks/SPY/bars", timeout=5).status_code == 401
