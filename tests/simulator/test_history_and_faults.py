"""Portfolio history from the simulator's own ledger (Alpaca's shape, read by alpaca-py), and the
ledger fault knobs that produce each reconciliation cause on purpose."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from alpaca.trading.enums import ActivityType, OrderSide, TimeInForce
from alpaca.trading.requests import GetPortfolioHistoryRequest, MarketOrderRequest

from tests.simulator.conftest import StreamRecorder, wait_for
from tests.simulator.test_alpaca_shapes import acts_of

NY = ZoneInfo("America/New_York")
TRANSFERS = {"CSD", "CSW", "JNLC"}


def test_daily_history_has_session_days_cashflows_and_a_base(simulator_factory):
    # Arrange: five sessions of history, NYSE hours (so no weekend points)
    sim = simulator_factory(accounts=1, history_days=5, extra_args=["--nyse-hours"])
    client = sim.trading_client(0)
    acts = acts_of(sim, 0)
    # Act
    hist = client.get_portfolio_history(GetPortfolioHistoryRequest(period="1A", timeframe="1D"))
    raw = client.get("/account/portfolio/history", {"period": "1A", "timeframe": "1D"})
    # Assert: one point per NYSE session, stamped 00:00 New York
    days = [datetime.fromtimestamp(t, NY) for t in hist.timestamp]
    assert all((d.hour, d.minute) == (0, 0) and d.weekday() < 5 for d in days)
    assert len(days) == len(set(days)) >= 5
    assert hist.base_value == 100_000
    assert raw["base_value_asof"]
    assert hist.equity[-1] == float(Decimal(client.get_account().equity))
    # cashflow: per type, the non-trade cash of each point (the base already holds the first deposit)
    initial = next(a for a in acts if a["activity_type"] == "CSD")  # (a date-only fee of day one sorts before it)
    by_type: dict[str, Decimal] = defaultdict(Decimal)
    for a in acts:
        if a is not initial and a["activity_type"] != "FILL" and Decimal(a["net_amount"]):
            by_type[a["activity_type"]] += Decimal(a["net_amount"])
    assert {t.value for t in hist.cashflow} == set(by_type)
    for kind, total in by_type.items():
        assert round(sum(hist.cashflow[ActivityType(kind)]), 2) == float(total)
    transfers = sum(v for k, v in by_type.items() if k in TRANSFERS)
    assert round(hist.profit_loss[-1], 2) == round(hist.equity[-1] - 100_000 - float(transfers), 2)


def test_intraday_history_restarts_profit_each_day(simulator_factory):
    sim = simulator_factory(accounts=1, history_days=2, extra_args=["--nyse-hours"])
    raw = sim.trading_client(0).get("/account/portfolio/history", {"period": "1W", "timeframe": "15Min"})
    stamps = [datetime.fromtimestamp(t, NY) for t in raw["timestamp"]]
    assert stamps
    assert all(t.minute % 15 == 0 for t in stamps)
    assert all((9, 30) <= (t.hour, t.minute) <= (16, 0) for t in stamps)  # market_hours reporting
    first_of_day = [i for i in range(1, len(stamps)) if stamps[i].date() != stamps[i - 1].date()]
    assert first_of_day
    i = first_of_day[0]
    flows = sum(v[i] for k, v in raw["cashflow"].items() if k in TRANSFERS)
    assert round(raw["profit_loss"][i], 2) == round(raw["equity"][i] - raw["equity"][i - 1] - flows, 2)


def test_history_quirk_knobs(sim):
    client = sim.trading_client(0)
    sim.admin("/faults", {"history_null_base": True})
    try:
        assert client.get_portfolio_history(GetPortfolioHistoryRequest(period="1W", timeframe="1H")).base_value is None
    finally:
        sim.admin("/faults", {"history_null_base": False})


def test_a_hidden_then_released_fill_and_a_duplicated_activity(sim):
    name = sim.accounts[1]["name"]
    client = sim.trading_client(1)
    order = sim.admin("/fill", {"account": name, "symbol": "AAPL", "side": "buy", "qty": "2"})
    [fill] = acts_of(sim, 1, activity_types="FILL")
    assert fill["order_id"] == order["id"]
    sim.admin("/faults", {"hide_activity_ids": [fill["id"]]})
    assert acts_of(sim, 1, activity_types="FILL") == []  # a fill not yet ingested: the broker has the position
    assert {p.symbol for p in client.get_all_positions()} == {"AAPL"}
    sim.admin("/faults", {"hide_activity_ids": [], "duplicate_activity_ids": [fill["id"]]})
    assert [a["id"] for a in acts_of(sim, 1, activity_types="FILL")] == [fill["id"], fill["id"]]
    sim.admin("/faults", {"duplicate_activity_ids": []})
    assert len(acts_of(sim, 1, activity_types="FILL")) == 1


def test_delayed_activities_appear_after_the_delay(sim):
    name = sim.accounts[2]["name"]
    sim.admin("/faults", {"delay_activity_s": 3600})
    try:
        sim.admin("/activity", {"account": name, "type": "DIV", "amount": "4.20", "symbol": "AAPL", "qty": "10"})
        assert acts_of(sim, 2, activity_types="DIV") == []
    finally:
        sim.admin("/faults", {"delay_activity_s": 0})
    assert [a["net_amount"] for a in acts_of(sim, 2, activity_types="DIV")] == ["4.2"]


def test_a_dropped_fill_update_and_fees_posted_days_late(sim, recorder):
    name = sim.accounts[3]["name"]
    client = sim.trading_client(3)
    rec: StreamRecorder = recorder(sim, 3).start()
    sim.admin("/faults", {"drop_fill_updates": 1, "fee_post_delay_days": 2})
    order = client.submit_order(MarketOrderRequest(symbol="MSFT", qty=3, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    wait_for(lambda: client.get_order_by_id(order.id).status == "filled", "fill")
    sell = client.submit_order(MarketOrderRequest(symbol="MSFT", qty=3, side=OrderSide.SELL, time_in_force=TimeInForce.DAY))
    got = rec.collect(lambda us: any(u.order.id == sell.id and u.event == "fill" for u in us))
    assert not any(u.order.id == order.id and u.event == "fill" for u in got)  # its fill update never came
    assert sim.admin("/faults")["drop_fill_updates"] == 0
    # fees of today, with a two-day posting delay: today's and tomorrow's end pass, nothing is posted
    today = datetime.now(NY).date()
    truth = sim.admin(f"/ground-truth?account={name}")["accounts"][name]
    assert {a["type"] for a in truth["accrued"]} == {"FEE"}
    sim.admin("/end-of-day", {"through": (today + timedelta(days=1)).isoformat()})
    assert acts_of(sim, 3, activity_types="FEE") == []
    sim.admin("/end-of-day", {"through": (today + timedelta(days=2)).isoformat()})
    fees = acts_of(sim, 3, activity_types="FEE")
    assert {f["date"] for f in fees} == {today.isoformat()}
    assert len(fees) == 2
    sim.admin("/faults", {"fee_post_delay_days": 0})


def test_the_repeated_end_of_day_point_is_the_newest_ended_day(simulator_factory):
    # Arrange: three ended sessions of history
    sim = simulator_factory(accounts=1, history_days=3)
    client = sim.trading_client(0)
    query = {"period": "1M", "timeframe": "1D"}
    before = client.get("/account/portfolio/history", query)
    # Act
    sim.admin("/faults", {"history_repeat_previous_day": True})
    try:
        after = client.get("/account/portfolio/history", query)
    finally:
        sim.admin("/faults", {"history_repeat_previous_day": False})
    # Assert: the last point before today repeats the day before it (as Alpaca's does after 8 PM ET)
    today = datetime.now(NY).date()
    ended = [i for i, ts in enumerate(before["timestamp"]) if datetime.fromtimestamp(ts, NY).date() < today]
    assert len(ended) >= 2
    i = ended[-1]
    assert before["equity"][i] != before["equity"][i - 1]
    assert after["equity"][i] == before["equity"][i - 1]
    assert after["profit_loss"][i] == before["profit_loss"][i - 1]
    assert after["equity"][:i] == before["equity"][:i]
