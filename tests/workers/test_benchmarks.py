"""workers.benchmarks against the real simulator and PostgreSQL: daily bars paged in and stored equal to
the bars endpoint's own answer, the configuration published, one failing symbol not stopping the others."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest

from core.destinations import Destination
from core.settings import Settings
from core.strategies import StrategyRule
from tests.simulator_fixtures import SimHandle
from tests.workers.test_manager_support import migrate_db
from workers import benchmarks
from workers.benchmarks import BenchmarkLoop, data_url, parse_bars

NY = ZoneInfo("America/New_York")


def _dest(sim: SimHandle, index: int, benchmark: str | None) -> Destination:
    acct = sim.accounts[index]
    return Destination(name=acct["name"], slug=acct["name"].replace("-", "_"), key_id=acct["key_id"],
                       secret_key=acct["secret_key"], base_url=sim.rest_url, benchmark=benchmark)


@pytest.fixture
async def pool(settings: Settings, db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    migrate_db(settings, [])
    p = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    yield p
    await p.close()


async def _truth(sim: SimHandle, dest: Destination, symbol: str) -> dict[object, float]:
    headers = {"APCA-API-KEY-ID": dest.key_id, "APCA-API-SECRET-KEY": dest.secret_key}
    async with aiohttp.ClientSession(headers=headers) as http, http.get(
            f"{sim.rest_url}/v2/stocks/{symbol}/bars",
            params={"timeframe": "1Day", "start": "2000-01-01", "adjustment": "all", "limit": "10000"}) as resp:
        body = await resp.json()
    return {datetime.fromisoformat(b["t"].replace("Z", "+00:00")).astimezone(NY).date(): float(b["c"])
            for b in body["bars"]}


async def test_daily_bars_paged_and_stored(simulator_session: SimHandle, pool: asyncpg.Pool, settings: Settings,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # Arrange: pages of two bars, so a few days of history take several pages
    monkeypatch.setattr(benchmarks, "PAGE_LIMIT", 2)
    monkeypatch.setattr(benchmarks, "MAX_PAGES_PER_PASS", 50)
    spy, bad = _dest(simulator_session, 0, "SPY"), _dest(simulator_session, 1, "NOPE")
    rules = [StrategyRule("momo", prefix="momo-")]
    loop = BenchmarkLoop(settings, [spy, bad], rules, lambda: pool, lambda: [spy, bad])

    # Act
    await loop.run_once()
    await loop.run_once()  # not due again within the refresh interval: no more requests

    # Assert
    truth = await _truth(simulator_session, spy, "SPY")
    rows = await pool.fetch("SELECT day, close FROM public.benchmark_bars WHERE symbol = 'SPY'")
    stored = {r["day"]: r["close"] for r in rows}
    assert len(truth) >= 3
    assert set(stored) == set(truth)
    today = max(truth)  # the simulator's market is live: today's bar moves between the two reads
    assert {d: c for d, c in stored.items() if d != today} == {d: c for d, c in truth.items() if d != today}
    assert loop.stats.requests == -(-len(truth) // 2) + 1  # SPY's pages, and the unknown symbol's one request
    assert loop.stats.failures == 1
    assert "NOPE" in (loop.stats.last_error or "")
    published = await pool.fetch("SELECT position, name, rule FROM public.ch_strategy_rules ORDER BY position")
    assert [(r["position"], r["name"]) for r in published] == [(0, "momo")]
    assert StrategyRule.from_json(json.loads(published[0]["rule"])) == rules[0]
    marks = await pool.fetch("SELECT slug, symbol FROM public.ch_benchmarks ORDER BY slug")
    assert {(r["slug"], r["symbol"]) for r in marks} == {(spy.slug, "SPY"), (bad.slug, "NOPE")}


async def test_a_newly_owned_benchmark_is_fetched_at_the_next_pass_and_the_rules_republished_each_minute(
        simulator_session: SimHandle, pool: asyncpg.Pool, settings: Settings) -> None:
    # Arrange: nothing owned at the first pass (ownership comes a moment after the start)
    spy = _dest(simulator_session, 0, "SPY")
    owned: list[Destination] = []
    now_s = [1000.0]
    loop = BenchmarkLoop(settings, [spy], [StrategyRule("momo", prefix="momo-")], lambda: pool, lambda: owned,
                         clock=lambda: now_s[0])
    await loop.run_once()
    assert await pool.fetchval("SELECT count(*) FROM public.ch_strategy_rules") == 1
    assert loop.stats.requests == 0
    await pool.execute("DELETE FROM public.ch_strategy_rules")  # to see whether the next pass publishes

    # Act: the destination is owned now; the next pass comes a tick later
    owned.append(spy)
    now_s[0] += benchmarks.BENCHMARK_TICK_S
    await loop.run_once()

    # Assert: its bars are fetched at once, the configuration is not published again within the minute...
    assert await pool.fetchval("SELECT count(*) FROM public.benchmark_bars WHERE symbol = 'SPY'") > 0
    assert await pool.fetchval("SELECT count(*) FROM public.ch_strategy_rules") == 0
    # ...but it is once the minute has passed
    now_s[0] += benchmarks.BENCHMARK_INTERVAL_S
    await loop.run_once()
    assert await pool.fetchval("SELECT count(*) FROM public.ch_strategy_rules") == 1


def test_data_url() -> None:
    def d(url: str) -> Destination:
        return Destination(name="x", slug="x", key_id="k", secret_key="s", base_url=url)  # noqa: S106

    assert data_url(d("https://api.alpaca.markets")) == "https://data.alpaca.markets"
    assert data_url(d("https://paper-api.alpaca.markets")) == "https://data.alpaca.markets"
    assert data_url(d("http://127.0.0.1:8765")) == "http://127.0.0.1:8765"


def test_parse_bars_skips_malformed() -> None:
    bars, token = parse_bars({"bars": [{"t": "2024-01-02T05:00:00Z", "o": 1, "h": 2, "l": 0.5, "c": 1.5, "v": 10},
                                       {"t": "nope", "o": 1, "h": 1, "l": 1, "c": 1},
                                       {"t": "2024-01-03T05:00:00Z", "o": -1, "h": 1, "l": 1, "c": 1}],
                              "next_page_token": "abc"})
    assert [(b.day.isoformat(), b.close) for b in bars] == [("2024-01-02", 1.5)]
    assert token == "abc"
