from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil

from core.db import connect
from core.embedded_pg import EmbeddedPostgres


def _postgres_processes(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] == "postgres" and str(data_dir) in cmdline:
            found.append(proc)
    return found


def test_start_reuse_and_clean_stop(pg_data_dir: Path) -> None:
    owner = EmbeddedPostgres(pg_data_dir / "db")
    dsn = owner.start()
    conn = connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE kept (x int)")
        cur.execute("INSERT INTO kept VALUES (42)")
    conn.close()

    guest = EmbeddedPostgres(pg_data_dir / "db")
    assert guest.start() == dsn
    assert guest.owner is False
    guest.stop()  # a guest never stops the owner's server
    assert _postgres_processes(pg_data_dir / "db")

    owner.stop()
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in _postgres_processes(pg_data_dir / "db"))

    # Data survives a restart of the same data directory.
    again = EmbeddedPostgres(pg_data_dir / "db")
    conn = connect(again.start())
    with conn.cursor() as cur:
        cur.execute("SELECT x FROM kept")
        assert cur.fetchone() == (42,)
    conn.close()
    again.stop()


def test_a_server_whose_owner_was_killed_is_stopped_and_restarted_as_our_own(pg_data_dir: Path) -> None:
    # Arrange: another process starts the server and is killed hard (as a `make demo` killed with -9)
    data_dir = pg_data_dir / "db"
    script = ("import sys, time; from core.embedded_pg import EmbeddedPostgres; "
              f"print(EmbeddedPostgres({str(data_dir)!r}).start(), flush=True); time.sleep(600)")
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    owner.stdout.readline()
    orphans = _postgres_processes(data_dir)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert orphans
    assert all(p.is_running() for p in orphans)  # pg_ctl daemonised it: it outlives its owner

    # Act
    server = EmbeddedPostgres(data_dir)
    dsn = server.start()

    # Assert: the orphan is gone, a server of our own answers, and stopping it leaves nothing running
    assert server.owner is True
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in orphans)
    conn = connect(dsn)
    conn.close()
    server.stop()
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in _postgres_processes(data_dir))
