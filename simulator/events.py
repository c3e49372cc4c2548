"""Corporate actions, option events and the session clock's transitions, posted as Alpaca posts them.

Every event is a set of non-trade activities that, replayed with the one rule of the engine
(cash += ``net_amount``; position of ``symbol`` += ``qty``, except for dividends and interest), gives
the positions the broker shows:

* ``SPLIT`` (``activity_sub_type`` ``FSPLIT`` forward / ``RSPLIT`` reverse): the old shares leave
  (``qty`` −N at the old cost per share) and the new ones arrive (``qty`` +N×ratio at cost ÷ ratio);
  a reverse split's fractional remainder of a whole-share holding is paid out as cash in lieu
  (``CIL``: ``qty`` −fraction, ``net_amount`` fraction × the new price).
* ``NC`` (name change): −N of the old symbol, +N of the new one, same cost.
* ``SPIN``: +M shares of the spun-off company at an allocated cost per share (the parent's cost basis is
  split in proportion to the two market values at the spin, which lowers the parent's average price).
* ``MA`` (merger, stock and/or cash): −N of the target (``net_amount`` = the cash part), +N×ratio of
  the acquirer carrying the remaining cost.
* ``REORG`` (reorganisation, stock for stock): −N of the old symbol, +N×ratio of the new one carrying
  the whole cost, one description on both lines. A worthless removal is a ``REORG`` with
  ``activity_sub_type`` ``WRM`` (Alpaca's changelog of 2026-08-27 calls it REORG's only sub-type):
  −N at zero cash, the symbol delisted.
* ``DIV`` with ``DIVNRA``/``DIVWH`` withholding (a negative ``net_amount``, same ``symbol``/``qty``).
* Options at the close of their expiry day: out of the money ``OPEXP`` (``qty`` −position); in the
  money a long is exercised (``OPEXC``) and a short assigned (``OPASN``), each with an ``OPTRD`` that
  delivers or removes 100 shares per contract at the strike (``net_amount`` −qty × strike). Index
  options (``XSP``, ``SPX``…) settle in cash instead: ``OPCSH`` (``qty`` −position, ``net_amount``
  ±100 × intrinsic × contracts), dated like the other end-of-day option events.
* Crypto dust: Alpaca computes a coin fee finer than the 9 decimals an order may carry, so a sale of
  "everything" leaves a remainder no order can sell; ``crypto_dust`` posts such a ``CFEE`` (in the
  coin, date-only) on purpose.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any

from simulator.instruments import AssetClass, Right, occ_symbol
from simulator.models import Account
from simulator.wire import CENT, NY, ZERO, OrderError, fmt

if TYPE_CHECKING:
    from simulator.engine import Engine
    from simulator.server import Simulator


# ------------------------------------------------------------------ the session clock
class SessionWatch:
    """Notices session opens and closes, the end of extended hours and New York midnights."""

    def __init__(self, engine: Engine, now: datetime) -> None:
        self.engine = engine
        self.regular = self._regular(now)
        self.extended = self._extended(now)
        self.day = now.astimezone(NY).date()

    def _regular(self, ts: datetime) -> bool:
        return self.engine.always_open or self.engine.calendar.is_open(ts)

    def _extended(self, ts: datetime) -> bool:
        return self.engine.always_open or self.engine.calendar.is_extended(ts)

    def advance(self, now: datetime, sim: Simulator) -> set[AssetClass]:
        """Run the transitions since the last call; returns the asset classes whose prices move now."""
        regular, extended, day = self._regular(now), self._extended(now), now.astimezone(NY).date()
        if regular and not self.regular:
            self.engine.market.gap()
        elif self.regular and not regular:
            sim.session_closed(now)
        if self.extended and not extended:
            self.engine.expire_day_orders(now, extended=True)
        if day != self.day:
            if self.engine.always_open:
                settle_expiring_options(self.engine, self.day)
            sim.day_ended(self.day, now)
        self.regular, self.extended, self.day = regular, extended, day
        return {AssetClass.CRYPTO, AssetClass.US_EQUITY, AssetClass.US_OPTION} if regular else {AssetClass.CRYPTO}


# ------------------------------------------------------------------ scheduling
@dataclass(order=True, slots=True)
class Pending:
    at: datetime
    seq: int
    kind: str = field(compare=False)
    params: dict[str, Any] = field(compare=False)


class Scheduler:
    """Corporate actions to apply at a simulated time (``POST /admin/corporate-action``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pending: list[Pending] = []
        self.applied: list[dict[str, Any]] = []
        self._seq = 0

    def schedule(self, kind: str, params: dict[str, Any], at: datetime | None) -> dict[str, Any]:
        if kind not in ACTIONS:
            raise OrderError(422, 42200000, f"type must be one of {sorted(ACTIONS)}")
        now = self.engine.now()
        if at is None or at <= now:
            return self._apply(kind, params)
        self._seq += 1
        heapq.heappush(self.pending, Pending(at, self._seq, kind, params))
        return {"type": kind, "scheduled_for": at.isoformat(), "params": params}

    def run_due(self, now: datetime) -> None:
        while self.pending and self.pending[0].at <= now:
            p = heapq.heappop(self.pending)
            self._apply(p.kind, p.params)

    def _apply(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            posted = ACTIONS[kind](self.engine, **params)
        except TypeError as exc:
            raise OrderError(422, 42200000, f"{kind}: {exc}") from None
        result = {"type": kind, "params": params, "activities": posted}
        self.applied.append(result)
        return result


# ------------------------------------------------------------------ corporate actions
def _holders(engine: Engine, symbol: str) -> list[Account]:
    return [a for a in engine.accounts.values() if symbol in a.positions]


def _cancel_orders(engine: Engine, symbol: str) -> None:
    """Open orders on a symbol are canceled by a corporate action (as Alpaca does for GTC orders)."""
    for acct in engine.accounts.values():
        for oid in list(acct.open_ids):
            o = acct.orders[oid]
            if o.symbol == symbol and o.is_open and o.parent_id is None:
                engine.cancel(acct, o)


def _ensure_symbol(engine: Engine, symbol: str) -> str:
    s = engine.resolve_symbol(symbol)
    if s is None:
        raise OrderError(404, 40410000, f"unknown symbol {symbol!r}")
    return s


def split(engine: Engine, symbol: str, new_rate: Any, old_rate: Any = 1) -> int:
    """A ``new_rate``-for-``old_rate`` split (10-for-1 forward; 1-for-30 reverse)."""
    symbol = _ensure_symbol(engine, symbol)
    new, old = Decimal(str(new_rate)), Decimal(str(old_rate))
    if new <= 0 or old <= 0 or new == old:
        raise OrderError(422, 42200000, "new_rate and old_rate must be positive and differ")
    ratio = new / old
    sub = "FSPLIT" if ratio > 1 else "RSPLIT"
    text = f"{symbol} {fmt(new)}-for-{fmt(old)} {'forward' if ratio > 1 else 'reverse'} split"
    _cancel_orders(engine, symbol)
    engine.market.scale(symbol, 1 / ratio)
    engine.market.record_split(symbol, engine.now(), ratio)
    posted = 0
    for acct in _holders(engine, symbol):
        pos = acct.positions[symbol]
        qty, avg, opened = pos.qty, pos.avg_entry_price, pos.opened_at
        new_qty = qty * ratio
        kept = new_qty.to_integral_value(ROUND_DOWN) if qty == qty.to_integral_value() else new_qty
        engine.cash_activity(acct, "SPLIT", ZERO, text, symbol=symbol, qty=-qty, price=avg, sub_type=sub)
        engine.cash_activity(acct, "SPLIT", ZERO, text, symbol=symbol, qty=new_qty, price=avg / ratio, sub_type=sub)
        posted += 2
        if kept != new_qty:
            frac = new_qty - kept
            engine.cash_activity(acct, "CIL", (frac * engine.mark(symbol)).quantize(CENT), f"cash in lieu {symbol}",
                                 symbol=symbol, qty=-frac, price=engine.mark(symbol))
            posted += 1
        if symbol in acct.positions:
            acct.positions[symbol].opened_at = opened
    return posted


def name_change(engine: Engine, old: str, new: str) -> int:
    old = _ensure_symbol(engine, old)
    new = new.strip().upper()
    if engine.resolve_symbol(new) is not None:
        raise OrderError(422, 42200000, f"symbol {new} already exists")
    _cancel_orders(engine, old)
    engine.market.rename(old, new)
    engine.last_close[new] = engine.last_close.pop(old, engine.mark(new))
    posted = 0
    for acct in _holders(engine, old):
        pos = acct.positions[old]
        qty, avg, opened = pos.qty, pos.avg_entry_price, pos.opened_at
        text = f"Name change {old} to {new}"
        engine.cash_activity(acct, "NC", ZERO, text, symbol=old, qty=-qty, price=avg)
        engine.cash_activity(acct, "NC", ZERO, text, symbol=new, qty=qty, price=avg)
        acct.positions[new].opened_at = opened
        posted += 2
    return posted


def spinoff(engine: Engine, parent: str, new: str, ratio: Any, price: Any) -> int:
    """``ratio`` shares of ``new`` per parent share, listed at ``price`` (the parent drops by the value)."""
    parent = _ensure_symbol(engine, parent)
    new, per_share, px = new.strip().upper(), Decimal(str(ratio)), Decimal(str(price))
    before = engine.mark(parent)
    engine.market.add_symbol(new, float(px))
    engine.market.scale(parent, max(Decimal("0.05"), 1 - per_share * px / before))
    engine.last_close[new] = px
    share = min(Decimal("0.95"), per_share * px / before)  # the spun-off part of the parent's value
    posted = 0
    for acct in _holders(engine, parent):
        pos = acct.positions[parent]
        got = pos.qty * per_share
        alloc_price = pos.avg_entry_price * share / per_share
        pos.avg_entry_price = pos.avg_entry_price * (1 - share)
        engine.cash_activity(acct, "SPIN", ZERO, f"Spinoff of {new} from {parent}, {fmt(per_share)} per share",
                             symbol=new, qty=got, price=alloc_price)
        posted += 1
    return posted


def merger(engine: Engine, target: str, acquirer: str, ratio: Any = 0, cash: Any = 0) -> int:
    """Each ``target`` share becomes ``ratio`` ``acquirer`` shares plus ``cash`` dollars; the target is delisted."""
    target, acquirer = _ensure_symbol(engine, target), _ensure_symbol(engine, acquirer)
    per, cash_per = Decimal(str(ratio)), Decimal(str(cash))
    _cancel_orders(engine, target)
    posted = 0
    for acct in _holders(engine, target):
        pos = acct.positions[target]
        qty, avg = pos.qty, pos.avg_entry_price
        text = f"Merger: {target} acquired by {acquirer} ({fmt(per)} shares + ${fmt(cash_per)} per share)"
        engine.cash_activity(acct, "MA", (qty * cash_per).quantize(CENT), text, symbol=target, qty=-qty, price=avg)
        posted += 1
        if per > 0:
            carried = max(ZERO, qty * avg - qty * cash_per) / (qty * per)
            engine.cash_activity(acct, "MA", ZERO, text, symbol=acquirer, qty=qty * per, price=carried)
            posted += 1
    engine.last_close[target] = engine.mark(target)
    engine.market.remove_symbol(target)
    return posted


def reorg(engine: Engine, symbol: str, new: str, ratio: Any = 1) -> int:
    """A reorganisation: each ``symbol`` share becomes ``ratio`` shares of ``new`` (listed now at the
    old price ÷ ratio when it is not traded yet), the whole cost carried; ``symbol`` is delisted."""
    symbol, per = _ensure_symbol(engine, symbol), Decimal(str(ratio))
    if per <= 0:
        raise OrderError(422, 42200000, "ratio must be positive")
    new = engine.resolve_symbol(new) or new.strip().upper()
    if new == symbol:
        raise OrderError(422, 42200000, "the new symbol must differ")
    if new not in engine.market.quotes:
        price = (engine.mark(symbol) / per).quantize(CENT)
        engine.market.add_symbol(new, float(price))
        engine.last_close[new] = price
    _cancel_orders(engine, symbol)
    posted = 0
    for acct in _holders(engine, symbol):
        pos = acct.positions[symbol]
        qty, avg, opened = pos.qty, pos.avg_entry_price, pos.opened_at
        text = f"Reorganization: {symbol} exchanged for {fmt(per)} {new} per share"
        engine.cash_activity(acct, "REORG", ZERO, text, symbol=symbol, qty=-qty, price=avg)
        engine.cash_activity(acct, "REORG", ZERO, text, symbol=new, qty=qty * per, price=avg / per)
        if new in acct.positions and acct.positions[new].qty == qty * per:
            acct.positions[new].opened_at = opened
        posted += 2
    engine.last_close[symbol] = engine.mark(symbol)
    engine.market.remove_symbol(symbol)
    return posted


def worthless(engine: Engine, symbol: str) -> int:
    """A worthless removal (``REORG``/``WRM``): every holder's shares leave for nothing; delisted."""
    symbol = _ensure_symbol(engine, symbol)
    _cancel_orders(engine, symbol)
    posted = 0
    for acct in _holders(engine, symbol):
        pos = acct.positions[symbol]
        engine.cash_activity(acct, "REORG", ZERO, f"Worthless removal of {symbol}", symbol=symbol, qty=-pos.qty,
                             price=ZERO, sub_type="WRM")
        posted += 1
    engine.last_close[symbol] = ZERO
    engine.market.remove_symbol(symbol)
    return posted


def crypto_dust(engine: Engine, account: str, symbol: str, qty: Any) -> int:
    """A coin fee of ``qty`` units (finer than an order's 9 decimals allowed), posted date-only as
    Alpaca posts ``CFEE``: what is left after a sale of the 9-decimal quantity is dust."""
    acct, symbol = engine.accounts[account], _ensure_symbol(engine, symbol)
    inst = engine.instrument(symbol)
    units = Decimal(str(qty))
    if inst.asset_class is not AssetClass.CRYPTO or units <= 0:
        raise OrderError(422, 42200000, "crypto_dust needs a crypto pair and a positive qty")
    pos = acct.positions.get(symbol)
    if pos is None or pos.qty < units:
        raise OrderError(422, 42210000, f"no long {symbol} position of {fmt(units)} to take a fee from")
    day = engine.now().astimezone(NY).date()
    engine.cash_activity(acct, "CFEE", ZERO, "Coin Pair Transaction Fee (Non USD)", symbol=inst.position_symbol,
                         qty=-units, price=engine.mark(symbol), day=day, position_symbol=symbol)
    return 1


def dividend(engine: Engine, symbol: str, per_share: Any, withholding: Any = 0, withholding_type: str = "DIVNRA") -> int:
    """A cash dividend to every long holder, with tax withheld at ``withholding`` (a fraction)."""
    symbol = _ensure_symbol(engine, symbol)
    amount_ps, rate = Decimal(str(per_share)), Decimal(str(withholding))
    if withholding_type not in ("DIVNRA", "DIVWH", "DIVTW"):
        raise OrderError(422, 42200000, "withholding_type must be DIVNRA, DIVWH or DIVTW")
    engine.market.record_dividend(symbol, engine.now(), amount_ps)
    posted = 0
    for acct in _holders(engine, symbol):
        pos = acct.positions[symbol]
        if pos.qty <= 0:
            continue
        gross = (pos.qty * amount_ps).quantize(CENT)
        engine.cash_activity(acct, "DIV", gross, f"Cash DIV @ {fmt(amount_ps)}", symbol=symbol, qty=pos.qty, per_share=amount_ps)
        posted += 1
        if rate > 0:
            engine.cash_activity(acct, withholding_type, -(gross * rate).quantize(CENT),
                                 f"{withholding_type} withholding {fmt(rate * 100)}%", symbol=symbol, qty=pos.qty,
                                 per_share=amount_ps)
            posted += 1
    return posted


# ------------------------------------------------------------------ options
def list_chain(engine: Engine, underlying: str, now: datetime, weeks: int = 2) -> list[str]:
    """Weekly contracts (calls and puts, five strikes around the money) for the next ``weeks`` Fridays."""
    price = engine.mark(underlying)
    step = Decimal(5) if price >= 100 else Decimal(1)
    day = now.astimezone(NY).date()
    fridays = [day + timedelta(days=(4 - day.weekday()) % 7 + 7 * w) for w in range(weeks)]
    out = []
    for expiry in fridays:
        while not engine.calendar.is_session_day(expiry) and expiry.weekday() > 0:
            expiry -= timedelta(days=1)  # a Friday holiday: the weeklies expire on Thursday
        for k in (Decimal("0.95"), Decimal("0.975"), Decimal(1), Decimal("1.025"), Decimal("1.05")):
            strike = (price * k / step).to_integral_value() * step
            for right in (Right.CALL, Right.PUT):
                sym = occ_symbol(underlying, expiry, right, strike)
                if sym not in engine.market.instruments:
                    engine.market.add_symbol(sym, 1.0)
                out.append(sym)
    return out


def _option_delivery(engine: Engine, acct: Account, symbol: str, kind: str, contracts: Decimal) -> int:
    """Exercise (a long) or assignment (a short) of ``contracts`` (>0): the event plus its OPTRD."""
    inst = engine.instrument(symbol)
    assert inst.strike is not None
    assert inst.underlying is not None
    held = acct.positions[symbol].qty
    sign = 1 if held > 0 else -1
    text = {"OPEXC": "Option Exercise", "OPASN": "Option Assignment"}[kind]
    engine.cash_activity(acct, kind, ZERO, text, symbol=symbol, qty=-sign * contracts)
    shares = contracts * inst.multiplier * (1 if inst.right is Right.CALL else -1) * sign
    engine.cash_activity(acct, "OPTRD", -(shares * inst.strike), "Option Trade", symbol=inst.underlying, qty=shares,
                         price=inst.strike)
    return 2


def _option_cash(engine: Engine, acct: Account, symbol: str, contracts: Decimal | None = None) -> int:
    """An index option settles in cash (``OPCSH``): the position closes, the holder of a long receives
    (a short pays) 100 × intrinsic value per contract."""
    inst = engine.instrument(symbol)
    assert inst.underlying is not None
    held = acct.positions[symbol].qty
    n = min(abs(held), contracts) if contracts else abs(held)
    sign = 1 if held > 0 else -1
    intrinsic = inst.intrinsic(engine.mark(inst.underlying))
    cash = (sign * n * inst.multiplier * intrinsic).quantize(CENT)
    engine.cash_activity(acct, "OPCSH", cash, "Option Cash Settlement", symbol=symbol, qty=-sign * n)
    return 1


def cash_settle(engine: Engine, account: str, symbol: str, qty: Any = None) -> int:
    """Settle a cash-settled (index) option position now, long or short, at its intrinsic value."""
    acct, symbol = engine.accounts[account], _ensure_symbol(engine, symbol)
    if not engine.instrument(symbol).cash_settled or symbol not in acct.positions:
        raise OrderError(422, 42210000, f"no cash-settled option position in {symbol}")
    return _option_cash(engine, acct, symbol, Decimal(str(qty)) if qty else None)


def exercise(engine: Engine, account: str, symbol: str, qty: Any = None) -> int:
    """Exercise a long contract now (``POST /v2/positions/{symbol}/exercise`` on Alpaca)."""
    acct, symbol = engine.accounts[account], _ensure_symbol(engine, symbol)
    pos = acct.positions.get(symbol)
    if pos is None or pos.qty <= 0:
        raise OrderError(422, 42210000, f"no long position in {symbol} to exercise")
    if engine.instrument(symbol).cash_settled:
        return _option_cash(engine, acct, symbol, Decimal(str(qty)) if qty else None)
    return _option_delivery(engine, acct, symbol, "OPEXC", Decimal(str(qty)) if qty else pos.qty)


def assign(engine: Engine, account: str, symbol: str, qty: Any = None) -> int:
    """The counterparty exercised: a short contract is assigned now."""
    acct, symbol = engine.accounts[account], _ensure_symbol(engine, symbol)
    pos = acct.positions.get(symbol)
    if pos is None or pos.qty >= 0:
        raise OrderError(422, 42210000, f"no short position in {symbol} to assign")
    if engine.instrument(symbol).cash_settled:
        return _option_cash(engine, acct, symbol, Decimal(str(qty)) if qty else None)
    return _option_delivery(engine, acct, symbol, "OPASN", Decimal(str(qty)) if qty else -pos.qty)


def settle_expiring_options(engine: Engine, day: date) -> int:
    """At the close of an expiry day: ITM longs exercised, ITM shorts assigned, the rest expire."""
    posted = 0
    for acct in engine.accounts.values():
        for symbol in sorted(acct.positions):
            inst = engine.instrument(symbol)
            if inst.asset_class is not AssetClass.US_OPTION or inst.expiry is None or inst.expiry > day:
                continue
            assert inst.underlying is not None
            held = acct.positions[symbol].qty
            in_the_money = inst.intrinsic(engine.mark(inst.underlying)) >= CENT
            if in_the_money and inst.cash_settled:
                posted += _option_cash(engine, acct, symbol)
            elif in_the_money:
                posted += _option_delivery(engine, acct, symbol, "OPEXC" if held > 0 else "OPASN", abs(held))
            else:
                engine.cash_activity(acct, "OPEXP", ZERO, "Option Expiry", symbol=symbol, qty=-held)
                posted += 1
    for symbol in engine.market.of_class(AssetClass.US_OPTION):
        expiry = engine.instrument(symbol).expiry
        if expiry is not None and expiry <= day:
            _cancel_orders(engine, symbol)
            engine.last_close[symbol] = engine.mark(symbol)
            engine.market.remove_symbol(symbol)
    return posted


ACTIONS: dict[str, Callable[..., int]] = {
    "split": split, "name_change": name_change, "spinoff": spinoff, "merger": merger, "dividend": dividend,
    "exercise": exercise, "assign": assign, "reorg": reorg, "worthless": worthless, "cash_settle": cash_settle,
    "crypto_dust": crypto_dust,
}
