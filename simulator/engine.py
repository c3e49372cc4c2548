"""Accounts, orders and the matching engine.

Everything here is synchronous and single-threaded: the server calls it from its one asyncio loop,
the history generator calls it in fast-forward with a manual clock. Money and quantities are
``Decimal``; cash moves by exactly ``qty * price`` per fill (and by each non-trade activity's
``net_amount``), so replaying the activities reproduces cash and positions exactly.

JSON renderings follow alpaca-py 0.44's models (``alpaca.trading.models``): money and quantities
are strings, ids UUIDs, timestamps RFC 3339 with ``Z``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from simulator.market import CENT, Market, SessionCalendar, asset_id

NY = ZoneInfo("America/New_York")
ZERO = Decimal(0)
QTY_STEP = Decimal("0.000000001")  # Alpaca accepts up to 9 decimals for fractional shares
TERMINAL = frozenset({"filled", "canceled", "expired", "rejected", "replaced", "done_for_day"})
ORDER_TYPES = ("market", "limit", "stop", "stop_limit", "trailing_stop")
TIME_IN_FORCE = ("day", "gtc", "ioc", "fok")
CASHFLOW_TYPES = frozenset({"CSD", "CSW", "JNLC"})
NON_TRADE_TYPES = frozenset({"CSD", "CSW", "DIV", "FEE", "INT", "JNLC"})
SEC_FEE_RATE = Decimal("0.0000278")


class OrderError(Exception):
    """An order or request the broker refuses: HTTP status plus Alpaca's ``{code, message}`` body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def rfc3339(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fmt(value: Decimal | None) -> str | None:
    """Plain decimal string without exponent or trailing zeros (``"12.5"``, ``"100"``)."""
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def dec(value: Any, name: str) -> Decimal:
    try:
        out = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise OrderError(422, 40010000, f"invalid {name}: {value!r}") from None
    if not out.is_finite():
        raise OrderError(422, 40010000, f"invalid {name}: {value!r}")
    return out


def activity_id(ts: datetime) -> str:
    """``YYYYMMDDHHMMSSmmm::<uuid>``, the shape Alpaca uses; sorts chronologically."""
    u = ts.astimezone(UTC)
    return f"{u:%Y%m%d%H%M%S}{u.microsecond // 1000:03d}::{uuid.uuid4()}"


@dataclass(slots=True)
class Position:
    symbol: str
    qty: Decimal = ZERO
    avg_entry_price: Decimal = ZERO
    opened_at: datetime | None = None


@dataclass(slots=True)
class Order:
    id: str
    client_order_id: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    order_class: str
    created_at: datetime
    qty: Decimal | None = None
    notional: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    hwm: Decimal | None = None
    status: str = "new"
    updated_at: datetime | None = None
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    failed_at: datetime | None = None
    filled_qty: Decimal = ZERO
    filled_value: Decimal = ZERO
    parent_id: str | None = None
    leg_ids: list[str] = field(default_factory=list)
    leg_role: str | None = None  # "take_profit" / "stop_loss" for legs
    triggered: bool = False
    extended_hours: bool = False
    position_intent: str | None = None
    force_fill: bool = False  # admin fill: ignore liquidity, fill at once
    replaces: str | None = None
    replaced_by: str | None = None
    replaced_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.status not in TERMINAL

    @property
    def remaining(self) -> Decimal | None:
        return None if self.qty is None else self.qty - self.filled_qty


@dataclass(slots=True)
class Activity:
    id: str
    ts: datetime
    type: str  # FILL or a non-trade type
    data: dict[str, Any]


@dataclass(slots=True)
class Snapshot:
    ts: datetime
    equity: Decimal
    cashflow: Decimal  # cumulative deposits/withdrawals/journals up to ts


@dataclass(slots=True)
class Account:
    name: str
    key_id: str = field(repr=False)
    secret_key: str = field(repr=False)
    id: str
    account_number: str
    created_at: datetime
    cash: Decimal = ZERO
    cashflow: Decimal = ZERO
    last_equity: Decimal | None = None
    positions: dict[str, Position] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    by_client_id: dict[str, str] = field(default_factory=dict)
    open_ids: dict[str, None] = field(default_factory=dict)
    activities: list[Activity] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    last_ms: int = 0
    style: str = "mixed"
    core: set[str] = field(default_factory=set)  # buy-and-hold symbols the bots leave alone


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
        self.now = now
        self.always_open = always_open
        self.fees = fees
        self.liquidity_notional = liquidity_notional
        self.margin_multiplier = margin_multiplier
        self.accounts: dict[str, Account] = {}
        self.by_key: dict[str, Account] = {}
        self.on_event: EventSink | None = None
        self.last_close: dict[str, Decimal] = {}  # previous session close per symbol
        self.emit_pending_new = False  # Alpaca sometimes sends pending_new before new

    # ------------------------------------------------------------------ accounts
    def add_account(self, acct: Account) -> Account:
        self.accounts[acct.name] = acct
        self.by_key[acct.key_id] = acct
        return acct

    def market_open(self, ts: datetime | None = None) -> bool:
        return self.always_open or self.calendar.is_open(ts or self.now())

    def _stamp(self, acct: Account, ts: datetime) -> datetime:
        """Strictly increasing millisecond timestamps per account, so activity ids sort in event order."""
        ms = int(ts.timestamp() * 1000)
        if ms <= acct.last_ms:
            ms = acct.last_ms + 1
        acct.last_ms = ms
        return datetime.fromtimestamp(ms / 1000, UTC)

    def equity(self, acct: Account) -> Decimal:
        return acct.cash + sum((p.qty * self.market.price(s) for s, p in acct.positions.items()), ZERO)

    def buying_power(self, acct: Account) -> Decimal:
        gross = sum((abs(p.qty * self.market.price(s)) for s, p in acct.positions.items()), ZERO)
        return max(ZERO, self.margin_multiplier * self.equity(acct) - gross).quantize(CENT, ROUND_DOWN)

    def snapshot(self, acct: Account, ts: datetime | None = None) -> None:
        acct.snapshots.append(Snapshot(ts or self.now(), self.equity(acct), acct.cashflow))

    # ------------------------------------------------------------------ activities
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
    ) -> Activity:
        """Record a non-trade activity (CSD, CSW, DIV, FEE, INT, JNLC) and move the cash."""
        if kind not in NON_TRADE_TYPES:
            raise ValueError(f"unsupported activity type {kind}")
        at = self._stamp(acct, ts or self.now())
        acct.cash += amount
        if kind in CASHFLOW_TYPES:
            acct.cashflow += amount
        aid = activity_id(at)
        data: dict[str, Any] = {
            "id": aid,
            "account_id": acct.id,
            "activity_type": kind,
            "date": at.astimezone(NY).date().isoformat(),
            "created_at": rfc3339(at),
            "net_amount": fmt(amount),
            "description": description,
            "status": "executed",
        }
        if symbol is not None:
            data["symbol"] = symbol
        if qty is not None:
            data["qty"] = fmt(qty)
        if per_share is not None:
            data["per_share_amount"] = fmt(per_share)
        act = Activity(aid, at, kind, data)
        acct.activities.append(act)
        return act

    # ------------------------------------------------------------------ orders: submission
    def submit(self, acct: Account, req: dict[str, Any]) -> Order:
        """Validate and accept an order request (the JSON body alpaca-py posts)."""
        now = self.now()
        symbol = str(req.get("symbol") or "").upper()
        if symbol not in self.market.quotes:
            raise OrderError(422, 40010001, f'asset "{symbol}" not found')
        side = req.get("side")
        if side not in ("buy", "sell"):
            raise OrderError(422, 40010001, "side must be buy or sell")
        otype = req.get("type") or req.get("order_type")
        if otype not in ORDER_TYPES:
            raise OrderError(422, 40010001, f"invalid order type {otype!r}")
        tif = req.get("time_in_force")
        if tif not in TIME_IN_FORCE:
            raise OrderError(422, 40010001, f"invalid time_in_force {tif!r}")
        oclass = req.get("order_class") or "simple"
        if oclass not in ("simple", "bracket", "oco", "oto"):
            raise OrderError(422, 40010001, f"invalid order_class {oclass!r}")
        qty = dec(req["qty"], "qty") if req.get("qty") is not None else None
        notional = dec(req["notional"], "notional") if req.get("notional") is not None else None
        if (qty is None) == (notional is None):
            raise OrderError(422, 40010001, "qty or notional is required (exactly one)")
        if qty is not None:
            if qty <= 0:
                raise OrderError(422, 40010001, "qty must be > 0")
            if qty != qty.quantize(QTY_STEP, ROUND_DOWN):
                raise OrderError(422, 40010001, "qty has more than 9 decimal places")
            fractional = qty != qty.to_integral_value()
        else:
            assert notional is not None
            if notional <= 0 or notional != notional.quantize(CENT):
                raise OrderError(422, 40010001, "notional must be > 0 with at most 2 decimals")
            fractional = True
        if fractional and (otype not in ("market", "limit") or tif != "day" or oclass != "simple"):
            raise OrderError(422, 40010001, "fractional orders must be simple market or limit orders with time_in_force day")
        if notional is not None and otype != "market":
            raise OrderError(422, 40010001, "notional orders must be market orders")

        def price_field(key: str, src: dict[str, Any] | None = None) -> Decimal | None:
            value = (src if src is not None else req).get(key)
            if value is None:
                return None
            p = dec(value, key)
            if p <= 0:
                raise OrderError(422, 40010001, f"{key} must be > 0")
            if p != p.quantize(CENT):
                raise OrderError(422, 42210000, f"invalid {key} {value}: sub-penny increment does not fulfill minimum pricing criteria")
            return p

        limit_price = price_field("limit_price")
        stop_price = price_field("stop_price")
        trail_price = dec(req["trail_price"], "trail_price") if req.get("trail_price") is not None else None
        trail_percent = dec(req["trail_percent"], "trail_percent") if req.get("trail_percent") is not None else None
        if otype in ("limit", "stop_limit") and limit_price is None:
            raise OrderError(422, 40010001, "limit_price is required")
        if otype in ("stop", "stop_limit") and stop_price is None:
            raise OrderError(422, 40010001, "stop_price is required")
        if otype == "trailing_stop":
            if (trail_price is None) == (trail_percent is None):
                raise OrderError(422, 40010001, "trailing_stop needs exactly one of trail_price or trail_percent")
            if (trail_price is not None and trail_price <= 0) or (trail_percent is not None and trail_percent <= 0):
                raise OrderError(422, 40010001, "trail must be > 0")
        client_order_id = str(req.get("client_order_id") or uuid.uuid4())
        if len(client_order_id) > 128:
            raise OrderError(422, 40010001, "client_order_id must be at most 128 characters")
        if client_order_id in acct.by_client_id:
            raise OrderError(422, 40010001, "client_order_id must be unique")

        tp = req.get("take_profit") or None
        sl = req.get("stop_loss") or None
        tp_price = price_field("limit_price", tp) if tp else None
        sl_stop = price_field("stop_price", sl) if sl else None
        sl_limit = price_field("limit_price", sl) if sl else None
        if oclass == "bracket":
            if otype not in ("market", "limit") or tif not in ("day", "gtc"):
                raise OrderError(422, 40010001, "bracket orders must be market or limit, day or gtc")
            if tp_price is None or sl_stop is None:
                raise OrderError(422, 40010001, "bracket orders require take_profit.limit_price and stop_loss.stop_price")
        elif oclass == "oco":
            if otype != "limit" or tp_price is None or sl_stop is None:
                raise OrderError(422, 40010001, "oco orders must be limit orders with take_profit and stop_loss")
            limit_price = tp_price
        elif oclass == "oto":
            if (tp_price is None) == (sl_stop is None):
                raise OrderError(422, 40010001, "oto orders require exactly one of take_profit or stop_loss")
        elif tp or sl:
            raise OrderError(422, 40010001, "take_profit/stop_loss need order_class bracket, oco or oto")
        if tp_price is not None and sl_stop is not None and oclass == "bracket":
            if (side == "buy" and tp_price <= sl_stop) or (side == "sell" and tp_price >= sl_stop):
                raise OrderError(422, 42210000, "take_profit.limit_price must be on the profitable side of stop_loss.stop_price")

        quote = self.market.quotes[symbol]
        ref_price = limit_price or stop_price or quote.price
        if oclass != "oco":  # an OCO only ever exits
            est_qty = qty if qty is not None else (notional or ZERO) / ref_price
            pos_qty = acct.positions[symbol].qty if symbol in acct.positions else ZERO
            signed = est_qty if side == "buy" else -est_qty
            increase = max(ZERO, abs(pos_qty + signed) - abs(pos_qty)) * ref_price
            if increase > 0 and increase > self.buying_power(acct):
                raise OrderError(403, 40310000, "insufficient buying power")

        status = "new" if self.market_open(now) else "accepted"
        order = Order(
            id=str(uuid.uuid4()),
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            type=otype,
            time_in_force=tif,
            order_class=oclass,
            created_at=now,
            updated_at=now,
            qty=qty,
            notional=notional,
            limit_price=limit_price,
            stop_price=stop_price,
            trail_price=trail_price,
            trail_percent=trail_percent,
            status=status,
            extended_hours=bool(req.get("extended_hours") or False),
            position_intent=req.get("position_intent"),
        )
        if otype == "trailing_stop":
            order.hwm = quote.price
            order.stop_price = self._trail_stop(order)
        self._register(acct, order)
        exit_side = "sell" if side == "buy" else "buy"
        if oclass in ("bracket", "oto"):
            if tp_price is not None:
                self._add_leg(acct, order, "take_profit", exit_side, "limit", tp_price, None, "held", now)
            if sl_stop is not None:
                kind = "stop_limit" if sl_limit is not None else "stop"
                self._add_leg(acct, order, "stop_loss", exit_side, kind, sl_limit, sl_stop, "held", now)
        elif oclass == "oco":
            order.leg_role = "take_profit"
            kind = "stop_limit" if sl_limit is not None else "stop"
            self._add_leg(acct, order, "stop_loss", side, kind, sl_limit, sl_stop, status, now)
        if self.emit_pending_new:
            order.status = "pending_new"
            self._emit(acct, order, "pending_new", now)
            order.status = status
        self._emit(acct, order, status, now)
        return order

    def replace(self, acct: Account, old: Order, changes: dict[str, Any]) -> Order:
        """PATCH /v2/orders/{id}: a new order takes the old one's place (event ``replaced``, then ``new``)."""
        if not old.is_open or old.status == "held":
            raise OrderError(422, 42210000, f'order is not replaceable in "{old.status}" state')
        if old.filled_qty > 0 or old.notional is not None:
            raise OrderError(422, 42210000, "partially filled or notional orders cannot be replaced")
        now = self.now()
        new_qty = dec(changes["qty"], "qty") if changes.get("qty") is not None else old.qty
        if new_qty is None or new_qty <= 0:
            raise OrderError(422, 40010001, "qty must be > 0")
        tif = changes.get("time_in_force") or old.time_in_force
        if tif not in TIME_IN_FORCE:
            raise OrderError(422, 40010001, f"invalid time_in_force {tif!r}")

        def price(key: str, current: Decimal | None) -> Decimal | None:
            if changes.get(key) is None:
                return current
            if current is None:
                raise OrderError(422, 40010001, f"{key} does not apply to a {old.type} order")
            p = dec(changes[key], key)
            if p <= 0 or p != p.quantize(CENT):
                raise OrderError(422, 42210000, f"invalid {key} {changes[key]}")
            return p

        client_order_id = str(changes.get("client_order_id") or uuid.uuid4())
        if client_order_id in acct.by_client_id:
            raise OrderError(422, 40010001, "client_order_id must be unique")
        new = Order(
            id=str(uuid.uuid4()),
            client_order_id=client_order_id,
            symbol=old.symbol,
            side=old.side,
            type=old.type,
            time_in_force=tif,
            order_class=old.order_class,
            created_at=now,
            updated_at=now,
            qty=new_qty,
            limit_price=price("limit_price", old.limit_price),
            stop_price=price("stop_price", old.stop_price),
            trail_price=old.trail_price,
            trail_percent=old.trail_percent,
            hwm=old.hwm,
            status=old.status,
            parent_id=old.parent_id,
            leg_ids=old.leg_ids,
            leg_role=old.leg_role,
            extended_hours=old.extended_hours,
            position_intent=old.position_intent,
            replaces=old.id,
        )
        if old.type == "trailing_stop" and changes.get("trail") is not None:
            trail = dec(changes["trail"], "trail")
            if trail <= 0:
                raise OrderError(422, 40010001, "trail must be > 0")
            if old.trail_price is not None:
                new.trail_price = trail
            else:
                new.trail_percent = trail
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
        acct.orders[order.id] = order
        acct.by_client_id[order.client_order_id] = order.id
        if order.is_open:
            acct.open_ids[order.id] = None

    def _add_leg(
        self,
        acct: Account,
        parent: Order,
        role: str,
        side: str,
        otype: str,
        limit_price: Decimal | None,
        stop_price: Decimal | None,
        status: str,
        now: datetime,
    ) -> Order:
        leg = Order(
            id=str(uuid.uuid4()),
            client_order_id=str(uuid.uuid4()),
            symbol=parent.symbol,
            side=side,
            type=otype,
            time_in_force=parent.time_in_force,
            order_class=parent.order_class,
            created_at=now,
            updated_at=now,
            qty=parent.qty,
            limit_price=limit_price,
            stop_price=stop_price,
            status=status,
            parent_id=parent.id,
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

    # ------------------------------------------------------------------ orders: cancel / expire
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

    def expire_day_orders(self, now: datetime) -> None:
        for acct in self.accounts.values():
            for oid in list(acct.open_ids):
                o = acct.orders.get(oid)
                if o is not None and o.is_open and o.time_in_force == "day" and o.status != "held":
                    self._close(acct, o, "expired", now)

    def activate_accepted(self, now: datetime) -> None:
        for acct in self.accounts.values():
            for oid in list(acct.open_ids):
                o = acct.orders[oid]
                if o.status == "accepted":
                    o.status = "new"
                    o.updated_at = now
                    self._emit(acct, o, "new", now)

    # ------------------------------------------------------------------ matching
    def match(self) -> int:
        """Try every open order of every account against the current quotes; returns fills made."""
        now = self.now()
        if not self.market_open(now):
            return 0
        fills = 0
        for acct in self.accounts.values():
            for oid in list(acct.open_ids):
                order = acct.orders.get(oid)
                if order is not None and order.is_open and order.status not in ("held", "accepted"):
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

    def _try_fill(self, acct: Account, order: Order, now: datetime) -> int:
        price = self._executable_price(order)
        if price is None:
            if order.time_in_force in ("ioc", "fok"):
                self._close(acct, order, "canceled", now)
            return 0
        if order.notional is not None and order.qty is None:
            want = (order.notional / price).quantize(QTY_STEP, ROUND_DOWN)
            order.qty = None
            fill_qty = want
            if fill_qty <= 0:
                self._close(acct, order, "canceled", now)
                return 0
        else:
            remaining = order.remaining
            assert remaining is not None
            fill_qty = remaining
            if not order.force_fill:
                cap = self.liquidity_notional / price
                if remaining == remaining.to_integral_value():
                    cap = max(Decimal(1), cap.to_integral_value(ROUND_DOWN))
                if cap < remaining:
                    if order.time_in_force == "fok":
                        self._close(acct, order, "canceled", now)
                        return 0
                    fill_qty = cap.quantize(QTY_STEP, ROUND_DOWN)
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
        pos_qty = acct.positions[order.symbol].qty if order.symbol in acct.positions else ZERO
        signed = qty if order.side == "buy" else -qty
        increase = max(ZERO, abs(pos_qty + signed) - abs(pos_qty)) * price
        return increase <= 0 or increase <= self.buying_power(acct) + CENT

    def _apply_fill(self, acct: Account, order: Order, qty: Decimal, price: Decimal, now: datetime) -> None:
        at = self._stamp(acct, now)
        signed = qty if order.side == "buy" else -qty
        pos = acct.positions.get(order.symbol) or Position(order.symbol)
        old = pos.qty
        new = old + signed
        if old == 0 or (old > 0) == (signed > 0):
            pos.avg_entry_price = (abs(old) * pos.avg_entry_price + qty * price) / abs(new)
            if old == 0:
                pos.opened_at = at
        elif abs(signed) > abs(old):
            pos.avg_entry_price = price  # flipped: the remainder opened at this price
            pos.opened_at = at
        pos.qty = new
        if new == 0:
            acct.positions.pop(order.symbol, None)
        else:
            acct.positions[order.symbol] = pos
        acct.cash -= signed * price

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
        acct.activities.append(
            Activity(
                aid,
                at,
                "FILL",
                {
                    "id": aid,
                    "account_id": acct.id,
                    "activity_type": "FILL",
                    "transaction_time": rfc3339(at),
                    "type": "fill" if done else "partial_fill",
                    "price": fmt(price),
                    "qty": fmt(qty),
                    "side": order.side,
                    "symbol": order.symbol,
                    "leaves_qty": fmt(leaves),
                    "cum_qty": fmt(order.filled_qty),
                    "order_id": order.id,
                    "order_status": order.status,
                },
            )
        )
        self._emit(
            acct,
            order,
            "fill" if done else "partial_fill",
            at,
            price=price,
            qty=qty,
            position_qty=new,
            execution_id=str(uuid.uuid4()),
        )
        if self.fees and order.side == "sell":
            fee = max(CENT, (qty * price * SEC_FEE_RATE).quantize(CENT))
            self.cash_activity(acct, "FEE", -fee, f"REG FEE {order.symbol}", ts=at, symbol=order.symbol)
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
        if self.on_event is None:
            return
        data: dict[str, Any] = {"event": event, "timestamp": rfc3339(ts), "order": self.order_json(acct, order)}
        if "price" in extra:
            data["price"] = fmt(extra["price"])
            data["qty"] = fmt(extra["qty"])
            data["position_qty"] = fmt(extra["position_qty"])
            data["execution_id"] = extra["execution_id"]
        self.on_event(acct, data)

    def order_json(self, acct: Account, o: Order, *, nested: bool = True) -> dict[str, Any]:
        avg = (o.filled_value / o.filled_qty).quantize(Decimal("0.0001")) if o.filled_qty else None
        legs = [self.order_json(acct, acct.orders[i], nested=False) for i in o.leg_ids] if nested and o.leg_ids else None
        return {
            "id": o.id,
            "client_order_id": o.client_order_id,
            "created_at": rfc3339(o.created_at),
            "updated_at": rfc3339(o.updated_at or o.created_at),
            "submitted_at": rfc3339(o.created_at),
            "filled_at": rfc3339(o.filled_at),
            "expired_at": rfc3339(o.expired_at),
            "expires_at": None,
            "canceled_at": rfc3339(o.canceled_at),
            "failed_at": rfc3339(o.failed_at),
            "replaced_at": rfc3339(o.replaced_at),
            "replaced_by": o.replaced_by,
            "replaces": o.replaces,
            "asset_id": asset_id(o.symbol),
            "symbol": o.symbol,
            "asset_class": "us_equity",
            "notional": fmt(o.notional),
            "qty": fmt(o.qty),
            "filled_qty": fmt(o.filled_qty),
            "filled_avg_price": fmt(avg),
            "order_class": o.order_class,
            "order_type": o.type,
            "type": o.type,
            "side": o.side,
            "position_intent": o.position_intent,
            "time_in_force": o.time_in_force,
            "limit_price": fmt(o.limit_price),
            "stop_price": fmt(o.stop_price),
            "status": o.status,
            "extended_hours": o.extended_hours,
            "legs": legs,
            "trail_percent": fmt(o.trail_percent),
            "trail_price": fmt(o.trail_price),
            "hwm": fmt(o.hwm),
            "ratio_qty": None,
        }

    def position_json(self, acct: Account, p: Position) -> dict[str, Any]:
        q = self.market.quotes[p.symbol]
        price = q.price
        mv = p.qty * price
        cost = p.qty * p.avg_entry_price
        upl = mv - cost
        lastday = self.last_close.get(p.symbol) or price
        intraday = p.qty * (price - lastday)
        return {
            "asset_id": asset_id(p.symbol),
            "symbol": p.symbol,
            "exchange": "NASDAQ",
            "asset_class": "us_equity",
            "asset_marginable": True,
            "avg_entry_price": fmt(p.avg_entry_price.quantize(Decimal("0.0001"))),
            "qty": fmt(p.qty),
            "qty_available": fmt(p.qty),
            "side": "long" if p.qty > 0 else "short",
            "market_value": fmt(mv.quantize(CENT)),
            "cost_basis": fmt(cost.quantize(CENT)),
            "unrealized_pl": fmt(upl.quantize(CENT)),
            "unrealized_plpc": fmt((upl / abs(cost)).quantize(Decimal("0.0000001")) if cost else ZERO),
            "unrealized_intraday_pl": fmt(intraday.quantize(CENT)),
            "unrealized_intraday_plpc": fmt(((price - lastday) / lastday).quantize(Decimal("0.0000001")) if lastday else ZERO),
            "current_price": fmt(price),
            "lastday_price": fmt(lastday),
            "change_today": fmt(((price - lastday) / lastday).quantize(Decimal("0.0000001")) if lastday else ZERO),
        }

    def account_json(self, acct: Account) -> dict[str, Any]:
        equity = self.equity(acct)
        long_mv = sum((p.qty * self.market.price(s) for s, p in acct.positions.items() if p.qty > 0), ZERO)
        short_mv = sum((p.qty * self.market.price(s) for s, p in acct.positions.items() if p.qty < 0), ZERO)
        bp = self.buying_power(acct)
        margin = ((long_mv - short_mv) / 2).quantize(CENT)
        return {
            "id": acct.id,
            "account_number": acct.account_number,
            "status": "ACTIVE",
            "crypto_status": "INACTIVE",
            "currency": "USD",
            "buying_power": fmt(bp),
            "regt_buying_power": fmt(bp),
            "daytrading_buying_power": fmt(bp),
            "non_marginable_buying_power": fmt(max(ZERO, acct.cash).quantize(CENT, ROUND_DOWN)),
            "options_buying_power": fmt(max(ZERO, acct.cash).quantize(CENT, ROUND_DOWN)),
            "cash": fmt(acct.cash),
            "accrued_fees": "0",
            "pending_transfer_out": "0",
            "pending_transfer_in": "0",
            "portfolio_value": fmt(equity),
            "pattern_day_trader": False,
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "created_at": rfc3339(acct.created_at),
            "trade_suspended_by_user": False,
            "multiplier": fmt(self.margin_multiplier),
            "shorting_enabled": True,
            "equity": fmt(equity),
            "last_equity": fmt(acct.last_equity if acct.last_equity is not None else equity),
            "long_market_value": fmt(long_mv),
            "short_market_value": fmt(short_mv),
            "initial_margin": fmt(margin),
            "maintenance_margin": fmt(margin),
            "last_maintenance_margin": fmt(margin),
            "sma": fmt(equity.quantize(CENT)),
            "daytrade_count": 0,
            "options_approved_level": 0,
            "options_trading_level": 0,
        }


def parse_time(value: str | None, *, end_of_day: bool = False) -> datetime | None:
    """RFC 3339 timestamp or ``YYYY-MM-DD`` (as UTC midnight; ``end_of_day`` for the next midnight)."""
    if value is None or value == "":
        return None
    text = value.strip().replace(" ", "+")
    try:
        if len(text) == 10:
            ts = datetime.fromisoformat(text).replace(tzinfo=UTC)
            return ts + timedelta(days=1) if end_of_day else ts
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise OrderError(422, 40010001, f"invalid timestamp {value!r}") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)
