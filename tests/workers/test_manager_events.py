"""The manager's sync on corporate actions, option events, crypto fees, canceled and unknown activities.

Real PostgreSQL, no mocks: activities shaped as Alpaca's documentation shows them ("Account
Activities", "Non-Trade Activities for Option Events", "Crypto Spot Trading Fees", "Activities –
Integration Guide & Migration Playbook" for SPLIT/NC lines) go through the ingester's own parser and
writer (:func:`workers.alpaca.parse.parse_activity`, :class:`workers.ingester.store.RawStore`) into the
activities table; a :class:`~workers.manager.runner.DestinationRunner` syncs them. Open positions,
realized P&L (against a cash ledger computed here, independently of the book) and equity are checked.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from core.equity_replay import EquityReplay, replay_points
from core.settings import Settings
from core.snapshots import SnapshotSource
from core.valuation import Mark, PriceSource
from dashboard.pages.health import _feed_text
from tests.workers.test_manager_support import ScriptedBroker, destination, migrate_db
from workers.alpaca import BrokerPosition
from workers.alpaca.parse import parse_activity
from workers.db import create_pool
from workers.ingester.rules import Batch
from workers.ingester.store import RawStore
from workers.manager.context import RunnerContext
from workers.manager.history import stored_activities
from workers.manager.interpret import replay_reader
from workers.manager.port import always_open
from workers.manager.runner import DestinationRunner

D = Decimal
ACCOUNT = "f272c74a-0218-52a0-8f02-59295b26098d"


class CryptoBroker(ScriptedBroker):
    """Positions as Alpaca lists them: ``asset_class`` crypto for a pair spelled ``BTCUSD``."""

    async def get_positions(self) -> list[BrokerPosition]:
        return [replace(p, asset_class="crypto" if p.symbol.endswith("USD") else "us_equity")
                for p in await super().get_positions()]


@dataclass
class World:
    runner: DestinationRunner
    pool: asyncpg.Pool
    broker: ScriptedBroker
    settings: Settings
    n: int = 0

    def next_id(self, day: str) -> str:
        """Alpaca's activity id: the New York time of posting, then a UUID."""
        self.n += 1
        return f"{day.replace('-', '')}093000{self.n:03d}::{uuid.UUID(int=self.n)}"

    async def ingest(self, *items: dict[str, Any]) -> None:
        """Store items as the ingester does: parsed by its parser, written by its writer (one batch)."""
        batch = Batch()
        for item in items:
            batch.add_activity(parse_activity(item))
        async with self.pool.acquire() as conn:
            await RawStore(self.settings.account_schema).write_batch(conn, self.runner.slug, batch)

    def fill(self, when: str, symbol: str, side: str, qty: str, price: str) -> dict[str, Any]:
        aid = f"{when[:10].replace('-', '')}150000{self.n + 1:03d}::{uuid.UUID(int=10_000 + self.n)}"
        self.n += 1
        return {"id": aid, "account_id": ACCOUNT, "activity_type": "FILL", "transaction_time": when, "type": "fill",
                "price": price, "qty": qty, "side": side, "symbol": symbol, "leaves_qty": "0", "cum_qty": qty,
                "order_id": str(uuid.UUID(int=20_000 + self.n)), "order_status": "filled"}

    def nta(self, day: str, kind: str, net: str = "0", **fields: str) -> dict[str, Any]:
        """A non-trade activity (date-only) as ``/v2/account/activities`` returns it."""
        return {"id": self.next_id(day), "account_id": ACCOUNT, "activity_type": kind, "date": day, "net_amount": net,
                "status": "executed", **fields}

    def equity(self, marks: dict[str, str]) -> Decimal:
        """The runner's equity at these marks (cash + market values), as a snapshot would stamp it."""
        for symbol, price in marks.items():
            self.runner.rest_marks[symbol] = Mark(price=D(price), ts=datetime.now(UTC), source=PriceSource.REST)
        _, value, _ = self.runner.valuation(time.monotonic_ns())
        return value.cash + sum(value.market_values, D(0))


@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[World]:
    dest = destination("Events")
    migrate_db(settings, [dest])
    pool = await create_pool(settings, max_size=4)
    broker = CryptoBroker()
    ctx = RunnerContext(pool=pool, settings=settings, market_open=always_open, broker_factory=lambda d, s: broker,
                        holdings_changed=lambda: None, bar_stats=lambda: {}, stalled=lambda: None)
    runner = DestinationRunner(ctx, dest, None)
    await runner.store.ensure_versions()
    runner.broker = broker
    try:
        yield World(runner, pool, broker, settings)
    finally:
        await pool.close()


def _position(world: World, symbol: str) -> tuple[Decimal, Decimal | None]:
    pos = world.runner.positions[symbol]
    return pos.qty, pos.cost_basis


async def test_split_lines_ingested_in_two_syncs_pair_and_the_sale_is_a_gain(world: World) -> None:
    # Arrange: 10 NVDA at $1,000, a 10-for-1 split whose two lines reach the store in separate batches
    deposit = world.nta("2026-06-01", "CSD", "20000", description="ACH deposit")
    buy = world.fill("2026-06-02T15:00:00Z", "NVDA", "buy", "10", "1000")
    leaving = world.nta("2026-06-10", "SPLIT", qty="-10", price="1000", symbol="NVDA",
                        description="NVDA 10-for-1 forward split", activity_sub_type="FSPLIT")
    arriving = world.nta("2026-06-10", "SPLIT", qty="100", price="100", symbol="NVDA",
                         description="NVDA 10-for-1 forward split", activity_sub_type="FSPLIT")
    sale = world.fill("2026-06-11T15:00:00Z", "NVDA", "sell", "100", "110")
    world.runner.waiting.wait_s = 3600.0  # the partner is still to come: the lone line must wait for it
    await world.ingest(deposit, buy, leaving)
    await world.runner.sync_activities(initial=True)
    waited = _position(world, "NVDA"), world.runner.stats.lot_events

    # Act
    await world.ingest(arriving)
    await world.runner.sync_activities()
    split = _position(world, "NVDA")
    await world.ingest(sale)
    await world.runner.sync_activities()

    # Assert: 10 @ 1,000 while the line waits, then 100 @ 100 (same cost), flat after the sale with +$1,000
    assert waited == ((D(10), D(10000)), 0)
    assert split == (D(100), D(10000))
    assert "NVDA" not in world.runner.positions
    cash_ledger = D(20000) - 10 * D(1000) + 100 * D(110)  # computed here, without the book
    assert world.runner.ledger.cash == cash_ledger
    assert world.runner.realized_closed == cash_ledger - D(20000) == D(1000)
    assert world.runner.last_seq == max(r["seq"] for r in await world.pool.fetch(
        "SELECT seq FROM account_activities.activities"))


async def test_a_split_line_whose_partner_never_comes_is_booked_alone_after_the_wait(world: World) -> None:
    # Arrange: only the arriving line (its ratio is in the description), and no wait left
    await world.ingest(world.fill("2026-06-02T15:00:00Z", "NVDA", "buy", "10", "1000"),
                       world.nta("2026-06-10", "SPLIT", qty="100", price="100", symbol="NVDA",
                                 description="NVDA 10-for-1 forward split", activity_sub_type="FSPLIT"))
    world.runner.waiting.wait_s = 0.0

    # Act
    await world.runner.sync_activities(initial=True)

    # Assert: the text's ratio applies
    assert _position(world, "NVDA") == (D(100), D(10000))


async def test_name_change_continues_the_position_under_the_new_symbol(world: World) -> None:
    # Arrange
    await world.ingest(
        world.nta("2026-08-01", "CSD", "5000"),
        world.fill("2026-08-03T15:00:00Z", "SQ", "buy", "41", "71.89"),
        world.nta("2026-08-10", "NC", qty="-41", price="71.89", symbol="SQ", description="Name change SQ to XYZ"),
        world.nta("2026-08-10", "NC", qty="41", price="71.89", symbol="XYZ", description="Name change SQ to XYZ"),
    )
    await world.runner.sync_activities(initial=True)
    held = _position(world, "XYZ"), "SQ" in world.runner.positions

    # Act
    await world.ingest(world.fill("2026-08-12T15:00:00Z", "XYZ", "sell", "41", "80"))
    await world.runner.sync_activities()

    # Assert: one round trip SQ -> XYZ, no short opened
    assert held == ((D(41), D("2947.49")), False)
    assert world.runner.positions == {}
    assert world.runner.realized_closed == 41 * (D(80) - D("71.89")) == world.runner.ledger.cash - D(5000)


async def test_option_expiry_exercise_and_assignment_with_their_share_legs(world: World) -> None:
    # Arrange: two long calls (one expires, one is exercised) and a short put that is assigned
    call_out, call_in, put = "AAPL260116C00200000", "AAPL260116C00150000", "AAPL260116P00160000"
    await world.ingest(
        world.nta("2026-01-02", "CSD", "50000"),
        world.fill("2026-01-05T15:00:00Z", call_out, "buy", "1", "2.50"),
        world.fill("2026-01-05T15:01:00Z", call_in, "buy", "1", "4.00"),
        world.fill("2026-01-05T15:02:00Z", put, "sell_short", "1", "3.00"),
        # "Non-Trade Activities for Option Events": the event line, and OPTRD moving the shares at the strike
        world.nta("2026-01-16", "OPEXP", qty="-1", symbol=call_out, description="Option Expiry"),
        world.nta("2026-01-16", "OPEXC", qty="-1", symbol=call_in, description="Option Exercise"),
        world.nta("2026-01-16", "OPTRD", "-15000", qty="100", price="150", symbol="AAPL", description="Option Trade"),
        world.nta("2026-01-16", "OPASN", qty="1", symbol=put, description="Option Assignment"),
        world.nta("2026-01-16", "OPTRD", "-16000", qty="100", price="160", symbol="AAPL", description="Option Trade"),
    )

    # Act
    await world.runner.sync_activities(initial=True)
    equity = world.equity({"AAPL": "155"})

    # Assert: no contract left; 200 shares at the strikes; premiums realized (x100)
    assert set(world.runner.positions) == {"AAPL"}
    assert _position(world, "AAPL") == (D(200), D(31000))
    cash_ledger = D(50000) - D(250) - D(400) + D(300) - D(15000) - D(16000)
    assert world.runner.ledger.cash == cash_ledger == D(18650)
    assert world.runner.realized_closed == -D(250) - D(400) + D(300)
    assert equity == cash_ledger + 200 * D(155)


async def test_an_open_option_is_valued_at_one_hundred_shares_per_contract(world: World) -> None:
    # Arrange
    await world.ingest(world.nta("2026-01-02", "CSD", "10000"),
                       world.fill("2026-01-05T15:00:00Z", "SPY260320C00600000", "buy", "2", "5.10"))

    # Act
    await world.runner.sync_activities(initial=True)
    equity = world.equity({"SPY260320C00600000": "6.00"})
    (row,), _, _ = world.runner.valuation(time.monotonic_ns())

    # Assert: premium 2 x 5.10 x 100 paid; marked 2 x 6 x 100
    assert world.runner.ledger.cash == D(10000) - D(1020)
    assert (row.market_value, row.unrealized_pl, row.cost_basis) == (D(1200), D(180), D(1020))
    assert equity == D(10180)


async def test_crypto_fee_in_the_asset_reduces_the_lot_and_reconciles_with_btcusd(world: World) -> None:
    # Arrange: a BTC/USD buy; the fee posted at the end of the day in BTC, spelled BTCUSD
    await world.ingest(
        world.nta("2026-03-01", "CSD", "70000"),
        world.fill("2026-03-02T15:00:00Z", "BTC/USD", "buy", "1", "60000"),
        world.nta("2026-03-02", "CFEE", qty="-0.0025", price="60000", symbol="BTCUSD",
                  description="Coin Pair Transaction Fee (Non USD)"),
    )
    world.broker.positions = {"BTCUSD": (D("0.9975"), D(61000), None)}

    # Act
    await world.runner.sync_activities(initial=True)
    await world.runner.reconcile()
    equity = world.equity({"BTC/USD": "61000"})

    # Assert: 0.9975 BTC at their cost, no quantity mismatch against the broker's BTCUSD
    assert _position(world, "BTC/USD") == (D("0.9975"), D("59850.0000"))
    assert world.runner.mismatch == {}
    assert world.runner.ledger.cash == D(10000)
    assert equity == D(10000) + D("0.9975") * 61000


async def test_canceled_deposit_changes_nothing_and_unknown_type_books_its_cash(world: World) -> None:
    # Arrange
    canceled = world.nta("2026-02-02", "CSD", "1000", description="ACH deposit")
    canceled["status"] = "canceled"
    await world.ingest(world.nta("2026-02-01", "CSD", "2500"), canceled,
                       world.nta("2026-02-03", "ZZNEW", "12.34", description="a type Alpaca adds later"))

    # Act
    await world.runner.sync_activities(initial=True)
    stored = {r["activity_type"] for r in await world.pool.fetch("SELECT activity_type FROM account_activities.activities")}

    # Assert
    assert stored == {"CSD", "ZZNEW"}
    assert (world.runner.ledger.cash, world.runner.ledger.net_deposits) == (D("2512.34"), D(2500))
    assert world.runner.stats.activities_unknown == 1
    assert world.runner.stats.activities_skipped == 0


async def test_unknown_types_are_counted_in_the_heartbeat_and_flagged_on_the_health_page(world: World) -> None:
    # Arrange
    await world.ingest(world.nta("2026-02-03", "ZZNEW", "12.34"), world.nta("2026-02-04", "ZZOTHER", "-1"))
    await world.runner.sync_activities(initial=True)

    # Act
    await world.runner.heartbeat()
    details = await world.pool.fetchval("SELECT details FROM account_activities.heartbeats WHERE service = 'manager'")

    # Assert
    assert json.loads(details)["stats"]["activities_unknown"] == 2
    assert "2 activities of an unknown type" in _feed_text(json.loads(details))


async def test_snapshot_and_replay_agree_with_the_live_book_through_events(world: World) -> None:
    # Arrange: a split, a reverse split with cash in lieu, a stock-and-cash merger
    await world.ingest(
        world.nta("2026-06-01", "CSD", "100000"),
        world.fill("2026-06-02T15:00:00Z", "NKLA", "buy", "2500", "1.21"),
        world.fill("2026-06-02T15:01:00Z", "ANSS", "buy", "9", "330.37"),
        world.nta("2026-06-10", "SPLIT", qty="-2500", price="1.21", symbol="NKLA",
                  description="NKLA 1-for-30 reverse split", activity_sub_type="RSPLIT"),
        world.nta("2026-06-10", "SPLIT", qty="83.33333333333333333333333332", price="36.3", symbol="NKLA",
                  description="NKLA 1-for-30 reverse split", activity_sub_type="RSPLIT"),
        world.nta("2026-06-10", "CIL", "10.76", qty="-0.33333333333333333333333332", price="32.27", symbol="NKLA",
                  description="cash in lieu NKLA"),
        world.nta("2026-06-11", "MA", "1773", qty="-9", price="330.37", symbol="ANSS",
                  description="Merger: ANSS acquired by SNPS (0.345 shares + $197 per share)"),
        world.nta("2026-06-11", "MA", qty="3.105", price="386.5797", symbol="SNPS",
                  description="Merger: ANSS acquired by SNPS (0.345 shares + $197 per share)"),
    )
    world.broker.positions = {"NKLA": (D(83), D(30), None), "SNPS": (D("3.105"), D(500), None)}

    # Act
    await world.runner.sync_activities(initial=True)
    await world.runner.reconcile()
    equity = world.equity({"NKLA": "30", "SNPS": "500"})
    ts = datetime(2026, 6, 12, 20, tzinfo=UTC)
    await world.runner.snapshot([ts], time.monotonic_ns(), SnapshotSource.LIVE)
    stored = await world.pool.fetchval("SELECT equity FROM equity_full_events WHERE ts = $1", ts)
    replay = EquityReplay(read=replay_reader)
    (replayed,) = replay_points(await stored_activities(world.pool, world.settings, "events"), [ts], replay)

    # Assert: the broker's quantities; cash = deposit - buys + CIL + merger cash
    assert {s: p.qty for s, p in world.runner.positions.items()} == {"NKLA": D(83), "SNPS": D("3.105")}
    assert world.runner.mismatch == {}
    cash_ledger = D(100000) - 2500 * D("1.21") - 9 * D("330.37") + D("10.76") + D(1773)
    assert world.runner.ledger.cash == cash_ledger
    assert stored == equity == cash_ledger + 83 * D(30) + D("3.105") * 500
    assert (replayed.cash, replayed.realized_pl, replay.book.open_positions().keys()) == (
        cash_ledger, world.runner.realized_closed + sum((p.realized_pl for p in world.runner.positions.values()),
                                                        D(0)), world.runner.positions.keys())


async def test_an_external_trade_is_a_fill(world: World) -> None:
    # Arrange: EXTRD ("External trade booked to the account") with a fill's fields
    extrd = {**world.fill("2026-02-05T15:00:00Z", "MSFT", "buy", "3", "400"), "activity_type": "EXTRD"}
    await world.ingest(world.nta("2026-02-01", "CSD", "2000"), extrd)

    # Act
    await world.runner.sync_activities(initial=True)

    # Assert
    assert _position(world, "MSFT") == (D(3), D(1200))
    assert world.runner.ledger.cash == D(800)
