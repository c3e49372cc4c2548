"""Alpaca's market-data bars: ``GET /v2/stocks/{symbol}/bars`` and ``GET /v2/stocks/bars?symbols=``.

Parameters as Alpaca's: ``timeframe`` (``[1-59]Min``/``T``, ``[1-23]Hour``/``H``, ``1Day``/``D``,
``1Week``), ``start``/``end`` (RFC 3339 or a date; default: the last day), ``limit`` (1–10000,
default 1000), ``page_token`` (opaque, from ``next_page_token``), ``adjustment`` (``raw``, ``split``,
``dividend``, ``all``), ``sort`` (``asc``/``desc``). Bars are ``{"t", "o", "h", "l", "c", "v", "n",
"vw"}`` with JSON-number prices; daily bars are stamped at 00:00 New York (``T04:00:00Z``/``T05:00:00Z``)
and cover the regular session's minutes.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web

from simulator.market import Bar
from simulator.rest import as_json, error
from simulator.wire import NY, OrderError, ny_midnight, parse_time

if TYPE_CHECKING:
    from simulator.server import Simulator

TF_RE = re.compile(r"^(\d+)(Min|T|Hour|H|Day|D|Week|W)$")
ADJUSTMENTS = ("raw", "split", "dividend", "all")


@dataclass(frozen=True, slots=True)
class BarsQuery:
    unit: str  # "min", "hour", "day", "week"
    size: int
    start: datetime
    end: datetime
    limit: int
    adjustment: str
    descending: bool
    after: datetime | None  # from the page token: continue past this bar


def parse_query(q: Any, now: datetime) -> BarsQuery:
    m = TF_RE.match(q.get("timeframe", "1Day"))
    if not m:
        raise OrderError(400, 40010001, f"invalid timeframe {q.get('timeframe')!r}")
    size, unit = int(m.group(1)), {"Min": "min", "T": "min", "Hour": "hour", "H": "hour", "Day": "day", "D": "day",
                                   "Week": "week", "W": "week"}[m.group(2)]
    if (unit == "min" and not 1 <= size <= 59) or (unit == "hour" and not 1 <= size <= 23) or (unit in ("day", "week") and size != 1):
        raise OrderError(400, 40010001, f"invalid timeframe {q.get('timeframe')!r}")
    end = parse_time(q.get("end"), end_of_day=True) or now
    start = parse_time(q.get("start")) or ny_midnight((end - timedelta(days=1)).astimezone(NY).date())
    try:
        limit = int(q.get("limit") or 1000)
    except ValueError:
        raise OrderError(400, 40010001, "invalid limit") from None
    if not 1 <= limit <= 10_000:
        raise OrderError(400, 40010001, "limit must be between 1 and 10000")
    adjustment = q.get("adjustment", "raw")
    if adjustment not in ADJUSTMENTS:
        raise OrderError(400, 40010001, f"adjustment must be one of {', '.join(ADJUSTMENTS)}")
    sort = q.get("sort", "asc")
    if sort not in ("asc", "desc"):
        raise OrderError(400, 40010001, "sort must be asc or desc")
    after = None
    if q.get("page_token"):
        try:
            after = datetime.fromisoformat(base64.urlsafe_b64decode(q["page_token"].encode()).decode().split("|")[-1])
        except ValueError:
            raise OrderError(400, 40010001, "invalid page_token") from None
    return BarsQuery(unit, size, start, end, limit, adjustment, sort == "desc", after)


def _bucket(t: datetime, unit: str, size: int) -> datetime:
    if unit == "min":
        return t.replace(minute=t.minute // size * size, second=0, microsecond=0)
    if unit == "hour":
        return t.replace(hour=t.hour // size * size, minute=0, second=0, microsecond=0)
    day = t.astimezone(NY).date()
    if unit == "week":
        day -= timedelta(days=day.weekday())
    return ny_midnight(day)


def aggregate(bars: list[Bar], bq: BarsQuery, factor: Any) -> list[dict[str, Any]]:
    """Roll one-minute bars up to the query's timeframe, adjusted by ``factor(t) -> (price×, volume×)``."""
    out: dict[datetime, dict[str, Any]] = {}
    lo, hi = bq.start.timestamp(), bq.end.timestamp()
    for b in bars:
        if not lo <= b.ts_s < hi:
            continue
        t = b.t
        key = _bucket(t, bq.unit, bq.size)
        pf, vf = factor(t)
        cur = out.get(key)
        if cur is None:
            out[key] = cur = {"t": key, "o": b.o * pf, "h": b.h * pf, "l": b.low * pf, "c": b.c * pf,
                              "v": Decimal(0), "n": 0, "vw_sum": 0.0}
        cur["h"], cur["l"], cur["c"] = max(cur["h"], b.h * pf), min(cur["l"], b.low * pf), b.c * pf
        cur["v"] += b.v * vf
        cur["n"] += b.n
        cur["vw_sum"] += b.vw_sum * float(pf * vf)
    rows = []
    for key in sorted(out, reverse=bq.descending):
        c = out[key]
        v = c["v"]
        rows.append({"t": key.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "o": round(float(c["o"]), 4), "h": round(float(c["h"]), 4), "l": round(float(c["l"]), 4),
                     "c": round(float(c["c"]), 4), "v": int(v), "n": c["n"],
                     "vw": round(c["vw_sum"] / float(v), 4) if v else round(float(c["c"]), 4), "_key": key})
    return rows


class BarsApi:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v2/stocks/bars", self.multi)
        r.add_get("/v2/stocks/{symbol}/bars", self.single)

    def _factor(self, symbol: str, adjustment: str) -> Any:
        adj = [(t, k, f) for s, t, k, f in self.sim.market.adjustments if s == symbol]

        def factor(t: datetime) -> tuple[Decimal, Decimal]:
            pf, vf = Decimal(1), Decimal(1)
            for at, kind, f in adj:
                if t >= at:
                    continue
                if kind == "split" and adjustment in ("split", "all"):
                    pf, vf = pf / f, vf * f
                elif kind == "dividend" and adjustment in ("dividend", "all"):
                    pf *= f
            return pf, vf

        return factor

    def _rows(self, symbol: str, bq: BarsQuery) -> list[dict[str, Any]]:
        rows = aggregate(self.sim.market.bars.get(symbol, []), bq, self._factor(symbol, bq.adjustment))
        if bq.after is not None:
            rows = [r for r in rows if (r["_key"] < bq.after if bq.descending else r["_key"] > bq.after)]
        return rows

    def _known(self, symbol: str) -> str | None:
        s = symbol.strip().upper()
        return s if s in self.sim.market.bars or s in self.sim.market.quotes else None

    async def single(self, request: web.Request) -> web.Response:
        symbol = self._known(request.match_info["symbol"])
        if symbol is None:
            return error(404, 40410000, "symbol not found")
        bq = parse_query(request.query, self.sim.sim_now())
        rows = self._rows(symbol, bq)
        page, more = rows[: bq.limit], len(rows) > bq.limit
        return as_json({"bars": [_public(r) for r in page], "symbol": symbol,
                        "next_page_token": _token(symbol, page[-1]["_key"]) if more else None})

    async def multi(self, request: web.Request) -> web.Response:
        names = [s.strip().upper() for s in request.query.get("symbols", "").split(",") if s.strip()]
        if not names:
            raise OrderError(400, 40010001, "symbols is required")
        bq = parse_query(request.query, self.sim.sim_now())
        token_symbol = None
        if request.query.get("page_token"):
            token_symbol = base64.urlsafe_b64decode(request.query["page_token"].encode()).decode().split("|")[0]
        out: dict[str, list[dict[str, Any]]] = {}
        left, next_token = bq.limit, None
        for symbol in sorted(n for n in names if self._known(n)):
            if token_symbol is not None and symbol < token_symbol:
                continue
            rows = self._rows(symbol, bq if symbol == token_symbol else _without_token(bq))
            if len(rows) > left:
                out[symbol] = [_public(r) for r in rows[:left]]
                next_token = _token(symbol, rows[left - 1]["_key"])
                break
            if rows:
                out[symbol] = [_public(r) for r in rows]
            left -= len(rows)
            if left == 0:
                break
        return as_json({"bars": out, "next_page_token": next_token})


def _without_token(bq: BarsQuery) -> BarsQuery:
    return BarsQuery(bq.unit, bq.size, bq.start, bq.end, bq.limit, bq.adjustment, bq.descending, None)


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "_key"}


def _token(symbol: str, key: datetime) -> str:
    return base64.urlsafe_b64encode(f"{symbol}|{key.astimezone(UTC).isoformat()}".encode()).decode()
