"""reconciliation_drift end to end: a split the activities endpoint holds back makes the manager's tie-out
drift; the alert fires once per subject, and resolves when the ingester stores the split (the tie-out then
explains the difference: no unexplained drift is left).

Real processes only: the simulator (faults and the split through its admin API), ``python -m workers
ingester`` (re-reading the REST endpoints every three seconds), ``manager`` (tie-out every two seconds)
and ``alerts``, PostgreSQL and a local webhook receiver. Prices stand still (``--daily-vol 0``) so that
only the held-back split makes a difference.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.simulator_fixtures import SimHandle
from tests.workers.test_alerts_e2e import _env, events
from tests.workers.test_alerts_support import Receiver, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
SLUG = "risk"
RULES = """
[[channels]]
name = "hook"
type = "webhook"
url_env = "E2E_HOOK_URL"
secret_env = "E2E_HOOK_SECRET"
timeout_s = 2

[[rules]]
name = "drift"
kind = "reconciliation_drift"
severity = "critical"
cooldown_s = 3600
resolved_message = "the books tie out again"
destinations = ["Risk"]
channels = ["hook"]

[[rules]]
name = "big drift"
kind = "reconciliation_drift"
scope = "position"
min_usd = 1000000
destinations = ["Risk"]
channels = ["hook"]
"""
INGESTER_CODE = (
    "import functools, runpy, workers.ingester as m; "
    "m.run_ingester = functools.partial(m.run_ingester, options=m.IngesterOptions("
    "backfill_interval_s=3.0, overlap_s=1.0, confirm_overlap_s=1.0, reconcile_overlap_s=1.0)); "
    "import sys; sys.argv = ['workers', 'ingester']; runpy.run_module('workers', run_name='__main__')")


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
def processes() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    yield procs
    for p in procs.values():
        if p.poll() is None:
            p.kill()
            p.wait(10)


class Drift:
    def __init__(self, sim: SimHandle, receiver: Receiver, conn: asyncpg.Connection) -> None:
        self.sim, self.receiver, self.conn = sim, receiver, conn

    async def admin(self, path: str, body: Any = None) -> Any:
        return await asyncio.to_thread(self.sim.admin, path, body)

    async def now_status(self, status: str, after_id: int = 0) -> int:
        """The id of the first "now" tie-out row after ``after_id`` with ``status``."""
        async def found() -> bool:
            return bool(await self.conn.fetchval(
                "SELECT id FROM public.ch_tieout WHERE destination = $1 AND day IS NULL AND status = $2 AND id > $3",
                SLUG, status, after_id))
        await wait_for(found, what=f"a tie-out {status} row", timeout_s=90)
        return int(await self.conn.fetchval(
            "SELECT min(id) FROM public.ch_tieout WHERE destination = $1 AND day IS NULL AND status = $2 AND id > $3",
            SLUG, status, after_id))

    async def qty(self, symbol: str) -> str | None:  # the book's quantity
        value = await self.conn.fetchval(f"SELECT qty FROM public.open_trades_{SLUG} WHERE symbol = $1", symbol)
        return None if value is None else f"{value.normalize():f}"


@pytest.fixture
async def drift(simulator_factory: Callable[..., SimHandle], db_dsn: str, tmp_path: Path,
                processes: dict[str, subprocess.Popen[bytes]]) -> AsyncIterator[Drift]:
    sim = simulator_factory(accounts=2, extra_args=["--daily-vol", "0", "--no-fees"])
    receiver = await Receiver().start()
    env = _env(db_dsn, tmp_path, sim, receiver)
    (tmp_path / "alerts.toml").write_text(RULES)
    env.update({"TIEOUT_INTERVAL_S": "2", "REST_BUDGET_CALLS_PER_MIN": "300"})
    migrate = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "workers", "migrate"], cwd=ROOT,
                                      env=env, capture_output=True, timeout=120, check=False)
    assert migrate.returncode == 0, migrate.stderr.decode()[-2000:]
    processes["ingester"] = _spawn(["-c", INGESTER_CODE], env, tmp_path / "ingester.log")
    for name in ("manager", "alerts"):
        processes[name] = _spawn(["-m", "workers", name], env, tmp_path / f"{name}.log")
    conn = await asyncpg.connect(db_dsn)
    try:
        yield Drift(sim, receiver, conn)
    finally:
        await conn.close()
        await receiver.stop()
        logs = {name: (tmp_path / f"{name}.log").read_text(errors="replace")[-3000:] for name in processes}
        print(json.dumps(logs, indent=1))  # shown by pytest when the test failed


async def test_a_held_back_split_drifts_fires_once_and_resolves_when_it_ties_out(drift: Drift) -> None:
    # Arrange: 10 AAPL booked, and the books tie out
    await drift.admin("/price", {"symbol": "AAPL", "price": "100"})
    await drift.admin("/fill", {"account": "sim-1", "symbol": "AAPL", "side": "buy", "qty": "10"})
    await wait_for(lambda: _eq(drift.qty("AAPL"), "10"), what="AAPL booked", timeout_s=60)
    tied = await drift.now_status("tied_out")
    assert not drift.receiver.received  # nothing drifted before the fault

    # Act 1: the broker splits AAPL 2-for-1; its activities endpoint holds every new record back
    await drift.admin("/faults", {"delay_activity_s": 86_400})
    await drift.admin("/corporate-action", {"type": "split", "symbol": "AAPL", "new_rate": 2})
    drifted = await drift.now_status("drift", tied)
    fired = await _event(drift, "drift", "fired")

    # Assert 1: per position, naming the instrument, the figure and the tolerance
    assert fired["severity"] == "critical"
    assert "AAPL" in {e["subject"] for e in events(drift.receiver, "drift", "fired")}
    aapl = next(e for e in events(drift.receiver, "drift", "fired") if e["subject"] == "AAPL")
    assert "position AAPL: position qty differs by" in aapl["text"]
    assert "tolerance $0.01" in aapl["text"]

    # Act 2: the endpoint lists the split again; the ingester stores it and the tie-out names its cause.
    # (The book keeps 10: the split is dated the day's start, before the fill, as Alpaca dates a split's
    # activities; so the pass is "explained" by the corporate action, not tied out: no drift either way.)
    await drift.admin("/faults", {"delay_activity_s": 0})
    settled = await drift.now_status("explained", drifted)
    await wait_for(lambda: _all_resolved(drift), what="every drift episode to resolve", timeout_s=60)
    causes = await drift.conn.fetchval("SELECT causes FROM public.ch_tieout WHERE id = $1", settled)
    assert list(causes) == ["corporate_action"]

    # Assert 2: once per episode, each resolved with its message; the $1M floor never fired
    fired_subjects = sorted(e["subject"] for e in events(drift.receiver, "drift", "fired"))
    resolved = events(drift.receiver, "drift", "resolved")
    assert sorted(e["subject"] for e in resolved) == fired_subjects
    assert len(set(fired_subjects)) == len(fired_subjects)
    assert all("the books tie out again" in e["text"] for e in resolved)
    assert not events(drift.receiver, "big drift", "fired")
    rows = await drift.conn.fetch("SELECT rule, subject, state FROM public.ch_alerts WHERE kind = 'reconciliation_drift'")
    assert sorted(r["subject"] for r in rows) == fired_subjects
    assert {r["state"] for r in rows} == {"resolved"}


async def _eq(value: Any, expected: str) -> bool:
    return bool(await value == expected)


async def _event(drift: Drift, rule: str, event: str) -> dict[str, Any]:
    await wait_for(lambda: bool(events(drift.receiver, rule, event)), what=f"{rule!r} {event}", timeout_s=60)
    return events(drift.receiver, rule, event)[0]


async def _all_resolved(drift: Drift) -> bool:
    n = await drift.conn.fetchval("SELECT count(*) FROM public.ch_alerts WHERE kind = 'reconciliation_drift' "
                                  "AND state = 'open'")
    return n == 0 and len(events(drift.receiver, "drift", "resolved")) == len(events(drift.receiver, "drift", "fired"))
