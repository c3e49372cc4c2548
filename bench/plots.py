"""PNG figures for docs/performance.md from the end-to-end results: ``python -m bench.plots``.

Reads ``bench/results/{e2e,load,soak,scale}.json`` (written by ``python -m bench NAME``; a file that
is missing is skipped) and writes ``docs/perf/*.png`` with matplotlib (Agg backend, no display).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OUT = ROOT / "docs" / "perf"


def _rows(name: str) -> dict[str, dict[str, Any]]:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return {}
    return {r["name"]: r for r in json.loads(path.read_text())["results"]}


def _save(fig: Any, name: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def e2e(rows: dict[str, dict[str, Any]]) -> Path | None:
    if "e2e.freshness_sse_p95_s" not in rows:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    modes = ["sse", "poll"]
    stats = ["p50", "p95", "max"]
    width = 0.25
    for i, stat in enumerate(stats):
        vals = [rows[f"e2e.freshness_{m}_{stat}_s"]["value"] for m in modes]
        ax1.bar([x + i * width for x in range(2)], vals, width, label=stat)
    for x, m in enumerate(modes):
        target = rows[f"e2e.freshness_{m}_p95_s"]["target"]
        ax1.hlines(target, x - width / 2, x + 2.5 * width, colors="red", linestyles="dashed")
    ax1.set_xticks([x + width for x in range(2)], ["SSE", "polling (DISABLE_SSE)"])
    ax1.set_ylabel("fill → row visible in the grid (s)")
    ax1.set_title(f"Freshness, {rows['e2e.freshness_sse_p95_s']['fills']} fills at 5/s (red: p95 target)")
    ax1.legend()
    bottoms = [0.0, 0.0]
    for stage, label in (("ingest", "ingester (fill → activity row)"), ("manager", "manager (→ open_trades row)"),
                         ("web", "NOTIFY/poll wait + dashboard + browser (→ DOM)")):
        vals = [rows[f"e2e.{m}_stage_{stage}_p50_s"]["value"] for m in modes]
        ax2.bar(range(2), vals, 0.5, bottom=bottoms, label=label)
        bottoms = [b + v for b, v in zip(bottoms, vals, strict=True)]
    ax2.set_xticks(range(2), ["SSE", "polling"])
    ax2.set_ylabel("median seconds per stage")
    ax2.set_title("Where the time goes (p50 per stage)")
    ax2.set_ylim(0, max(bottoms) * 1.5)
    ax2.legend(fontsize=8, loc="upper center")
    return _save(fig, "e2e_freshness.png")


def load(rows: dict[str, dict[str, Any]]) -> Path | None:
    configs = [c for c in ("single", "gunicorn4", "gunicorn4_nocache", "gunicorn4_t8") if f"load.{c}.callback_p95_ms" in rows]
    if not configs:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.25
    for i, stat in enumerate(("p50", "p95", "p99")):
        ax1.bar([x + i * width for x in range(len(configs))],
                [rows[f"load.{c}.callback_{stat}_ms"]["value"] for c in configs], width, label=stat)
    ax1.set_xticks([x + width for x in range(len(configs))], configs, fontsize=8)
    ax1.set_ylabel("callback latency (ms)")
    ax1.set_title(f"{rows[f'load.{configs[0]}.callback_p95_ms']['sessions']} sessions: callback latency")
    ax1.legend()
    ax2.bar(range(len(configs)), [rows[f"load.{c}.db_statements_per_s"]["value"] for c in configs], 0.5)
    for x, c in enumerate(configs):
        errs = rows[f"load.{c}.errors"]["value"]
        ax2.annotate(f"errors: {errs}", (x, rows[f"load.{c}.db_statements_per_s"]["value"]), ha="center",
                     va="bottom", fontsize=8, color="red" if errs else "black")
    ax2.set_xticks(range(len(configs)), configs, fontsize=8)
    ax2.set_ylabel("dashboard SQL statements / s")
    ax2.set_title("Database load from the dashboard")
    return _save(fig, "load.png")


def soak(rows: dict[str, dict[str, Any]]) -> Path | None:
    series = {k.split("soak.rss_")[1].removesuffix("_mb"): v for k, v in rows.items() if k.startswith("soak.rss_")}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    for role, row in sorted(series.items()):
        xs = [t / 60 for t, _ in row["samples"]]
        ys = [mb for _, mb in row["samples"]]
        ax.plot(xs, ys, marker="o", label=f"{role} ({row['slope_mb_per_min_2nd_half']:+.1f} MB/min)")
    ax.set_xlabel("minutes")
    ax.set_ylabel("MB (RSS; postgres: PSS summed)")
    ax.set_title(f"Soak: memory, {rows['soak.fill_rate_per_s']['value']} fills/s over "
                 f"{rows['soak.fill_rate_per_s']['destinations']} destinations, faults on")
    ax.legend(fontsize=8)
    return _save(fig, "soak_rss.png")


def scale(rows: dict[str, dict[str, Any]]) -> Path | None:
    dests = sorted(int(k.split(".")[1][4:]) for k in rows if k.startswith("scale.dest") and k.endswith("ingest_fills_per_s"))
    sessions = sorted(int(k.split(".")[1][8:]) for k in rows if k.startswith("scale.sessions") and k.endswith("web_cpu_pct"))
    if not dests and not sessions:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if dests:
        ax1.plot(dests, [rows[f"scale.dest{n}.ingest_fills_per_s"]["value"] for n in dests], marker="o", label="ingest fills/s")
        ax1.plot(dests, [rows[f"scale.dest{n}.manager_fills_per_s"]["value"] for n in dests], marker="o", label="manager fills/s")
        ax1.set_xscale("log")
        ax1.set_xlabel("destinations")
        ax1.set_ylabel("burst throughput (fills/s)")
        twin = ax1.twinx()
        twin.plot(dests, [rows[f"scale.dest{n}.workers_holding_cpu_pct"]["value"] for n in dests], "k--", marker="x",
                  label="workers CPU % idle, holding positions")
        twin.set_ylabel("CPU %")
        ax1.legend(loc="upper left", fontsize=8)
        twin.legend(loc="lower right", fontsize=8)
        ax1.set_title("Cost vs destinations")
    if sessions:
        ax2.plot(sessions, [rows[f"scale.sessions{n}.web_cpu_pct"]["value"] for n in sessions], marker="o", label="web CPU %")
        ax2.plot(sessions, [rows[f"scale.sessions{n}.db_statements_per_s"]["value"] for n in sessions], marker="o",
                 label="dashboard SQL statements/s")
        ax2.plot(sessions, [rows[f"scale.sessions{n}.callback_p95_ms"]["value"] for n in sessions], marker="o",
                 label="callback p95 (ms)")
        ax2.set_xlabel("open browser sessions (one web process)")
        ax2.legend(fontsize=8)
        ax2.set_title("Cost vs open sessions")
    return _save(fig, "scale.png")


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".") if abs(v) < 10 else f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def tables() -> str:
    """Markdown tables of every end-to-end result row (name, value, unit, target)."""
    out = []
    for bench in ("e2e", "load", "soak", "scale"):
        rows = _rows(bench)
        if not rows:
            continue
        out.append(f"\n#### {bench}\n\n| figure | value | unit | target |\n|---|---:|---|---|")
        for name, r in rows.items():
            if r.get("value") is None:
                continue
            target = r.get("target")
            ok = r.get("ok")
            mark = "" if ok is None else (" ✅" if ok else " ❌")
            out.append(f"| `{name}` | {_fmt(r['value'])} | {r.get('unit', '')} | {_fmt(target) if target is not None else ''}{mark} |")
    return "\n".join(out) + "\n"


def main() -> int:
    if "--tables" in sys.argv:
        print(tables())
        return 0
    made = [p for p in (e2e(_rows("e2e")), load(_rows("load")), soak(_rows("soak")), scale(_rows("scale"))) if p]
    for p in made:
        print(p.relative_to(ROOT))
    return 0 if made else 1


if __name__ == "__main__":
    sys.exit(main())
