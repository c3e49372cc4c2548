"""``python -m bench NAME [--quick]`` or ``python -m bench all --quick``.

Each benchmark module exposes ``run(quick: bool) -> list[dict]``; every result is printed as one
JSON line ``{"name", "value", "unit", ...}`` (with the peer's figure and the ratio where a peer is
measured in the same run) and the whole run is written to ``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

BENCHMARKS = ["metrics", "fifo", "zmq_feed", "ingest", "manager", "dashboard", "e2e", "load", "soak", "scale", "alerts",
              "starvation", "tieout", "tieout_soak", "dashboard_strategies", "rest_budget"]
RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    import os

    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("name", choices=[*BENCHMARKS, "all"])
    parser.add_argument("--quick", action="store_true", help="the short variant (CI-sized)")
    args = parser.parse_args(argv)
    names = BENCHMARKS if args.name == "all" else [args.name]
    results: list[dict[str, Any]] = []
    failures = 0
    for name in names:
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"bench.{name}")
            rows = module.run(quick=args.quick)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            failures += 1
            rows = [{"name": f"{name}.error", "value": None, "unit": "", "error": repr(exc)}]
        for row in rows:
            row.setdefault("bench", name)
            print(json.dumps(row, default=str), flush=True)
        results.extend(rows)
        print(json.dumps({"name": f"{name}.wall_s", "value": round(time.perf_counter() - started, 2), "unit": "s"}),
              flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": args.quick, "machine": machine(),
           "results": results}
    target = RESULTS / ("latest.json" if args.name == "all" else f"{args.name}.json")
    target.write_text(json.dumps(out, indent=2, default=str))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
