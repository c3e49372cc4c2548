"""Strategies end to end: orders with known client order id prefixes placed on the simulator through
alpaca-py, stored by the real ingester, matched by the real manager, attributed by the dashboard's read
side; every strategy's round trips and P&L equal to an independent recomputation from the simulator's
own fills (a FIFO written here, not core.fifo).

The orders cover what attribution must get right:

- a plain round trip closed by another strategy's order (it stays with the strategy that opened it);
- bracket legs (Alpaca ignores a leg's own client order id: the legs take the parent's strategy),
  including a stop leg and a take-profit leg each **replaced** (PATCH /v2/orders/{id}) with a foreign
  client order id before it filled;
- an entry order replaced with a foreign client order id before it filled (the replacement keeps the
  strategy of the order it replaced, and so does the round trip it opened);
- an unattributed round trip closed by a strategy's order, and a strategy's open position.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from alpaca.trading.enums import OrderClass, OrderSide, OrderStatus, TimeInForce
from alpaca.trading.requests import (
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLossRequest,
    TakeProfitRequest,
)

from core.settings import Settings
from core.strategies import UNATTRIBUTED, StrategyRule
from dashboard import strategy_queries as sq
from dashboard.queries import ReadModel
from tests.simulator.conftest import wait_for
from tests.simulator_fixtures import SimHandle
from tests.workers.test_manager_simulator import sim_destination
from tests.workers.test_manager_support import eventually, migrate_db
from workers.benchmarks import publish_configuration
from workers.ingester import IngesterOptions, run_ingester
from workers.manager import AccountManager, always_open

pytestmark = pytest.mark.slow

RULES = (StrategyRule("momo", prefix="momo-"), StrategyRule("brk", prefix="brk-"),
         StrategyRule("mr_{1}", pattern=r"^mr_(\w+)-"))


@dataclass
class Placed:
    """What the test placed: each order id's strategy by construction (never by the rules' code)."""

    strategy_of: dict[str, str] = field(default_factory=dict)
    legs: set[str] = field(default_factory=set)
    replacements: set[str] = field(default_factory=set)
    foreign_ids: set[str] = field(default_factory=set)
    """Client order ids no rule matches, carried by orders that belong to a strategy."""


def _pin(sim: SimHandle, symbol: str, price: str | None) -> None:
    sim.admin("/price", {"symbol": symbol, "price": price})


def _status(client: Any, order_id: str, *statuses: OrderStatus) -> Any:
    return wait_for(lambda: (o := client.get_order_by_id(order_id)).status in statuses and o, f"{order_id} {statuses}")


def _market(client: Any, symbol: str, qty: int, side: OrderSide, cid: str) -> str:
    order = client.submit_order(MarketOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force=TimeInForce.GTC,
                                                   client_order_id=cid))
    _status(client, order.id, OrderStatus.FILLED)
    return str(order.id)


def place_orders(sim: SimHandle) -> Placed:
    """The scenario of the module docstring; returns who owns which order."""
    client = sim.trading_client(0)
    p = Placed()
    own = p.strategy_of
    # A: momo opens, another strategy (mr_swing) closes
    _pin(sim, "AAPL", "100")
    own[_market(client, "AAPL", 10, OrderSide.BUY, "momo-a1")] = "momo"
    _pin(sim, "AAPL", "104")
    own[_market(client, "AAPL", 10, OrderSide.SELL, "mr_swing-a2")] = "mr_swing"
    # B: a bracket whose stop leg is moved (replaced, foreign client id) and then fills
    _pin(sim, "MSFT", "200")
    b = client.submit_order(MarketOrderRequest(
        symbol="MSFT", qty=5, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, client_order_id="brk-b1",
        order_class=OrderClass.BRACKET, take_profit=TakeProfitRequest(limit_price=220),
        stop_loss=StopLossRequest(stop_price=180)))
    _status(client, b.id, OrderStatus.FILLED)
    tp_b, sl_b = (str(leg.id) for leg in b.legs)
    moved = client.replace_order_by_id(sl_b, ReplaceOrderRequest(stop_price=190, client_order_id="zz-moved-b"))
    own.update({str(b.id): "brk", tp_b: "brk", sl_b: "brk", str(moved.id): "brk"})
    p.legs |= {tp_b, sl_b}
    p.replacements.add(str(moved.id))
    p.foreign_ids.add("zz-moved-b")
    _pin(sim, "MSFT", "189")
    _status(client, moved.id, OrderStatus.FILLED)
    # C: a bracket whose take-profit leg is replaced (a fresh random client id) and then fills
    _pin(sim, "NVDA", "50")
    c = client.submit_order(MarketOrderRequest(
        symbol="NVDA", qty=3, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, client_order_id="brk-c1",
        order_class=OrderClass.BRACKET, take_profit=TakeProfitRequest(limit_price=60),
        stop_loss=StopLossRequest(stop_price=40)))
    _status(client, c.id, OrderStatus.FILLED)
    tp_c, sl_c = (str(leg.id) for leg in c.legs)
    tp_moved = client.replace_order_by_id(tp_c, ReplaceOrderRequest(limit_price=58))
    own.update({str(c.id): "brk", tp_c: "brk", sl_c: "brk", str(tp_moved.id): "brk"})
    p.legs |= {tp_c, sl_c}
    p.replacements.add(str(tp_moved.id))
    p.foreign_ids.add(str(tp_moved.client_order_id))
    _pin(sim, "NVDA", "59")
    _status(client, tp_moved.id, OrderStatus.FILLED)
    # D: an entry replaced with a foreign client id before it fills; an unattributed order closes it
    _pin(sim, "JPM", "100")
    d = client.submit_order(LimitOrderRequest(symbol="JPM", qty=4, side=OrderSide.BUY, time_in_force=TimeInForce.GTC,
                                              limit_price=90, client_order_id="mr_swing-d1"))
    d_new = client.replace_order_by_id(d.id, ReplaceOrderRequest(limit_price=101, client_order_id="other-d1x"))
    _status(client, d_new.id, OrderStatus.FILLED)
    own.update({str(d.id): "mr_swing", str(d_new.id): "mr_swing"})
    p.replacements.add(str(d_new.id))
    p.foreign_ids.add("other-d1x")
    _pin(sim, "JPM", "103")
    own[_market(client, "JPM", 4, OrderSide.SELL, "manual-d2")] = UNATTRIBUTED
    # E: unattributed opens, momo closes
    _pin(sim, "GOOGL", "150")
    own[_market(client, "GOOGL", 2, OrderSide.BUY, "manual-e1")] = UNATTRIBUTED
    _pin(sim, "GOOGL", "149")
    own[_market(client, "GOOGL", 2, OrderSide.SELL, "momo-e2")] = "momo"
    # F: momo's open position
    _pin(sim, "TSLA", "220")
    own[_market(client, "TSLA", 6, OrderSide.BUY, "momo-f1")] = "momo"
    _pin(sim, "TSLA", "223")
    return p


@dataclass(frozen=True)
class Trip:
    symbol: str
    qty: Decimal
    entry_order_id: str
    exit_order_id: str
    pnl: Decimal


def recompute(fills: list[dict[str, Any]]) -> tuple[list[Trip], dict[str, list[list[Any]]]]:
    """FIFO over the simulator's fills, written independently of core.fifo (no fees: none are charged):
    the round trips, and each symbol's open lots ``[signed qty, price, opening order id]``."""
    lots: dict[str, deque[list[Any]]] = defaultdict(deque)  # symbol -> [signed qty, price, order id]
    trips: list[Trip] = []
    for f in sorted(fills, key=lambda a: (datetime.fromisoformat(a["transaction_time"]), a["id"])):
        sign = 1 if f["side"] == "buy" else -1
        left, price = Decimal(f["qty"]), Decimal(f["price"])
        book = lots[f["symbol"]]
        while left > 0 and book and (book[0][0] > 0) != (sign > 0):
            lot = book[0]
            take = min(left, abs(lot[0]))
            pnl = (price - lot[1]) * take * (1 if lot[0] > 0 else -1)
            trips.append(Trip(f["symbol"], take, lot[2], f["order_id"], pnl))
            lot[0] += take * sign
            left -= take
            if lot[0] == 0:
                book.popleft()
        if left > 0:
            book.append([left * sign, price, f["order_id"]])
    return trips, {s: list(b) for s, b in lots.items() if b}


async def test_strategy_books_equal_an_independent_recomputation(
        settings: Settings, db_dsn: str, simulator_factory: Callable[..., SimHandle]) -> None:
    # Arrange: the real ingester and manager on a fresh simulator account, the rules published
    sim = simulator_factory(accounts=1, seed=11, bot_rate=0.0, history_days=0, extra_args=["--tick-ms", "50"])
    dest = sim_destination(sim)
    cfg = settings.replace(zmq_price_endpoints=sim.zmq_url, closed_sync_sec=1.0, snapshot_sec=0.5,
                           price_stale_after_s=30.0)
    migrate_db(cfg, [dest])
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    await publish_configuration(pool, RULES, [dest])
    stop = asyncio.Event()
    options = IngesterOptions(backfill_interval_s=1.0, lock_check_interval_s=0.5, fill_catchup_min_interval_s=0.2)
    ingest = asyncio.create_task(run_ingester(cfg, [dest], stop_event=stop, options=options))
    manage = asyncio.create_task(AccountManager(cfg, [dest], market_open=always_open).run(stop))
    try:
        # Act
        placed = await asyncio.to_thread(place_orders, sim)
        truth = (await asyncio.to_thread(sim.admin, f"/ground-truth?account={dest.name}"))["accounts"][dest.name]
        fills = [a for a in truth["activities"] if a.get("activity_type") == "FILL"]
        expected, lots = recompute(fills)
        mark = Decimal("223")  # TSLA's pinned price: the open lot's value
        unrealized = {s: sum(q * (mark - px) for q, px, _o in lot) for s, lot in lots.items()}
        held = {s: p for s, p in truth["positions"].items() if Decimal(p["qty"]) != 0}

        async def converged() -> bool:
            closed = await pool.fetchval(f"SELECT count(*) FROM closed_trades_{dest.slug}")
            opened = await pool.fetch(f"SELECT symbol, unrealized_pl FROM open_trades_{dest.slug}")
            orders = await pool.fetchval(f"SELECT count(*) FROM {cfg.account_schema}.orders WHERE destination = $1",
                                         dest.slug)
            return (closed == len(expected) and orders >= len(placed.strategy_of)
                    and {r["symbol"]: r["unrealized_pl"] for r in opened} == unrealized)

        await eventually(converged, what="the manager's round trips and the ingester's orders", timeout_s=60,
                         every_s=0.2)
        model = ReadModel(cfg, db_dsn)
        by_order = sq.order_strategies(model, dest.slug)
        books = {name: sq.book_for(model, [dest.slug], name) for name in ("momo", "brk", "mr_swing", UNATTRIBUTED)}
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(ingest, manage, return_exceptions=True), 30)
        await pool.close()

    # Assert: the scenario is not vacuous
    assert len(expected) == 5  # A to E; F stays open
    assert {placed.strategy_of[t.entry_order_id] for t in expected} == {"momo", "brk", "mr_swing", UNATTRIBUTED}
    assert any(t.exit_order_id in placed.replacements for t in expected)  # trips closed by replaced legs
    assert any(t.entry_order_id in placed.replacements for t in expected)  # and opened by a replaced entry
    assert not any(cid.startswith(("momo-", "brk-", "mr_")) for cid in placed.foreign_ids)
    # every order, legs and replacements included, has the strategy it was placed for
    assert {oid: by_order.get(oid) for oid in placed.strategy_of} == placed.strategy_of
    # each strategy's round trips and P&L equal the recomputation, attributed by the opening order
    for name, (closed, open_, book) in books.items():
        mine = [t for t in expected if placed.strategy_of[t.entry_order_id] == name]
        got = sorted((r.symbol, Decimal(str(r.qty)), r.entry_order_id, r.exit_order_id,
                      round(Decimal(str(r.net_pl)), 6)) for r in closed.itertuples())
        assert got == sorted((t.symbol, t.qty, t.entry_order_id, t.exit_order_id, round(t.pnl, 6)) for t in mine), name
        assert float(book["realized"].sum()) == pytest.approx(float(sum(t.pnl for t in mine)), abs=1e-6)
        theirs = sum((unrealized[s] for s, lot in lots.items() if placed.strategy_of[lot[0][2]] == name), Decimal(0))
        assert sq.kpis(closed, open_, sq.returns_of(book))["unrealized_pl"] == pytest.approx(float(theirs),
                                                                                            abs=1e-6), name
    assert set(books["momo"][1]["symbol"]) == {"TSLA"} == set(held) == set(lots)
    assert unrealized["TSLA"] != 0
