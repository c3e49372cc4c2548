from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.db import connect
from core.errors import DatabaseUnavailable


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_database_names_host_port_not_password() -> None:
    port = _closed_port()
    with pytest.raises(DatabaseUnavailable) as err:
        connect(f"postgresql://user:sup3rs3cret@127.0.0.1:{port}/db", timeout_s=10)
    assert f"127.0.0.1:{port}" in str(err.value)
    assert "sup3rs3cret" not in str(err.value)


def test_cli_exits_nonzero_on_unreachable_database(tmp_path: Path) -> None:
    port = _closed_port()
    dest = tmp_path / "d.toml"
    dest.write_text('[[destinations]]\nname = "A"\nkey_id = "k"\nsecret_key = "s"\nbase_url = "paper"\n')
    env = {"PATH": "/usr/bin:/bin", "DESTINATIONS_FILE": str(dest), "COLDHARBOUR_ENV_FILE": "/nonexistent",
           "POSTGRESQL_LIVE_CONN_STRING": f"postgresql://user:sup3rs3cret@127.0.0.1:{port}/db"}
    proc = subprocess.run([sys.executable, "-m", "workers", "migrate"], env=env, capture_output=True, text=True,
                          timeout=30, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 3
    assert f"127.0.0.1:{port}" in proc.stderr
    assert "sup3rs3cret" not in proc.stderr + proc.stdout
