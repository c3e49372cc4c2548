"""``python -m bench alerts [--quick]``: time from a condition becoming true to the webhook receiving it.

A real ``python -m workers alerts`` process at default knobs (``ALERT_EVAL_INTERVAL_S`` = 1 s) watches
one destination with a ``large_fill`` rule sending to a local aiohttp webhook receiver in this process.
Each round commits one large fill into ``activities`` (the condition is true from that commit) and
records when the signed POST arrives; the rule's 3 s window (longer than the evaluation interval, so no
fill can fall between two evaluations) then lets the episode resolve, and a zero
cool-down lets the next round fire again. Two variants: with the ingester's ``ch_new_fills`` NOTIFY in
the same transaction (what production does) and without it (the evaluation interval alone).
Target: p95 <= 2 s (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from bench.manager import _Database
from core.db import connect, migrate
from core.destinations import load_destinations
from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
TARGET_P95_MS = 2000.0


class _Receiver:
    def __init__(self) -> None:
        self.fired: asyncio.Queue[float] = asyncio.Queue()
        self.resolved: asyncio.Queue[float] = asyncio.Queue()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            at = time.monotonic()
            body = await request.json()
            (self.fired if body.get("event") == "fired" else self.resolved).put_nowait(at)
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_post("/hook", handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"


def _files(workdir: Path, url: str) -> dict[str, str]:
    (workdir / "destinations.toml").write_text('[[destinations]]\nname = "bench"\nkey_id = "PKBENCH0001"\n'
                                               'secret_key = "x"\nbase_url = "http://127.0.0.1:9"\n')
    (workdir / "alerts.toml").write_text(
        '[[channels]]\nname = "hook"\ntype = "webhook"\nurl_env = "BENCH_HOOK_URL"\nsecret_env = "BENCH_HOOK_SECRET"\n'
        '[[rules]]\nname = "big fill"\nkind = "large_fill"\nthreshold_usd = 1000\nwindow_s = 3\ncooldown_s = 0\n'
        'channels = ["hook"]\n')
    return {"DESTINATIONS_FILE": str(workdir / "destinations.toml"), "ALERT_RULES_FILE": str(workdir / "alerts.toml"),
            "DESTINATIONS_LOCAL_FILE": str(workdir / "none.toml"), "BENCH_HOOK_URL": url,
            "BENCH_HOOK_SECRET": "bench-secret"}


async def _round(conn: asyncpg.Connection, receiver: _Receiver, notify: bool) -> float:
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO account_activities.activities (destination, activity_id, ts, activity_type, symbol, side,
                   qty, price, raw) VALUES ('bench', $1, now(), 'FILL', 'AAPL', 'buy', $2, $3, '{}'::jsonb)""",
            f"bench::{uuid.uuid4()}", Decimal(20), Decimal(101))
        if notify:
            await conn.execute("SELECT pg_notify('ch_new_fills', '{\"d\": \"bench\"}')")
    committed = time.monotonic()
    received = await asyncio.wait_for(receiver.fired.get(), timeout=30)
    await asyncio.wait_for(receiver.resolved.get(), timeout=30)  # the window passed: ready for the next
    return (received - committed) * 1000


def _stats(name: str, samples: list[float]) -> list[dict[str, Any]]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return [
        {"name": f"alerts.{name}.p50", "value": round(statistics.median(ordered), 1), "unit": "ms", "n": len(ordered)},
        {"name": f"alerts.{name}.p95", "value": round(p95, 1), "unit": "ms", "target": TARGET_P95_MS,
         "ok": p95 <= TARGET_P95_MS},
        {"name": f"alerts.{name}.max", "value": round(ordered[-1], 1), "unit": "ms"},
    ]


async def _measure(dsn: str, workdir: Path, rounds: int) -> list[dict[str, Any]]:
    receiver = _Receiver()
    await receiver.start()
    files = _files(workdir, receiver.url)
    settings = Settings(postgresql_live_conn_string=dsn)
    sync = connect(dsn)
    try:
        migrate(sync, settings, load_destinations(files["DESTINATIONS_FILE"], None))
    finally:
        sync.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLDHARBOUR_", "CH_"))}
    env.update({"COLDHARBOUR_ENV_FILE": str(workdir / "no.env"), "POSTGRESQL_LIVE_CONN_STRING": dsn,
                "DATA_DIR": str(workdir / "data"), **files})
    log = (workdir / "alerts.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "workers", "alerts"], cwd=ROOT, env=env, stdout=log,  # noqa: ASYNC220
                            stderr=subprocess.STDOUT)
    conn = await asyncpg.connect(dsn)
    try:
        while not await conn.fetchval("SELECT count(*) FROM account_activities.heartbeats WHERE service = 'alerts'"):
            if proc.poll() is not None:
                raise RuntimeError(f"workers alerts exited: {(workdir / 'alerts.log').read_text()[-2000:]}")
            await asyncio.sleep(0.1)
        await _round(conn, receiver, True)  # warm-up (first statements, first connection)
        with_notify = [await _round(conn, receiver, True) for _ in range(rounds)]
        poll_only = [await _round(conn, receiver, False) for _ in range(rounds)]
    finally:
        await conn.close()
        proc.terminate()
        proc.wait(15)
        log.close()
        if receiver.runner is not None:
            await receiver.runner.cleanup()
    return _stats("condition_to_webhook_notify", with_notify) + _stats("condition_to_webhook_poll", poll_only)


def run(quick: bool) -> list[dict[str, Any]]:
    rounds = 6 if quick else 40  # each round waits for its resolve (~3 s): quick stays under 45 s for make bench
    with tempfile.TemporaryDirectory(prefix="ch-bench-alerts-") as tmp, _Database(Path(tmp)) as dsn:
        return asyncio.run(_measure(dsn, Path(tmp), rounds))
