"""The smaller hardening findings, one test each: sign-in guessing is rate limited, WEB_RELOAD is no
debug mode, HSTS over HTTPS, the equity export's drawdown is the chart's, Excel exports are capped,
an export stops when its client leaves, tearsheets are cached."""

from __future__ import annotations

import base64
import csv
import http.client
import io
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import flask
import numpy as np
import pytest
from dash import Dash
from werkzeug.security import generate_password_hash
from werkzeug.serving import make_server

from core.db import connect
from core.settings import Settings
from dashboard import report
from dashboard.app import create_app
from dashboard.auth import install_auth
from dashboard.cancel import WATCHER
from tests.dashboard.conftest import Seeded
from tests.dashboard.test_starvation import _many_closed_trades


def _wait_for(condition: Callable[[], bool], limit_s: float = 30.0) -> bool:
    """Poll ``condition`` (bounded): a liveness wait, not a timing assertion."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_failed_sign_ins_are_rate_limited_per_address() -> None:
    app = flask.Flask("auth-limit")
    app.add_url_rule("/", "index", lambda: "home page")
    users = "alice:" + generate_password_hash("right", method="pbkdf2:sha256:1000")
    install_auth(app, Settings(), environ={"DASH_AUTH": "basic", "DASH_AUTH_USERS": users})
    client = app.test_client()
    assert client.get("/", headers=_basic("alice", "right")).status_code == 200  # remembered from now on
    attacker = {"REMOTE_ADDR": "192.0.2.7"}
    statuses = [client.get("/", headers=_basic("alice", f"guess{i}"), environ_base=attacker).status_code
                for i in range(12)]
    assert statuses[:10] == [401] * 10
    assert statuses[10:] == [429, 429]  # no password check at all any more, for a while
    limited = client.get("/", headers=_basic("alice", "right"), environ_base=attacker)
    assert limited.status_code == 200  # a remembered success never waits behind the limiter
    refused = client.get("/", headers=_basic("alice", "another"), environ_base=attacker)
    assert int(refused.headers["Retry-After"]) > 0
    assert client.get("/", headers=_basic("alice", "nope"), environ_base={"REMOTE_ADDR": "192.0.2.8"}).status_code == 401


def test_web_reload_reloads_but_never_enables_the_debugger(monkeypatch: pytest.MonkeyPatch) -> None:
    import dashboard.__main__ as entry

    seen: dict[str, Any] = {}

    class Recorder:
        def run(self, **kwargs: Any) -> None:
            seen.update(kwargs)

    monkeypatch.setattr(entry, "load_settings", lambda: Settings(web_reload=True))
    monkeypatch.setattr(entry, "create_app", lambda settings: Recorder())
    entry.main([])
    assert seen["use_reloader"] is True
    assert seen["debug"] is False
    assert seen["use_debugger"] is False


def test_hsts_only_over_https(app: Dash) -> None:
    client = app.server.test_client()
    assert "Strict-Transport-Security" not in client.get("/healthz").headers
    proxied = client.get("/healthz", headers={"X-Forwarded-Proto": "https"})
    assert proxied.headers["Strict-Transport-Security"].startswith("max-age=")
    direct = client.get("/healthz", base_url="https://localhost")
    assert "max-age" in direct.headers["Strict-Transport-Security"]


def test_the_equity_export_writes_the_drawdown_the_chart_draws(app: Dash, seeded: Seeded) -> None:
    conn = connect(seeded.dsn)
    with conn, conn.cursor() as cur:  # a stored column that disagrees with the curve
        cur.execute("UPDATE public.equity_full_alpha_paper SET drawdown = -0.99")
    conn.close()
    model = app.server.extensions["coldharbour"].model
    with app.server.test_client().get("/export/alpha_paper/equity.csv?tz=UTC") as response:
        rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    with app.server.test_request_context("/"):
        series = model.equity_series("alpha_paper")
    exported = np.array([float(r["drawdown"]) for r in rows])
    assert len(rows) == len(series)
    assert np.allclose(exported, series.drawdown())
    assert exported.min() > -0.99
    refused = app.server.test_client().get(
        '/export/alpha_paper/equity.csv?sort=[{"colId":"drawdown","sort":"asc"}]')
    assert refused.status_code == 400
    assert "computed from the equity curve" in refused.get_data(as_text=True)


def test_an_excel_export_past_the_row_cap_says_to_use_csv(seeded: Seeded) -> None:
    app = create_app(seeded.settings.replace(xlsx_max_rows=150), start_listener=False)
    client = app.server.test_client()
    with client.get("/export/alpha_paper/closed_trades.xlsx") as response:  # 200 rows
        assert response.status_code == 400
        assert "use the CSV export" in response.get_data(as_text=True)
    filtered = '/export/alpha_paper/closed_trades.xlsx?filter={"symbol":{"filterType":"text","type":"equals","filter":"AAPL"}}'
    with client.get(filtered) as response:
        assert response.status_code == 200
    with client.get("/export/alpha_paper/closed_trades.csv") as response:
        assert response.status_code == 200
        assert response.get_data(as_text=True).count("\n") == 201
    app.server.extensions["coldharbour"].model.dispose()


def test_an_export_stops_when_its_client_leaves(seeded: Seeded) -> None:
    _many_closed_trades(seeded.dsn)
    app = create_app(seeded.settings, start_listener=False)
    model = app.server.extensions["coldharbour"].model
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cancelled = WATCHER.cancelled
    try:
        sock = socket.create_connection(("127.0.0.1", server.server_port))
        sock.sendall(b"GET /export/alpha_paper/closed_trades.xlsx HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _wait_for(lambda: model.exports_in_flight == 1)
        sock.close()  # the visitor gives up while the workbook is being written
        assert _wait_for(lambda: WATCHER.cancelled > cancelled)
        assert _wait_for(lambda: model.exports_in_flight == 0)
    finally:
        server.shutdown()
        model.dispose()


def test_finished_downloads_give_their_export_slots_back(app: Dash) -> None:
    server = make_server("127.0.0.1", 0, app.server, threaded=True)  # a real server, as deployed
    threading.Thread(target=server.serve_forever, daemon=True).start()
    model = app.server.extensions["coldharbour"].model
    try:
        for path in ["closed_trades.xlsx", "closed_trades.csv", "report.html"] * 2:
            conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
            conn.request("GET", f"/export/alpha_paper/{path}")
            response = conn.getresponse()
            assert response.status == 200, path
            assert response.read()
            conn.close()
            assert _wait_for(lambda: model.exports_in_flight == 0), path
    finally:
        server.shutdown()


def test_tearsheets_are_cached_per_equity_version(app: Dash, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[str] = []
    real = report.tearsheet

    def counting(returns: Any, title: str) -> str:
        drawn.append(title)
        return real(returns, title)

    monkeypatch.setattr(report, "tearsheet", counting)
    client = app.server.test_client()
    for _ in range(2):
        with client.get("/export/alpha_paper/tearsheet.html") as response:
            assert response.status_code == 200
            assert "<svg" in response.get_data(as_text=True)
    assert drawn == ["Alpha Paper tearsheet"]
