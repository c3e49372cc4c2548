"""Equity and valuation decisions (pure), and the rebuild-equity / refill-snapshots commands."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from core.equity_replay import EquityReplay, replay_points
from core.exit_legs import Legs, OpenOrder, select_legs
from core.fifo import cash_flow_pl
from core.ledger import ledger_entry
from core.records import ActivityRecord, Direction, Fill, Lot, OpenPosition
from core.settings import Settings
from core.snapshots import DrawdownTracker, bucket_start, due_snapshot, missing_boundaries
from core.valuation import Mark, PriceSource, value_positions
from tests.workers.test_manager_support import Activity, cash, destination, fill, insert_activities, migrate_db
from workers.manager import rebuild_equity, refill_snapshots
from workers.manager.reconcile import qty_mismatches
from workers.manager.throttle import Throttle

ROOT = Path(__file__).resolve().parents[2]
T = datetime(2026, 1, 6, 15, 0, tzinfo=UTC)  # a Tuesday, 10:00 New York: the market is open


@pytest.mark.parametrize(
    ("kind", "side", "qty", "price", "net", "cash_delta", "deposit_delta"),
    [
        ("FILL", "buy", "10", "100", None, "-1000", "0"),
        ("FILL", "sell", "4", "110.5", None, "442.0", "0"),
        ("FILL", "sell_short", "2", "50", None, "100", "0"),
        ("CSD", None, None, None, "5000", "5000", "5000"),
        ("CSW", None, None, None, "-700", "-700", "-700"),
        ("JNLC", None, None, None, "25", "25", "25"),
        ("DIV", None, None, None, "3.2", "3.2", "0"),
        ("FEE", None, None, None, "-0.02", "-0.02", "0"),
    ],
)
def test_ledger_entry(kind: str, side: str | None, qty: str | None, price: str | None, net: str | None,
                      cash_delta: str, deposit_delta: str) -> None:
    entry = ledger_entry("a", kind, side=side, qty=Decimal(qty) if qty else None,
                         price=Decimal(price) if price else None, net_amount=Decimal(net) if net else None)
    assert (entry.cash_delta, entry.deposit_delta) == (Decimal(cash_delta), Decimal(deposit_delta))


def test_drawdown_ignores_deposits_and_withdrawals() -> None:
    dd = DrawdownTracker()
    assert dd.update(Decimal(1000), Decimal(1000)) == 0.0
    assert dd.update(Decimal(2000), Decimal(2000)) == 0.0  # a deposit is not a new high
    assert dd.update(Decimal(1800), Decimal(2000)) == pytest.approx(-0.1)
    assert dd.update(Decimal(1300), Decimal(1500)) == pytest.approx(1300 / 1500 - 1)  # withdrawal: same loss
    assert dd.update(Decimal(1700), Decimal(1500)) == 0.0


def test_throttle_leading_edge_and_guaranteed_trailing_edge() -> None:
    th = Throttle(1.0)
    assert th.offer(10.0) is True
    assert th.offer(10.3) is False
    assert th.due(10.9) is False
    assert th.due(11.0) is True  # the deferred change is sent one interval after the last
    assert th.due(11.5) is False  # and only once
    assert th.ready(12.0) is True


def test_snapshot_grid_is_aligned_and_sparser_outside_hours() -> None:
    def open_until_16(ts: datetime) -> bool:
        return ts.hour < 16

    assert bucket_start(datetime(2026, 1, 6, 15, 0, 59, 999999, tzinfo=UTC), 60) == T
    assert due_snapshot(T + timedelta(seconds=61), T, snapshot_sec=60, market_open=open_until_16) == T + timedelta(
        seconds=60)
    assert due_snapshot(T + timedelta(seconds=30), T, snapshot_sec=60, market_open=open_until_16) is None
    gap = missing_boundaries(T + timedelta(minutes=57), T + timedelta(minutes=90), snapshot_sec=60,
                             market_open=open_until_16)
    assert gap == [T + timedelta(minutes=m) for m in (58, 59, 60, 75, 90)]  # 16:00 is closed, on the 15-min grid


def _position(symbol: str, qty: str, avg: str, entry_order: str | None = "E") -> OpenPosition:
    q = Decimal(qty)
    direction = Direction.LONG if q > 0 else Direction.SHORT
    lot = Lot(symbol, "f1", entry_order, direction, T, Decimal(avg), abs(q), abs(q))
    return OpenPosition(symbol, direction, q, Decimal(avg), q * Decimal(avg), T, entry_order, Decimal(0), (lot,), False)


def test_short_position_gains_when_price_falls() -> None:
    rows = value_positions({"TSLA": _position("TSLA", "-5", "200")}, {"TSLA": Mark(price=Decimal(190), ts=T, source=PriceSource.ZMQ)},
                           equity=Decimal(10_000), prev_close={"TSLA": Decimal(195)})
    (row,) = rows
    assert (row.market_value, row.unrealized_pl, row.day_change, row.exposure) == (
        Decimal(-950), Decimal(50), Decimal(25), Decimal(950))
    assert row.unrealized_plpc == pytest.approx(5.0)
    assert row.weight == pytest.approx(-0.095)


def test_unpriced_position_keeps_empty_valuation() -> None:
    (row,) = value_positions({"X": _position("X", "1", "10")}, {}, equity=None)
    assert (row.mark_price, row.market_value, row.price_stale) == (None, None, True)


def test_bracket_children_win_over_standalone_orders() -> None:
    pos = _position("AAPL", "10", "100")
    def order(oid: str, parent: str | None, side: str, kind: str, limit: int | None, stop: int | None) -> OpenOrder:
        return OpenOrder(order_id=oid, parent_order_id=parent, symbol="AAPL", side=side, order_type=kind,
                         limit_price=None if limit is None else Decimal(limit),
                         stop_price=None if stop is None else Decimal(stop))

    orders = [order("s1", None, "sell", "stop", None, 80), order("c1", "E", "sell", "limit", 120, None),
              order("c2", "E", "sell", "trailing_stop", None, 95), order("b1", None, "buy", "limit", 90, None)]
    assert select_legs(pos, orders) == Legs(stop_price=Decimal(95), take_profit_price=Decimal(120))
    assert select_legs(pos, orders[:1]) == Legs(stop_price=Decimal(80))


def test_qty_mismatches_both_ways() -> None:
    assert qty_mismatches({"A": Decimal(1), "B": Decimal(2)}, {"A": Decimal(1), "C": Decimal(3)}) == {
        "B": (Decimal(2), Decimal(0)), "C": (Decimal(0), Decimal(3))}


def _record(a: Activity) -> ActivityRecord:
    return ActivityRecord(seq=0, activity_id=a.activity_id, ts=a.ts, activity_type=a.activity_type, symbol=a.symbol,
                          side=a.side, qty=a.qty, price=a.price, net_amount=a.net_amount, order_id=a.order_id,
                          parse_error=a.parse_error)


@hsettings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 20), st.integers(50, 150)), min_size=1, max_size=30))
def test_replay_realized_pl_equals_cash_flow_once_flat(trades: list[tuple[bool, int, int]]) -> None:
    acts, fills, pos = [], [], 0
    for i, (buy, qty, price) in enumerate(trades):
        acts.append(fill(i, "SPY", "buy" if buy else "sell", str(qty), str(price)))
        pos += qty if buy else -qty
    if pos:
        acts.append(fill(len(trades), "SPY", "sell" if pos > 0 else "buy", str(abs(pos)), "100"))
    for a in acts:
        fills.append(Fill(a.activity_id, a.ts, "SPY", a.side, a.qty, a.price))
    replay = EquityReplay()
    (snap,) = replay_points([_record(a) for a in acts], [acts[-1].ts], replay)
    assert snap.realized_pl == cash_flow_pl(fills)
    assert snap.equity == snap.cash == cash_flow_pl(fills)


async def test_rebuild_equity_values_each_session_close(settings: Settings, db_dsn: str) -> None:
    dest = destination("Alpha", initial_deposit=Decimal(10_000))
    migrate_db(settings, [dest])
    conn = await asyncpg.connect(db_dsn)
    try:
        day = timedelta(days=1)
        acts = [cash(0, "CSD", "10000"), fill(1, "AAPL", "buy", "10", "100"),
                fill(2, "AAPL", "sell", "10", "110", minutes=60 * 24 + 2), cash(3, "CSW", "-500")]
        acts[3].ts = T + 2 * day
        await insert_activities(conn, dest.slug, acts, notify=False)
        await conn.execute(f"INSERT INTO equity_full_{dest.slug} (ts, equity, source) VALUES ($1, 1, 'live')",
                           T - timedelta(days=1) + timedelta(hours=3))

        written = await rebuild_equity(settings, dest, since=datetime(2026, 1, 5, tzinfo=UTC), progress=False)

        rows = await conn.fetch(f"SELECT ts, equity, cash, realized_pl, net_deposits, source FROM equity_full_{dest.slug} "
                                "ORDER BY ts")
        closes = [r for r in rows if r["ts"] < datetime(2026, 1, 9, tzinfo=UTC)]
        assert written >= 4
        assert all(r["source"] == "rebuild" for r in rows)  # the stale row after 'since' is gone
        assert [(r["ts"].day, r["ts"].hour, r["equity"], r["net_deposits"]) for r in closes] == [
            (5, 21, Decimal(10_000), Decimal(10_000)),  # 9,000 cash + 10 AAPL at the last fill price
            (6, 21, Decimal(10_100), Decimal(10_000)),  # sold at 110
            (7, 21, Decimal(10_100), Decimal(10_000)),
            (8, 21, Decimal(9_600), Decimal(9_500)),  # a 500 withdrawal: not a loss
        ]
        assert closes[-1]["realized_pl"] == Decimal(100)
    finally:
        await conn.close()


async def test_refill_snapshots_fills_holes_only(settings: Settings, db_dsn: str) -> None:
    dest = destination("Alpha")
    migrate_db(settings, [dest])
    cfg = settings.replace(snapshot_sec=60.0)
    conn = await asyncpg.connect(db_dsn)
    try:
        await insert_activities(conn, dest.slug, [cash(-60, "CSD", "1000")], notify=False)
        for minute in (0, 1, 5):
            await conn.execute(f"INSERT INTO equity_full_{dest.slug} (ts, equity, source) VALUES ($1, 7, 'live')",
                               T + timedelta(minutes=minute))

        written = await refill_snapshots(cfg, dest, progress=False)

        rows = await conn.fetch(f"SELECT ts, equity, source FROM equity_full_{dest.slug} ORDER BY ts")
        assert written == 3
        assert [(r["ts"] - T, r["equity"], r["source"]) for r in rows] == [
            (timedelta(minutes=0), Decimal(7), "live"), (timedelta(minutes=1), Decimal(7), "live"),
            (timedelta(minutes=2), Decimal(1000), "refill"), (timedelta(minutes=3), Decimal(1000), "refill"),
            (timedelta(minutes=4), Decimal(1000), "refill"), (timedelta(minutes=5), Decimal(7), "live")]
    finally:
        await conn.close()


async def test_cli_rebuild_equity_runs_with_a_progress_bar(settings: Settings, db_dsn: str, tmp_path: Path) -> None:
    dest_file = tmp_path / "destinations.toml"
    dest_file.write_text('[[destinations]]\nname = "Alpha"\nkey_id = "PKTESTKEY0001"\nsecret_key = "s3cr3t"\n'
                         'base_url = "http://127.0.0.1:9"\n')
    migrate_db(settings, [destination("Alpha")])
    conn = await asyncpg.connect(db_dsn)
    await insert_activities(conn, "alpha", [cash(0, "CSD", "500"), fill(1, "AAPL", "buy", "1", "100")], notify=False)
    env = {"PATH": "/usr/bin:/bin", "COLDHARBOUR_ENV_FILE": str(tmp_path / "no.env"),
           "POSTGRESQL_LIVE_CONN_STRING": db_dsn, "DESTINATIONS_FILE": str(dest_file),
           "DESTINATIONS_LOCAL_FILE": str(tmp_path / "none.toml"), "DATA_DIR": str(tmp_path / "data")}
    try:
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "workers", "rebuild-equity", "--destination", "Alpha", "--since",
                             "2026-01-05"], cwd=ROOT, env=env, capture_output=True,
            text=True, timeout=120, check=False)
        first = await conn.fetchrow("SELECT equity, source FROM equity_full_alpha ORDER BY ts LIMIT 1")
    finally:
        await conn.close()

    assert done.returncode == 0, done.stderr[-2000:]
    assert "rebuild-equity alpha [" in done.stderr  # the progress bar
    assert (first["equity"], first["source"]) == (Decimal(500), "rebuild")
