"""``make demo``: the whole product on one machine, with nothing configured.

Starts (or reuses) the embedded PostgreSQL, applies the schema, starts the simulator (a paper broker
with history and a live trading bot), the workers (ingester + manager) and the dashboard, served by
gunicorn as the container entrypoint serves it, on http://127.0.0.1:5000. Ctrl-C stops every child
and then the database: nothing is left running. An embedded server left behind by a run that was
killed hard is stopped and started again as this run's own (:mod:`core.embedded_pg`).

    python -m scripts.demo [--web-port 5000] [--sim-port 8765] [--zmq-url tcp://127.0.0.1:5556]

Other ports than the defaults (``scripts.look`` picks free ones) need no edited destinations file:
the destinations that point at the default simulator address are pointed at ``--sim-port``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

from core.db import connect, migrate, resolve_dsn, stop_embedded
from core.destinations import load_destinations
from core.dsn import parse_dsn
from core.errors import ColdHarbourError
from core.settings import PROJECT_ROOT, Settings, load_settings

DEFAULT_SIM_PORT = 8765
SIM_URL_TEMPLATE = "http://127.0.0.1:{port}"
DEMO_DATABASE = "coldharbour_demo"
START_TIMEOUT_S = 90.0  # liveness bound of each start (the simulator generates its history first)
STOP_TIMEOUT_S = 15.0


def _arguments(argv: list[str] | None, settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--web-port", type=int, default=settings.port, help="dashboard port (default: PORT, 5000)")
    parser.add_argument("--sim-port", type=int, default=int(os.environ.get("DEMO_SIM_PORT", DEFAULT_SIM_PORT)),
                        help=f"simulator port (default {DEFAULT_SIM_PORT})")
    parser.add_argument("--zmq-url", default=os.environ.get("DEMO_ZMQ_URL", "tcp://127.0.0.1:5556"),
                        help="where the simulator publishes prices (default tcp://127.0.0.1:5556)")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    return parser.parse_args(argv)


def _wait_for(ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    """Poll ``ready()`` until true; fail when ``proc`` exits first or START_TIMEOUT_S passes."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if proc.poll() is not None:
            raise SystemExit(f"demo: {what} exited with status {proc.returncode} while starting")
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: {what} did not start within {START_TIMEOUT_S:.0f} s")
        time.sleep(0.2)


def _answers(url: str) -> bool:
    with contextlib.suppress(requests.RequestException):
        return requests.get(url, timeout=5).status_code in (200, 503)
    return False


def _stop(children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    # A second Ctrl-C (or make's SIGTERM after ours) must not abandon children half-stopped.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for _, proc in reversed(children):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # gunicorn's master drains and stops its workers
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for name, proc in reversed(children):
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"demo: {name} did not stop in time; killing it", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: gunicorn's workers too
            proc.wait()


def _fresh_demo_database(server_dsn: str) -> str:
    """A clean ``coldharbour_demo`` database on the server.

    The simulator regenerates its world (history, ids) on every start and keeps nothing, so data
    ingested from an earlier demo run would describe trades this broker never made. The cluster and
    any other database on it are left alone.
    """
    admin = connect(server_dsn)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{DEMO_DATABASE}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{DEMO_DATABASE}"')
    finally:
        admin.close()
    return parse_dsn(server_dsn).with_dbname(DEMO_DATABASE).uri()


def _destinations_for(dest_file: Path, sim_port: int, data_path: Path) -> Path:
    """``dest_file`` when it points at ``sim_port``, else a copy whose default simulator address is its."""
    default_url = SIM_URL_TEMPLATE.format(port=DEFAULT_SIM_PORT)
    text = dest_file.read_text()
    if sim_port == DEFAULT_SIM_PORT or SIM_URL_TEMPLATE.format(port=sim_port) in text:
        return dest_file
    if default_url not in text:
        raise SystemExit(f"demo: --sim-port {sim_port}: no destination in {dest_file} points at {default_url}")
    data_path.mkdir(parents=True, exist_ok=True)
    copy = data_path / f"demo-destinations-{sim_port}.toml"
    copy.write_text(text.replace(default_url, SIM_URL_TEMPLATE.format(port=sim_port)))
    return copy


def _gunicorn(port: int, workers: int) -> list[str]:
    """The entrypoint's ``web`` command (entrypoint.sh), bound to loopback, its heartbeat files in the
    default temporary directory (a container's ``/dev/shm`` need not exist here)."""
    cmd = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--worker-class", "gthread",
           "--workers", str(workers), "--threads", "32", "--timeout", "60", "--graceful-timeout", "8",
           "--keep-alive", "5", "--no-control-socket"]
    return [*cmd, "dashboard.app:server"]


def _detached() -> None:
    """Child pre-exec: its own session (the terminal's Ctrl-C reaches us, not it) and, on Linux,
    SIGTERM when the demo dies, so a demo killed hard leaves no simulator, workers or gunicorn behind."""
    os.setsid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(children: list[tuple[str, subprocess.Popen[bytes]]], name: str, cmd: list[str],
           env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, env=env, preexec_fn=_detached)  # safe: no threads have started
    children.append((name, proc))
    return proc


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace, settings: Settings, dest_file: Path,
         children: list[tuple[str, subprocess.Popen[bytes]]]) -> int:
    destinations = load_destinations(dest_file, settings.destinations_local_file)
    dsn = _fresh_demo_database(resolve_dsn(settings))
    conn = connect(dsn)
    try:
        migrate(conn, settings, destinations)
    finally:
        conn.close()
    env = dict(os.environ, POSTGRESQL_LIVE_CONN_STRING=dsn, ZMQ_PRICE_ENDPOINTS=args.zmq_url, PYTHONUNBUFFERED="1",
               DESTINATIONS_FILE=str(dest_file), PORT=str(args.web_port))
    if settings.alert_rules_file == "alerts.toml" and not Path("alerts.toml").exists():
        env["ALERT_RULES_FILE"] = "alerts.example.toml"  # fires within minutes, to the workers' log only

    state_file = settings.data_path / f"simulator_state-{args.sim_port}.json"
    state_file.unlink(missing_ok=True)
    sim_cmd = [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", str(args.sim_port),
               "--zmq-url", args.zmq_url, "--destinations", str(dest_file), "--seed", "7",
               "--history-days", os.environ.get("DEMO_HISTORY_DAYS", "120"),
               "--bot-rate", os.environ.get("DEMO_BOT_RATE", "0.5"),
               "--state-out", str(state_file)]
    _wait_for(state_file.exists, _spawn(children, "simulator", sim_cmd, env), "simulator")
    state = json.loads(state_file.read_text())
    print(f"demo: simulator at {state['rest_url']} ({len(state['accounts'])} accounts), prices on {state['zmq_url']}")

    _spawn(children, "workers", [sys.executable, "-m", "workers", "all"], env)
    web = _spawn(children, "dashboard", _gunicorn(args.web_port, args.web_workers), env)
    web_url = f"http://127.0.0.1:{args.web_port}"
    _wait_for(lambda: _answers(f"{web_url}/healthz"), web, "dashboard")
    print(f"demo: dashboard on {web_url}  (Ctrl-C stops everything)", flush=True)
    while True:
        for name, proc in children:
            if proc.poll() is not None:
                print(f"demo: {name} exited with status {proc.returncode}; stopping", file=sys.stderr)
                return 1
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    os.chdir(PROJECT_ROOT)
    dest_file = Path(os.environ.get("DESTINATIONS_FILE") or "destinations.toml")
    if not dest_file.exists():
        dest_file = Path("destinations.example.toml")
    try:
        settings = load_settings()
    except ColdHarbourError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    args = _arguments(argv, settings)

    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    # Children must not stop on the terminal's Ctrl-C before we do: they get SIGTERM from us.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored (background jobs)
    try:
        return _run(args, settings, _destinations_for(dest_file, args.sim_port, settings.data_path), children)
    except KeyboardInterrupt:
        print("\ndemo: stopping…")
        return 0
    except ColdHarbourError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 3
    finally:
        _stop(children)
        stop_embedded()
        print("demo: stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
