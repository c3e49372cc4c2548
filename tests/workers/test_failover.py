"""Two ``python -m workers manager`` processes: SIGKILL the owner, the other takes over; SIGTERM drains."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from core import market_schedule
from core.settings import Settings
from core.snapshots import missing_boundaries
from tests.workers.test_manager_support import (
    Publisher,
    cash,
    destination,
    eventually,
    fill,
    insert_activities,
    migrate_db,
)

pytestmark = pytest.mark.slow

HEARTBEAT_SEC = 1.5
SNAPSHOT_SEC = 0.1
ROOT = Path(__file__).resolve().parents[2]
# pg_locks is server-wide: other tests' databases hold advisory locks too (and must not be terminated).
OUR_ADVISORY_LOCKS = ("locktype = 'advisory' AND database = (SELECT oid FROM pg_database "
                      "WHERE datname = current_database())")


def worker_env(db_dsn: str, tmp_path: Path, zmq_url: str) -> dict[str, str]:
    dest_file = tmp_path / "destinations.toml"
    dest_file.write_text('[[destinations]]\nname = "Alpha"\nkey_id = "PKTESTKEY0001"\nsecret_key = "s3cr3t"\n'
                         'base_url = "http://127.0.0.1:9"\ninitial_deposit = 10000\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLDHARBOUR_", "CH_"))}
    env.update({
        "COLDHARBOUR_ENV_FILE": str(tmp_path / "no.env"),
        "POSTGRESQL_LIVE_CONN_STRING": db_dsn,
        "DESTINATIONS_FILE": str(dest_file),
        "DESTINATIONS_LOCAL_FILE": str(tmp_path / "none.toml"),
        "DATA_DIR": str(tmp_path / "data"),
        "HEARTBEAT_SEC": str(HEARTBEAT_SEC),
        "SNAPSHOT_SEC": str(SNAPSHOT_SEC),
        "FLUSH_INTERVAL_S": "0.05",
        "UI_SNAPSHOT_SEC": "0.2",
        "CLOSED_SYNC_SEC": "1",
        "ZMQ_PRICE_ENDPOINTS": zmq_url,
        "PYTHONUNBUFFERED": "1",
    })
    return env


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "workers", "manager"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


async def owner_pid(conn: asyncpg.Connection) -> int | None:
    replica = await conn.fetchval("SELECT replica FROM account_activities.heartbeats "
                                  "WHERE service = 'manager' AND state = 'running'")
    return int(replica.rsplit(":", 1)[1]) if replica else None


async def test_sigkill_takeover_and_sigterm_drain(settings: Settings, db_dsn: str, tmp_path: Path,
                                                  procs: list[subprocess.Popen[bytes]]) -> None:
    dest = destination("Alpha")
    migrate_db(settings, [dest])
    pub = Publisher()
    conn = await asyncpg.connect(db_dsn)
    try:
        await insert_activities(conn, dest.slug, [cash(0, "CSD", "10000"), fill(1, "AAPL", "buy", "10", "100")])
        env = worker_env(db_dsn, tmp_path, pub.url)
        procs.extend([spawn(env, tmp_path / "a.log"), spawn(env, tmp_path / "b.log")])
        by_pid = {p.pid: p for p in procs}

        async def owned() -> bool:
            return await owner_pid(conn) in by_pid

        await eventually(owned, what="one replica to own the destination", timeout_s=60,
                         tick=lambda: pub.publish("AAPL", "101"))
        victim = by_pid[await owner_pid(conn) or 0]
        survivor = next(p for p in procs if p is not victim)
        await eventually(lambda: _count(conn, f"SELECT count(*) FROM equity_full_{dest.slug}", 3),
                         what="the owner's snapshots", tick=lambda: pub.publish("AAPL", "102"))

        # Act 1: SIGKILL the owner.
        killed_at = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)

        async def taken_over() -> bool:
            return await owner_pid(conn) == survivor.pid

        await eventually(taken_over, what="take-over by the survivor", tick=lambda: pub.publish("AAPL", "103"),
                         every_s=0.02)
        takeover_s = time.monotonic() - killed_at
        before = await conn.fetchval(f"SELECT max(ts) FROM equity_full_{dest.slug}")
        await eventually(lambda: _count(conn, f"SELECT count(*) FROM equity_full_{dest.slug} WHERE ts > '{before}'",
                                        4), what="the survivor's snapshots", tick=lambda: pub.publish("AAPL", "104"))

        # Act 2: SIGTERM drains.
        survivor.send_signal(signal.SIGTERM)
        drained_at = time.monotonic()
        code = await asyncio.to_thread(survivor.wait, 15)
        drain_s = time.monotonic() - drained_at

        # Assert
        assert takeover_s <= 2 * HEARTBEAT_SEC, f"take-over took {takeover_s:.2f}s"
        assert code == 0
        assert drain_s <= 10
        series = [r["ts"] for r in await conn.fetch(f"SELECT ts FROM equity_full_{dest.slug} WHERE source <> 'history' "
                                                    "ORDER BY ts")]
        assert len(series) == len(set(series))
        holes = [(a, b) for a, b in zip(series, series[1:], strict=False) if _missing(a, b)]
        assert holes == [], f"equity series broken at {holes[:3]}"
        state = await conn.fetchval("SELECT state FROM account_activities.heartbeats WHERE service = 'manager'")
        locks = await conn.fetchval(f"SELECT count(*) FROM pg_locks WHERE {OUR_ADVISORY_LOCKS}")
        checkpoint = await conn.fetchval("SELECT fill_count FROM ch_fifo_state WHERE slug = $1", dest.slug)
        assert (state, locks, checkpoint) == ("stopped", 0, 1)
    finally:
        await conn.close()
        pub.close()


def _missing(a: datetime, b: datetime) -> list[datetime]:
    """Grid points strictly between two consecutive rows (the rows themselves excluded)."""
    return [p for p in missing_boundaries(a, b, snapshot_sec=SNAPSHOT_SEC, market_open=market_schedule.is_open) if p != b]


async def _count(conn: asyncpg.Connection, sql: str, at_least: int) -> bool:
    return int(await conn.fetchval(sql)) >= at_least


async def test_lost_lock_connection_stops_and_retakes_the_destination(settings: Settings, db_dsn: str) -> None:
    from tests.workers.test_manager_support import ScriptedBroker
    from workers.manager import AccountManager, always_open

    dest = destination("Alpha")
    migrate_db(settings, [dest])
    pub = Publisher()
    conn = await asyncpg.connect(db_dsn)
    manager = AccountManager(settings.replace(zmq_price_endpoints=pub.url), [dest],
                             broker_factory=lambda d, s: ScriptedBroker(), market_open=always_open)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    try:
        await eventually(lambda: _true(manager.takeovers == 1 and all(r.ready for r in manager.runners.values())
                                       and bool(manager.runners)), what="first ownership")
        first_runner = next(iter(manager.runners.values()))

        # Act: the database kills the session holding the advisory lock (network cut, admin, restart).
        killed = await conn.fetchval(f"SELECT pg_terminate_backend(pid) FROM pg_locks WHERE {OUR_ADVISORY_LOCKS}")

        await eventually(lambda: _true(manager.takeovers == 2 and bool(manager.runners)), what="re-acquisition")
        assert killed is True
        assert next(iter(manager.runners.values())) is not first_runner  # a fresh runner after the loss
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await conn.close()
        pub.close()


async def _true(value: bool) -> bool:
    return value
