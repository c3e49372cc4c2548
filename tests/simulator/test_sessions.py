"""Who trades when: US equities in NYSE sessions (extended hours only for orders that ask), crypto 24/7,
in the engine, in the generated history and over HTTP."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from alpaca.trading.enums import OrderSide, OrderStatus, TimeInForce
from alpaca.trading.requests import GetPortfolioHistoryRequest, LimitOrderRequest, MarketOrderRequest

from simulator.bot import STRATEGY_PREFIX, STYLES
from simulator.engine import Engine
from simulator.history import ManualClock, generate_history
from simulator.market import CRYPTO_UNIVERSE, DEFAULT_UNIVERSE, Market, SessionCalendar
from simulator.models import Account
from simulator.wire import OrderError

NY = ZoneInfo("America/New_York")
SATURDAY = datetime(2026, 6, 6, 15, 0, tzinfo=UTC)
MONDAY_PRE_MARKET = datetime(2026, 6, 8, 12, 0, tzinfo=UTC)  # 08:00 New York
MONDAY_OPEN = datetime(2026, 6, 8, 13, 31, tzinfo=UTC)


@pytest.fixture(scope="module")
def calendar() -> SessionCalendar:
    return SessionCalendar(date(2026, 1, 1), date(2026, 12, 31))


def engine_at(calendar: SessionCalendar, t: datetime, styles: tuple[str, ...] = ("day_trader",), *,
              deposit: bool = True) -> tuple[Engine, ManualClock]:
    clock = ManualClock(t)
    eng = Engine(Market({**DEFAULT_UNIVERSE, **CRYPTO_UNIVERSE}, seed=2), calendar, now=clock, always_open=False, fees=True)
    for i, style in enumerate(styles):
        acct = eng.add_account(Account(name=f"a{i}", key_id=f"K{i}", secret_key="s", id=f"00000000-0000-0000-0000-00000000000{i}",
                                       account_number=f"PA{i}", created_at=t - timedelta(days=200), style=style))
        if deposit:
            eng.cash_activity(acct, "CSD", Decimal(100_000), "deposit")
    return eng, clock


def test_equities_wait_for_the_session_while_crypto_fills_on_a_saturday(calendar):
    eng, clock = engine_at(calendar, SATURDAY)
    acct = eng.accounts["a0"]
    stock = eng.submit(acct, {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"})
    coin = eng.submit(acct, {"symbol": "BTC/USD", "qty": "0.01", "side": "buy", "type": "market", "time_in_force": "gtc"})
    eng.match()
    assert (stock.status, coin.status) == ("accepted", "filled")
    clock.t = MONDAY_PRE_MARKET
    eng.activate_accepted(clock.t)
    eng.match()
    assert stock.status == "accepted"  # a regular-hours order waits for the open
    clock.t = MONDAY_OPEN
    eng.activate_accepted(clock.t)
    eng.match()
    assert stock.status == "filled"


def test_extended_hours_limit_orders_trade_pre_market_and_expire_at_eight_pm(calendar):
    eng, clock = engine_at(calendar, MONDAY_PRE_MARKET)
    acct = eng.accounts["a0"]
    price = eng.market.price("MSFT")
    early = eng.submit(acct, {"symbol": "MSFT", "qty": "2", "side": "buy", "type": "limit", "time_in_force": "day",
                              "limit_price": str(price + 5), "extended_hours": True})
    late = eng.submit(acct, {"symbol": "MSFT", "qty": "2", "side": "buy", "type": "limit", "time_in_force": "day",
                             "limit_price": "1.00", "extended_hours": True})
    eng.match()
    assert early.status == "filled"
    assert late.status == "new"
    eng.expire_day_orders(datetime(2026, 6, 8, 20, 0, tzinfo=UTC), extended=False)
    assert late.status == "new"  # the 16:00 close leaves extended-hours orders working
    eng.expire_day_orders(datetime(2026, 6, 9, 0, 0, tzinfo=UTC), extended=True)
    assert late.status == "expired"
    with pytest.raises(OrderError, match="extended hours"):
        eng.submit(acct, {"symbol": "MSFT", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day", "extended_hours": True})


def test_history_trades_equities_only_in_sessions_and_crypto_around_the_clock(calendar):
    eng, _ = engine_at(calendar, datetime(2026, 11, 20, tzinfo=UTC), styles=(*STYLES, "crypto"), deposit=False)
    generate_history(eng, eng.accounts.values(), days=25, end=datetime(2026, 11, 20, tzinfo=UTC), seed=4,
                     deposits={n: Decimal(100_000) for n in eng.accounts}, corporate_actions=True)
    equity_fills, crypto_off_hours = 0, 0
    for acct in eng.accounts.values():
        for a in acct.activities:
            if a.type != "FILL":
                continue
            ts = datetime.fromisoformat(a.data["transaction_time"])
            if "/" in a.data["symbol"]:
                crypto_off_hours += calendar.session_at(ts) is None
            else:
                equity_fills += 1
                assert calendar.session_at(ts) is not None, (a.data["symbol"], ts.astimezone(NY))
    assert equity_fills > 100
    assert crypto_off_hours > 10  # nights and weekends
    daily: dict[str, set[date]] = defaultdict(set)
    for acct in eng.accounts.values():
        for s in acct.snapshots[1:]:
            daily[acct.style].add(s.ts.astimezone(NY).date())
    weekend = {d for d in daily["crypto"] if d.weekday() >= 5}
    assert weekend, "crypto snapshots cover weekends"
    assert not {d for d in daily["day_trader"] if d.weekday() >= 5 and calendar.is_session_day(d)}


def test_over_http_equity_orders_follow_the_clock_and_crypto_does_not(simulator_factory):
    sim = simulator_factory(accounts=1, extra_args=["--nyse-hours", "--style", "sim-1=crypto"])
    client = sim.trading_client(0)
    is_open = client.get_clock().is_open
    stock = client.submit_order(MarketOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    assert stock.status == (OrderStatus.NEW if is_open else OrderStatus.ACCEPTED)
    coin = client.submit_order(LimitOrderRequest(symbol="ETH/USD", qty=0.5, side=OrderSide.BUY, time_in_force=TimeInForce.GTC,
                                                 limit_price=1))
    assert coin.status == OrderStatus.NEW
    hist = client.get_portfolio_history(GetPortfolioHistoryRequest(period="1W", timeframe="1D"))
    assert all(datetime.fromtimestamp(t, NY).time().hour == 0 for t in hist.timestamp)


def test_bot_orders_carry_strategy_prefixes_including_brackets_and_replacements(calendar):
    eng, _ = engine_at(calendar, datetime(2026, 11, 20, tzinfo=UTC), styles=(*STYLES, "crypto", "options"), deposit=False)
    generate_history(eng, eng.accounts.values(), days=15, end=datetime(2026, 11, 20, tzinfo=UTC), seed=8,
                     deposits={n: Decimal(100_000) for n in eng.accounts})
    seen: dict[str, set[str]] = defaultdict(set)
    for acct in eng.accounts.values():
        prefix = STRATEGY_PREFIX[acct.style]
        for o in acct.orders.values():
            if o.parent_id is None:  # legs get the broker's own ids (Alpaca ignores a leg's client_order_id)
                assert o.client_order_id.startswith((prefix, "hold-")), (acct.style, o.client_order_id)
                seen[acct.style].add(o.order_class if o.replaces is None else "replacement")
    assert "bracket" in seen["bracket"]
    assert "replacement" in seen["swing"]
    assert {"simple"} <= seen["crypto"]
    assert {"simple"} <= seen["options"]
    assert any(len(o.symbol) > 10 for o in eng.accounts["a4"].orders.values())  # the options account traded contracts
