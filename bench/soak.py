"""Soak: the whole stack under faults for 15 minutes (``--quick``: 2). ``python -m bench soak [--quick]``.

The stack (:mod:`bench.stack`): 10 destinations, the simulator with faults on (a share of REST calls
answer 429/500/503 or hang, every trade_updates socket is dropped periodically, updates are
delayed, duplicated and reordered), its bot trading lightly (brackets, limits, partial fills), the
workers, and the web process with ``WEB_SESSIONS`` polling dashboard sessions (:mod:`bench.load`).
A paced driver adds ``RATE_PER_S`` market fills per second across the destinations
(``POST /admin/fill``: random account, symbol, side and size).

Measured:

- RSS of every process (simulator, workers, web, postgres: postmaster + backends summed) each
  minute (``--quick``: every 15 s); growth = least-squares slope over the second half of the run;
- exactly-once: after the load stops, the faults are switched off and the workers get
  ``CONVERGE_S`` to catch up; then every account's activities in the database are compared with the
  simulator's ground truth (``GET /admin/ground-truth``): lost = in the truth, not stored;
  duplicated = stored more than once or stored but not in the truth; plus orders, and open positions
  (``open_trades_<slug>`` against the broker's positions);
- log lines at ERROR/CRITICAL or tracebacks, split into those explained by an injected fault
  (``INJECTED_RE``) and the rest, which must be 0.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from collections import Counter
from decimal import Decimal
from typing import Any

from bench.stack import Stack, StackConfig
from core.destinations import open_trades_table

DESTINATIONS = 10
RATE_PER_S = 20.0
DURATION_S_FULL = 15 * 60.0
DURATION_S_QUICK = 120.0
WEB_SESSIONS = 5
CONVERGE_S = 150.0
SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "SPY", "QQQ", "JPM")
FAULT_ARGS = ("--rest-error-rate", "0.03", "--rest-error-codes", "429,500,503", "--retry-after-s", "1",
              "--rest-hang-s", "3", "--rest-hang-rate", "0.01", "--ws-drop-every-s", "45",
              "--ws-delay-ms", "20", "--ws-duplicate-rate", "0.02", "--ws-reorder-rate", "0.02")
FAULTS_OFF = {"rest_error_rate": 0.0, "rest_hang_s": 0.0, "ws_drop_every_s": 0.0, "ws_delay_ms": 0.0,
              "ws_duplicate_rate": 0.0, "ws_reorder_rate": 0.0}
# An ERROR line is "explained" when it names what the simulator injected: an HTTP error status, a
# timeout (hang), or a dropped/closed stream.
INJECTED_RE = re.compile(r"\b(429|500|503)\b|Too Many Requests|Internal Server Error|Service Unavailable|"
                         r"[Tt]imeout|TimeoutError|timed out|[Dd]isconnect|ConnectionClosed|closed|reconnect",
                         re.IGNORECASE)


class FillDriver(threading.Thread):
    """``rate_per_s`` fills per second until stopped; counts what the simulator accepted."""

    def __init__(self, stack: Stack, rate_per_s: float, seed: int = 11) -> None:
        super().__init__(daemon=True)
        self.stack, self.rate_per_s = stack, rate_per_s
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.sent = 0
        self.failed: list[str] = []

    def run(self) -> None:
        import requests

        http = requests.Session()
        t0 = time.monotonic()
        i = 0
        while not self.stop_event.is_set():
            due = t0 + i / self.rate_per_s
            delay = due - time.monotonic()
            if delay > 0:
                self.stop_event.wait(delay)
                continue
            i += 1
            body = {"account": self.rng.choice(self.stack.names), "symbol": self.rng.choice(SYMBOLS),
                    "side": self.rng.choice(("buy", "sell")), "qty": str(self.rng.randint(1, 20))}
            try:
                resp = http.post(f"{self.stack.rest_url}/admin/fill", json=body, timeout=10, headers=self.stack.admin_headers)
                if resp.status_code == 200:
                    self.sent += 1
                else:  # e.g. buying power: the simulator refuses like Alpaca; not a lost fill
                    self.failed.append(f"{resp.status_code}")
            except requests.RequestException as exc:
                self.failed.append(type(exc).__name__)


def _web_sessions(stack: Stack, stop: threading.Event, duration_s: float, failures: list[str]) -> threading.Thread:
    from bench.load import _drive

    def body() -> None:
        while not stop.is_set():
            try:
                rec = asyncio.run(_drive(stack.web_url, stack.slugs, WEB_SESSIONS, min(60.0, duration_s), True))
                failures.extend(rec.errors)
            except Exception as exc:  # noqa: BLE001 - reported in the results, never silently lost
                failures.append(f"sessions: {exc!r}")
                stop.wait(5.0)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t


def _rss_groups(stack: Stack) -> dict[str, float]:
    """MB per role: RSS of each Python process (children into their parent's role); for ``postgres``
    the PSS of the postmaster and every backend summed."""
    import contextlib

    import psutil

    out: dict[str, float] = {}
    for name, proc in stack.processes().items():
        role = name.split(".", 1)[0]
        with contextlib.suppress(psutil.Error):
            # postgres backends share shared_buffers: RSS would count those pages once per backend
            mb = (proc.memory_full_info().pss if role == "postgres" else proc.memory_info().rss) / 2**20
            out[role] = round(out.get(role, 0.0) + mb, 1)
    return out


def _slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    half = samples[len(samples) // 2:]
    if len(half) < 2:
        return 0.0
    xs = [t / 60 for t, _ in half]
    ys = [v for _, v in half]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den, 2) if den else 0.0


def signed_positions(stack: Stack, slug: str) -> dict[str, Decimal]:
    """``open_trades_<slug>`` as the broker states positions: short quantities negative (whether the
    table stores them signed or as a magnitude with ``side = 'short'``)."""
    out = {}
    for sym, side, qty in stack.query(f'SELECT symbol, side, qty FROM public."{open_trades_table(slug)}"'):
        magnitude = abs(Decimal(qty))
        out[sym] = -magnitude if side == "short" else magnitude
    return out


def compare_with_truth(stack: Stack) -> dict[str, Any]:
    """Lost / duplicated activities and orders, and position mismatches, over every account."""
    truth = stack.admin("/ground-truth", timeout=120)["accounts"]
    lost = dup = extra = orders_lost = pos_mismatch = truth_acts = 0
    examples: list[str] = []
    for name, slug in zip(stack.names, stack.slugs, strict=True):
        acct = truth[name]
        want = Counter(a["id"] for a in acct["activities"])
        truth_acts += len(want)
        have = Counter(r[0] for r in stack.query(
            "SELECT activity_id FROM account_activities.activities WHERE destination = %s", (slug,)))
        lost += sum(1 for k in want if k not in have)
        dup += sum(c - 1 for c in have.values() if c > 1)
        extra += sum(1 for k in have if k not in want)
        have_orders = {r[0] for r in stack.query(
            "SELECT order_id::text FROM account_activities.orders WHERE destination = %s", (slug,))}
        orders_lost += sum(1 for o in acct["orders"] if o["id"] not in have_orders)
        broker = {s: Decimal(p["qty"]) for s, p in acct["positions"].items() if Decimal(p["qty"]) != 0}
        signed = signed_positions(stack, slug)
        if signed != broker:
            pos_mismatch += 1
            examples.append(f"{slug}: broker {broker} vs open_trades {signed}")
    return {"truth_activities": truth_acts, "lost": lost, "duplicated": dup, "extra": extra,
            "orders_lost": orders_lost, "position_mismatches": pos_mismatch, "examples": examples[:3]}


def soak(duration_s: float, sample_every_s: float) -> dict[str, Any]:
    cfg = StackConfig(destinations=DESTINATIONS, bot_rate=1.0, sim_args=FAULT_ARGS, history_days=0)
    with Stack(cfg) as stack:
        stack.wait_ready(120)
        stop_web = threading.Event()
        web_failures: list[str] = []
        web = _web_sessions(stack, stop_web, duration_s, web_failures)
        driver = FillDriver(stack, RATE_PER_S)
        t0 = time.monotonic()
        driver.start()
        rss: dict[str, list[tuple[float, float]]] = {}
        next_sample = t0
        while (now := time.monotonic()) < t0 + duration_s:
            if now >= next_sample:
                for role, mb in _rss_groups(stack).items():
                    rss.setdefault(role, []).append((now - t0, mb))
                next_sample += sample_every_s
            for name, proc in stack.children:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} during the soak:\n{stack.log_tail(name)}")
            time.sleep(min(1.0, max(0.0, next_sample - time.monotonic())))
        driver.stop_event.set()
        driver.join(15)
        elapsed = time.monotonic() - t0
        for role, mb in _rss_groups(stack).items():
            rss.setdefault(role, []).append((elapsed, mb))
        stop_web.set()
        stack.admin("/faults", FAULTS_OFF)
        stack.admin("/bot", {"rate": 0})
        t_conv = time.monotonic()
        result: dict[str, Any] = {}

        def converged() -> bool:
            nonlocal result
            result = compare_with_truth(stack)
            return not (result["lost"] or result["duplicated"] or result["extra"] or result["orders_lost"]
                        or result["position_mismatches"])

        try:
            stack.wait_for(converged, CONVERGE_S, "stored data equal to the ground truth", poll_s=2.0)
        except TimeoutError:
            pass
        converge_s = time.monotonic() - t_conv
        web.join(70)
        errors = {n: stack.error_lines(n) for n in ("simulator", "workers", "web")}
    unexpected = [f"{n}: {line}" for n, lines in errors.items() for line in lines if not INJECTED_RE.search(line)]
    return {"duration_s": round(elapsed, 1), "fills_sent": driver.sent, "fill_rate_per_s": round(driver.sent / elapsed, 2),
            "fills_refused": len(driver.failed), "rss": rss, "slopes": {r: _slope_mb_per_min(s) for r, s in rss.items()},
            "truth": result, "converge_s": round(converge_s, 1),
            "web_session_errors": len(web_failures), "web_session_error_sample": web_failures[:3],
            "error_lines": sum(len(v) for v in errors.values()), "unexpected_errors": len(unexpected),
            "unexpected_sample": unexpected[:5]}


def run(quick: bool) -> list[dict[str, Any]]:
    duration_s = DURATION_S_QUICK if quick else DURATION_S_FULL
    r = soak(duration_s, 15.0 if quick else 60.0)
    common = {"duration_s": r["duration_s"], "destinations": DESTINATIONS}
    t = r["truth"]
    rows = [
        {"name": "soak.fill_rate_per_s", "value": r["fill_rate_per_s"], "unit": "fills/s", "target": RATE_PER_S,
         "fills": r["fills_sent"], "refused": r["fills_refused"], **common},
        {"name": "soak.truth_activities", "value": t.get("truth_activities"), "unit": "rows", **common},
        {"name": "soak.lost_rows", "value": t.get("lost"), "unit": "rows", "target": 0, "ok": t.get("lost") == 0, **common},
        {"name": "soak.duplicated_rows", "value": (t.get("duplicated") or 0) + (t.get("extra") or 0), "unit": "rows",
         "target": 0, "ok": not t.get("duplicated") and not t.get("extra"), **common},
        {"name": "soak.orders_lost", "value": t.get("orders_lost"), "unit": "orders", "target": 0, **common},
        {"name": "soak.position_mismatches", "value": t.get("position_mismatches"), "unit": "destinations",
         "target": 0, "examples": t.get("examples"), **common},
        {"name": "soak.converge_s", "value": r["converge_s"], "unit": "s", **common},
        {"name": "soak.web_session_errors", "value": r["web_session_errors"], "unit": "requests", "target": 0,
         "ok": r["web_session_errors"] == 0, "sample": r["web_session_error_sample"], **common},
        {"name": "soak.unexpected_log_errors", "value": r["unexpected_errors"], "unit": "lines", "target": 0,
         "ok": r["unexpected_errors"] == 0, "sample": r["unexpected_sample"], "all_error_lines": r["error_lines"], **common},
    ]
    for role, samples in sorted(r["rss"].items()):
        rows.append({"name": f"soak.rss_{role}_mb", "value": samples[-1][1], "unit": "MB", "first": samples[0][1],
                     "slope_mb_per_min_2nd_half": r["slopes"][role], "samples": samples, **common})
    return rows
