"""The simulator process: Alpaca REST + trade_updates websocket (aiohttp), ZMQ price feed, tick loop,
live bot, fault injection and the admin API, all on one asyncio loop."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import os
import random
import re
import string
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from simulator.bot import STYLES, Bot, generate_history
from simulator.engine import (
    NON_TRADE_TYPES,
    NY,
    ZERO,
    Account,
    Engine,
    OrderError,
    Snapshot,
    dec,
    fmt,
    parse_time,
    rfc3339,
)
from simulator.faults import Faults
from simulator.feed import Publisher, Tick
from simulator.market import DEFAULT_UNIVERSE, Market, SessionCalendar, asset_id

log = logging.getLogger("simulator")

DEFAULT_DEPOSIT = Decimal(100_000)
MAX_SNAPSHOTS = 200_000


@dataclass(slots=True)
class AccountSpec:
    name: str
    key_id: str = field(repr=False)
    secret_key: str = field(repr=False)
    deposit: Decimal = DEFAULT_DEPOSIT


@dataclass(slots=True)
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 0
    accounts: list[AccountSpec] = field(default_factory=list)
    seed: int = 0
    speed: float = 1.0
    history_days: int = 0
    bot_rate: float = 0.0
    zmq_url: str | None = None
    symbols: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_UNIVERSE))
    always_open: bool = True
    fees: bool = False
    tick_s: float = 0.1
    liquidity_notional: Decimal = Decimal(25_000)
    snapshot_every_s: float = 60.0
    daily_vol: float = 0.016
    admin: bool = True
    faults: Faults = field(default_factory=Faults)


def generated_accounts(n: int, seed: int) -> list[AccountSpec]:
    """``sim-1`` … ``sim-N`` with key pairs derived from the seed (stable across restarts)."""
    rng = random.Random(f"keys:{seed}")
    upper = string.ascii_uppercase + string.digits
    both = string.ascii_letters + string.digits
    return [
        AccountSpec(
            f"sim-{i + 1}",
            "PK" + "".join(rng.choice(upper) for _ in range(18)),
            "".join(rng.choice(both) for _ in range(40)),
        )
        for i in range(n)
    ]


def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status, headers=headers)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, separators=(",", ":")), status=status, content_type="application/json")


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


class Simulator:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.faults = cfg.faults
        self.fault_rng = random.Random(f"faults:{cfg.seed}")
        self.market = Market(cfg.symbols, seed=cfg.seed, daily_vol=cfg.daily_vol)
        today = datetime.now(UTC).date()
        span = max(30, int(cfg.history_days * 1.6) + 15)
        self.calendar = SessionCalendar(today - timedelta(days=span), today + timedelta(days=60))
        self._wall0 = time.time()
        self._mono0 = time.monotonic()
        self.engine = Engine(
            self.market,
            self.calendar,
            now=self.sim_now,
            always_open=cfg.always_open,
            fees=cfg.fees,
            liquidity_notional=cfg.liquidity_notional,
        )
        self.engine.on_event = self._on_event
        self.engine.emit_pending_new = self.faults.emit_pending_new
        # Live positions are held some simulated seconds at least (longer for swing trades).
        self.bot = Bot(self.engine, cfg.seed + 1, min_hold_s={"day_trader": 10.0, "swing": 30.0, "bracket": 10.0, "mixed": 10.0})
        self.bot_rate = cfg.bot_rate
        self._bot_budget = 0.0
        self._bot_rng = random.Random(f"live-bot:{cfg.seed}")
        self.paused = False
        self.streams: dict[str, list[StreamConn]] = {}
        self.stream_sent = 0
        self.ticks_published = 0
        self.publisher: Publisher | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port = cfg.port
        for i, spec in enumerate(cfg.accounts):
            created = self.sim_now() - timedelta(days=max(cfg.history_days * 1.5, 1) + 5)
            acct = Account(
                name=spec.name,
                key_id=spec.key_id,
                secret_key=spec.secret_key,
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"coldharbour-sim:{spec.key_id}")),
                account_number=f"PA{abs(hash((spec.key_id, cfg.seed))) % 10**10:010d}",
                created_at=created,
                style=STYLES[i % len(STYLES)],
            )
            self.engine.add_account(acct)
        self._deposits = {s.name: s.deposit for s in cfg.accounts}

    # ------------------------------------------------------------------ clock
    def sim_now(self) -> datetime:
        """Wall clock at start, then running ``speed`` times faster."""
        elapsed = (time.monotonic() - self._mono0) * self.cfg.speed
        return datetime.fromtimestamp(self._wall0 + elapsed, UTC)

    # ------------------------------------------------------------------ lifecycle
    def prepare(self) -> float:
        """Back-fill history (or just the initial deposits); returns the seconds it took."""
        t0 = time.perf_counter()
        accts = list(self.engine.accounts.values())
        if self.cfg.history_days > 0:
            generate_history(
                self.engine, accts, days=self.cfg.history_days, end=self.sim_now(), seed=self.cfg.seed, deposits=self._deposits
            )
        else:
            for acct in accts:
                self.engine.cash_activity(acct, "CSD", self._deposits[acct.name], "initial deposit")
                self.engine.snapshot(acct)
        if self.cfg.history_days > 0:
            self.market.gap()
        if not self.engine.last_close:
            self.engine.last_close = {s: self.market.price(s) for s in self.market.symbols}
        return time.perf_counter() - t0

    async def start(self) -> None:
        if self.cfg.zmq_url:
            self.publisher = Publisher(self.cfg.zmq_url)
        app = self.build_app()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.host, self.cfg.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        self._tasks.append(asyncio.create_task(self._tick_loop()))
        self._tasks.append(asyncio.create_task(self._drop_loop()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for conns in list(self.streams.values()):
            for conn in list(conns):
                conn.task.cancel()
                with contextlib.suppress(Exception):
                    await conn.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.publisher is not None:
            self.publisher.close()

    def state(self) -> dict[str, Any]:
        host = self.cfg.host
        return {
            "rest_url": f"http://{host}:{self.port}",
            "stream_url": f"ws://{host}:{self.port}/stream",
            "zmq_url": self.publisher.url if self.publisher is not None else None,
            "admin_url": f"http://{host}:{self.port}/admin",
            "pid": os.getpid(),
            "accounts": [
                {"name": a.name, "key_id": a.key_id, "secret_key": a.secret_key} for a in self.engine.accounts.values()
            ],
        }

    # ------------------------------------------------------------------ background loops
    async def _tick_loop(self) -> None:
        tick_s = self.cfg.tick_s
        was_open = self.engine.market_open()
        last_snap = self.sim_now()
        next_t = time.monotonic()
        while True:
            next_t += tick_s
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))
            if time.monotonic() - next_t > 1.0:
                next_t = time.monotonic()  # fell far behind (suspended?): do not burst
            try:
                now = self.sim_now()
                is_open = self.engine.market_open(now)
                if was_open and not is_open:
                    self._session_closed(now)
                elif is_open and not was_open:
                    self.market.gap()
                    self.engine.activate_accepted(now)
                was_open = is_open
                if is_open:
                    if not self.paused:
                        quotes = self.market.step(tick_s * self.cfg.speed)
                        if self.publisher is not None:
                            ts_ns = int(now.timestamp() * 1e9)
                            for q in quotes:
                                self.publisher.publish(Tick(q.symbol, float(q.price), float(q.bid), float(q.ask), q.size, ts_ns))
                            self.ticks_published += len(quotes)
                    self.engine.match()
                    self._run_bot(tick_s)
                if (now - last_snap).total_seconds() >= self.cfg.snapshot_every_s:
                    last_snap = now
                    for acct in self.engine.accounts.values():
                        if len(acct.snapshots) < MAX_SNAPSHOTS:
                            self.engine.snapshot(acct, now)
            except Exception:
                log.exception("tick failed")

    def _session_closed(self, now: datetime) -> None:
        self.engine.expire_day_orders(now)
        self.engine.last_close = {s: self.market.price(s) for s in self.market.symbols}
        for acct in self.engine.accounts.values():
            self.engine.snapshot(acct, now)
            acct.last_equity = self.engine.equity(acct)

    def _run_bot(self, dt_s: float) -> None:
        if self.bot_rate <= 0 or not self.engine.accounts:
            self._bot_budget = 0.0
            return
        self._bot_budget = min(self._bot_budget + self.bot_rate * dt_s, 1000.0)
        accts = list(self.engine.accounts.values())
        while self._bot_budget >= 1.0:
            self._bot_budget -= 1.0
            self.bot.act(self._bot_rng.choice(accts))

    async def _drop_loop(self) -> None:
        while True:
            every = self.faults.ws_drop_every_s
            if every <= 0:
                await asyncio.sleep(0.2)
                continue
            await asyncio.sleep(every)
            if self.faults.ws_drop_every_s > 0:
                await self.drop_streams()

    async def drop_streams(self, *, abort: bool = False) -> int:
        """Close every trade_updates connection: a close frame, or (``abort``) a bare TCP reset."""
        dropped = 0
        for conns in list(self.streams.values()):
            for conn in list(conns):
                dropped += 1
                transport = conn.request.transport
                if abort and transport is not None:
                    transport.abort()
                else:
                    await conn.ws.close(code=1011, message=b"simulated drop")
        return dropped

    # ------------------------------------------------------------------ events
    def _on_event(self, acct: Account, data: dict[str, Any]) -> None:
        conns = self.streams.get(acct.name)
        if not conns:
            return
        text = json.dumps({"stream": "trade_updates", "data": data}, separators=(",", ":"))
        for conn in conns:
            if conn.listening:
                conn.queue.put_nowait(text)

    # ------------------------------------------------------------------ app
    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._fault_mw, self._auth_mw])
        r = app.router
        r.add_get("/healthz", self.h_health)
        r.add_get("/stream", self.h_stream)
        r.add_get("/v2/account", self.h_account)
        r.add_get("/v2/account/configurations", self.h_account_config)
        r.add_get("/v2/account/portfolio/history", self.h_portfolio_history)
        r.add_get("/v2/account/activities", self.h_activities)
        r.add_get("/v2/account/activities/{type}", self.h_activities)
        r.add_get("/v2/clock", self.h_clock)
        r.add_get("/v2/assets", self.h_assets)
        r.add_get("/v2/assets/{symbol}", self.h_asset)
        r.add_get("/v2/positions", self.h_positions)
        r.add_delete("/v2/positions", self.h_close_all)
        r.add_get("/v2/positions/{symbol}", self.h_position)
        r.add_delete("/v2/positions/{symbol}", self.h_close_position)
        r.add_get("/v2/orders", self.h_orders)
        r.add_post("/v2/orders", self.h_submit)
        r.add_delete("/v2/orders", self.h_cancel_all)
        r.add_get("/v2/orders:by_client_order_id", self.h_order_by_client_id)
        r.add_get("/v2/orders/{id}", self.h_order)
        r.add_delete("/v2/orders/{id}", self.h_cancel)
        r.add_patch("/v2/orders/{id}", self.h_replace)
        if not self.cfg.admin:
            return app
        r.add_get("/admin/state", self.a_state)
        r.add_get("/admin/faults", self.a_faults)
        r.add_post("/admin/faults", self.a_faults)
        r.add_post("/admin/drop-streams", self.a_drop)
        r.add_get("/admin/ground-truth", self.a_truth)
        r.add_post("/admin/bot", self.a_bot)
        r.add_post("/admin/fill", self.a_fill)
        r.add_post("/admin/price", self.a_price)
        r.add_post("/admin/pause", self.a_pause)
        r.add_post("/admin/activity", self.a_activity)
        r.add_post("/admin/session-close", self.a_session_close)
        return app

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

    @web.middleware
    async def _fault_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/v2/"):
            f = self.faults
            if f.rest_hang_s > 0 and self.fault_rng.random() < f.rest_hang_rate:
                await asyncio.sleep(f.rest_hang_s)
            if f.rest_error_rate > 0 and self.fault_rng.random() < f.rest_error_rate:
                code = self.fault_rng.choice(f.rest_error_codes)
                if code == 429:
                    return _error(429, 42910000, "rate limit exceeded", {"Retry-After": str(f.retry_after_s)})
                return _error(code, code * 100000, "simulated server error")
        return await handler(request)

    @web.middleware
    async def _auth_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/v2/"):
            key = request.headers.get("APCA-API-KEY-ID")
            secret = request.headers.get("APCA-API-SECRET-KEY")
            if not key or not secret:
                return _error(401, 40110000, "request is not authorized")
            acct = self.engine.by_key.get(key)
            if acct is None:
                return _error(401, 40110000, "request is not authorized")
            if secret != acct.secret_key:
                return _error(403, 40310000, "forbidden: invalid secret key")
            request["account"] = acct
        try:
            return await handler(request)
        except OrderError as exc:
            return _error(exc.status, exc.code, exc.message)

    # ------------------------------------------------------------------ REST handlers
    async def h_health(self, request: web.Request) -> web.Response:
        return _json({"ok": True})

    async def h_account(self, request: web.Request) -> web.Response:
        return _json(self.engine.account_json(request["account"]))

    async def h_account_config(self, request: web.Request) -> web.Response:
        return _json(
            {
                "dtbp_check": "entry",
                "fractional_trading": True,
                "max_margin_multiplier": "2",
                "no_shorting": False,
                "pdt_check": "entry",
                "suspend_trade": False,
                "trade_confirm_email": "none",
                "ptp_no_exception_entry": False,
            }
        )

    async def h_clock(self, request: web.Request) -> web.Response:
        now = self.sim_now()
        is_open = self.engine.market_open(now)
        return _json(
            {
                "timestamp": rfc3339(now),
                "is_open": is_open,
                "next_open": rfc3339(self.calendar.next_open(now)),
                "next_close": rfc3339(self.calendar.next_close(now)),
            }
        )

    def _asset(self, symbol: str) -> dict[str, Any]:
        return {
            "id": asset_id(symbol),
            "class": "us_equity",
            "exchange": "NASDAQ",
            "symbol": symbol,
            "name": symbol,
            "status": "active",
            "tradable": True,
            "marginable": True,
            "shortable": True,
            "easy_to_borrow": True,
            "fractionable": True,
        }

    async def h_assets(self, request: web.Request) -> web.Response:
        return _json([self._asset(s) for s in self.market.symbols])

    async def h_asset(self, request: web.Request) -> web.Response:
        symbol = self._symbol(request.match_info["symbol"])
        if symbol is None:
            return _error(404, 40410000, "asset not found")
        return _json(self._asset(symbol))

    def _symbol(self, symbol_or_id: str) -> str | None:
        s = symbol_or_id.upper()
        if s in self.market.quotes:
            return s
        for sym in self.market.symbols:
            if asset_id(sym) == symbol_or_id.lower():
                return sym
        return None

    async def h_positions(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        return _json([self.engine.position_json(acct, p) for _, p in sorted(acct.positions.items())])

    async def h_position(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        symbol = self._symbol(request.match_info["symbol"])
        if symbol is None or symbol not in acct.positions:
            return _error(404, 40410000, "position does not exist")
        return _json(self.engine.position_json(acct, acct.positions[symbol]))

    def _close_order(self, acct: Account, symbol: str, qty: str | None, percentage: str | None) -> dict[str, Any]:
        pos = acct.positions[symbol]
        amount = abs(pos.qty)
        if qty:
            amount = dec(qty, "qty")
            if amount <= 0 or amount > abs(pos.qty):
                raise OrderError(403, 40310000, f"insufficient qty available for order (requested: {qty}, available: {fmt(abs(pos.qty))})")
        elif percentage:
            pct = dec(percentage, "percentage")
            if not 0 < pct <= 100:
                raise OrderError(422, 40010001, "percentage must be in (0, 100]")
            amount = (abs(pos.qty) * pct / 100).quantize(Decimal("0.000000001"))
        side = "sell" if pos.qty > 0 else "buy"
        order = self.engine.submit(
            acct, {"symbol": symbol, "qty": fmt(amount), "side": side, "type": "market", "time_in_force": "day"}
        )
        return self.engine.order_json(acct, order)

    async def h_close_position(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        symbol = self._symbol(request.match_info["symbol"])
        if symbol is None or symbol not in acct.positions:
            return _error(404, 40410000, "position does not exist")
        q = request.query
        return _json(self._close_order(acct, symbol, q.get("qty"), q.get("percentage")))

    async def h_close_all(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        if request.query.get("cancel_orders", "").lower() in ("true", "1"):
            for oid in list(acct.open_ids):
                o = acct.orders[oid]
                if o.is_open and o.parent_id is None:
                    self.engine.cancel(acct, o)
        out = []
        for symbol in sorted(acct.positions):
            try:
                body = self._close_order(acct, symbol, None, None)
                out.append({"symbol": symbol, "status": 200, "order_id": body["id"], "body": body})
            except OrderError as exc:
                out.append({"symbol": symbol, "status": exc.status, "body": {"code": exc.code, "message": exc.message}})
        return _json(out, status=207)

    async def h_orders(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        q = request.query
        status = q.get("status", "open")
        if status not in ("open", "closed", "all"):
            raise OrderError(422, 40010001, "status must be open, closed or all")
        limit = int(q.get("limit", "50"))
        if not 0 < limit <= 500:
            raise OrderError(422, 40010001, "limit must be between 1 and 500")
        direction = q.get("direction", "desc")
        nested = q.get("nested", "false").lower() in ("true", "1")
        after = parse_time(q.get("after"))
        until = parse_time(q.get("until"))
        side = q.get("side")
        symbols = {s.strip().upper() for s in q.get("symbols", "").split(",") if s.strip()}
        orders = []
        for o in acct.orders.values():
            if nested and o.parent_id is not None:
                continue
            # Nested, a parent stays "open" while any of its legs is (as a bracket does on Alpaca).
            is_open = o.is_open or (nested and any(acct.orders[i].is_open for i in o.leg_ids))
            if status == "open" and not is_open or status == "closed" and is_open:
                continue
            if after and o.created_at <= after or until and o.created_at >= until:
                continue
            if side and o.side != side or symbols and o.symbol not in symbols:
                continue
            orders.append(o)
        orders.sort(key=lambda o: o.created_at, reverse=direction != "asc")
        return _json([self.engine.order_json(acct, o, nested=nested) for o in orders[:limit]])

    def _find_order(self, acct: Account, order_id: str) -> Any:
        order = acct.orders.get(order_id)
        if order is None:
            raise OrderError(404, 40410000, "order not found")
        return order

    async def h_order(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        order = self._find_order(acct, request.match_info["id"])
        nested = request.query.get("nested", "false").lower() in ("true", "1")
        return _json(self.engine.order_json(acct, order, nested=nested))

    async def h_order_by_client_id(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        oid = acct.by_client_id.get(request.query.get("client_order_id", ""))
        if oid is None:
            raise OrderError(404, 40410000, "order not found")
        return _json(self.engine.order_json(acct, acct.orders[oid]))

    async def h_submit(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        try:
            body = await request.json()
        except ValueError:
            raise OrderError(400, 40010000, "request body format is invalid") from None
        if not isinstance(body, dict):
            raise OrderError(400, 40010000, "request body format is invalid")
        order = self.engine.submit(acct, body)
        return _json(self.engine.order_json(acct, order))

    async def h_cancel(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        order = self._find_order(acct, request.match_info["id"])
        self.engine.cancel(acct, order)
        return web.Response(status=204)

    async def h_replace(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        order = self._find_order(acct, request.match_info["id"])
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            raise OrderError(400, 40010000, "request body format is invalid") from None
        if not isinstance(body, dict):
            raise OrderError(400, 40010000, "request body format is invalid")
        new = self.engine.replace(acct, order, body)
        return _json(self.engine.order_json(acct, new))

    async def h_cancel_all(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        out = []
        for oid in list(acct.open_ids):
            o = acct.orders.get(oid)
            if o is None or not o.is_open or o.parent_id is not None:
                continue
            self.engine.cancel(acct, o)
            out.append({"id": o.id, "status": 200, "body": self.engine.order_json(acct, o)})
        return _json(out, status=207)

    async def h_activities(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        q = request.query
        types: set[str] = set()
        if "type" in request.match_info:
            types.add(request.match_info["type"].upper())
        for part in (q.get("activity_types") or q.get("activity_type") or "").split(","):
            if part.strip():
                types.add(part.strip().upper())
        direction = q.get("direction", "desc")
        if direction not in ("asc", "desc"):
            raise OrderError(422, 40010001, "direction must be asc or desc")
        try:
            page_size = int(q.get("page_size", "100"))
        except ValueError:
            raise OrderError(422, 40010001, "page_size must be an integer") from None
        if not 1 <= page_size <= 100:
            raise OrderError(422, 40010001, "page_size must be between 1 and 100")
        day: date | None = None
        if q.get("date"):
            try:
                day = date.fromisoformat(q["date"][:10])
            except ValueError:
                raise OrderError(422, 40010001, "invalid date") from None
        after = parse_time(q.get("after"))
        until = parse_time(q.get("until"))
        token = q.get("page_token") or None
        acts = acct.activities  # sorted by id (ids strictly increase per account)
        if direction == "asc":
            start = bisect.bisect_right(acts, token, key=lambda a: a.id) if token else 0
            indices: Iterable[int] = range(start, len(acts))
        else:
            stop = bisect.bisect_left(acts, token, key=lambda a: a.id) if token else len(acts)
            indices = range(stop - 1, -1, -1)
        out = []
        for i in indices:
            a = acts[i]
            if types and a.type not in types:
                continue
            if after and a.ts <= after or until and a.ts >= until:
                continue
            if day and a.ts.astimezone(NY).date() != day:
                continue
            out.append(a.data)
            if len(out) >= page_size:
                break
        return _json(out)

    async def h_portfolio_history(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        q = request.query
        now = self.sim_now()
        timeframe = q.get("timeframe") or ("1D" if q.get("period", "1M") not in ("1D",) else "5Min")
        tf_s = {"1Min": 60, "5Min": 300, "15Min": 900, "1H": 3600, "1D": 86400}.get(timeframe)
        if tf_s is None:
            raise OrderError(422, 40010001, "timeframe must be one of 1Min, 5Min, 15Min, 1H, 1D")
        end = parse_time(q.get("end")) or (parse_time(q.get("date_end"), end_of_day=True) if q.get("date_end") else None) or now
        start = parse_time(q.get("start"))
        if start is None:
            period = q.get("period", "1M")
            m = re.fullmatch(r"(\d+)([DWMA])", period)
            if period == "all" or (not m and period.lower() == "all"):
                start = acct.created_at
            elif not m:
                raise OrderError(422, 40010001, "invalid period")
            else:
                days = int(m.group(1)) * {"D": 1, "W": 7, "M": 30, "A": 365}[m.group(2)]
                start = end - timedelta(days=days)
        snaps = [s for s in acct.snapshots if start <= s.ts <= end]
        if end >= now:
            snaps.append(Snapshot(now, self.engine.equity(acct), acct.cashflow))
        before = [s for s in acct.snapshots if s.ts < start]
        base = before[-1] if before else (snaps[0] if snaps else None)
        buckets: dict[Any, Any] = {}
        for s in snaps:
            key = s.ts.astimezone(NY).date() if tf_s == 86400 else int(s.ts.timestamp()) // tf_s
            buckets[key] = s  # last snapshot in each bucket wins
        points = list(buckets.values())
        base_value = float(base.equity) if base else 0.0
        base_flow = base.cashflow if base else ZERO
        pl = [float(p.equity - (base.equity if base else ZERO) - (p.cashflow - base_flow)) for p in points]
        return _json(
            {
                "timestamp": [int(p.ts.timestamp()) for p in points],
                "equity": [float(p.equity) for p in points],
                "profit_loss": pl,
                "profit_loss_pct": [(x / base_value) if base_value else 0.0 for x in pl],
                "base_value": base_value,
                "timeframe": timeframe,
                "cashflow": {},
            }
        )

    # ------------------------------------------------------------------ websocket
    async def h_stream(self, request: web.Request) -> web.WebSocketResponse:
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
                action = payload.get("action")
                data = payload.get("data") or {}
                if action in ("authenticate", "auth"):
                    key = data.get("key_id") or payload.get("key")
                    secret = data.get("secret_key") or payload.get("secret")
                    acct = self.engine.by_key.get(key or "")
                    if acct is None or secret != acct.secret_key:
                        await ws.send_str(self._auth_reply("unauthorized", "access key verification failed"))
                        await ws.close()
                        break
                    existing = self.streams.get(acct.name, [])
                    if existing and self.faults.stream_conflict == "reject":
                        await ws.send_str(self._auth_reply("unauthorized", "connection limit exceeded"))
                        await ws.close()
                        break
                    if existing and self.faults.stream_conflict == "replace":
                        for old in list(existing):
                            await old.ws.close(code=1008, message=b"replaced by a newer connection")
                    conn = StreamConn(self, request, ws, acct)
                    self.streams.setdefault(acct.name, []).append(conn)
                    await ws.send_str(self._auth_reply("authorized"))
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
                conns = self.streams.get(conn.acct.name, [])
                if conn in conns:
                    conns.remove(conn)
                if not conns:
                    self.streams.pop(conn.acct.name, None)
        return ws

    @staticmethod
    def _auth_reply(status: str, message: str | None = None) -> str:
        data: dict[str, Any] = {"action": "authenticate", "status": status}
        if message:
            data["message"] = message
        return json.dumps({"stream": "authorization", "data": data})

    # ------------------------------------------------------------------ admin
    def _admin_account(self, ref: Any) -> Account:
        acct = self.engine.accounts.get(str(ref)) or self.engine.by_key.get(str(ref))
        if acct is None:
            raise OrderError(404, 40410000, f"unknown account {ref!r}")
        return acct

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            body = await request.json()
        except ValueError:
            raise OrderError(400, 40010000, "body must be JSON") from None
        if not isinstance(body, dict):
            raise OrderError(400, 40010000, "body must be a JSON object")
        return body

    async def a_state(self, request: web.Request) -> web.Response:
        state = self.state()
        state.update(
            sim_time=rfc3339(self.sim_now()),
            market_open=self.engine.market_open(),
            faults=self.faults.as_dict(),
            bot_rate=self.bot_rate,
            paused=self.paused,
            ticks_published=self.ticks_published,
            stream_messages_sent=self.stream_sent,
            stream_connections={k: len(v) for k, v in self.streams.items()},
            stream_listening={k: sum(c.listening for c in v) for k, v in self.streams.items()},
            prices={s: fmt(q.price) for s, q in self.market.quotes.items()},
        )
        return _json(state)

    async def a_faults(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                self.faults.update(await self._body(request))
            except ValueError as exc:
                raise OrderError(422, 42200000, str(exc)) from None
            self.engine.emit_pending_new = self.faults.emit_pending_new
        return _json(self.faults.as_dict())

    async def a_drop(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        return _json({"dropped": await self.drop_streams(abort=bool(body.get("abort", False)))})

    async def a_session_close(self, request: web.Request) -> web.Response:
        """Act as if the session just closed: day orders expire, last closes and last_equity roll."""
        self._session_closed(self.sim_now())
        return _json({"ok": True})

    async def a_truth(self, request: web.Request) -> web.Response:
        names = [request.query["account"]] if "account" in request.query else list(self.engine.accounts)
        out: dict[str, Any] = {}
        for name in names:
            acct = self._admin_account(name)
            out[acct.name] = {
                "account_id": acct.id,
                "cash": fmt(acct.cash),
                "equity": fmt(self.engine.equity(acct)),
                "positions": {
                    s: {"qty": fmt(p.qty), "avg_entry_price": fmt(p.avg_entry_price)} for s, p in sorted(acct.positions.items())
                },
                "orders": [self.engine.order_json(acct, o, nested=False) for o in acct.orders.values()],
                "activities": [a.data for a in acct.activities],
            }
        return _json({"as_of": rfc3339(self.sim_now()), "prices": {s: fmt(q.price) for s, q in self.market.quotes.items()}, "accounts": out})

    async def a_bot(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        rate = body.get("rate")
        if isinstance(rate, bool) or not isinstance(rate, int | float) or rate < 0:
            raise OrderError(422, 42200000, "rate must be a number >= 0")
        self.bot_rate = float(rate)
        return _json({"rate": self.bot_rate})

    async def a_fill(self, request: web.Request) -> web.Response:
        """Submit a market order for an account and fill it completely right now."""
        body = await self._body(request)
        acct = self._admin_account(body.pop("account", None))
        body.setdefault("type", "market")
        body.setdefault("time_in_force", "day")
        order = self.engine.submit(acct, body)
        order.force_fill = True
        if order.status == "accepted":
            order.status = "new"
        self.engine.match_order(acct, order)
        return _json(self.engine.order_json(acct, order))

    async def a_price(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        symbol = str(body.get("symbol", "")).upper()
        if symbol not in self.market.quotes:
            raise OrderError(404, 40410000, f"unknown symbol {symbol!r}")
        price = body.get("price")
        self.market.set_price(symbol, None if price is None else dec(price, "price"))
        return _json({"symbol": symbol, "price": fmt(self.market.price(symbol)), "pinned": symbol in self.market.overrides})

    async def a_pause(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        self.paused = bool(body.get("paused", True))
        return _json({"paused": self.paused})

    async def a_activity(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        acct = self._admin_account(body.get("account"))
        kind = str(body.get("type", "")).upper()
        if kind not in NON_TRADE_TYPES:
            raise OrderError(422, 42200000, f"type must be one of {sorted(NON_TRADE_TYPES)}")
        act = self.engine.cash_activity(
            acct,
            kind,
            dec(body.get("amount"), "amount"),
            str(body.get("description", "")),
            symbol=body.get("symbol"),
            qty=dec(body["qty"], "qty") if body.get("qty") is not None else None,
            per_share=dec(body["per_share_amount"], "per_share_amount") if body.get("per_share_amount") is not None else None,
        )
        return _json(act.data)


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Atomically write the state file (mode 0600: it holds secrets)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh, indent=2)
    os.replace(tmp, path)


def host_port_matches(url: str, host: str, port: int) -> bool:
    parts = urlsplit(url)
    wanted = {host, "localhost", "127.0.0.1"} if host in ("127.0.0.1", "localhost", "0.0.0.0") else {host}
    return parts.hostname in wanted and parts.port == port
