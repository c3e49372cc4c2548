"""The deployed shape: ``python -m workers ingester`` and ``python -m workers manager`` as two OS
processes on one destination of the simulator spend one REST budget together (the ledger in
PostgreSQL), and the ingester's heartbeat shows the destination's total."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from core.settings import Settings
from tests.simulator_fixtures import SimHandle
from tests.workers.test_manager_support import eventually
from tests.workers.test_rest_budget_ledger import most_in_any_window

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BUDGET_PER_MIN = 10
"""Below what the two processes want at start: the ingester's gap repair and confirmations spend the
window, and the manager's first reads wait for it to move (about a minute: the test is slow)."""


def worker_env(tmp_path: Path, settings: Settings, sim: SimHandle) -> dict[str, str]:
    acct = sim.accounts[0]
    toml = tmp_path / "destinations.toml"
    toml.write_text(f'[[destinations]]\nname = "{acct["name"]}"\nkey_id = "{acct["key_id"]}"\n'
                    f'secret_key = "{acct["secret_key"]}"\nbase_url = "{sim.rest_url}"\nstream_url = "{sim.stream_url}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLDHARBOUR_", "CH_", "POSTGRES", "TIMESCALE"))}
    env.update({"COLDHARBOUR_ENV_FILE": str(tmp_path / "none.env"), "POSTGRESQL_LIVE_CONN_STRING": settings.primary_dsn or "",
                "DESTINATIONS_FILE": str(toml), "DESTINATIONS_LOCAL_FILE": str(tmp_path / "none.toml"),
                "FLUSH_INTERVAL_S": "0.05", "HEARTBEAT_SEC": "0.5", "DATA_DIR": str(tmp_path / "data"),
                "REST_BUDGET_CALLS_PER_MIN": str(BUDGET_PER_MIN), "REST_CATCHUP_CALLS_PER_MIN": str(BUDGET_PER_MIN),
                "ZMQ_PRICE_ENDPOINTS": "tcp://127.0.0.1:9", "PYTHONUNBUFFERED": "1"})
    return env


def spawn(service: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "workers", service], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(10)


async def test_ingester_and_manager_processes_share_one_budget(
        simulator_factory: Callable[..., SimHandle], settings: Settings, tmp_path: Path,
        procs: list[subprocess.Popen[bytes]]) -> None:
    # Arrange: the bot trades, so confirmations keep asking too
    sim = simulator_factory(accounts=1, history_days=2, bot_rate=2)
    env = worker_env(tmp_path, settings, sim)
    procs.extend(spawn(service, env, tmp_path / f"{service}.log") for service in ("ingester", "manager"))
    conn = await asyncpg.connect(settings.primary_dsn)
    try:
        async def budget() -> dict[str, object]:
            raw = await conn.fetchval("SELECT details FROM account_activities.heartbeats WHERE service = 'ingester'")
            got = json.loads(raw).get("budget") if raw else None
            return got if isinstance(got, dict) else {}

        async def both_spent_and_waiting() -> bool:
            for p in procs:
                assert p.poll() is None, (tmp_path / "ingester.log").read_text()[-2000:] + (
                    tmp_path / "manager.log").read_text()[-2000:]
            try:  # the workers migrate the database as they start
                holders = await conn.fetchval("SELECT count(DISTINCT holder) FROM public.ch_rest_calls") or 0
                shown = await budget()
            except asyncpg.UndefinedTableError:
                return False
            # a call that waited for a slot waits seconds (round trips take milliseconds)
            waited = float(str(shown.get("waited_s", 0))) >= 1.0 or int(str(shown.get("waiting", 0))) > 0
            return holders == 2 and shown.get("processes") == 2 and waited

        # Act: run until both processes have spent the budget and the ingester has had to wait for it
        await eventually(both_spent_and_waiting, what="two processes spending one budget", timeout_s=90)
        rows = await conn.fetch("SELECT holder, started_at FROM public.ch_rest_calls ORDER BY started_at")
        shown = await budget()
    finally:
        await conn.close()
    # Assert: never more than the budget in any minute, the two together; the heartbeat counts both
    assert most_in_any_window([r["started_at"] for r in rows], timedelta(seconds=60)) <= BUDGET_PER_MIN
    assert (shown["ledger"], shown["ledger_fallbacks"]) == ("shared", 0)
    assert int(str(shown["calls_per_min"])) >= int(str(shown["calls_per_min_here"]))
