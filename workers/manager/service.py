"""The process-level manager: owns whichever destinations it can lock and runs the shared loops.

Shared by every owned destination: the price feeds (one per distinct endpoint list), the flush loop
(every ``FLUSH_INTERVAL_S``), the leading-edge loop (a tick with the NOTIFY window open is written at
once), the price-bar writer, the heartbeat loop and the ``ch_new_fills`` listener. Every loop runs
under :func:`workers.manager.loops.keep_running`: a loop that dies of a bug is logged, counted and
started again after a backoff, so one bad message can never stop the monitoring.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from core.destinations import Destination
from core.settings import Settings
from core.snapshots import MarketOpen
from core.strategies import load_strategies
from workers.bars import BarWriter
from workers.benchmarks import BENCHMARK_INTERVAL_S, BENCHMARK_TICK_S, BenchmarkLoop
from workers.errors import describe
from workers.heartbeat import REPLICA_ID
from workers.locks import OwnershipLocks, OwnershipLoop
from workers.manager.context import RunnerContext
from workers.manager.health import stall_limit_s
from workers.manager.loops import keep_running
from workers.manager.options import (
    BAR_DRAIN_TIMEOUT_S,
    BAR_WRITE_INTERVAL_S,
    DRAIN_TIMEOUT_S,
    FLUSH_CONCURRENCY,
    LEADING_EDGE_WAIT_MAX_S,
    SERVICE,
)
from workers.manager.port import BrokerFactory, default_broker, default_market_open
from workers.manager.runner import DestinationRunner
from workers.manager.tieout import TIEOUT_TICK_S, TieoutLoop
from workers.notify import NEW_FILLS_CHANNEL
from workers.prices import PriceFeed, feed_limits
from workers.supervise import LoopHealth

log = logging.getLogger("workers.manager")

class AccountManager:
    """Owns whichever destinations it can lock and keeps their derived tables current.

    ``broker_factory`` and ``market_open`` exist for embedding and tests (defaults: the real
    :class:`workers.alpaca.BrokerClient` and the NYSE schedule).
    """

    def __init__(self, settings: Settings, destinations: Sequence[Destination], *,
                 broker_factory: BrokerFactory | None = None, market_open: MarketOpen | None = None,
                 pool: asyncpg.Pool | None = None) -> None:
        self.settings = settings
        self.destinations = [d for d in destinations if d.enabled]
        self.broker_factory: BrokerFactory = broker_factory or default_broker
        self.market_open: MarketOpen = market_open or default_market_open
        self.pool: asyncpg.Pool | None = pool
        self._own_pool = pool is None
        self.series_pool: asyncpg.Pool | None = None
        """The time-series database's pool (equity, price bars) when it is not the primary one."""
        self.locks = OwnershipLocks(settings, SERVICE)
        self.ownership = OwnershipLoop(self.locks, self.destinations, self._serve, service=SERVICE,
                                       interval_s=settings.heartbeat_sec / 2, keep_on_connection_loss=False,
                                       cancel_on_release=True, on_change=self.holdings_changed)
        self.runners: dict[str, DestinationRunner] = {}
        """The owned destinations' runners, by slug (a runner appears once its start has begun)."""
        self.feeds: dict[tuple[str, ...], PriceFeed] = {}
        self.feed_tasks: dict[tuple[str, ...], asyncio.Task[None]] = {}
        self.bar_writer = BarWriter()
        """Every feed's one-minute bars on their way to ``public.price_bars`` (pending ones retried)."""
        self.loops: dict[str, LoopHealth] = {}
        """Progress of the shared loops (flush, leading edge, bars, heartbeat, each feed): the watchdog's input."""
        self.loop_restarts = 0
        self._loop_intervals_s: dict[str, float] = {}
        self._listener: asyncpg.Connection | None = None
        self._started_mono = time.monotonic()

    @property
    def takeovers(self) -> int:
        return self.ownership.takeovers

    # --- wiring ------------------------------------------------------------------------------
    def _endpoints(self, dest: Destination) -> tuple[str, ...]:
        if dest.price_feed.zmq_endpoints:
            return dest.price_feed.zmq_endpoints
        return tuple(e.strip() for e in self.settings.zmq_price_endpoints.split(",") if e.strip())

    def feed_for(self, dest: Destination) -> PriceFeed | None:
        """The feed for ``dest``'s endpoints (created and started on first use), ``None`` without endpoints."""
        endpoints = self._endpoints(dest)
        if not endpoints:
            return None
        feed = self.feeds.get(endpoints)
        if feed is None:
            stale = dest.price_feed.stale_after_s or self.settings.price_stale_after_s
            feed = self.feeds[endpoints] = PriceFeed(endpoints, stale_after_s=stale, limits=feed_limits(self.settings))
            name = f"zmq {','.join(endpoints)}"
            self.feed_tasks[endpoints] = asyncio.create_task(self._keep_running(name, feed.run, None), name=name)
        return feed

    def holdings_changed(self) -> None:
        """Subscribe each feed to exactly the symbols its owned destinations hold."""
        wanted: dict[tuple[str, ...], set[str]] = {k: set() for k in self.feeds}
        for r in self.runners.values():
            if r.feed is not None:
                wanted[r.feed.endpoints].update(r.positions)
        for key, symbols in wanted.items():
            self.feeds[key].set_symbols(symbols)

    def context(self) -> RunnerContext:
        """What a runner of this process is given (the pool must exist: call from within :meth:`run`)."""
        assert self.pool is not None
        return RunnerContext(pool=self.pool, series_pool=self.series_pool, settings=self.settings,
                             market_open=self.market_open,
                             broker_factory=self.broker_factory, holdings_changed=self.holdings_changed,
                             bar_stats=self._bar_stats, stalled=self.stall_reason)

    def _bar_stats(self) -> Mapping[str, Any]:
        return self.bar_writer.stats.as_dict(exclude=frozenset())

    def _on_new_fills(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            data = json.loads(payload)
        except ValueError:
            data = None
        slug = None
        if isinstance(data, dict):
            slug = data.get("d") or data.get("destination") or data.get("slug")
        for s, runner in self.runners.items():
            if slug is None or s == slug:
                runner.wake_up()

    # --- supervision -------------------------------------------------------------------------
    async def _keep_running(self, name: str, step: Callable[[], Awaitable[object]], interval_s: float | None,
                            stop: asyncio.Event | None = None, *, watch_s: float | None = None) -> None:
        """One shared loop under :func:`~workers.manager.loops.keep_running`, watched for progress.

        ``watch_s`` (default ``interval_s``): the loop's period as the watchdog sees it; a loop that has
        not completed a pass in :func:`~workers.manager.health.stall_limit_s` of it turns the heartbeats red.
        """
        health = self.loops.setdefault(name, LoopHealth(name))
        if (watch_s or interval_s) is not None:
            self._loop_intervals_s[name] = watch_s or interval_s or 0.0

        def restarted(_exc: BaseException) -> None:
            self.loop_restarts += 1

        await keep_running(step, name=f"{name} loop", log=log, health=health, interval_s=interval_s, stop=stop,
                           on_restart=restarted)

    def stall_reason(self) -> str | None:
        """The first shared loop that has not completed a pass within its limit, with its last error."""
        now = time.monotonic()
        for name, interval_s in sorted(self._loop_intervals_s.items()):
            health = self.loops[name]
            last = health.last_ok_monotonic
            silent_s = now - (last if last is not None else self._started_mono)
            if silent_s > stall_limit_s(interval_s, self.settings.heartbeat_sec):
                why = f" ({health.last_error})" if health.last_error else ""
                return f"{name} loop: no progress for {silent_s:.0f}s{why}"
        for endpoints, task in self.feed_tasks.items():
            if task.done():
                return f"price feed {','.join(endpoints)} stopped"
        return None

    # --- run ---------------------------------------------------------------------------------
    async def run(self, stop_event: asyncio.Event | None = None) -> None:
        """Run until ``stop_event`` is set, then drain: flush, checkpoint, release locks."""
        stop = stop_event or asyncio.Event()
        from workers.db import connect, create_pool, create_series_pool

        self._started_mono = time.monotonic()
        if self.pool is None:
            self.pool = await create_pool(self.settings, min_size=1, max_size=max(4, min(20, len(self.destinations) + 2)))
        if self.series_pool is None:
            self.series_pool = await create_series_pool(self.settings, max_size=max(2, min(10, len(self.destinations) + 1)))
        # Warm the market calendar off the loop (exchange_calendars builds its sessions once).
        await asyncio.to_thread(self.market_open, datetime.now(UTC))
        try:
            self._listener = await connect(self.settings)
            await self._listener.add_listener(NEW_FILLS_CHANNEL, self._on_new_fills)
            s = self.settings
            loops = {
                "ownership": self._keep_running("ownership", lambda: self.ownership.run(stop), None, stop),
                "flush": self._keep_running("flush", self.flush_once, s.flush_interval_s, stop),
                "leading-edge": self._keep_running("leading-edge", self._leading_edge_once, None, stop,
                                                   watch_s=LEADING_EDGE_WAIT_MAX_S),
                "price-bars": self._keep_running("price-bars", self.write_bars_once,
                                                 max(s.flush_interval_s, BAR_WRITE_INTERVAL_S), stop),
                "heartbeat": self._keep_running("heartbeat", self._heartbeats_once, s.heartbeat_sec, stop),
                "tieout": self._keep_running("tieout", TieoutLoop(self).run_once, TIEOUT_TICK_S, stop,
                                             watch_s=s.tieout_interval_s),
                # strategy rules and benchmarks for the dashboard, daily bars of the owned benchmarks
                "benchmarks": self._keep_running("benchmarks", BenchmarkLoop(
                    s, self.destinations, load_strategies(s.destinations_file, s.destinations_local_file),
                    lambda: self.pool, lambda: [r.dest for r in self.runners.values()]).run_once,
                    BENCHMARK_TICK_S, stop, watch_s=BENCHMARK_INTERVAL_S),
            }
            tasks = [asyncio.create_task(coro, name=name) for name, coro in loops.items()]
            await stop.wait()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await self._drain()

    async def _serve(self, dest: Destination, stop: asyncio.Event) -> None:
        """One owned destination until ``stop`` (then its final flush and checkpoint) or cancellation."""
        runner = DestinationRunner(self.context(), dest, self.feed_for(dest))
        self.runners[dest.slug] = runner
        log.info("dest=%s owned by %s", dest.slug, REPLICA_ID)
        try:
            loops = asyncio.create_task(runner.run(), name=f"manager {dest.slug}")
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({loops, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if loops.done():
                loops.result()  # a runner that ended on its own failed: raise, the ownership loop restarts it
                return
            loops.cancel()
            await asyncio.gather(loops, return_exceptions=True)
            await runner.stop()
        finally:
            if self.runners.get(dest.slug) is runner:
                del self.runners[dest.slug]
            self.holdings_changed()

    async def _drain(self) -> None:
        """Stop the destinations (final flushes bounded), release every lock, write the last bars."""
        await self.ownership.drain(DRAIN_TIMEOUT_S)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.locks.close(), timeout=2.0)
        for t in self.feed_tasks.values():
            t.cancel()
        await asyncio.gather(*self.feed_tasks.values(), return_exceptions=True)
        if self.pool is not None:  # the last seconds of bars (bounded; whatever fails is lost, not fatal)
            try:
                await asyncio.wait_for(self.write_bars_once(), timeout=BAR_DRAIN_TIMEOUT_S)
            except Exception as exc:  # the drain goes on whatever this was
                log.warning("drain: %d price bars not written: %s", self.bar_writer.pending, describe(exc))
        for feed in self.feeds.values():
            feed.close()
        self.feeds.clear()
        self.feed_tasks.clear()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        if self.series_pool is not None:
            await self.series_pool.close()
            self.series_pool = None
        if self.pool is not None and self._own_pool:
            await self.pool.close()
            self.pool = None

    # --- the shared loops' steps -------------------------------------------------------------
    async def write_bars_once(self) -> int:
        """Take every feed's touched bars (once per feed, however many destinations share it) and write
        them with whatever a previous failed write left pending; the number of bars written."""
        for key, feed in self.feeds.items():
            self.bar_writer.offer(key, feed.bars.take())
        assert self.pool is not None
        return await self.bar_writer.write(self.series_pool or self.pool)

    async def _leading_edge_once(self) -> None:
        """On a tick for a destination whose NOTIFY window is open, write and NOTIFY at once.

        Between two NOTIFYs (``UI_SNAPSHOT_SEC``) ticks only update the in-memory marks and are
        written by the periodic flush; the first tick after the window opens goes straight through,
        so what the dashboard is told about is never older than the tick plus one write.
        """
        feeds = list(self.feeds.values())
        # Bounded waits: a feed added by a take-over is picked up within a second.
        timeout_s = min(self.settings.flush_interval_s, LEADING_EDGE_WAIT_MAX_S)
        if not feeds:
            await asyncio.sleep(min(timeout_s, 0.1))
            return
        if len(feeds) == 1:  # the common case, without a task per wait
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(feeds[0].changed.wait(), timeout=timeout_s)
        else:
            waits = [asyncio.create_task(f.changed.wait()) for f in feeds]
            try:
                await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        self.route_ticks()
        eager = [r for r in self.runners.values() if r.wants_leading_edge]
        if eager:
            await self._flush_runners(eager)

    def route_ticks(self) -> None:
        """Hand each feed's conflated ticks to the owned destinations holding those symbols."""
        by_feed: dict[tuple[str, ...], list[DestinationRunner]] = {}
        for r in self.runners.values():
            if r.ready and r.feed is not None:
                by_feed.setdefault(r.feed.endpoints, []).append(r)
        for key, feed in self.feeds.items():
            ticks = feed.drain()
            if not ticks:
                continue
            for r in by_feed.get(key, []):
                for symbol in r.positions.keys() & ticks.keys():
                    r.on_tick(ticks[symbol])

    async def flush_once(self) -> None:
        """Route conflated ticks, then let each ready destination write (those about to NOTIFY first)."""
        self.route_ticks()
        runners = [r for r in self.runners.values() if r.ready]
        now_mono = time.monotonic()
        runners.sort(key=lambda r: not r.notify_ready(now_mono))
        await self._flush_runners(runners)

    async def _flush_runners(self, runners: Sequence[DestinationRunner]) -> None:
        now, now_mono = datetime.now(UTC), time.monotonic()
        gate = asyncio.Semaphore(FLUSH_CONCURRENCY)

        async def one(r: DestinationRunner) -> None:
            async with gate:
                await r.flush(now, now_mono)

        results = await asyncio.gather(*(one(r) for r in runners), return_exceptions=True)
        for r, res in zip(runners, results, strict=True):
            if isinstance(res, Exception):
                r.record_error("flush", res)

    async def _heartbeats_once(self) -> None:
        for runner in list(self.runners.values()):
            if runner.ready:
                await runner.guarded(runner.heartbeat(), "heartbeat")


async def run_manager(settings: Settings, destinations: Sequence[Destination] | None = None, *,
                      stop_event: asyncio.Event | None = None) -> None:
    """One call: run an :class:`AccountManager` over ``destinations`` (default: the configured, enabled ones)."""
    if destinations is None:
        from core.destinations import load_destinations

        destinations = load_destinations(settings.destinations_file, settings.destinations_local_file)
    await AccountManager(settings, destinations).run(stop_event)
