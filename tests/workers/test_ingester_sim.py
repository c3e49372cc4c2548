"""The ingester against the simulator: stored orders, fills and activities equal the simulator's
ground truth exactly (zero missing, zero duplicated) — cleanly, under every fault knob with a
database restart, across a kill -9 of the ingester process, and with one destination's credentials
rejected while the others keep running."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from core.destinations import Destination
from core.embedded_pg import EmbeddedPostgres
from core.settings import Settings
from tests.simulator_fixtures import SimHandle
from tests.workers.test_ingester_store import migrate_db
from workers.alpaca.parse import parse_timestamp
from workers.backoff import BackoffPolicy
from workers.ingester import IngesterOptions, run_backfill, run_ingester

with warnings.catch_warnings():
    # alpaca-py 0.44 imports websockets.legacy, deprecated since websockets 14; not ours to change.
    warnings.filterwarnings("ignore", "websockets.legacy is deprecated", DeprecationWarning)
    from alpaca.trading.client import TradingClient
    from alpaca.trading.enums import OrderClass, OrderSide, TimeInForce
    from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest, StopLossRequest, TakeProfitRequest

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "account_activities"
FAST = IngesterOptions(
    backfill_interval_s=1.0,
    overlap_s=120.0,
    fill_catchup_min_interval_s=0.5,
    stream_stale_after_s=5.0,
    stream_ping_interval_s=2.0,
    request_timeout_s=2.5,  # below the chaos test's 4 s hang, above a busy machine's slow answer
    drain_timeout_s=5.0,
    lock_check_interval_s=0.5,
    db_retry=BackoffPolicy(base_s=0.05, cap_s=0.5, max_attempts=None),
    reconnect=BackoffPolicy(base_s=0.05, cap_s=0.5, max_attempts=None),
    auth_retry=BackoffPolicy(base_s=0.5, cap_s=1.0, max_attempts=None),
    backfill_retry=BackoffPolicy(base_s=0.1, cap_s=0.5, max_attempts=None),
)


TEST_REST_BUDGET_CALLS_PER_MIN = 6000.0
"""These tests run backfills every second with faults on: the production budget (20 a minute) is
tested on its own (tests/workers/test_rest_budget.py, test_provisional_sim.py)."""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, rest_budget_calls_per_min=TEST_REST_BUDGET_CALLS_PER_MIN,
                               rest_catchup_calls_per_min=TEST_REST_BUDGET_CALLS_PER_MIN)


def sim_destinations(sim: SimHandle, *, bad_secret: set[int] | None = None) -> list[Destination]:
    out = []
    for i, acct in enumerate(sim.accounts):
        secret = "wrong-" + acct["secret_key"][:4] if i in (bad_secret or set()) else acct["secret_key"]
        out.append(Destination(name=acct["name"], slug=acct["name"].replace("-", "_"), key_id=acct["key_id"],
                               secret_key=secret, base_url=sim.rest_url, stream_url=sim.stream_url))
    return out


def since_for(sim: SimHandle, days: int) -> datetime:
    return parse_timestamp(sim.admin("/state")["sim_time"]) - timedelta(days=days + 5)  # type: ignore[operator]


async def mismatches(conn: asyncpg.Connection, truth: dict[str, Any], dest: Destination) -> list[str]:
    """Every difference between the stored raw data of ``dest`` and the simulator's ground truth."""
    acct = truth["accounts"][dest.name]
    problems: list[str] = []
    rows = await conn.fetch(f"SELECT activity_id, raw FROM {SCHEMA}.activities WHERE destination = $1", dest.slug)
    stored: dict[str, Any] = {}
    for r in rows:
        if r["activity_id"] in stored:
            problems.append(f"duplicated activity {r['activity_id']}")
        stored[r["activity_id"]] = json.loads(r["raw"])
    expected = {a["id"]: a for a in acct["activities"]}
    problems += [f"missing activity {a}" for a in sorted(expected.keys() - stored.keys())]
    problems += [f"unexpected activity {a}" for a in sorted(stored.keys() - expected.keys())]
    problems += [f"activity {a} differs" for a in expected.keys() & stored.keys() if expected[a] != stored[a]]

    orders = {str(r["order_id"]): r for r in await conn.fetch(
        f"SELECT order_id, status, filled_qty, updated_at FROM {SCHEMA}.orders WHERE destination = $1", dest.slug)}
    truth_orders = {o["id"]: o for o in acct["orders"]}
    problems += [f"missing order {o}" for o in sorted(truth_orders.keys() - orders.keys())]
    problems += [f"unexpected order {o}" for o in sorted(orders.keys() - truth_orders.keys())]
    for oid in truth_orders.keys() & orders.keys():
        want, got = truth_orders[oid], orders[oid]
        want_state = (want["status"], Decimal(want["filled_qty"] or "0"), parse_timestamp(want["updated_at"]))
        got_state = (got["status"], got["filled_qty"] or Decimal(0), got["updated_at"])
        if want_state != got_state:
            problems.append(f"order {oid}: stored {got_state}, truth {want_state}")
    dup_exec = await conn.fetch(
        f"""SELECT execution_id FROM {SCHEMA}.order_events WHERE destination = $1 AND execution_id IS NOT NULL
            GROUP BY execution_id HAVING count(*) > 1""", dest.slug)
    problems += [f"duplicated execution {r['execution_id']}" for r in dup_exec]
    return problems


async def wait_converged(dsn: str, sim: SimHandle, dests: list[Destination], timeout_s: float) -> dict[str, list[str]]:
    """Poll until the store equals the ground truth (or the bound passes); returns what still differs."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        truth = await asyncio.to_thread(sim.admin, "/ground-truth")
        conn = await asyncpg.connect(dsn)
        try:
            diffs = {d.slug: await mismatches(conn, truth, d) for d in dests}
        except (OSError, asyncpg.PostgresError):
            diffs = {"db": ["unreachable"]}
        finally:
            await conn.close()
        if not any(diffs.values()) or asyncio.get_running_loop().time() > deadline:
            return {k: v[:10] for k, v in diffs.items() if v}
        await asyncio.sleep(0.5)


def trade_with_sdk(client: TradingClient) -> Any:
    """Orders through the real alpaca-py client: market, bracket, and a limit order cancelled.
    Returns the bracket order's id."""
    client.submit_order(MarketOrderRequest(symbol="AAPL", qty=3, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    bracket = client.submit_order(MarketOrderRequest(
        symbol="MSFT", qty=2, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, order_class=OrderClass.BRACKET,
        take_profit=TakeProfitRequest(limit_price=9999), stop_loss=StopLossRequest(stop_price=1)))
    resting = client.submit_order(LimitOrderRequest(symbol="SPY", qty=1, side=OrderSide.BUY, limit_price=1,
                                                    time_in_force=TimeInForce.DAY))
    client.cancel_order_by_id(resting.id)  # type: ignore[union-attr]
    return bracket.id  # type: ignore[union-attr]


async def run_for(settings: Settings, dests: list[Destination], since: datetime, body: Callable[[], Any],
                  options: IngesterOptions = FAST) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(run_ingester(settings, dests, stop_event=stop, options=options, since=since))
    try:
        await body()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.mark.slow
async def test_ingest_equals_ground_truth(simulator_factory: Callable[..., SimHandle], settings: Settings) -> None:
    # Arrange: two accounts with a day of history, a bot trading, orders through the real SDK
    sim = simulator_factory(accounts=2, history_days=1, bot_rate=4)
    dests = sim_destinations(sim)
    await asyncio.to_thread(migrate_db, settings, dests)
    dsn = settings.primary_dsn or ""
    notes: list[str] = []
    notes_ids: list[Any] = []

    async def body() -> None:
        listener = await asyncpg.connect(dsn)
        await listener.add_listener("ch_new_fills", lambda *a: notes.append(a[3]))
        notes_ids.append(await asyncio.to_thread(trade_with_sdk, sim.trading_client(0)))
        await asyncio.sleep(4)
        await asyncio.to_thread(sim.admin, "/bot", {"rate": 0})
        diffs = await wait_converged(dsn, sim, dests, 30)
        await listener.close()
        assert diffs == {}

    # Act
    await run_for(settings, dests, since_for(sim, 1), body)

    # Assert: health rows, a fill NOTIFY, no duplicate rows
    conn = await asyncpg.connect(dsn)
    hb = await conn.fetch(f"SELECT destination, state, rows_ingested, errors FROM {SCHEMA}.heartbeats")
    assert {r["destination"] for r in hb} == {d.slug for d in dests}
    assert all(r["rows_ingested"] > 0 and r["errors"] == 0 for r in hb)
    version = await conn.fetchval("SELECT activity_version FROM public.ch_versions WHERE slug = $1", dests[0].slug)
    legs = await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.orders WHERE parent_order_id = $1", notes_ids[0])
    await conn.close()
    assert version > 0
    assert legs == 2  # the bracket's take-profit and stop-loss keep their parent link
    assert any(json.loads(n)["d"] == dests[0].slug for n in notes)


@pytest.mark.slow
async def test_chaos_every_fault_and_a_database_restart(simulator_factory: Callable[..., SimHandle],
                                                        tmp_path: Path, pg_data_dir: Path) -> None:
    # Arrange: a database we can restart, a simulator with every fault knob on
    server = EmbeddedPostgres(pg_data_dir / "pg")
    dsn = await asyncio.to_thread(server.start)
    sim = simulator_factory(accounts=2, history_days=1, bot_rate=5, extra_args=[
        "--ws-drop-every-s", "1.5", "--ws-delay-ms", "20", "--ws-duplicate-rate", "0.3", "--ws-reorder-rate", "0.3",
        "--rest-error-rate", "0.25", "--rest-error-codes", "429,500,503", "--retry-after-s", "1",
        "--rest-hang-s", "4", "--rest-hang-rate", "0.05", "--stream-conflict", "reject"])
    dests = sim_destinations(sim)
    try:
        settings = Settings(postgresql_live_conn_string=dsn, flush_interval_s=0.05, heartbeat_sec=0.5,
                            db_connect_timeout_s=2.0, rest_budget_calls_per_min=TEST_REST_BUDGET_CALLS_PER_MIN,
                            rest_catchup_calls_per_min=TEST_REST_BUDGET_CALLS_PER_MIN)
        await asyncio.to_thread(migrate_db, settings, dests)

        async def body() -> None:
            await asyncio.sleep(3)
            await asyncio.to_thread(server.stop)  # database restart mid-run, the bot keeps trading
            await asyncio.sleep(2)
            await asyncio.to_thread(server.start)
            await asyncio.sleep(3)
            await asyncio.to_thread(sim.admin, "/bot", {"rate": 0})
            diffs = await wait_converged(dsn, sim, dests, 45)
            assert diffs == {}

        # Act: a short overlap, so orders that change long after creation must be caught by the open-order refresh
        await run_for(settings, dests, since_for(sim, 1), body, options=dataclasses.replace(FAST, overlap_s=1.0))

        # Assert: the faults really happened and were survived
        conn = await asyncpg.connect(dsn)
        details = [json.loads(r["details"]) for r in await conn.fetch(f"SELECT details FROM {SCHEMA}.heartbeats")]
        await conn.close()
        assert sum(d["reconnects"] for d in details) >= 2
        assert sum(d["broker"]["retries"] for d in details) >= 1
        assert sum(d["db_failures"] for d in details) >= 1
    finally:
        await asyncio.to_thread(server.stop)


def _ingester_process(tmp_path: Path, settings: Settings, sim: SimHandle) -> subprocess.Popen[bytes]:
    toml = tmp_path / "destinations.toml"
    toml.write_text("".join(
        f'[[destinations]]\nname = "{a["name"]}"\nkey_id = "{a["key_id"]}"\nsecret_key = "{a["secret_key"]}"\n'
        f'base_url = "{sim.rest_url}"\nstream_url = "{sim.stream_url}"\n\n' for a in sim.accounts))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLDHARBOUR_", "CH_", "POSTGRES", "TIMESCALE"))}
    env.update({"COLDHARBOUR_ENV_FILE": str(tmp_path / "none.env"), "POSTGRESQL_LIVE_CONN_STRING": settings.primary_dsn or "",
                "DESTINATIONS_FILE": str(toml), "DESTINATIONS_LOCAL_FILE": str(tmp_path / "none.toml"),
                "FLUSH_INTERVAL_S": "0.05", "HEARTBEAT_SEC": "0.5", "DATA_DIR": str(tmp_path / "data")})
    log = (tmp_path / "ingester.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "workers", "ingester"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


@pytest.mark.slow
async def test_ingester_process_killed_and_restarted(simulator_factory: Callable[..., SimHandle], settings: Settings,
                                                     tmp_path: Path) -> None:
    # Arrange: the real CLI as a subprocess
    sim = simulator_factory(accounts=2, history_days=0, bot_rate=5)
    dests = sim_destinations(sim)
    dsn = settings.primary_dsn or ""
    first = _ingester_process(tmp_path, settings, sim)
    try:
        await asyncio.sleep(4)
        # Act: kill -9 mid-run (whatever was fetched but not committed is lost), trade on, restart
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        await asyncio.sleep(2)
        second = _ingester_process(tmp_path, settings, sim)
        try:
            await asyncio.sleep(3)
            await asyncio.to_thread(sim.admin, "/bot", {"rate": 0})
            diffs = await wait_converged(dsn, sim, dests, 40)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0
    finally:
        if first.poll() is None:
            first.kill()
    # Assert
    assert diffs == {}, (tmp_path / "ingester.log").read_text()[-3000:]
    conn = await asyncpg.connect(dsn)
    states = {r["destination"]: r["state"] for r in await conn.fetch(f"SELECT destination, state FROM {SCHEMA}.heartbeats")}
    await conn.close()
    assert states == {d.slug: "stopped" for d in dests}


@pytest.mark.slow
async def test_rejected_credentials_isolated_to_one_destination(simulator_factory: Callable[..., SimHandle],
                                                                settings: Settings,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    # Arrange: the second destination has a wrong secret
    caplog.set_level(logging.DEBUG)
    sim = simulator_factory(accounts=2, history_days=0, bot_rate=4)
    dests = sim_destinations(sim, bad_secret={1})
    await asyncio.to_thread(migrate_db, settings, dests)
    dsn = settings.primary_dsn or ""
    seen: dict[str, Any] = {}

    async def body() -> None:
        await asyncio.sleep(3)
        await asyncio.to_thread(sim.admin, "/bot", {"rate": 0})
        seen["diffs"] = await wait_converged(dsn, sim, dests[:1], 30)
        conn = await asyncpg.connect(dsn)
        seen["hb"] = await conn.fetchrow(f"SELECT state, errors, last_error FROM {SCHEMA}.heartbeats WHERE destination=$1",
                                         dests[1].slug)
        seen["bad_rows"] = await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.activities WHERE destination=$1", dests[1].slug)
        await conn.close()

    # Act
    await run_for(settings, dests, datetime.now(UTC) - timedelta(days=5), body)

    # Assert: the good one is complete, the bad one reports auth_error, no secret anywhere in logs
    assert seen["diffs"] == {}
    assert seen["hb"]["state"] == "auth_error"
    assert seen["hb"]["errors"] > 0
    assert "credentials rejected" in seen["hb"]["last_error"] or "authentication" in seen["hb"]["last_error"]
    assert seen["bad_rows"] == 0
    text = "\n".join(r.getMessage() for r in caplog.records)
    for d in dests:
        assert d.secret_key not in text
        assert d.key_id not in text


@pytest.mark.slow
async def test_backfill_command_rereads_a_range_idempotently(simulator_factory: Callable[..., SimHandle],
                                                             settings: Settings,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # Arrange: history only, no ingester running
    sim = simulator_factory(accounts=1, history_days=2)
    dests = sim_destinations(sim)
    await asyncio.to_thread(migrate_db, settings, dests)
    dsn = settings.primary_dsn or ""

    async def activity_version() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT activity_version FROM public.ch_versions WHERE slug = $1",
                                           dests[0].slug) or 0)
        finally:
            await conn.close()

    # Act: the same range twice
    first = await run_backfill(settings, dests[0], since=since_for(sim, 2), progress=True)
    version = await activity_version()
    second = await run_backfill(settings, dests[0], since=since_for(sim, 2), progress=False)

    # Assert: everything once; the second pass read the same and changed nothing; a progress bar was drawn
    assert await wait_converged(dsn, sim, dests, 0) == {}
    assert first == second
    assert first > 0
    assert version > 0
    assert await activity_version() == version
    assert "100.0%" in capsys.readouterr().err


@pytest.mark.slow
async def test_order_changed_while_down_is_refreshed(simulator_factory: Callable[..., SimHandle],
                                                     settings: Settings) -> None:
    # Arrange: a resting limit order stored as open; the REST re-read window is tiny
    sim = simulator_factory(accounts=1)
    dests = sim_destinations(sim)
    await asyncio.to_thread(migrate_db, settings, dests)
    dsn = settings.primary_dsn or ""
    client = sim.trading_client(0)
    options = dataclasses.replace(FAST, overlap_s=0.2)
    order = await asyncio.to_thread(client.submit_order, LimitOrderRequest(
        symbol="SPY", qty=1, side=OrderSide.BUY, limit_price=1, time_in_force=TimeInForce.GTC))
    await asyncio.sleep(0.5)  # a newer order moves the orders checkpoint past the resting one
    await asyncio.to_thread(client.submit_order, MarketOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY,
                                                                    time_in_force=TimeInForce.DAY))

    async def until_stored() -> None:
        assert await wait_converged(dsn, sim, dests, 15) == {}

    await run_for(settings, dests, since_for(sim, 0), until_stored, options)

    # Act: the order is cancelled while no ingester runs, long after it was created
    await asyncio.sleep(1.0)
    await asyncio.to_thread(client.cancel_order_by_id, order.id)  # type: ignore[union-attr]

    async def converge() -> None:
        assert await wait_converged(dsn, sim, dests, 15) == {}

    await run_for(settings, dests, since_for(sim, 0), converge, options)

    # Assert
    conn = await asyncpg.connect(dsn)
    status = await conn.fetchval(f"SELECT status FROM {SCHEMA}.orders WHERE order_id = $1", order.id)  # type: ignore[union-attr]
    await conn.close()
    assert status == "canceled"


@pytest.mark.slow
async def test_one_replica_owns_a_destination_and_a_standby_takes_over(
        simulator_factory: Callable[..., SimHandle], settings: Settings) -> None:
    # Arrange: two ingester replicas on the same destinations (another connection each for the locks)
    sim = simulator_factory(accounts=2, bot_rate=4, extra_args=["--stream-conflict", "allow"])
    dests = sim_destinations(sim)
    await asyncio.to_thread(migrate_db, settings, dests)
    dsn = settings.primary_dsn or ""
    since = since_for(sim, 0)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    replica_a = asyncio.create_task(run_ingester(settings, dests, stop_event=stop_a, options=FAST, since=since))
    await asyncio.sleep(1.0)
    replica_b = asyncio.create_task(run_ingester(settings, dests, stop_event=stop_b, options=FAST, since=since))
    try:
        await asyncio.sleep(2.0)
        # Assert (ownership): one websocket per account although both replicas run
        state = await asyncio.to_thread(sim.admin, "/state")
        assert state["stream_connections"] == {d.name: 1 for d in dests}

        # Act: the owner stops; the standby must take over and keep the store complete
        stop_a.set()
        await asyncio.wait_for(replica_a, 30)
        await asyncio.sleep(3.0)
        await asyncio.to_thread(sim.admin, "/bot", {"rate": 0})
        assert await wait_converged(dsn, sim, dests, 30) == {}
        state = await asyncio.to_thread(sim.admin, "/state")
        assert state["stream_connections"] == {d.name: 1 for d in dests}
    finally:
        stop_a.set()
        stop_b.set()
        await asyncio.wait_for(asyncio.gather(replica_a, replica_b), 30)
