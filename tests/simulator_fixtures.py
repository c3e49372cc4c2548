"""Simulator fixtures: run ``python -m simulator`` as a subprocess on free ports.

Usage in any test (this module is a pytest plugin registered by ``tests/conftest.py``)::

    def test_something(simulator):                 # 2 accounts, seed 1, no history, bot off
        client = simulator.trading_client(0)        # alpaca-py TradingClient for account 0
        simulator["rest_url"], simulator["stream_url"], simulator["zmq_url"]   # the state dict
        simulator.accounts[0]                       # {"name", "key_id", "secret_key"}
        simulator.admin("/fill", {"account": "sim-1", "symbol": "AAPL", "side": "buy", "qty": "5"})
        simulator.admin("/ground-truth")            # GET when no JSON body is given

    def test_read_only(simulator_session): ...      # one shared simulator: 3 accounts, 5 days of history

    def test_custom(simulator_factory, tmp_path):
        sim = simulator_factory(accounts=3, history_days=5, bot_rate=4, extra_args=["--ws-drop-every-s", "2"])

or without pytest fixtures: ``start_simulator(tmp_path, accounts=2, seed=1, extra_args=[...]) -> SimHandle``
(call ``.stop()`` yourself; it is also a context manager).

``SimHandle``: ``.state`` (the dict written by ``--state-out``: rest_url, stream_url, zmq_url,
admin_url, pid, accounts), ``.accounts``, ``.admin(path, json=None, method=None)`` (returns the
decoded JSON answer of ``/admin<path>``; raises on HTTP errors), ``.trading_client(i)``,
``.stop()``; ``.admin_headers`` (the admin API's bearer token). Both the REST port and the ZMQ port are chosen by the OS (``--port 0`` and
``tcp://127.0.0.1:*``), so parallel simulators never collide. The market is always open (``--always-open``) unless
``extra_args`` has ``--nyse-hours``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

# alpaca-py 0.44's TradingStream imports ``websockets.legacy``, which websockets >= 14 deprecates on import;
# ``alpaca.trading`` pulls it in even for TradingClient. Import it once here, with that one warning silenced,
# so test modules can import alpaca normally under ``filterwarnings = error``.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="websockets.legacy is deprecated", category=DeprecationWarning)
    import alpaca.trading  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30.0


class SimHandle:
    """A running simulator subprocess. Also indexable like its state dict (``handle["rest_url"]``)."""

    def __init__(self, proc: subprocess.Popen[bytes], state: dict[str, Any], log_path: Path) -> None:
        self.proc = proc
        self.state = state
        self.log_path = log_path

    def __getitem__(self, key: str) -> Any:
        return self.state[key]

    @property
    def rest_url(self) -> str:
        return str(self.state["rest_url"])

    @property
    def stream_url(self) -> str:
        return str(self.state["stream_url"])

    @property
    def zmq_url(self) -> str | None:
        return self.state["zmq_url"]

    @property
    def accounts(self) -> list[dict[str, str]]:
        return list(self.state["accounts"])

    def admin(self, path: str, json: Any = None, method: str | None = None, timeout: float = 10.0) -> Any:
        """Call ``/admin<path>``: POST when ``json`` is given, GET otherwise (or ``method``)."""
        verb = method or ("POST" if json is not None else "GET")
        resp = requests.request(verb, f"{self.rest_url}/admin{path}", json=json, timeout=timeout, headers=self.admin_headers)
        resp.raise_for_status()
        return resp.json()

    @property
    def admin_headers(self) -> dict[str, str]:
        """The bearer token the admin API requires (from the state file)."""
        return {"Authorization": f"Bearer {self.state['admin_token']}"} if self.state.get("admin_token") else {}

    def trading_client(self, index: int = 0) -> Any:
        from alpaca.trading.client import TradingClient

        acct = self.state["accounts"][index]
        return TradingClient(acct["key_id"], acct["secret_key"], paper=True, url_override=self.rest_url)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def __enter__(self) -> SimHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """Child pre-exec (Linux): get SIGTERM when the test process dies, so no simulator is orphaned."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def start_simulator(
    tmp_path: Path,
    *,
    accounts: int = 2,
    seed: int = 1,
    history_days: int = 0,
    bot_rate: float = 0.0,
    zmq: bool = True,
    extra_args: list[str] | None = None,
) -> SimHandle:
    """Start ``python -m simulator`` on free ports; returns once it accepts connections."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    n = len(list(tmp_path.glob("sim-state-*.json")))
    state_path = tmp_path / f"sim-state-{n}.json"
    log_path = tmp_path / f"sim-{n}.log"
    args = [
        sys.executable,
        "-m",
        "simulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--accounts",
        str(accounts),
        "--seed",
        str(seed),
        "--history-days",
        str(history_days),
        "--bot-rate",
        str(bot_rate),
        "--zmq-url",
        "tcp://127.0.0.1:*" if zmq else "none",
        "--state-out",
        str(state_path),
        "--always-open",  # tests choose their moment; ``extra_args=["--nyse-hours"]`` follows NYSE sessions
        *(extra_args or []),
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not state_path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"simulator exited with {proc.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"simulator did not start within {START_TIMEOUT_S}s:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)
    state = json.loads(state_path.read_text())
    return SimHandle(proc, state, log_path)


@pytest.fixture
def simulator_factory(tmp_path: Path) -> Iterator[Callable[..., SimHandle]]:
    """``factory(**start_simulator kwargs) -> SimHandle``; every simulator started is stopped afterwards."""
    handles: list[SimHandle] = []

    def factory(**kwargs: Any) -> SimHandle:
        handle = start_simulator(tmp_path / "sim", **kwargs)
        handles.append(handle)
        return handle

    yield factory
    for h in handles:
        h.stop()


@pytest.fixture
def simulator(simulator_factory: Callable[..., SimHandle]) -> SimHandle:
    """A fresh simulator per test: 2 accounts (sim-1, sim-2), seed 1, no history, no bot, ZMQ on."""
    return simulator_factory()


@pytest.fixture(scope="session")
def simulator_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimHandle]:
    """One simulator shared by the whole session (read-mostly tests): 3 accounts, seed 1, 5 days of
    history, no bot. Tests that place orders must not assume a clean account."""
    handle = start_simulator(tmp_path_factory.mktemp("sim-session"), accounts=3, seed=1, history_days=5)
    yield handle
    handle.stop()
