"""Read-only reports over an account's ledger: ``/v2/account/activities`` and
``/v2/account/portfolio/history``, shaped as Alpaca's.

Portfolio history (computed from the account's own equity snapshots and activity cash flows):

* ``timestamp``: Unix seconds, left-labelled buckets; daily points are stamped at 00:00 New York of
  their day (Alpaca's convention) and hold that day's last equity. Daily points exist for NYSE
  session days, and for every day when the account trades crypto.
* ``intraday_reporting`` ``market_hours`` (default: 09:30–16:00 New York), ``extended_hours``
  (04:00–20:00) or ``continuous``; crypto accounts report continuously.
* ``profit_loss``: equity change since ``base_value`` net of transfers (CSD, CSW, JNLC, ACATC/S);
  ``pnl_reset=per_day`` (the intraday default) restarts it each day from the previous day's close.
* ``cashflow``: per activity type, the non-trade cash that moved within each bucket.
* Money is rounded to the cent, percentages to 4 decimals.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web

from simulator.models import Account, Snapshot
from simulator.rest import as_json
from simulator.wire import CENT, NY, ZERO, OrderError, ny_midnight, parse_time

if TYPE_CHECKING:
    from simulator.server import Simulator

TIMEFRAMES_S = {"1Min": 60, "5Min": 300, "15Min": 900, "1H": 3600, "1D": 86400}
PERIOD_RE = re.compile(r"(\d+)([DWMA])")


def _cents(value: Decimal) -> float:
    return float(value.quantize(CENT))


def _pct(pl: Decimal, base: Decimal) -> float | None:
    return round(float(pl / base), 4) if base else 0.0


@dataclass(slots=True)
class HistoryQuery:
    timeframe: str
    start: datetime
    end: datetime
    reporting: str
    per_day: bool


class ReportsApi:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v2/account/portfolio/history", self.portfolio_history)
        r.add_get("/v2/account/activities", self.activities)
        r.add_get("/v2/account/activities/{type}", self.activities)

    # ------------------------------------------------------------------ activities
    async def activities(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        q = request.query
        types: set[str] = set()
        if "type" in request.match_info:
            types.add(request.match_info["type"].upper())
        for part in (q.get("activity_types") or q.get("activity_type") or "").split(","):
            if part.strip():
                types.add(part.strip().upper())
        category = q.get("category")
        if category not in (None, "trade_activity", "non_trade_activity"):
            raise OrderError(422, 40010001, "category must be trade_activity or non_trade_activity")
        direction = q.get("direction", "desc")
        if direction not in ("asc", "desc"):
            raise OrderError(422, 40010001, "direction must be asc or desc")
        try:
            page_size = int(q.get("page_size", "100"))
        except ValueError:
            raise OrderError(422, 40010001, "page_size must be an integer") from None
        if not 1 <= page_size <= 100:
            raise OrderError(422, 40010001, "page_size must be between 1 and 100")
        day: date | None = None
        if q.get("date"):
            try:
                day = date.fromisoformat(q["date"][:10])
            except ValueError:
                raise OrderError(422, 40010001, "invalid date") from None
        after, until = parse_time(q.get("after")), parse_time(q.get("until"))
        token = q.get("page_token") or None
        acts = self.sim.visible_activities(acct)  # sorted by id
        if direction == "asc":
            start = bisect.bisect_right(acts, token, key=lambda a: a.id) if token else 0
            indices: Iterable[int] = range(start, len(acts))
        else:
            stop = bisect.bisect_left(acts, token, key=lambda a: a.id) if token else len(acts)
            indices = range(stop - 1, -1, -1)
        out = []
        for i in indices:
            a = acts[i]
            if types and a.type not in types:
                continue
            if category is not None and (a.type == "FILL") != (category == "trade_activity"):
                continue
            if after and a.ts <= after or until and a.ts >= until:
                continue
            if day and a.ts.astimezone(NY).date() != day:
                continue
            out.append(a.data)
            if len(out) >= page_size:
                break
        return as_json(out)

    # ------------------------------------------------------------------ portfolio history
    def _query(self, acct: Account, q: Any, now: datetime) -> HistoryQuery:
        period = q.get("period") or "1M"
        end = parse_time(q.get("end")) or (parse_time(q.get("date_end"), end_of_day=True) if q.get("date_end") else None) or now
        start = parse_time(q.get("start"))
        if start is None:
            m = PERIOD_RE.fullmatch(period)
            if period.lower() == "all":
                start = acct.created_at
            elif not m:
                raise OrderError(422, 40010001, "invalid period")
            else:
                start = end - timedelta(days=int(m.group(1)) * {"D": 1, "W": 7, "M": 30, "A": 365}[m.group(2)])
        # Alpaca's default resolution: 1Min under 7 days, 15Min under 30 days, else 1D.
        span_days = (end - start).total_seconds() / 86400
        timeframe = q.get("timeframe") or ("1Min" if span_days < 7 else "15Min" if span_days < 30 else "1D")
        if timeframe not in TIMEFRAMES_S:
            raise OrderError(422, 40010001, "timeframe must be one of 1Min, 5Min, 15Min, 1H, 1D")
        reporting = q.get("intraday_reporting") or ("extended_hours" if q.get("extended_hours") == "true" else "market_hours")
        if reporting not in ("market_hours", "extended_hours", "continuous"):
            raise OrderError(422, 40010001, "intraday_reporting must be market_hours, extended_hours or continuous")
        if self.sim.trades_crypto(acct):
            reporting = "continuous"
        pnl_reset = q.get("pnl_reset") or ("per_day" if timeframe != "1D" else "no_reset")
        if pnl_reset not in ("per_day", "no_reset"):
            raise OrderError(422, 40010001, "pnl_reset must be per_day or no_reset")
        return HistoryQuery(timeframe, start, end, reporting, pnl_reset == "per_day" and timeframe != "1D")

    def _reported(self, acct: Account, s: Snapshot, hq: HistoryQuery) -> bool:
        """Which snapshots a point may come from (an equity account has no weekend points)."""
        cal = self.sim.calendar
        if self.sim.cfg.always_open or self.sim.trades_crypto(acct):
            return True
        if hq.timeframe == "1D":
            return cal.is_session_day(s.ts.astimezone(NY).date())
        if hq.reporting == "continuous":
            return True
        if hq.reporting == "extended_hours":
            return cal.is_extended(s.ts)
        # A snapshot taken exactly at the close (open on [open, close)) still reports that session.
        return cal.session_at(s.ts) is not None or cal.session_at(s.ts - timedelta(seconds=1)) is not None

    def _buckets(self, acct: Account, snaps: list[Snapshot], hq: HistoryQuery) -> list[tuple[int, Snapshot]]:
        tf_s = TIMEFRAMES_S[hq.timeframe]
        buckets: dict[int, Snapshot] = {}
        for s in snaps:
            if not self._reported(acct, s, hq):
                continue
            if tf_s == 86400:
                key = int(ny_midnight(s.ts.astimezone(NY).date()).timestamp())
            else:
                key = int(s.ts.timestamp()) // tf_s * tf_s
            buckets[key] = s  # the last snapshot in each bucket is its equity
        return sorted(buckets.items())

    async def portfolio_history(self, request: web.Request) -> web.Response:
        acct: Account = request["account"]
        now = self.sim.sim_now()
        hq = self._query(acct, request.query, now)
        snaps = [s for s in acct.snapshots if hq.start <= s.ts <= hq.end]
        if hq.end >= now:
            snaps.append(Snapshot(now, self.sim.engine.equity(acct), acct.cashflow, dict(acct.flows)))
        before = [s for s in acct.snapshots if s.ts < hq.start]
        points = self._buckets(acct, snaps, hq)
        base = before[-1] if before else (snaps[0] if snaps else None)  # the equity the period starts from
        body = history_json(points, base, hq)
        today_key = int(ny_midnight(now.astimezone(NY).date()).timestamp()) if hq.timeframe == "1D" else None
        self.sim.faults.shape_history(body, today_key=today_key)
        return as_json(body)


def history_json(points: list[tuple[int, Snapshot]], base: Snapshot | None, hq: HistoryQuery) -> dict[str, Any]:
    """The response body: equity, P&L net of transfers, and the per-type cash flows of each bucket."""
    base_value = base.equity if base is not None else ZERO
    ref = base
    types = sorted({k for _, s in points for k in s.flows} | (set(base.flows) if base else set()))
    cashflow: dict[str, list[float]] = {t: [] for t in types}
    equity, pl, pct = [], [], []
    prev = base
    day_ref = base
    for ts, s in points:
        if hq.per_day and prev is not None and datetime.fromtimestamp(ts, NY).date() != _day(prev):
            day_ref = prev  # intraday P&L restarts from the previous day's last equity
        anchor = day_ref if hq.per_day else ref
        anchor_equity = anchor.equity if anchor is not None else s.equity
        anchor_flow = anchor.cashflow if anchor is not None else s.cashflow
        change = s.equity - anchor_equity - (s.cashflow - anchor_flow)
        equity.append(_cents(s.equity))
        pl.append(_cents(change))
        pct.append(_pct(change, anchor_equity))
        for t in types:
            before = prev.flows.get(t, ZERO) if prev is not None else ZERO
            cashflow[t].append(_cents(s.flows.get(t, ZERO) - before))
        prev = s
    return {
        "timestamp": [ts for ts, _ in points],
        "equity": equity,
        "profit_loss": pl,
        "profit_loss_pct": pct,
        "base_value": _cents(base_value) if base is not None else None,
        "base_value_asof": _day(base).isoformat() if base is not None else None,
        "timeframe": hq.timeframe,
        "cashflow": {t: v for t, v in cashflow.items() if any(v)},
    }


def _day(s: Snapshot) -> date:
    return s.ts.astimezone(NY).date()
