"""Rows resting on stream-only fills are marked provisional until REST confirms them (docs/freshness.md,
"Provisional rows"): the manager against a real database, the ingester's own store writing the raw rows."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal

import asyncpg

from core.destinations import closed_channel, pos_channel
from core.records import ActivityRecord
from core.settings import Settings
from tests.workers.test_manager import Running, start_manager
from tests.workers.test_manager_support import (
    T0,
    Listener,
    Publisher,
    ScriptedBroker,
    cash,
    destination,
    eventually,
    fill,
    insert_activities,
    migrate_db,
)
from workers.ingester.provisional import PROVISIONAL_PREFIX, ProvisionalFill
from workers.ingester.rules import Batch
from workers.ingester.store import RawStore

SCHEMA = "account_activities"
OpenRows = dict[str, tuple[Decimal, int]]
ClosedRows = dict[str, tuple[str, Decimal, int]]


def order_of(n: int) -> uuid.UUID:
    return uuid.UUID(int=50_000 + n)


def stream_fill(n: int, symbol: str, side: str, qty: str, price: str) -> ProvisionalFill:
    """The provisional fill a trade update of order ``n`` (filled at once) becomes."""
    execution = str(uuid.UUID(int=90_000 + n))
    return ProvisionalFill(activity_id=f"{PROVISIONAL_PREFIX}{execution}", ts=T0 + timedelta(minutes=n),
                           order_id=order_of(n), execution_id=execution, fill_type="fill", symbol=symbol, side=side,
                           qty=Decimal(qty), price=Decimal(price), cum_qty=Decimal(qty), raw={})


def rest_twin(p: ProvisionalFill) -> ActivityRecord:
    """Its REST FILL activity (an id that does not carry the execution id: matched by cumulative quantity)."""
    return ActivityRecord(activity_id=f"20260105160000000::{uuid.uuid5(uuid.NAMESPACE_OID, p.activity_id)}", ts=p.ts,
                          activity_type="FILL", fill_type="fill", symbol=p.symbol, side=p.side, qty=p.qty,
                          price=p.price, order_id=str(p.order_id), cum_qty=p.cum_qty, raw={})


async def ingest(conn: asyncpg.Connection, slug: str, *, stream: Sequence[ProvisionalFill] = (),
                 rest: Sequence[ActivityRecord] = ()) -> None:
    """What the ingester commits (the same statement, links and NOTIFY)."""
    batch = Batch()
    for p in stream:
        batch.add_provisional(p)
    for a in rest:
        batch.add_activity(a)
    await RawStore(SCHEMA).write_batch(conn, slug, batch)


async def open_rows(conn: asyncpg.Connection, slug: str) -> OpenRows:
    rows = await conn.fetch(f"SELECT symbol, qty, provisional_fills FROM open_trades_{slug}")
    return {r["symbol"]: (r["qty"], r["provisional_fills"]) for r in rows}


async def closed_rows(conn: asyncpg.Connection, slug: str) -> ClosedRows:
    rows = await conn.fetch(f"SELECT trade_id, symbol, net_pl, provisional_fills FROM closed_trades_{slug}")
    return {r["trade_id"]: (r["symbol"], r["net_pl"], r["provisional_fills"]) for r in rows}


def by_symbol(closed: ClosedRows) -> dict[str, int]:
    return {symbol: n for symbol, _, n in closed.values()}


async def stop(running: Running) -> None:
    running.stop.set()
    await asyncio.wait_for(running.task, 15)
    await running.conn.close()


async def test_stream_only_fills_mark_rows_until_rest_confirms_them_and_a_rebuild_marks_the_same(
        settings: Settings, db_dsn: str) -> None:
    # Arrange: REST history (an AAPL position, a closed MSFT trip), a manager, and stream-only fills:
    # a partial close of AAPL, a TSLA round trip and an NVDA position
    dest = destination("Alpha")
    slug = dest.slug
    migrate_db(settings, [dest])
    conn = await asyncpg.connect(db_dsn)
    pub = Publisher()
    broker = ScriptedBroker(positions={"AAPL": (Decimal(6), None, None), "NVDA": (Decimal(3), None, None)})
    await insert_activities(conn, slug, [cash(0, "CSD", "10000"), fill(1, "AAPL", "buy", "10", "100"),
                                         fill(2, "MSFT", "buy", "5", "200"), fill(3, "MSFT", "sell", "5", "210")],
                            notify=False)
    aapl_sell, tsla_buy, tsla_sell, nvda_buy = (stream_fill(10, "AAPL", "sell", "4", "110"),
                                                stream_fill(11, "TSLA", "buy", "2", "50"),
                                                stream_fill(12, "TSLA", "sell", "2", "55"),
                                                stream_fill(13, "NVDA", "buy", "3", "20"))
    listener = await Listener().start(db_dsn, pos_channel(slug), closed_channel(slug))
    running = await start_manager(settings, db_dsn, broker, dest, pub)
    try:
        async def history_shown() -> bool:
            return (await open_rows(conn, slug)).get("AAPL") == (Decimal(10), 0) and bool(await closed_rows(conn, slug))

        await eventually(history_shown, what="the REST history booked")

        # Act 1: the stream fills arrive (no REST activity for them yet)
        await ingest(conn, slug, stream=[aapl_sell, tsla_buy, tsla_sell, nvda_buy])
        want_open = {"AAPL": (Decimal(6), 1), "NVDA": (Decimal(3), 1)}

        async def stream_shown() -> bool:
            return await open_rows(conn, slug) == want_open and by_symbol(await closed_rows(conn, slug)) == {
                "MSFT": 0, "TSLA": 2}

        # Assert 1: each row counts the stream-only fills it rests on (a partial close included)
        await eventually(stream_shown, what="the stream-only fills marked")
        stream_closed = await closed_rows(conn, slug)

        # Act 2: a rebuild from raw data (no checkpoint, derived tables emptied)
        await stop(running)
        await conn.execute("DELETE FROM ch_fifo_state")
        await conn.execute(f"TRUNCATE open_trades_{slug}, closed_trades_{slug}")
        running = await start_manager(settings, db_dsn, broker, dest, pub)

        async def rebuilt() -> bool:
            return await open_rows(conn, slug) == want_open and await closed_rows(conn, slug) == stream_closed

        # Assert 2: the same rows with the same marks
        await eventually(rebuilt, what="the rebuild from raw marking the same rows")

        # Act 3: REST confirms the AAPL sell and the TSLA buy
        await eventually(lambda: _has_runner(running), what="the destination owned")
        (runner,) = running.manager.runners.values()
        for channel in listener.received.values():
            channel.clear()
        # stream fills ingested long ago: the manager's reads no longer bring them again, it must ask
        await conn.execute(f"UPDATE {SCHEMA}.provisional_fills SET ingested_at = now() - interval '1 hour'")
        await ingest(conn, slug, rest=[rest_twin(aapl_sell), rest_twin(tsla_buy)])
        tsla_id = next(tid for tid, (symbol, _, _) in stream_closed.items() if symbol == "TSLA")

        async def confirmed() -> bool:
            return (await open_rows(conn, slug) == {"AAPL": (Decimal(6), 0), "NVDA": (Decimal(3), 1)}
                    and by_symbol(await closed_rows(conn, slug)) == {"MSFT": 0, "TSLA": 1})

        async def announced() -> bool:
            pos_ids = {i for p in listener.received[pos_channel(slug)] for i in p["ids"]}
            closed_ids = {i for p in listener.received[closed_channel(slug)] for i in p["ids"]}
            return "AAPL" in pos_ids and tsla_id in closed_ids

        # Assert 3: the marks of the confirmed fills clear, the rest stay; both changes are NOTIFYd
        await eventually(confirmed, what="the confirmed fills unmarked")
        await eventually(announced, what="NOTIFYs of the changed rows")
        assert runner.unconfirmed.confirmed == 2
        assert set(runner.unconfirmed.ids) == {tsla_sell.activity_id, nvda_buy.activity_id}

        # Act 4: the manager stops; REST confirms the rest while nobody owns the destination; it starts
        # again from its checkpoint
        await stop(running)
        await ingest(conn, slug, rest=[rest_twin(tsla_sell), rest_twin(nvda_buy)])
        running = await start_manager(settings, db_dsn, broker, dest, pub)

        async def all_confirmed() -> bool:
            return (await open_rows(conn, slug) == {"AAPL": (Decimal(6), 0), "NVDA": (Decimal(3), 0)}
                    and by_symbol(await closed_rows(conn, slug)) == {"MSFT": 0, "TSLA": 0})

        # Assert 4: nothing is marked any more, the positions and trips unchanged, nothing booked twice
        await eventually(all_confirmed, what="every mark cleared after the restart")
        final = await closed_rows(conn, slug)
        assert {tid: (s, pl) for tid, (s, pl, _) in final.items()} == {
            tid: (s, pl) for tid, (s, pl, _) in stream_closed.items()}
        assert final[tsla_id][1] == Decimal(10)
    finally:
        await stop(running)
        await listener.close()
        await conn.close()
        pub.close()


async def _has_runner(running: Running) -> bool:
    return bool(running.manager.runners)


async def test_a_replaced_stream_fill_is_rebuilt_away_and_its_rows_unmarked(settings: Settings, db_dsn: str) -> None:
    # Arrange: a stream-only NVDA buy and a stream-only AMD buy, booked and marked
    dest = destination("Alpha")
    slug = dest.slug
    migrate_db(settings, [dest])
    conn = await asyncpg.connect(db_dsn)
    pub = Publisher()
    broker = ScriptedBroker(positions={"NVDA": (Decimal(3), None, None), "AMD": (Decimal(1), None, None)})
    await insert_activities(conn, slug, [cash(0, "CSD", "10000")], notify=False)
    nvda, amd = stream_fill(20, "NVDA", "buy", "3", "20"), stream_fill(21, "AMD", "buy", "1", "90")
    running = await start_manager(settings, db_dsn, broker, dest, pub)
    try:
        await eventually(lambda: _has_runner(running), what="the destination owned")
        (runner,) = running.manager.runners.values()
        await ingest(conn, slug, stream=[nvda, amd])

        async def marked() -> bool:
            return await open_rows(conn, slug) == {"NVDA": (Decimal(3), 1), "AMD": (Decimal(1), 1)}

        await eventually(marked, what="the stream fills marked")
        rereads = runner.stats.rereads

        # Act: REST has the NVDA fill at another price (it replaces the provisional one: a rebuild)
        await ingest(conn, slug, rest=[dataclasses.replace(rest_twin(nvda), price=Decimal("21"))])

        async def replaced() -> bool:
            rows = await conn.fetch(f"SELECT symbol, avg_entry_price, provisional_fills FROM open_trades_{slug}")
            return {r["symbol"]: (r["avg_entry_price"], r["provisional_fills"]) for r in rows} == {
                "NVDA": (Decimal(21), 0), "AMD": (Decimal(90), 1)}

        # Assert: the rebuilt book holds the REST fill (not marked); AMD, still stream-only, stays marked
        await eventually(replaced, what="the book rebuilt with the REST fill")
        assert runner.stats.rereads > rereads
        assert set(runner.unconfirmed.ids) == {amd.activity_id}
    finally:
        await stop(running)
        await conn.close()
        pub.close()
