"""Alpaca's trading REST API (``/v2``): account, clock, assets, option contracts, positions, orders."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web

from simulator import render
from simulator.instruments import AssetClass
from simulator.market import asset_id
from simulator.models import Account, Order
from simulator.wire import OrderError, dec, fmt, parse_time, rfc3339

if TYPE_CHECKING:
    from simulator.server import Simulator


def error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status, headers=headers)


def as_json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, separators=(",", ":")), status=status, content_type="application/json")


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        raise OrderError(400, 40010000, "request body format is invalid") from None
    if not isinstance(body, dict):
        raise OrderError(400, 40010000, "request body format is invalid")
    return body


class TradingApi:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.engine = sim.engine

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v2/account", self.account)
        r.add_get("/v2/account/configurations", self.account_config)
        r.add_get("/v2/clock", self.clock)
        r.add_get("/v2/assets", self.assets)
        r.add_get("/v2/assets/{symbol}", self.asset)
        r.add_get("/v2/options/contracts", self.option_contracts)
        r.add_get("/v2/positions", self.positions)
        r.add_delete("/v2/positions", self.close_all)
        r.add_get("/v2/positions/{symbol}", self.position)
        r.add_delete("/v2/positions/{symbol}", self.close_position)
        # alpaca-py puts a pair's slash into the path as is (/v2/positions/BTC/USD)
        r.add_get("/v2/positions/{symbol:[A-Za-z]+/[A-Za-z]+}", self.position)
        r.add_delete("/v2/positions/{symbol:[A-Za-z]+/[A-Za-z]+}", self.close_position)
        r.add_get("/v2/orders", self.orders)
        r.add_post("/v2/orders", self.submit)
        r.add_delete("/v2/orders", self.cancel_all)
        r.add_get("/v2/orders:by_client_order_id", self.order_by_client_id)
        r.add_get("/v2/orders/{id}", self.order)
        r.add_delete("/v2/orders/{id}", self.cancel)
        r.add_patch("/v2/orders/{id}", self.replace)

    async def account(self, request: web.Request) -> web.Response:
        return as_json(self.engine.account_json(request["account"]))

    async def account_config(self, request: web.Request) -> web.Response:
        return as_json({
            "dtbp_check": "entry", "fractional_trading": True, "max_margin_multiplier": "2", "no_shorting": False,
            "pdt_check": "entry", "suspend_trade": False, "trade_confirm_email": "none",
            "ptp_no_exception_entry": False, "max_options_trading_level": 2,
        })

    async def clock(self, request: web.Request) -> web.Response:
        now = self.sim.sim_now()
        return as_json({
            "timestamp": rfc3339(now), "is_open": self.engine.market_open(now),
            "next_open": rfc3339(self.sim.calendar.next_open(now)), "next_close": rfc3339(self.sim.calendar.next_close(now)),
        })

    async def assets(self, request: web.Request) -> web.Response:
        wanted = request.query.get("asset_class")
        insts = [self.engine.instrument(s) for s in self.sim.market.symbols]
        return as_json([render.asset_json(i) for i in insts
                        if i.asset_class is not AssetClass.US_OPTION and (not wanted or i.asset_class.value == wanted)])

    async def asset(self, request: web.Request) -> web.Response:
        symbol = self._symbol(request.match_info["symbol"])
        if symbol is None:
            return error(404, 40410000, "asset not found")
        return as_json(render.asset_json(self.engine.instrument(symbol)))

    async def option_contracts(self, request: web.Request) -> web.Response:
        q = request.query
        under = {s.strip().upper() for s in q.get("underlying_symbols", "").split(",") if s.strip()}
        out = []
        for s in self.sim.market.of_class(AssetClass.US_OPTION):
            inst = self.engine.instrument(s)
            if under and inst.underlying not in under:
                continue
            if q.get("type") and inst.right is not None and inst.right.value != q["type"]:
                continue
            out.append(render.option_contract_json(inst, self.engine.last_close.get(s) or self.engine.mark(s)))
        return as_json({"option_contracts": out, "next_page_token": None})

    def _symbol(self, symbol_or_id: str) -> str | None:
        s = self.engine.resolve_symbol(symbol_or_id)
        if s is not None:
            return s
        for sym in self.sim.market.symbols:
            if asset_id(sym) == symbol_or_id.lower():
                return sym
        return None

    async def positions(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        return as_json([self.engine.position_json(acct, p) for _, p in sorted(acct.positions.items())])

    def _held(self, acct: Account, ref: str) -> str | None:
        symbol = self._symbol(ref) or ref.upper()
        return symbol if symbol in acct.positions else None

    async def position(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        symbol = self._held(acct, request.match_info["symbol"])
        if symbol is None:
            return error(404, 40410000, "position does not exist")
        return as_json(self.engine.position_json(acct, acct.positions[symbol]))

    def _close_order(self, acct: Account, symbol: str, qty: str | None, percentage: str | None) -> dict[str, Any]:
        pos = acct.positions[symbol]
        inst = self.engine.instrument(symbol)
        amount = abs(pos.qty)
        if qty:
            amount = dec(qty, "qty")
            if amount <= 0 or amount > abs(pos.qty):
                raise OrderError(403, 40310000, f"insufficient qty available for order (requested: {qty}, available: {fmt(abs(pos.qty))})")
        elif percentage:
            pct = dec(percentage, "percentage")
            if not 0 < pct <= 100:
                raise OrderError(422, 40010001, "percentage must be in (0, 100]")
            amount = (abs(pos.qty) * pct / 100).quantize(Decimal("0.000000001"))
        side = "sell" if pos.qty > 0 else "buy"
        tif = "gtc" if inst.asset_class is AssetClass.CRYPTO else "day"
        order = self.engine.submit(acct, {"symbol": symbol, "qty": fmt(amount), "side": side, "type": "market", "time_in_force": tif})
        return self.engine.order_json(acct, order)

    async def close_position(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        symbol = self._held(acct, request.match_info["symbol"])
        if symbol is None:
            return error(404, 40410000, "position does not exist")
        q = request.query
        return as_json(self._close_order(acct, symbol, q.get("qty"), q.get("percentage")))

    async def close_all(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        if request.query.get("cancel_orders", "").lower() in ("true", "1"):
            for oid in list(acct.open_ids):
                o = acct.orders[oid]
                if o.is_open and o.parent_id is None:
                    self.engine.cancel(acct, o)
        out = []
        for symbol in sorted(acct.positions):
            shown = self.engine.instrument(symbol).position_symbol
            try:
                body = self._close_order(acct, symbol, None, None)
                out.append({"symbol": shown, "status": 200, "order_id": body["id"], "body": body})
            except OrderError as exc:
                out.append({"symbol": shown, "status": exc.status, "body": {"code": exc.code, "message": exc.message}})
        return as_json(out, status=207)

    async def orders(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        q = request.query
        status = q.get("status", "open")
        if status not in ("open", "closed", "all"):
            raise OrderError(422, 40010001, "status must be open, closed or all")
        try:
            limit = int(q.get("limit", "50"))
        except ValueError:
            raise OrderError(422, 40010001, "limit must be an integer") from None
        if not 0 < limit <= 500:
            raise OrderError(422, 40010001, "limit must be between 1 and 500")
        direction = q.get("direction", "desc")
        nested = q.get("nested", "false").lower() in ("true", "1")
        after = parse_time(q.get("after"))
        until = parse_time(q.get("until"))
        side = q.get("side")
        symbols = {s.strip().upper() for s in q.get("symbols", "").split(",") if s.strip()}
        orders = []
        for o in acct.orders.values():
            if nested and o.parent_id is not None:
                continue
            # Nested, a parent stays "open" while any of its legs is (as a bracket does on Alpaca).
            is_open = o.is_open or (nested and any(acct.orders[i].is_open for i in o.leg_ids))
            if status == "open" and not is_open or status == "closed" and is_open:
                continue
            if after and o.created_at <= after or until and o.created_at >= until:
                continue
            if side and o.side != side or symbols and o.symbol not in symbols and o.symbol.replace("/", "") not in symbols:
                continue
            orders.append(o)
        orders.sort(key=lambda o: o.created_at, reverse=direction != "asc")
        return as_json([self.engine.order_json(acct, o, nested=nested) for o in orders[:limit]])

    @staticmethod
    def _find_order(acct: Account, order_id: str) -> Order:
        order = acct.orders.get(order_id)
        if order is None:
            raise OrderError(404, 40410000, "order not found")
        return order

    async def order(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        order = self._find_order(acct, request.match_info["id"])
        nested = request.query.get("nested", "false").lower() in ("true", "1")
        return as_json(self.engine.order_json(acct, order, nested=nested))

    async def order_by_client_id(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        oid = acct.by_client_id.get(request.query.get("client_order_id", ""))
        if oid is None:
            raise OrderError(404, 40410000, "order not found")
        return as_json(self.engine.order_json(acct, acct.orders[oid]))

    async def submit(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        if not request.can_read_body:
            raise OrderError(400, 40010000, "request body format is invalid")
        order = self.engine.submit(acct, await json_body(request))
        return as_json(self.engine.order_json(acct, order))

    async def cancel(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        self.engine.cancel(acct, self._find_order(acct, request.match_info["id"]))
        return web.Response(status=204)

    async def replace(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        order = self._find_order(acct, request.match_info["id"])
        new = self.engine.replace(acct, order, await json_body(request))
        return as_json(self.engine.order_json(acct, new))

    async def cancel_all(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        out = []
        for oid in list(acct.open_ids):
            o = acct.orders.get(oid)
            if o is None or not o.is_open or o.parent_id is not None:
                continue
            self.engine.cancel(acct, o)
            out.append({"id": o.id, "status": 200, "body": self.engine.order_json(acct, o)})
        return as_json(out, status=207)
