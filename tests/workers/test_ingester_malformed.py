"""Malformed broker payloads end to end: a tiny HTTP + websocket broker that speaks Alpaca's protocol
but sends garbage (the simulator only sends well-formed data). Everything is stored raw with
``parse_error``, counted in the heartbeat, and the good rows around it are not held back."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from core.destinations import Destination
from core.settings import Settings
from tests.workers.test_ingester_sim import FAST, SCHEMA
from tests.workers.test_ingester_store import fill_json, migrate_db, order_json
from workers.ingester import run_ingester

GOOD_FILL = fill_json(1)
BAD_ACTIVITIES = [
    {**fill_json(2), "qty": "twelve"},
    {**fill_json(3), "activity_type": "BRANDNEW"},
    {"activity_type": "DIV", "net_amount": "1.0"},  # no id, no date
    ["not", "an", "object"],
]
GOOD_ORDER_ID = str(uuid.uuid4())
STREAM_FRAMES: list[Any] = [
    "this is not json",
    {"stream": "trade_updates", "data": {"event": "fill", "timestamp": "yesterday", "order": "nope"}},
    {"stream": "trade_updates", "data": {"event": "new", "timestamp": "2026-03-02T15:00:01Z",
                                         "order": order_json(GOOD_ORDER_ID, "new", datetime(2026, 3, 2, 15, 0, 1, tzinfo=UTC))}},
    {"stream": "trade_updates", "data": {"event": "fill", "timestamp": "2026-03-02T15:00:02Z", "qty": [1],
                                         "execution_id": "e-1", "order": {"id": "not-a-uuid"}}},
    {"stream": "mystery", "data": {}},
]


@pytest.fixture
async def garbage_broker() -> AsyncIterator[str]:
    async def activities(request: web.Request) -> web.Response:
        if request.query.get("page_token"):
            return web.json_response([])
        return web.json_response([GOOD_FILL, *BAD_ACTIVITIES])

    async def orders(request: web.Request) -> web.Response:
        return web.json_response([])

    async def stream(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            action = json.loads(msg.data).get("action")
            if action == "authenticate":
                await ws.send_str(json.dumps({"stream": "authorization", "data": {"status": "authorized"}}))
            elif action == "listen":
                await ws.send_str(json.dumps({"stream": "listening", "data": {"streams": ["trade_updates"]}}))
                for frame in STREAM_FRAMES:
                    await ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))
        return ws

    app = web.Application()
    app.router.add_get("/v2/account/activities", activities)
    app.router.add_get("/v2/orders", orders)
    app.router.add_get("/stream", stream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.mark.slow
async def test_malformed_payloads_stored_raw_flagged_and_counted(garbage_broker: str, settings: Settings) -> None:
    # Arrange
    dest = Destination(name="garbage", slug="garbage", key_id="PKTEST", secret_key="s3cret",
                       base_url=garbage_broker, stream_url=garbage_broker.replace("http", "ws") + "/stream")
    await asyncio.to_thread(migrate_db, settings, [dest])
    stop = asyncio.Event()
    dsn = settings.primary_dsn or ""

    async def stored() -> tuple[int, int, int]:
        conn = await asyncpg.connect(dsn)
        try:
            details = await conn.fetchval(f"SELECT details FROM {SCHEMA}.heartbeats WHERE destination = 'garbage'")
            return (await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.activities"),
                    await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.order_events"),
                    json.loads(details)["parse_errors"] if details else 0)
        finally:
            await conn.close()

    # Act
    task = asyncio.create_task(run_ingester(settings, [dest], stop_event=stop, options=FAST,
                                            since=datetime(2026, 1, 1, tzinfo=UTC)))
    for _ in range(400):  # bounded wait: rows stored and a heartbeat carrying the counters
        if await stored() == (5, 4, 8):
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 20)

    # Assert: every payload is there, the bad ones flagged with their raw JSON, the good ones clean
    conn = await asyncpg.connect(dsn)
    acts = {r["activity_id"]: r for r in await conn.fetch(f"SELECT activity_id, parse_error, raw FROM {SCHEMA}.activities")}
    events = await conn.fetch(f"SELECT event, parse_error, raw FROM {SCHEMA}.order_events ORDER BY event_key")
    order = await conn.fetchrow(f"SELECT status, parse_error FROM {SCHEMA}.orders WHERE order_id = $1", uuid.UUID(GOOD_ORDER_ID))
    hb = await conn.fetchrow(f"SELECT state, errors, details FROM {SCHEMA}.heartbeats WHERE destination = 'garbage'")
    await conn.close()
    assert len(acts) == 5
    assert acts[GOOD_FILL["id"]]["parse_error"] is None
    assert sum(1 for r in acts.values() if r["parse_error"]) == 4
    assert json.loads(acts[BAD_ACTIVITIES[0]["id"]]["raw"])["qty"] == "twelve"
    assert len(events) == 4  # the non-JSON frame, two broken updates, one good one; the unknown stream is ignored
    assert sum(1 for e in events if e["parse_error"]) == 3
    assert order["status"] == "new"
    assert order["parse_error"] is None
    details = json.loads(hb["details"])
    # 4 activities + 3 trade updates + the order without a usable id; once each, though re-read every second
    assert details["parse_errors"] == 8
    assert details["handler_errors"] == 0
    # malformed payloads are data, not failures: every supervised loop is healthy
    assert sorted(details["loops"]) == ["backfill", "database write", "trade_updates stream"]
    assert details["loops"]["backfill"]["failures"] == 0
    assert details["loops"]["database write"]["failures"] == 0
    assert hb["errors"] >= 7
