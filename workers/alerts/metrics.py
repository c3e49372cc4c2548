"""``/metrics`` on the workers (``WORKER_METRICS_PORT``): heartbeats, versions, alerts, deliveries.

A tiny aiohttp server in the worker process. Every scrape reads the shared tables (so any replica
shows the whole deployment's workers, labelled by destination and service) plus this process's
own alert counters (labelled ``replica``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import asyncpg
from aiohttp import web

from core.alert_metrics import CONTENT_TYPE, Family, alert_families, heartbeat_families, render, version_families
from core.schema import quote_ident
from core.settings import Settings
from workers.db import create_pool
from workers.heartbeat import REPLICA_ID

log = logging.getLogger(__name__)

# The running alert services of this process register here, so /metrics can show their counters.
SERVICES: list[Any] = []


async def collect(pool: asyncpg.Pool, account_schema: str) -> str:
    """The exposition text for one scrape."""
    schema = quote_ident(account_schema)
    async with pool.acquire() as conn:
        hb = await conn.fetch(f"""SELECT destination, service, state, lag_s, rows_ingested, errors, details,
                                         extract(epoch FROM now() - updated_at)::float8 AS age_s
                                  FROM {schema}.heartbeats ORDER BY destination, service""")
        versions = await conn.fetch("SELECT * FROM public.ch_versions ORDER BY slug")
        open_rows = await conn.fetch("SELECT destination, severity, count(*) AS n FROM public.ch_alerts "
                                     "WHERE state = 'open' GROUP BY 1, 2 ORDER BY 1, 2")
        outbox = await conn.fetch("SELECT channel, status, count(*) AS n FROM public.ch_alert_outbox GROUP BY 1, 2 "
                                  "ORDER BY 1, 2")
    rows = [dict(r) | {"details": json.loads(r["details"]) if isinstance(r["details"], str) else r["details"]}
            for r in hb]
    families = heartbeat_families(rows) + version_families([dict(r) for r in versions])
    families += alert_families([dict(r) for r in open_rows], [dict(r) for r in outbox])
    families += _process_families()
    return render(families)


def _process_families() -> list[Family]:
    evaluations = Family("coldharbour_alert_evaluations_total", "counter", "Rule evaluation passes in this process.")
    fired = Family("coldharbour_alerts_fired_total", "counter", "Alert episodes this process opened.")
    resolved = Family("coldharbour_alerts_resolved_total", "counter", "Alert episodes this process resolved.")
    sent = Family("coldharbour_alert_delivery_attempts_total", "counter",
                  "Delivery attempts by this process, by channel and outcome.")
    for service in SERVICES:
        evaluations.add(service.counters.evaluations, replica=REPLICA_ID)
        fired.add(service.counters.fired, replica=REPLICA_ID)
        resolved.add(service.counters.resolved, replica=REPLICA_ID)
        for name, health in service.delivery.by_channel.items():
            sent.add(health.sent, channel=name, outcome="sent", replica=REPLICA_ID)
            sent.add(health.failures, channel=name, outcome="failed", replica=REPLICA_ID)
    return [evaluations, fired, resolved, sent]


async def serve_metrics(settings: Settings, stop: asyncio.Event, *, host: str = "0.0.0.0",  # noqa: S104
                        port: int | None = None) -> None:
    """Serve ``GET /metrics`` until ``stop`` is set."""
    pool = await create_pool(settings, min_size=1, max_size=2)

    async def metrics(_request: web.Request) -> web.Response:
        try:
            body = await collect(pool, settings.account_schema)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return web.Response(status=503, text=f"database unavailable: {type(exc).__name__}\n")
        return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port or settings.worker_metrics_port or 9108)
    await site.start()
    log.info("worker metrics on http://%s:%s/metrics", host, port or settings.worker_metrics_port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await pool.close()
