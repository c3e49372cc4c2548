"""Order requests: validation as Alpaca does it, and the order (with its legs) a request becomes.

Per asset class: equities take every type, class and time in force (fractional and notional orders
only as simple market/limit day orders; ``extended_hours`` only on limit day orders); crypto takes
market, limit and stop_limit with ``gtc``/``ioc``, fractional quantities, and never sells more than is
held (no shorting); options take whole contracts, market/limit, ``day``, simple orders only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any

from simulator.instruments import AssetClass, Instrument
from simulator.models import Account, Order
from simulator.wire import CENT, QTY_STEP, ZERO, OrderError, dec

if TYPE_CHECKING:
    from simulator.engine import Engine

ORDER_TYPES = ("market", "limit", "stop", "stop_limit", "trailing_stop")
TIME_IN_FORCE = ("day", "gtc", "ioc", "fok")
ORDER_CLASSES = ("simple", "bracket", "oco", "oto")
CRYPTO_TYPES = ("market", "limit", "stop_limit")
CRYPTO_TIF = ("gtc", "ioc")


def _bad(message: str, code: int = 40010001) -> OrderError:
    return OrderError(422, code, message)


@dataclass(slots=True)
class Legs:
    tp_price: Decimal | None
    sl_stop: Decimal | None
    sl_limit: Decimal | None


def price_field(req: dict[str, Any] | None, key: str) -> Decimal | None:
    value = (req or {}).get(key)
    if value is None:
        return None
    p = dec(value, key)
    if p <= 0:
        raise _bad(f"{key} must be > 0")
    if p != p.quantize(CENT):
        raise _bad(f"invalid {key} {value}: sub-penny increment does not fulfill minimum pricing criteria", 42210000)
    return p


def _amounts(req: dict[str, Any]) -> tuple[Decimal | None, Decimal | None, bool]:
    qty = dec(req["qty"], "qty") if req.get("qty") is not None else None
    notional = dec(req["notional"], "notional") if req.get("notional") is not None else None
    if (qty is None) == (notional is None):
        raise _bad("qty or notional is required (exactly one)")
    if qty is not None:
        if qty <= 0:
            raise _bad("qty must be > 0")
        if qty != qty.quantize(QTY_STEP, ROUND_DOWN):
            raise _bad("qty has more than 9 decimal places")
        return qty, None, qty != qty.to_integral_value()
    assert notional is not None
    if notional <= 0 or notional != notional.quantize(CENT):
        raise _bad("notional must be > 0 with at most 2 decimals")
    return None, notional, True


def _check_class_rules(inst: Instrument, otype: str, tif: str, oclass: str, fractional: bool, notional: Decimal | None,
                       extended: bool) -> None:
    if inst.asset_class is AssetClass.CRYPTO:
        if otype not in CRYPTO_TYPES or tif not in CRYPTO_TIF or oclass != "simple":
            raise _bad("crypto orders must be simple market, limit or stop_limit orders with time_in_force gtc or ioc")
    elif inst.asset_class is AssetClass.US_OPTION:
        if fractional or notional is not None:
            raise _bad("options orders must be for whole contracts")
        if otype not in ("market", "limit") or tif != "day" or oclass != "simple":
            raise _bad("options orders must be simple market or limit orders with time_in_force day")
    else:
        if fractional and (otype not in ("market", "limit") or tif != "day" or oclass != "simple"):
            raise _bad("fractional orders must be simple market or limit orders with time_in_force day")
    if notional is not None and otype != "market":
        raise _bad("notional orders must be market orders")
    if extended and (not inst.is_equity or otype != "limit" or tif != "day"):
        raise _bad("extended hours order must be DAY limit orders")


def _legs(req: dict[str, Any], oclass: str, otype: str, tif: str, side: str) -> Legs:
    tp = req.get("take_profit") or None
    sl = req.get("stop_loss") or None
    legs = Legs(price_field(tp, "limit_price") if tp else None, price_field(sl, "stop_price") if sl else None,
                price_field(sl, "limit_price") if sl else None)
    if oclass == "bracket":
        if otype not in ("market", "limit") or tif not in ("day", "gtc"):
            raise _bad("bracket orders must be market or limit, day or gtc")
        if legs.tp_price is None or legs.sl_stop is None:
            raise _bad("bracket orders require take_profit.limit_price and stop_loss.stop_price")
        if (side == "buy" and legs.tp_price <= legs.sl_stop) or (side == "sell" and legs.tp_price >= legs.sl_stop):
            raise _bad("take_profit.limit_price must be on the profitable side of stop_loss.stop_price", 42210000)
    elif oclass == "oco":
        if otype != "limit" or legs.tp_price is None or legs.sl_stop is None:
            raise _bad("oco orders must be limit orders with take_profit and stop_loss")
    elif oclass == "oto":
        if (legs.tp_price is None) == (legs.sl_stop is None):
            raise _bad("oto orders require exactly one of take_profit or stop_loss")
    elif tp or sl:
        raise _bad("take_profit/stop_loss need order_class bracket, oco or oto")
    return legs


def _check_affordable(engine: Engine, acct: Account, inst: Instrument, side: str, qty: Decimal | None,
                      notional: Decimal | None, ref_price: Decimal) -> None:
    est_qty = qty if qty is not None else (notional or ZERO) / ref_price
    pos_qty = acct.positions[inst.symbol].qty if inst.symbol in acct.positions else ZERO
    if inst.asset_class is AssetClass.CRYPTO and side == "sell" and est_qty > pos_qty:
        raise OrderError(403, 40310000, f"insufficient balance for {inst.symbol.split('/')[0]} "
                                        f"(requested: {est_qty}, available: {pos_qty})")
    signed = est_qty if side == "buy" else -est_qty
    increase = max(ZERO, abs(pos_qty + signed) - abs(pos_qty)) * ref_price * inst.multiplier
    if increase > 0 and increase > engine.buying_power(acct, inst):
        raise OrderError(403, 40310000, "insufficient buying power")


def build_order(engine: Engine, acct: Account, req: dict[str, Any], now: datetime) -> tuple[Order, Legs]:
    """Validate an order request (the JSON body alpaca-py posts) into an order not yet registered."""
    symbol = engine.resolve_symbol(str(req.get("symbol") or ""))
    if symbol is None:
        raise _bad(f'asset "{req.get("symbol")}" not found')
    inst = engine.market.instruments[symbol]
    engine.market.refresh(symbol)
    side = req.get("side")
    if side not in ("buy", "sell"):
        raise _bad("side must be buy or sell")
    otype = req.get("type") or req.get("order_type")
    if otype not in ORDER_TYPES:
        raise _bad(f"invalid order type {otype!r}")
    tif = req.get("time_in_force")
    if tif not in TIME_IN_FORCE:
        raise _bad(f"invalid time_in_force {tif!r}")
    oclass = req.get("order_class") or "simple"
    if oclass not in ORDER_CLASSES:
        raise _bad(f"invalid order_class {oclass!r}")
    qty, notional, fractional = _amounts(req)
    extended = bool(req.get("extended_hours") or False)
    _check_class_rules(inst, otype, tif, oclass, fractional, notional, extended)
    limit_price = price_field(req, "limit_price")
    stop_price = price_field(req, "stop_price")
    trail_price = dec(req["trail_price"], "trail_price") if req.get("trail_price") is not None else None
    trail_percent = dec(req["trail_percent"], "trail_percent") if req.get("trail_percent") is not None else None
    if otype in ("limit", "stop_limit") and limit_price is None:
        raise _bad("limit_price is required")
    if otype in ("stop", "stop_limit") and stop_price is None:
        raise _bad("stop_price is required")
    if otype == "trailing_stop":
        if (trail_price is None) == (trail_percent is None):
            raise _bad("trailing_stop needs exactly one of trail_price or trail_percent")
        if (trail_price is not None and trail_price <= 0) or (trail_percent is not None and trail_percent <= 0):
            raise _bad("trail must be > 0")
    client_order_id = str(req.get("client_order_id") or uuid.uuid4())
    if len(client_order_id) > 128:
        raise _bad("client_order_id must be at most 128 characters")
    if client_order_id in acct.by_client_id:
        raise _bad("client_order_id must be unique")
    legs = _legs(req, oclass, otype, tif, side)
    if oclass == "oco":
        limit_price = legs.tp_price
    else:  # an OCO only ever exits
        ref = limit_price or stop_price or engine.market.quotes[symbol].price
        _check_affordable(engine, acct, inst, side, qty, notional, ref)
    order = Order(
        id=str(uuid.uuid4()), client_order_id=client_order_id, symbol=symbol, side=side, type=otype,
        time_in_force=tif, order_class=oclass, created_at=now, updated_at=now, qty=qty, notional=notional,
        limit_price=limit_price, stop_price=stop_price, trail_price=trail_price, trail_percent=trail_percent,
        extended_hours=extended, position_intent=req.get("position_intent"),
    )
    return order, legs


def replacement(acct: Account, old: Order, changes: dict[str, Any], now: datetime) -> Order:
    """PATCH /v2/orders/{id}: the order that takes the old one's place (not yet registered)."""
    if not old.is_open or old.status == "held":
        raise OrderError(422, 42210000, f'order is not replaceable in "{old.status}" state')
    if old.filled_qty > 0 or old.notional is not None:
        raise OrderError(422, 42210000, "partially filled or notional orders cannot be replaced")
    new_qty = dec(changes["qty"], "qty") if changes.get("qty") is not None else old.qty
    if new_qty is None or new_qty <= 0:
        raise _bad("qty must be > 0")
    tif = changes.get("time_in_force") or old.time_in_force
    if tif not in TIME_IN_FORCE:
        raise _bad(f"invalid time_in_force {tif!r}")

    def price(key: str, current: Decimal | None) -> Decimal | None:
        if changes.get(key) is None:
            return current
        if current is None:
            raise _bad(f"{key} does not apply to a {old.type} order")
        p = dec(changes[key], key)
        if p <= 0 or p != p.quantize(CENT):
            raise OrderError(422, 42210000, f"invalid {key} {changes[key]}")
        return p

    client_order_id = str(changes.get("client_order_id") or uuid.uuid4())
    if client_order_id in acct.by_client_id:
        raise _bad("client_order_id must be unique")
    new = Order(
        id=str(uuid.uuid4()), client_order_id=client_order_id, symbol=old.symbol, side=old.side, type=old.type,
        time_in_force=tif, order_class=old.order_class, created_at=now, updated_at=now, qty=new_qty,
        limit_price=price("limit_price", old.limit_price), stop_price=price("stop_price", old.stop_price),
        trail_price=old.trail_price, trail_percent=old.trail_percent, hwm=old.hwm, status=old.status,
        parent_id=old.parent_id, leg_ids=old.leg_ids, leg_role=old.leg_role, extended_hours=old.extended_hours,
        position_intent=old.position_intent, replaces=old.id,
    )
    if old.type == "trailing_stop" and changes.get("trail") is not None:
        trail = dec(changes["trail"], "trail")
        if trail <= 0:
            raise _bad("trail must be > 0")
        if old.trail_price is not None:
            new.trail_price = trail
        else:
            new.trail_percent = trail
    return new
