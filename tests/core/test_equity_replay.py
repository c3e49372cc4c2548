"""Replaying stored activities into snapshots: exact cash, deposits and realized P&L."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from core.equity_replay import EquityReplay, replay_points
from core.fifo import cash_flow_pl
from core.records import ActivityRecord, Fill

T = datetime(2026, 1, 6, 15, 0, tzinfo=UTC)
D = Decimal


def activity(n: int, kind: str, *, symbol: str | None = None, side: str | None = None, qty: str | None = None,
             price: str | None = None, net: str | None = None, parse_error: str | None = None) -> ActivityRecord:
    return ActivityRecord(activity_id=f"a{n:04d}", ts=T + timedelta(minutes=n), activity_type=kind, seq=n,
                          symbol=symbol, side=side, qty=None if qty is None else D(qty),
                          price=None if price is None else D(price), net_amount=None if net is None else D(net),
                          parse_error=parse_error)


def buy(n: int, qty: str, price: str, symbol: str = "SPY") -> ActivityRecord:
    return activity(n, "FILL", symbol=symbol, side="buy", qty=qty, price=price)


def sell(n: int, qty: str, price: str, symbol: str = "SPY") -> ActivityRecord:
    return activity(n, "FILL", symbol=symbol, side="sell", qty=qty, price=price)


@pytest.mark.parametrize(
    ("acts", "baseline", "equity", "cash", "deposits", "realized", "skipped"),
    [
        ([activity(0, "CSD", net="1000"), buy(1, "2", "100")], "0", "1000", "800", "1000", "0", 0),
        ([activity(0, "CSD", net="1000"), buy(1, "2", "100"), sell(2, "1", "120")], "0", "1040", "920", "1000",
         "20", 0),  # the open lot marked at the last fill price (120)
        ([buy(1, "1", "50"), sell(2, "1", "40")], "500", "-10", "-10", "500", "-10", 0),  # baseline: no CSD stored
        ([activity(0, "CSD", net="100"), activity(1, "CSW", net="-40"), activity(2, "DIV", net="3")], "999", "63",
         "63", "60", "0", 0),  # a stored cash flow replaces the baseline
        ([activity(0, "FILL", symbol="SPY", side="buy", qty="1", price="1", parse_error="bad"),
          activity(1, "FILL", symbol=None, side="buy", qty="1", price="1"),
          activity(2, "FILL", symbol="SPY", side="sideways", qty="1", price="1")], "0", "0", "0", "0", "0", 3),
    ],
)
def test_replay_snapshot(acts: list[ActivityRecord], baseline: str, equity: str, cash: str, deposits: str,
                         realized: str, skipped: int) -> None:
    replay = EquityReplay(baseline_deposit=D(baseline))

    (snap,) = replay_points(acts, [T + timedelta(hours=1)], replay)

    assert (snap.equity, snap.cash, snap.net_deposits, snap.realized_pl) == (D(equity), D(cash), D(deposits),
                                                                            D(realized))
    assert replay.skipped == skipped


def test_each_point_sees_only_the_activities_at_or_before_it() -> None:
    acts = [activity(0, "CSD", net="100"), activity(10, "CSD", net="50")]

    snaps = replay_points(acts, [T + timedelta(minutes=m) for m in (0, 5, 10)], EquityReplay())

    assert [s.cash for s in snaps] == [D(100), D(100), D(150)]


@hsettings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 20), st.integers(50, 150)), min_size=1, max_size=30))
def test_replay_realized_pl_equals_cash_flow_once_flat(trades: list[tuple[bool, int, int]]) -> None:
    acts: list[ActivityRecord] = []
    pos = 0
    for i, (is_buy, qty, price) in enumerate(trades):
        acts.append((buy if is_buy else sell)(i, str(qty), str(price)))
        pos += qty if is_buy else -qty
    if pos:
        acts.append((sell if pos > 0 else buy)(len(trades), str(abs(pos)), "100"))
    fills = [Fill(a.activity_id, a.ts, "SPY", a.side, a.qty, a.price) for a in acts]  # type: ignore[arg-type]

    (snap,) = replay_points(acts, [acts[-1].ts], EquityReplay())

    assert snap.realized_pl == cash_flow_pl(fills)
    assert snap.equity == snap.cash == cash_flow_pl(fills)
