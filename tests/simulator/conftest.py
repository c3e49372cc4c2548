"""Shared helpers for the simulator tests: a module-wide simulator, polling, a TradingStream recorder."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.stream import TradingStream

from tests.simulator_fixtures import SimHandle, start_simulator

POLL_DEADLINE_S = 15.0


def wait_for(predicate: Callable[[], Any], what: str, deadline_s: float = POLL_DEADLINE_S) -> Any:
    """Poll until ``predicate()`` is truthy (bounded); returns its value."""
    end = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimHandle]:
    """One simulator for a whole test module: 8 accounts; each test uses its own account index."""
    handle = start_simulator(tmp_path_factory.mktemp("sim"), accounts=8, seed=11)
    yield handle
    handle.stop()


def client_for(handle: SimHandle, index: int) -> TradingClient:
    return handle.trading_client(index)


class StreamRecorder:
    """Runs alpaca-py's TradingStream (which owns its event loop) in a thread and queues the updates."""

    def __init__(self, handle: SimHandle, index: int, *, key: str | None = None, secret: str | None = None) -> None:
        acct = handle.accounts[index]
        self.handle = handle
        self.name = acct["name"]
        self.stream = TradingStream(key or acct["key_id"], secret or acct["secret_key"], paper=True, url_override=handle.stream_url)
        self.updates: queue.Queue[Any] = queue.Queue()

        async def on_update(update: Any) -> None:
            self.updates.put((time.monotonic(), update))

        self.stream.subscribe_trade_updates(on_update)
        self.thread = threading.Thread(target=self.stream.run, daemon=True, name=f"stream-{self.name}")

    def start(self, *, wait: bool = True) -> StreamRecorder:
        self.thread.start()
        if wait:
            self.wait_listening()
        return self

    def wait_listening(self, count: int = 1) -> None:
        wait_for(lambda: self.handle.admin("/state")["stream_listening"].get(self.name, 0) == count, f"{self.name} listening")

    def next(self, timeout_s: float = POLL_DEADLINE_S) -> Any:
        return self.updates.get(timeout=timeout_s)[1]

    def collect(self, predicate: Callable[[list[Any]], bool], timeout_s: float = POLL_DEADLINE_S) -> list[Any]:
        got: list[Any] = []
        end = time.monotonic() + timeout_s
        while not predicate(got):
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"stream got only {[(u.event, u.order.id) for u in got]}")
            try:
                got.append(self.updates.get(timeout=remaining)[1])
            except queue.Empty:
                continue
        return got

    def stop(self) -> None:
        if self.stream._loop is not None and self.stream._loop.is_running():
            self.stream.stop()
            # The SDK only notices a stop between 5 s receive timeouts; closing the socket wakes it now.
            if self.thread.is_alive():
                self.handle.admin("/drop-streams", {})
        self.thread.join(timeout=15)
        assert not self.thread.is_alive()


@pytest.fixture
def recorder() -> Iterator[Callable[..., StreamRecorder]]:
    started: list[StreamRecorder] = []

    def make(handle: SimHandle, index: int, **kw: Any) -> StreamRecorder:
        rec = StreamRecorder(handle, index, **kw)
        started.append(rec)
        return rec

    yield make
    for rec in started:
        rec.stop()
