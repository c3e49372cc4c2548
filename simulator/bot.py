"""Trading bots and the history generator.

A :class:`Bot` places orders the way a few typical strategies would (day trading with market
orders, swing trading with limit orders, bracket orders with take-profit/stop-loss legs, the odd
large order that fills in pieces, shorts). :func:`generate_history` runs the same bots through the
real matching engine in fast-forward over the last N NYSE sessions, so the history is made of the
same orders, fills and activities a live run would produce, plus deposits, a withdrawal, a journal,
dividends, fees and interest.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal

from simulator.engine import ZERO, Account, Engine, OrderError
from simulator.market import CENT

STYLES = ("day_trader", "swing", "bracket")
HISTORY_STEP_S = 300
HISTORY_MIN_HOLD_S = {"day_trader": 1_800.0, "swing": 86_400.0, "bracket": 3_600.0}  # fast-forward resolution: one matching pass per 5 simulated minutes
DIVIDEND_PER_SHARE = {"AAPL": "0.25", "MSFT": "0.83", "JPM": "1.25", "SPY": "1.74", "QQQ": "0.68", "GOOGL": "0.20"}


class ManualClock:
    """A settable ``now()`` for fast-forward runs."""

    def __init__(self, start: datetime) -> None:
        self.t = start

    def __call__(self) -> datetime:
        return self.t


class Bot:
    """Places plausible orders for accounts; every choice comes from one seeded RNG."""

    def __init__(self, engine: Engine, seed: int, *, max_positions: int = 5, min_hold_s: dict[str, float] | None = None) -> None:
        self.engine = engine
        self.rng = random.Random(f"bot:{seed}")
        self.max_positions = max_positions
        self.min_hold_s = min_hold_s or {}
        """Per style: simulated seconds a position is held at least before the bot closes it."""
        self.orders_placed = 0

    def _old_enough(self, acct: Account, symbol: str) -> bool:
        pos = acct.positions[symbol]
        hold = self.min_hold_s.get(acct.style, 0.0)
        return pos.opened_at is None or (self.engine.now() - pos.opened_at).total_seconds() >= hold

    def _qty(self, acct: Account, symbol: str, frac: float) -> Decimal:
        price = self.engine.market.price(symbol)
        budget = min(self.engine.equity(acct) * Decimal(repr(frac)), self.engine.buying_power(acct) * Decimal("0.9"))
        return max(Decimal(0), (budget / price).to_integral_value(ROUND_DOWN))

    def _submit(self, acct: Account, req: dict[str, object]) -> bool:
        try:
            self.engine.submit(acct, req)
        except OrderError:
            return False
        self.orders_placed += 1
        return True

    def act(self, acct: Account) -> bool:
        """One decision for ``acct``: open, close or tidy up. Returns whether an order was placed."""
        eng, rng = self.engine, self.rng
        busy = {eng_order.symbol for eng_order in (acct.orders[i] for i in acct.open_ids)} | acct.core
        # Tidy: cancel one stale resting entry order so books do not fill up with limits.
        stale = [
            acct.orders[i]
            for i in acct.open_ids
            if acct.orders[i].parent_id is None
            and acct.orders[i].order_class == "simple"
            and acct.orders[i].type == "limit"
            and eng.now() - acct.orders[i].created_at > timedelta(hours=4)
        ]
        if stale:
            eng.cancel(acct, stale[0])
            return False
        free = [s for s in acct.positions if s not in busy and self._old_enough(acct, s)]
        if free and (len(acct.positions) >= self.max_positions or rng.random() < 0.45):
            return self._close(acct, rng.choice(sorted(free)))
        if len(acct.positions) >= self.max_positions:
            return False
        candidates = [s for s in eng.market.symbols if s not in busy and s not in acct.positions]
        if not candidates:
            return False
        symbol = rng.choice(candidates)
        style = acct.style if acct.style in STYLES else rng.choice(STYLES)
        side = "buy" if rng.random() < 0.7 else "sell"
        big = rng.random() < 0.06
        qty = self._qty(acct, symbol, 0.6 if big else rng.uniform(0.03, 0.12))
        if qty < 1:
            return False
        price = eng.market.price(symbol)
        if style == "bracket":
            up, down = Decimal(repr(rng.uniform(0.008, 0.03))), Decimal(repr(rng.uniform(0.006, 0.02)))
            if side == "buy":
                tp, sl = price * (1 + up), price * (1 - down)
            else:
                tp, sl = price * (1 - up), price * (1 + down)
            return self._submit(
                acct,
                {
                    "symbol": symbol,
                    "qty": str(qty),
                    "side": side,
                    "type": "market",
                    "time_in_force": "gtc",
                    "order_class": "bracket",
                    "take_profit": {"limit_price": str(tp.quantize(CENT))},
                    "stop_loss": {"stop_price": str(sl.quantize(CENT))},
                },
            )
        if style == "swing" and not big:
            offset = Decimal(repr(rng.uniform(0.0, 0.004)))
            limit = price * (1 - offset) if side == "buy" else price * (1 + offset)
            return self._submit(
                acct,
                {"symbol": symbol, "qty": str(qty), "side": side, "type": "limit", "time_in_force": "gtc", "limit_price": str(limit.quantize(CENT))},
            )
        if rng.random() < 0.1 and side == "buy" and not big:
            notional = (price * qty).quantize(CENT)
            return self._submit(acct, {"symbol": symbol, "notional": str(notional), "side": side, "type": "market", "time_in_force": "day"})
        return self._submit(acct, {"symbol": symbol, "qty": str(qty), "side": side, "type": "market", "time_in_force": "gtc"})

    def _close(self, acct: Account, symbol: str) -> bool:
        pos = acct.positions[symbol]
        side = "sell" if pos.qty > 0 else "buy"
        qty = abs(pos.qty)
        req: dict[str, object] = {"symbol": symbol, "qty": str(qty), "side": side, "type": "market", "time_in_force": "day"}
        if acct.style == "swing" and qty == qty.to_integral_value() and self.rng.random() < 0.5:
            price = self.engine.market.price(symbol)
            req.update(type="limit", time_in_force="gtc", limit_price=str(price.quantize(CENT)))
        return self._submit(acct, req)

    def flatten(self, acct: Account) -> None:
        """Close every position that no open order already works on (end-of-day for day traders)."""
        busy = {acct.orders[i].symbol for i in acct.open_ids} | acct.core
        for symbol in sorted(acct.positions):
            if symbol not in busy:
                self._close(acct, symbol)


def generate_history(
    engine: Engine,
    accounts: Iterable[Account],
    *,
    days: int,
    end: datetime,
    seed: int,
    deposits: dict[str, Decimal],
    actions_per_day: float = 6.0,
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
        steps_per_session = 78
        p_act = actions_per_day / steps_per_session
        for day, (open_ts, close_ts) in enumerate(sessions):
            clock.t = open_ts
            if day:
                engine.market.gap()
            engine.activate_accepted(open_ts)
            _daily_cash_events(engine, accts, day, n, rng, open_ts)
            if day == 0:
                _buy_core_holding(engine, accts)
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
            engine.last_close = {s: engine.market.price(s) for s in engine.market.symbols}
            for acct in accts:
                engine.snapshot(acct, close_ts)
                acct.last_equity = engine.equity(acct)
        return clock.t
    finally:
        engine.now = live_now
        engine.always_open = always_open


def _buy_core_holding(engine: Engine, accts: list[Account]) -> None:
    """A long-term ETF position (20% of equity) that earns the dividends."""
    symbol = "SPY" if "SPY" in engine.market.quotes else engine.market.symbols[0]
    for acct in accts:
        qty = (engine.equity(acct) * Decimal("0.2") / engine.market.price(symbol)).to_integral_value(ROUND_DOWN)
        if qty >= 1:
            try:
                engine.submit(acct, {"symbol": symbol, "qty": str(qty), "side": "buy", "type": "market", "time_in_force": "gtc"})
            except OrderError:
                continue
            acct.core.add(symbol)


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
