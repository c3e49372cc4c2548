"""The ``trade_updates`` websocket (``/stream``): authentication, listening, and one sender task per
connection that applies the delivery faults (delay, duplicate, reorder)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from simulator.models import Account

if TYPE_CHECKING:
    from simulator.server import Simulator


class StreamConn:
    """One trade_updates websocket: a queue and a sender task that applies the delivery faults."""

    def __init__(self, sim: Simulator, request: web.Request, ws: web.WebSocketResponse, acct: Account) -> None:
        self.sim = sim
        self.request = request
        self.ws = ws
        self.acct = acct
        self.listening = False
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.task = asyncio.create_task(self._sender())

    async def _sender(self) -> None:
        faults, rng = self.sim.faults, self.sim.fault_rng
        try:
            while True:
                msg = await self.queue.get()
                if faults.ws_delay_ms > 0:
                    await asyncio.sleep(faults.ws_delay_ms / 1000)
                batch = [msg]
                if faults.ws_reorder_rate > 0 and rng.random() < faults.ws_reorder_rate:
                    if self.queue.empty():
                        # Hold this one briefly so the next update can overtake it.
                        with contextlib.suppress(TimeoutError):
                            nxt = await asyncio.wait_for(self.queue.get(), timeout=0.5)
                            batch = [nxt, msg]
                    else:
                        batch = [self.queue.get_nowait(), msg]
                for m in batch:
                    await self.ws.send_str(m)
                    if faults.ws_duplicate_rate > 0 and rng.random() < faults.ws_duplicate_rate:
                        await self.ws.send_str(m)
                    self.sim.stream_sent += 1
        except (ConnectionResetError, RuntimeError, asyncio.CancelledError):
            return


def auth_reply(status: str, message: str | None = None) -> str:
    data: dict[str, Any] = {"action": "authenticate", "status": status}
    if message:
        data["message"] = message
    return json.dumps({"stream": "authorization", "data": data})


async def _authenticate(sim: Simulator, request: web.Request, ws: web.WebSocketResponse,
                        payload: dict[str, Any], data: dict[str, Any]) -> StreamConn | None:
    key = data.get("key_id") or payload.get("key")
    secret = data.get("secret_key") or payload.get("secret")
    acct = sim.engine.by_key.get(key or "")
    if acct is None or secret != acct.secret_key:
        await ws.send_str(auth_reply("unauthorized", "access key verification failed"))
        await ws.close()
        return None
    existing = sim.streams.get(acct.name, [])
    if existing and sim.faults.stream_conflict == "reject":
        await ws.send_str(auth_reply("unauthorized", "connection limit exceeded"))
        await ws.close()
        return None
    if existing and sim.faults.stream_conflict == "replace":
        for old in list(existing):
            await old.ws.close(code=1008, message=b"replaced by a newer connection")
    conn = StreamConn(sim, request, ws, acct)
    sim.streams.setdefault(acct.name, []).append(conn)
    await ws.send_str(auth_reply("authorized"))
    return conn


async def handle_stream(sim: Simulator, request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(autoping=True)
    await ws.prepare(request)
    conn: StreamConn | None = None
    try:
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            try:
                payload = json.loads(msg.data)
            except ValueError:
                await ws.send_str(json.dumps({"stream": "error", "data": {"error_message": "invalid syntax"}}))
                continue
            if not isinstance(payload, dict):
                continue
            action = payload.get("action")
            data = payload.get("data") or {}
            if action in ("authenticate", "auth"):
                conn = await _authenticate(sim, request, ws, payload, data)
                if conn is None:
                    break
            elif action == "listen":
                if conn is None:
                    await ws.send_str(json.dumps({"stream": "listening", "data": {"error": "not authenticated"}}))
                    continue
                streams = [s for s in data.get("streams", []) if s == "trade_updates"]
                conn.listening = bool(streams)
                await ws.send_str(json.dumps({"stream": "listening", "data": {"streams": streams}}))
    finally:
        if conn is not None:
            conn.task.cancel()
            conns = sim.streams.get(conn.acct.name, [])
            if conn in conns:
                conns.remove(conn)
            if not conns:
                sim.streams.pop(conn.acct.name, None)
    return ws
