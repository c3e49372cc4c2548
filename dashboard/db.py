"""The dashboard's database plumbing: the pooled engines, their per-statement limits, the cache.

Two pools per process, so no export can take a connection a callback needs:

- the **read pool** (``pool_size`` + 5 overflow) for callbacks, pages and ``/healthz``; every statement
  is cut off after ``DASH_STATEMENT_TIMEOUT_S`` (a page must answer while it is still open);
- the **export pool** (``EXPORT_MAX_CONCURRENT`` connections, no overflow) for CSV/XLSX streams,
  with the longer ``EXPORT_STATEMENT_TIMEOUT_S`` per statement (each ``FETCH`` of a server-side
  cursor is one statement, so it bounds a stall, not a whole download). :class:`ExportSlots` admits
  at most that many exports at once; the next one is told to come back later (429).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from core.dsn import parse_dsn
from core.settings import Settings

READ_POOL_SIZE = 5
READ_POOL_OVERFLOW = 5
EXPORT_RETRY_AFTER_S = 10  # what a refused export is told (Retry-After)


def cache_config(settings: Settings, dsn: str = "") -> dict[str, Any]:
    """flask-caching configuration from settings (SimpleCache unless told otherwise).

    Keys are prefixed with a digest of the database address, so dashboards of different databases
    can share one Redis without reading each other's entries.
    """
    kind = settings.cache_type
    target = parse_dsn(dsn).safe() if dsn else ""
    prefix = "ch:" + hashlib.sha1(target.encode(), usedforsecurity=False).hexdigest()[:10] + ":"
    config: dict[str, Any] = {"CACHE_TYPE": kind, "CACHE_DEFAULT_TIMEOUT": 300, "CACHE_KEY_PREFIX": prefix}
    if kind == "SimpleCache":
        config["CACHE_THRESHOLD"] = 2000
    elif kind == "FileSystemCache":
        config["CACHE_DIR"] = settings.cache_dir or str(settings.data_path / "cache")
        config["CACHE_THRESHOLD"] = 5000
    elif kind == "RedisCache":
        config["CACHE_REDIS_URL"] = settings.cache_redis_url or "redis://127.0.0.1:6379/0"
    return config


def make_engine(dsn: str, *, pool_size: int = READ_POOL_SIZE, max_overflow: int = READ_POOL_OVERFLOW,
                timeout_s: float = 10.0, statement_timeout_s: float | None = None,
                application_name: str = "coldharbour-dashboard") -> Engine:
    """A pooled psycopg2 engine for reads: autocommit, one statement per query.

    Every read is a single statement, so there is no transaction to open and close around it
    (``BEGIN``/``ROLLBACK`` were two of the four statements an idle poll cost) and no ``SELECT 1``
    before each checkout: a connection that died with a restarted database fails its next query,
    SQLAlchemy then invalidates the whole pool, and the request after it reconnects (a poll that
    fails answers 204 and the page keeps what it shows; /healthz says 503 meanwhile).
    ``statement_timeout_s`` is set on the session at connect time, so it holds for every statement.
    """
    info = parse_dsn(dsn)
    connect_args: dict[str, Any] = {"connect_timeout": max(1, int(timeout_s)), "application_name": application_name}
    if statement_timeout_s is not None:
        connect_args["options"] = f"-c statement_timeout={max(1, round(statement_timeout_s * 1000))}"
    return create_engine(
        info.sqlalchemy_url("psycopg2"),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=max(1.0, timeout_s),
        isolation_level="AUTOCOMMIT",
        pool_reset_on_return=None,
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args=connect_args,
    )


def cache_key(*parts: Any) -> str:
    raw = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    if len(raw) <= 200:
        return raw
    return raw[:80] + ":" + hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()


def f8(column: str) -> str:
    """``column::float8``, with a stored value beyond float range (or NaN/infinity) read as NaN.

    NUMERIC holds numbers far past float8's range; a plain cast of one fails the whole query, so one
    corrupt row would take every page of its destination down. NaN is rendered as a flagged cell.
    """
    return (f"CASE WHEN abs({column}) <= 1e300 THEN {column}::float8 "
            f"WHEN {column} IS NOT NULL THEN 'NaN'::float8 END")


class ExportBusy(Exception):
    """Every export slot is taken: ask again after :data:`EXPORT_RETRY_AFTER_S`."""


class ExportSlots:
    """At most ``limit`` exports at once; one more is refused at once, never queued."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def acquire(self) -> None:
        """Take a slot or raise :class:`ExportBusy`; give it back with :meth:`release`."""
        with self._lock:
            if self._in_flight >= self.limit:
                raise ExportBusy
            self._in_flight += 1

    def release(self) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)

    def releaser(self) -> Callable[[], None]:
        """A function that gives one slot back the first time it is called (a response may close twice)."""
        done = threading.Event()

        def release() -> None:
            if not done.is_set():
                done.set()
                self.release()

        return release

    @contextmanager
    def slot(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()
