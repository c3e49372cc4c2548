"""``make demo``: the whole product on one machine, with nothing configured.

Starts (or reuses) the embedded PostgreSQL, applies the schema, starts the simulator (a paper broker
with history and a live trading bot), the workers (ingester + manager) and the dashboard on
http://127.0.0.1:5000. Ctrl-C stops every child and then the database: nothing is left running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.db import connect, migrate, resolve_dsn, stop_embedded
from core.destinations import load_destinations
from core.dsn import parse_dsn
from core.errors import ColdHarbourError
from core.settings import PROJECT_ROOT, load_settings

SIM_PORT = int(os.environ.get("DEMO_SIM_PORT", "8765"))
DEMO_DATABASE = "coldharbour_demo"
ZMQ_URL = os.environ.get("DEMO_ZMQ_URL", "tcp://127.0.0.1:5556")


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            raise SystemExit(f"demo: {what} exited with status {proc.returncode} while starting")
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: {what} did not start within {timeout_s:.0f} s")
        time.sleep(0.1)


def _stop(children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    # A second Ctrl-C (or make's SIGTERM after ours) must not abandon children half-stopped.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for _, proc in reversed(children):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for name, proc in reversed(children):
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"demo: {name} did not stop in time; killing it", file=sys.stderr)
            proc.kill()
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


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    os.chdir(PROJECT_ROOT)
    dest_file = Path(os.environ.get("DESTINATIONS_FILE") or "destinations.toml")
    if not dest_file.exists():
        dest_file = Path("destinations.example.toml")
    os.environ["DESTINATIONS_FILE"] = str(dest_file)
    try:
        settings = load_settings()
        destinations = load_destinations(dest_file, settings.destinations_local_file)
    except ColdHarbourError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2

    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    # Children must not stop on the terminal's Ctrl-C before we do: they get SIGTERM from us.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored (background jobs)
    try:
        dsn = _fresh_demo_database(resolve_dsn(settings))
        conn = connect(dsn)
        try:
            migrate(conn, settings, destinations)
        finally:
            conn.close()
        env = dict(os.environ, POSTGRESQL_LIVE_CONN_STRING=dsn, ZMQ_PRICE_ENDPOINTS=ZMQ_URL, PYTHONUNBUFFERED="1")

        state_file = settings.data_path / "simulator_state.json"
        state_file.unlink(missing_ok=True)
        sim_cmd = [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", str(SIM_PORT),
                   "--zmq-url", ZMQ_URL, "--destinations", str(dest_file), "--seed", "7",
                   "--history-days", os.environ.get("DEMO_HISTORY_DAYS", "120"),
                   "--bot-rate", os.environ.get("DEMO_BOT_RATE", "0.5"),
                   "--state-out", str(state_file)]
        children.append(("simulator", subprocess.Popen(sim_cmd, env=env, start_new_session=True)))
        _wait_for(state_file, children[-1][1], 60, "simulator")
        state = json.loads(state_file.read_text())
        print(f"demo: simulator at {state['rest_url']} ({len(state['accounts'])} accounts), prices on {state['zmq_url']}")

        children.append(("workers", subprocess.Popen([sys.executable, "-m", "workers", "all"], env=env,
                                                     start_new_session=True)))
        children.append(("dashboard", subprocess.Popen([sys.executable, "-m", "dashboard"], env=env,
                                                       start_new_session=True)))
        print(f"demo: dashboard on http://127.0.0.1:{settings.port}  (Ctrl-C stops everything)")
        while True:
            for name, proc in children:
                if proc.poll() is not None:
                    print(f"demo: {name} exited with status {proc.returncode}; stopping", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\ndemo: stopping…")
        return 0
    except ColdHarbourError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 3
    finally:
        _stop(children)
        stop_embedded()
        print("demo: stopped")


if __name__ == "__main__":
    sys.exit(main())
