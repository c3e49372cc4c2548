"""``make demo`` as a user runs it: one command serves the dashboard like production, Ctrl-C stops all,
and a run that was killed hard leaves nothing that the next run adopts and leaves behind.

The demo is configured only through the environment a user could set (``PORT``, ``DEMO_SIM_PORT``,
``DEMO_ZMQ_URL``, ``DESTINATIONS_FILE``, ``DATA_DIR``), on free ports and a private data directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from bench.stack import ROOT, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

START_S = 240.0  # liveness bound for the demo to serve (not a timing assertion)
STOP_S = 60.0


class Demo:
    """One ``python -m scripts.demo`` process and its log."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "scripts.demo"], cwd=ROOT, env=env, stdout=out,
                                         stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_serving(self, url: str) -> None:
        deadline = time.monotonic() + START_S
        while "demo: dashboard on" not in self.text():
            assert self.proc.poll() is None, f"the demo exited with {self.proc.returncode}:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"the demo did not serve within {START_S:.0f} s:\n{self.text()[-3000:]}"
            time.sleep(0.5)
        assert requests.get(f"{url}/healthz", timeout=30).status_code in (200, 503)

    def tree(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)


def _postmaster(data_dir: Path) -> psutil.Process:
    pid = int((data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()[0])
    return psutil.Process(pid)


def _gone(procs: list[psutil.Process]) -> bool:
    return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs)


def _wait_gone(procs: list[psutil.Process], what: str) -> None:
    deadline = time.monotonic() + STOP_S
    while not _gone(procs):
        assert time.monotonic() < deadline, f"{what} still running: {[p.pid for p in procs if p.is_running()]}"
        time.sleep(0.2)


@pytest.fixture
def demo_env(tmp_path: Path, pg_data_dir: Path) -> Iterator[tuple[dict[str, str], str]]:
    # the demo's embedded PostgreSQL lives outside tmp_path (see pg_data_dir): a pytest session started
    # meanwhile on the machine re-chmods tmp_path's root, and pg_ctl could not stop the server then
    web, sim, zmq = free_port(), free_port(), free_port()
    dests = tmp_path / "destinations.toml"
    dests.write_text(
        (ROOT / "destinations.example.toml").read_text().replace("http://127.0.0.1:8765", f"http://127.0.0.1:{sim}"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POSTGRESQL_", "TIMESCALE_", "COLDHARBOUR_", "DASH_AUTH"))}
    env.update(PORT=str(web), DEMO_SIM_PORT=str(sim), DEMO_ZMQ_URL=f"tcp://127.0.0.1:{zmq}", DESTINATIONS_FILE=str(dests),
               DESTINATIONS_LOCAL_FILE=str(tmp_path / "none.toml"), DATA_DIR=str(pg_data_dir / "data"),
               DEMO_HISTORY_DAYS="5", DEMO_BOT_RATE="0.2", PYTHONUNBUFFERED="1")
    yield env, f"http://127.0.0.1:{web}"
    # whatever a failed run left: our own data directory's server only
    pid_file = pg_data_dir / "data" / "pgdata" / "postmaster.pid"
    if pid_file.exists():
        from core.embedded_pg import EmbeddedPostgres

        leftover = EmbeddedPostgres(pg_data_dir / "data")
        leftover.start()  # stops an orphan and starts the server as ours...
        leftover.stop()  # ...so that this stops it


def test_demo_serves_like_production_and_a_hard_kill_leaves_nothing_behind(
        demo_env: tuple[dict[str, str], str], tmp_path: Path) -> None:
    env, url = demo_env
    data_dir = Path(env["DATA_DIR"])

    # a first run, killed hard
    first = Demo(env, tmp_path / "first.log")
    first.wait_serving(url)
    children = first.tree()
    assert any("gunicorn" in " ".join(p.cmdline()) for p in children), [p.cmdline() for p in children]
    assert "development server" not in first.text()
    orphan = _postmaster(data_dir)
    first.proc.kill()
    first.proc.wait()
    _wait_gone(children, "the killed demo's simulator, workers and dashboard")
    assert orphan.is_running()  # pg_ctl daemonised it: only the next run can stop it

    # the next run does not adopt the orphan, and Ctrl-C stops everything it runs
    second = Demo(env, tmp_path / "second.log")
    second.wait_serving(url)
    assert _gone([orphan])
    server = _postmaster(data_dir)
    children = second.tree()
    second.proc.send_signal(signal.SIGINT)
    assert second.proc.wait(timeout=STOP_S) == 0, second.text()[-3000:]
    _wait_gone([*children, server], "after Ctrl-C, the demo's processes and database")
    assert "demo: stopped" in second.text()
