"""The Health page's status dot: the worse of the heartbeat's age and the state the worker reports."""

from __future__ import annotations

import json
import re

import pytest
from dash import Dash

from core.db import connect
from dashboard.heartbeats import status_colour
from tests.dashboard.conftest import Seeded

OK_S, WARN_S = 30.0, 100.0


@pytest.mark.parametrize(
    ("state", "age_s", "colour"),
    [
        ("running", 1.0, "success"),
        ("running", 50.0, "warning"),
        ("running", 500.0, "danger"),
        ("running", None, "danger"),  # no age at all is not "fresh"
        ("stalled", 1.0, "danger"),  # the manager's watchdog: alive but making no progress
        ("auth_error", 1.0, "danger"),
        ("failing", 1.0, "danger"),  # an alert channel that keeps failing
        ("reconnecting", 1.0, "warning"),
        ("db_unavailable", 1.0, "warning"),
        ("reconnecting", 500.0, "danger"),  # the age still wins when it is worse
        ("starting", 1.0, "success"),
        ("stopped", 1.0, "success"),
    ],
)
def test_status_colour_is_the_worse_of_state_and_age(state: str, age_s: float | None, colour: str) -> None:
    assert status_colour(state, age_s, ok_s=OK_S, warn_s=WARN_S) == colour


def _health_table(app: Dash) -> list[dict[str, object]]:
    payload = {
        "output": "..health-summary.children...health-table.children..",
        "outputs": [{"id": "health-summary", "property": "children"}, {"id": "health-table", "property": "children"}],
        "inputs": [{"id": "health-tick", "property": "n_intervals", "value": 1},
                   {"id": "tz-choice", "property": "value", "value": "utc"},
                   {"id": "browser-tz", "property": "data", "value": None}],
        "state": [],
        "changedPropIds": ["health-tick.n_intervals"],
    }
    response = app.server.test_client().post("/_dash-update-component", json=payload)
    assert response.status_code == 200
    table = response.get_json()["response"]["health-table"]["children"]
    return table["props"]["children"][1]["props"]["children"]  # type: ignore[no-any-return]


def _dot_of(row: dict[str, object]) -> str:
    first_cell = json.dumps(row)
    match = re.search(r"ch-dot bg-(\w+)", first_cell)
    assert match, first_cell
    return match.group(1)


def test_a_fresh_stalled_heartbeat_shows_a_red_dot(app: Dash, seeded: Seeded) -> None:
    conn = connect(seeded.dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"UPDATE {seeded.settings.account_schema}.heartbeats SET updated_at = now(), state = 'running'")
            cur.execute(f"""UPDATE {seeded.settings.account_schema}.heartbeats
                            SET state = 'stalled', last_error = 'stalled: flush loop'
                            WHERE destination = 'alpha_paper' AND service = 'manager'""")
            assert cur.rowcount == 1
    finally:
        conn.close()

    rows = _health_table(app)

    dots: dict[tuple[str, str], set[str]] = {}
    for row in rows:
        cells = json.dumps(row)
        service = "manager" if '"manager"' in cells else "other"
        dest = "alpha_paper" if "alpha_paper" in cells else "other"
        dots.setdefault((dest, service), set()).add(_dot_of(row))
    assert dots[("alpha_paper", "manager")] == {"danger"}
    assert "danger" not in set().union(*(v for k, v in dots.items() if k != ("alpha_paper", "manager")))


def test_healthz_is_degraded_when_a_fresh_heartbeat_says_stalled(app: Dash, seeded: Seeded) -> None:
    # Arrange: every heartbeat fresh and running, then one manager stalled
    conn = connect(seeded.dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"UPDATE {seeded.settings.account_schema}.heartbeats SET updated_at = now(), state = 'running'")
        before = app.server.test_client().get("/healthz").get_json()["status"]
        with conn, conn.cursor() as cur:
            cur.execute(f"""UPDATE {seeded.settings.account_schema}.heartbeats SET state = 'stalled'
                            WHERE destination = 'alpha_paper' AND service = 'manager'""")
    finally:
        conn.close()

    # Act
    after = app.server.test_client().get("/healthz").get_json()["status"]

    # Assert
    assert before == "ok"
    assert after == "degraded"
