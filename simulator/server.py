"""The simulator process: Alpaca REST + trade_updates websocket (aiohttp), ZMQ price feed, tick loop,
live bot, scheduled events, fault injection and the admin API, all on one asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import string
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from core.destinations import mask_secret
from simulator import events
from simulator.admin import AdminApi
from simulator.bars import BarsApi
from simulator.bot import STYLES, Bot, style_for
from simulator.engine import Engine
from simulator.faults import Faults
from simulator.feed import Publisher, Tick
from simulator.history import generate_history
from simulator.market import CRYPTO_UNIVERSE, DEFAULT_UNIVERSE, Market, SessionCalendar
from simulator.models import Account, Activity
from simulator.ratelimit import RateLimitWindows
from simulator.reports import ReportsApi
from simulator.rest import TradingApi, as_json, error
from simulator.stream import StreamConn, handle_stream
from simulator.wire import NY, OrderError

log = logging.getLogger("simulator")

DEFAULT_DEPOSIT = Decimal(100_000)
MAX_SNAPSHOTS = 200_000


@dataclass(slots=True)
class AccountSpec:
    name: str
    key_id: str = field(repr=False)
    secret_key: str = field(repr=False)
    deposit: Decimal = DEFAULT_DEPOSIT
    style: str | None = None  # None: from the name (crypto / options) or the equity styles in turn


@dataclass(slots=True)
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 0
    accounts: list[AccountSpec] = field(default_factory=list)
    seed: int = 0
    speed: float = 1.0
    clock_offset_s: float = 0.0  # the simulated clock starts this far from the wall clock (negative: the past)
    history_days: int = 0
    bot_rate: float = 0.0
    zmq_url: str | None = None
    symbols: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_UNIVERSE))
    always_open: bool = False
    fees: bool = True
    tick_s: float = 0.1
    liquidity_notional: Decimal = Decimal(25_000)
    snapshot_every_s: float = 60.0
    daily_vol: float = 0.016
    admin: bool = True
    admin_token: str | None = field(default=None, repr=False)
    history_events: bool | None = None  # None: on when the history is long enough to show them
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


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Simulator:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.faults = cfg.faults
        self.fault_rng = random.Random(f"faults:{cfg.seed}")
        self.admin_token = cfg.admin_token or secrets.token_urlsafe(24)
        self._wall0 = time.time() + cfg.clock_offset_s
        self._mono0 = time.monotonic()
        styles = [spec.style or style_for(spec.name, i) for i, spec in enumerate(cfg.accounts)]
        universe = dict(cfg.symbols)
        if "crypto" in styles:
            universe.update({s: p for s, p in CRYPTO_UNIVERSE.items() if s not in universe})
        self.market = Market(universe, seed=cfg.seed, daily_vol=cfg.daily_vol, now=self.sim_now)
        today = datetime.now(UTC).date()
        span = max(30, int(cfg.history_days * 1.6) + 15)
        self.calendar = SessionCalendar(today - timedelta(days=span), today + timedelta(days=60))
        self.engine = Engine(self.market, self.calendar, now=self.sim_now, always_open=cfg.always_open, fees=cfg.fees,
                             liquidity_notional=cfg.liquidity_notional)
        self.engine.on_event = self._on_event
        self.engine.wants_events = lambda acct: bool(self.streams.get(acct.name))
        self.engine.emit_pending_new = self.faults.emit_pending_new
        self.scheduler = events.Scheduler(self.engine)
        # Live positions are held some simulated seconds at least (longer for swing trades).
        self.bot = Bot(self.engine, cfg.seed + 1, min_hold_s={s: (30.0 if s == "swing" else 10.0) for s in (*STYLES, "mixed")})
        self.bot_rate = cfg.bot_rate
        self.rate_limits = RateLimitWindows()
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
        for spec, style in zip(cfg.accounts, styles, strict=True):
            created = self.sim_now() - timedelta(days=max(cfg.history_days * 1.5, 1) + 5)
            self.engine.add_account(Account(
                name=spec.name, key_id=spec.key_id, secret_key=spec.secret_key,
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"coldharbour-sim:{spec.key_id}")),
                account_number=f"PA{abs(hash((spec.key_id, cfg.seed))) % 10**10:010d}", created_at=created, style=style,
            ))
        self._deposits = {s.name: s.deposit for s in cfg.accounts}

    # ------------------------------------------------------------------ clock and views
    def sim_now(self) -> datetime:
        """Wall clock (plus ``clock_offset_s``) at start, then running ``speed`` times faster."""
        elapsed = (time.monotonic() - self._mono0) * self.cfg.speed
        return datetime.fromtimestamp(self._wall0 + elapsed, UTC)

    def jump_clock(self, to: datetime) -> datetime:
        """Move the simulated clock forward to ``to`` (a test that opens positions "yesterday" and lets
        the corporate actions of "today" meet them). The tick loop then sees the midnights it crossed:
        the day's fees are posted as at midnight. Never backwards: ids and activities stay in time order."""
        now = self.sim_now()
        if to < now:
            raise OrderError(422, 42200000, f"the clock only moves forward (now {now.isoformat()})")
        self._wall0 += (to - now).total_seconds()
        return self.sim_now()

    def trades_crypto(self, acct: Account) -> bool:
        return acct.style == "crypto" or any("/" in s for s in acct.positions)

    def visible_activities(self, acct: Account) -> list[Activity]:
        """What ``/v2/account/activities`` shows now (the fault knobs can hide some for a while)."""
        return self.faults.visible(acct.activities, self.sim_now())

    # ------------------------------------------------------------------ lifecycle
    def prepare(self) -> float:
        """Back-fill history (or just the initial deposits); returns the seconds it took."""
        t0 = time.perf_counter()
        accts = list(self.engine.accounts.values())
        if self.cfg.history_days > 0:
            with_events = self.cfg.history_events if self.cfg.history_events is not None else self.cfg.history_days >= 20
            generate_history(self.engine, accts, days=self.cfg.history_days, end=self.sim_now(), seed=self.cfg.seed,
                             deposits=self._deposits, corporate_actions=with_events)
            self.market.gap()
        else:
            for acct in accts:
                self.engine.cash_activity(acct, "CSD", self._deposits[acct.name], "initial deposit")
                self.engine.snapshot(acct)
        for s in self.market.symbols:
            self.engine.last_close.setdefault(s, self.market.price(s))
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

    def state(self, *, reveal: bool = True) -> dict[str, Any]:
        """URLs and accounts; ``reveal`` (the 0600 state file only) includes secrets and the admin token."""
        host = self.cfg.host

        def secret(value: str) -> str:
            return value if reveal else mask_secret(value)

        out: dict[str, Any] = {
            "rest_url": f"http://{host}:{self.port}",
            "stream_url": f"ws://{host}:{self.port}/stream",
            "zmq_url": self.publisher.url if self.publisher is not None else None,
            "admin_url": f"http://{host}:{self.port}/admin",
            "pid": os.getpid(),
            "accounts": [{"name": a.name, "key_id": a.key_id, "secret_key": secret(a.secret_key)}
                         for a in self.engine.accounts.values()],
        }
        if reveal and self.cfg.admin:
            out["admin_token"] = self.admin_token
        return out

    # ------------------------------------------------------------------ background loops
    async def _tick_loop(self) -> None:
        tick_s = self.cfg.tick_s
        clock = events.SessionWatch(self.engine, self.sim_now())
        last_snap = self.sim_now()
        next_t = time.monotonic()
        while True:
            next_t += tick_s
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))
            if time.monotonic() - next_t > 1.0:
                next_t = time.monotonic()  # fell far behind (suspended?): do not burst
            try:
                now = self.sim_now()
                moving = clock.advance(now, self)
                self.engine.activate_accepted(now)
                if moving and not self.paused:
                    self._publish(self.market.step(tick_s * self.cfg.speed, moving), now)
                self.engine.match()
                self._run_bot(tick_s)
                self.scheduler.run_due(now)
                if (now - last_snap).total_seconds() >= self.cfg.snapshot_every_s:
                    last_snap = now
                    for acct in self.engine.accounts.values():
                        if len(acct.snapshots) < MAX_SNAPSHOTS:
                            self.engine.snapshot(acct, now)
            except Exception:
                log.exception("tick failed")

    def _publish(self, quotes: list[Any], now: datetime) -> None:
        if self.publisher is None:
            return
        ts_ns = int(now.timestamp() * 1e9)
        for q in quotes:
            self.publisher.publish(Tick(q.symbol, float(q.price), float(q.bid), float(q.ask), q.size, ts_ns))
        self.ticks_published += len(quotes)

    def session_closed(self, now: datetime) -> None:
        """The regular session ended: day orders expire, last closes and ``last_equity`` roll, options
        that expire today are settled."""
        self.engine.expire_day_orders(now, extended=None if self.cfg.always_open else False)
        events.settle_expiring_options(self.engine, now.astimezone(NY).date())
        self.engine.last_close = {s: self.market.price(s) for s in self.market.symbols}
        for acct in self.engine.accounts.values():
            self.engine.snapshot(acct, now)
            acct.last_equity = self.engine.equity(acct)

    def day_ended(self, day: date, now: datetime) -> None:
        """New York midnight: the broker posts the day's fees (unless a fault holds them back)."""
        self.engine.post_accruals(day - timedelta(days=self.faults.fee_post_delay_days), ts=now)

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

    def _on_event(self, acct: Account, data: dict[str, Any]) -> None:
        if self.faults.drop_trade_update(data):
            return
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
        r.add_get("/healthz", self._health)
        r.add_get("/stream", lambda request: handle_stream(self, request))
        TradingApi(self).add_routes(r)
        ReportsApi(self).add_routes(r)
        BarsApi(self).add_routes(r)
        if self.cfg.admin:
            AdminApi(self).add_routes(r)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        return as_json({"ok": True})

    @web.middleware
    async def _fault_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/v2/"):
            f = self.faults
            if f.rest_hang_s > 0 and self.fault_rng.random() < f.rest_hang_rate:
                await asyncio.sleep(f.rest_hang_s)
            if f.rest_error_rate > 0 and self.fault_rng.random() < f.rest_error_rate:
                code = self.fault_rng.choice(f.rest_error_codes)
                if code == 429:
                    return error(429, 42910000, "rate limit exceeded", {"Retry-After": str(f.retry_after_s)})
                return error(code, code * 100000, "simulated server error")
        return await handler(request)

    @web.middleware
    async def _auth_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/v2/"):
            key = request.headers.get("APCA-API-KEY-ID")
            secret = request.headers.get("APCA-API-SECRET-KEY")
            if not key or not secret:
                return error(401, 40110000, "request is not authorized")
            acct = self.engine.by_key.get(key)
            if acct is None:
                return error(401, 40110000, "request is not authorized")
            if not secrets.compare_digest(secret, acct.secret_key):
                return error(403, 40310000, "forbidden: invalid secret key")
            request["account"] = acct
            limits = self.rate_limits.count(key)
            try:
                response = await handler(request)
            except OrderError as exc:
                response = error(exc.status, exc.code, exc.message)
            response.headers.update(limits)
            return response
        elif request.path.startswith("/admin/") and self.cfg.admin and not self._admin_authorized(request):
            return error(401, 40110000, "admin API: missing or wrong token (Authorization: Bearer <admin_token>)")
        try:
            return await handler(request)
        except OrderError as exc:
            return error(exc.status, exc.code, exc.message)

    def _admin_authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else request.headers.get("X-Admin-Token", "")
        return secrets.compare_digest(token, self.admin_token)


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

