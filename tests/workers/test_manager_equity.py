"""The rebuild-equity / refill-snapshots commands against a real database (the maths: tests/core)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg

from core.settings import Settings
from tests.workers.test_manager_support import cash, destination, fill, insert_activities, migrate_db
from workers.manager import rebuild_equity, refill_snapshots

ROOT = Path(__file__).resolve().parents[2]
T = datetime(2026, 1, 6, 15, 0, tzinfo=UTC)  # a Tuesday, 10:00 New York: the market is open


async def test_rebuild_equity_values_each_session_close(settings: Settings, db_dsn: str) -> None:
    dest = destination("Alpha", initial_deposit=Decimal(10_000))
    migrate_db(settings, [dest])
    conn = await asyncpg.connect(db_dsn)
    try:
        day = timedelta(days=1)
        acts = [cash(0, "CSD", "10000"), fill(1, "AAPL", "buy", "10", "100"),
                fill(2, "AAPL", "sell", "10", "110", minutes=60 * 24 + 2), cash(3, "CSW", "-500")]
        acts[3].ts = T + 2 * day
        await insert_activities(conn, dest.slug, acts, notify=False)
        await conn.execute(f"INSERT INTO equity_full_{dest.slug} (ts, equity, source) VALUES ($1, 1, 'live')",
                           T - timedelta(days=1) + timedelta(hours=3))

        written = await rebuild_equity(settings, dest, since=datetime(2026, 1, 5, tzinfo=UTC), progress=False)

        rows = await conn.fetch(f"SELECT ts, equity, cash, realized_pl, net_deposits, source FROM equity_full_{dest.slug} "
                                "ORDER BY ts")
        closes = [r for r in rows if r["ts"] < datetime(2026, 1, 9, tzinfo=UTC)]
        assert written >= 4
        assert all(r["source"] == "rebuild" for r in rows)  # the stale row after 'since' is gone
        assert [(r["ts"].day, r["ts"].hour, r["equity"], r["net_deposits"]) for r in closes] == [
            (5, 21, Decimal(10_000), Decimal(10_000)),  # 9,000 cash + 10 AAPL at the last fill price
            (6, 21, Decimal(10_100), Decimal(10_000)),  # sold at 110
            (7, 21, Decimal(10_100), Decimal(10_000)),
            (8, 21, Decimal(9_600), Decimal(9_500)),  # a 500 withdrawal: not a loss
        ]
        assert closes[-1]["realized_pl"] == Decimal(100)
    finally:
        await conn.close()


async def test_refill_snapshots_fills_holes_only(settings: Settings, db_dsn: str) -> None:
    dest = destination("Alpha")
    migrate_db(settings, [dest])
    cfg = settings.replace(snapshot_sec=60.0)
    conn = await asyncpg.connect(db_dsn)
    try:
        await insert_activities(conn, dest.slug, [cash(-60, "CSD", "1000")], notify=False)
        for minute in (0, 1, 5):
            await conn.execute(f"INSERT INTO equity_full_{dest.slug} (ts, equity, source) VALUES ($1, 7, 'live')",
                               T + timedelta(minutes=minute))

        written = await refill_snapshots(cfg, dest, progress=False)

        rows = await conn.fetch(f"SELECT ts, equity, source FROM equity_full_{dest.slug} ORDER BY ts")
        assert written == 3
        assert [(r["ts"] - T, r["equity"], r["source"]) for r in rows] == [
            (timedelta(minutes=0), Decimal(7), "live"), (timedelta(minutes=1), Decimal(7), "live"),
            (timedelta(minutes=2), Decimal(1000), "refill"), (timedelta(minutes=3), Decimal(1000), "refill"),
            (timedelta(minutes=4), Decimal(1000), "refill"), (timedelta(minutes=5), Decimal(7), "live")]
    finally:
        await conn.close()


async def test_cli_rebuild_equity_runs_with_a_progress_bar(settings: Settings, db_dsn: str, tmp_path: Path) -> None:
    dest_file = tmp_path / "destinations.toml"
    dest_file.write_text('[[destinations]]\nname = "Alpha"\nkey_id = "PKTESTKEY0001"\nsecret_key = "s3cr3t"\n'
                         'base_url = "http://127.0.0.1:9"\n')
    migrate_db(settings, [destination("Alpha")])
    conn = await asyncpg.connect(db_dsn)
    await insert_activities(conn, "alpha", [cash(0, "CSD", "500"), fill(1, "AAPL", "buy", "1", "100")], notify=False)
    env = {"PATH": "/usr/bin:/bin", "COLDHARBOUR_ENV_FILE": str(tmp_path / "no.env"),
           "POSTGRESQL_LIVE_CONN_STRING": db_dsn, "DESTINATIONS_FILE": str(dest_file),
           "DESTINATIONS_LOCAL_FILE": str(tmp_path / "none.toml"), "DATA_DIR": str(tmp_path / "data")}
    try:
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "workers", "rebuild-equity", "--destination", "Alpha", "--since",
                             "2026-01-05"], cwd=ROOT, env=env, capture_output=True,
            text=True, timeout=120, check=False)
        first = await conn.fetchrow("SELECT equity, source FROM equity_full_alpha ORDER BY ts LIMIT 1")
    finally:
        await conn.close()

    assert done.returncode == 0, done.stderr[-2000:]
    assert "rebuild-equity alpha [" in done.stderr  # the progress bar
    assert (first["equity"], first["source"]) == (Decimal(500), "rebuild")
