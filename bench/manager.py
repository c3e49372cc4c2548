"""Account manager: ``python -m bench manager [--quick]``.

1. **Live load**: one ``python -m workers manager`` process owning 50 destinations (2 held symbols
   each) while this process publishes 20 ZMQ ticks/s per destination (1,000/s in all) with the
   default knobs (``FLUSH_INTERVAL_S`` 0.25, ``UI_SNAPSHOT_SEC`` 1). Reported: the manager process's
   CPU as a percentage of one core (target <= 50 %), and tick -> row -> NOTIFY latency: for every
   ``pos_channel_<slug>`` NOTIFY received, its arrival time minus the publish time of the newest tick
   the NOTIFY'd rows hold (``as_of_ns`` in the payload): p50/p99 (target p99 <= 250 ms).
2. **Incremental closed trades**: a destination with 100,000 historical fills (50,000 round trips)
   loaded once; then each new fill is written to ``activities`` and one incremental sync is timed
   (read the new rows, apply them to the FIFO book, upsert the closed trade, NOTIFY):
   p50/p99/max ms per new fill (target <= 20 ms).

The database is ``BENCH_DATABASE_URL`` (a maintenance DSN; a scratch database is created and dropped)
or an embedded throwaway server.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import zmq
import zmq.asyncio

from core.db import connect, migrate
from core.destinations import Destination, load_destinations, pos_channel
from core.dsn import parse_dsn
from core.embedded_pg import EmbeddedPostgres
from core.settings import Settings
from workers.prices import encode_message

ROOT = Path(__file__).resolve().parent.parent
DESTINATIONS = 50
SYMBOLS_PER_DEST = 2
TICKS_PER_DEST_S = 20
CPU_TARGET_PCT = 50.0
LATENCY_TARGET_MS = 250.0
INCREMENT_TARGET_MS = 20.0
HISTORY_FILLS = 100_000


class _NullBroker:
    """No broker in the closed-trade benchmark: the timed path never calls it."""

    async def get_account(self) -> Any:
        raise OSError("no broker in this benchmark")

    async def get_positions(self) -> list[Any]:
        raise OSError("no broker in this benchmark")

    async def get_portfolio_history(self, **params: Any) -> Any:
        raise OSError("no broker in this benchmark")

    async def close(self) -> None:
        return None


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class _Database:
    """A scratch database on BENCH_DATABASE_URL or an embedded server."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.server: EmbeddedPostgres | None = None
        self.admin_dsn = os.environ.get("BENCH_DATABASE_URL") or ""
        self.name = f"ch_bench_mgr_{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> str:
        if not self.admin_dsn:
            self.server = EmbeddedPostgres(self.workdir / "pg")
            self.admin_dsn = self.server.start()
        conn = connect(self.admin_dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{self.name}"')
        conn.close()
        return parse_dsn(self.admin_dsn).with_dbname(self.name).uri()

    def __exit__(self, *exc: object) -> None:
        conn = connect(self.admin_dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        conn.close()
        if self.server is not None:
            self.server.stop()


def _destinations_file(path: Path, n: int) -> Path:
    lines = []
    for i in range(n):
        lines.append(f'[[destinations]]\nname = "bench {i:02d}"\nkey_id = "PKBENCH{i:04d}"\nsecret_key = "x"\n'
                     'base_url = "http://127.0.0.1:9"\n')
    path.write_text("\n".join(lines))
    return path


async def _seed_positions(dsn: str, dests: list[Destination]) -> dict[str, list[str]]:
    conn = await asyncpg.connect(dsn)
    symbols: dict[str, list[str]] = {}
    t0 = datetime.now(UTC) - timedelta(hours=1)
    rows = []
    for i, d in enumerate(dests):
        syms = [f"B{i:02d}{chr(65 + k)}" for k in range(SYMBOLS_PER_DEST)]
        symbols[d.slug] = syms
        rows.append((d.slug, f"csd-{i}", t0, "CSD", None, None, None, None, Decimal(100_000), None))
        for k, s in enumerate(syms):
            rows.append((d.slug, f"fill-{i}-{k}", t0 + timedelta(seconds=k + 1), "FILL", s, "buy", Decimal(10),
                         Decimal(100), None, str(uuid.uuid4())))
    await conn.executemany(
        """INSERT INTO account_activities.activities (destination, activity_id, ts, activity_type, symbol, side, qty,
               price, net_amount, order_id, raw) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10::uuid,'{}'::jsonb)""", rows)
    await conn.close()
    return symbols


async def live_load(dsn: str, workdir: Path, window_s: float) -> list[dict[str, Any]]:
    dest_file = _destinations_file(workdir / "destinations.toml", DESTINATIONS)
    dests = load_destinations(dest_file)
    settings = Settings(postgresql_live_conn_string=dsn)
    conn = connect(dsn)
    migrate(conn, settings, dests)
    conn.close()
    symbols = await _seed_positions(dsn, dests)
    ctx = zmq.asyncio.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLDHARBOUR_", "CH_"))}
    env.update({"COLDHARBOUR_ENV_FILE": str(workdir / "no.env"), "POSTGRESQL_LIVE_CONN_STRING": dsn,
                "DESTINATIONS_FILE": str(dest_file), "DESTINATIONS_LOCAL_FILE": str(workdir / "none.toml"),
                "DATA_DIR": str(workdir / "data"), "ZMQ_PRICE_ENDPOINTS": f"tcp://127.0.0.1:{port}",
                "LOG_LEVEL": "ERROR"})
    log = (workdir / "manager.log").open("wb")
    proc = await asyncio.to_thread(subprocess.Popen, [sys.executable, "-m", "workers", "manager"], cwd=ROOT,
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    listen = await asyncpg.connect(dsn)
    latencies_ms: list[float] = []
    notifies = 0
    counting = False

    def on_notify(_c: Any, _pid: int, _channel: str, payload: str) -> None:
        nonlocal notifies
        now_ns = time.time_ns()
        data = json.loads(payload)
        if counting and data.get("as_of_ns"):
            notifies += 1
            latencies_ms.append((now_ns - int(data["as_of_ns"])) / 1e6)

    for d in dests:
        await listen.add_listener(pos_channel(d.slug), on_notify)
    all_symbols = [s for syms in symbols.values() for s in syms]
    per_symbol_hz = TICKS_PER_DEST_S / SYMBOLS_PER_DEST
    published = 0
    price = 100.0

    async def publish_for(seconds: float) -> None:
        nonlocal published, price
        period = 1.0 / per_symbol_hz
        end = time.monotonic() + seconds
        next_t = time.monotonic()
        while time.monotonic() < end:
            price = 100.0 + (published % 500) / 100
            for s in all_symbols:
                await pub.send_multipart(encode_message(s, f"{price:.2f}", time.time_ns()))
            published += len(all_symbols)
            next_t += period
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))

    try:
        # Warm up until every destination is owned and has priced rows.
        deadline = time.monotonic() + 120
        while True:
            await publish_for(0.5)
            ready = await listen.fetchval("SELECT count(*) FROM account_activities.heartbeats WHERE service = 'manager'")
            if ready >= DESTINATIONS:
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"manager not ready ({ready} destinations); see {workdir / 'manager.log'}")
        await publish_for(2.0)
        ps = psutil.Process(proc.pid)
        counting = True
        published = 0
        cpu0, wall0 = ps.cpu_times(), time.monotonic()
        await publish_for(window_s)
        cpu1, wall1 = ps.cpu_times(), time.monotonic()
        counting = False
        wall = wall1 - wall0
        cpu_pct = 100.0 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / wall
        ticks_per_s = published / wall
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            drain_code = await asyncio.to_thread(proc.wait, 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            drain_code = -9
        log.close()
        await listen.close()
        pub.close(linger=0)
        ctx.term()
    p99 = _pct(latencies_ms, 0.99)
    return [
        {"name": "manager.cpu_pct_one_core", "value": round(cpu_pct, 1), "unit": "%", "target": f"<= {CPU_TARGET_PCT}",
         "ok": cpu_pct <= CPU_TARGET_PCT, "destinations": DESTINATIONS, "ticks_per_s": round(ticks_per_s),
         "window_s": round(wall, 1)},
        {"name": "manager.tick_to_notify_p50", "value": round(_pct(latencies_ms, 0.5), 1), "unit": "ms"},
        {"name": "manager.tick_to_notify_p99", "value": round(p99, 1), "unit": "ms",
         "target": f"<= {LATENCY_TARGET_MS}", "ok": p99 <= LATENCY_TARGET_MS, "notifies": notifies},
        {"name": "manager.sigterm_exit_code", "value": drain_code, "unit": ""},
    ]


async def closed_increment(dsn: str, new_fills: int) -> list[dict[str, Any]]:
    from workers.manager import AccountManager, DestinationRunner, always_open

    dest = Destination(name="hist", slug="hist", key_id="PKHIST", secret_key="x", base_url="http://127.0.0.1:9")
    settings = Settings(postgresql_live_conn_string=dsn)
    conn = connect(dsn)
    migrate(conn, settings, [dest])
    conn.close()
    pg = await asyncpg.connect(dsn)
    t0 = datetime(2024, 1, 2, 15, 0, tzinfo=UTC)
    old = datetime.now(UTC) - timedelta(days=1)
    records = []
    for i in range(HISTORY_FILLS):
        sym = f"H{i % 20:02d}"
        side = "buy" if (i // 20) % 2 == 0 else "sell"
        price = Decimal(100 + (i % 37)) + Decimal(i % 100) / 100
        records.append(("hist", f"h{i:07d}", t0 + timedelta(seconds=i), "FILL", sym, side, Decimal(5), price,
                        uuid.uuid4(), "{}", old))
    started = time.perf_counter()
    await pg.copy_records_to_table("activities", schema_name="account_activities", records=records, columns=[
        "destination", "activity_id", "ts", "activity_type", "symbol", "side", "qty", "price", "order_id", "raw",
        "ingested_at"])
    insert_s = time.perf_counter() - started

    manager = AccountManager(settings, [dest], broker_factory=lambda d, s: _NullBroker(), market_open=always_open)
    from workers.db import create_pool

    manager.pool = await create_pool(settings, max_size=4)
    runner = DestinationRunner(manager.context(), dest, None)
    started = time.perf_counter()
    await runner.start()
    load_s = time.perf_counter() - started
    timings_ms: list[float] = []
    base = t0 + timedelta(seconds=HISTORY_FILLS + 10)
    for j in range(new_fills):
        side = "buy" if j % 2 == 0 else "sell"  # open then close: every second fill closes a round trip
        await pg.execute(
            """INSERT INTO account_activities.activities (destination, activity_id, ts, activity_type, symbol, side,
                   qty, price, order_id, raw) VALUES ('hist', $1, $2, 'FILL', 'NEW', $3, 3, $4, $5::uuid, '{}')""",
            f"n{j:06d}", base + timedelta(seconds=j), side, Decimal(50 + j % 7), str(uuid.uuid4()))
        t = time.perf_counter()
        await runner.sync_activities()
        timings_ms.append((time.perf_counter() - t) * 1000)
    trips = await pg.fetchval("SELECT count(*) FROM closed_trades_hist")
    await pg.close()
    await manager.pool.close()
    p99 = _pct(timings_ms, 0.99)
    return [
        {"name": "manager.closed_increment_p50", "value": round(statistics.median(timings_ms), 2), "unit": "ms",
         "history_fills": HISTORY_FILLS, "new_fills": new_fills},
        {"name": "manager.closed_increment_p99", "value": round(p99, 2), "unit": "ms",
         "target": f"<= {INCREMENT_TARGET_MS}", "ok": p99 <= INCREMENT_TARGET_MS},
        {"name": "manager.closed_increment_max", "value": round(max(timings_ms), 2), "unit": "ms"},
        {"name": "manager.history_load_s", "value": round(load_s, 2), "unit": "s",
         "note": "first start: replay 100k fills and write every closed trade", "closed_trades": trips,
         "copy_insert_s": round(insert_s, 2)},
    ]


def run(quick: bool) -> list[dict[str, Any]]:
    workdir = Path(tempfile.mkdtemp(prefix="ch-bench-manager-"))
    with _Database(workdir) as dsn:
        rows = asyncio.run(live_load(dsn, workdir, window_s=10.0 if quick else 60.0))
        rows += asyncio.run(closed_increment(dsn, new_fills=40 if quick else 400))
    return rows


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    for row in run(quick):
        print(json.dumps(row, default=str), flush=True)
