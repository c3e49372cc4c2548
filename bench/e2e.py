"""Freshness as a trader sees it: a fill in the simulator → the row visible in the positions grid of an
open destination page in headless Chromium. ``python -m bench e2e [--quick]``.

The whole stack runs through :mod:`bench.stack` (one destination, production intervals:
``UI_SNAPSHOT_SEC`` = 0.5, ``FLUSH_INTERVAL_S`` = 0.25). A paced loop asks the simulator for
``FILLS`` market fills at ``RATE_PER_S`` (``POST /admin/fill``, one share each, rotating over
``SYMBOLS`` so every row stays in the grid's viewport). In the page, a ``MutationObserver`` on the
``#dest-positions`` grid records ``(epoch ms, symbol, qty text)`` whenever a row's quantity cell
changes. Fill *i* (symbol s, cumulative quantity q) is visible at the first observation of s with
quantity >= q; its freshness is that time minus the simulator's ``filled_at`` (the simulator's clock
is the wall clock at speed 1, the browser's ``performance.timeOrigin + now()`` the same clock).

Run twice: with SSE (the page re-asks on each ``pos_channel`` hint) and with ``DISABLE_SSE=true``
(``dcc.Interval`` polling every ``UI_SNAPSHOT_SEC``). Where the time goes, per fill: simulator fill →
``activities.ingested_at`` (ingester), → the row in ``open_trades_<slug>`` with the new quantity (seen
by polling the table every 20 ms from this process: manager), → DOM (dashboard callbacks + browser).

Targets (issue 9): p95 <= 1.0 s with SSE; p95 <= poll interval + 0.5 s polling.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

from bench.stack import Stack, StackConfig, percentiles

RATE_PER_S = 5.0
FILLS_FULL = 200
FILLS_QUICK = 40
SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN")
UI_SNAPSHOT_SEC = 0.5  # the production default (core.settings)
TARGET_SSE_P95_S = 1.0
TARGET_POLL_P95_S = UI_SNAPSHOT_SEC + 0.5
SETTLE_S = 15.0  # after the last fill: how long to wait for stragglers before counting them lost

CHROME_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,1000")

OBSERVER_JS = r"""
const root = document.getElementById('dest-positions');
if (!root) { return false; }
window.__chObs = window.__chObs || [];
const seen = {};
function scan() {
  const t = performance.timeOrigin + performance.now();
  for (const row of root.querySelectorAll('.ag-center-cols-container .ag-row[row-id]')) {
    const cell = row.querySelector('[col-id="qty"]');
    if (!cell) { continue; }
    const sym = row.getAttribute('row-id');
    const q = cell.textContent.replace(/[,\s]/g, '').replace('\u2212', '-');
    if (q && seen[sym] !== q) { seen[sym] = q; window.__chObs.push([t, sym, q]); }
  }
}
new MutationObserver(scan).observe(root, {subtree: true, childList: true, characterData: true});
scan();
return true;
"""

DRAIN_JS = "const o = window.__chObs || []; window.__chObs = []; return o;"


def chrome() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


class TablePoller:
    """Polls ``open_trades_<slug>`` every ``period_s``: when did each (symbol, qty) first appear?"""

    def __init__(self, dsn: str, slug: str, period_s: float = 0.02) -> None:
        from core.db import connect
        from core.destinations import open_trades_table

        self.seen: list[tuple[float, str, float]] = []
        self._last: dict[str, float] = {}
        self._sql = f'SELECT symbol, qty FROM public."{open_trades_table(slug)}"'
        self._period_s = period_s
        self._stop = threading.Event()
        self._conn = connect(dsn)
        self._conn.autocommit = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            with self._conn.cursor() as cur:
                cur.execute(self._sql)
                rows = cur.fetchall()
            now = time.time()
            for sym, qty in rows:
                q = float(qty)
                if self._last.get(sym) != q:
                    self._last[sym] = q
                    self.seen.append((now, sym, q))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._conn.close()


def whatif_workers_args(fill_catchup_min_interval_s: float) -> tuple[str, ...]:
    """``python`` arguments running ``python -m workers all`` with another ingester fill catch-up
    interval (``IngesterOptions.fill_catchup_min_interval_s``, not a setting): for what-if runs."""
    code = ("import functools, runpy, workers.ingester as m; "
            "m.run_ingester = functools.partial(m.run_ingester, options=m.IngesterOptions("
            f"fill_catchup_min_interval_s={fill_catchup_min_interval_s!r})); "
            "import sys; sys.argv = ['workers', 'all']; runpy.run_module('workers', run_name='__main__')")
    return ("-c", code)


def measure(sse: bool, fills: int, rate_per_s: float = RATE_PER_S,
            workers_args: tuple[str, ...] | None = None) -> dict[str, Any]:
    """One run of the stack; returns freshness percentiles (seconds) and the stage breakdown."""
    env = {"UI_SNAPSHOT_SEC": str(UI_SNAPSHOT_SEC), "DISABLE_SSE": "false" if sse else "true"}
    cfg = StackConfig(destinations=1, env=env)
    if workers_args:
        cfg = StackConfig(destinations=1, env=env, workers_args=workers_args)
    with Stack(cfg) as stack:
        stack.wait_ready(60)
        slug, account = stack.slugs[0], stack.names[0]
        driver = chrome()
        recorder = TablePoller(stack.dsn, slug)
        try:
            driver.get(f"{stack.web_url}/destination/{slug}")
            stack.wait_for(lambda: driver.execute_script(OBSERVER_JS), 60, "positions grid in the page", 0.2)
            time.sleep(2.0)  # first render and the SSE connection settle
            driver.execute_script(DRAIN_JS)
            sent: list[dict[str, Any]] = []
            cum: dict[str, int] = dict.fromkeys(SYMBOLS, 0)
            observations: list[tuple[float, str, float]] = []
            t_start = time.monotonic()
            for i in range(fills):
                due = t_start + i / rate_per_s
                while (now := time.monotonic()) < due:
                    time.sleep(min(0.05, due - now))
                sym = SYMBOLS[i % len(SYMBOLS)]
                order = stack.admin("/fill", {"account": account, "symbol": sym, "side": "buy", "qty": "1"})
                cum[sym] += 1
                sent.append({"symbol": sym, "qty": cum[sym], "filled_at": _epoch(order["filled_at"]),
                             "order_id": order["id"]})
                if i % 10 == 9:
                    observations += [(t / 1000, s, float(q)) for t, s, q in driver.execute_script(DRAIN_JS)]
            achieved_rate = fills / max(1e-9, time.monotonic() - t_start)

            def all_seen() -> bool:
                observations.extend((t / 1000, s, float(q)) for t, s, q in driver.execute_script(DRAIN_JS))
                top = {}
                for _, s, q in observations:
                    top[s] = max(top.get(s, 0.0), q)
                return all(top.get(s, 0.0) >= q for s, q in cum.items() if q)

            try:
                stack.wait_for(all_seen, SETTLE_S, "every fill visible", 0.25)
            except TimeoutError:
                pass  # counted as missing below
        finally:
            recorder.close()
            driver.quit()
        ingested = dict(stack.query(
            "SELECT order_id::text, extract(epoch FROM min(ingested_at))::float8 FROM account_activities.activities "
            "WHERE destination = %s AND activity_type = 'FILL' GROUP BY order_id", (slug,)))
        errors = {n: stack.error_lines(n) for n in ("simulator", "workers", "web")}

    latencies, ingest_s, manager_s, web_s = [], [], [], []
    missing = 0
    table_seen = sorted(recorder.seen)
    for f in sent:
        seen = next((t for t, s, q in sorted(observations) if s == f["symbol"] and q >= f["qty"]), None)
        if seen is None:
            missing += 1
            continue
        latencies.append(seen - f["filled_at"])
        t_ing = ingested.get(f["order_id"])
        if t_ing is not None:
            ingest_s.append(t_ing - f["filled_at"])
            t_row = next((t for t, s, q in table_seen if s == f["symbol"] and q >= f["qty"]), None)
            if t_row is not None:
                manager_s.append(max(0.0, t_row - t_ing))
                web_s.append(max(0.0, seen - t_row))
    return {
        "fills": fills, "rate_per_s": round(achieved_rate, 2), "missing": missing,
        "freshness": percentiles(latencies), "stage_ingest": percentiles(ingest_s),
        "stage_manager": percentiles(manager_s), "stage_web": percentiles(web_s),
        "log_errors": sum(len(v) for v in errors.values()), "log_error_sample": [x for v in errors.values() for x in v][:3],
    }


def run(quick: bool) -> list[dict[str, Any]]:
    fills = FILLS_QUICK if quick else FILLS_FULL
    rows: list[dict[str, Any]] = []
    for sse in (True, False):
        mode = "sse" if sse else "poll"
        target = TARGET_SSE_P95_S if sse else TARGET_POLL_P95_S
        r = measure(sse, fills)
        f = r["freshness"]
        common = {"mode": mode, "fills": fills, "rate_per_s": r["rate_per_s"]}
        rows += [
            {"name": f"e2e.freshness_{mode}_p50_s", "value": round(f["p50"], 3), "unit": "s", **common},
            {"name": f"e2e.freshness_{mode}_p95_s", "value": round(f["p95"], 3), "unit": "s", "target": target,
             "ok": f["p95"] <= target, **common},
            {"name": f"e2e.freshness_{mode}_max_s", "value": round(f["max"], 3), "unit": "s", **common},
            {"name": f"e2e.freshness_{mode}_missing", "value": r["missing"], "unit": "fills", "target": 0,
             "ok": r["missing"] == 0, **common},
            {"name": f"e2e.freshness_{mode}_log_errors", "value": r["log_errors"], "unit": "lines",
             "sample": r["log_error_sample"], **common},
        ]
        for stage in ("ingest", "manager", "web"):
            s = r[f"stage_{stage}"]
            rows.append({"name": f"e2e.{mode}_stage_{stage}_p50_s", "value": round(s["p50"], 3), "unit": "s",
                         "p95": round(s["p95"], 3), "n": s["n"], **common})
    return rows
