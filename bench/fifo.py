"""FIFO lot engine throughput: ``python -m bench fifo [--quick]``.

Synthetic but realistic fill stream: many symbols interleaved in time, each trading round trips of
1-3 entry fills and 1-3 exit fills (some fractional, some flips, ~1% duplicates delivered twice).
Reports fills/s for matching (``FifoBook.apply``) on time-ordered and on shuffled input, the rate
of building round-trip records, a full recomputation end to end and incremental batches; one core.
``fifo.match_with_events`` adds a 2-for-1 split to a tenth of the symbols halfway through (those
symbols then run on the time-ordered event timeline instead of the per-symbol fast path).
"""

from __future__ import annotations

import gc
import json
import os
import random
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from core.fifo import FifoBook
from core.records import Fill, Side

try:  # the lot events arrived with issue 15; the benchmark still runs on a tree without them
    from core.corporate_actions import Split
except ImportError:  # pragma: no cover
    Split = None  # type: ignore[assignment,misc]

TARGET_FILLS_PER_S = 500_000


def generate_fills(n: int, *, symbols: int = 200, seed: int = 7) -> list[Fill]:
    """``n`` fills in time order over ``symbols`` symbols (deterministic for a seed)."""
    rnd = random.Random(seed)
    t0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    prices = [Decimal(rnd.randint(1000, 50000)) / 100 for _ in range(997)]
    int_qtys = [Decimal(q) for q in range(1, 101)]
    frac_qtys = [Decimal(q) / 4 for q in range(1, 41)]
    fee = Decimal("0.01")
    plans: dict[str, list[tuple[Side, Decimal]]] = {}
    out: list[Fill] = []
    step = timedelta(microseconds=1000)
    for i in range(n):
        sym = f"SYM{rnd.randrange(symbols):04d}"
        plan = plans.get(sym)
        if not plan:
            long = rnd.random() < 0.7
            entries = [rnd.choice(frac_qtys if rnd.random() < 0.1 else int_qtys) for _ in range(rnd.randint(1, 3))]
            total = sum(entries, Decimal(0))
            cuts = rnd.randint(1, 3)
            exits = [(total / cuts).quantize(Decimal('0.01'))] * (cuts - 1)
            exits.append(total - sum(exits, Decimal(0)))
            side_in, side_out = (Side.BUY, Side.SELL) if long else (Side.SELL, Side.BUY)
            plan = [(side_in, q) for q in entries] + [(side_out, q) for q in exits]
            if rnd.random() < 0.05:  # flip through flat, then close the flipped position
                extra = rnd.choice(int_qtys)
                plan[-1] = (side_out, exits[-1] + extra)
                plan.append((side_in, extra))
            plan.reverse()
            plans[sym] = plan
        side, qty = plan.pop()
        out.append(Fill(fill_id=f"a{i:09d}", ts=t0 + step * i, symbol=sym, side=side, qty=qty,
                        price=prices[i % 997], fee=fee, order_id=f"o{i:09d}"))
    return out


def _time(fn: Any) -> tuple[float, Any]:
    gc.collect()
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def run(quick: bool) -> list[dict[str, Any]]:
    n = 200_000 if quick else 1_000_000
    fills = generate_fills(n)
    shuffled = fills + fills[::100]
    random.Random(1).shuffle(shuffled)  # out of order and 1% duplicated: the engine must sort and dedupe

    t_sorted = float("inf")
    for _ in range(2):
        book = FifoBook()
        t, _update = _time(lambda book=book: book.apply(fills))
        t_sorted = min(t_sorted, t)
    t_trips, trips = _time(lambda: book.round_trips())
    t_open, positions = _time(lambda: book.open_positions())

    shuffled_book = FifoBook()
    t_shuffled, _ = _time(lambda: shuffled_book.apply(shuffled))

    incremental = FifoBook()
    chunk = 1000
    t_incr, _ = _time(lambda: [incremental.apply(fills[i:i + chunk]) for i in range(0, n, chunk)])
    same = incremental.round_trips() == trips == shuffled_book.round_trips()

    events_row = []
    if Split is not None:
        mid = fills[n // 2].ts
        splits = [Split(event_id=f"split-{i:04d}", ts=mid, symbol=f"SYM{i:04d}", new_rate=Decimal(2),
                        old_rate=Decimal(1)) for i in range(0, 200, 10)]
        evented = FifoBook()
        t_events, _ = _time(lambda: evented.apply(fills, events=splits))
        events_row.append({"name": "fifo.match_with_events", "value": round(n / t_events), "unit": "fills/s",
                           "fills": n, "events": len(splits), "seconds": round(t_events, 4),
                           "note": "as fifo.match, plus a split on every tenth symbol halfway through"})

    rate = n / t_sorted
    total = t_sorted + t_trips + t_open
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return [
        {"name": "fifo.match", "value": round(rate), "unit": "fills/s", "fills": n, "seconds": round(t_sorted, 4),
         "target": TARGET_FILLS_PER_S, "meets_target": rate >= TARGET_FILLS_PER_S, "load_avg_1m": load,
         "note": "FifoBook.apply on fills in time order (as read from the database): dedupe, order check, FIFO matching"},
        {"name": "fifo.match_shuffled", "value": round(len(shuffled) / t_shuffled), "unit": "fills/s",
         "fills": len(shuffled), "seconds": round(t_shuffled, 4),
         "note": "worst case: fully shuffled input with 1% duplicates (sort dominates)"},
        {"name": "fifo.round_trip_records", "value": round(len(trips) / t_trips), "unit": "trips/s",
         "round_trips": len(trips), "seconds": round(t_trips, 4),
         "note": "building every RoundTrip record (exact Decimal P&L, fees, averages, trade id)"},
        {"name": "fifo.full_recompute", "value": round(n / total), "unit": "fills/s", "seconds": round(total, 4),
         "open_positions": len(positions), "note": "apply + every round-trip record + open positions"},
        {"name": "fifo.incremental_1000", "value": round(n / t_incr), "unit": "fills/s", "seconds": round(t_incr, 4),
         "identical_to_full": same, "note": "same fills fed in batches of 1000; result equals the full run"},
        *events_row,
    ]


if __name__ == "__main__":
    import sys

    for row in run("--quick" in sys.argv):
        print(json.dumps(row))
