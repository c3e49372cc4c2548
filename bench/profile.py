"""Where the time goes: py-spy profiles of the running stack. ``python -m bench.profile [web|workers]``.

Not part of ``make bench`` (py-spy needs ptrace rights, as root or with CAP_SYS_PTRACE).

- ``web``: ``python -m dashboard`` (one process) serving 50 replayed sessions (:mod:`bench.load`)
  for ``DURATION_S``;
- ``workers``: ``python -m workers all`` with 10 destinations taking 20 fills/s (:mod:`bench.soak`'s
  driver, no faults) for ``DURATION_S``.

Each writes ``docs/perf/profile_<target>.svg`` (flame graph) and prints the functions with the
largest inclusive share of samples (idle threads waiting on locks, sockets or queues are left out).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from bench.stack import ROOT, Stack, StackConfig

DURATION_S = 30
RATE_HZ = 50
OUT = ROOT / "docs" / "perf"
IDLE_FRAMES = ("select", "poll", "epoll", "wait (threading", "_wait_for_tstate_lock", "acquire", "sleep", "get (queue",
               "readinto (socket", "accept", "_worker (concurrent", "run_forever", "_run_once", "recv_into", "recv")


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed (pip install -r requirements-dev.txt)")
    return found


def record(pid: int, name: str, duration_s: int = DURATION_S) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    raw = OUT / f"profile_{name}.txt"
    svg = OUT / f"profile_{name}.svg"
    spy = _py_spy()
    subprocess.run([spy, "record", "--pid", str(pid), "--duration", str(duration_s), "--rate", str(RATE_HZ),
                    "--format", "raw", "--output", str(raw), "--nonblocking", "--subprocesses"],
                   check=True, capture_output=True)
    _flamegraph(raw, svg)
    return raw


def _flamegraph(raw: Path, svg: Path) -> None:
    """A minimal inclusive-time icicle SVG from collapsed stacks (no extra dependency)."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[stack] += int(n)
    total = sum(counts.values()) or 1
    tree: dict[str, object] = {}
    for stack, n in counts.items():
        node = tree
        for frame in stack.split(";"):
            child = node.setdefault(frame, {"__n": 0})
            child["__n"] += n  # type: ignore[index, operator]
            node = child  # type: ignore[assignment]
    width, row_h = 1600, 16
    rects: list[str] = []
    depth_max = 0

    def walk(node: dict[str, object], x: float, depth: int) -> None:
        nonlocal depth_max
        for frame, child in sorted(node.items()):
            if frame == "__n":
                continue
            n = child["__n"]  # type: ignore[index]
            w = width * n / total  # type: ignore[operator]
            if w >= 0.5:
                depth_max = max(depth_max, depth)
                short_raw = frame if len(frame) * 6.5 < w else frame[: max(0, int(w / 6.5) - 1)]
                label, short = _xml(frame), _xml(short_raw)
                hue = 20 + (hash(frame) % 40)
                rects.append(f'<g><title>{label} ({100 * n / total:.1f}%)</title>'  # type: ignore[operator]
                             f'<rect x="{x:.1f}" y="{depth * row_h}" width="{w:.1f}" height="{row_h - 1}" '
                             f'fill="hsl({hue},80%,60%)"/><text x="{x + 2:.1f}" y="{depth * row_h + 12}" '
                             f'font-size="11" font-family="monospace">{short}</text></g>')
                walk(child, x, depth + 1)  # type: ignore[arg-type]
            x += w

    walk(tree, 0.0, 0)
    height = (depth_max + 1) * row_h
    svg.write_text(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">' + "".join(rects) + "</svg>")


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def top(raw: Path, n: int = 15) -> list[tuple[str, float]]:
    """Functions by inclusive share of the busy samples (stacks ending in an idle frame are dropped)."""
    incl: Counter[str] = Counter()
    busy = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if any(frames[-1].startswith(idle) for idle in IDLE_FRAMES):
            continue
        busy += int(count)
        for frame in set(frames):
            incl[frame] += int(count)
    return [(f, round(100 * c / max(1, busy), 1)) for f, c in incl.most_common(n)]


def profile_web() -> Path:
    from bench.load import _drive

    with Stack(StackConfig(destinations=3, history_days=30, bot_rate=1.5)) as stack:
        stack.wait_ready(90)
        pid = next(p.pid for name, p in stack.processes().items() if name == "web")
        done = threading.Event()

        def drive() -> None:
            asyncio.run(_drive(stack.web_url, stack.slugs, 50, DURATION_S + 10, True))
            done.set()

        threading.Thread(target=drive, daemon=True).start()
        import time

        time.sleep(5)
        raw = record(pid, "web")
        done.wait(120)
    return raw


def profile_workers() -> Path:
    from bench.soak import FillDriver

    with Stack(StackConfig(destinations=10, web="none")) as stack:
        stack.wait_ready(90)
        pid = next(p.pid for name, p in stack.processes().items() if name == "workers")
        driver = FillDriver(stack, 20.0)
        driver.start()
        try:
            raw = record(pid, "workers")
        finally:
            driver.stop_event.set()
            driver.join(10)
    return raw


def main(argv: list[str]) -> int:
    targets = argv or ["web", "workers"]
    for target in targets:
        raw = {"web": profile_web, "workers": profile_workers}[target]()
        print(f"== {target}: {raw.relative_to(ROOT)} (busy samples, inclusive %)")
        for frame, pct in top(raw):
            print(f"{pct:6.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
