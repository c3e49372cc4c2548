"""The dashboard cannot be starved or filled: exports on their own capped pool, statement timeouts, a
query cancelled when its client leaves, capped SSE streams, cache keys from the server's versions, and
a bad stored value shown as a flagged cell instead of a 500."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import flask
import pytest
from dash import Dash
from sqlalchemy.exc import OperationalError
from werkzeug.serving import make_server

from core.db import connect
from dashboard.app import create_app
from dashboard.export import export_url
from dashboard.queries import ReadModel
from tests.dashboard.conftest import Seeded
from tests.dashboard.test_hostile_inputs import closed_grid

SLOW_ROWS = 60_000  # enough closed trades that a CSV export is still streaming after its first chunk


def _wait_for(condition: Callable[[], bool], limit_s: float = 20.0) -> bool:
    """Poll ``condition`` (bounded): a liveness wait, not a timing assertion."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _many_closed_trades(dsn: str, slug: str = "alpha_paper", n: int = SLOW_ROWS) -> None:
    conn = connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(
            f"""INSERT INTO public.closed_trades_{slug} (trade_id, symbol, direction, qty, entry_time, exit_time,
                   entry_price, exit_price, gross_pl, net_pl, exit_reason)
               SELECT 'slow' || lpad(i::text, 7, '0'), 'SYM' || (i %% 50), 'long', 1,
                      timestamptz '2020-01-01' + i * interval '1 minute',
                      timestamptz '2020-01-01' + i * interval '1 minute' + interval '30 seconds',
                      100, 101, 1, (i %% 1000) - 500, 'manual'
               FROM generate_series(1, %s) i""", (n,))
    conn.close()


def _backends(dsn: str, application_name: str, like: str = "%") -> list[str]:
    conn = connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT query FROM pg_stat_activity WHERE application_name = %s AND state = 'active' "
                    "AND query LIKE %s", (application_name, like))
        rows = [r[0] for r in cur.fetchall()]
    conn.close()
    return rows


@pytest.fixture
def slow_app(seeded: Seeded) -> Iterator[Dash]:
    _many_closed_trades(seeded.dsn)
    app = create_app(seeded.settings, start_listener=False)
    yield app
    app.server.extensions["coldharbour"].model.dispose()


def test_ten_slow_exports_leave_healthz_and_the_grid_callbacks_answering(slow_app: Dash) -> None:
    client = slow_app.server.test_client()
    url = export_url("alpha_paper", "closed_trades", "csv", sort_model=[{"colId": "net_pl", "sort": "desc"}])
    opened, refused = [], []
    try:
        for _ in range(10):
            response = client.get(url, buffered=False)
            if response.status_code == 200:
                next(iter(response.response))  # streaming: its cursor is open and parked
                opened.append(response)
            else:
                refused.append(response)
        limit = slow_app.server.extensions["coldharbour"].settings.export_max_concurrent
        assert len(opened) == limit
        assert {r.status_code for r in refused} == {429}
        assert all(int(r.headers["Retry-After"]) > 0 for r in refused)
        assert client.get("/healthz").status_code == 200
        assert client.get("/healthz").get_json()["exports_in_flight"] == limit
        block = closed_grid(client, {"startRow": 0, "endRow": 50, "sortModel": [{"colId": "net_pl", "sort": "asc"}]})
        assert block.status_code == 200
        assert block.get_json()["response"]["dest-closed"]["getRowsResponse"]["rowCount"] == 200 + SLOW_ROWS
    finally:
        for response in opened:
            response.close()
    assert client.get(url, buffered=False).status_code == 200  # closing gave the slots back


def test_every_dashboard_query_has_a_statement_timeout(seeded: Seeded) -> None:
    model = ReadModel(seeded.settings.replace(dash_statement_timeout_s=0.3), seeded.dsn)
    try:
        with pytest.raises(OperationalError, match="statement timeout"):
            model.rows("SELECT pg_sleep(5)")
        assert model.rows("SELECT 1 AS one") == [{"one": 1}]  # the pool is fine afterwards
        with model.export_engine.connect() as conn:
            exports = conn.exec_driver_sql("SHOW statement_timeout").scalar_one()
        assert exports == "1min"  # the export pool's own, longer limit (EXPORT_STATEMENT_TIMEOUT_S=60)
    finally:
        model.dispose()


def test_a_query_past_its_timeout_answers_503_not_500(seeded: Seeded) -> None:
    app = create_app(seeded.settings.replace(dash_statement_timeout_s=0.3), start_listener=False)
    model = app.server.extensions["coldharbour"].model

    @app.server.route("/slow-for-test")
    def slow() -> str:
        model.rows("SELECT pg_sleep(5)")
        return "finished"

    response = app.server.test_client().get("/slow-for-test")
    model.dispose()
    assert response.status_code == 503
    assert "took longer" in response.get_data(as_text=True)


def test_a_query_is_cancelled_when_its_client_goes_away(seeded: Seeded) -> None:
    model = ReadModel(seeded.settings, seeded.dsn)  # DASH_STATEMENT_TIMEOUT_S=5: pg_sleep(4) alone would finish
    server_app = flask.Flask("cancel-test")
    finished: list[str] = []

    @server_app.route("/sleep")
    def sleep() -> str:
        try:
            model.rows("SELECT pg_sleep(4) -- cancel-probe")
            finished.append("ran to the end")
        except OperationalError as exc:
            finished.append(type(exc.orig).__name__)
        return "done"

    server = make_server("127.0.0.1", 0, server_app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = socket.create_connection(("127.0.0.1", server.server_port))
        client.sendall(b"GET /sleep HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _wait_for(lambda: bool(_backends(seeded.dsn, "coldharbour-dashboard", "%cancel-probe%")))
        client.close()  # the visitor closes the tab
        assert _wait_for(lambda: bool(finished))
        assert finished == ["QueryCanceled"]
    finally:
        server.shutdown()
        model.dispose()


def test_cache_keys_hold_the_servers_version_not_the_clients(app: Dash) -> None:
    client = app.server.test_client()
    cache = app.server.extensions["coldharbour"].model.cache.cache
    request = {"startRow": 0, "endRow": 20, "sortModel": [], "filterModel": {}}

    def grid_with_client_version(version: int) -> Any:
        payload = {
            "output": "dest-closed.getRowsResponse", "outputs": {"id": "dest-closed", "property": "getRowsResponse"},
            "inputs": [{"id": "dest-closed", "property": "getRowsRequest", "value": request}],
            "state": [{"id": "dest-slug", "property": "data", "value": "alpha_paper"},
                      {"id": "tz-choice", "property": "value", "value": "utc"},
                      {"id": "browser-tz", "property": "data", "value": None},
                      {"id": "dest-v-closed", "property": "data", "value": version}],
            "changedPropIds": ["dest-closed.getRowsRequest"],
        }
        return client.post("/_dash-update-component", json=payload)

    assert grid_with_client_version(1).status_code == 200
    held = len(cache._cache)
    for version in range(1000, 1030):
        assert grid_with_client_version(version).status_code == 200
    assert len(cache._cache) == held


def _sse_app(seeded: Seeded, streams: int, per_client: int) -> Dash:
    settings = seeded.settings.replace(sse_max_streams=streams, sse_max_streams_per_client=per_client)
    return create_app(settings, start_listener=False)


def _open_stream(port: int, address: str) -> tuple[socket.socket, int, bytes]:
    """An SSE request from ``address`` (a loopback alias), its status and what arrived with the headers."""
    sock = socket.create_connection(("127.0.0.1", port), source_address=(address, 0))
    sock.sendall(b"GET /stream/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = sock.recv(4096)
    return sock, int(head.split(b" ", 2)[1]), head


def test_sse_streams_are_capped_per_client_and_per_process(seeded: Seeded) -> None:
    app = _sse_app(seeded, streams=3, per_client=2)
    hub = app.server.extensions["coldharbour"].hub
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port, held = server.server_port, []

    def stream(address: str) -> tuple[int, bytes]:
        sock, status, head = _open_stream(port, address)
        held.append(sock)
        return status, head

    try:
        assert stream("127.0.0.2")[0] == 200
        assert stream("127.0.0.2")[0] == 200
        status, head = stream("127.0.0.2")  # this client's third
        assert status == 503
        assert b"Retry-After: " in head
        assert b"polling" in head or b"polling" in held[-1].recv(4096)
        assert stream("127.0.0.3")[0] == 200  # another client: the process has room for one more
        assert stream("127.0.0.4")[0] == 503  # the process cap
        assert hub.stream_count == 3
        health = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        health.request("GET", "/healthz")
        assert health.getresponse().status == 200  # the threads the streams leave are enough
        held.pop(0).close()  # a visitor closes a tab
        assert _wait_for(lambda: hub.stream_count == 2)
        assert stream("127.0.0.4")[0] == 200  # its place came back
    finally:
        for sock in held:
            sock.close()
        assert _wait_for(lambda: hub.stream_count == 0)
        server.shutdown()
        app.server.extensions["coldharbour"].model.dispose()


def _corrupt(dsn: str) -> None:
    """Values NUMERIC holds but float8 cannot: what one tick at 1.7e308 left behind."""
    conn = connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO public.equity_full_alpha_paper (ts, equity, net_deposits) "
                    "SELECT max(ts) + interval '1 second', 1.7e309, 0 FROM public.equity_full_alpha_paper")
        cur.execute("UPDATE public.open_trades_alpha_paper SET market_value = 1.7e309, unrealized_pl = 'NaN' "
                    "WHERE symbol = (SELECT min(symbol) FROM public.open_trades_alpha_paper)")
        cur.execute("UPDATE public.closed_trades_alpha_paper SET net_pl = 1e400 "
                    "WHERE trade_id = (SELECT min(trade_id) FROM public.closed_trades_alpha_paper)")
        cur.execute("UPDATE public.ch_versions SET pos_version = pos_version + 1, closed_version = closed_version + 1,"
                    " equity_version = equity_version + 1 WHERE slug = 'alpha_paper'")
    conn.close()


def test_a_bad_stored_value_is_a_flagged_cell_never_a_500(app: Dash, seeded: Seeded) -> None:
    _corrupt(seeded.dsn)
    client = app.server.test_client()
    page = client.get("/destination/alpha_paper")
    assert page.status_code == 200
    with app.server.test_request_context("/destination/alpha_paper"):
        from dashboard.pages.destination_view import first_render, position_rows

        rows, status = position_rows("alpha_paper", 0, "UTC")
        drawn = first_render("alpha_paper", 0, 0, 0, "UTC", "light")
    assert "invalid stored value" in status
    assert any(r["market_value"] is None for r in rows)
    assert "⚠ invalid" in str(drawn["kpis"])  # the equity card: flagged, not a crash
    overview = client.post("/_dash-update-component", json={
        "output": "..ov-cards.children...ov-aggregate.figure...ov-aggregate-wrap.style..",
        "outputs": [{"id": "ov-cards", "property": "children"}, {"id": "ov-aggregate", "property": "figure"},
                    {"id": "ov-aggregate-wrap", "property": "style"}],
        "inputs": [{"id": "ov-versions", "property": "data", "value": {}},
                   {"id": "theme-store", "property": "data", "value": "light"},
                   {"id": "tz-choice", "property": "value", "value": "utc"},
                   {"id": "browser-tz", "property": "data", "value": None}],
        "state": [], "changedPropIds": ["ov-versions.data"]})
    assert overview.status_code == 200
    for path in ("metrics.csv", "report.html", "open_positions.csv", "closed_trades.csv", "equity.csv"):
        with client.get(f"/export/alpha_paper/{path}") as response:
            assert response.status_code == 200, path
            assert response.get_data()
