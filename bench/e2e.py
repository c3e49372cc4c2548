"""Freshness as a trader sees it: a fill, and a price tick, in the simulator → visible in the positions
grid of an open destination page in headless Chromium. ``python -m bench e2e [--quick]``: SSE and
polling with one destination, and (full run only) SSE with 10 destinations trading at once.

The whole stack runs through :mod:`bench.stack` (production intervals: ``UI_SNAPSHOT_SEC`` = 0.5,
``FLUSH_INTERVAL_S`` = 0.25, ``REST_BUDGET_CALLS_PER_MIN`` = 20) with the simulator's bot trading
(``BOT_RATE_PER_S``) on every account. A resting limit order far from the market on each of
``SYMBOLS`` keeps the bot off them in the measured account, so only our fills move their quantity.

- **Fills**: a paced loop asks the simulator for ``FILLS`` market fills at ``RATE_PER_S``
  (``POST /admin/fill``, one share each, rotating over ``SYMBOLS``). Fill *i* (symbol s, cumulative
  quantity q) is visible at the first observation of s with quantity >= q; its freshness is that time
  minus the simulator's ``filled_at`` (the simulator's clock is the wall clock at speed 1).
- **Ticks**: then ``TICKS`` price moves at the same rate (``POST /admin/price`` pins a new price on one
  of ``SYMBOLS``); the tick's time is its arrival on our own ZMQ subscriber; it is visible at the first
  observation of the symbol's mark equal to the new price (the row's P&L is computed with it).

Stages, per event: simulator → raw store (fills: the first of ``provisional_fills``/``activities``
``ingested_at``; ticks: none, the manager holds marks in memory) → the row in ``open_trades_<slug>``
(polled every 20 ms from this process: manager) → DOM (dashboard callbacks + browser: web).

Also measured: REST calls per minute per destination (the ingester's heartbeat ``details.budget``:
calls in the last 60 s at the end, and the most in any 60 s), 429s, and fills lost or duplicated
against the simulator's ground truth (effective fills: REST + provisional, counted once each).

Targets (issue 18): p95 <= 0.30 s over SSE for fills and ticks; polling p95 <= interval + 0.3 s;
<= 20 REST calls/min/destination; 0 fills lost or duplicated.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import requests

from bench.e2e_probe import OBSERVER_JS, PageLog, TablePoller, TickRecorder, chrome, has_provisional, rest_budget
from bench.stack import Stack, StackConfig, percentiles

RATE_PER_S = 5.0
FILLS_FULL, FILLS_QUICK = 200, 40
TICKS_FULL, TICKS_QUICK = 200, 40
BOT_RATE_PER_S = 2.0
SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN")
UI_SNAPSHOT_SEC = 0.5  # the production default (core.settings)
TARGET_SSE_P95_S = 0.30
TARGET_POLL_P95_S = UI_SNAPSHOT_SEC + 0.3
TARGET_REST_PER_MIN = 20
SETTLE_S = 20.0  # after the last event: how long to wait for stragglers before counting them lost


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def _hold_symbols(stack: Stack) -> None:
    """A buy limit at $1 per symbol: the bot leaves symbols with an open order alone."""
    headers = {"APCA-API-KEY-ID": "PKBENCH00000000000", "APCA-API-SECRET-KEY": "bench-secret-000000"}
    for sym in SYMBOLS:
        requests.post(f"{stack.rest_url}/v2/orders", headers=headers, timeout=10, json={
            "symbol": sym, "qty": "1", "side": "buy", "type": "limit", "limit_price": "1",
            "time_in_force": "gtc"}).raise_for_status()


def _paced(n: int, rate_per_s: float, step: Any, page: PageLog) -> float:
    t_start = time.monotonic()
    for i in range(n):
        due = t_start + i / rate_per_s
        while (now := time.monotonic()) < due:
            time.sleep(min(0.05, due - now))
        step(i)
        if i % 10 == 9:
            page.drain()
    return n / max(1e-9, time.monotonic() - t_start)


def _fills(stack: Stack, account: str, n: int, rate_per_s: float, page: PageLog) -> tuple[list[dict[str, Any]], float]:
    sent: list[dict[str, Any]] = []
    cum = dict.fromkeys(SYMBOLS, 0)

    def step(i: int) -> None:
        sym = SYMBOLS[i % len(SYMBOLS)]
        order = stack.admin("/fill", {"account": account, "symbol": sym, "side": "buy", "qty": "1"})
        cum[sym] += 1
        sent.append({"symbol": sym, "qty": cum[sym], "at": _epoch(order["filled_at"]), "order_id": order["id"]})

    rate = _paced(n, rate_per_s, step, page)
    try:
        stack.wait_for(lambda: page.drain() >= 0 and all(
            page.first(s, "qty", lambda v, q=q: v >= q) for s, q in cum.items() if q), SETTLE_S, "every fill visible", 0.25)
    except TimeoutError:
        pass  # counted as missing
    return sent, rate


def _ticks(stack: Stack, n: int, rate_per_s: float, page: PageLog) -> tuple[list[dict[str, Any]], float]:
    sent: list[dict[str, Any]] = []

    def step(i: int) -> None:
        sym = SYMBOLS[i % len(SYMBOLS)]
        price = round(100.0 + 10.0 * (i % len(SYMBOLS)) + 0.01 * (i + 1), 2)  # never repeats per symbol
        sent.append({"symbol": sym, "price": price, "asked": time.time()})
        stack.admin("/price", {"symbol": sym, "price": str(price)})

    rate = _paced(n, rate_per_s, step, page)
    last = {e["symbol"]: e["price"] for e in sent}
    try:
        stack.wait_for(lambda: page.drain() >= 0 and all(
            page.first(s, "mark_price", lambda v, p=p: abs(v - p) < 0.005) for s, p in last.items()),
            SETTLE_S, "every tick visible", 0.25)
    except TimeoutError:
        pass
    for sym in SYMBOLS:
        stack.admin("/price", {"symbol": sym, "price": None})
    return sent, rate


def _fill_truth(stack: Stack, account: str, slug: str) -> dict[str, int]:
    """Fills of the measured account: the simulator's, the stored REST ones, the effective ones
    (what the manager books), and the provisional ones still unconfirmed. The bot stops first, so
    the truth is final; the stream's last fills reach the store within a second."""
    stack.admin("/bot", {"rate": 0})
    time.sleep(1.0)
    truth = stack.admin(f"/ground-truth?account={account}")["accounts"][account]
    want = sum(1 for a in truth["activities"] if a.get("activity_type") == "FILL")

    def counts() -> tuple[int, int, int]:
        if not has_provisional(stack):
            (rest,) = stack.query("SELECT count(*) FROM account_activities.activities WHERE destination = %s "
                                  "AND activity_type = 'FILL'", (slug,))[0]
            return int(rest), int(rest), 0
        (rest, effective, open_) = stack.query(
            """SELECT (SELECT count(*) FROM account_activities.activities WHERE destination = %s AND activity_type = 'FILL'),
                      (SELECT count(*) FROM account_activities.activities WHERE destination = %s AND activity_type = 'FILL'
                              AND confirms IS NULL)
                      + (SELECT count(*) FROM account_activities.provisional_fills WHERE destination = %s AND NOT superseded),
                      (SELECT count(*) FROM account_activities.provisional_fills WHERE destination = %s
                              AND confirmed_by IS NULL AND NOT superseded)""", (slug, slug, slug, slug))[0]
        return int(rest), int(effective), int(open_)

    try:  # confirmations trail at the budget's pace: wait for REST to hold every fill
        stack.wait_for(lambda: counts()[0] >= want and counts()[2] == 0, 90, "every fill confirmed by REST", 1.0)
    except TimeoutError:
        pass
    rest, effective, unconfirmed = counts()
    return {"truth": want, "rest": rest, "effective": effective, "unconfirmed": unconfirmed}


def whatif_workers_args(fill_catchup_min_interval_s: float) -> tuple[str, ...]:
    """``python`` arguments running ``python -m workers all`` with another ingester fill catch-up
    interval (``IngesterOptions.fill_catchup_min_interval_s``, not a setting): for what-if runs."""
    code = ("import functools, runpy, workers.ingester as m; "
            "m.run_ingester = functools.partial(m.run_ingester, options=m.IngesterOptions("
            f"fill_catchup_min_interval_s={fill_catchup_min_interval_s!r})); "
            "import sys; sys.argv = ['workers', 'all']; runpy.run_module('workers', run_name='__main__')")
    return ("-c", code)


def measure(sse: bool, fills: int, ticks: int, *, destinations: int = 1, rate_per_s: float = RATE_PER_S,
            bot_rate_per_s: float = BOT_RATE_PER_S, env: dict[str, str] | None = None,
            workers_args: tuple[str, ...] | None = None) -> dict[str, Any]:
    """One run of the stack: freshness percentiles (seconds), stage breakdown, REST use, fill counts.
    ``env`` adds settings for the workers and the web process (what-if runs, e.g. ``UI_SNAPSHOT_SEC``)."""
    env = {"UI_SNAPSHOT_SEC": str(UI_SNAPSHOT_SEC), "DISABLE_SSE": "false" if sse else "true", **(env or {})}
    cfg = StackConfig(destinations=destinations, env=env, sim_args=("--tick-ms", "100"),
                      workers_args=workers_args or StackConfig().workers_args)
    with Stack(cfg) as stack:
        stack.wait_ready(90)
        slug, account = stack.slugs[0], stack.names[0]
        _hold_symbols(stack)  # before the bot starts, so it never holds our symbols in this account
        stack.admin("/bot", {"rate": bot_rate_per_s})
        driver = chrome()
        table = TablePoller(stack.dsn, slug)
        feed = TickRecorder(str(stack.sim_state["zmq_url"]))
        page = PageLog(driver)
        t0 = time.monotonic()
        try:
            driver.get(f"{stack.web_url}/destination/{slug}")
            stack.wait_for(lambda: driver.execute_script(OBSERVER_JS), 60, "positions grid in the page", 0.2)
            time.sleep(2.0)  # first render and the SSE connection settle
            page.drain()
            page.rows.clear()
            held = {s: float(q) for s, q in stack.open_positions(slug).items() if s in SYMBOLS}
            if any(held.values()):
                raise RuntimeError(f"the measured account already holds {held}: quantities would not tell our fills")
            sent_fills, fill_rate = _fills(stack, account, fills, rate_per_s, page)
            sent_ticks, tick_rate = _ticks(stack, ticks, rate_per_s, page)
            counts = _fill_truth(stack, account, slug)
            budget = rest_budget(stack)
        finally:
            feed.close()
            table.close()
            driver.quit()
        minutes = (time.monotonic() - t0) / 60.0
        stream = ("UNION ALL SELECT order_id, ingested_at FROM account_activities.provisional_fills "
                  "WHERE destination = %s" if has_provisional(stack) else "")
        ingested = dict(stack.query(
            f"""SELECT order_id::text, extract(epoch FROM min(ingested_at))::float8 FROM (
                    SELECT order_id, ingested_at FROM account_activities.activities WHERE destination = %s {stream}
                ) AS f GROUP BY order_id""", (slug, slug) if stream else (slug,)))
        errors = {n: stack.error_lines(n) for n in ("simulator", "workers", "web")}
    fills_r = _fill_latencies(sent_fills, page, table, ingested)
    ticks_r = _tick_latencies(sent_ticks, page, table, feed)
    return {"fills": fills_r, "ticks": ticks_r, "fill_rate_per_s": round(fill_rate, 2),
            "tick_rate_per_s": round(tick_rate, 2), "counts": counts, "budget": budget, "minutes": minutes,
            "log_errors": sum(len(v) for v in errors.values()),
            "log_error_sample": [x for v in errors.values() for x in v][:3]}


PUSH_STAGES = ("notify", "draw", "net", "apply", "dom", "busy")


def _push_stages(page: PageLog, t_row: float, seen: float, acc: dict[str, list[float]]) -> None:
    """Split the web stage of one event by the push that drew it: manager commit -> the hub's NOTIFY
    (notify), -> rows drawn on the server (draw), -> arrival in the page (net), -> the store set (apply),
    -> the DOM changed (dom); and how long the page's main thread ran long tasks meanwhile (busy)."""
    push = page.push_before(seen)
    if push is None:
        return  # polling
    arrived, applied, t_hub, drawn = push
    if t_hub is None or drawn is None or arrived < t_row - 1.0:
        return  # a tree without timings, or a change the push did not draw
    for name, value in (("notify", t_hub - t_row), ("draw", drawn - t_hub), ("net", arrived - drawn),
                        ("apply", applied - arrived), ("dom", seen - applied), ("busy", page.busy_s(t_row, seen))):
        acc[name].append(max(0.0, value))


def _fill_latencies(sent: list[dict[str, Any]], page: PageLog, table: TablePoller,
                    ingested: dict[str, float]) -> dict[str, Any]:
    total, ingest, manager, web = [], [], [], []
    push: dict[str, list[float]] = {k: [] for k in PUSH_STAGES}
    missing = 0
    for f in sent:
        seen = page.first(f["symbol"], "qty", lambda v, q=f["qty"]: v >= q)
        if seen is None:
            missing += 1
            continue
        total.append(seen - f["at"])
        t_ing = ingested.get(f["order_id"])
        t_row = table.first(f["symbol"], "qty", lambda v, q=f["qty"]: v >= q)
        if t_ing is not None and t_row is not None:
            ingest.append(max(0.0, t_ing - f["at"]))
            manager.append(max(0.0, t_row - t_ing))
            web.append(max(0.0, seen - t_row))
            _push_stages(page, t_row, seen, push)
    return {"total": percentiles(total), "ingest": percentiles(ingest), "manager": percentiles(manager),
            "web": percentiles(web), "missing": missing, "push": {k: percentiles(v) for k, v in push.items() if v}}


def _tick_latencies(sent: list[dict[str, Any]], page: PageLog, table: TablePoller,
                    feed: TickRecorder) -> dict[str, Any]:
    total, manager, web = [], [], []
    push: dict[str, list[float]] = {k: [] for k in PUSH_STAGES}
    missing = 0
    for k in sent:
        def same(v: float, p: float = k["price"]) -> bool:
            return abs(v - p) < 0.005

        t_tick = feed.first(k["symbol"], k["price"], k["asked"] - 0.5) or k["asked"]
        seen = page.first(k["symbol"], "mark_price", same)
        t_row = table.first(k["symbol"], "mark_price", same)
        if seen is None:
            missing += 1  # a later tick of the symbol came before this one was drawn (conflated)
            continue
        total.append(max(0.0, seen - t_tick))
        if t_row is not None:
            manager.append(max(0.0, t_row - t_tick))
            web.append(max(0.0, seen - t_row))
            _push_stages(page, t_row, seen, push)
    return {"total": percentiles(total), "manager": percentiles(manager), "web": percentiles(web),
            "conflated": missing, "push": {k: percentiles(v) for k, v in push.items() if v}}


def _rows(mode: str, r: dict[str, Any], destinations: int) -> list[dict[str, Any]]:
    target = TARGET_SSE_P95_S if mode == "sse" else TARGET_POLL_P95_S
    tag = f"{mode}_d{destinations}"
    common = {"mode": mode, "destinations": destinations, "fill_rate_per_s": r["fill_rate_per_s"],
              "bot_rate_per_s": BOT_RATE_PER_S}
    rows: list[dict[str, Any]] = []
    for kind in ("fills", "ticks"):
        f = r[kind]["total"]
        rows += [
            {"name": f"e2e.{kind}_{tag}_p50_s", "value": round(f["p50"], 3), "unit": "s", "n": f["n"], **common},
            {"name": f"e2e.{kind}_{tag}_p95_s", "value": round(f["p95"], 3), "unit": "s", "target": target,
             "ok": f["p95"] <= target, **common},
            {"name": f"e2e.{kind}_{tag}_max_s", "value": round(f["max"], 3), "unit": "s", **common},
        ]
        for stage in ("ingest", "manager", "web"):
            if stage in r[kind]:
                s = r[kind][stage]
                rows.append({"name": f"e2e.{kind}_{tag}_stage_{stage}_p50_s", "value": round(s["p50"], 3), "unit": "s",
                             "p95": round(s["p95"], 3), "n": s["n"], **common})
        for stage, s in r[kind].get("push", {}).items():
            rows.append({"name": f"e2e.{kind}_{tag}_push_{stage}_p50_s", "value": round(s["p50"], 3), "unit": "s",
                         "p95": round(s["p95"], 3), "n": s["n"], **common})
    c = r["counts"]
    lost = max(0, c["truth"] - c["effective"])
    dup = max(0, c["effective"] - c["truth"])
    rows += [
        {"name": f"e2e.fills_{tag}_missing_on_page", "value": r["fills"]["missing"], "unit": "fills", "target": 0,
         "ok": r["fills"]["missing"] == 0, **common},
        {"name": f"e2e.fills_{tag}_lost_or_duplicated", "value": lost + dup, "unit": "fills", "target": 0,
         "ok": lost + dup == 0, "lost": lost, "duplicated": dup, **c, **common},
        {"name": f"e2e.ticks_{tag}_conflated", "value": r["ticks"]["conflated"], "unit": "ticks", **common},
    ]
    for slug, b in sorted(r["budget"].items()):
        avg = round(b.get("calls_total", 0) / max(r["minutes"], 1e-9), 1)
        peak = b.get("max_calls_in_window")  # None: a tree without the budget (only the average is known)
        rows.append({"name": f"e2e.rest_{tag}_calls_per_min", "value": b.get("calls_per_min", avg), "unit": "calls/min",
                     "destination": slug, "max_in_any_min": peak, "calls_total": b.get("calls_total"),
                     "avg_per_min": avg, "budget_per_min": b.get("budget_per_min"),
                     "rate_limited_429": b.get("rate_limited"), "target": TARGET_REST_PER_MIN,
                     "ok": (avg if peak is None else peak) <= TARGET_REST_PER_MIN, **common})
    rows.append({"name": f"e2e.{tag}_log_errors", "value": r["log_errors"], "unit": "lines",
                 "sample": r["log_error_sample"], **common})
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    fills, ticks = (FILLS_QUICK, TICKS_QUICK) if quick else (FILLS_FULL, TICKS_FULL)
    rows: list[dict[str, Any]] = []
    plan = [("sse", 1), ("poll", 1)] + ([] if quick else [("sse", 10)])
    for mode, destinations in plan:
        rows += _rows(mode, measure(mode == "sse", fills, ticks, destinations=destinations), destinations)
    return rows
