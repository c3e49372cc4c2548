"""Server-sent change hints: one dedicated ``LISTEN`` connection per process, fanned out to browsers.

:class:`NotifyHub` runs a daemon thread holding a psycopg2 connection in autocommit that LISTENs on
``pos_channel_<slug>`` and ``closed_channel_<slug>`` of every registered destination (the registry is
re-read periodically, so a new destination is picked up). After any connection error it reconnects
with a bounded, jittered backoff and LISTENs again. Every notification becomes a small event
``{"slug", "kind", "v"}`` put on each subscriber's bounded queue; a slow browser loses hints, never
data (hints only make a page re-ask ``ch_versions``; polling converges without them).

A stream opened with ``?slug=<slug>&tz=<zone>`` (the destination page does) also carries, on each
``pos`` event of that destination, the positions grid's rows as the page's own callback would draw
them (:mod:`dashboard.sse_rows`): the page patches its grid from the event without a round trip.
Whatever may have lost an event sends ``{"kind": "reset"}`` instead, on which a page re-reads
everything: a subscriber whose queue overflowed (before its next event), and every subscriber after
the LISTEN connection came back (notifications sent while it was down are gone).

``GET /stream/events`` streams those events as ``text/event-stream`` with a comment line every
``keepalive_s`` so proxies keep the connection open. ``DISABLE_SSE=true`` leaves the route out and the
pages poll only. Under gunicorn use threaded workers (``--worker-class gthread``): each open stream
holds one thread, so streams are capped (``SSE_MAX_STREAMS`` per process, ``SSE_MAX_STREAMS_PER_CLIENT``
per signed-in user, or per address without auth) below the thread count: one more is refused with 503
and ``Retry-After``. ``EventSource`` does not reconnect after a refusal, and the pages go on polling
``ch_versions``, which is all a hint ever saves them.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import psycopg2.extensions
from flask import Flask, Response, g, request, stream_with_context

from core.db import connect
from core.destinations import closed_channel, pos_channel
from dashboard.cancel import client_gone, client_socket

log = logging.getLogger(__name__)

APPLICATION_NAME = "coldharbour-dashboard-listen"  # how the LISTEN session shows in pg_stat_activity
_CHANNEL_KINDS = (("pos_channel_", "pos"), ("closed_channel_", "closed"))


def parse_channel(channel: str) -> tuple[str, str] | None:
    """``pos_channel_alpha`` -> ``("alpha", "pos")``; ``None`` for channels we do not know."""
    for prefix, kind in _CHANNEL_KINDS:
        if channel.startswith(prefix):
            return channel[len(prefix):], kind
    return None


class NotifyHub:
    """One LISTEN connection, many subscribers."""

    def __init__(self, dsn: str, *, registry_refresh_s: float = 10.0, max_backoff_s: float = 10.0,
                 queue_size: int = 100, max_streams: int = 16, max_streams_per_client: int = 4) -> None:
        self._dsn = dsn
        self.max_streams = max_streams
        self.max_streams_per_client = max_streams_per_client
        self._streams: dict[str, int] = {}
        self.refused = 0
        self._registry_refresh_s = registry_refresh_s
        self._max_backoff_s = max_backoff_s
        self._queue_size = queue_size
        self._subscribers: set[queue.Queue[dict[str, Any]]] = set()
        self._overflowed: set[int] = set()  # id() of subscriber queues that dropped an event
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening: frozenset[str] = frozenset()
        self.connected = threading.Event()
        self.reconnects = 0
        self.delivered = 0

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> NotifyHub:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ch-notify-hub", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    # -- subscribers -------------------------------------------------------------------------------
    def subscribe(self) -> queue.Queue[dict[str, Any]]:
        q: queue.Queue[dict[str, Any]] = queue.Queue(self._queue_size)
        with self._lock:
            self._subscribers.add(q)
        return q

    def unsubscribe(self, q: queue.Queue[dict[str, Any]]) -> None:
        with self._lock:
            self._subscribers.discard(q)
            self._overflowed.discard(id(q))

    def take_overflow(self, q: queue.Queue[dict[str, Any]]) -> bool:
        """Did ``q`` drop an event since the last call? (Its reader then owes its client a reset.)"""
        with self._lock:
            if id(q) in self._overflowed:
                self._overflowed.discard(id(q))
                return True
            return False

    def admit(self, client: str) -> bool:
        """Count one more open stream for ``client``, or ``False`` when a cap is reached."""
        with self._lock:
            if (sum(self._streams.values()) >= self.max_streams
                    or self._streams.get(client, 0) >= self.max_streams_per_client):
                self.refused += 1
                return False
            self._streams[client] = self._streams.get(client, 0) + 1
            return True

    def leave(self, client: str) -> None:
        with self._lock:
            left = self._streams.get(client, 0) - 1
            if left > 0:
                self._streams[client] = left
            else:
                self._streams.pop(client, None)

    @property
    def stream_count(self) -> int:
        with self._lock:
            return sum(self._streams.values())

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def publish(self, event: dict[str, Any]) -> None:
        with self._lock:
            targets = list(self._subscribers)
        for q in targets:
            try:
                q.put_nowait(event)
            except queue.Full:  # dropped for a slow client: it is told to re-read everything instead
                with self._lock:
                    self._overflowed.add(id(q))
        self.delivered += 1

    # -- the listener thread -----------------------------------------------------------------------
    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            conn: psycopg2.extensions.connection | None = None
            try:
                conn = connect(self._dsn, timeout_s=5)
                conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
                with conn.cursor() as cur:
                    cur.execute("SET application_name = %s", (APPLICATION_NAME,))
                self.listening = frozenset()
                self._listen_all(conn)
                self.connected.set()
                if self.reconnects:  # whatever was notified while we were away is lost: pages re-read
                    self.publish({"slug": None, "kind": "reset", "v": None, "t": time.time()})
                attempt = 0
                self._pump(conn)
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect with backoff
                self.connected.clear()
                attempt += 1
                self.reconnects += 1
                delay = min(self._max_backoff_s, 0.5 * 2 ** min(attempt, 6)) * (0.5 + random.random() / 2)
                log.warning("notify listener: %s; reconnecting in %.1fs", type(exc).__name__, delay)
                self._stop.wait(delay)
            finally:
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001, S110 - closing a dead connection
                        pass

    def _slugs(self, conn: psycopg2.extensions.connection) -> list[str]:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('public.ch_destinations') IS NOT NULL")
            row = cur.fetchone()
            if not row or not row[0]:
                return []
            cur.execute("SELECT slug FROM public.ch_destinations")
            return [r[0] for r in cur.fetchall()]

    def _listen_all(self, conn: psycopg2.extensions.connection) -> None:
        wanted = set()
        for slug in self._slugs(conn):
            try:
                wanted.update({pos_channel(slug), closed_channel(slug)})
            except ValueError:
                log.warning("skipping destination with an invalid slug")
        new = wanted - self.listening
        if new:
            with conn.cursor() as cur:
                for channel in sorted(new):
                    cur.execute(f'LISTEN "{channel}"')  # channel names come from validated slugs
            self.listening = frozenset(self.listening | new)

    def _pump(self, conn: psycopg2.extensions.connection) -> None:
        next_refresh = time.monotonic() + self._registry_refresh_s
        while not self._stop.is_set():
            ready, _, _ = select.select([conn], [], [], 0.5)
            if ready:
                conn.poll()
                while conn.notifies:
                    note = conn.notifies.pop(0)
                    parsed = parse_channel(note.channel)
                    if parsed is None:
                        continue
                    slug, kind = parsed
                    version: Any = None
                    try:
                        payload = json.loads(note.payload) if note.payload else {}
                        version = payload.get("v") if isinstance(payload, dict) else None
                    except ValueError:
                        pass  # a hint without a usable payload is still a hint
                    self.publish({"slug": slug, "kind": kind, "v": version, "t": time.time()})
            if time.monotonic() >= next_refresh:
                self._listen_all(conn)
                next_refresh = time.monotonic() + self._registry_refresh_s


CLIENT_CHECK_S = 1.0  # how often an idle stream looks whether its client is still there


RESET_EVENT = {"slug": None, "kind": "reset", "v": None}


def latest_pos(first: dict[str, Any], q: queue.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    """``first`` and whatever else is queued, with only the newest ``pos`` event of each destination:
    a stream that fell behind sends (and draws rows for) the state now, not every step to it."""
    batch = [first]
    while True:
        try:
            batch.append(q.get_nowait())
        except queue.Empty:
            break
    newest = {e.get("slug"): i for i, e in enumerate(batch) if e.get("kind") == "pos"}
    return [e for i, e in enumerate(batch) if e.get("kind") != "pos" or newest[e.get("slug")] == i]
Enrich = Callable[[dict[str, Any]], dict[str, Any]]


def event_stream(hub: NotifyHub, *, keepalive_s: float = 15.0, max_duration_s: float = 3600.0,
                 sock: socket.socket | None = None, enrich: Enrich | None = None) -> Iterator[str]:
    """The SSE body: a retry hint, then one ``data:`` line per event, keepalive comments between.

    With the client's ``sock``, a stream whose client has gone ends within :data:`CLIENT_CHECK_S`
    instead of at its next write, so its thread and its place under the caps come back at once.
    ``enrich`` turns an event into the one sent (it adds the positions rows a page asked for). A
    queue that overflowed sends :data:`RESET_EVENT` before its next event.
    """
    q = hub.subscribe()
    deadline = time.monotonic() + max_duration_s  # browsers reconnect by themselves
    try:
        yield "retry: 2000\n: connected\n\n"
        next_keepalive = time.monotonic() + keepalive_s
        while time.monotonic() < deadline:
            try:
                event = q.get(timeout=max(0.01, min(CLIENT_CHECK_S, next_keepalive - time.monotonic())))
            except queue.Empty:
                if sock is not None and client_gone(sock):
                    return
                if time.monotonic() >= next_keepalive:
                    next_keepalive = time.monotonic() + keepalive_s
                    yield ": keepalive\n\n"
                continue
            if hub.take_overflow(q):
                yield f"data: {json.dumps(RESET_EVENT, separators=(',', ':'))}\n\n"
            for one in latest_pos(event, q):
                if enrich is not None:
                    one = enrich(one)
                yield f"data: {json.dumps(one, separators=(',', ':'), default=str)}\n\n"
    finally:
        hub.unsubscribe(q)


STREAM_RETRY_AFTER_S = 30


def client_key() -> str:
    """Who a stream is counted against: the signed-in user, else the peer address."""
    user = getattr(g, "auth_user", None)
    return f"user:{user}" if user else f"addr:{request.remote_addr or '?'}"


def register_sse(server: Flask, hub: NotifyHub, *, keepalive_s: float = 15.0) -> None:
    @server.route("/stream/events")
    def stream_events() -> Response:
        client = client_key()
        if not hub.admit(client):
            return Response("too many live streams: this page keeps itself up to date by polling\n", status=503,
                            mimetype="text/plain", headers={"Retry-After": str(STREAM_RETRY_AFTER_S)})
        from dashboard.sse_rows import enricher  # the page's row drawing: imported once a stream opens

        body = event_stream(hub, keepalive_s=keepalive_s, sock=client_socket(),
                            enrich=enricher(request.args.get("slug"), request.args.get("tz")))
        response = Response(stream_with_context(body), mimetype="text/event-stream")
        # the server closes the response when the stream ends or the client goes, even one never started
        left = threading.Event()

        def leave() -> None:
            if not left.is_set():
                left.set()
                hub.leave(client)

        response.call_on_close(leave)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
        return response
