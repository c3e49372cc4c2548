"""Two ``python -m workers alerts`` replicas: SIGKILL the owner during an episode whose message is still
undelivered; the survivor delivers it once, opens no second episode, and sends the resolve once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from core.settings import Settings
from tests.workers.test_alerts_support import Receiver, wait_for
from tests.workers.test_manager_support import destination, migrate_db

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


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
        return subprocess.Popen([sys.executable, "-m", "workers", "alerts"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def env_for(db_dsn: str, tmp_path: Path, receiver: Receiver) -> dict[str, str]:
    (tmp_path / "destinations.toml").write_text('[[destinations]]\nname = "Alpha"\nkey_id = "PKTESTKEY0001"\n'
                                                'secret_key = "s3cr3t"\nbase_url = "http://127.0.0.1:9"\n')
    (tmp_path / "alerts.toml").write_text(
        '[[channels]]\nname = "hook"\ntype = "webhook"\nurl_env = "FO_HOOK_URL"\ntimeout_s = 2\n'
        '[[rules]]\nname = "big fill"\nkind = "large_fill"\nthreshold_usd = 1000\nwindow_s = 600\nchannels = ["hook"]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLDHARBOUR_", "CH_"))}
    env.update({"COLDHARBOUR_ENV_FILE": str(tmp_path / "no.env"), "POSTGRESQL_LIVE_CONN_STRING": db_dsn,
                "DESTINATIONS_FILE": str(tmp_path / "destinations.toml"),
                "DESTINATIONS_LOCAL_FILE": str(tmp_path / "none.toml"), "ALERT_RULES_FILE": str(tmp_path / "alerts.toml"),
                "ALERT_EVAL_INTERVAL_S": "0.2", "HEARTBEAT_SEC": "1", "DATA_DIR": str(tmp_path / "data"),
                "FO_HOOK_URL": f"{receiver.url}/hook", "PYTHONUNBUFFERED": "1"})
    return env


async def test_sigkill_during_an_episode_neither_loses_nor_duplicates(
        settings: Settings, db_dsn: str, tmp_path: Path, receiver: Receiver,
        procs: list[subprocess.Popen[bytes]]) -> None:
    dest = destination("Alpha")
    migrate_db(settings, [dest])
    env = env_for(db_dsn, tmp_path, receiver)
    procs.extend(spawn(env, tmp_path / f"{name}.log") for name in ("a", "b"))
    by_pid = {p.pid: p for p in procs}
    conn = await asyncpg.connect(db_dsn)

    async def owner() -> int | None:
        replica = await conn.fetchval("SELECT replica FROM account_activities.heartbeats WHERE destination = 'alpha' "
                                      "AND service = 'alerts' AND state = 'running'")
        return int(replica.rsplit(":", 1)[1]) if replica else None

    async def owned_by(pids: set[int]) -> bool:
        return await owner() in pids

    try:
        await wait_for(lambda: owned_by(set(by_pid)), what="one replica to own alpha", timeout_s=60)
        receiver.always_fail = True  # the first deliveries fail: the message is pending when the owner dies
        await conn.execute(
            """INSERT INTO account_activities.activities (destination, activity_id, ts, activity_type, symbol, side,
                   qty, price, raw) VALUES ('alpha', $1, now(), 'FILL', 'AAPL', 'buy', $2, $3, '{}'::jsonb)""",
            f"x::{uuid.uuid4()}", Decimal(20), Decimal(101))
        await wait_for(lambda: receiver.attempts >= 1, what="a first (refused) delivery attempt")
        rows = await conn.fetch("SELECT id, replica FROM public.ch_alerts WHERE state = 'open'")
        assert len(rows) == 1
        victim = by_pid[int(rows[0]["replica"].rsplit(":", 1)[1])]
        survivor = next(p for p in procs if p is not victim)

        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        receiver.always_fail = False

        await wait_for(lambda: len(receiver.received) == 1, what="the survivor to deliver the pending message",
                       timeout_s=60)
        await wait_for(lambda: owned_by({survivor.pid}), what="the survivor to own alpha", timeout_s=60)
        await conn.execute("DELETE FROM account_activities.activities")  # the condition clears
        await wait_for(lambda: len(receiver.received) == 2, what="the resolved message", timeout_s=60)

        assert [r.json["event"] for r in receiver.received] == ["fired", "resolved"]
        assert receiver.received[0].json["alert_id"] == rows[0]["id"]
        alerts = await conn.fetch("SELECT id, state FROM public.ch_alerts")
        assert [(a["id"], a["state"]) for a in alerts] == [(rows[0]["id"], "resolved")]
        outbox = await conn.fetch("SELECT event, status FROM public.ch_alert_outbox ORDER BY id")
        assert [(o["event"], o["status"]) for o in outbox] == [("fired", "sent"), ("resolved", "sent")]
    finally:
        await conn.close()

