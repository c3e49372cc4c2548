"""Helpers for the alerts tests (no tests here): a real local HTTP receiver and a real SMTP server."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at_monotonic: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A local aiohttp server recording every POST; ``fail_next`` answers the next N with ``fail_status``."""

    received: list[Received] = field(default_factory=list)
    fail_next: int = 0
    fail_status: int = 500
    always_fail: bool = False
    attempts: int = 0  # every POST, answered or refused
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.attempts += 1
        if self.always_fail or self.fail_next > 0:
            self.fail_next = max(0, self.fail_next - 1)
            return web.Response(status=self.fail_status, text="nope")
        self.received.append(Received(request.path, dict(request.headers), body, time.monotonic()))
        return web.json_response({"ok": True})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(cond: Callable[[], Awaitable[bool] | bool], *, what: str, timeout_s: float = 30.0) -> None:
    """Poll until ``cond`` holds (the bound only stops a hung test; nothing is timed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
