"""Soak with tie-out: every event kind of the real-accounts issue, faults on, every destination tied out at the end.

``python -m bench tieout_soak [--quick]``: 15 minutes (``--quick``: 3). The stack of :mod:`bench.soak`
(10 destinations, a 2-session history so that past days are compared too, the paced fill driver at
``RATE_PER_S``) without the web process and without the live bot (it would buy the event symbols on
the morning of their corporate actions), with:

- the transport faults of :mod:`bench.soak` (REST 429/500/503 and hangs, websocket drops, delayed,
  duplicated and reordered trade updates) for the whole run, and the ledger faults of
  :mod:`simulator.faults`: activities listed ``DELAY_ACTIVITY_S`` late, fill updates dropped each
  round, a null ``base_value``, and the repeated end-of-day point for part of the run;
- every ``ROUND_S`` an event round through the simulator's admin API on ``EVENT_ACCOUNTS`` accounts
  (the events of tests/e2e_real_accounts/scenario.py, on symbols of their own per round): forward and
  reverse splits (cash in lieu), a symbol change, a spinoff, mergers in stock, in cash and in both, a
  reorganisation, a worthless removal, a dividend with withholding; options exercised, assigned,
  cash-settled and expiring at the session close; crypto bought and sold with its fees and a coin
  fee finer than an order's increment; a canceled deposit, a deposit, an activity type Alpaca may add
  one day, a fee dated yesterday posted now; the day's regulatory fees posted (``/admin/end-of-day``);
- the tie-out every ``TIEOUT_INTERVAL_S`` (30 s; REST budget 60 calls a minute per destination).

At the end the load stops, every fault is switched off, the stored activities are compared with the
simulator's ground truth (as :mod:`bench.soak`), and every destination's tie-out (now and each past
day) must be ``tied_out`` with zero unexplained dollars. Reported as well: every status episode the
tie-out stored during the run, by status and cause (drift seen on the way, and why).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bench.soak import FAULT_ARGS, FAULTS_OFF, INJECTED_RE, SYMBOLS, FillDriver, compare_with_truth
from bench.stack import Stack, StackConfig

DESTINATIONS = 10
EVENT_ACCOUNTS = 4
RATE_PER_S = 20.0
DURATION_S_FULL = 15 * 60.0
DURATION_S_QUICK = 180.0
ROUND_S = 140.0
HISTORY_DAYS = 2
CONVERGE_S = 240.0
TIEOUT_SETTLE_S = 300.0  # liveness bound: the tie-out runs every 30 s, a repair backfill may come first
DELAY_ACTIVITY_S = 5.0
ROUNDS = "ABCDEFGH"
SHARED = {"ACQ": 80, "ACQB": 100, "DIVY": 50, "OPU": 100, "OPV": 50, "XSP": 500}
# One symbol per round for each corporate action: Alpaca never applies two splits (or spinoffs) of one
# symbol on one day, and the book pairs the lines of an action by their date.
PER_ROUND = {"OLD": 50, "TGT": 40, "TGU": 30, "TGV": 60, "ROL": 25, "DED": 1.5, "SPL": 200, "RVS": 2.10, "PAR": 100}
DEFAULT_PRICES = {"AAPL": 190, "MSFT": 410, "NVDA": 120, "AMZN": 180, "GOOGL": 165, "META": 500, "TSLA": 220,
                  "SPY": 540, "QQQ": 470, "JPM": 200}
NY = ZoneInfo("America/New_York")
ENV = {"TIEOUT_INTERVAL_S": "30", "REST_BUDGET_CALLS_PER_MIN": "60"}


def universe() -> str:
    prices: dict[str, float] = {s: DEFAULT_PRICES[s] for s in SYMBOLS}
    prices.update(SHARED)
    for letter in ROUNDS:
        prices.update({f"{stem}{letter}": p for stem, p in PER_ROUND.items()})
    prices.update({"BTC/USD": 64_000, "ETH/USD": 3_100})
    return ",".join(f"{s}={p}" for s, p in prices.items())


def _strike(base: int, r: str) -> str:
    return str(base + ROUNDS.index(r))


def _contracts(stack: Stack, r: str, today: str) -> dict[str, str]:
    """Round ``r``'s contracts, expiring today: an in-the-money call to exercise, an out-of-the-money
    one left to expire, a call to write and be assigned, a cash-settled index put."""
    out: dict[str, str] = {}
    for key, under, strike, right in (("exercise", "OPU", 90, "C"), ("expire", "OPU", 110, "C"),
                                      ("assign", "OPV", 45, "C"), ("cash", "XSP", 510, "P")):
        listed = stack.admin("/option-chain", {"underlying": under, "expiry": today, "strikes": [_strike(strike, r)]})
        out[key] = next(c for c in listed["contracts"] if c[-9] == right)
    return out


class EventRounds(threading.Thread):
    """One round of every event kind each ``ROUND_S``; what failed is kept (the results say it).

    Alpaca applies a corporate action before the open to the positions held overnight and dates it
    with the day only (as options delivered at an exercise): :meth:`hold_overnight` buys what every
    round needs while the simulator's clock is still a day behind; the rounds, after the clock moved
    to now, apply the events to those positions."""

    def __init__(self, stack: Stack, rounds: int) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.n_rounds = rounds
        self.stop_event = threading.Event()
        self.rounds = 0
        self.posted = 0
        self.failed: list[str] = []
        self.contracts: dict[str, dict[str, str]] = {}

    def _admin(self, path: str, body: dict[str, Any]) -> Any:
        try:
            out = self.stack.admin(path, body)
            self.posted += 1
            return out
        except Exception as exc:  # noqa: BLE001 - e.g. buying power: counted and reported, the round goes on
            answer = getattr(getattr(exc, "response", None), "text", "") or str(exc)
            self.failed.append(f"{path} {body.get('type') or body.get('symbol') or ''}: {answer[:200]}")
            return None

    def _fill(self, account: str, symbol: str, side: str, qty: str) -> Any:
        return self._admin("/fill", {"account": account, "symbol": symbol, "side": side, "qty": qty})

    def hold_overnight(self) -> None:
        """Every round's positions, bought "yesterday" (the simulator's clock a day behind the wall's)."""
        today = datetime.now(NY).date().isoformat()  # the wall's today: tomorrow for the simulator now
        names = self.stack.names[:EVENT_ACCOUNTS]
        self.flatten_event_symbols()
        for r in ROUNDS[:self.n_rounds]:
            self.contracts[r] = _contracts(self.stack, r, today)
        for name in names:
            for sym, qty in (("DIVY", "10"), ("BTC/USD", "0.01"), ("ETH/USD", str(0.5 * self.n_rounds))):
                self._fill(name, sym, "buy", qty)
            for r in ROUNDS[:self.n_rounds]:
                for stem in PER_ROUND:
                    self._fill(name, f"{stem}{r}", "buy", "45" if stem == "RVS" else "10")
                self._fill(name, "OPV", "buy", "100")
                c = self.contracts[r]
                for key, side, qty in (("exercise", "buy", "1"), ("expire", "buy", "2"), ("assign", "sell", "1"),
                                       ("cash", "buy", "1")):
                    self._fill(name, c[key], side, qty)

    def flatten_event_symbols(self) -> None:
        """Close what the history's bot left in the event symbols, so that only the rounds' long positions
        meet the events. (A corporate action on a short position is a separate finding: the quick runs
        showed the book not applying splits, reorganisations and worthless removals to shorts.)"""
        import requests

        events = set(SHARED) | {f"{stem}{r}" for stem in PER_ROUND for r in ROUNDS}
        for i in range(len(self.stack.names)):  # the history's open orders first (they would fill after)
            requests.delete(f"{self.stack.rest_url}/v2/orders", timeout=30,
                            headers={"APCA-API-KEY-ID": f"PKBENCH{i:011d}",
                                     "APCA-API-SECRET-KEY": f"bench-secret-{i:06d}"}).raise_for_status()
        truth = self.stack.admin("/ground-truth", timeout=120)["accounts"]
        for name, acct in truth.items():
            for sym, pos in acct["positions"].items():
                qty = float(pos["qty"])
                if sym in events and qty:
                    self._fill(name, sym, "sell" if qty > 0 else "buy", pos["qty"].lstrip("-"))

    def run(self) -> None:
        while not self.stop_event.is_set() and self.rounds < self.n_rounds:
            letter = ROUNDS[self.rounds]
            self.rounds += 1
            try:
                self.one_round(letter)
            except Exception as exc:  # noqa: BLE001 - reported, never silently lost
                self.failed.append(f"round {letter}: {exc!r}"[:300])
            self.stop_event.wait(ROUND_S)

    def one_round(self, r: str) -> None:
        names = self.stack.names[:EVENT_ACCOUNTS]
        self.stack.admin("/faults", {"drop_fill_updates": 3})
        for kind, params in (("split", {"symbol": f"SPL{r}", "new_rate": 2, "old_rate": 1}),
                             ("split", {"symbol": f"RVS{r}", "new_rate": 1, "old_rate": 2}),  # 45 -> 22 + cash in lieu
                             ("name_change", {"old": f"OLD{r}", "new": f"NEW{r}"}),
                             ("spinoff", {"parent": f"PAR{r}", "new": f"CHD{r}", "ratio": "0.5", "price": "20"}),
                             ("merger", {"target": f"TGT{r}", "acquirer": "ACQ", "ratio": "0.5"}),
                             ("merger", {"target": f"TGU{r}", "acquirer": "ACQ", "ratio": "0", "cash": "33"}),
                             ("merger", {"target": f"TGV{r}", "acquirer": "ACQB", "ratio": "0.5", "cash": "10"}),
                             ("reorg", {"symbol": f"ROL{r}", "new": f"RNW{r}", "ratio": "2"}),
                             ("worthless", {"symbol": f"DED{r}"}),
                             ("dividend", {"symbol": "DIVY", "per_share": "0.5", "withholding": "0.3",
                                           "withholding_type": "DIVNRA"})):
            self._admin("/corporate-action", {"type": kind, **params})
        yesterday = (datetime.now(NY).date() - timedelta(days=1)).isoformat()
        c = self.contracts[r]
        for name in names:
            self._admin("/corporate-action", {"type": "exercise", "account": name, "symbol": c["exercise"]})
            self._admin("/corporate-action", {"type": "assign", "account": name, "symbol": c["assign"]})
            self._admin("/corporate-action", {"type": "cash_settle", "account": name, "symbol": c["cash"]})
            self._admin("/corporate-action", {"type": "crypto_dust", "account": name, "symbol": "ETHUSD",
                                              "qty": "0.0000000004"})
            self._fill(name, "ETH/USD", "sell", "0.25")
            self._fill(name, "BTC/USD", "buy", "0.001")
            self._admin("/activity", {"account": name, "type": "CSD", "amount": "5000", "status": "canceled",
                                      "description": "deposit canceled by the bank"})
            self._admin("/activity", {"account": name, "type": "CSD", "amount": "2000", "description": "ACH deposit"})
            self._admin("/activity", {"account": name, "type": "ZZNEW", "amount": "-1.23", "allow_unknown": True,
                                      "description": "an activity type Alpaca adds one day"})
            self._admin("/activity", {"account": name, "type": "FEE", "amount": "-0.75", "date": yesterday,
                                      "description": "REG fee posted late"})
        self._admin("/end-of-day", {})  # the day's regulatory fees, ORF of the contracts, CFEE of the coins
        if self.rounds == self.n_rounds:
            self._admin("/session-close", {})  # the contracts still held expire (OPEXP)
            self._admin("/end-of-day", {})


def _tieout_state(stack: Stack) -> dict[str, dict[str, Any]]:
    """Per destination: the latest "now" row and the latest row of each past day."""
    out: dict[str, dict[str, Any]] = {}
    rows = stack.query("""SELECT DISTINCT ON (destination, day) destination, day, status, causes, unexplained_usd,
                                  checked_at, differences::text
                           FROM public.ch_tieout ORDER BY destination, day, id DESC""")
    for dest, day, status, causes, unexplained, checked, diffs in rows:
        entry = out.setdefault(dest, {"days": {}})
        item = {"status": status, "causes": list(causes), "unexplained_usd": float(unexplained or 0),
                "checked_at": checked, "differences": json.loads(diffs)}
        if day is None:
            entry["now"] = item
        else:
            entry["days"][day.isoformat()] = item
    return out


def _all_tied(state: dict[str, dict[str, Any]], slugs: list[str], after: datetime) -> bool:
    for slug in slugs:
        entry = state.get(slug)
        now = (entry or {}).get("now")
        if now is None or now["checked_at"] <= after or now["status"] != "tied_out":
            return False
        if any(d["status"] != "tied_out" for d in entry["days"].values()):  # type: ignore[index]
            return False
    return True


def _episodes(stack: Stack, since: datetime) -> list[dict[str, Any]]:
    rows = stack.query("""SELECT status, day IS NULL AS now, causes, count(*), count(DISTINCT destination)
                          FROM public.ch_tieout WHERE first_seen_at >= %s
                          GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""", (since,))
    return [{"status": s, "scope": "now" if n else "day", "causes": list(c), "episodes": k, "destinations": d}
            for s, n, c, k, d in rows]


def _drift_sample(stack: Stack, since: datetime) -> list[str]:
    rows = stack.query("""SELECT destination, day, first_seen_at, checked_at, differences::text FROM public.ch_tieout
                          WHERE first_seen_at >= %s AND status = 'drift' ORDER BY id LIMIT 8""", (since,))
    out = []
    for dest, day, first, last, diffs in rows:
        bad = [d for d in json.loads(diffs) if d["cause"] == "unexplained" and d["open"]]
        text = "; ".join(f"{d['scope']} {d['subject']} {d['amount_usd']} ({d['detail'][:90]})" for d in bad[:3])
        out.append(f"{dest} {day or 'now'} {first:%H:%M:%S}-{last:%H:%M:%S}: {text}")
    return out


def soak(duration_s: float) -> dict[str, Any]:
    # No live bot: it buys any symbol of the universe, and a corporate action applied at midday to
    # shares bought that morning is not what Alpaca does (it applies them before the open).
    cfg = StackConfig(destinations=DESTINATIONS, bot_rate=0.0, history_days=HISTORY_DAYS, web="none",
                      symbols=universe(), sim_args=(*FAULT_ARGS, "--clock-offset-s", "-86400"), env=ENV,
                      workers=False)
    n_rounds = max(1, min(len(ROUNDS), int(duration_s // ROUND_S)))
    with Stack(cfg) as stack:
        # Yesterday, prices standing still, before the workers start: the positions the events meet are
        # bought, and the workers' first look (they stamp with the wall clock, a day ahead of the
        # simulator's) sees yesterday's end-of-day point as it will stay.
        stack.admin("/pause", {"paused": True})
        rounds = EventRounds(stack, n_rounds)
        rounds.hold_overnight()
        stack.start_workers()
        stack.wait_ready(180)
        stack.admin("/clock", {"to": "wall"})  # overnight: yesterday's fees are posted at midnight
        stack.admin("/pause", {"paused": False})
        stack.admin("/faults", {"delay_activity_s": DELAY_ACTIVITY_S, "history_null_base": True,
                                "history_repeat_previous_day": True})
        started = datetime.now(UTC)
        driver = FillDriver(stack, RATE_PER_S)
        t0 = time.monotonic()
        driver.start()
        rounds.start()
        quirk_on = True
        while (elapsed := time.monotonic() - t0) < duration_s:
            if quirk_on and elapsed > duration_s / 2:  # the broker corrects its end-of-day point
                stack.admin("/faults", {"history_repeat_previous_day": False})
                quirk_on = False
            for name, proc in stack.children:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} during the soak:\n{stack.log_tail(name)}")
            time.sleep(1.0)
        driver.stop_event.set()
        rounds.stop_event.set()
        driver.join(15)
        rounds.join(120)
        elapsed = time.monotonic() - t0
        stack.admin("/faults", {**FAULTS_OFF, "delay_activity_s": 0.0, "drop_fill_updates": 0,
                                "history_null_base": False, "history_repeat_previous_day": False})
        stack.admin("/bot", {"rate": 0})
        t_conv = time.monotonic()
        truth: dict[str, Any] = {}

        def converged() -> bool:
            nonlocal truth
            truth = compare_with_truth(stack)
            return not (truth["lost"] or truth["duplicated"] or truth["extra"] or truth["orders_lost"])

        try:
            stack.wait_for(converged, CONVERGE_S, "stored activities equal to the ground truth", poll_s=3.0)
        except TimeoutError:
            pass
        converge_s = time.monotonic() - t_conv
        quiet = datetime.now(UTC)
        state: dict[str, dict[str, Any]] = {}

        def tied() -> bool:
            nonlocal state
            state = _tieout_state(stack)
            return _all_tied(state, stack.slugs, quiet)

        t_tie = time.monotonic()
        try:
            stack.wait_for(tied, TIEOUT_SETTLE_S, "every destination tied out", poll_s=3.0)
        except TimeoutError:
            pass
        tie_s = time.monotonic() - t_tie
        episodes = _episodes(stack, started)
        drift_sample = _drift_sample(stack, started)
        repairs = stack.query("""SELECT count(*), count(*) FILTER (WHERE error IS NOT NULL), coalesce(sum(rows_read), 0)
                                 FROM public.ch_backfill_requests WHERE requested_at >= %s""", (started,))[0]
        errors = {n: stack.error_lines(n) for n in ("simulator", "workers")}
    unexpected = [f"{n}: {line}" for n, lines in errors.items() for line in lines if not INJECTED_RE.search(line)]
    final = {slug: {"now": (e.get("now") or {}).get("status"), "now_causes": (e.get("now") or {}).get("causes"),
                    "unexplained_usd": (e.get("now") or {}).get("unexplained_usd"),
                    "days": {d: v["status"] for d, v in e["days"].items()},
                    "open_differences": [f"{x['scope']} {x['subject']} {x['amount_usd']} {x['cause']}: {x['detail'][:120]}"
                                         for x in (e.get("now") or {}).get("differences", []) if x["open"]][:5]}
             for slug, e in state.items()}
    return {"duration_s": round(elapsed, 1), "fills_sent": driver.sent, "fills_refused": len(driver.failed),
            "event_rounds": rounds.rounds, "event_calls": rounds.posted, "event_failures": rounds.failed[:10],
            "event_failures_n": len(rounds.failed), "truth": truth, "converge_s": round(converge_s, 1),
            "tie_s": round(tie_s, 1), "final": final, "episodes": episodes, "drift_sample": drift_sample,
            "repairs": {"requests": repairs[0], "errors": repairs[1], "rows_read": int(repairs[2])},
            "error_lines": sum(len(v) for v in errors.values()), "unexpected_errors": len(unexpected),
            "unexpected_sample": unexpected[:5]}


def run(quick: bool) -> list[dict[str, Any]]:
    r = soak(DURATION_S_QUICK if quick else DURATION_S_FULL)
    common = {"duration_s": r["duration_s"], "destinations": DESTINATIONS}
    final = r["final"]
    tied = [s for s, f in final.items() if f["now"] == "tied_out" and all(v == "tied_out" for v in f["days"].values())]
    unexplained = sum(f["unexplained_usd"] or 0 for f in final.values())
    t = r["truth"]
    return [
        {"name": "tieout_soak.destinations_tied_out", "value": len(tied), "unit": "destinations",
         "target": DESTINATIONS, "ok": len(tied) == DESTINATIONS, "final": final, "tie_s": r["tie_s"], **common},
        {"name": "tieout_soak.unexplained_usd", "value": round(unexplained, 2), "unit": "USD", "target": 0,
         "ok": unexplained == 0, **common},
        {"name": "tieout_soak.episodes", "value": len(r["episodes"]), "unit": "status/cause groups",
         "episodes": r["episodes"], "drift_sample": r["drift_sample"], **common},
        {"name": "tieout_soak.repairs", "value": r["repairs"]["requests"], "unit": "backfills", **r["repairs"], **common},
        {"name": "tieout_soak.events", "value": r["event_calls"], "unit": "admin calls", "rounds": r["event_rounds"],
         "failures": r["event_failures_n"], "failure_sample": r["event_failures"], "fills": r["fills_sent"],
         "fills_refused": r["fills_refused"], **common},
        {"name": "tieout_soak.lost_or_duplicated_rows", "value": (t.get("lost") or 0) + (t.get("duplicated") or 0)
         + (t.get("extra") or 0), "unit": "rows", "target": 0, "truth": t, "converge_s": r["converge_s"], **common},
        {"name": "tieout_soak.unexpected_log_errors", "value": r["unexpected_errors"], "unit": "lines", "target": 0,
         "sample": r["unexpected_sample"], "all_error_lines": r["error_lines"], **common},
    ]
