"""Benchmark bars spend the destination's REST budget: the same window as its ingester's and manager's
calls (what the Health page shows), at reconciliation priority, and the market-data host's own
rate-limit headers never lower the trading budget."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from core.destinations import Destination
from core.settings import Settings
from dashboard.pages.health import budget_text
from tests.simulator_fixtures import SimHandle
from tests.workers.test_manager_support import migrate_db
from workers.alpaca import BrokerClient
from workers.alpaca.budget import Priority, request_priority
from workers.benchmarks import BenchmarkLoop, ForeignHostBudget, MarketDataClient


@pytest.fixture
async def pool(settings: Settings, db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    migrate_db(settings, [])
    p = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    yield p
    await p.close()


def _sim_dest(sim: SimHandle) -> Destination:
    acct = sim.accounts[2]
    return Destination(name=acct["name"], slug="bench_budget", key_id=acct["key_id"], secret_key=acct["secret_key"],
                       base_url=sim.rest_url, benchmark="SPY")


async def test_bars_requests_are_counted_in_the_destinations_budget(
        simulator_session: SimHandle, pool: asyncpg.Pool, settings: Settings) -> None:
    # Arrange: the ingester's client of the destination (its heartbeat's details.budget is the Health column)
    dest = _sim_dest(simulator_session)
    cfg = settings.replace(rest_budget_calls_per_min=600.0)
    ingester_side = BrokerClient(dest, cfg)
    assert ingester_side.budget is not None
    before = ingester_side.budget.as_dict()["calls_total"]
    seen: list[Priority] = []

    class Recording(MarketDataClient):
        async def daily_bars(self, symbol: str, start: object, page_token: str | None) -> object:
            seen.append(request_priority.get())
            return await super().daily_bars(symbol, start, page_token)  # type: ignore[arg-type]

    loop = BenchmarkLoop(cfg, [dest], [], lambda: pool, lambda: [dest], client_factory=Recording)

    # Act
    await loop.run_once()

    # Assert
    after = ingester_side.budget.as_dict()
    assert loop.stats.requests >= 1
    assert loop.stats.failures == 0, loop.stats.last_error
    assert after["calls_total"] - before == loop.stats.requests
    assert seen
    assert set(seen) == {Priority.RECONCILE}
    assert f"{after['calls_per_min']}/" in budget_text({"budget": after})
    assert after["calls_per_min"] >= loop.stats.requests
    await ingester_side.close()


def test_the_market_data_host_spends_the_trading_budget(settings: Settings) -> None:
    # Arrange: an Alpaca paper destination (bars come from data.alpaca.markets, another host)
    dest = Destination(name="Paper", slug="paper_budget", key_id="PKTEST", secret_key="s" * 20,
                       base_url="https://paper-api.alpaca.markets")
    trading = BrokerClient(dest, settings)
    data = MarketDataClient(dest, settings)
    assert trading.budget is not None
    assert data.budget is not None

    # Act: the market-data host says its allowance is spent, then answers 429
    data.budget.observe(200, {"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0",
                              "X-RateLimit-Reset": str(int(time.time()) + 30)})
    data.budget.observe(429, {})

    # Assert: one window for both; the foreign headers did not lower the trading budget, the 429 is counted
    assert isinstance(data.budget, ForeignHostBudget)
    assert data.budget.window is trading.budget.window
    assert trading.budget.window.header is None
    assert trading.budget.as_dict()["rate_limited"] == 1
    assert data._base_url == "https://data.alpaca.markets"


def test_same_host_uses_the_budget_itself(settings: Settings) -> None:
    dest = Destination(name="Sim", slug="sim_budget", key_id="PKTEST", secret_key="s" * 20,
                       base_url="http://127.0.0.1:1")
    trading, data = BrokerClient(dest, settings), MarketDataClient(dest, settings)
    assert data.budget is trading.budget  # the simulator serves both: its headers count for both
    assert MarketDataClient(dest).budget is None  # no settings: an unbudgeted tool's client
