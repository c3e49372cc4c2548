"""The REST budget's ledger in PostgreSQL: one destination's calls counted across processes.

The ingester and the manager are separate processes (and each may run as two replicas for
fail-over), and every one of them spends the same account allowance. Each call a process is about
to start is first written to ``public.ch_rest_calls`` by ``public.ch_rest_take()`` (migration 10),
which, under a transaction advisory lock on the destination, counts the calls of every process in
the sliding window and takes a slot only while the count is under the caller's limit. That is one
round trip per REST call, on one small connection per process (shared by all its destinations and
serialised by a lock: asyncpg runs one query at a time per connection).

When the database cannot be reached (connect refused, timeout, the function missing), the ledger
answers ``None`` and the budget falls back to its local window: broker calls go on, each process
spending at most the budget on its own, which is what the deployment did before the ledger. The
outage is logged once, counted in the budget's stats, and the ledger is asked again after
``retry_after_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import weakref
from dataclasses import dataclass
from typing import Any

import asyncpg

from core.dsn import parse_dsn

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 2.0
"""A ledger that does not answer this fast is treated as down: the call goes on locally."""
QUERY_TIMEOUT_S = 2.0
RETRY_AFTER_S = 10.0
"""After a failure, calls spend the local window without asking the database for this long."""
IDLE_CLOSE_S = 60.0
"""The connection is closed after this long without a call (re-opened by the next one)."""

TAKE_SQL = "SELECT taken, ages_s, holders FROM public.ch_rest_take($1, $2, $3, $4, $5, $6)"


@dataclass(frozen=True, slots=True)
class LedgerAnswer:
    """What the ledger said about one destination's window (every process's calls)."""

    taken: bool
    """A slot was taken for this call (written to the ledger)."""
    ages_s: tuple[float, ...]
    """Ages of the calls in the window, oldest first (ours included when taken)."""
    holders: int
    """How many processes made those calls."""


def holder_name() -> str:
    """This process, as the ledger records it (host and pid)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class LedgerConnection:
    """One process's connection to the ledger's database, shared by every destination's ledger.

    It belongs to the event loop that opened it; a call from another loop (tests run one loop
    each) opens a new one. Failures never raise: :meth:`call` answers ``None``."""

    def __init__(self, dsn: str, *, retry_after_s: float = RETRY_AFTER_S, idle_close_s: float = IDLE_CLOSE_S) -> None:
        self._dsn = dsn
        self.retry_after_s = retry_after_s
        self.idle_close_s = idle_close_s
        self._conn: asyncpg.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self.down_until_monotonic = 0.0
        self.down = False
        """The last call failed (the budget is spending its local window)."""
        self.failures = 0
        self.round_trips = 0

    def _bind(self, loop: asyncio.AbstractEventLoop) -> asyncio.Lock:
        if self._loop is not loop or self._lock is None:
            self._abandon()
            self._loop, self._lock = loop, asyncio.Lock()
        return self._lock

    def _abandon(self) -> None:
        """Drop a connection of another (maybe closed) loop without awaiting anything."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # its loop may be closed: nothing left to tell the server
                conn.terminate()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT_S, command_timeout=QUERY_TIMEOUT_S,
                                               server_settings={"application_name": "coldharbour-rest-budget"})
        return self._conn

    async def call(self, sql: str, *args: Any) -> asyncpg.Record | None:
        """Run one statement and return its row, or ``None`` if the database is down (logged once)."""
        if time.monotonic() < self.down_until_monotonic:
            return None
        loop = asyncio.get_running_loop()
        async with self._bind(loop):
            try:
                conn = await self._connection()
                row = await conn.fetchrow(sql, *args)
            except Exception as exc:  # whatever the ledger's trouble, broker calls go on locally
                self._failed(exc)
                return None
            self.round_trips += 1
            if self.down:
                log.info("REST budget ledger reachable again: the budget holds across processes")
                self.down = False
            self._schedule_idle_close(loop)
            return row

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.down_until_monotonic = time.monotonic() + self.retry_after_s
        if not self.down:
            info = parse_dsn(self._dsn)
            log.warning("REST budget ledger at %s:%s/%s unreachable or not migrated (%s): each process spends its "
                        "local window until it is back", info.host, info.port, info.dbname, type(exc).__name__)
            self.down = True
        self._abandon()

    def _schedule_idle_close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = loop.call_later(self.idle_close_s, self._close_idle)

    def _close_idle(self) -> None:
        task = asyncio.ensure_future(self.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close the connection if it belongs to the running loop (else drop it)."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._conn is None:
            return
        if self._loop is not asyncio.get_running_loop() or self._lock is None:
            self._abandon()
            return
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), timeout=QUERY_TIMEOUT_S)


_CONNECTIONS: weakref.WeakValueDictionary[str, LedgerConnection] = weakref.WeakValueDictionary()


def ledger_connection(dsn: str) -> LedgerConnection:
    """The process's ledger connection for ``dsn`` (one for all destinations)."""
    asyncpg_dsn = parse_dsn(dsn).asyncpg_dsn()
    conn = _CONNECTIONS.get(asyncpg_dsn)
    if conn is None:
        conn = LedgerConnection(asyncpg_dsn)
        _CONNECTIONS[asyncpg_dsn] = conn
    return conn


class DbLedger:
    """One destination's calls in the shared ledger (see the module docstring)."""

    def __init__(self, connection: LedgerConnection, destination: str, base_url: str, *, holder: str | None = None) -> None:
        self.connection = connection
        self.destination = destination
        self.base_url = base_url.rstrip("/")
        self.holder = holder or holder_name()

    @classmethod
    def for_dsn(cls, dsn: str, destination: str, base_url: str) -> DbLedger:
        return cls(ledger_connection(dsn), destination, base_url)

    @property
    def down(self) -> bool:
        return self.connection.down

    async def take(self, window_s: float, limit: int, priority: int) -> LedgerAnswer | None:
        """Take a slot if fewer than ``limit`` calls of any process started in the last ``window_s``
        (``limit`` 0: only look). ``None``: the ledger is down, spend locally."""
        row = await self.connection.call(TAKE_SQL, self.destination, self.base_url, float(window_s), int(limit),
                                         self.holder, int(priority))
        if row is None:
            return None
        return LedgerAnswer(bool(row["taken"]), tuple(float(a) for a in row["ages_s"] or ()), int(row["holders"] or 0))

    async def look(self, window_s: float) -> LedgerAnswer | None:
        """The window as every process spent it, without taking a slot."""
        return await self.take(window_s, 0, 0)

    async def close(self) -> None:
        await self.connection.close()


def slot_free_in_s(ages_s: tuple[float, ...], window_s: float, limit: int) -> float:
    """How long until fewer than ``limit`` of the calls aged ``ages_s`` (oldest first) are left in
    the window: the moment the call at ``len - limit`` leaves it. Pure."""
    over = len(ages_s) - max(1, limit)
    if over < 0:
        return 0.0
    return max(0.0, window_s - ages_s[over])
