"""The LISTEN hub and the /stream/events endpoint against a real PostgreSQL."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator

import pytest

from core.db import connect
from dashboard.app import create_app
from dashboard.sse import APPLICATION_NAME, NotifyHub, event_stream, parse_channel
from tests.dashboard.conftest import Seeded
from tests.dashboard.seed import simulate_close, simulate_fill


@pytest.fixture
def hub(seeded: Seeded) -> Iterator[NotifyHub]:
    h = NotifyHub(seeded.dsn, registry_refresh_s=0.5, max_backoff_s=0.5).start()
    assert h.connected.wait(20)
    yield h
    h.stop()


def _next(q: queue.Queue[dict], slug: str, kind: str) -> dict:
    while True:
        event = q.get(timeout=20)
        if event["slug"] == slug and event["kind"] == kind:
            return event


def _wait_for(condition, limit_s: float = 20.0) -> bool:
    """Poll ``condition`` (bounded); a liveness wait, not a timing assertion."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_parse_channel() -> None:
    assert parse_channel("pos_channel_alpha_paper") == ("alpha_paper", "pos")
    assert parse_channel("closed_channel_x") == ("x", "closed")
    assert parse_channel("other") is None


def test_notify_reaches_every_subscriber(hub: NotifyHub, seeded: Seeded) -> None:
    one, two = hub.subscribe(), hub.subscribe()
    assert hub.listening >= {"pos_channel_alpha_paper", "closed_channel_beta_momentum"}
    simulate_fill(seeded.dsn, "alpha_paper", "ZZZ")
    assert _next(one, "alpha_paper", "pos")["v"] == 2
    assert _next(two, "alpha_paper", "pos")["v"] == 2
    simulate_close(seeded.dsn, "beta_momentum")
    assert _next(one, "beta_momentum", "closed")["v"] == 2
    hub.unsubscribe(two)
    assert hub.subscriber_count == 1


def test_listener_relistens_after_the_connection_dies(hub: NotifyHub, seeded: Seeded) -> None:
    q = hub.subscribe()
    admin = connect(seeded.dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = %s", (APPLICATION_NAME,))
        assert cur.fetchone() is not None
    admin.close()
    assert _wait_for(lambda: hub.reconnects >= 1 and hub.connected.is_set()), "no reconnect"
    simulate_fill(seeded.dsn, "alpha_paper", "AFTER")
    assert _next(q, "alpha_paper", "pos")["v"] == 2


def test_new_destination_is_picked_up(hub: NotifyHub, seeded: Seeded) -> None:
    from tests.dashboard.seed import SeedSpec, seed

    seed(seeded.dsn, seeded.settings, [SeedSpec("Delta New", closed_trades=5, equity_points=10, open_positions=1)])
    q = hub.subscribe()
    assert _wait_for(lambda: "pos_channel_delta_new" in hub.listening), "new destination not listened to"
    simulate_fill(seeded.dsn, "delta_new", "NEW")
    assert _next(q, "delta_new", "pos")["v"] == 2


def test_event_stream_format(hub: NotifyHub) -> None:
    stream = event_stream(hub, keepalive_s=0.05)
    assert next(stream).startswith("retry:")
    assert next(stream) == ": keepalive\n\n"
    hub.publish({"slug": "a", "kind": "pos", "v": 3})
    assert next(stream) == 'data: {"slug":"a","kind":"pos","v":3}\n\n'
    stream.close()
    assert hub.subscriber_count == 0


def test_disable_sse_removes_the_route(seeded: Seeded) -> None:
    app = create_app(seeded.settings.replace(disable_sse=True), start_listener=False)
    assert "/stream/events" not in {r.rule for r in app.server.url_map.iter_rules()}
    response = app.server.test_client().get("/stream/events")  # Dash's page route answers instead
    assert response.mimetype != "text/event-stream"
    assert app.server.extensions["coldharbour"].hub is None
    enabled = create_app(seeded.settings, start_listener=False)
    assert "/stream/events" in {r.rule for r in enabled.server.url_map.iter_rules()}


def test_a_subscriber_that_dropped_an_event_is_told_to_re_read(seeded: Seeded) -> None:
    small = NotifyHub(seeded.dsn, queue_size=1)  # not started: events are published by hand
    stream = event_stream(small, keepalive_s=60)
    assert next(stream).startswith("retry:")
    small.publish({"slug": "a", "kind": "pos", "v": 1})
    small.publish({"slug": "a", "kind": "pos", "v": 2})  # the queue is full: dropped
    assert next(stream) == 'data: {"slug":null,"kind":"reset","v":null}\n\n'
    assert next(stream) == 'data: {"slug":"a","kind":"pos","v":1}\n\n'
    small.publish({"slug": "a", "kind": "pos", "v": 3})
    assert next(stream) == 'data: {"slug":"a","kind":"pos","v":3}\n\n'  # told once only
    stream.close()


def test_every_subscriber_is_told_to_re_read_after_the_listener_came_back(hub: NotifyHub, seeded: Seeded) -> None:
    q = hub.subscribe()
    admin = connect(seeded.dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = %s", (APPLICATION_NAME,))
    admin.close()
    assert _next(q, None, "reset")["v"] is None  # type: ignore[arg-type]


def test_a_stream_for_a_destination_carries_its_grid_rows(seeded: Seeded) -> None:
    from dashboard.pages.destination_view import position_rows
    from dashboard.sse_rows import enricher

    app = create_app(seeded.settings, start_listener=False)
    try:
        assert enricher("alpha_paper", "Not/AZone") is None
        assert enricher(None, "UTC") is None
        simulate_fill(seeded.dsn, "alpha_paper", "ZPUSH", qty=3, entry=10.0, mark=11.0)
        with app.server.test_request_context("/stream/events?slug=alpha_paper&tz=UTC"):
            enrich = enricher("alpha_paper", "UTC")
            assert enrich is not None
            other = {"slug": "beta_momentum", "kind": "pos", "v": 9}
            assert enrich(other) is other  # another destination's event stays a hint
            event = enrich({"slug": "alpha_paper", "kind": "pos", "v": 2, "t": 0})
        with app.server.test_request_context("/"):
            rows, status = position_rows("alpha_paper", 2, "UTC")
        assert (event["v"], event["tz"], event["status"]) == (2, "UTC", status)
        assert event["rows"] == rows
        pushed = {r["symbol"]: r for r in event["rows"]}
        assert (pushed["ZPUSH"]["qty"], pushed["ZPUSH"]["mark_price"]) == (3.0, 11.0)
    finally:
        app.server.extensions["coldharbour"].model.dispose()


def test_a_stream_that_fell_behind_sends_each_destinations_newest_pos_event(seeded: Seeded) -> None:
    idle = NotifyHub(seeded.dsn)  # not started: events are published by hand
    stream = event_stream(idle, keepalive_s=60)
    assert next(stream).startswith("retry:")
    for event in ({"slug": "a", "kind": "pos", "v": 1}, {"slug": "b", "kind": "pos", "v": 1},
                  {"slug": "a", "kind": "closed", "v": 1}, {"slug": "a", "kind": "pos", "v": 2}):
        idle.publish(event)
    got = [next(stream) for _ in range(3)]
    assert got == ['data: {"slug":"b","kind":"pos","v":1}\n\n', 'data: {"slug":"a","kind":"closed","v":1}\n\n',
                   'data: {"slug":"a","kind":"pos","v":2}\n\n']
    stream.close()
