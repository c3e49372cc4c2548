"""The admin API (``/admin/*``) for tests and demos: state, ground truth, faults, forced fills,
pinned prices, the bot rate, injected activities, corporate actions and option events, the end of
the day. Every call needs ``Authorization: Bearer <admin_token>`` (the token is in the 0600 state
file, or set with ``--admin-token`` / ``SIM_ADMIN_TOKEN``); no answer carries a secret key."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from simulator.engine import NON_TRADE_TYPES
from simulator.models import Account
from simulator.rest import as_json, json_body
from simulator.wire import NY, OrderError, dec, fmt, parse_time, rfc3339

if TYPE_CHECKING:
    from simulator.server import Simulator

# Alpaca's activity statuses: only ``executed`` moves cash or positions.
ACTIVITY_STATUSES = frozenset({"executed", "canceled", "pending", "rejected"})


class AdminApi:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.engine = sim.engine

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/admin/state", self.state)
        r.add_get("/admin/faults", self.faults)
        r.add_post("/admin/faults", self.faults)
        r.add_post("/admin/drop-streams", self.drop)
        r.add_get("/admin/ground-truth", self.truth)
        r.add_post("/admin/bot", self.bot)
        r.add_post("/admin/fill", self.fill)
        r.add_post("/admin/price", self.price)
        r.add_post("/admin/pause", self.pause)
        r.add_post("/admin/activity", self.activity)
        r.add_post("/admin/session-close", self.session_close)
        r.add_post("/admin/end-of-day", self.end_of_day)
        r.add_post("/admin/corporate-action", self.corporate_action)
        r.add_get("/admin/corporate-actions", self.corporate_actions)
        r.add_post("/admin/option-chain", self.option_chain)
        r.add_post("/admin/clock", self.clock)

    def _account(self, ref: Any) -> Account:
        acct = self.engine.accounts.get(str(ref)) or self.engine.by_key.get(str(ref))
        if acct is None:
            raise OrderError(404, 40410000, f"unknown account {ref!r}")
        return acct

    async def state(self, request: web.Request) -> web.Response:
        sim = self.sim
        state = sim.state(reveal=False)
        state.update(
            sim_time=rfc3339(sim.sim_now()),
            market_open=self.engine.market_open(),
            faults=sim.faults.as_dict(),
            bot_rate=sim.bot_rate,
            paused=sim.paused,
            ticks_published=sim.ticks_published,
            stream_messages_sent=sim.stream_sent,
            stream_connections={k: len(v) for k, v in sim.streams.items()},
            stream_listening={k: sum(c.listening for c in v) for k, v in sim.streams.items()},
            prices={s: fmt(q.price) for s, q in sim.market.quotes.items()},
            account_styles={a.name: a.style for a in self.engine.accounts.values()},
        )
        return as_json(state)

    async def faults(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                self.sim.faults.update(await json_body(request))
            except ValueError as exc:
                raise OrderError(422, 42200000, str(exc)) from None
            self.engine.emit_pending_new = self.sim.faults.emit_pending_new
        return as_json(self.sim.faults.as_dict())

    async def drop(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        return as_json({"dropped": await self.sim.drop_streams(abort=bool(body.get("abort", False)))})

    async def session_close(self, request: web.Request) -> web.Response:
        """Act as if the session just closed: day orders expire, options expiring today settle, last
        closes and last_equity roll."""
        self.sim.session_closed(self.sim.sim_now())
        return as_json({"ok": True})

    async def end_of_day(self, request: web.Request) -> web.Response:
        """Act as if the day ``{"through": "YYYY-MM-DD"}`` (default today) just ended: its accrued fees are
        posted now, dated their trade day (``fee_post_delay_days`` holds them back, as at midnight)."""
        body = await json_body(request)
        now = self.sim.sim_now()
        through = parse_time(body["through"]) if body.get("through") else None
        day = through.date() if through is not None else now.astimezone(NY).date()
        day -= timedelta(days=self.sim.faults.fee_post_delay_days)
        return as_json({"posted": self.engine.post_accruals(day, ts=now)})

    async def truth(self, request: web.Request) -> web.Response:
        names = [request.query["account"]] if "account" in request.query else list(self.engine.accounts)
        out: dict[str, Any] = {}
        for name in names:
            acct = self._account(name)
            out[acct.name] = {
                "account_id": acct.id,
                "style": acct.style,
                "cash": fmt(acct.cash),
                "equity": fmt(self.engine.equity(acct)),
                "positions": {
                    s: {"qty": fmt(p.qty), "avg_entry_price": fmt(p.avg_entry_price),
                        "asset_class": self.engine.instrument(s).asset_class.value}
                    for s, p in sorted(acct.positions.items())
                },
                "orders": [self.engine.order_json(acct, o, nested=False) for o in acct.orders.values()],
                "activities": [a.data for a in acct.activities],
                "accrued": [{"day": a.day.isoformat(), "type": a.kind, "symbol": a.symbol, "amount": fmt(a.amount),
                             "qty": fmt(a.qty)} for a in acct.accruals],
            }
        prices = {s: fmt(q.price) for s, q in self.sim.market.quotes.items()}
        return as_json({"as_of": rfc3339(self.sim.sim_now()), "prices": prices, "accounts": out})

    async def bot(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        rate = body.get("rate")
        if isinstance(rate, bool) or not isinstance(rate, int | float) or rate < 0:
            raise OrderError(422, 42200000, "rate must be a number >= 0")
        self.sim.bot_rate = float(rate)
        return as_json({"rate": self.sim.bot_rate})

    async def fill(self, request: web.Request) -> web.Response:
        """Submit a market order for an account and fill it completely right now (any session)."""
        body = await json_body(request)
        acct = self._account(body.pop("account", None))
        symbol = self.engine.resolve_symbol(str(body.get("symbol", "")))
        crypto = symbol is not None and "/" in symbol
        body.setdefault("type", "market")
        body.setdefault("time_in_force", "gtc" if crypto else "day")
        order = self.engine.submit(acct, body)
        order.force_fill = True
        if order.status == "accepted":
            order.status = "new"
        self.engine.match_order(acct, order)
        return as_json(self.engine.order_json(acct, order))

    async def price(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        symbol = self.engine.resolve_symbol(str(body.get("symbol", "")))
        if symbol is None:
            raise OrderError(404, 40410000, f"unknown symbol {body.get('symbol')!r}")
        price = body.get("price")
        self.sim.market.set_price(symbol, None if price is None else dec(price, "price"))
        return as_json({"symbol": symbol, "price": fmt(self.sim.market.price(symbol)), "pinned": symbol in self.sim.market.overrides})

    async def pause(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        self.sim.paused = bool(body.get("paused", True))
        return as_json({"paused": self.sim.paused})

    async def activity(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        acct = self._account(body.get("account"))
        kind = str(body.get("type", "")).upper()
        # ``allow_unknown``: a code Alpaca may add one day (cash only), to test that nothing drops it
        allow_unknown = bool(body.get("allow_unknown", False))
        if kind not in NON_TRADE_TYPES and not (allow_unknown and re.fullmatch(r"[A-Z][A-Z0-9_]{1,15}", kind)):
            raise OrderError(422, 42200000, f"type must be one of {sorted(NON_TRADE_TYPES)} (or allow_unknown)")
        status = str(body.get("status") or "executed").lower()
        if status not in ACTIVITY_STATUSES:
            raise OrderError(422, 42200000, f"status must be one of {sorted(ACTIVITY_STATUSES)}")

        def opt(key: str) -> Any:
            return dec(body[key], key) if body.get(key) is not None else None

        day = parse_time(body["date"]) if body.get("date") else None
        symbol = body.get("symbol")
        act = self.engine.cash_activity(
            acct, kind, dec(body.get("amount", 0), "amount"), str(body.get("description", "")), symbol=symbol,
            qty=opt("qty"), per_share=opt("per_share_amount"), price=opt("price"), sub_type=body.get("sub_type"),
            day=day.date() if day is not None else None,
            position_symbol=self.engine.resolve_symbol(str(symbol)) if symbol else None, status=status,
            known_only=not allow_unknown,
        )
        return as_json(act.data)

    async def corporate_action(self, request: web.Request) -> web.Response:
        """``{"type": split|name_change|spinoff|merger|reorg|worthless|dividend|exercise|assign|cash_settle|
        crypto_dust, "at": RFC 3339 (optional: now), ...parameters}`` applies the action now or schedules it."""
        body = await json_body(request)
        kind = str(body.pop("type", ""))
        at = parse_time(body.pop("at", None))
        return as_json(self.sim.scheduler.schedule(kind, body, at))

    async def corporate_actions(self, request: web.Request) -> web.Response:
        s = self.sim.scheduler
        return as_json({"applied": s.applied, "pending": [{"at": rfc3339(p.at), "type": p.kind, "params": p.params}
                                                          for p in sorted(s.pending)]})

    async def clock(self, request: web.Request) -> web.Response:
        """``{"to": RFC 3339}`` or ``{"advance_s": N}`` moves the simulated clock forward; ``{"to": "wall"}``
        back to the wall clock when it runs behind (``--clock-offset-s`` < 0)."""
        body = await json_body(request)
        now = self.sim.sim_now()
        if body.get("to") == "wall":  # (a clock already there, to the drift of two clocks, stays)
            target = max(now, datetime.now(UTC))
        elif body.get("to"):
            parsed = parse_time(str(body["to"]))
            assert parsed is not None
            target = parsed
        else:
            target = now + timedelta(seconds=float(dec(body.get("advance_s", 0), "advance_s")))
        return as_json({"sim_time": rfc3339(self.sim.jump_clock(target)), "was": rfc3339(now)})

    async def option_chain(self, request: web.Request) -> web.Response:
        """List contracts on an underlying: ``{"underlying": "AAPL", "weeks": 2}`` (weeklies around the
        money) or ``{"underlying", "expiry": "YYYY-MM-DD", "strikes": [...]}`` (calls and puts)."""
        from datetime import date

        from simulator.events import list_chain
        from simulator.instruments import Right, occ_symbol

        body = await json_body(request)
        under = self.engine.resolve_symbol(str(body.get("underlying", "")))
        if under is None:
            raise OrderError(404, 40410000, f"unknown underlying {body.get('underlying')!r}")
        if not body.get("expiry"):
            return as_json({"contracts": list_chain(self.engine, under, self.sim.sim_now(), int(body.get("weeks", 2)))})
        try:
            expiry = date.fromisoformat(str(body["expiry"]))
        except ValueError:
            raise OrderError(422, 42200000, "expiry must be YYYY-MM-DD") from None
        out = []
        for strike in body.get("strikes") or []:
            for right in (Right.CALL, Right.PUT):
                sym = occ_symbol(under, expiry, right, dec(strike, "strike"))
                if sym not in self.sim.market.instruments:
                    self.sim.market.add_symbol(sym, 1.0)
                out.append(sym)
        return as_json({"contracts": out})
