"""Cancel a running query when the HTTP client that asked for it has gone away.

A WSGI thread blocked in a database call cannot notice that its client hung up: the query (a
costly grid filter, an export's sort of a million rows) would run to its statement timeout for
nobody. :func:`watch_client` registers the request's socket with one watcher thread per process,
which polls the registered sockets a few times a second; when one reads as closed (a zero-byte
peek, or a reset) it calls the cancel function given for it (``psycopg2`` ``connection.cancel()``,
safe from another thread). The query then fails with ``QueryCanceled`` and the request unwinds.

Outside a request, or under a server that does not expose the socket (``gunicorn.socket`` and
``werkzeug.socket`` are the two known), nothing is watched.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.2
_SOCKET_KEYS = ("gunicorn.socket", "werkzeug.socket")


def client_socket() -> socket.socket | None:
    """The socket of the current request's client, when the server exposes it."""
    from flask import has_request_context, request

    if not has_request_context():
        return None
    for key in _SOCKET_KEYS:
        sock = request.environ.get(key)
        if isinstance(sock, socket.socket):
            return sock
    return None


def client_gone(sock: socket.socket) -> bool:
    """Whether the peer has closed ``sock`` (data waiting to be read means it is still there)."""
    try:
        if sock.fileno() < 0:
            return True
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):
        return True


@dataclass(eq=False, slots=True)
class _Watched:
    sock: socket.socket
    cancel: Callable[[], None]
    fired: bool = field(default=False)


class DisconnectWatcher:
    """One daemon thread polling every watched socket; it sleeps while nothing is watched."""

    def __init__(self, interval_s: float = POLL_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._watched: set[_Watched] = set()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self.cancelled = 0

    @contextmanager
    def watch(self, cancel: Callable[[], None], sock: socket.socket | None = None) -> Iterator[None]:
        """While the block runs, call ``cancel()`` once if the client's socket closes."""
        sock = sock if sock is not None else client_socket()
        if sock is None:
            yield
            return
        entry = _Watched(sock, cancel)
        with self._lock:
            self._watched.add(entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ch-disconnect-watch", daemon=True)
                self._thread.start()
            self._wake.notify()
        try:
            yield
        finally:
            with self._lock:
                self._watched.discard(entry)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._watched:
                    self._wake.wait()
                entries = [e for e in self._watched if not e.fired]
            for entry in entries:
                if client_gone(entry.sock):
                    entry.fired = True
                    self.cancelled += 1
                    try:
                        entry.cancel()
                    except Exception:  # noqa: BLE001 - the query ends by its timeout instead
                        log.debug("cancelling a query failed", exc_info=True)
            time.sleep(self._interval_s)


WATCHER = DisconnectWatcher()


def watch_client(cancel: Callable[[], None]) -> AbstractContextManager[None]:
    """:meth:`DisconnectWatcher.watch` on the process's watcher, for the current request's client."""
    return WATCHER.watch(cancel)
