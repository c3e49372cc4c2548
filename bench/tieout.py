"""``python -m bench tieout [--quick]``: what one tie-out costs, in broker calls and time, against the simulator.

A stack (:mod:`bench.stack`: embedded PostgreSQL, simulator with a generated history, ``python -m
workers all``) fills the tables; then this process runs the tie-out itself
(:func:`workers.manager.tieout.compute` and :func:`~workers.manager.tieout.store`) for a number of
passes through its own :class:`workers.alpaca.BrokerClient`, whose REST budget counts every call it
makes over HTTP. Reported: broker calls per pass, calls an hour per destination at the default
``TIEOUT_INTERVAL_S`` (and at 60 s), the share of the default REST budget, pass time (p50/p95), and
the calls of one repair backfill over the history window.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.stack import Stack, StackConfig
from core.destinations import load_destinations
from core.settings import Settings


async def _measure(stack: Stack, passes: int, history_days: int) -> dict[str, Any]:
    from workers.alpaca import BrokerClient
    from workers.db import create_pool
    from workers.manager.tieout import TieoutReader, compute, request_and_run_backfill, store, tolerances

    settings = Settings(postgresql_live_conn_string=stack.dsn, rest_budget_calls_per_min=1000.0,
                        tieout_history_days=history_days + 3)
    dest = load_destinations(stack.dest_file, stack.tmp / "none.toml")[0]
    pool = await create_pool(settings, min_size=1, max_size=3)
    broker = BrokerClient(dest, settings)
    assert broker.budget is not None
    try:
        reader = TieoutReader(pool, None, settings.account_schema, dest.slug)
        durations_ms: list[float] = []
        before = broker.budget.as_dict()["calls_total"]
        status = ""
        for _ in range(passes):
            t0 = time.perf_counter()
            report = await compute(reader, broker, settings)
            await store(pool, dest.slug, report, tolerances(settings))
            durations_ms.append((time.perf_counter() - t0) * 1000)
            status = report.status.value
        calls = broker.budget.as_dict()["calls_total"] - before
        repair_before = broker.budget.as_dict()["calls_total"]
        since = datetime.now(UTC) - timedelta(days=history_days + 3)
        rows = await request_and_run_backfill(pool, settings, dest, since=since, reason="bench")
        repair_calls = broker.budget.as_dict()["calls_total"] - repair_before
        days = len(report.days)
    finally:
        await broker.close()
        await pool.close()
    per_pass = calls / passes
    durations_ms.sort()
    return {"calls_per_pass": per_pass, "days": days, "status": status, "repair_calls": repair_calls,
            "repair_rows": rows, "p50_ms": statistics.median(durations_ms),
            "p95_ms": durations_ms[min(len(durations_ms) - 1, int(0.95 * len(durations_ms)))]}


def run(quick: bool) -> list[dict[str, Any]]:
    history_days = 5 if quick else 20
    passes = 5 if quick else 20
    config = StackConfig(destinations=1, history_days=history_days, web="none",
                         env={"TIEOUT_INTERVAL_S": "604800"})  # the workers' own loop stays out of the count
    with Stack(config) as stack:
        stack.wait_ready(120)
        stack.wait_for(lambda: stack.query("SELECT count(*) FROM public.ch_fifo_state")[0][0] > 0, 120,
                       "the manager's first checkpoint")
        m = asyncio.run(_measure(stack, passes, history_days))
    default_interval_s = Settings().tieout_interval_s
    per_hour = m["calls_per_pass"] * 3600 / default_interval_s
    budget_per_hour = Settings().rest_budget_calls_per_min * 60
    common = {"history_days": history_days, "passes": passes, "days_compared": m["days"], "status": m["status"]}
    return [
        {"name": "tieout.calls_per_pass", "value": m["calls_per_pass"], "unit": "calls", **common},
        {"name": "tieout.calls_per_hour_default", "value": round(per_hour, 1), "unit": "calls/h",
         "interval_s": default_interval_s, "share_of_rest_budget": round(per_hour / budget_per_hour, 4)},
        {"name": "tieout.calls_per_hour_60s", "value": round(m["calls_per_pass"] * 60, 1), "unit": "calls/h"},
        {"name": "tieout.pass_p50", "value": round(m["p50_ms"], 1), "unit": "ms", **common},
        {"name": "tieout.pass_p95", "value": round(m["p95_ms"], 1), "unit": "ms", **common},
        {"name": "tieout.repair_backfill_calls", "value": m["repair_calls"], "unit": "calls",
         "rows_read": m["repair_rows"], "window_days": history_days + 3},
    ]
