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
import uuid
from datetime import timedelta
from decimal import ROUND_DOWN, Decimal

from simulator.engine import Engine
from simulator.instruments import AssetClass
from simulator.models import Account, Order
from simulator.wire import CENT, OrderError

STYLES = ("day_trader", "swing", "bracket")
# Strategy tags: every order's client_order_id starts with its strategy's prefix (Cold Harbour attributes by it).
STRATEGY_PREFIX = {"day_trader": "momo-", "swing": "mr_swing-", "bracket": "momo-brk-", "crypto": "cx_trend-",
                   "options": "opt_income-", "mixed": "momo-"}


def style_for(name: str, index: int) -> str:
    """An account's trading style: ``crypto`` or ``options`` when its name says so, else the equity
    styles in turn."""
    lowered = name.lower()
    if "crypto" in lowered:
        return "crypto"
    if "option" in lowered:
        return "options"
    return STYLES[index % len(STYLES)]


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
        req.setdefault("client_order_id", f"{STRATEGY_PREFIX.get(acct.style, 'momo-')}{uuid.UUID(int=self.rng.getrandbits(128)).hex[:20]}")
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
            return self._tidy(acct, stale[0])
        now = eng.now()
        free = [s for s in acct.positions if s not in busy and self._old_enough(acct, s) and s in eng.market.quotes
                and eng.instrument(s).asset_class is not AssetClass.US_OPTION and eng.tradable(eng.instrument(s), now)]
        trading = len([s for s in acct.positions if s not in acct.core])  # core holdings do not count
        if free and (trading >= self.max_positions or rng.random() < 0.45):
            return self._close(acct, rng.choice(sorted(free)))
        if trading >= self.max_positions:
            return False
        if acct.style == "crypto":
            return self._open_crypto(acct, busy)
        if acct.style == "options" and rng.random() < 0.5:
            return self._open_option(acct, busy)
        candidates = [s for s in eng.market.of_class(AssetClass.US_EQUITY) if s not in busy and s not in acct.positions
                      and eng.tradable(eng.instrument(s), now)]
        if not candidates:
            return False
        symbol = rng.choice(candidates)
        style = acct.style if acct.style in STYLES else rng.choice(STYLES)
        if acct.style == "options":
            style = "day_trader"
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
        tif = "gtc" if self.engine.instrument(symbol).asset_class is AssetClass.CRYPTO else "day"
        req: dict[str, object] = {"symbol": symbol, "qty": str(qty), "side": side, "type": "market", "time_in_force": tif}
        if acct.style == "swing" and qty == qty.to_integral_value() and self.rng.random() < 0.5:
            price = self.engine.market.price(symbol)
            req.update(type="limit", time_in_force="gtc", limit_price=str(price.quantize(CENT)))
        return self._submit(acct, req)

    def _tidy(self, acct: Account, order: Order) -> bool:
        """A stale resting limit is repriced to the market (a replace) or canceled."""
        if acct.style == "swing" and order.status == "new" and order.filled_qty == 0 and self.rng.random() < 0.4:
            price = self.engine.market.price(order.symbol)
            cid = f"{STRATEGY_PREFIX['swing']}{uuid.UUID(int=self.rng.getrandbits(128)).hex[:20]}"
            try:
                self.engine.replace(acct, order, {"limit_price": str(price.quantize(CENT)), "client_order_id": cid})
                return True
            except OrderError:
                pass
        self.engine.cancel(acct, order)
        return False

    def _open_crypto(self, acct: Account, busy: set[str]) -> bool:
        """Long-only coin trades around the clock (fractional quantities, gtc)."""
        eng, rng = self.engine, self.rng
        pairs = [s for s in eng.market.of_class(AssetClass.CRYPTO) if s not in busy and s not in acct.positions]
        if not pairs:
            return False
        symbol = rng.choice(pairs)
        budget = min(eng.equity(acct) * Decimal(repr(rng.uniform(0.05, 0.2))), max(Decimal(0), acct.cash) * Decimal("0.9"))
        qty = (budget / eng.market.price(symbol)).quantize(Decimal("0.0001"), ROUND_DOWN)
        if qty <= 0:
            return False
        if rng.random() < 0.3:
            limit = (eng.market.price(symbol) * Decimal("0.999")).quantize(CENT)
            return self._submit(acct, {"symbol": symbol, "qty": str(qty), "side": "buy", "type": "limit",
                                       "time_in_force": "gtc", "limit_price": str(limit)})
        return self._submit(acct, {"symbol": symbol, "qty": str(qty), "side": "buy", "type": "market", "time_in_force": "gtc"})

    def _open_option(self, acct: Account, busy: set[str]) -> bool:
        """Buy 1–3 near-the-money weeklies, or write a covered call on 100 shares held; held to expiry."""
        from simulator.events import list_chain

        eng, rng = self.engine, self.rng
        now = eng.now()
        underlyings = [u for u in ("AAPL", "SPY", "MSFT") if u in eng.market.quotes]
        if not underlyings or not eng.calendar.is_open(now) and not eng.always_open:
            return False
        held_options = [s for s in acct.positions if eng.instrument(s).asset_class is AssetClass.US_OPTION]
        if len(held_options) >= 3:
            return False
        under = rng.choice(underlyings)
        chain = [s for s in list_chain(eng, under, now, weeks=2) if s not in busy and s not in acct.positions
                 and eng.instrument(s).expiry != now.date()]
        if not chain:
            return False
        covered = acct.positions.get(under)
        if covered is not None and covered.qty >= 100 and rng.random() < 0.5:
            calls = [s for s in chain if s[len(under) + 6] == "C"]
            return bool(calls) and self._submit(acct, {"symbol": rng.choice(calls), "qty": "1", "side": "sell",
                                                       "type": "market", "time_in_force": "day"})
        return self._submit(acct, {"symbol": rng.choice(chain), "qty": str(rng.randint(1, 3)), "side": "buy",
                                   "type": "market", "time_in_force": "day"})

    def flatten(self, acct: Account) -> None:
        """Close every position that no open order already works on (end-of-day for day traders)."""
        busy = {acct.orders[i].symbol for i in acct.open_ids} | acct.core
        for symbol in sorted(acct.positions):
            if symbol not in busy and self.engine.instrument(symbol).is_equity:
                self._close(acct, symbol)


