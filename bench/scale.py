"""How cost grows: with destinations, with history length and with open browser sessions.
``python -m bench scale [--quick]``. Every part runs the real processes through :mod:`bench.stack`.

1. **Destinations** (1, 10, 50; ``--quick``: 1, 10): idle CPU and RSS of ``python -m workers all``
   over ``IDLE_S`` (``--quick``: half; prices tick, nothing held), then a burst of ``BURST_PER_DEST`` x N one-share
   fills submitted as fast as 8 client threads can (``POST /admin/fill``, round robin over the
   accounts). Ingest throughput = fills / time until every FILL activity is stored; manager
   throughput = fills / time until every ``open_trades_<slug>`` holds the expected quantities; CPU
   milliseconds of the workers process per fill.
2. **History length** (1 month = 21 sessions vs 5 years = 1260; ``--quick``: 21 vs 126): the
   simulator generates the history (its bots, ~40 fills per session), then ``python -m workers
   backfill`` reads it over REST (rows/s), then ``python -m workers all`` starts cold (time until the
   manager's open trades equal the broker's positions), then 10 single fills (fill → open trades
   latency), then the destination page's heaviest callbacks (KPIs, equity chart, first closed-trades
   block) cold and warm, through the dashboard's HTTP API.
3. **Open browser sessions** (1, 10, 50; ``--quick``: 1, 10, 25): the replayed sessions of
   :mod:`bench.load` on one ``python -m dashboard`` process: its CPU share, the dashboard's database
   statements per second and the callback p95.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psutil
import requests

from bench.soak import signed_positions
from bench.stack import ROOT, DashClient, Stack, StackConfig, percentiles
from core.destinations import open_trades_table

IDLE_S = 10.0
BURST_PER_DEST = 20
BURST_MIN, BURST_MAX = 100, 1000
SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "SPY", "QQQ", "JPM")
TIMEOUT_S = 240.0


def _cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _workers_procs(stack: Stack) -> list[psutil.Process]:
    return [p for name, p in stack.processes().items() if name.startswith("workers")]


def _fill_burst(stack: Stack, n: int) -> dict[tuple[str, str], int]:
    """``n`` one-share buys, round robin over the accounts, from 8 threads; returns expected qty."""
    jobs = [(stack.names[i % len(stack.names)], stack.slugs[i % len(stack.slugs)], SYMBOLS[(i // len(stack.names)) % len(SYMBOLS)])
            for i in range(n)]
    local = threading.local()

    def one(job: tuple[str, str, str]) -> tuple[str, str] | None:
        if not hasattr(local, "http"):
            local.http = requests.Session()
        name, slug, sym = job
        resp = local.http.post(f"{stack.rest_url}/admin/fill",
                               json={"account": name, "symbol": sym, "side": "buy", "qty": "1"}, timeout=30,
                               headers=stack.admin_headers)
        return (slug, sym) if resp.status_code == 200 else None

    expected: dict[tuple[str, str], int] = {}
    with ThreadPoolExecutor(8) as pool:
        for key in pool.map(one, jobs):
            if key is not None:
                expected[key] = expected.get(key, 0) + 1
    return expected


def _all_open_sql(slugs: list[str]) -> str:
    return " UNION ALL ".join(f"SELECT '{s}', symbol, qty FROM public.\"{open_trades_table(s)}\"" for s in slugs)


def destinations_part(n: int, idle_s: float = IDLE_S) -> dict[str, Any]:
    with Stack(StackConfig(destinations=n, web="none")) as stack:
        stack.wait_ready(120)
        time.sleep(2.0)
        procs = _workers_procs(stack)
        c0, t0 = _cpu_s(procs), time.monotonic()
        time.sleep(idle_s)
        idle_cpu_pct = 100 * (_cpu_s(procs) - c0) / (time.monotonic() - t0)
        rss_idle = sum(p.memory_info().rss for p in procs) / 2**20
        k = max(BURST_MIN, min(BURST_MAX, BURST_PER_DEST * n))
        c0, t0 = _cpu_s(procs), time.monotonic()
        expected = _fill_burst(stack, k)
        submit_s = time.monotonic() - t0
        fills = sum(expected.values())
        stack.wait_for(lambda: stack.query(
            "SELECT count(*) FROM account_activities.activities WHERE activity_type = 'FILL'")[0][0] >= fills,
            TIMEOUT_S, "every fill stored", 0.05)
        ingest_s = time.monotonic() - t0
        sql = _all_open_sql(stack.slugs)

        def book_done() -> bool:
            got = {(s, sym): int(q) for s, sym, q in stack.query(sql)}
            return all(got.get(key) == q for key, q in expected.items())

        stack.wait_for(book_done, TIMEOUT_S, "every open trade updated", 0.05)
        manager_s = time.monotonic() - t0
        cpu_ms_per_fill = 1000 * (_cpu_s(procs) - c0) / fills
        rss_after = sum(p.memory_info().rss for p in procs) / 2**20
        # idle again, now holding positions: every price tick revalues them
        time.sleep(2.0)
        c0, t1 = _cpu_s(procs), time.monotonic()
        time.sleep(idle_s)
        holding_cpu_pct = 100 * (_cpu_s(procs) - c0) / (time.monotonic() - t1)
        positions = len(stack.query(sql))
        errors = len(stack.error_lines("workers"))
    return {"destinations": n, "fills": fills, "submit_s": round(submit_s, 2),
            "ingest_fills_per_s": round(fills / ingest_s, 1), "manager_fills_per_s": round(fills / manager_s, 1),
            "ingest_s": round(ingest_s, 2), "manager_s": round(manager_s, 2),
            "workers_cpu_ms_per_fill": round(cpu_ms_per_fill, 2), "workers_idle_cpu_pct": round(idle_cpu_pct, 1),
            "workers_holding_cpu_pct": round(holding_cpu_pct, 1), "positions": positions,
            "workers_rss_idle_mb": round(rss_idle, 1), "workers_rss_after_mb": round(rss_after, 1),
            "worker_log_errors": errors}


def history_part(days: int) -> dict[str, Any]:
    with Stack(StackConfig(destinations=1, history_days=days, workers=False, web="none")) as stack:
        slug, name = stack.slugs[0], stack.names[0]
        since = (datetime.now(UTC) - timedelta(days=int(days * 1.5) + 15)).date().isoformat()
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "workers", "backfill", "--since", since, "--no-progress"],
                       env=stack.env(), cwd=ROOT, check=True, capture_output=True, timeout=TIMEOUT_S * 2)
        backfill_s = time.monotonic() - t0
        (acts, fills), = stack.query("SELECT count(*), count(*) FILTER (WHERE activity_type = 'FILL') "
                                     "FROM account_activities.activities")
        truth = stack.admin(f"/ground-truth?account={name.replace(' ', '%20')}", timeout=120)["accounts"][name]
        broker = {s: Decimal(p["qty"]) for s, p in truth["positions"].items() if Decimal(p["qty"]) != 0}
        t0 = time.monotonic()
        stack.start_workers()

        def book_matches() -> bool:
            return signed_positions(stack, slug) == broker and bool(stack.query(f'SELECT 1 FROM public."closed_trades_{slug}" LIMIT 1'))

        stack.wait_for(book_matches, TIMEOUT_S * 2, "manager cold start", 0.1)
        cold_start_s = time.monotonic() - t0
        stack.wait_ready(60)
        latencies = []
        for i in range(10):
            sym = SYMBOLS[i % len(SYMBOLS)]
            before = {s: q for s, q in stack.open_positions(slug).items()}
            t1 = time.monotonic()
            stack.admin("/fill", {"account": name, "symbol": sym, "side": "buy", "qty": "1"})
            stack.wait_for(lambda s=sym, b=before: stack.open_positions(slug).get(s) != b.get(s), 60, "fill applied", 0.01)
            latencies.append(time.monotonic() - t1)
            time.sleep(max(0.0, 2.2 - (time.monotonic() - t1)))  # one fill per fill catch-up window
        workers_rss = sum(p.memory_info().rss for p in _workers_procs(stack)) / 2**20
        stack.restart_web(web="flask", env={"CACHE_TYPE": "SimpleCache"})
        dash = DashClient(stack.web_url)
        (v_pos, v_closed, v_eq), = stack.query(
            "SELECT pos_version, closed_version, equity_version FROM public.ch_versions WHERE slug = %s", (slug,))
        values = {"dest-slug.data": slug, "tz-choice.value": "utc", "browser-tz.data": "UTC", "theme-store.data": "light",
                  "dest-v-equity.data": v_eq, "dest-v-closed.data": v_closed, "dest-v-pos.data": v_pos,
                  "dest-closed.getRowsRequest": {"startRow": 0, "endRow": 100,
                                                 "sortModel": [{"colId": "exit_time", "sort": "desc"}], "filterModel": {}}}
        web: dict[str, Any] = {}
        for label, prefix in (("kpis", "dest-kpis.children"), ("equity_chart", "dest-equity.figure"),
                              ("closed_block", "dest-closed.getRowsResponse")):
            out = dash.find(prefix)
            times = []
            for _ in range(3):
                t1 = time.perf_counter()
                resp = dash.call(out, values, timeout=120)
                times.append(time.perf_counter() - t1)
                resp.raise_for_status()
            web[label] = {"cold_ms": round(times[0] * 1000, 1), "warm_ms": round(min(times[1:]) * 1000, 1)}
        (closed_n,), = [r for r in stack.query(f'SELECT count(*) FROM public."closed_trades_{slug}"')]
        (eq_n,), = [r for r in stack.query(f'SELECT count(*) FROM public."equity_full_{slug}"')]
    return {"history_days": days, "activities": acts, "fills": fills, "closed_trades": closed_n, "equity_points": eq_n,
            "backfill_s": round(backfill_s, 2), "backfill_rows_per_s": round(acts / backfill_s, 1),
            "cold_start_s": round(cold_start_s, 2), "fill_to_open_trades": percentiles(latencies, (50, 95)),
            "workers_rss_mb": round(workers_rss, 1), "web": web}


def sessions_part(counts: tuple[int, ...], duration_s: float) -> list[dict[str, Any]]:
    from bench.load import _count_statements, _drive

    out = []
    cfg = StackConfig(destinations=3, history_days=10, bot_rate=1.5, env={"UI_SNAPSHOT_SEC": "1.0"})
    with Stack(cfg) as stack:
        stack.wait_ready(90)
        stack.log_all_statements(True)
        asyncio.run(_drive(stack.web_url, stack.slugs, 2, 1.0, False))  # warm-up
        web = [p for name, p in stack.processes().items() if name.startswith("web")]
        for n in counts:
            offset = stack.pg_log_path().stat().st_size
            c0, t0 = _cpu_s(web), time.monotonic()
            rec = asyncio.run(_drive(stack.web_url, stack.slugs, n, duration_s, True))
            elapsed = time.monotonic() - t0
            cpu_pct = 100 * (_cpu_s(web) - c0) / elapsed
            ours, _ = _count_statements(stack, offset)
            lat = percentiles(rec.all())
            out.append({"sessions": n, "web_cpu_pct": round(cpu_pct, 1), "db_statements_per_s": round(ours / elapsed, 1),
                        "callback_p95_ms": round(lat["p95"] * 1000, 1), "errors": len(rec.errors),
                        "requests_per_s": round(rec.requests / elapsed, 1)})
        stack.log_all_statements(False)
    return out


def run(quick: bool) -> list[dict[str, Any]]:
    random.seed(5)
    rows: list[dict[str, Any]] = []
    for n in ((1, 10) if quick else (1, 10, 50)):
        r = destinations_part(n, IDLE_S / 2 if quick else IDLE_S)
        common = {"destinations": n, "fills": r["fills"]}
        rows += [
            {"name": f"scale.dest{n}.ingest_fills_per_s", "value": r["ingest_fills_per_s"], "unit": "fills/s", **common},
            {"name": f"scale.dest{n}.manager_fills_per_s", "value": r["manager_fills_per_s"], "unit": "fills/s", **common},
            {"name": f"scale.dest{n}.workers_cpu_ms_per_fill", "value": r["workers_cpu_ms_per_fill"], "unit": "ms", **common},
            {"name": f"scale.dest{n}.workers_idle_cpu_pct", "value": r["workers_idle_cpu_pct"], "unit": "%", **common},
            {"name": f"scale.dest{n}.workers_holding_cpu_pct", "value": r["workers_holding_cpu_pct"], "unit": "%",
             "positions": r["positions"], **common},
            {"name": f"scale.dest{n}.workers_rss_mb", "value": r["workers_rss_idle_mb"], "unit": "MB",
             "after_burst": r["workers_rss_after_mb"], **common},
            {"name": f"scale.dest{n}.worker_log_errors", "value": r["worker_log_errors"], "unit": "lines", **common},
        ]
    for days in ((21, 126) if quick else (21, 1260)):
        r = history_part(days)
        common = {"history_days": days, "activities": r["activities"], "fills": r["fills"],
                  "closed_trades": r["closed_trades"], "equity_points": r["equity_points"]}
        rows += [
            {"name": f"scale.hist{days}.backfill_rows_per_s", "value": r["backfill_rows_per_s"], "unit": "rows/s",
             "backfill_s": r["backfill_s"], **common},
            {"name": f"scale.hist{days}.manager_cold_start_s", "value": r["cold_start_s"], "unit": "s", **common},
            {"name": f"scale.hist{days}.fill_to_open_trades_p50_s", "value": round(r["fill_to_open_trades"]["p50"], 3),
             "unit": "s", "p95": round(r["fill_to_open_trades"]["p95"], 3), **common},
            {"name": f"scale.hist{days}.workers_rss_mb", "value": r["workers_rss_mb"], "unit": "MB", **common},
        ]
        for label, v in r["web"].items():
            rows.append({"name": f"scale.hist{days}.web_{label}_ms", "value": v["warm_ms"], "unit": "ms",
                         "cold_ms": v["cold_ms"], **common})
    for r in sessions_part((1, 10, 25) if quick else (1, 10, 50), 8.0 if quick else 30.0):
        n = r["sessions"]
        common = {"sessions": n, "server": "python -m dashboard (1 process)"}
        rows += [
            {"name": f"scale.sessions{n}.web_cpu_pct", "value": r["web_cpu_pct"], "unit": "%", **common},
            {"name": f"scale.sessions{n}.db_statements_per_s", "value": r["db_statements_per_s"], "unit": "stmt/s", **common},
            {"name": f"scale.sessions{n}.callback_p95_ms", "value": r["callback_p95_ms"], "unit": "ms",
             "errors": r["errors"], "requests_per_s": r["requests_per_s"], **common},
        ]
    return rows
