"""The alerts service: evaluate each owned destination's rules, store episodes, deliver the outbox.

Ownership is the other workers' (``workers/locks.py``, service ``alerts``): one replica evaluates a
destination at a time; a replica that dies loses its locks and a standby takes over within
``HEARTBEAT_SEC / 2``, reloading open episodes and cool-downs from ``ch_alerts`` (so an episode open
before the take-over is neither lost nor sent again). Evaluation runs every ``ALERT_EVAL_INTERVAL_S``
and at once on the NOTIFY hints the ingester and the manager send (new fills, positions, round trips).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg

from core.alert_rules import AlertConfig, AlertRule, RuleKind
from core.alerts import Action, Finding, counter_increase, decide, evaluate, fired_text, resolved_text
from core.destinations import Destination, closed_channel, pos_channel
from core.settings import Settings
from core.tieout_records import Tolerances
from workers.alerts.delivery import DeliveryStats, deliver_due
from workers.alerts.metrics import SERVICES
from workers.alerts.reports import REPORTS_LOCK, run_due_reports
from workers.alerts.store import (
    TIEOUT_CHANNEL,
    AccountCache,
    EpisodeKey,
    load_episodes,
    load_snapshot,
    open_episode,
    rate_limited_now,
    resolve_episode,
)
from workers.db import connect, create_pool, create_series_pool
from workers.heartbeat import REPLICA_ID, write_heartbeat
from workers.locks import OwnershipLocks, OwnershipLoop
from workers.notify import NEW_FILLS_CHANNEL
from workers.supervise import sleep_or_stop, supervise

log = logging.getLogger(__name__)

SERVICE = "alerts"
CHANNEL_HEARTBEAT_PREFIX = "channel:"  # heartbeats.destination of a channel's delivery record


@dataclass(frozen=True, slots=True)
class AlertOptions:
    """Tuning knobs; the defaults suit production, tests shorten them."""

    eval_interval_s: float = 1.0  # ALERT_EVAL_INTERVAL_S: the longest a condition waits for evaluation
    delivery_poll_s: float = 1.0  # outbox rows queued by another replica, and retries coming due
    report_check_interval_s: float = 30.0
    rate_sample_keep_s: float = 3600.0  # 429 counter samples kept for the rest_budget windows


@dataclass(slots=True)
class Owned:
    """What this replica keeps for a destination it evaluates."""

    slug: str
    open: dict[EpisodeKey, int] = field(default_factory=dict)
    last_resolved: dict[EpisodeKey, datetime] = field(default_factory=dict)
    pending: dict[EpisodeKey, datetime] = field(default_factory=dict)
    account: AccountCache = field(default_factory=AccountCache)
    rate_samples: deque[tuple[datetime, int]] = field(default_factory=deque)


@dataclass(slots=True)
class AlertCounters:
    evaluations: int = 0
    fired: int = 0
    resolved: int = 0
    errors: int = 0


class AlertService:
    """One process's share of the alerting (see the module docstring)."""

    def __init__(self, settings: Settings, destinations: Sequence[Destination], config: AlertConfig, *,
                 options: AlertOptions | None = None) -> None:
        self.settings = settings
        self.destinations = [d for d in destinations if d.enabled and config.rules_for(d.slug)]
        self.config = config
        self.options = options or AlertOptions(eval_interval_s=settings.alert_eval_interval_s)
        self.owned: dict[str, Owned] = {}
        self.counters = AlertCounters()
        self.delivery = DeliveryStats()
        self.deliver_now = asyncio.Event()
        self._wake: dict[str, asyncio.Event] = {d.slug: asyncio.Event() for d in self.destinations}
        self._locks = OwnershipLocks(settings, SERVICE)
        # its own connection: the ownership loop uses the other one concurrently (asyncpg allows one
        # statement at a time per connection)
        self._report_lock = OwnershipLocks(settings, SERVICE)
        self._rules_by_name = {r.name: r for r in config.rules}
        self._pool: asyncpg.Pool | None = None
        self._series_pool: asyncpg.Pool | None = None
        """The time-series database's pool (equity) when it is not the primary one."""
        # the manager's tie-out tolerances: a reconciliation_drift rule judges a difference as the manager did
        self._tolerances = Tolerances(position_usd=Decimal(str(settings.tieout_position_tolerance_usd)),
                                      account_day_usd=Decimal(str(settings.tieout_account_day_tolerance_usd)))

    def wake(self, slug: str | None = None) -> None:
        """Evaluate ``slug`` (every destination when ``None``) now instead of at the next interval."""
        for key, event in self._wake.items():
            if slug is None or key == slug:
                event.set()

    # -- one destination ---------------------------------------------------------------------------
    async def _serve(self, dest: Destination, stop: asyncio.Event) -> None:
        """Evaluate ``dest`` until ``stop`` (the ownership loop's: set when another replica owns it)."""
        pool = self._pool
        assert pool is not None
        state = Owned(dest.slug)

        async def load() -> None:
            async with pool.acquire() as conn:
                state.open, state.last_resolved = await load_episodes(conn, [dest.slug])
            # at once, not HEARTBEAT_SEC later: the Health page and a benchmark see who evaluates now
            await write_heartbeat(pool, self.settings.account_schema, dest.slug, SERVICE, state="running",
                                  details={"open_alerts": len(state.open), "rules": len(self.config.rules_for(dest.slug))})

        await supervise(load, name=f"alerts {dest.slug} load", log=log, once=True, stop=stop)
        self.owned[dest.slug] = state
        wake = self._wake[dest.slug]

        async def step() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=self.options.eval_interval_s)
            wake.clear()
            if stop.is_set():
                return
            async with pool.acquire() as conn:
                now: datetime = await conn.fetchval("SELECT now()")
                await self._evaluate_destination(conn, state, now)
            self.counters.evaluations += 1

        try:
            await supervise(step, name=f"alerts {dest.slug}", log=log, stop=stop,
                            on_error=lambda _e, _k: self._count_error())
        finally:
            self.owned.pop(dest.slug, None)

    def _count_error(self) -> None:
        self.counters.errors += 1

    async def evaluate_owned(self, pool: asyncpg.Pool) -> None:
        """One pass over every owned destination at once (tests and the benchmark drive it)."""
        async with pool.acquire() as conn:
            now: datetime = await conn.fetchval("SELECT now()")
            for state in list(self.owned.values()):
                await self._evaluate_destination(conn, state, now)

    async def _evaluate_destination(self, conn: asyncpg.Connection, state: Owned, now: datetime) -> None:
        rules = self.config.rules_for(state.slug)
        windows = {r.number("window_s"): 0 for r in rules if r.kind is RuleKind.REST_BUDGET}
        if windows:
            state.rate_samples.append((now, await rate_limited_now(conn, self.settings.account_schema, state.slug)))
            while state.rate_samples and (now - state.rate_samples[0][0]).total_seconds() > self.options.rate_sample_keep_s:
                state.rate_samples.popleft()
            windows = {w: counter_increase(list(state.rate_samples), now, w) for w in windows}
        snap = await load_snapshot(conn, slug=state.slug, rules=rules, account_schema=self.settings.account_schema,
                                   heartbeat_sec=self.settings.heartbeat_sec, tz=self.settings.display_timezone,
                                   now=now, cache=state.account, rate_limited=windows, series=self._series_pool,
                                   tolerances=self._tolerances)
        for rule in rules:
            findings = {f.subject: f for f in evaluate(rule, snap)}
            subjects = set(findings) | {k.subject for k in (*state.open, *state.pending) if k.rule == rule.name}
            for subject in sorted(subjects):
                await self._step(conn, state, rule, EpisodeKey(rule.name, state.slug, subject), findings.get(subject), now)
        for key in [k for k in state.open if k.rule not in self._rules_by_name]:
            # the rule left the file: close its episode quietly (there is no rule to speak for it)
            await resolve_episode(conn, None, state.open.pop(key), key, text="rule removed", at=now)

    async def _step(self, conn: asyncpg.Connection, state: Owned, rule: AlertRule, key: EpisodeKey,
                    finding: Finding | None, now: datetime) -> None:
        d = decide(rule, holds=finding is not None, is_open=key in state.open, pending_since=state.pending.get(key),
                   last_resolved_at=state.last_resolved.get(key), now=now)
        if d.pending_since is None:
            state.pending.pop(key, None)
        else:
            state.pending[key] = d.pending_since
        if d.action is Action.FIRE and finding is not None:
            text = fired_text(rule, key.slug, finding)
            alert_id, new = await open_episode(conn, rule, key, text=text, value=finding.value, at=now,
                                               replica=REPLICA_ID)
            state.open[key] = alert_id
            if new:
                self.counters.fired += 1
                log.info("alert #%d opened: %s", alert_id, text)
                self.deliver_now.set()
        elif d.action is Action.RESOLVE:
            alert_id = state.open.pop(key)
            text = resolved_text(rule, key.slug, key.subject)
            if await resolve_episode(conn, rule, alert_id, key, text=text, at=now):
                self.counters.resolved += 1
                state.last_resolved[key] = now
                log.info("alert #%d resolved: %s", alert_id, text)
                self.deliver_now.set()

    # -- delivery, reports, heartbeats -------------------------------------------------------------
    async def _delivery_step(self, session: aiohttp.ClientSession) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.deliver_now.wait(), timeout=self.options.delivery_poll_s)
        self.deliver_now.clear()
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            while await deliver_due(conn, self.config.channels, session, self.delivery):
                pass

    async def _reports_step(self) -> None:
        if not self.config.reports or not await self._report_lock.try_acquire(REPORTS_LOCK):
            return
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            now = await conn.fetchval("SELECT now()")
            names = {d.slug: d.name for d in self.destinations}
            if await run_due_reports(conn, self.config, names, self.settings.display_timezone, now, list(names),
                                     series=self._series_pool):
                self.deliver_now.set()

    async def _heartbeat_step(self) -> None:
        pool, schema = self._pool, self.settings.account_schema
        assert pool is not None
        for slug, state in list(self.owned.items()):
            await write_heartbeat(pool, schema, slug, SERVICE, state="running", errors=self.counters.errors,
                                  details={"open_alerts": len(state.open), "rules": len(self.config.rules_for(slug)),
                                           "fired": self.counters.fired, "resolved": self.counters.resolved})
        for name, health in list(self.delivery.by_channel.items()):
            await write_heartbeat(pool, schema, f"{CHANNEL_HEARTBEAT_PREFIX}{name}", SERVICE, state=health.state,
                                  rows_ingested=health.sent, errors=health.failures, last_error=health.last_error,
                                  details={"consecutive_failures": health.consecutive_failures,
                                           "gave_up": health.gave_up})

    def _on_notify(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        if channel == TIEOUT_CHANNEL:  # payload: the slug whose tie-out pass was just stored
            self.wake(payload or None)
            return
        if channel == NEW_FILLS_CHANNEL:
            try:
                decoded = json.loads(payload)
                slug = decoded.get("d") or decoded.get("destination")
            except (ValueError, AttributeError):
                slug = None
            self.wake(slug if isinstance(slug, str) else None)
            return
        self.wake(channel.split("_channel_", 1)[1] if "_channel_" in channel else None)

    async def _listen(self, stop: asyncio.Event) -> None:
        """Wake a destination's evaluation on every hint that data it reads changed (a missed hint costs
        one interval, never a missed alert)."""
        channels = [NEW_FILLS_CHANNEL, TIEOUT_CHANNEL] + [c for d in self.destinations for c in (pos_channel(d.slug), closed_channel(d.slug))]
        conn = await connect(self.settings)
        try:
            for channel in channels:
                await conn.add_listener(channel, self._on_notify)
            while not stop.is_set() and not conn.is_closed():
                await sleep_or_stop(1.0, stop)
            if not stop.is_set():
                raise ConnectionError("LISTEN connection closed")
        finally:
            if not conn.is_closed():
                await conn.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then drain and release every lock (a standby takes over at once)."""
        self._pool = pool = await create_pool(self.settings, min_size=1, max_size=4)
        self._series_pool = await create_series_pool(self.settings, min_size=1, max_size=2)
        log.info("alerts: %d rule(s) over %d destination(s), %d channel(s), %d report(s) from %s",
                 len(self.config.rules), len(self.destinations), len(self.config.channels), len(self.config.reports),
                 self.config.source)
        ownership = OwnershipLoop(self._locks, self.destinations, self._serve, service=SERVICE,
                                  interval_s=max(0.2, self.settings.heartbeat_sec / 2), keep_on_connection_loss=False,
                                  cancel_on_release=True)
        session = aiohttp.ClientSession()
        loops: list[Coroutine[Any, Any, None]] = [
            ownership.run(stop),
            supervise(lambda: self._delivery_step(session), name="alerts delivery", log=log, stop=stop),
            supervise(self._reports_step, name="alerts reports", log=log, stop=stop,
                      interval_s=self.options.report_check_interval_s),
            supervise(self._heartbeat_step, name="alerts heartbeat", log=log, stop=stop,
                      interval_s=self.settings.heartbeat_sec),
            supervise(lambda: self._listen(stop), name="alerts listen", log=log, stop=stop, interval_s=1.0),
        ]
        tasks = [asyncio.create_task(c) for c in loops]
        SERVICES.append(self)
        try:
            await stop.wait()
        finally:
            SERVICES.remove(self)
            self.wake()
            self.deliver_now.set()
            await ownership.drain(timeout_s=5.0)
            _, pending = await asyncio.wait(tasks, timeout=5.0)
            for t in pending:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                for dest in self.destinations:
                    if dest.slug in self._locks.owned:
                        await write_heartbeat(pool, self.settings.account_schema, dest.slug, SERVICE, state="stopped")
            await session.close()
            await self._locks.close()
            # the reports lock has its own connection: closing it hands the reports to a standby now, and
            # leaves no socket for the garbage collector (whose ResourceWarning, raised inside a later
            # ast.parse, trips CPython 3.11.7's "AST constructor recursion depth mismatch")
            await self._report_lock.close()
            if self._series_pool is not None:
                await self._series_pool.close()
            await pool.close()


async def run_alerts(settings: Settings, destinations: Sequence[Destination], *, stop_event: asyncio.Event,
                     config: AlertConfig | None = None, options: AlertOptions | None = None) -> None:
    """``python -m workers alerts``: load the rules (already validated by the CLI) and run until stopped."""
    if config is None:
        from core.alert_rules import load_alert_config

        config = load_alert_config(settings.alert_rules_file, destinations)
    await AlertService(settings, destinations, config, options=options).run(stop_event)
