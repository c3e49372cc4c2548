"""50 concurrent dashboard sessions on loopback: ``python -m bench load [--quick]``.

The whole stack runs through :mod:`bench.stack` (3 destinations with history, the simulator's bot
trading so versions move). A bounded asyncio/aiohttp client plays ``SESSIONS`` browsers on the
destination page, sending exactly what Dash's renderer sends: the callback map is read from the
app's ``/_dash-dependencies`` and every request body is built from it (:class:`bench.stack.DashClient`);
the page's version stores come from the ``_pages_content`` response (the layout the server renders).
Each session:

1. loads the page: ``GET /destination/<slug>``, ``/_dash-layout``, ``/_dash-dependencies``, the
   ``_pages_content`` callback, then (concurrently, as the renderer does) every initial callback of
   the page: positions, KPIs, equity chart, equity analytics, trade breakdowns, the closed-trades
   grid's first block and the export links; it opens ``/stream/events`` when SSE is on (a real tab does);
2. polls every ``UI_SNAPSHOT_SEC`` (the ``dest-tick`` callback, 204 when nothing changed) and, when
   a version moved, re-runs the callbacks that depend on it, concurrently.

Configurations, one stack (the web process is swapped between them):

- ``single``: ``python -m dashboard`` (one process, Flask threaded server), ``SimpleCache``;
- ``gunicorn4``: 4 gunicorn ``gthread`` workers sharing Redis (``CACHE_TYPE=RedisCache``,
  ``CACHE_REDIS_URL=redis://127.0.0.1:6379/0``);
- ``gunicorn4_nocache``: the same with ``CACHE_TYPE=NullCache`` (every memoised read hits the database).

Reported per configuration: callback latency p50/p95/p99 (client-side, every callback of the
steady state and of the page loads), errors (HTTP status other than 200/204 or a failed request;
must be 0), and the dashboard's database statements per second (PostgreSQL logs every statement
with its application name during the run; lines from ``coldharbour-dashboard`` are counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import defaultdict
from typing import Any

import aiohttp

from bench.stack import DashClient, Stack, StackConfig, percentiles

SESSIONS = 50
UI_SNAPSHOT_SEC = 1.0
DURATION_S_FULL = 60.0
DURATION_S_QUICK = 15.0
REDIS_URL = "redis://127.0.0.1:6379/0"
APP_NAME = "coldharbour-dashboard"
TZ = "utc"
FIRST_BLOCK = {"startRow": 0, "endRow": 100, "sortModel": [{"colId": "exit_time", "sort": "desc"}], "filterModel": {}}

# (label, server, env, gthread threads per worker). 32 threads is entrypoint.sh's GUNICORN_THREADS default.
CONFIGS: tuple[tuple[str, str, dict[str, str], int], ...] = (
    ("single", "flask", {"CACHE_TYPE": "SimpleCache"}, 0),
    ("gunicorn4", "gunicorn", {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": REDIS_URL}, 32),
    ("gunicorn4_nocache", "gunicorn", {"CACHE_TYPE": "NullCache"}, 32),
)
# Full run only: the ``--threads 8`` of dashboard/__main__.py's docstring. 50 tabs hold 50 SSE streams,
# each on a thread: 4 x 8 = 32 threads cannot serve them and the callbacks too.
CONFIG_T8 = ("gunicorn4_t8", "gunicorn", {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": REDIS_URL}, 8)


def _find_data(node: Any, wanted: set[str], out: dict[str, Any]) -> None:
    """Walk a Dash component tree; collect ``props.data`` of the components whose id is wanted."""
    if isinstance(node, dict):
        props = node.get("props")
        if isinstance(props, dict) and props.get("id") in wanted:
            out[props["id"]] = props.get("data")
        for v in node.values():
            _find_data(v, wanted, out)
    elif isinstance(node, list):
        for v in node:
            _find_data(v, wanted, out)


class Recorder:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.requests = 0

    def all(self) -> list[float]:
        return [x for v in self.latency.values() for x in v]


class Session:
    """One browser tab on ``/destination/<slug>``."""

    def __init__(self, http: aiohttp.ClientSession, dash: DashClient, base: str, slug: str, rec: Recorder) -> None:
        self.http, self.dash, self.base, self.slug, self.rec = http, dash, base, slug, rec
        self.values: dict[str, Any] = {"dest-slug.data": slug, "tz-choice.value": TZ, "browser-tz.data": "UTC",
                                       "theme-store.data": "light", "dest-closed.getRowsRequest": FIRST_BLOCK,
                                       "dest-tick.n_intervals": 0}
        self.out = {k: dash.find(k) for k in ("..dest-v-pos.data", "..dest-positions.rowData", "dest-kpis.children",
                                              "dest-equity.figure", "..dest-dd-table.children",
                                              "..dest-by-symbol.figure", "dest-closed.getRowsResponse",
                                              "..dest-export-csv.href", "..dest-v-pos", ".._pages_content")}

    async def _get(self, label: str, path: str) -> None:
        await self._timed(label, self.http.get(f"{self.base}{path}"))

    async def _timed(self, label: str, request: Any) -> tuple[int, Any]:
        t0 = time.perf_counter()
        self.rec.requests += 1
        try:
            async with request as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.rec.errors.append(f"{label}: {type(exc).__name__}")
            return 0, None
        self.rec.latency[label].append(time.perf_counter() - t0)
        if status not in (200, 204):
            self.rec.errors.append(f"{label}: HTTP {status}")
        return status, body

    async def callback(self, label: str, prefix: str, changed: list[str] | None = None) -> Any:
        payload = self.dash.payload(self.out[prefix], self.values, changed)
        status, body = await self._timed(label, self.http.post(f"{self.base}/_dash-update-component", json=payload))
        if status == 200 and body:
            import json

            return json.loads(body).get("response")
        return None

    async def load_page(self) -> None:
        await self._get("page_html", f"/destination/{self.slug}")
        await self._get("dash_layout", "/_dash-layout")
        await self._get("dash_dependencies", "/_dash-dependencies")
        self.values["_pages_location.pathname"] = f"/destination/{self.slug}"
        self.values["_pages_location.search"] = ""
        resp = await self.callback("pages_content", ".._pages_content")
        found: dict[str, Any] = {}
        _find_data(resp, {"dest-v-pos", "dest-v-closed", "dest-v-equity"}, found)
        for k, v in found.items():
            self.values[f"{k}.data"] = v
        await asyncio.gather(self.positions(), self.equity_dependents(), self.closed_dependents(),
                             self.callback("closed_block", "dest-closed.getRowsResponse"),
                             self.callback("export_links", "..dest-export-csv.href"))

    async def positions(self) -> None:
        await self.callback("positions", "..dest-positions.rowData")

    async def equity_dependents(self) -> None:
        await asyncio.gather(self.callback("kpis", "dest-kpis.children"),
                             self.callback("equity_chart", "dest-equity.figure"),
                             self.callback("equity_analytics", "..dest-dd-table.children"))

    async def closed_dependents(self) -> None:
        await self.callback("breakdowns", "..dest-by-symbol.figure")

    async def poll(self) -> None:
        self.values["dest-tick.n_intervals"] += 1
        resp = await self.callback("poll", "..dest-v-pos", ["dest-tick.n_intervals"])
        if not resp:
            return
        jobs = []
        for key, job in (("dest-v-pos", self.positions), ("dest-v-equity", self.equity_dependents),
                         ("dest-v-closed", self.closed_dependents)):
            if key in resp and "data" in resp[key]:
                self.values[f"{key}.data"] = resp[key]["data"]
                jobs.append(job())
        if "dest-v-closed" in resp:
            jobs.append(self.callback("closed_block", "dest-closed.getRowsResponse"))
        if jobs:
            await asyncio.gather(*jobs)

    async def sse(self, stop: asyncio.Event) -> None:
        """Hold ``/stream/events`` open (and read it) like a tab's EventSource."""
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, asyncio.CancelledError):
            async with self.http.get(f"{self.base}/stream/events",
                                     timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as resp:
                if resp.status != 200:
                    self.rec.errors.append(f"sse: HTTP {resp.status}")
                    return
                while not stop.is_set():
                    chunk = await resp.content.readany()
                    if not chunk:
                        return

    async def run(self, duration_s: float, sse: bool, stop: asyncio.Event) -> None:
        sse_task = asyncio.create_task(self.sse(stop)) if sse else None
        await asyncio.sleep(random.random() * 2)  # tabs do not open in lockstep
        await self.load_page()
        end = time.monotonic() + duration_s
        next_at = time.monotonic() + random.random() * UI_SNAPSHOT_SEC
        while time.monotonic() < end:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += UI_SNAPSHOT_SEC
            await self.poll()
        if sse_task is not None:
            sse_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sse_task


async def _drive(base: str, slugs: list[str], sessions: int, duration_s: float, sse: bool) -> Recorder:
    rec = Recorder()
    dash = await asyncio.to_thread(DashClient, base)
    connector = aiohttp.TCPConnector(limit=sessions * 4, limit_per_host=sessions * 4)
    timeout = aiohttp.ClientTimeout(total=60)
    stop = asyncio.Event()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        tabs = [Session(http, dash, base, slugs[i % len(slugs)], rec) for i in range(sessions)]
        # bounded: every session ends after duration_s (+ its page load); a hard cap guards the rest
        try:
            await asyncio.wait_for(asyncio.gather(*(t.run(duration_s, sse, stop) for t in tabs)),
                                   timeout=duration_s + 120)
        except TimeoutError:
            rec.errors.append("load: sessions did not finish within duration + 120 s")
        stop.set()
    return rec


def _count_statements(stack: Stack, since_bytes: int) -> tuple[int, int]:
    """(dashboard statements, all statements) logged after byte offset ``since_bytes``."""
    text = stack.pg_log_path().read_bytes()[since_bytes:].decode(errors="replace")
    ours = total = 0
    for line in text.splitlines():
        if "statement: " not in line:
            continue
        total += 1
        if f"[{APP_NAME}]" in line:
            ours += 1
    return ours, total


def measure_config(stack: Stack, label: str, web: str, env: dict[str, str], threads: int, sessions: int,
                   duration_s: float) -> dict[str, Any]:
    stack.restart_web(web=web, env=env, workers=4, threads=threads or 8)
    sse = env.get("DISABLE_SSE", "false") != "true"
    # warm the process(es) like a deploy's first visitor would (not measured)
    asyncio.run(_drive(stack.web_url, stack.slugs, 2, 1.0, False))
    offset = stack.pg_log_path().stat().st_size
    t0 = time.monotonic()
    rec = asyncio.run(_drive(stack.web_url, stack.slugs, sessions, duration_s, sse))
    elapsed = time.monotonic() - t0
    time.sleep(0.5)
    ours, total = _count_statements(stack, offset)
    lat = percentiles(rec.all())
    by_cb = {k: percentiles(v) for k, v in rec.latency.items()}
    return {"config": label, "sessions": sessions, "duration_s": round(elapsed, 1), "requests": rec.requests,
            "requests_per_s": round(rec.requests / elapsed, 1), "latency": lat, "by_callback": by_cb,
            "errors": len(rec.errors), "error_sample": rec.errors[:5],
            "db_statements_per_s": round(ours / elapsed, 1), "db_all_statements_per_s": round(total / elapsed, 1),
            "web_errors_logged": len(stack.error_lines("web"))}


def run(quick: bool, sessions: int = SESSIONS) -> list[dict[str, Any]]:
    duration_s = DURATION_S_QUICK if quick else DURATION_S_FULL
    cfg = StackConfig(destinations=3, history_days=10 if quick else 60, bot_rate=1.5,
                      env={"UI_SNAPSHOT_SEC": str(UI_SNAPSHOT_SEC)}, web="none")
    rows: list[dict[str, Any]] = []
    with Stack(cfg) as stack:
        stack.wait_ready(90)
        stack.log_all_statements(True)
        for label, web, env, threads in (CONFIGS if quick else (*CONFIGS, CONFIG_T8)):
            r = measure_config(stack, label, web, env, threads, sessions, duration_s)
            lat = r["latency"]
            common = {"config": label, "sessions": sessions, "duration_s": r["duration_s"],
                      "server": web if web == "flask" else f"gunicorn gthread 4x{threads}", "cache": env["CACHE_TYPE"]}
            rows += [
                {"name": f"load.{label}.callback_p50_ms", "value": round(lat["p50"] * 1000, 1), "unit": "ms", **common},
                {"name": f"load.{label}.callback_p95_ms", "value": round(lat["p95"] * 1000, 1), "unit": "ms", **common},
                {"name": f"load.{label}.callback_p99_ms", "value": round(lat["p99"] * 1000, 1), "unit": "ms", **common},
                {"name": f"load.{label}.errors", "value": r["errors"], "unit": "requests", "target": 0,
                 "ok": r["errors"] == 0, "sample": r["error_sample"], **common},
                {"name": f"load.{label}.requests_per_s", "value": r["requests_per_s"], "unit": "req/s", **common},
                {"name": f"load.{label}.db_statements_per_s", "value": r["db_statements_per_s"], "unit": "stmt/s",
                 "all_statements_per_s": r["db_all_statements_per_s"], **common},
                {"name": f"load.{label}.by_callback_p95_ms", "value": None, "unit": "ms",
                 "detail": {k: round(v["p95"] * 1000, 1) for k, v in r["by_callback"].items()},
                 "counts": {k: v["n"] for k, v in r["by_callback"].items()}, **common},
            ]
        stack.log_all_statements(False)
    cached = next(r["value"] for r in rows if r["name"] == "load.gunicorn4.db_statements_per_s")
    uncached = next(r["value"] for r in rows if r["name"] == "load.gunicorn4_nocache.db_statements_per_s")
    rows.append({"name": "load.cache_db_statement_ratio", "value": round(uncached / cached, 2) if cached else None,
                 "unit": "x", "peer": "gunicorn4 (RedisCache) vs gunicorn4_nocache"})
    return rows
