"""``make look``: start the demo on free ports, let it trade, and screenshot every page the way a person sees it.

    python -m scripts.look [--trade-s 60] [--out DIR] [--docs]

Runs ``python -m scripts.demo`` (embedded PostgreSQL in ``.coldharbour/look-data``, simulator, workers,
gunicorn) on ports nobody uses, waits ``--trade-s`` seconds while the bot trades, then opens each page in
headless Chromium: the overview, every destination, a trade drill-down, activities and health, in the
light and the dark theme, at desktop width and at 390 px. Full-page PNGs go to
``.coldharbour/look/<time>/`` (git-ignored; ``.coldharbour/look/latest`` points at the newest), their
paths are printed, and so is everything :mod:`scripts.page_probe` finds wrong on a page (charts without
data, time axes that are not dates, overlapping cards, NaN/None/scientific notation, money figures in
another format, console errors). ``--docs`` also copies the README's pictures to ``docs/screenshots/``.
The demo is stopped with Ctrl-C's signal at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from bench.stack import free_port
from core.settings import PROJECT_ROOT
from scripts import page_probe

DESKTOP = (1400, 1000)
PHONE = (390, 844)
MAX_SHOT_HEIGHT_PX = 6000
START_TIMEOUT_S = 180.0  # liveness bound for the demo to serve (it generates its history first)
STOP_TIMEOUT_S = 40.0
SCRIPT_TIMEOUT_S = 180.0  # a busy page answers a script late (the activities page re-renders as trades arrive)
# docs/screenshots/<name>.png <- the look's <page>-<theme>-<width>.png (what the README shows)
DOCS_SHOTS = {
    "overview": "overview-light-desktop", "overview-phone": "overview-light-phone",
    "destination": "destination-{slug}-light-desktop", "destination-dark": "destination-{slug}-dark-desktop",
    "destination-phone": "destination-{slug}-light-phone", "trade": "trade-light-desktop",
    "activities": "activities-light-desktop", "health": "health-light-desktop",
}


@dataclass(frozen=True, slots=True)
class Shot:
    name: str  # page name: overview, destination-<slug>, trade, activities, health
    path: str  # URL path


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.look", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trade-s", type=float, default=60.0, help="seconds of trading before the pictures (60)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the PNGs (.coldharbour/look/<time>)")
    parser.add_argument("--docs", action="store_true", help="also refresh docs/screenshots/ from these pictures")
    return parser.parse_args(argv)


@contextlib.contextmanager
def demo(log_path: Path) -> Iterator[str]:
    """``scripts.demo`` on free ports; yields the dashboard URL; SIGINT (Ctrl-C) and wait at the end."""
    web, sim, zmq = free_port(), free_port(), free_port()
    env = dict(os.environ, DATA_DIR=str(PROJECT_ROOT / ".coldharbour" / "look-data"), PYTHONUNBUFFERED="1")
    for name in ("PORT", "POSTGRESQL_LIVE_CONN_STRING", "TIMESCALE_LIVE_CONN_STRING"):
        env.pop(name, None)  # the look runs the demo itself: embedded database, its own ports
    cmd = [sys.executable, "-m", "scripts.demo", "--web-port", str(web), "--sim-port", str(sim),
           "--zmq-url", f"tcp://127.0.0.1:{zmq}"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{web}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while b"demo: dashboard on" not in log_path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise SystemExit(f"look: the demo did not start (see {log_path}):\n{tail}")
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def browser(width: int, height: int) -> Any:
    """Debian's headless Chromium through selenium, console logs kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                f"--window-size={width},{height}"):
        options.add_argument(arg)  # type: ignore[no-untyped-call]
    chromium = shutil.which("chromium")
    if chromium:
        options.binary_location = chromium
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # type: ignore[no-untyped-call]
    driver_path = shutil.which("chromedriver")
    driver = webdriver.Chrome(options=options, service=Service(driver_path) if driver_path else Service())
    driver.set_script_timeout(SCRIPT_TIMEOUT_S)
    return driver


def set_theme(driver: Any, url: str, theme: str) -> None:
    """Persist the theme switch as a visitor's choice would be (assets/theme.js reads it before render)."""
    driver.get(url + "/healthz")
    key = "_dash_persistence.theme-switch.value.true"
    driver.execute_script("arguments[1] ? localStorage.setItem(arguments[0], '[true,false]')"
                          " : localStorage.removeItem(arguments[0]);", key, theme == "dark")


def full_page(driver: Any, path: Path, width: int) -> None:
    """Grow the window to the page's height, let it settle, save a PNG of all of it."""
    for _ in range(3):  # a taller window can lay the page out taller still (a scrollbar gone, wrapped rows)
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        inner = int(driver.execute_script("return window.innerHeight"))
        if height <= inner or inner >= MAX_SHOT_HEIGHT_PX:
            break
        outer = int(driver.execute_script("return window.outerHeight"))
        driver.set_window_size(width, min(height + (outer - inner), MAX_SHOT_HEIGHT_PX))
        page_probe.settle(driver)
    driver.save_screenshot(str(path))


def pages(url: str) -> list[Shot]:
    """The overview, every destination, a trade drill-down (from the first destination with one), activities, health."""
    with contextlib.closing(browser(*DESKTOP)) as driver:
        driver.get(url + "/")
        page_probe.settle(driver)
        hrefs = driver.execute_script(
            "return [...new Set([...document.querySelectorAll('a[href^=\"/destination/\"]')]"
            ".map(a => a.getAttribute('href')))];")
    shots = [Shot("overview", "/")] + [Shot(f"destination-{h.rsplit('/', 1)[-1]}", h) for h in hrefs]
    for href in hrefs:
        slug = href.rsplit("/", 1)[-1]
        trade_id = _first_trade_id(url, slug)
        if trade_id:
            shots.append(Shot("trade", f"{href}/trade/{trade_id}"))
            break
    # the strategies, the first strategy's page and the comparison (issue 20)
    with contextlib.closing(browser(*DESKTOP)) as driver:
        driver.get(url + "/strategies")
        page_probe.settle(driver)
        strategy = driver.execute_script(
            "const a = document.querySelector('a[href^=\"/strategy/\"]'); return a && a.getAttribute('href');")
    shots += [Shot("strategies", "/strategies"), *([Shot("strategy", strategy)] if strategy else []),
              Shot("compare", "/compare")]
    return [*shots, Shot("activities", "/activities"), Shot("health", "/health")]


def _first_trade_id(url: str, slug: str) -> str | None:
    """A round trip of ``slug`` from the dashboard's own CSV export (its column headed ``Trade``)."""
    resp = requests.get(f"{url}/export/{slug}/closed_trades.csv", timeout=60)
    rows = list(csv.reader(io.StringIO(resp.text))) if resp.ok else []
    if len(rows) < 2:
        return None
    header = [h.strip().lower() for h in rows[0]]
    column = next((i for i, h in enumerate(header) if h in ("trade", "trade_id", "trade id")), 0)
    return rows[1][column] or None


def take(url: str, shots: list[Shot], out: Path) -> tuple[list[Path], list[str]]:
    """Every shot in both themes at both widths; returns the PNG paths and the problems found."""
    from selenium.common.exceptions import WebDriverException

    saved: list[Path] = []
    found: list[str] = []
    for theme in ("light", "dark"):
        for label, (width, height) in (("desktop", DESKTOP), ("phone", PHONE)):
            with contextlib.closing(browser(width, height)) as driver:
                set_theme(driver, url, theme)
                for shot in shots:
                    driver.set_window_size(width, height)
                    driver.get(url + shot.path)
                    try:
                        page_probe.settle(driver)
                        path = out / f"{shot.name}-{theme}-{label}.png"
                        full_page(driver, path, width)
                    except (TimeoutError, WebDriverException) as exc:  # a page that never draws is a finding
                        found.append(f"{shot.path} ({theme}, {label}): {str(exc).splitlines()[0]}")
                        continue
                    saved.append(path)
                    print(path, flush=True)
                    found += [f"{p} ({theme}, {label})" for p in page_probe.problems(page_probe.probe(driver))]
                    found += [f"{shot.path} ({theme}, {label}): console: {e}" for e in page_probe.console_errors(driver)]
    return saved, found


def copy_to_docs(out: Path, shots: list[Shot]) -> list[Path]:
    slug = next((s.name.removeprefix("destination-") for s in shots if s.name.startswith("destination-")), "")
    docs = PROJECT_ROOT / "docs" / "screenshots"
    copied = []
    for name, source in DOCS_SHOTS.items():
        src = out / f"{source.format(slug=slug)}.png"
        if src.exists():
            shutil.copyfile(src, docs / f"{name}.png")
            copied.append(docs / f"{name}.png")
    return copied


def _stop_on_sigterm(signum: int, _frame: Any) -> None:
    """``timeout`` or a CI runner ends the look with SIGTERM: exit through the ``finally`` that stops the demo
    (Python's default for SIGTERM ends the process at once and leaves the demo running)."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    root = PROJECT_ROOT / ".coldharbour" / "look"
    out = (args.out or root / stamp).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with demo(out / "demo.log") as url:
        print(f"look: demo on {url}; trading for {args.trade_s:.0f} s", flush=True)
        time.sleep(args.trade_s)
        shots = pages(url)
        saved, found = take(url, shots, out)
    if args.out is None:
        latest = root / "latest"
        latest.unlink(missing_ok=True)
        latest.symlink_to(out.name)
    if args.docs:
        for path in copy_to_docs(out, shots):
            print(f"look: docs <- {path}")
    print(f"look: {len(saved)} screenshots in {out}")
    for problem in found:
        print(f"look: PROBLEM {problem}")
    return 1 if found or not saved else 0


if __name__ == "__main__":
    sys.exit(main())
