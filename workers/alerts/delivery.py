"""Outbox delivery: claim due rows, send them, record the outcome; bounded retries with jittered backoff.

Any replica may deliver (evaluation is what ownership guards). A claim moves the row's
``next_attempt_at`` forward by a lease under ``FOR UPDATE SKIP LOCKED``, so two replicas never send
the same row at once, and a replica killed mid-send leaves the row to be retried when the lease ends
(at least once; the delivery id lets a receiver drop the rare duplicate).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from core.alert_rules import Channel
from workers.alerts.channels import DeliveryError, Notification, send
from workers.backoff import BackoffPolicy, retry_delay_s, should_retry

log = logging.getLogger(__name__)

DELIVERY_POLICY = BackoffPolicy(base_s=0.5, cap_s=120.0, multiplier=2.0, jitter=0.5, max_attempts=8)
"""0.5 s doubling to 2 min, 8 attempts (about 4 minutes in all), then the row is marked failed."""
FAILING_AFTER = 3  # consecutive failures before a channel shows as failing on the Health page
CLAIM_BATCH = 50


@dataclass(slots=True)
class ChannelHealth:
    """One channel's delivery record (this process), written to the heartbeats table."""

    sent: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    gave_up: int = 0
    last_error: str | None = None

    @property
    def state(self) -> str:
        return "failing" if self.consecutive_failures >= FAILING_AFTER else "ok"


@dataclass(slots=True)
class DeliveryStats:
    by_channel: dict[str, ChannelHealth] = field(default_factory=dict)

    def of(self, name: str) -> ChannelHealth:
        return self.by_channel.setdefault(name, ChannelHealth())


def lease_s(channels: Mapping[str, Channel]) -> float:
    """Long enough for the slowest channel's send (its timeout) with room to record the outcome."""
    return max((c.timeout_s for c in channels.values()), default=10.0) * 2 + 5


async def deliver_due(conn: asyncpg.Connection, channels: Mapping[str, Channel], session: aiohttp.ClientSession,
                      stats: DeliveryStats, *, policy: BackoffPolicy = DELIVERY_POLICY) -> int:
    """Send every due outbox row once; returns how many were claimed."""
    rows = await conn.fetch(
        """UPDATE public.ch_alert_outbox o SET attempts = o.attempts + 1,
                  next_attempt_at = now() + make_interval(secs => $1)
           WHERE o.id IN (SELECT id FROM public.ch_alert_outbox WHERE status = 'pending' AND next_attempt_at <= now()
                          ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
           RETURNING o.id, o.channel, o.event, o.payload, o.attempts, o.dedupe_key""",
        lease_s(channels), CLAIM_BATCH)
    for row in rows:
        await _deliver_one(conn, row, channels, session, stats, policy)
    return len(rows)


async def _deliver_one(conn: asyncpg.Connection, row: asyncpg.Record, channels: Mapping[str, Channel],
                       session: aiohttp.ClientSession, stats: DeliveryStats, policy: BackoffPolicy) -> None:
    payload: dict[str, Any] = json.loads(row["payload"]) if isinstance(row["payload"], str) else dict(row["payload"])
    health = stats.of(row["channel"])
    channel = channels.get(row["channel"])
    try:
        if channel is None:
            raise DeliveryError("channel no longer configured", permanent=True)
        text = str(payload.pop("text", ""))
        await send(channel, Notification(delivery_id=row["dedupe_key"], text=text, payload=payload), session)
    except DeliveryError as exc:
        health.failures += 1
        health.consecutive_failures += 1
        health.last_error = exc.reason
        attempt = int(row["attempts"])
        if exc.permanent or not should_retry(policy, attempt):
            health.gave_up += 1
            log.error("alert delivery %s via %s failed for good after %d attempt(s): %s", row["id"], row["channel"],
                      attempt, exc.reason)
            await conn.execute("UPDATE public.ch_alert_outbox SET status = 'failed', last_error = $2 WHERE id = $1",
                               row["id"], exc.reason)
            return
        delay_s = retry_delay_s(policy, attempt, random.random(), retry_after_s=exc.retry_after_s,  # noqa: S311
                                max_wait_s=policy.cap_s)
        log.warning("alert delivery %s via %s failed (%s); attempt %d, retrying in %.1fs", row["id"], row["channel"],
                    exc.reason, attempt, delay_s)
        await conn.execute("UPDATE public.ch_alert_outbox SET last_error = $2, next_attempt_at = now() + "
                           "make_interval(secs => $3) WHERE id = $1", row["id"], exc.reason, delay_s)
        return
    health.sent += 1
    health.consecutive_failures = 0
    await conn.execute("UPDATE public.ch_alert_outbox SET status = 'sent', sent_at = now(), last_error = NULL "
                       "WHERE id = $1", row["id"])


async def next_due_in_s(conn: asyncpg.Connection) -> float | None:
    """Seconds until the next pending row is due (``None``: nothing pending)."""
    value = await conn.fetchval("SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM public.ch_alert_outbox "
                                "WHERE status = 'pending'")
    return None if value is None else max(0.0, float(value))
