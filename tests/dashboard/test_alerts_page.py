"""Alerts page, badge, CSV export, report download and /metrics on a seeded database (Flask test client)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import psycopg2
from dash import Dash

from core.alert_metrics import CONTENT_TYPE
from tests.dashboard.conftest import Seeded

ALERTS = [
    # rule, destination, subject, severity, state, message
    ("big fill", "alpha_paper", "", "warning", "open", "buy 20 AAPL at $101.00 = $2,020.00"),
    ("concentration", "beta_momentum", "NVDA", "critical", "open", "=HYPERLINK(\"x\") NVDA is 40% of equity"),
    ("stream down", "alpha_paper", "", "info", "resolved", "the trade_updates stream is disconnected"),
]


def seed_alerts(dsn: str) -> int:
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        for rule, dest, subject, severity, state, message in ALERTS:
            cur.execute("""INSERT INTO public.ch_alerts (rule, kind, destination, subject, severity, state, opened_at,
                               resolved_at, message) VALUES (%s, 'large_fill', %s, %s, %s, %s, now() - interval '1 hour',
                               CASE WHEN %s = 'resolved' THEN now() END, %s)""",
                        (rule, dest, subject, severity, state, state, message))
        cur.execute("""INSERT INTO public.ch_reports (name, destination, period, period_start, period_end, body, summary)
                       VALUES ('daily', '*', 'daily', '2026-03-01 21:30Z', '2026-03-02 21:30Z',
                               'Cold Harbour daily report · all destinations', '{}') RETURNING id""")
        report_id = cur.fetchone()[0]
        cur.execute("""INSERT INTO public.ch_alert_outbox (dedupe_key, channel, event, payload, status)
                       VALUES ('alert:1:fired:log', 'log', 'fired', '{}', 'sent')""")
    conn.close()
    return int(report_id)


def _update(client: Any, output: str, outputs: Any, inputs: list[dict[str, Any]], changed: list[str]) -> Any:
    payload = {"output": output, "outputs": outputs, "inputs": inputs, "state": [], "changedPropIds": changed}
    return client.post("/_dash-update-component", json=payload)


def test_badge_counts_open_alerts(app: Dash, seeded: Seeded) -> None:
    client = app.server.test_client()
    client.get("/")
    inputs = [{"id": "alerts-badge-tick", "property": "n_intervals", "value": 1}]
    outputs = [{"id": "alerts-badge", "property": "children"}, {"id": "alerts-badge", "property": "className"}]

    def badge() -> dict[str, Any]:
        response = _update(client, "..alerts-badge.children...alerts-badge.className..", outputs, inputs,
                           ["alerts-badge-tick.n_intervals"])
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
        return dict(response.get_json()["response"]["alerts-badge"])

    assert badge() == {"children": "", "className": "ms-1 d-none"}
    seed_alerts(seeded.dsn)
    assert badge() == {"children": "2", "className": "ms-1"}


def render(client: Any, state: str, destination: str = "all", severity: str = "all", q: str = "") -> dict[str, Any]:
    outputs = [{"id": "alerts-table", "property": "children"}, {"id": "alerts-reports", "property": "children"},
               {"id": "alerts-export", "property": "href"}]
    inputs = [{"id": "alerts-tick", "property": "n_intervals", "value": 0},
              {"id": "alerts-state", "property": "value", "value": state},
              {"id": "alerts-destination", "property": "value", "value": destination},
              {"id": "alerts-severity", "property": "value", "value": severity},
              {"id": "alerts-q", "property": "value", "value": q},
              {"id": "tz-choice", "property": "value", "value": "utc"},
              {"id": "browser-tz", "property": "data", "value": None}]
    response = _update(client, "..alerts-table.children...alerts-reports.children...alerts-export.href..", outputs,
                       inputs, ["alerts-state.value"])
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return dict(response.get_json()["response"])


def test_page_filters_and_lists_reports(app: Dash, seeded: Seeded) -> None:
    report_id = seed_alerts(seeded.dsn)
    client = app.server.test_client()
    assert client.get("/alerts").status_code == 200

    open_only = render(client, "open")
    text = json.dumps(open_only["alerts-table"])
    assert "big fill" in text
    assert "concentration" in text
    assert "stream down" not in text
    assert open_only["alerts-export"]["href"].startswith("/alerts/export.csv?state=open")
    assert f"/alerts/reports/{report_id}.txt" in json.dumps(open_only["alerts-reports"])

    one = json.dumps(render(client, "all", destination="beta_momentum")["alerts-table"])
    assert "concentration" in one
    assert "big fill" not in one
    critical = json.dumps(render(client, "all", severity="info")["alerts-table"])
    assert "stream down" in critical
    assert "concentration" not in critical
    searched = json.dumps(render(client, "all", q="aapl")["alerts-table"])
    assert "big fill" in searched
    assert "stream down" not in searched
    none = json.dumps(render(client, "all", q="'; DROP TABLE ch_alerts; --")["alerts-table"])
    assert "No alerts match" in none


def test_csv_export_follows_the_filters_and_defuses_formulas(app: Dash, seeded: Seeded) -> None:
    seed_alerts(seeded.dsn)
    client = app.server.test_client()

    response = client.get("/alerts/export.csv?state=open&destination=all&severity=all&q=")

    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert sorted(r["rule"] for r in rows) == ["big fill", "concentration"]
    assert {r["state"] for r in rows} == {"open"}
    formula = next(r for r in rows if r["rule"] == "concentration")
    assert formula["message"].startswith("'=HYPERLINK")
    everything = client.get("/alerts/export.csv?state=all")
    assert len(list(csv.DictReader(io.StringIO(everything.get_data(as_text=True))))) == 3


def test_report_download(app: Dash, seeded: Seeded) -> None:
    report_id = seed_alerts(seeded.dsn)
    client = app.server.test_client()

    response = client.get(f"/alerts/reports/{report_id}.txt")

    assert response.status_code == 200
    assert response.get_data(as_text=True) == "Cold Harbour daily report · all destinations"
    assert 'filename="coldharbour-daily-all-20260302.txt"' in response.headers["Content-Disposition"]
    assert client.get(f"/alerts/reports/{report_id + 1}.txt").status_code == 404


def test_metrics_endpoint(app: Dash, seeded: Seeded) -> None:
    seed_alerts(seeded.dsn)
    client = app.server.test_client()

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE
    text = response.get_data(as_text=True)
    assert "# TYPE coldharbour_heartbeat_age_seconds gauge" in text
    assert 'coldharbour_heartbeat_age_seconds{destination="alpha_paper",service="ingester"}' in text
    assert 'coldharbour_alerts_open{destination="beta_momentum",severity="critical"} 1' in text
    assert 'coldharbour_alert_deliveries{channel="log",status="sent"} 1' in text
    assert 'coldharbour_notify_versions_total{destination="alpha_paper",kind="pos"}' in text
    for line in text.splitlines():  # every sample line is "name{labels} number"
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])
