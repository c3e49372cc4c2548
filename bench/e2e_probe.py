"""What :mod:`bench.e2e` watches: the page's positions grid (a ``MutationObserver``), the derived
table (polled every 20 ms), the ZMQ price feed (every tick, timestamped on arrival) and the rate
limit headers' ground truth (the destinations' heartbeat ``details.budget``)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

CHROME_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,1000")

# Records (epoch ms, symbol, column, text) whenever a row's quantity or mark cell changes.
OBSERVER_JS = r"""
const root = document.getElementById('dest-positions');
if (!root) { return false; }
window.__chObs = window.__chObs || [];
const seen = {};
function scan() {
  const t = performance.timeOrigin + performance.now();
  for (const row of root.querySelectorAll('.ag-center-cols-container .ag-row[row-id]')) {
    const sym = row.getAttribute('row-id');
    for (const col of ['qty', 'mark_price']) {
      const cell = row.querySelector('[col-id="' + col + '"]');
      if (!cell) { continue; }
      const v = cell.textContent.replace(/[,\s$]/g, '').replace('\u2212', '-');
      const key = sym + '|' + col;
      if (v && seen[key] !== v) { seen[key] = v; window.__chObs.push([t, sym, col, v]); }
    }
  }
}
new MutationObserver(scan).observe(root, {subtree: true, childList: true, characterData: true});
scan();
// the page's main thread busy for 50 ms or more (a chart drawn, a grid rendered): what a push waits for
window.__chLong = window.__chLong || [];
try {
  new PerformanceObserver(function (list) {
    for (const e of list.getEntries()) { window.__chLong.push([performance.timeOrigin + e.startTime, e.duration]); }
  }).observe({entryTypes: ['longtask']});
} catch (e) { /* no longtask timing in this browser */ }
return true;
"""

DRAIN_JS = """const o = window.__chObs || []; window.__chObs = [];
const l = window.__chLong || []; window.__chLong = [];
const p = (window.chSSE && window.chSSE.drainPushLog) ? window.chSSE.drainPushLog() : [];
return [o, p, l];"""


def chrome() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in CHROME_ARGS:
        options.add_argument(arg)  # type: ignore[no-untyped-call]
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


class PageLog:
    """The observer's records, drained from the page: ``(epoch s, symbol, column, value)``."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.rows: list[tuple[float, str, str, float]] = []
        # pushed events: (arrived, applied, hub NOTIFY, drawn) epoch s; None where the tree has no timings
        self.pushes: list[tuple[float, float, float | None, float | None]] = []
        self.long_tasks: list[tuple[float, float]] = []  # (start epoch s, duration s)

    def drain(self) -> int:
        """Fetch what the page observed since the last drain; returns how many records came."""
        got, pushes, longs = self.driver.execute_script(DRAIN_JS)
        for arrived, applied, t_hub, drawn, _v in pushes:
            self.pushes.append((arrived / 1000, applied / 1000, t_hub, drawn))
        self.long_tasks += [(start / 1000, ms / 1000) for start, ms in longs]
        for t, sym, col, text in got:
            value = number(text)
            if value is not None:
                self.rows.append((t / 1000, sym, col, value))
        return len(got)

    def first(self, symbol: str, col: str, ok: Any) -> float | None:
        return next((t for t, s, c, v in sorted(self.rows) if s == symbol and c == col and ok(v)), None)

    def push_before(self, seen_s: float) -> tuple[float, float, float | None, float | None] | None:
        """The last pushed event applied before ``seen_s`` (the one that drew the change), if any."""
        return max((p for p in self.pushes if p[1] <= seen_s + 0.002), default=None, key=lambda p: p[1])

    def busy_s(self, start_s: float, end_s: float) -> float:
        """How long the page's main thread ran long tasks within ``[start_s, end_s]``."""
        return sum(max(0.0, min(end_s, t + d) - max(start_s, t)) for t, d in self.long_tasks)


class TablePoller:
    """Polls ``open_trades_<slug>`` every ``period_s``: when did each (symbol, qty) and (symbol, mark)
    first appear?"""

    def __init__(self, dsn: str, slug: str, period_s: float = 0.02) -> None:
        from core.db import connect
        from core.destinations import open_trades_table

        self.seen: list[tuple[float, str, str, float]] = []
        self._last: dict[tuple[str, str], float] = {}
        self._sql = f'SELECT symbol, qty, mark_price FROM public."{open_trades_table(slug)}"'
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
            for sym, qty, mark in rows:
                for col, value in (("qty", qty), ("mark_price", mark)):
                    if value is None:
                        continue
                    v = float(value)
                    if self._last.get((sym, col)) != v:
                        self._last[(sym, col)] = v
                        self.seen.append((now, sym, col, v))

    def first(self, symbol: str, col: str, ok: Any) -> float | None:
        return next((t for t, s, c, v in sorted(self.seen) if s == symbol and c == col and ok(v)), None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._conn.close()


class TickRecorder:
    """Every tick of the simulator's ZMQ feed: ``(arrival epoch s, symbol, price)``."""

    def __init__(self, endpoint: str) -> None:
        import zmq

        self.ticks: list[tuple[float, str, float]] = []
        self._ctx: Any = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._sock.setsockopt(zmq.RCVTIMEO, 200)
        self._sock.connect(endpoint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import zmq

        while not self._stop.is_set():
            try:
                _topic, body = self._sock.recv_multipart()
            except zmq.Again:
                continue
            now = time.time()
            data = json.loads(body)
            self.ticks.append((now, str(data["symbol"]), float(data["price"])))

    def first(self, symbol: str, price: float, after_s: float) -> float | None:
        return next((t for t, s, p in self.ticks if s == symbol and t >= after_s and abs(p - price) < 1e-9), None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close(0)


def rest_budget(stack: Any) -> dict[str, dict[str, Any]]:
    """Each destination's REST budget as its ingester last reported it (ingester and manager share it)."""
    rows = stack.query("SELECT destination, details::text FROM account_activities.heartbeats WHERE service = 'ingester'")
    out = {}
    for slug, details in rows:
        d = json.loads(details or "{}") or {}
        budget = d.get("budget")
        if budget:
            out[slug] = budget
        elif isinstance(d.get("broker"), dict):  # a tree before issue 18: the ingester's own calls only
            out[slug] = {"calls_total": d["broker"].get("requests", 0), "rate_limited": d["broker"].get("rate_limited")}
    return out


def has_provisional(stack: Any) -> bool:
    """Whether the stack's schema has ``provisional_fills`` (the tree under test predates issue 18 if not)."""
    return bool(stack.query("SELECT to_regclass('account_activities.provisional_fills') IS NOT NULL")[0][0])
