"""Matching engine and accounting, in-process (no sockets): fills, legs, flips, and the replay invariant."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.bot import STYLES, Bot
from simulator.engine import Account, Engine, OrderError
from simulator.history import ManualClock, generate_history
from simulator.market import Market, SessionCalendar

START = datetime(2026, 6, 2, 15, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def calendar() -> SessionCalendar:
    return SessionCalendar(date(2026, 1, 1), date(2026, 12, 31))


def make_engine(calendar: SessionCalendar, *, seed: int = 1, accounts: int = 1, fees: bool = False, liquidity: int = 25_000):
    clock = ManualClock(START)
    eng = Engine(Market(seed=seed), calendar, now=clock, always_open=True, fees=fees, liquidity_notional=Decimal(liquidity))
    events: list[tuple[str, dict]] = []
    eng.on_event = lambda acct, data: events.append((acct.name, data))
    for i in range(accounts):
        eng.add_account(
            Account(name=f"a{i}", key_id=f"K{i}", secret_key=f"S{i}", id=f"00000000-0000-0000-0000-00000000000{i}",
                    account_number=f"PA{i}", created_at=START - timedelta(days=90), style=STYLES[i % 3])
        )
    return eng, clock, events


def step(eng: Engine, clock: ManualClock, seconds: float = 60.0) -> None:
    clock.t += timedelta(seconds=seconds)
    eng.market.step(seconds)
    eng.match()


def replay(activities: list[dict]) -> tuple[Decimal, dict[str, Decimal]]:
    """Cash and positions rebuilt from nothing but the activities, as a consumer would."""
    cash = Decimal(0)
    pos: dict[str, Decimal] = defaultdict(Decimal)
    for a in sorted(activities, key=lambda a: a["id"]):
        if a["activity_type"] == "FILL":
            qty = Decimal(a["qty"])
            signed = qty if a["side"] == "buy" else -qty
            cash -= signed * Decimal(a["price"])
            pos[a["symbol"]] += signed
        else:
            cash += Decimal(a["net_amount"])
    return cash, {s: q for s, q in pos.items() if q != 0}


def assert_consistent(eng: Engine, acct: Account) -> None:
    acts = [a.data for a in acct.activities]
    cash, pos = replay(acts)
    assert cash == acct.cash
    assert pos == {s: p.qty for s, p in acct.positions.items()}
    ids = [a.id for a in acct.activities]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    fills_by_order: dict[str, Decimal] = defaultdict(Decimal)
    for a in acts:
        if a["activity_type"] == "FILL":
            fills_by_order[a["order_id"]] += Decimal(a["qty"])
            assert Decimal(a["cum_qty"]) == fills_by_order[a["order_id"]]
    for o in acct.orders.values():
        assert o.filled_qty == fills_by_order.get(o.id, Decimal(0))
    equity = acct.cash + sum(p.qty * eng.market.price(s) for s, p in acct.positions.items())
    assert eng.equity(acct) == equity


def random_order(rng: random.Random, eng: Engine) -> dict:
    symbol = rng.choice(eng.market.symbols)
    price = eng.market.price(symbol)
    side = rng.choice(["buy", "sell"])
    kind = rng.choice(["market", "market", "limit", "stop", "stop_limit", "trailing_stop", "bracket", "oco", "oto", "frac", "notional", "big"])
    off = Decimal(str(round(rng.uniform(-0.01, 0.01), 4)))
    px = str((price * (1 + off)).quantize(Decimal("0.01")))
    qty = str(rng.randint(1, 60))
    tif = rng.choice(["day", "gtc", "ioc", "fok"])
    base = {"symbol": symbol, "side": side, "qty": qty, "time_in_force": tif}
    if kind == "market":
        return {**base, "type": "market"}
    if kind == "big":
        return {**base, "type": "market", "qty": str(int(60_000 / price) + 1)}
    if kind == "limit":
        return {**base, "type": "limit", "limit_price": px}
    if kind == "stop":
        return {**base, "type": "stop", "stop_price": px}
    if kind == "stop_limit":
        return {**base, "type": "stop_limit", "stop_price": px, "limit_price": px}
    if kind == "trailing_stop":
        return {**base, "type": "trailing_stop", "time_in_force": "gtc", "trail_percent": "0.3"}
    if kind == "frac":
        return {**base, "type": "market", "time_in_force": "day", "qty": str(Decimal(rng.randint(1, 9_999)) / 1000)}
    if kind == "notional":
        return {"symbol": symbol, "side": side, "type": "market", "time_in_force": "day", "notional": str(rng.randint(5, 5_000))}
    up, down = price * Decimal("1.004"), price * Decimal("0.996")
    tp, sl = (up, down) if side == "buy" else (down, up)
    legs = {"take_profit": {"limit_price": str(tp.quantize(Decimal("0.01")))}, "stop_loss": {"stop_price": str(sl.quantize(Decimal("0.01")))}}
    if kind == "bracket":
        return {**base, "type": "market", "time_in_force": "gtc", "order_class": "bracket", **legs}
    if kind == "oto":
        return {**base, "type": "market", "time_in_force": "gtc", "order_class": "oto", "stop_loss": legs["stop_loss"]}
    exit_side = side
    tp2, sl2 = (up, down) if exit_side == "sell" else (down, up)
    return {**base, "type": "limit", "time_in_force": "gtc", "order_class": "oco",
            "take_profit": {"limit_price": str(tp2.quantize(Decimal("0.01")))}, "stop_loss": {"stop_price": str(sl2.quantize(Decimal("0.01")))}}


def run_random(calendar: SessionCalendar, seed: int, steps: int) -> tuple[Engine, int]:
    eng, clock, _ = make_engine(calendar, seed=seed, accounts=2, fees=True)
    rng = random.Random(seed)
    for acct in eng.accounts.values():
        eng.cash_activity(acct, "CSD", Decimal(200_000), "deposit")
    submitted = 0
    for i in range(steps):
        for acct in eng.accounts.values():
            if rng.random() < 0.6:
                try:
                    eng.submit(acct, random_order(rng, eng))
                    submitted += 1
                except OrderError:
                    pass
            if acct.open_ids and rng.random() < 0.1:
                o = acct.orders[rng.choice(list(acct.open_ids))]
                if o.is_open:
                    eng.cancel(acct, o)
            if rng.random() < 0.02:
                eng.cash_activity(acct, rng.choice(["DIV", "INT", "FEE", "JNLC", "CSW"]), Decimal(rng.randint(-500, 500)) / 7, "random")
        step(eng, clock, rng.choice([1, 30, 60, 600]))
        if i % 50 == 0:
            for acct in eng.accounts.values():
                assert_consistent(eng, acct)
    return eng, submitted


def test_replaying_activities_reproduces_cash_and_positions_over_a_long_random_run(calendar):
    eng, submitted = run_random(calendar, seed=7, steps=1500)
    assert submitted > 1000
    for acct in eng.accounts.values():
        assert_consistent(eng, acct)
        kinds = {a.data.get("type") for a in acct.activities if a.type == "FILL"}
        assert kinds == {"fill", "partial_fill"}
        assert any(p.qty < 0 for p in acct.positions.values()) or any(
            a.data["side"] == "sell" for a in acct.activities if a.type == "FILL"
        )


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(min_value=0, max_value=10**6))
def test_accounting_invariant_holds_for_any_seed(calendar, seed):
    eng, _ = run_random(calendar, seed=seed, steps=150)
    for acct in eng.accounts.values():
        assert_consistent(eng, acct)


def test_large_order_fills_partially_over_several_ticks(calendar):
    eng, clock, events = make_engine(calendar, liquidity=10_000)
    acct = eng.accounts["a0"]
    eng.cash_activity(acct, "CSD", Decimal(1_000_000))
    eng.market.set_price("AAPL", Decimal("100"))
    order = eng.submit(acct, {"symbol": "AAPL", "qty": "350", "side": "buy", "type": "market", "time_in_force": "gtc"})
    step(eng, clock, 1)
    assert order.status == "partially_filled"
    assert order.filled_qty == 99
    for _ in range(5):
        step(eng, clock, 1)
    assert order.status == "filled"
    assert order.filled_qty == 350
    kinds = [d["event"] for _, d in events if d["order"]["id"] == order.id]
    assert kinds == ["new", "partial_fill", "partial_fill", "partial_fill", "fill"]
    assert_consistent(eng, acct)


def test_fok_cancels_when_liquidity_is_short_and_ioc_keeps_the_part_it_got(calendar):
    eng, clock, _ = make_engine(calendar, liquidity=10_000)
    acct = eng.accounts["a0"]
    eng.cash_activity(acct, "CSD", Decimal(1_000_000))
    eng.market.set_price("MSFT", Decimal("100"))
    fok = eng.submit(acct, {"symbol": "MSFT", "qty": "500", "side": "buy", "type": "market", "time_in_force": "fok"})
    ioc = eng.submit(acct, {"symbol": "MSFT", "qty": "500", "side": "buy", "type": "market", "time_in_force": "ioc"})
    step(eng, clock, 1)
    assert (fok.status, fok.filled_qty) == ("canceled", 0)
    assert ioc.status == "canceled"
    assert 0 < ioc.filled_qty < 500
    assert acct.positions["MSFT"].qty == ioc.filled_qty


def test_position_flip_long_to_short_resets_average_price(calendar):
    eng, clock, _ = make_engine(calendar)
    acct = eng.accounts["a0"]
    eng.cash_activity(acct, "CSD", Decimal(100_000))
    eng.market.set_price("TSLA", Decimal("200"))
    eng.submit(acct, {"symbol": "TSLA", "qty": "10", "side": "buy", "type": "market", "time_in_force": "day"})
    step(eng, clock, 1)
    assert acct.positions["TSLA"].qty == 10
    eng.market.set_price("TSLA", Decimal("210"))
    eng.submit(acct, {"symbol": "TSLA", "qty": "25", "side": "sell", "type": "market", "time_in_force": "day"})
    step(eng, clock, 1)
    pos = acct.positions["TSLA"]
    assert pos.qty == -15
    assert pos.avg_entry_price == eng.market.quotes["TSLA"].bid
    assert_consistent(eng, acct)


def test_bracket_legs_wake_on_entry_fill_and_one_cancels_the_other(calendar):
    eng, clock, events = make_engine(calendar)
    acct = eng.accounts["a0"]
    eng.cash_activity(acct, "CSD", Decimal(100_000))
    eng.market.set_price("NVDA", Decimal("100"))
    parent = eng.submit(acct, {"symbol": "NVDA", "qty": "10", "side": "buy", "type": "market", "time_in_force": "gtc",
                               "order_class": "bracket", "take_profit": {"limit_price": "105"}, "stop_loss": {"stop_price": "95"}})
    tp, sl = (acct.orders[i] for i in parent.leg_ids)
    assert (tp.status, sl.status) == ("held", "held")
    step(eng, clock, 1)
    assert parent.status == "filled"
    assert (tp.status, sl.status) == ("new", "new")
    eng.market.set_price("NVDA", Decimal("94"))
    step(eng, clock, 1)
    assert (tp.status, sl.status) == ("canceled", "filled")
    assert "NVDA" not in acct.positions
    assert [d["event"] for _, d in events if d["order"]["id"] == sl.id] == ["new", "fill"]
    assert_consistent(eng, acct)


def test_trailing_stop_follows_the_high_water_mark(calendar):
    eng, clock, _ = make_engine(calendar)
    acct = eng.accounts["a0"]
    eng.cash_activity(acct, "CSD", Decimal(100_000))
    eng.market.set_price("AMZN", Decimal("100"))
    order = eng.submit(acct, {"symbol": "AMZN", "qty": "1", "side": "sell", "type": "trailing_stop", "time_in_force": "gtc", "trail_price": "2"})
    assert order.stop_price == Decimal("98")
    eng.market.set_price("AMZN", Decimal("110"))
    step(eng, clock, 1)
    assert order.hwm == Decimal("110")
    assert order.stop_price == Decimal("108")
    assert order.status == "new"
    eng.market.set_price("AMZN", Decimal("107.5"))
    step(eng, clock, 1)
    assert order.status == "filled"


@pytest.mark.parametrize(
    ("req", "status"),
    [
        ({"symbol": "NOPE", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"}, 422),
        ({"symbol": "AAPL", "side": "buy", "type": "market", "time_in_force": "day"}, 422),
        ({"symbol": "AAPL", "qty": "1", "notional": "5", "side": "buy", "type": "market", "time_in_force": "day"}, 422),
        ({"symbol": "AAPL", "qty": "1", "side": "buy", "type": "limit", "time_in_force": "day"}, 422),
        ({"symbol": "AAPL", "qty": "0.5", "side": "buy", "type": "stop", "stop_price": "1", "time_in_force": "day"}, 422),
        ({"symbol": "AAPL", "qty": "1", "side": "buy", "type": "limit", "limit_price": "1.001", "time_in_force": "day"}, 422),
        ({"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day", "order_class": "bracket"}, 422),
        ({"symbol": "AAPL", "qty": "100000", "side": "buy", "type": "market", "time_in_force": "day"}, 403),
    ],
)
def test_invalid_orders_are_refused(calendar, req, status):
    eng, _, _ = make_engine(calendar)
    acct = eng.accounts["a0"]
    eng.cash_activity(acct, "CSD", Decimal(10_000))
    with pytest.raises(OrderError) as info:
        eng.submit(acct, req)
    assert info.value.status == status
    assert not acct.orders


def test_day_orders_expire_at_the_close_when_following_nyse_hours(calendar):
    eng, clock, _ = make_engine(calendar)
    eng.always_open = False
    acct = eng.accounts["a0"]
    eng.cash_activity(acct, "CSD", Decimal(10_000))
    clock.t = datetime(2026, 6, 6, 15, 0, tzinfo=UTC)  # a Saturday
    queued = eng.submit(acct, {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"})
    assert queued.status == "accepted"
    assert eng.match() == 0
    clock.t = datetime(2026, 6, 8, 14, 31, tzinfo=UTC)  # Monday open
    eng.activate_accepted(clock.t)
    eng.match()
    assert queued.status == "filled"
    resting = eng.submit(acct, {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "limit", "limit_price": "1", "time_in_force": "day"})
    eng.expire_day_orders(datetime(2026, 6, 8, 20, 0, tzinfo=UTC))
    assert resting.status == "expired"


def test_history_generator_is_deterministic_and_complete(calendar):
    # (Its speed is measured, not asserted: a timed assertion fails on a loaded machine. 3 accounts ×
    # 60 sessions take about 0.7 s on an idle core; see docs/simulator.md for the demo's figures.)
    def build():
        eng, _, _ = make_engine(calendar, seed=3, accounts=3)
        generate_history(eng, eng.accounts.values(), days=60, end=datetime(2026, 11, 20, tzinfo=UTC), seed=3,
                         deposits={n: Decimal(100_000) for n in eng.accounts})
        return eng, None

    eng, _ = build()
    for acct in eng.accounts.values():
        assert_consistent(eng, acct)
        types = {a.type for a in acct.activities}
        assert {"FILL", "CSD", "CSW", "DIV", "FEE", "INT", "JNLC"} <= types
        classes = {o.order_class for o in acct.orders.values()}
        fills = [a for a in acct.activities if a.type == "FILL"]
        assert len(fills) > 100
        assert len({s.ts.date() for s in acct.snapshots}) >= 60
        if acct.style == "bracket":
            assert "bracket" in classes
    assert any(a.data["type"] == "partial_fill" for acct in eng.accounts.values() for a in acct.activities if a.type == "FILL")
    again, _ = build()
    for name in eng.accounts:
        a1 = [(a.data.get("price"), a.data.get("qty"), a.data.get("net_amount")) for a in eng.accounts[name].activities]
        a2 = [(a.data.get("price"), a.data.get("qty"), a.data.get("net_amount")) for a in again.accounts[name].activities]
        assert a1 == a2


def test_bot_places_orders_for_every_style(calendar):
    eng, clock, _ = make_engine(calendar, accounts=3)
    for acct in eng.accounts.values():
        eng.cash_activity(acct, "CSD", Decimal(100_000))
    bot = Bot(eng, seed=5)
    for _ in range(300):
        for acct in eng.accounts.values():
            bot.act(acct)
        step(eng, clock, 30)
    assert bot.orders_placed > 300
    for acct in eng.accounts.values():
        assert_consistent(eng, acct)
