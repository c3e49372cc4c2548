"""Callbacks under pressure: ``python -m bench starvation [--quick]``.

Serves the dashboard as it is deployed (gunicorn, one ``gthread`` worker, ``GUNICORN_THREADS`` = 32)
on a seeded throwaway database (see :mod:`bench.dashboard`), and times callback requests over real
HTTP (the closed-trades grid block, the KPIs, the positions, the idle version poll, and ``/healthz``):

1. **idle**: nothing else open;
2. **pressed**: ten slow CSV exports open (clients that read the headers and then stop reading, so
   the server's writes block and each admitted export holds its cursor) plus as many SSE streams as
   ``SSE_MAX_STREAMS`` admits, and one more of each past the caps.

Reported: p50/p95 per phase, the ratio pressed/idle, how many exports were admitted (the rest got
429) and streams refused (503). Before the export pool and the caps, ten such exports held every
pooled connection and the callbacks waited 30 s for one.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.dashboard import SLUG, _database, _pct

THREADS = 32
SLOW_EXPORTS = 10
TARGET_RATIO = 1.5  # pressed p95 within 1.5x idle (noise on a shared 2-core host)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _gunicorn(dsn: str, data_dir: str) -> Iterator[int]:
    port = _free_port()
    env = {**os.environ, "POSTGRESQL_LIVE_CONN_STRING": dsn, "DATA_DIR": data_dir, "HEARTBEAT_SEC": "3600",
           "LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", str(THREADS), "-w", "1",
         "-b", f"127.0.0.1:{port}", "--timeout", "120", "dashboard.app:server"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/healthz")
                if conn.getresponse().status in (200, 503):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("gunicorn did not start")
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


def _held_request(port: int, path: str) -> tuple[socket.socket, int]:
    """Send a GET, read only its status line, then stop reading (a slow client)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's writes block
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = sock.recv(64)
    return sock, int(head.split(b" ", 2)[1])


def _callback_payloads() -> dict[str, dict[str, Any]]:
    tz = [{"id": "tz-choice", "property": "value", "value": "exchange"},
          {"id": "browser-tz", "property": "data", "value": None}]
    slug = {"id": "dest-slug", "property": "data", "value": SLUG}
    return {
        "grid": {"output": "dest-closed.getRowsResponse",
                 "outputs": {"id": "dest-closed", "property": "getRowsResponse"},
                 "inputs": [{"id": "dest-closed", "property": "getRowsRequest",
                             "value": {"startRow": 0, "endRow": 100, "sortModel": [], "filterModel": {}}}],
                 "state": [slug, *tz, {"id": "dest-v-closed", "property": "data", "value": 1}],
                 "changedPropIds": ["dest-closed.getRowsRequest"]},
        "kpis": {"output": "..dest-kpis.children...dest-kpi-key.data..",
                 "outputs": [{"id": "dest-kpis", "property": "children"}, {"id": "dest-kpi-key", "property": "data"}],
                 "inputs": [{"id": "dest-v-equity", "property": "data", "value": 1},
                            {"id": "dest-v-closed", "property": "data", "value": 1}, *tz],
                 "state": [slug, {"id": "dest-kpi-key", "property": "data", "value": None}],
                 "changedPropIds": ["dest-v-equity.data"]},
        "poll": {"output": "..dest-v-pos.data...dest-v-closed.data...dest-v-equity.data..",
                 "outputs": [{"id": "dest-v-pos", "property": "data"}, {"id": "dest-v-closed", "property": "data"},
                             {"id": "dest-v-equity", "property": "data"}],
                 "inputs": [{"id": "dest-tick", "property": "n_intervals", "value": 1},
                            {"id": "sse-hint", "property": "data", "value": None}],
                 "state": [slug, {"id": "dest-v-pos", "property": "data", "value": 0},
                           {"id": "dest-v-closed", "property": "data", "value": 0},
                           {"id": "dest-v-equity", "property": "data", "value": 0}],
                 "changedPropIds": ["dest-tick.n_intervals"]},
    }


def _time_requests(port: int, runs: int) -> dict[str, list[float]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/")  # finalises the callback map
    conn.getresponse().read()
    payloads = _callback_payloads()
    times: dict[str, list[float]] = {name: [] for name in [*payloads, "healthz"]}
    for _ in range(runs):
        for name, payload in payloads.items():
            body = json.dumps(payload)
            t0 = time.perf_counter()
            conn.request("POST", "/_dash-update-component", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            times[name].append((time.perf_counter() - t0) * 1000)
            if response.status not in (200, 204):
                raise RuntimeError(f"{name} answered {response.status}")
        t0 = time.perf_counter()
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        times["healthz"].append((time.perf_counter() - t0) * 1000)
        if response.status != 200:
            raise RuntimeError(f"/healthz answered {response.status}")
    conn.close()
    return times


def _pressure(port: int, streams: int) -> tuple[list[socket.socket], dict[str, int]]:
    held: list[socket.socket] = []
    counts = {"exports_admitted": 0, "exports_refused": 0, "streams_admitted": 0, "streams_refused": 0}
    for _ in range(SLOW_EXPORTS):
        sock, status = _held_request(port, f"/export/{SLUG}/closed_trades.csv")
        held.append(sock)
        counts["exports_admitted" if status == 200 else "exports_refused"] += 1
    for _ in range(streams + 1):
        sock, status = _held_request(port, "/stream/events")
        held.append(sock)
        counts["streams_admitted" if status == 200 else "streams_refused"] += 1
    return held, counts


def run(quick: bool) -> list[dict[str, Any]]:
    from core.settings import Settings

    runs = 30 if quick else 100
    streams = Settings().sse_max_streams
    out: list[dict[str, Any]] = []
    with _database(100_000, 100_000 if quick else 300_000) as (dsn, settings), \
            _gunicorn(dsn, str(settings.data_path)) as port:
        _time_requests(port, 3)  # warm the caches as a running dashboard has them
        idle = _time_requests(port, runs)
        held, counts = _pressure(port, streams)
        try:
            pressed = _time_requests(port, runs)
        finally:
            for sock in held:
                sock.close()
    for name in idle:
        p95_idle, p95_pressed = _pct(idle[name], 0.95), _pct(pressed[name], 0.95)
        out.append({"name": f"starvation.{name}.p95_ms", "value": round(p95_pressed, 2), "unit": "ms",
                    "idle_p95_ms": round(p95_idle, 2), "ratio": round(p95_pressed / p95_idle, 2),
                    "p50_ms": round(statistics.median(pressed[name]), 2),
                    "idle_p50_ms": round(statistics.median(idle[name]), 2), "runs": runs,
                    "ok": p95_pressed <= TARGET_RATIO * p95_idle or p95_pressed - p95_idle < 5.0})
    out.append({"name": "starvation.pressure", "value": SLOW_EXPORTS, "unit": "slow exports", **counts,
                "sse_max_streams": streams, "gunicorn_threads": THREADS})
    return out


if __name__ == "__main__":
    for result in run(quick="--quick" in sys.argv[1:]):
        print(json.dumps(result, default=str), flush=True)
