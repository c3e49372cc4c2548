"""``python -m bench.rest_budget [--quick]``: what the REST budget's ledger costs per REST call.

The budget takes every call's slot in PostgreSQL (``public.ch_rest_take``, one round trip under a
per-destination advisory lock). Measured on a scratch database (BENCH_DATABASE_URL or an embedded
server), at the steady state's shape: at most 20 calls in the destination's window.

- ``local``: :meth:`RequestBudget.acquire` without a ledger (the in-process window only);
- ``ledger_take``: one slot taken, 0–19 calls already in the window;
- ``ledger_full``: the window full, the slot refused (a waiting call asking again);
- ``ledger_full_2_processes``: the same from two connections at once on one destination (the lock
  serialises them; two threads with an event loop each stand for the two processes).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.manager import _Database
from core import db
from core.settings import Settings
from workers.alpaca.budget import Priority, RequestBudget
from workers.alpaca.budget_ledger import DbLedger, LedgerConnection

URL = "http://broker.bench"
WINDOW_LIMIT = 20


def _figures(name: str, samples_s: list[float], **extra: Any) -> dict[str, Any]:
    ordered = sorted(samples_s)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return {"name": f"rest_budget.{name}", "value": round(statistics.median(ordered) * 1000, 3), "unit": "ms p50",
            "p95_ms": round(p95 * 1000, 3), "max_ms": round(ordered[-1] * 1000, 3), "n": len(ordered), **extra}


async def _local(n: int) -> list[float]:
    budget = RequestBudget(budget_per_min=1e9, catchup_per_min=1e9)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await budget.acquire(Priority.CONFIRM)
        out.append(time.perf_counter() - t0)
    return out


async def _takes(dsn: str, n: int, *, full: bool, destination: str) -> list[float]:
    ledger = DbLedger(LedgerConnection(dsn), destination, URL)
    admin = await asyncpg.connect(dsn)
    out = []
    try:
        for i in range(n):
            if not full and i % WINDOW_LIMIT == 0:  # untimed: empty the window again
                await admin.execute("DELETE FROM public.ch_rest_calls WHERE destination = $1", destination)
            t0 = time.perf_counter()
            answer = await ledger.take(60.0, WINDOW_LIMIT, int(Priority.CONFIRM))
            out.append(time.perf_counter() - t0)
            assert answer is not None, "the ledger did not answer"
            assert answer.taken is not full
    finally:
        await admin.close()
        await ledger.close()
    return out


async def _fill(dsn: str, destination: str) -> None:
    ledger = DbLedger(LedgerConnection(dsn), destination, URL, holder="filler")
    for _ in range(WINDOW_LIMIT):
        await ledger.take(60.0, WINDOW_LIMIT, int(Priority.CONFIRM))
    await ledger.close()


def _in_thread(dsn: str, n: int, destination: str, results: list[list[float]]) -> None:
    results.append(asyncio.run(_takes(dsn, n, full=True, destination=destination)))


def _two_at_once(dsn: str, n: int) -> list[float]:
    # the window is full before the race: every take is a refused check, as a waiting call's retry
    asyncio.run(_fill(dsn, "shared"))
    results: list[list[float]] = []
    threads = [threading.Thread(target=_in_thread, args=(dsn, n, "shared", results)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [s for r in results for s in r]


def run(quick: bool) -> list[dict[str, Any]]:
    n = 300 if quick else 3000
    with tempfile.TemporaryDirectory(prefix="ch-bench-budget-") as tmp, _Database(Path(tmp)) as dsn:
        conn = db.connect(dsn)
        db.migrate(conn, Settings(postgresql_live_conn_string=dsn))
        conn.commit()
        conn.close()
        results = [_figures("local", asyncio.run(_local(n)))]
        results.append(_figures("ledger_take", asyncio.run(_takes(dsn, n, full=False, destination="take"))))
        asyncio.run(_fill(dsn, "full"))
        results.append(_figures("ledger_full", asyncio.run(_takes(dsn, n, full=True, destination="full"))))
        results.append(_figures("ledger_full_2_processes", _two_at_once(dsn, n)))
        return results


if __name__ == "__main__":
    for result in run("--quick" in sys.argv[1:]):
        print(json.dumps(result))
