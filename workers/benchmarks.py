"""Benchmarks for the dashboard: publish the strategy rules and benchmark symbols, store daily bars.

The manager runs :meth:`BenchmarkLoop.run_once` every :data:`BENCHMARK_TICK_S` (5 s), so a start or a
take-over has the rules and its benchmarks' bars on the pages within seconds, not after a first minute:

1. Every :data:`BENCHMARK_INTERVAL_S` (a minute, and on the first pass) it publishes what the workers were configured with, the ``[[strategies]]`` rules (in order) and
   each destination's benchmark symbol, to ``public.ch_strategy_rules`` / ``public.ch_benchmarks``
   (migration 9): the dashboard reads them there, since deployments give it no destinations file.
2. For each benchmark symbol of the destinations this process owns, at most once per
   :data:`REFRESH_INTERVAL_S` (an hour), it fetches the daily bars it
   does not have yet from the market-data bars endpoint (``GET /v2/stocks/{symbol}/bars``,
   ``timeframe=1Day``, ``adjustment=all``, paged by ``next_page_token``) with the credentials of one
   destination that names the symbol, and upserts them into ``public.benchmark_bars``.

REST budget: every bars request takes a slot of the fetching destination's own
:class:`~workers.alpaca.budget.RequestBudget` (the one its ingester and manager share, shown on the
Health page), at reconciliation priority, so a benchmark never crowds out a gap repair or a fill's
confirmation. A symbol whose bars are current costs one request a pass (an hour by default); a new
symbol at most :data:`MAX_PAGES_PER_PASS` pages of 1,000 bars (four years) in its first pass. The
last :data:`REFETCH_DAYS` are fetched again each pass so a provisional last bar is corrected.
A failure (no market-data subscription, an unknown symbol) is logged and counted, and the pass
goes on with the next symbol: a benchmark is never a reason to turn the manager's health red.
Crypto benchmarks (``BTC/USD``) are not fetched (a different endpoint): the dashboard then uses
the price feed's one-minute bars where they exist.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from core.destinations import Destination, is_live_url
from core.settings import Settings
from core.strategies import StrategyRule
from workers.alpaca import BrokerClient
from workers.alpaca.budget import Priority, RequestBudget, shared_budget, spending
from workers.errors import describe
from workers.stats import Counters

log = logging.getLogger(__name__)

BENCHMARK_TICK_S = 5.0
"""How often a pass runs: a newly owned benchmark is fetched at the next one; a pass with nothing due is free."""
BENCHMARK_INTERVAL_S = 60.0
"""How often the configuration is published again (the watchdog's period for the loop, too)."""
REFRESH_INTERVAL_S = 3600.0
"""How often one symbol's bars are brought up to date (daily bars: an hour is plenty)."""
HISTORY_DAYS = 4 * 365
"""How far back a new benchmark's bars are fetched."""
REFETCH_DAYS = 5
MAX_PAGES_PER_PASS = 4
PAGE_LIMIT = 1000
DATA_URL = "https://data.alpaca.markets"
_NY = ZoneInfo("America/New_York")
_PAPER_HOST = "paper-api.alpaca.markets"

UPSERT_SQL = """INSERT INTO public.benchmark_bars AS b (symbol, day, open, high, low, close, volume, adjustment)
VALUES ($1, $2, $3, $4, $5, $6, $7, 'all')
ON CONFLICT (symbol, day) DO UPDATE SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
    close = EXCLUDED.close, volume = EXCLUDED.volume, adjustment = EXCLUDED.adjustment, updated_at = now()"""


@dataclass(slots=True)
class BenchmarkStats(Counters):
    """Counters since start (logged; the heartbeat does not carry them)."""

    passes: int = 0
    requests: int = 0
    bars_written: int = 0
    failures: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class DailyBar:
    day: date
    open: float
    high: float
    low: float
    close: float
    volume: float | None


def data_url(destination: Destination) -> str:
    """Alpaca's market-data host for Alpaca's own trading hosts; any other server (the simulator) serves both."""
    host = destination.base_url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
    if is_live_url(destination.base_url) or host == _PAPER_HOST:
        return DATA_URL
    return destination.base_url


def parse_bars(payload: Any) -> tuple[list[DailyBar], str | None]:
    """Daily bars of one page (their New York date) and the next page token; malformed bars are skipped."""
    if not isinstance(payload, dict):
        return [], None
    out: list[DailyBar] = []
    for raw in payload.get("bars") or []:
        try:
            ts = datetime.fromisoformat(str(raw["t"]).replace("Z", "+00:00"))
            values = [float(raw[k]) for k in ("o", "h", "l", "c")]
        except (KeyError, TypeError, ValueError):
            continue
        if ts.tzinfo is None or not all(v > 0 and v < 1e12 for v in values):
            continue
        volume = raw.get("v")
        out.append(DailyBar(ts.astimezone(_NY).date(), values[0], values[1], values[2], values[3],
                            float(volume) if isinstance(volume, int | float) else None))
    token = payload.get("next_page_token")
    return out, token if isinstance(token, str) and token else None


def is_stock_symbol(symbol: str) -> bool:
    return "/" not in symbol


class ForeignHostBudget(RequestBudget):
    """A destination's budget as seen by calls to another host (Alpaca's market-data host).

    Each call takes a slot of the destination's own budget, so the calls are counted and limited
    with the ingester's and the manager's. That host's ``X-RateLimit-*`` headers describe its own
    allowance (Alpaca meters market data apart from trading), so they do not lower the trading
    budget; a 429 from it is still counted.
    """

    def __init__(self, inner: RequestBudget) -> None:  # shares ``inner``'s window: no state of its own
        self._inner = inner
        self.window = inner.window

    async def acquire(self, priority: Priority | None = None) -> None:
        await self._inner.acquire(priority)

    def observe(self, status: int, headers: Any) -> None:
        if status == 429:
            self.window.rate_limited += 1

    def as_dict(self) -> dict[str, Any]:
        return self._inner.as_dict()

    async def aclose(self) -> None:
        await self._inner.aclose()


def trading_budget(destination: Destination, settings: Settings | None) -> RequestBudget | None:
    """The budget the destination's trading calls spend (``None`` without settings: unbudgeted tools)."""
    if settings is None:
        return None
    return shared_budget(destination.slug, destination.base_url, budget_per_min=settings.rest_budget_calls_per_min,
                         catchup_per_min=settings.rest_catchup_calls_per_min, dsn=settings.primary_dsn)


class MarketDataClient(BrokerClient):
    """The broker client's retries and rate limiting, pointed at the market-data host, spending the
    destination's own REST budget (not one of its own for the market-data URL)."""

    def __init__(self, destination: Destination, settings: Settings | None = None) -> None:
        data = replace(destination, base_url=data_url(destination))
        budget = trading_budget(destination, settings)
        if budget is not None and data.base_url.rstrip("/") != destination.base_url.rstrip("/"):
            budget = ForeignHostBudget(budget)
        super().__init__(data, settings, budget=budget)

    async def daily_bars(self, symbol: str, start: date, page_token: str | None) -> Any:
        params = {"timeframe": "1Day", "start": start.isoformat(), "adjustment": "all", "limit": PAGE_LIMIT,
                  "page_token": page_token}
        return await self._request("GET", f"/v2/stocks/{symbol}/bars", params)


@dataclass(slots=True)
class BenchmarkLoop:
    """One pass: publish the configuration, bring each owned benchmark's daily bars up to date."""

    settings: Settings
    destinations: Sequence[Destination]
    rules: Sequence[StrategyRule]
    pool: Callable[[], asyncpg.Pool | None]
    owned: Callable[[], Iterable[Destination]]
    client_factory: Callable[[Destination, Settings], MarketDataClient] = MarketDataClient
    stats: BenchmarkStats = field(default_factory=BenchmarkStats)
    _fetched_mono: dict[str, float] = field(default_factory=dict)
    """When each symbol was last attempted (monotonic s): a failure waits a full refresh interval too."""
    clock: Callable[[], float] = time.monotonic
    _published_mono: float | None = None

    async def run_once(self) -> None:
        pool = self.pool()
        if pool is None:
            return
        self.stats.passes += 1
        now = self.clock()
        if self._published_mono is None or now - self._published_mono >= BENCHMARK_INTERVAL_S:
            await publish_configuration(pool, self.rules, self.destinations)
            self._published_mono = now
        by_symbol: dict[str, Destination] = {}
        for dest in sorted(self.owned(), key=lambda d: d.slug):
            if dest.benchmark and is_stock_symbol(dest.benchmark):
                by_symbol.setdefault(dest.benchmark, dest)
        for symbol, dest in sorted(by_symbol.items()):
            last = self._fetched_mono.get(symbol)
            if last is not None and now - last < REFRESH_INTERVAL_S:
                continue
            self._fetched_mono[symbol] = now
            try:
                with spending(Priority.RECONCILE):  # a benchmark waits behind repairs and confirmations
                    await self.update_symbol(pool, symbol, dest)
            except Exception as exc:  # noqa: BLE001 - one symbol's failure must not stop the others
                self.stats.failures += 1
                self.stats.last_error = f"{symbol}: {describe(exc)}"
                log.warning("benchmark %s: daily bars not updated: %s", symbol, describe(exc))

    async def update_symbol(self, pool: asyncpg.Pool, symbol: str, dest: Destination) -> int:
        """Fetch ``symbol``'s missing daily bars with ``dest``'s credentials; the number written."""
        last = await pool.fetchval("SELECT max(day) FROM public.benchmark_bars WHERE symbol = $1", symbol)
        today = datetime.now(UTC).astimezone(_NY).date()
        start = (last - timedelta(days=REFETCH_DAYS)) if last else today - timedelta(days=HISTORY_DAYS)
        client = self.client_factory(dest, self.settings)
        written, token = 0, None
        try:
            for _ in range(MAX_PAGES_PER_PASS):
                self.stats.requests += 1
                bars, token = parse_bars(await client.daily_bars(symbol, start, token))
                if bars:
                    await pool.executemany(UPSERT_SQL, [(symbol, b.day, b.open, b.high, b.low, b.close, b.volume)
                                                        for b in bars])
                    written += len(bars)
                if token is None:
                    break
        finally:
            await client.close()
        self.stats.bars_written += written
        if written:
            log.info("benchmark %s: %d daily bars stored (from %s)", symbol, written, start)
        return written


async def publish_configuration(pool: asyncpg.Pool, rules: Sequence[StrategyRule],
                                destinations: Sequence[Destination]) -> None:
    """Replace the published rules and upsert each destination's benchmark, in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM public.ch_strategy_rules")
        await conn.executemany(
            "INSERT INTO public.ch_strategy_rules (position, name, rule) VALUES ($1, $2, $3::jsonb)",
            [(i, r.name, json.dumps(r.as_json())) for i, r in enumerate(rules)])
        await conn.executemany(
            """INSERT INTO public.ch_benchmarks (slug, symbol) VALUES ($1, $2)
               ON CONFLICT (slug) DO UPDATE SET symbol = EXCLUDED.symbol, updated_at = now()""",
            [(d.slug, d.benchmark) for d in destinations])
