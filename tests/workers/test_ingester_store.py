"""The ingester's database side against a real PostgreSQL: idempotent batches, latest order state,
checkpoints in the same transaction, version bump + NOTIFY, malformed rows, a database restart."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import given
from hypothesis import settings as settings_
from hypothesis import strategies as st

from core.db import connect, migrate
from core.destinations import Destination
from core.embedded_pg import EmbeddedPostgres
from core.settings import Settings
from workers.alpaca.parse import parse_activity, parse_order, parse_trade_update
from workers.backoff import BackoffPolicy
from workers.db import create_pool
from workers.ingester import Batch, BatchWriter, Checkpoint, RawStore
from workers.notify import NEW_FILLS_CHANNEL

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
SLUG = "alpha"


def migrate_db(settings: Settings, destinations: list[Destination] | None = None) -> None:
    """Apply the schema (helper shared by the ingester tests)."""
    conn = connect(settings.primary_dsn or "")
    try:
        migrate(conn, settings, destinations or [])
    finally:
        conn.close()


def fill_json(n: int, *, order_id: str | None = None, ts: datetime | None = None) -> dict[str, Any]:
    at = ts or T0 + timedelta(milliseconds=n)
    return {
        "id": f"{at:%Y%m%d%H%M%S}{at.microsecond // 1000:03d}::{uuid.UUID(int=n)}",
        "activity_type": "FILL",
        "transaction_time": at.isoformat().replace("+00:00", "Z"),
        "type": "fill",
        "price": "100.25",
        "qty": "2",
        "side": "buy",
        "symbol": "AAPL",
        "leaves_qty": "0",
        "cum_qty": "2",
        "order_id": order_id or str(uuid.UUID(int=10_000 + n)),
        "order_status": "filled",
    }


def order_json(order_id: str, status: str, updated_at: datetime, filled_qty: str = "0") -> dict[str, Any]:
    stamp = updated_at.isoformat().replace("+00:00", "Z")
    return {"id": order_id, "client_order_id": "c1", "created_at": T0.isoformat(), "updated_at": stamp,
            "submitted_at": T0.isoformat(), "symbol": "AAPL", "side": "buy", "order_type": "market",
            "order_class": "simple", "time_in_force": "day", "qty": "2", "filled_qty": filled_qty,
            "status": status, "legs": None}


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    await asyncio.to_thread(migrate_db, settings)
    p = await create_pool(settings, min_size=1, max_size=4)
    yield p
    await asyncio.wait_for(p.close(), 10)


async def commit(pool: asyncpg.Pool, batch: Batch, schema: str = "account_activities") -> Any:
    async with pool.acquire() as conn, conn.transaction():
        return await RawStore(schema).write_batch(conn, SLUG, batch)


@pytest.mark.parametrize("n_rows", [50, 1500], ids=["unnest", "copy"])
async def test_activities_idempotent_with_checkpoint_version_and_notify(pool: asyncpg.Pool, settings: Settings,
                                                                        n_rows: int) -> None:
    # Arrange
    received: list[str] = []
    listener = await asyncpg.connect(settings.primary_dsn)
    await listener.add_listener(NEW_FILLS_CHANNEL, lambda *args: received.append(args[3]))
    rows = [parse_activity(fill_json(i)) for i in range(n_rows)]
    batch = Batch()
    for row in rows + rows[:10]:  # duplicates inside the batch too
        batch.add_activity(row)
    batch.add_checkpoint(Checkpoint("activities", rows[-1].activity_id, rows[-1].ts))

    # Act: the same rows twice (a re-read backfill)
    first = await commit(pool, batch)
    second = await commit(pool, batch)
    for _ in range(50):
        if received:
            break
        await asyncio.sleep(0.02)

    # Assert
    assert (first.new_activities, first.new_fills) == (n_rows, n_rows)
    assert (second.new_activities, second.new_fills) == (0, 0)
    assert await pool.fetchval("SELECT count(*) FROM account_activities.activities") == n_rows
    total = await pool.fetchval("SELECT sum(qty * price) FROM account_activities.activities WHERE destination=$1", SLUG)
    assert total == Decimal("100.25") * 2 * n_rows
    cp = await pool.fetchrow("SELECT last_id, last_ts FROM account_activities.checkpoints WHERE destination=$1", SLUG)
    assert cp["last_id"] == rows[-1].activity_id
    assert cp["last_ts"] == rows[-1].ts
    assert await pool.fetchval("SELECT activity_version FROM public.ch_versions WHERE slug=$1", SLUG) == 1
    assert len(received) == 1
    payload = json.loads(received[0])
    assert payload["d"] == SLUG
    assert payload["n"] == n_rows
    assert payload["max_seq"] == first.max_fill_seq
    await listener.close()


async def test_checkpoint_never_moves_backwards(pool: asyncpg.Pool) -> None:
    late, early = parse_activity(fill_json(5)), parse_activity(fill_json(1))
    await commit(pool, Batch(checkpoints={"activities": Checkpoint("activities", late.activity_id, late.ts)}))
    await commit(pool, Batch(checkpoints={"activities": Checkpoint("activities", early.activity_id, early.ts)}))
    cp = await pool.fetchrow("SELECT last_id, last_ts FROM account_activities.checkpoints WHERE destination=$1", SLUG)
    assert (cp["last_id"], cp["last_ts"]) == (late.activity_id, late.ts)


async def test_orders_keep_latest_state_whatever_the_delivery_order(pool: asyncpg.Pool) -> None:
    oid = str(uuid.uuid4())
    states = [
        order_json(oid, "new", T0),
        order_json(oid, "partially_filled", T0 + timedelta(seconds=1), "1"),
        order_json(oid, "filled", T0 + timedelta(seconds=2), "2"),
    ]
    # Act: newest first, then the stale ones one batch at a time (reordered / delayed deliveries)
    for state in reversed(states):
        batch = Batch()
        for row in parse_order(state):
            batch.add_order(row)
        await commit(pool, batch)
    row = await pool.fetchrow("SELECT status, filled_qty, updated_at FROM account_activities.orders")
    assert (row["status"], row["filled_qty"]) == ("filled", Decimal("2"))
    # Same updated_at: progress wins, regress is ignored
    same = T0 + timedelta(seconds=5)
    for status, filled in (("canceled", "2"), ("new", "0")):
        batch = Batch()
        batch.add_order(parse_order(order_json(oid, status, same, filled))[0])
        await commit(pool, batch)
    assert await pool.fetchval("SELECT status FROM account_activities.orders") == "canceled"


async def test_trade_updates_deduplicated_and_orders_upserted(pool: asyncpg.Pool) -> None:
    oid = str(uuid.uuid4())
    fill = {"event": "fill", "execution_id": str(uuid.uuid4()), "timestamp": (T0 + timedelta(seconds=1)).isoformat(),
            "price": "100", "qty": "2", "position_qty": "2", "order": order_json(oid, "filled", T0 + timedelta(seconds=1), "2")}
    new = {"event": "new", "timestamp": T0.isoformat(), "order": order_json(oid, "new", T0)}
    batch = Batch()
    for payload in (new, fill, fill, new):
        batch.add_event(parse_trade_update(payload))
    result = await commit(pool, batch)
    again = Batch()
    again.add_event(parse_trade_update(fill))
    result2 = await commit(pool, again)
    assert (result.new_events, result.new_fill_events, result2.new_events) == (2, 1, 0)
    assert await pool.fetchval("SELECT count(*) FROM account_activities.order_events") == 2
    assert await pool.fetchval("SELECT status FROM account_activities.orders WHERE order_id=$1", uuid.UUID(oid)) == "filled"


async def test_malformed_payloads_stored_raw_without_blocking_the_batch(pool: asyncpg.Pool) -> None:
    good = [parse_activity(fill_json(i)) for i in range(3)]
    bad = [
        parse_activity({**fill_json(10), "qty": "lots"}),
        parse_activity({"activity_type": "FILL", "weird": "no id\x00 here"}),
        parse_activity({**fill_json(11), "activity_type": "NEWTHING"}),
        parse_activity("not even an object"),
    ]
    batch = Batch()
    for row in good + bad:
        batch.add_activity(row)
    batch.add_event(parse_trade_update({"event": "fill", "price": "x"}))
    batch.add_order(parse_order({"id": "nope", "qty": [1]})[0])
    result = await commit(pool, batch)
    assert result.new_activities == 7
    flagged = await pool.fetchval("SELECT count(*) FROM account_activities.activities WHERE parse_error IS NOT NULL")
    assert flagged == 4
    raw = await pool.fetchval("SELECT raw->>'qty' FROM account_activities.activities WHERE parse_error LIKE 'qty:%'")
    assert raw == "lots"
    assert await pool.fetchval("SELECT count(*) FROM account_activities.order_events WHERE parse_error IS NOT NULL") == 1
    assert await pool.fetchval("SELECT count(*) FROM account_activities.orders WHERE parse_error IS NOT NULL") == 1


async def test_writer_flushes_on_interval_and_reports_latency(pool: asyncpg.Pool) -> None:
    committed: list[float] = []
    writer = BatchWriter(pool, RawStore("account_activities"), SLUG, flush_interval_s=0.05,
                         on_commit=lambda result, received: committed.extend(received))
    task = asyncio.create_task(writer.run())
    try:
        for i in range(20):
            writer.add_event(parse_trade_update({"event": "new", "timestamp": (T0 + timedelta(seconds=i)).isoformat(),
                                                 "order": order_json(str(uuid.UUID(int=i + 1)), "new", T0)}), float(i))
        for _ in range(200):
            if len(committed) == 20:
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
    assert sorted(committed) == [float(i) for i in range(20)]
    assert await pool.fetchval("SELECT count(*) FROM account_activities.order_events") == 20
    assert writer.pending_rows == 0


@pytest.mark.slow
async def test_writer_survives_database_restart_and_bounds_its_buffer(pg_data_dir: Path) -> None:
    # Arrange: a dedicated server we can stop and start
    server = EmbeddedPostgres(pg_data_dir / "pg")
    dsn = await asyncio.to_thread(server.start)
    try:
        settings = Settings(postgresql_live_conn_string=dsn, flush_interval_s=0.05, db_connect_timeout_s=2)
        await asyncio.to_thread(migrate_db, settings)
        pool = await create_pool(settings, min_size=1, max_size=2)
        resyncs: list[int] = []
        writer = BatchWriter(pool, RawStore("account_activities"), SLUG, flush_interval_s=0.05, max_buffer_rows=30,
                             db_retry=BackoffPolicy(base_s=0.05, cap_s=0.3, max_attempts=None),
                             on_resync_needed=lambda: resyncs.append(1))
        task = asyncio.create_task(writer.run())
        writer.add_activities([parse_activity(fill_json(i)) for i in range(10)])
        await asyncio.wait_for(_until(lambda: writer.stats.rows_committed == 10), 10)

        # Act: database down while rows keep arriving, more than the buffer holds
        await asyncio.to_thread(server.stop)
        writer.add_activities([parse_activity(fill_json(i)) for i in range(10, 30)])
        await asyncio.wait_for(_until(lambda: not writer.db_ok), 10)
        writer.add_activities([parse_activity(fill_json(i)) for i in range(30, 50)])  # past the bound: dropped
        assert writer.stats.dropped_rows == 20
        assert writer.pending_rows == 20
        await asyncio.to_thread(server.start)
        await asyncio.wait_for(_until(lambda: writer.stats.rows_committed == 30), 30)
        task.cancel()

        # Assert: everything buffered landed exactly once; the dropped rows asked for a backfill
        assert await pool.fetchval("SELECT count(*) FROM account_activities.activities") == 30
        assert resyncs == [1]
        await pool.close()
    finally:
        await asyncio.to_thread(server.stop)


async def _until(predicate: Any) -> None:
    """Poll until ``predicate()`` holds (callers bound it with ``asyncio.wait_for``)."""
    while True:
        if predicate():
            return
        await asyncio.sleep(0.02)


async def test_a_row_the_database_refuses_does_not_block_the_batch(pool: asyncpg.Pool) -> None:
    # Arrange: a row built past the parser (which strips NUL) that PostgreSQL refuses as text
    good = [parse_activity(fill_json(i)) for i in range(3)]
    poisoned = dataclasses.replace(parse_activity(fill_json(99)), symbol="AA\x00PL")
    writer = BatchWriter(pool, RawStore("account_activities"), SLUG, flush_interval_s=0.05)
    writer.add_activities([*good, poisoned], Checkpoint("activities", good[-1].activity_id, good[-1].ts))

    # Act
    result = await writer.flush()

    # Assert: the others and the checkpoint are committed, the refused row counted
    assert result is not None
    assert result.new_activities == 3
    assert writer.stats.unstorable_rows == 1
    assert writer.pending_rows == 0
    assert await pool.fetchval("SELECT count(*) FROM account_activities.activities") == 3
    assert await pool.fetchval("SELECT last_id FROM account_activities.checkpoints") == good[-1].activity_id


async def test_rereading_an_unchanged_order_changes_nothing_and_parent_links_stick(pool: asyncpg.Pool) -> None:
    # Arrange: a bracket parent with one leg, first seen flat (leg without its parent link)
    parent, leg = str(uuid.uuid4()), str(uuid.uuid4())
    leg_json = order_json(leg, "held", T0)
    nested = order_json(parent, "filled", T0, "2") | {"legs": [leg_json]}
    flat = order_json(parent, "filled", T0, "2")

    async def write(*payloads: dict[str, Any]) -> Any:
        batch = Batch()
        for payload in payloads:
            for row in parse_order(payload):
                batch.add_order(row)
        return await commit(pool, batch)

    # Act
    first = await write(flat, leg_json)
    linked = await write(nested)
    again_nested, again_flat = await write(nested), await write(flat, leg_json)

    # Assert
    assert first.orders_changed == 2
    assert linked.orders_changed == 1  # only the leg: it learned its parent
    assert (again_nested.orders_changed, again_flat.orders_changed) == (0, 0)
    assert again_flat.activity_version is None  # nothing changed: no version bump
    got = await pool.fetchval("SELECT parent_order_id FROM account_activities.orders WHERE order_id = $1", uuid.UUID(leg))
    assert got == uuid.UUID(parent)


@pytest.mark.parametrize("fill_first", [True, False])
async def test_progress_beats_a_non_monotonic_updated_at(pool: asyncpg.Pool, fill_first: bool) -> None:
    # Arrange: seen on the simulator: the fill is stamped to the millisecond, before the order's
    # microsecond creation time, so updated_at goes backwards
    oid = str(uuid.uuid4())
    created = T0 + timedelta(microseconds=362_397)
    new = order_json(oid, "new", created)
    filled = order_json(oid, "filled", T0 + timedelta(microseconds=362_000), "2")
    # Act
    for state in ([filled, new] if fill_first else [new, filled]):
        batch = Batch()
        batch.add_order(parse_order(state)[0])
        await commit(pool, batch)
    # Assert
    row = await pool.fetchrow("SELECT status, filled_qty FROM account_activities.orders")
    assert (row["status"], row["filled_qty"]) == ("filled", Decimal("2"))


@settings_(max_examples=60, deadline=None)
@given(st.permutations(range(6)), st.lists(st.integers(0, 5), min_size=0, max_size=4))
def test_batch_keeps_the_most_advanced_order_state_whatever_the_order(perm: list[int], dupes: list[int]) -> None:
    # Arrange: a lifecycle new -> accepted -> partially_filled x2 -> filled -> (late duplicate deliveries)
    oid = str(uuid.uuid4())
    lifecycle = [
        order_json(oid, "pending_new", T0),
        order_json(oid, "new", T0 + timedelta(milliseconds=1)),
        order_json(oid, "accepted", T0 + timedelta(milliseconds=2)),
        order_json(oid, "partially_filled", T0 + timedelta(milliseconds=3), "1"),
        order_json(oid, "partially_filled", T0 + timedelta(milliseconds=4), "1.5"),
        order_json(oid, "filled", T0 + timedelta(milliseconds=4), "2"),
    ]
    batch = Batch()
    # Act
    for i in [*perm, *dupes]:
        batch.add_order(parse_order(lifecycle[i])[0])
    # Assert
    (final,) = batch.orders.values()
    assert (final.status, final.filled_qty) == ("filled", Decimal("2"))
