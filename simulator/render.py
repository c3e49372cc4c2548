"""JSON renderings of orders, positions, accounts and assets, following alpaca-py 0.44's models
(``alpaca.trading.models``): money and quantities are strings (money rounded to the cent, as
Alpaca's are), ids UUIDs, timestamps RFC 3339 with ``Z``."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any

from simulator.instruments import AssetClass, Instrument
from simulator.market import asset_id
from simulator.models import Account, Order, Position
from simulator.wire import CENT, PRICE_STEP, RATIO_STEP, ZERO, fmt, money, rfc3339

if TYPE_CHECKING:
    from simulator.engine import Engine


def order_json(engine: Engine, acct: Account, o: Order, *, nested: bool = True) -> dict[str, Any]:
    inst = engine.instrument(o.symbol)
    avg = (o.filled_value / o.filled_qty).quantize(PRICE_STEP) if o.filled_qty else None
    legs = [order_json(engine, acct, acct.orders[i], nested=False) for i in o.leg_ids] if nested and o.leg_ids else None
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
        "asset_class": inst.asset_class.value,
        "notional": money(o.notional),
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


def _ratio(num: Decimal, den: Decimal) -> str | None:
    return fmt((num / den).quantize(RATIO_STEP) if den else ZERO)


def position_json(engine: Engine, acct: Account, p: Position) -> dict[str, Any]:
    inst = engine.instrument(p.symbol)
    price = engine.mark(p.symbol)
    mult = inst.multiplier
    mv = p.qty * price * mult
    cost = p.qty * p.avg_entry_price * mult
    upl = mv - cost
    lastday = engine.last_close.get(p.symbol) or price
    intraday = p.qty * (price - lastday) * mult
    return {
        "asset_id": asset_id(p.symbol),
        "symbol": inst.position_symbol,
        "exchange": inst.exchange,
        "asset_class": inst.asset_class.value,
        "asset_marginable": inst.is_equity,
        "avg_entry_price": fmt(p.avg_entry_price.quantize(PRICE_STEP)),
        "qty": fmt(p.qty),
        "qty_available": fmt(p.qty),
        "side": "long" if p.qty > 0 else "short",
        "market_value": money(mv),
        "cost_basis": money(cost),
        "unrealized_pl": money(upl),
        "unrealized_plpc": _ratio(upl, abs(cost)),
        "unrealized_intraday_pl": money(intraday),
        "unrealized_intraday_plpc": _ratio(price - lastday, lastday),
        "current_price": fmt(price),
        "lastday_price": fmt(lastday),
        "change_today": _ratio(price - lastday, lastday),
    }


def account_json(engine: Engine, acct: Account) -> dict[str, Any]:
    equity = engine.equity(acct)
    values = [engine.market_value(s, p) for s, p in acct.positions.items()]
    long_mv = sum((v for v in values if v > 0), ZERO)
    short_mv = sum((v for v in values if v < 0), ZERO)
    bp = engine.buying_power(acct)
    margin = (long_mv - short_mv) / 2
    cash_bp = max(ZERO, acct.cash).quantize(CENT, ROUND_DOWN)
    return {
        "id": acct.id,
        "account_number": acct.account_number,
        "status": "ACTIVE",
        "crypto_status": "ACTIVE",
        "currency": "USD",
        "buying_power": money(bp),
        "regt_buying_power": money(bp),
        "daytrading_buying_power": money(bp),
        "non_marginable_buying_power": money(cash_bp),
        "options_buying_power": money(cash_bp),
        "cash": money(acct.cash),
        "accrued_fees": money(-sum((a.amount for a in acct.accruals), ZERO)),
        "pending_transfer_out": "0",
        "pending_transfer_in": "0",
        "portfolio_value": money(equity),
        "pattern_day_trader": False,
        "trading_blocked": False,
        "transfers_blocked": False,
        "account_blocked": False,
        "created_at": rfc3339(acct.created_at),
        "trade_suspended_by_user": False,
        "multiplier": fmt(engine.margin_multiplier),
        "shorting_enabled": True,
        "equity": money(equity),
        "last_equity": money(acct.last_equity if acct.last_equity is not None else equity),
        "long_market_value": money(long_mv),
        "short_market_value": money(short_mv),
        "initial_margin": money(margin),
        "maintenance_margin": money(margin),
        "last_maintenance_margin": money(margin),
        "sma": money(equity),
        "daytrade_count": 0,
        "options_approved_level": 2,
        "options_trading_level": 2,
    }


def asset_json(inst: Instrument) -> dict[str, Any]:
    crypto = inst.asset_class is AssetClass.CRYPTO
    out: dict[str, Any] = {
        "id": asset_id(inst.symbol),
        "class": inst.asset_class.value,
        "exchange": inst.exchange,
        "symbol": inst.symbol,
        "name": f"{inst.symbol} pair" if crypto else inst.symbol,
        "status": "active",
        "tradable": True,
        "marginable": inst.is_equity,
        "shortable": inst.is_equity,
        "easy_to_borrow": inst.is_equity,
        "fractionable": inst.asset_class is not AssetClass.US_OPTION,
    }
    if crypto:
        out.update(min_order_size="0.0001", min_trade_increment="0.000000001", price_increment="0.01")
    return out


def option_contract_json(inst: Instrument, close_price: Decimal) -> dict[str, Any]:
    """One contract of ``GET /v2/options/contracts`` (alpaca-py ``OptionContract``)."""
    assert inst.expiry is not None
    assert inst.strike is not None
    assert inst.right is not None
    return {
        "id": asset_id(inst.symbol),
        "symbol": inst.symbol,
        "name": f"{inst.underlying} {inst.expiry:%b %d %Y} {fmt(inst.strike)} {inst.right.value.title()}",
        "status": "active",
        "tradable": True,
        "expiration_date": inst.expiry.isoformat(),
        "root_symbol": inst.underlying,
        "underlying_symbol": inst.underlying,
        "underlying_asset_id": asset_id(inst.underlying or ""),
        "type": inst.right.value,
        "style": "european" if inst.cash_settled else "american",
        "strike_price": fmt(inst.strike),
        "multiplier": str(inst.multiplier),
        "size": str(inst.multiplier),
        "open_interest": None,
        "open_interest_date": None,
        "close_price": fmt(close_price),
        "close_price_date": None,
    }
