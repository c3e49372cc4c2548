"""A bad setting under the real gunicorn (through entrypoint.sh, as deployed): one line naming it, no traceback.

Before the fix the worker printed the full import traceback and gunicorn's master reported only "Worker
failed to boot"; now the worker prints ``error: configuration: <origin> <NAME>: <problem>`` and exits with
gunicorn's "App failed to load" code, so the master stops instead of booting workers forever.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "entrypoint.sh"
GUARD_S = 180  # a bound so a regression (a respawn loop) fails instead of hanging the suite; not a timing check


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DASH_STATEMENT_TIMEOUT_S", "abc"),
        ("SSE_MAX_STREAMS", "nan"),
    ],
)
def test_gunicorn_with_a_bad_setting_prints_one_clear_line_and_exits_non_zero(
        tmp_path: Path, name: str, value: str) -> None:
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),  # gunicorn's control socket goes under $HOME
        "PORT": str(_free_port()),
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "2",
        "COLDHARBOUR_ENV_FILE": str(tmp_path / "absent.env"),  # never a developer's own .env
        "POSTGRESQL_LIVE_CONN_STRING": "postgresql://nobody@127.0.0.1:1/none",
        "DATA_DIR": str(tmp_path / "data"),
        name: value,
    }
    proc = subprocess.Popen([str(ENTRYPOINT), "web"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=GUARD_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    assert proc.returncode != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: configuration:")]
    assert len(errors) == 1, output  # one worker, one line
    assert errors[0].startswith(f"error: configuration: environment variable {name}: "), output
    assert "App failed to load" in output  # the master stopped: no worker respawn loop
