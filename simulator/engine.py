"""The matching engine and the accounting of many isolated accounts sharing one market.

Everything here is synchronous and single-threaded: the server calls it from its one asyncio loop,
the history generator calls it in fast-forward with a manual clock. Money and quantities are exact
``Decimal`` inside (rounding happens only when rendered, as Alpaca's JSON has cents); cash moves by
exactly ``qty × price × multiplier`` per fill and by each non-trade activity's ``net_amount``, and
positions by each fill's quantity and each non-trade activity's ``qty`` (except the dividend family,
whose ``qty`` is the shares that earned it), so replaying the activities reproduces cash and
positions exactly.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from simulator import render
from simulator.instruments import AssetClass, Instrument, parse_instrument
from simulator.market import Market, SessionCalendar
from simulator.models import Account, Accrual, Activity, Order, Position, Snapshot
from simulator.orders import TIME_IN_FORCE, build_order, replacement
from simulator.wire import (
    CENT,
    NY,
    QTY_STEP,
    ZERO,
    OrderError,
    activity_id,
    date_activity_id,
    fmt,
    money,
    ny_midnight,
    rfc3339,
    rfc3339_ns_ny,
)

# Transfers: money in or out of the account, not profit (portfolio history's profit_loss omits them).
CASHFLOW_TYPES = frozenset({"CSD", "CSW", "JNLC", "ACATC", "ACATS"})
# Whose ``qty`` is the holding that earned the cash, not a change of position.
INCOME_TYPES = frozenset({"DIV", "DIVCGL", "DIVCGS", "DIVFEE", "DIVFT", "DIVNRA", "DIVROC", "DIVTW", "DIVTXEX",
                          "DIVWH", "INT", "INTNRA", "INTTW", "WH"})
NON_TRADE_TYPES = frozenset({
    "ACATC", "ACATS", "CFEE", "CIL", "CSD", "CSW", "DIV", "DIVCGL", "DIVCGS", "DIVFEE", "DIVFT", "DIVNRA", "DIVROC",
    "DIVTW", "DIVTXEX", "DIVWH", "EXTRD", "FEE", "FXTRD", "INT", "INTNRA", "INTPNL", "INTTW", "JNL", "JNLC", "JNLS",
    "MA", "MEM", "MISC", "NC", "OCT", "OPASN", "OPCA", "OPCSH", "OPEXC", "OPEXP", "OPTRD", "PTC", "REORG", "SPIN",
    "SPLIT", "SWP", "VOF", "WH",
})
SEC_FEE_RATE = Decimal("0.0000278")  # REG: SEC fee per dollar of sale proceeds
TAF_PER_SHARE, TAF_MAX = Decimal("0.000166"), Decimal("8.30")  # FINRA trading activity fee on sales
ORF_PER_CONTRACT = Decimal("0.02685")  # options regulatory fee, per contract traded
CRYPTO_FEE_RATE = Decimal("0.0025")  # 25 bps, Alpaca's first volume tier, in the asset received

EventSink = Callable[[Account, dict[str, Any]], None]


class Engine:
    """Order book and accounting for many isolated accounts sharing one market."""

    def __init__(
        self,
        market: Market,
        calendar: SessionCalendar,
        *,
        now: Callable[[], datetime],
        always_open: bool = True,
        fees: bool = False,
        liquidity_notional: Decimal = Decimal(250_000),
        margin_multiplier: Decimal = Decimal(2),
    ) -> None:
        self.market = market
        self.calendar = calendar
        self._now = now
        market.now = now
        self.always_open = always_open
        self.fees = fees
        self.liquidity_notional = liquidity_notional
        self.margin_multiplier = margin_multiplier
        self.accounts: dict[str, Account] = {}
        self.by_key: dict[str, Account] = {}
        self.on_event: EventSink | None = None
        self.wants_events: Callable[[Account], bool] = lambda acct: True  # skip rendering updates nobody hears
        self.last_close: dict[str, Decimal] = {}  # previous session close per symbol
        self.emit_pending_new = False  # Alpaca sometimes sends pending_new before new
        self._ns_counter = 0

    @property
    def now(self) -> Callable[[], datetime]:
        return self._now

    @now.setter
    def now(self, clock: Callable[[], datetime]) -> None:
        self._now = clock
        self.market.now = clock  # option premiums and bars follow the same clock

    # ------------------------------------------------------------------ accounts and instruments
    def add_account(self, acct: Account) -> Account:
        self.accounts[acct.name] = acct
        self.by_key[acct.key_id] = acct
        return acct

    def instrument(self, symbol: str) -> Instrument:
        return self.market.instruments.get(symbol) or parse_instrument(symbol)

    def resolve_symbol(self, text: str) -> str | None:
        """An order symbol for ``AAPL``, ``btc/usd`` or the position spelling ``BTCUSD``."""
        s = text.strip().upper()
        if s in self.market.quotes:
            return s
        for sym in self.market.symbols:
            if sym.replace("/", "") == s:
                return sym
        return None

    def mark(self, symbol: str) -> Decimal:
        return self.market.price(symbol) if symbol in self.market.quotes else self.last_close.get(symbol, ZERO)

    def market_open(self, ts: datetime | None = None) -> bool:
        """Is the US equity regular session open (``/v2/clock``)?"""
        return self.always_open or self.calendar.is_open(ts or self.now())

    def tradable(self, inst: Instrument, ts: datetime, *, extended_hours: bool = False) -> bool:
        if self.always_open or inst.asset_class is AssetClass.CRYPTO:
            return True
        if extended_hours and inst.is_equity:
            return self.calendar.is_extended(ts)
        return self.calendar.is_open(ts)

    def _stamp(self, acct: Account, ts: datetime) -> datetime:
        """Strictly increasing millisecond timestamps per account, so activity ids sort in event order."""
        ms = int(ts.timestamp() * 1000)
        if ms <= acct.last_ms:
            ms = acct.last_ms + 1
        acct.last_ms = ms
        return datetime.fromtimestamp(ms / 1000, UTC)

    def market_value(self, symbol: str, p: Position) -> Decimal:
        return p.qty * self.mark(symbol) * self.instrument(symbol).multiplier

    def equity(self, acct: Account) -> Decimal:
        return acct.cash + sum((self.market_value(s, p) for s, p in acct.positions.items()), ZERO)

    def buying_power(self, acct: Account, inst: Instrument | None = None) -> Decimal:
        """Reg-T style for equities (2 × equity − gross exposure); crypto and options buy with cash only."""
        if inst is not None and not inst.is_equity:
            return max(ZERO, acct.cash).quantize(CENT, ROUND_DOWN)
        gross = sum((abs(self.market_value(s, p)) for s, p in acct.positions.items()), ZERO)
        return max(ZERO, self.margin_multiplier * self.equity(acct) - gross).quantize(CENT, ROUND_DOWN)

    def snapshot(self, acct: Account, ts: datetime | None = None) -> None:
        acct.snapshots.append(Snapshot(ts or self.now(), self.equity(acct), acct.cashflow, dict(acct.flows)))

    # ------------------------------------------------------------------ non-trade activities
    def cash_activity(
        self,
        acct: Account,
        kind: str,
        amount: Decimal,
        description: str = "",
        *,
        ts: datetime | None = None,
        symbol: str | None = None,
        qty: Decimal | None = None,
        per_share: Decimal | None = None,
        price: Decimal | None = None,
        sub_type: str | None = None,
        day: date | None = None,
        position_symbol: str | None = None,
        status: str = "executed",
        known_only: bool = True,
    ) -> Activity:
        """Post a non-trade activity: move the cash by ``amount`` and, unless it is income, the position
        of ``position_symbol`` (default ``symbol``) by ``qty``. ``day`` makes it a date-only posting
        (its id starts at that day's midnight, whenever it is posted). A ``status`` other than
        ``executed`` (``canceled``) is listed but moves nothing, as on Alpaca; ``known_only=False``
        lets a code Alpaca may add later through (it books its cash, never a position)."""
        if known_only and kind not in NON_TRADE_TYPES:
            raise ValueError(f"unsupported activity type {kind}")
        at = self._stamp(acct, ts or self.now())
        amount = amount.quantize(CENT)  # a posting moves whole cents, the amount its net_amount shows
        if status == "executed":
            self._book_activity(acct, kind, amount, symbol, qty, price, at, position_symbol)
        posted_day = day or at.astimezone(NY).date()
        aid = date_activity_id(posted_day) if day is not None else activity_id(at)
        data: dict[str, Any] = {"id": aid, "account_id": acct.id, "activity_type": kind}
        if sub_type is not None:
            data["activity_sub_type"] = sub_type
        data.update(date=posted_day.isoformat(), net_amount=money(amount), description=description, status=status)
        if symbol is not None:
            data["symbol"] = symbol
        if qty is not None:
            data["qty"] = fmt(qty)
        if price is not None:
            data["price"] = fmt(price)
        if per_share is not None:
            data["per_share_amount"] = fmt(per_share)
        act = Activity(aid, ny_midnight(posted_day) if day is not None else at, kind, data)
        acct.add_activity(act)
        return act

    def _book_activity(self, acct: Account, kind: str, amount: Decimal, symbol: str | None, qty: Decimal | None,
                       price: Decimal | None, at: datetime, position_symbol: str | None) -> None:
        acct.cash += amount
        if amount:
            acct.flows[kind] = acct.flows.get(kind, ZERO) + amount
        if kind in CASHFLOW_TYPES:
            acct.cashflow += amount
        moves_position = kind in NON_TRADE_TYPES and kind not in INCOME_TYPES
        if qty is not None and moves_position and (position_symbol or symbol):
            self.adjust_position(acct, position_symbol or str(symbol), qty, price, at)

    def adjust_position(self, acct: Account, symbol: str, qty: Decimal, price: Decimal | None, at: datetime) -> None:
        """Add ``qty`` (signed) to a position; ``price`` is the new shares' cost when it grows."""
        pos = acct.positions.get(symbol) or Position(symbol, opened_at=at)
        new = pos.qty + qty
        if price is not None and (pos.qty == 0 or (pos.qty > 0) == (qty > 0)) and new != 0:
            pos.avg_entry_price = (abs(pos.qty) * pos.avg_entry_price + abs(qty) * price) / abs(new)
        pos.qty = new
        if new == 0:
            acct.positions.pop(symbol, None)
        else:
            acct.positions[symbol] = pos

    # ------------------------------------------------------------------ end-of-day postings
    def post_accruals(self, through: date, *, ts: datetime | None = None) -> int:
        """Post every accrued fee of a day up to ``through`` (as Alpaca does after the day ends)."""
        posted = 0
        for acct in self.accounts.values():
            keep: list[Accrual] = []
            for a in acct.accruals:
                if a.day > through:
                    keep.append(a)
                    continue
                self.cash_activity(acct, a.kind, a.amount, a.description, ts=ts, symbol=a.symbol, qty=a.qty,
                                   price=a.price, sub_type=a.sub_type, day=a.day,
                                   position_symbol=self.resolve_symbol(a.symbol) if a.qty is not None else None)
                posted += 1
            acct.accruals = keep
        return posted

    def _accrue_fees(self, acct: Account, order: Order, inst: Instrument, qty: Decimal, price: Decimal,
                     at: datetime) -> None:
        """Fees the broker posts at the end of the day: CFEE on every crypto fill; with ``fees``, the
        regulatory FEEs (REG and TAF on sales and short sales, ORF per option contract)."""
        day = at.astimezone(NY).date()
        if inst.asset_class is AssetClass.CRYPTO:
            if order.side == "buy":  # the fee is taken in the coin received
                fee_qty = (qty * CRYPTO_FEE_RATE).quantize(QTY_STEP)
                if fee_qty > 0:
                    acct.accruals.append(Accrual(day, "CFEE", inst.position_symbol, ZERO, -fee_qty, price,
                                                 "Coin Pair Transaction Fee (Non USD)"))
            else:
                fee_usd = max(CENT, (qty * price * CRYPTO_FEE_RATE).quantize(CENT))
                acct.accruals.append(Accrual(day, "CFEE", inst.position_symbol, -fee_usd, None, None,
                                             "Coin Pair Transaction Fee (USD)"))
            return
        if not self.fees:
            return
        if inst.asset_class is AssetClass.US_OPTION:
            orf = max(CENT, (qty * ORF_PER_CONTRACT).quantize(CENT))
            acct.accruals.append(Accrual(day, "FEE", order.symbol, -orf, None, None,
                                         f"ORF fee for {fmt(qty)} contracts on {day}", "ORF"))
        if order.side != "sell":
            return
        proceeds = qty * price * inst.multiplier
        reg = max(CENT, (proceeds * SEC_FEE_RATE).quantize(CENT))
        acct.accruals.append(Accrual(day, "FEE", order.symbol, -reg, None, None,
                                     f"REG fee for proceed of ${money(proceeds)} on {day}", "REG"))
        if inst.is_equity:
            taf = min(TAF_MAX, max(CENT, (qty * TAF_PER_SHARE).quantize(CENT)))
            acct.accruals.append(Accrual(day, "FEE", order.symbol, -taf, None, None,
                                         f"TAF fee for proceed of {fmt(qty)} shares on {day}", "TAF"))

    # ------------------------------------------------------------------ orders
    def submit(self, acct: Account, req: dict[str, Any]) -> Order:
        """Validate and accept an order request (the JSON body alpaca-py posts)."""
        now = self.now()
        order, legs = build_order(self, acct, req, now)
        inst = self.instrument(order.symbol)
        status = "new" if self.tradable(inst, now, extended_hours=order.extended_hours) else "accepted"
        order.status = status
        if order.type == "trailing_stop":
            order.hwm = self.market.quotes[order.symbol].price
            order.stop_price = self._trail_stop(order)
        self._register(acct, order)
        exit_side = "sell" if order.side == "buy" else "buy"
        if order.order_class in ("bracket", "oto"):
            if legs.tp_price is not None:
                self._add_leg(acct, order, "take_profit", exit_side, "limit", legs.tp_price, None, "held", now)
            if legs.sl_stop is not None:
                kind = "stop_limit" if legs.sl_limit is not None else "stop"
                self._add_leg(acct, order, "stop_loss", exit_side, kind, legs.sl_limit, legs.sl_stop, "held", now)
        elif order.order_class == "oco":
            order.leg_role = "take_profit"
            kind = "stop_limit" if legs.sl_limit is not None else "stop"
            self._add_leg(acct, order, "stop_loss", order.side, kind, legs.sl_limit, legs.sl_stop, status, now)
        if self.emit_pending_new:
            order.status = "pending_new"
            self._emit(acct, order, "pending_new", now)
            order.status = status
        self._emit(acct, order, status, now)
        return order

    def replace(self, acct: Account, old: Order, changes: dict[str, Any]) -> Order:
        """PATCH /v2/orders/{id}: a new order takes the old one's place (event ``replaced``, then ``new``)."""
        now = self.now()
        new = replacement(acct, old, changes, now)
        if new.time_in_force not in TIME_IN_FORCE:
            raise OrderError(422, 40010001, "invalid time_in_force")
        if new.type == "trailing_stop":
            new.stop_price = self._trail_stop(new)
        old.status = "replaced"
        old.replaced_by = new.id
        old.replaced_at = now
        old.updated_at = now
        old.leg_ids = []
        acct.open_ids.pop(old.id, None)
        if old.parent_id is not None:
            parent = acct.orders[old.parent_id]
            parent.leg_ids = [new.id if i == old.id else i for i in parent.leg_ids]
        for leg_id in new.leg_ids:
            acct.orders[leg_id].parent_id = new.id
        self._register(acct, new)
        self._emit(acct, old, "replaced", now)
        self._emit(acct, new, new.status, now)
        return new

    def _register(self, acct: Account, order: Order) -> None:
        if self.market.instruments[order.symbol].asset_class is AssetClass.US_OPTION:
            self.market.watched.add(order.symbol)
        acct.orders[order.id] = order
        acct.by_client_id[order.client_order_id] = order.id
        if order.is_open:
            acct.open_ids[order.id] = None

    def _add_leg(self, acct: Account, parent: Order, role: str, side: str, otype: str, limit_price: Decimal | None,
                 stop_price: Decimal | None, status: str, now: datetime) -> Order:
        leg = Order(
            id=str(uuid.uuid4()), client_order_id=str(uuid.uuid4()), symbol=parent.symbol, side=side, type=otype,
            time_in_force=parent.time_in_force, order_class=parent.order_class, created_at=now, updated_at=now,
            qty=parent.qty, limit_price=limit_price, stop_price=stop_price, status=status, parent_id=parent.id,
            leg_role=role,
        )
        parent.leg_ids.append(leg.id)
        self._register(acct, leg)
        return leg

    def _trail_stop(self, o: Order) -> Decimal:
        assert o.hwm is not None
        if o.trail_price is not None:
            offset = o.trail_price
        else:
            assert o.trail_percent is not None
            offset = o.hwm * o.trail_percent / 100
        stop = o.hwm - offset if o.side == "sell" else o.hwm + offset
        return max(CENT, stop.quantize(CENT))

    def cancel(self, acct: Account, order: Order, *, event: str = "canceled", reason_ts: datetime | None = None) -> None:
        if not order.is_open:
            raise OrderError(422, 42210000, f'order is already in "{order.status}" state')
        now = reason_ts or self.now()
        for leg_id in order.leg_ids:
            leg = acct.orders[leg_id]
            if leg.is_open:
                self._close(acct, leg, event, now)
        self._close(acct, order, event, now)

    def _close(self, acct: Account, order: Order, status: str, now: datetime) -> None:
        order.status = status
        order.updated_at = now
        if status == "canceled":
            order.canceled_at = now
        elif status == "expired":
            order.expired_at = now
        acct.open_ids.pop(order.id, None)
        self._emit(acct, order, status, now)
        self._after_parent_done(acct, order, now)

    def _after_parent_done(self, acct: Account, order: Order, now: datetime) -> None:
        """Bracket/OTO legs wake when the entry is done: with its filled qty, or are canceled if nothing filled."""
        if order.parent_id is not None or order.order_class not in ("bracket", "oto") or order.is_open:
            return
        for leg_id in order.leg_ids:
            leg = acct.orders[leg_id]
            if leg.status != "held":
                continue
            if order.filled_qty > 0:
                leg.qty = order.filled_qty
                leg.status = "new"
                leg.updated_at = now
                if leg.type == "trailing_stop":
                    leg.hwm = self.market.price(leg.symbol)
                self._emit(acct, leg, "new", now)
            else:
                self._close(acct, leg, "canceled", now)

    def expire_day_orders(self, now: datetime, *, extended: bool | None = None) -> None:
        """Day orders expire at the close (``extended=False``: only regular-hours ones; ``True``: only
        the extended-hours ones, at 20:00; ``None``: all)."""
        for acct in self.accounts.values():
            for oid in list(acct.open_ids):
                o = acct.orders.get(oid)
                if o is None or not o.is_open or o.time_in_force != "day" or o.status == "held":
                    continue
                if extended is None or o.extended_hours == extended:
                    self._close(acct, o, "expired", now)

    def activate_accepted(self, now: datetime) -> None:
        """Orders accepted while their market was closed become ``new`` when it opens."""
        for acct in self.accounts.values():
            for oid in list(acct.open_ids):
                o = acct.orders[oid]
                if o.status == "accepted" and self.tradable(self.instrument(o.symbol), now, extended_hours=o.extended_hours):
                    o.status = "new"
                    o.updated_at = now
                    self._emit(acct, o, "new", now)

    # ------------------------------------------------------------------ matching
    def match(self) -> int:
        """Try every open order of every account against the current quotes; returns fills made."""
        now = self.now()
        fills = 0
        open_now: dict[tuple[AssetClass, bool], bool] = {}  # one calendar lookup per class, not per order
        for acct in self.accounts.values():
            for oid in list(acct.open_ids):
                order = acct.orders.get(oid)
                if order is None or not order.is_open or order.status in ("held", "accepted"):
                    continue
                if order.symbol not in self.market.quotes:
                    continue  # delisted while working (the corporate action cancels it)
                inst = self.market.instruments[order.symbol]
                key = (inst.asset_class, order.extended_hours)
                if key not in open_now:
                    open_now[key] = self.tradable(inst, now, extended_hours=order.extended_hours)
                if open_now[key]:
                    fills += self._try_fill(acct, order, now)
        return fills

    def match_order(self, acct: Account, order: Order) -> int:
        return self._try_fill(acct, order, self.now())

    def _executable_price(self, order: Order) -> Decimal | None:
        q = self.market.quotes[order.symbol]
        buy = order.side == "buy"
        touch = q.ask if buy else q.bid
        if order.type == "trailing_stop" and not order.triggered:
            assert order.hwm is not None
            order.hwm = max(order.hwm, q.price) if not buy else min(order.hwm, q.price)
            order.stop_price = self._trail_stop(order)
        if order.type in ("stop", "stop_limit", "trailing_stop") and not order.triggered:
            assert order.stop_price is not None
            if (buy and q.price >= order.stop_price) or (not buy and q.price <= order.stop_price):
                order.triggered = True
            else:
                return None
        if order.type in ("limit", "stop_limit"):
            assert order.limit_price is not None
            if (buy and touch > order.limit_price) or (not buy and touch < order.limit_price):
                return None
        return touch

    def _fill_qty(self, acct: Account, order: Order, price: Decimal, now: datetime) -> Decimal | None:
        """How much fills now (liquidity-capped), or ``None`` when the order ends unfilled."""
        mult = self.instrument(order.symbol).multiplier
        if order.notional is not None and order.qty is None:
            want = (order.notional / price).quantize(QTY_STEP, ROUND_DOWN)
            if want <= 0:
                self._close(acct, order, "canceled", now)
                return None
            return want
        remaining = order.remaining
        assert remaining is not None
        if order.force_fill:
            return remaining
        cap = self.liquidity_notional / (price * mult)
        if remaining == remaining.to_integral_value():
            cap = max(Decimal(1), cap.to_integral_value(ROUND_DOWN))
        if cap >= remaining:
            return remaining
        if order.time_in_force == "fok":
            self._close(acct, order, "canceled", now)
            return None
        return cap.quantize(QTY_STEP, ROUND_DOWN)

    def _try_fill(self, acct: Account, order: Order, now: datetime) -> int:
        price = self._executable_price(order)
        if price is None:
            if order.time_in_force in ("ioc", "fok"):
                self._close(acct, order, "canceled", now)
            return 0
        fill_qty = self._fill_qty(acct, order, price, now)
        if fill_qty is None:
            return 0
        if not order.force_fill and not self._affordable(acct, order, fill_qty, price):
            if order.filled_qty == 0:
                order.failed_at = now
                self._close(acct, order, "rejected", now)
            else:
                self._close(acct, order, "canceled", now)
            return 0
        self._apply_fill(acct, order, fill_qty, price, now)
        if order.time_in_force == "ioc" and order.is_open:
            self._close(acct, order, "canceled", now)
        return 1

    def _affordable(self, acct: Account, order: Order, qty: Decimal, price: Decimal) -> bool:
        """Buying power is checked again at execution: an order that would open more than the account
        can carry is rejected then (exits and reductions always pass)."""
        inst = self.instrument(order.symbol)
        pos_qty = acct.positions[order.symbol].qty if order.symbol in acct.positions else ZERO
        if inst.asset_class is AssetClass.CRYPTO and order.side == "sell" and qty > pos_qty:
            return False
        signed = qty if order.side == "buy" else -qty
        increase = max(ZERO, abs(pos_qty + signed) - abs(pos_qty)) * price * inst.multiplier
        return increase <= 0 or increase <= self.buying_power(acct, inst) + CENT

    def _book_fill(self, acct: Account, symbol: str, signed: Decimal, price: Decimal, at: datetime) -> Decimal:
        """Move the position and the cash of one fill; returns the position's new quantity."""
        pos = acct.positions.get(symbol) or Position(symbol)
        old = pos.qty
        new = old + signed
        if old == 0 or (old > 0) == (signed > 0):
            pos.avg_entry_price = (abs(old) * pos.avg_entry_price + abs(signed) * price) / abs(new)
            if old == 0:
                pos.opened_at = at
        elif abs(signed) > abs(old):
            pos.avg_entry_price = price  # flipped: the remainder opened at this price
            pos.opened_at = at
        pos.qty = new
        if new == 0:
            acct.positions.pop(symbol, None)
        else:
            acct.positions[symbol] = pos
        acct.cash -= signed * price * self.instrument(symbol).multiplier
        return new

    def _apply_fill(self, acct: Account, order: Order, qty: Decimal, price: Decimal, now: datetime) -> None:
        at = self._stamp(acct, now)
        inst = self.instrument(order.symbol)
        signed = qty if order.side == "buy" else -qty
        held = acct.positions[order.symbol].qty if order.symbol in acct.positions else ZERO
        # Alpaca reports a sale that opens or adds to a short as ``sell_short`` in the FILL activity.
        opening_short = order.side == "sell" and held <= 0 and inst.is_equity
        new = self._book_fill(acct, order.symbol, signed, price, at)
        order.filled_qty += qty
        order.filled_value += qty * price
        order.updated_at = at
        done = order.notional is not None or (order.qty is not None and order.filled_qty >= order.qty)
        if done:
            order.status = "filled"
            order.filled_at = at
            acct.open_ids.pop(order.id, None)
        else:
            order.status = "partially_filled"
        leaves = ZERO if done or order.qty is None else order.qty - order.filled_qty
        aid = activity_id(at)
        acct.add_activity(Activity(aid, at, "FILL", {
            "id": aid, "account_id": acct.id, "activity_type": "FILL", "transaction_time": rfc3339(at),
            "type": "fill" if done else "partial_fill", "price": fmt(price), "qty": fmt(qty),
            "side": "sell_short" if opening_short else order.side, "symbol": order.symbol,
            "leaves_qty": fmt(leaves), "cum_qty": fmt(order.filled_qty), "order_id": order.id,
            "order_status": order.status,
        }))
        self._emit(acct, order, "fill" if done else "partial_fill", at, price=price, qty=qty, position_qty=new,
                   execution_id=str(uuid.uuid4()))
        self._accrue_fees(acct, order, inst, qty, price, at)
        # An exit leg that starts filling cancels its sibling (one-cancels-other).
        if order.parent_id is not None or order.order_class == "oco":
            group = acct.orders[order.parent_id] if order.parent_id else order
            for oid in [group.id, *group.leg_ids]:
                other = acct.orders[oid]
                if oid != order.id and other.is_open and (other.parent_id is not None or other.order_class == "oco"):
                    self._close(acct, other, "canceled", at)
        if done:
            self._after_parent_done(acct, order, at)

    # ------------------------------------------------------------------ events and JSON
    def _emit(self, acct: Account, order: Order, event: str, ts: datetime, **extra: Any) -> None:
        if self.on_event is None or not self.wants_events(acct):
            return
        self._ns_counter = (self._ns_counter + 1) % 1000
        data: dict[str, Any] = {"event": event, "timestamp": rfc3339_ns_ny(ts, self._ns_counter),
                                "order": self.order_json(acct, order)}
        if "price" in extra:
            data["price"] = fmt(extra["price"])
            data["qty"] = fmt(extra["qty"])
            data["position_qty"] = fmt(extra["position_qty"])
            data["execution_id"] = extra["execution_id"]
        self.on_event(acct, data)

    def order_json(self, acct: Account, o: Order, *, nested: bool = True) -> dict[str, Any]:
        return render.order_json(self, acct, o, nested=nested)

    def position_json(self, acct: Account, p: Position) -> dict[str, Any]:
        return render.position_json(self, acct, p)

    def account_json(self, acct: Account) -> dict[str, Any]:
        return render.account_json(self, acct)
