"""The history generator: the live bots run through the real matching engine in fast-forward.

Equities trade in the last N NYSE sessions (5-minute steps from the open to the close); crypto
accounts also trade through the nights and weekends between them (hourly steps). Around the trading:
deposits, a withdrawal, a journal, dividends, monthly fees and interest; regulatory and crypto fees
posted after each day's end with the trade date only; option weeklies that expire, are exercised or
are assigned at the close. With ``corporate_actions`` (on for histories of 20 sessions or more):
a 10-for-1 forward split (NVDA), a 1-for-30 reverse split (NKLA), a name change (SQ → XYZ), a spinoff
(GEV from GE), a merger (ANSS into SNPS, stock and cash) and a dividend with withholding (JPM).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal

from simulator import events
from simulator.bot import Bot
from simulator.engine import Engine
from simulator.instruments import AssetClass
from simulator.models import Account
from simulator.wire import CENT, NY, ZERO, OrderError

HISTORY_STEP_S = 300  # fast-forward resolution: one matching pass per 5 simulated minutes
CRYPTO_NIGHT_STEP_S = 3600
HISTORY_MIN_HOLD_S = {"day_trader": 1_800.0, "swing": 86_400.0, "bracket": 3_600.0, "crypto": 7_200.0, "options": 3_600.0}
DIVIDEND_PER_SHARE = {"AAPL": "0.25", "MSFT": "0.83", "JPM": "1.25", "SPY": "1.74", "QQQ": "0.68", "GOOGL": "0.20"}
EVENT_SYMBOLS = {"SQ": 72.0, "GE": 160.0, "ANSS": 330.0, "SNPS": 480.0, "NKLA": 1.2}


class ManualClock:
    """A settable ``now()`` for fast-forward runs."""

    def __init__(self, start: datetime) -> None:
        self.t = start

    def __call__(self) -> datetime:
        return self.t


def _crypto_night(engine: Engine, bot: Bot, accts: list[Account], clock: ManualClock, until: datetime,
                  rng: random.Random) -> None:
    """Between two sessions only crypto moves and trades."""
    crypto = [a for a in accts if a.style == "crypto"]
    if not crypto:
        clock.t = until
        return
    while clock.t + timedelta(seconds=CRYPTO_NIGHT_STEP_S) < until:
        before = clock.t.astimezone(NY).date()
        clock.t += timedelta(seconds=CRYPTO_NIGHT_STEP_S)
        if clock.t.astimezone(NY).date() != before:
            engine.post_accruals(before, ts=clock.t)
        engine.market.step(CRYPTO_NIGHT_STEP_S, {AssetClass.CRYPTO})
        engine.match()
        for acct in crypto:
            if rng.random() < 0.25:
                bot.act(acct)
            if clock.t.minute == 0 and clock.t.hour % 6 == 0:
                engine.snapshot(acct)
    clock.t = until


def _run_session(engine: Engine, bot: Bot, accts: list[Account], clock: ManualClock, open_ts: datetime,
                 close_ts: datetime, rng: random.Random, p_act: float) -> None:
    t = open_ts
    step = 0
    while t < close_ts - timedelta(seconds=HISTORY_STEP_S):
        t = t + timedelta(seconds=HISTORY_STEP_S)
        clock.t = t
        engine.market.step(HISTORY_STEP_S)
        engine.match()
        for acct in accts:
            if rng.random() < p_act:
                bot.act(acct)
        if close_ts - t <= timedelta(minutes=15):
            for acct in accts:
                if acct.style == "day_trader":
                    bot.flatten(acct)
        step += 1
        if step % 6 == 0:
            for acct in accts:
                engine.snapshot(acct)
    clock.t = close_ts - timedelta(seconds=1)
    engine.match()
    engine.expire_day_orders(close_ts - timedelta(milliseconds=500))
    clock.t = close_ts
    events.settle_expiring_options(engine, close_ts.astimezone(NY).date())
    engine.last_close = {s: engine.market.price(s) for s in engine.market.symbols}
    for acct in accts:
        engine.snapshot(acct, close_ts)
        acct.last_equity = engine.equity(acct)


def generate_history(
    engine: Engine,
    accounts: Iterable[Account],
    *,
    days: int,
    end: datetime,
    seed: int,
    deposits: dict[str, Decimal],
    actions_per_day: float = 6.0,
    corporate_actions: bool = False,
) -> datetime:
    """Fast-forward the last ``days`` NYSE sessions before ``end``; returns the last simulated time.

    Replaces ``engine.now`` while it runs and leaves the market at the last session's close.
    """
    accts = list(accounts)
    sessions = engine.calendar.sessions_before(end, days)
    rng = random.Random(f"history:{seed}")
    live_now = engine.now
    clock = ManualClock(sessions[0][0] - timedelta(hours=2) if sessions else end)
    engine.now = clock
    bot = Bot(engine, seed, min_hold_s=HISTORY_MIN_HOLD_S)
    always_open = engine.always_open
    engine.always_open = False
    try:
        for acct in accts:
            engine.cash_activity(acct, "CSD", deposits[acct.name], "initial deposit")
            engine.snapshot(acct)
        n = len(sessions)
        if corporate_actions:
            for sym, price in EVENT_SYMBOLS.items():
                if sym not in engine.market.instruments:
                    engine.market.add_symbol(sym, price)
        p_act = actions_per_day / 78
        for day, (open_ts, close_ts) in enumerate(sessions):
            _crypto_night(engine, bot, accts, clock, open_ts, rng)
            if day:
                engine.market.gap()
            engine.post_accruals(open_ts.astimezone(NY).date() - timedelta(days=1), ts=open_ts)
            engine.activate_accepted(open_ts)
            _daily_cash_events(engine, accts, day, n, rng, open_ts)
            if day == 0:
                _buy_core_holdings(engine, accts, corporate_actions)
            if corporate_actions:
                _corporate_actions(engine, day, n)
            _run_session(engine, bot, accts, clock, open_ts, close_ts, rng, p_act)
        if sessions:
            engine.post_accruals(sessions[-1][1].astimezone(NY).date() - timedelta(days=1), ts=clock.t)
        return clock.t
    finally:
        engine.now = live_now
        engine.always_open = always_open


def _buy_core_holdings(engine: Engine, accts: list[Account], corporate_actions: bool) -> None:
    """A long-term ETF position (20% of equity) that earns the dividends; with corporate actions, small
    holdings in the symbols they touch."""
    symbol = "SPY" if "SPY" in engine.market.quotes else engine.market.symbols[0]
    for acct in accts:
        if acct.style == "crypto":
            continue
        holdings = [(symbol, Decimal("0.2"))]
        if corporate_actions:
            holdings += [(s, Decimal("0.03")) for s in ("NVDA", "NKLA", "SQ", "GE", "ANSS", "JPM") if s in engine.market.quotes]
        if acct.style == "options" and "AAPL" in engine.market.quotes:
            holdings.append(("AAPL", Decimal("0.4")))  # 100+ shares to write covered calls on
        for sym, frac in holdings:
            qty = (engine.equity(acct) * frac / engine.market.price(sym)).to_integral_value(ROUND_DOWN)
            if qty < 1:
                continue
            cid = f"hold-{sym.lower()}-{acct.id[:8]}"  # the buy-and-hold strategy's tag
            try:
                engine.submit(acct, {"symbol": sym, "qty": str(qty), "side": "buy", "type": "market", "time_in_force": "gtc",
                                     "client_order_id": cid})
            except OrderError:
                continue
            acct.core.add(sym)


def _corporate_actions(engine: Engine, day: int, n: int) -> None:
    """One of each corporate action, spread over the history (each on its own session)."""
    plan = {
        n // 6: lambda: events.split(engine, "NVDA", 10, 1),
        n // 3: lambda: events.name_change(engine, "SQ", "XYZ"),
        n // 2: lambda: events.spinoff(engine, "GE", "GEV", Decimal("0.25"), (engine.mark("GE") * Decimal("0.8")).quantize(CENT)),
        (2 * n) // 3: lambda: events.merger(engine, "ANSS", "SNPS", Decimal("0.345"), Decimal("197")),
        (3 * n) // 4: lambda: events.split(engine, "NKLA", 1, 30),
        (5 * n) // 6: lambda: events.dividend(engine, "JPM", Decimal("1.25"), Decimal("0.30"), "DIVNRA"),
    }
    action = plan.get(day)
    if action is not None and day > 0:
        try:
            action()
        except OrderError:
            pass  # a symbol not in this universe (custom --symbols)


def _daily_cash_events(engine: Engine, accts: list[Account], day: int, n: int, rng: random.Random, ts: datetime) -> None:
    """Deposits, a withdrawal, a journal, dividends on held longs, monthly fee and interest."""
    for acct in accts:
        if n >= 3 and day == n // 3:
            engine.cash_activity(acct, "CSD", Decimal(10_000), "ACH deposit", ts=ts)
        if n >= 3 and day == (2 * n) // 3:
            engine.cash_activity(acct, "CSW", Decimal(-5_000), "ACH withdrawal", ts=ts)
        if n >= 2 and day == n // 2:
            engine.cash_activity(acct, "JNLC", Decimal(250), "journal from linked account", ts=ts)
        if day % 21 == 20 or (day == n - 1 and n < 21):
            engine.cash_activity(acct, "FEE", -Decimal(rng.choice(("1.50", "2.00", "4.99"))), "monthly data fee", ts=ts)
            interest = (max(ZERO, acct.cash) * Decimal("0.0035")).quantize(CENT)
            if interest > 0:
                engine.cash_activity(acct, "INT", interest, "interest on cash", ts=ts)
        if day % 10 == min(5, n - 1):
            for symbol, pos in sorted(acct.positions.items()):
                per_share = DIVIDEND_PER_SHARE.get(symbol)
                if per_share and pos.qty > 0:
                    amount = (pos.qty * Decimal(per_share)).quantize(CENT)
                    if amount > 0:
                        engine.cash_activity(
                            acct, "DIV", amount, f"cash dividend {symbol}", ts=ts, symbol=symbol, qty=pos.qty, per_share=Decimal(per_share)
                        )
