"""Before/after on one machine, interleaved: ``python -m bench.ab BEFORE [AFTER] [--bench fifo,metrics]
[--rounds 3] [--quick]``.

A shared, noisy machine moves a benchmark's figures more than most changes do, so runs made minutes
apart cannot be compared. This exports both commits with ``git archive`` (so nobody's uncommitted edits
are measured), then runs each benchmark in the two trees alternately, ``--rounds`` times each, and
reports every figure's best value on each side and their ratio (after / before; above 1 is faster for
a rate, slower for a time). ``AFTER`` defaults to ``HEAD``.

``--cpu-fifo`` instead runs the lot engine of both trees *in this one process*, alternating on the same
fills, timed in CPU seconds (``time.process_time``: what other processes take of the cores does not
count), best of ``--rounds``: the comparison that holds on a loaded machine. The before tree's ``core``
is imported as ``core_before`` (its own imports rewritten), so the two engines run side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOWER_IS_BETTER = {"s", "ms", "MiB", "seconds"}


def export(rev: str, into: Path) -> Path:
    """The tree of ``rev`` unpacked under ``into`` (the benchmark runs from there)."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev], check=True,
                          capture_output=True).stdout
    target = into / rev.replace("/", "_")
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(target, filter="data")
    return target


def run_once(tree: Path, bench: str, quick: bool) -> list[dict[str, Any]]:
    cmd = [sys.executable, "-m", "bench", bench, *(["--quick"] if quick else [])]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(cmd, cwd=tree, env=env, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def best(rows: list[dict[str, Any]]) -> dict[str, tuple[float, str]]:
    """Per figure name: the best value seen (max for rates, min for times) and its unit."""
    out: dict[str, tuple[float, str]] = {}
    for row in rows:
        value, unit = row.get("value"), str(row.get("unit", ""))
        if not isinstance(value, int | float):
            continue
        seen = out.get(row["name"])
        better = seen is None or (value < seen[0] if unit in LOWER_IS_BETTER else value > seen[0])
        if better:
            out[row["name"]] = (float(value), unit)
    return out


def _core_as(tree: Path, name: str, into: Path) -> Any:
    """``tree``'s ``core`` package importable as ``name`` (its ``core.`` imports rewritten)."""
    import importlib

    target = into / name
    target.mkdir(parents=True)
    for src in (tree / "core").glob("*.py"):
        text = src.read_text().replace("from core.", f"from {name}.").replace("import core.", f"import {name}.")
        (target / src.name).write_text(text)
    sys.path.insert(0, str(into))
    return importlib.import_module(f"{name}.fifo"), importlib.import_module(f"{name}.records")


def _cpu(fn: Callable[[], object]) -> float:
    import gc

    gc.collect()
    t = time.process_time()
    fn()
    return time.process_time() - t


def cpu_fifo(before_tree: Path, tmp: Path, *, fills_n: int, rounds: int) -> list[dict[str, Any]]:
    """fifo.match / round_trip_records / incremental_1000 of both engines, CPU time, best of ``rounds``."""
    import core.fifo as after_fifo
    import core.records as after_records
    from bench.fifo import generate_fills

    before_fifo, before_records = _core_as(before_tree, "core_before", tmp / "pkgs")
    base = generate_fills(fills_n)
    sides = {"after": (after_fifo, [after_records.Fill(**_fields(f)) for f in base]),
             "before": (before_fifo, [before_records.Fill(**_fields(f)) for f in base])}
    best_s: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for side, (fifo, fills) in sides.items():
            book = fifo.FifoBook()
            times = {"fifo.match": _cpu(lambda book=book, fills=fills: book.apply(fills)),
                     "fifo.round_trip_records": _cpu(lambda book=book: book.round_trips())}
            incr = fifo.FifoBook()
            times["fifo.incremental_1000"] = _cpu(
                lambda incr=incr, fills=fills: [incr.apply(fills[i:i + 1000]) for i in range(0, len(fills), 1000)])
            for name, seconds in times.items():
                best_s[(name, side)] = min(seconds, best_s.get((name, side), float("inf")))
    return [{"name": name, "unit": "cpu s", "before": round(best_s[(name, "before")], 4),
             "after": round(best_s[(name, "after")], 4),
             "ratio": round(best_s[(name, "after")] / best_s[(name, "before")], 3), "fills": fills_n,
             "rounds": rounds, "load_avg_1m": round(os.getloadavg()[0], 1)}
            for name in ("fifo.match", "fifo.round_trip_records", "fifo.incremental_1000")]


def _fields(f: Any) -> dict[str, Any]:
    return {k: getattr(f, k) for k in ("fill_id", "ts", "symbol", "side", "qty", "price", "fee", "order_id")} | {
        "side": f.side.value}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab")
    parser.add_argument("before")
    parser.add_argument("after", nargs="?", default="HEAD")
    parser.add_argument("--bench", default="fifo,metrics")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cpu-fifo", type=int, metavar="FILLS", help="in-process CPU A/B of the lot engine")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ch-ab-") as tmp:
        if args.cpu_fifo:  # the after side is this process's own tree
            for row in cpu_fifo(export(args.before, Path(tmp)), Path(tmp), fills_n=args.cpu_fifo, rounds=args.rounds):
                print(json.dumps(row), flush=True)
            return 0
        trees = {"before": export(args.before, Path(tmp)), "after": export(args.after, Path(tmp))}
        for bench in args.bench.split(","):
            rows: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
            for _ in range(args.rounds):
                for side, tree in trees.items():
                    rows[side].extend(run_once(tree, bench, args.quick))
            before, after = best(rows["before"]), best(rows["after"])
            for name in sorted(before.keys() & after.keys()):
                (b, unit), (a, _) = before[name], after[name]
                print(json.dumps({"name": name, "unit": unit, "before": b, "after": a,
                                  "ratio": round(a / b, 3) if b else None, "rounds": args.rounds,
                                  "load_avg_1m": round(os.getloadavg()[0], 1)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
