"""Helpers shared by the manager tests (no tests here): raw rows, a scripted broker, a ZMQ publisher."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import zmq
import zmq.asyncio

from core.db import connect, migrate
from core.destinations import Destination
from core.settings import Settings
from workers.alpaca import BrokerAccount, BrokerPosition, PortfolioHistory
from workers.notify import NEW_FILLS_CHANNEL
from workers.prices import encode_message

T0 = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


def destination(name: str = "Alpha", **kw: Any) -> Destination:
    slug = name.lower().replace(" ", "_")
    return Destination(name=name, slug=slug, key_id="PKTESTKEY0001", secret_key="s3cr3t", base_url="http://127.0.0.1:9",
                       **kw)


def migrate_db(settings: Settings, dests: list[Destination]) -> None:
    conn = connect(settings.primary_dsn or "")
    try:
        migrate(conn, settings, dests)
    finally:
        conn.close()


@dataclass
class Activity:
    activity_id: str
    ts: datetime
    activity_type: str = "FILL"
    symbol: str | None = None
    side: str | None = None
    qty: Decimal | None = None
    price: Decimal | None = None
    net_amount: Decimal | None = None
    order_id: str | None = None
    parse_error: str | None = None


def fill(n: int, symbol: str, side: str, qty: str, price: str, *, minutes: int | None = None,
         order_id: str | None = None) -> Activity:
    return Activity(f"2026010515{n:05d}::{uuid.UUID(int=n)}", T0 + timedelta(minutes=n if minutes is None else minutes),
                    "FILL", symbol, side, Decimal(qty), Decimal(price), None, order_id or str(uuid.UUID(int=10_000 + n)))


def cash(n: int, kind: str, amount: str) -> Activity:
    return Activity(f"cash-{n}", T0 + timedelta(minutes=n), kind, net_amount=Decimal(amount))


async def insert_activities(conn: asyncpg.Connection | asyncpg.Pool, slug: str, acts: list[Activity], *,
                            notify: bool = True, schema: str = "account_activities") -> None:
    await conn.executemany(
        f"""INSERT INTO {schema}.activities (destination, activity_id, ts, activity_type, symbol, side, qty, price,
                net_amount, order_id, raw, parse_error)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::uuid, $11::jsonb, $12) ON CONFLICT DO NOTHING""",
        [(slug, a.activity_id, a.ts, a.activity_type, a.symbol, a.side, a.qty, a.price, a.net_amount, a.order_id,
          json.dumps({"id": a.activity_id}), a.parse_error) for a in acts])
    if notify:
        await conn.execute("SELECT pg_notify($1, $2)", NEW_FILLS_CHANNEL, json.dumps({"destination": slug}))


async def insert_order(conn: asyncpg.Connection | asyncpg.Pool, slug: str, order_id: str, *, symbol: str, side: str,
                       order_type: str, status: str, parent: str | None = None, order_class: str = "simple",
                       limit_price: str | None = None, stop_price: str | None = None) -> None:
    await conn.execute(
        """INSERT INTO account_activities.orders (destination, order_id, parent_order_id, symbol, side, order_type,
               order_class, status, limit_price, stop_price, updated_at, raw)
           VALUES ($1, $2::uuid, $3::uuid, $4, $5, $6, $7, $8, $9::numeric, $10::numeric, now(), '{}'::jsonb)
           ON CONFLICT (destination, order_id) DO UPDATE SET status = EXCLUDED.status, updated_at = now()""",
        slug, order_id, parent, symbol, side, order_type, order_class, status, limit_price, stop_price)


@dataclass
class ScriptedBroker:
    """A broker double for unit tests: positions/account set by the test, calls counted."""

    positions: dict[str, tuple[Decimal, Decimal | None, Decimal | None]] = field(default_factory=dict)
    """symbol -> (qty, current_price, lastday_price)."""
    cash: Decimal | None = None
    equity: Decimal | None = None
    history: list[tuple[datetime, Decimal]] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=lambda: {"account": 0, "positions": 0, "history": 0})
    fail: bool = False
    bug: bool = False
    """``get_positions`` raises an unexpected exception (a bug, not a broker outage)."""

    async def get_account(self) -> BrokerAccount:
        self.calls["account"] += 1
        if self.fail:
            raise OSError("broker down")
        return BrokerAccount(account_id=None, account_number=None, status="ACTIVE", currency="USD", cash=self.cash,
                             equity=self.equity, last_equity=None, portfolio_value=None, buying_power=None,
                             long_market_value=None, short_market_value=None, raw={})

    async def get_positions(self) -> list[BrokerPosition]:
        self.calls["positions"] += 1
        if self.bug:
            raise RuntimeError("a bug behind the broker port")
        if self.fail:
            raise OSError("broker down")
        return [BrokerPosition(symbol=s, qty=q, side="long" if q > 0 else "short", avg_entry_price=None,
                               market_value=None, cost_basis=None, unrealized_pl=None, unrealized_plpc=None,
                               current_price=cp, lastday_price=lp, change_today=None, asset_id=None, asset_class=None,
                               raw={}) for s, (q, cp, lp) in self.positions.items()]

    async def get_portfolio_history(self, **params: Any) -> PortfolioHistory:
        self.calls["history"] += 1
        return PortfolioHistory(timestamps=tuple(t for t, _ in self.history), equity=tuple(e for _, e in self.history),
                                profit_loss=(), profit_loss_pct=(), base_value=None, timeframe="1D", raw={})

    async def close(self) -> None:
        return None


class Publisher:
    """A real PUB socket on a random loopback port."""

    def __init__(self) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.url = f"tcp://127.0.0.1:{port}"

    def publish(self, symbol: str, price: str | Decimal) -> None:
        self.sock.send_multipart(encode_message(symbol, price, time.time_ns()))

    def send_raw(self, frames: list[bytes]) -> None:
        """Any frames at all, as a buggy or hostile publisher would send them."""
        self.sock.send_multipart(frames)

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


async def eventually(cond: Callable[[], Awaitable[bool]], *, what: str, timeout_s: float = 20.0,
                     tick: Callable[[], object] | None = None, every_s: float = 0.05) -> None:
    """Poll an async condition until true (the bound only stops a hung test; nothing is timed)."""
    deadline = time.monotonic() + timeout_s
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        if tick is not None:
            tick()
        await asyncio.sleep(every_s)


class Listener:
    """LISTEN on channels; collects decoded payloads."""

    def __init__(self) -> None:
        self.conn: asyncpg.Connection | None = None
        self.received: dict[str, list[dict[str, Any]]] = {}

    async def start(self, dsn: str, *channels: str) -> Listener:
        self.conn = await asyncpg.connect(dsn)
        for ch in channels:
            self.received[ch] = []
            await self.conn.add_listener(ch, self._on)
        return self

    def _on(self, _c: Any, _pid: int, channel: str, payload: str) -> None:
        self.received[channel].append(json.loads(payload))

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
