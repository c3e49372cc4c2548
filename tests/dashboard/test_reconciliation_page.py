"""Reconciliation page, trust badge, Health row and CSV export on a seeded database (Flask test client)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import psycopg2
from dash import Dash

from tests.dashboard.conftest import Seeded

NOW_DIFFS = [{"scope": "position_qty", "subject": "MSFT", "amount_usd": "2050", "cause": "fill_not_ingested",
              "book": "0", "broker": "5", "day": None, "open": True, "detail": "1 fill(s) of 5 not ingested",
              "age_s": 42.0},
             {"scope": "cash", "subject": "", "amount_usd": "-7.25", "cause": "unexplained", "book": "10", "broker": "2.75",
              "day": None, "open": True, "detail": "=HYPERLINK(\"x\") cash differs", "age_s": None}]
DAY_DIFFS = [{"scope": "day_equity", "subject": "", "amount_usd": "40", "cause": "broker_quirk", "book": "1040",
              "broker": "1000", "day": "2026-03-09", "open": True, "detail": "repeats the previous day", "age_s": None}]


def seed_tieout(dsn: str, slug: str) -> None:
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("""INSERT INTO public.ch_tieout (destination, day, status, book_cash, broker_cash, book_equity,
                           broker_equity, unexplained_usd, causes, differences, first_seen_at)
                       VALUES (%s, NULL, 'tied_out', 10, 10, 100, 100, 0, '{}', '[]', now() - interval '2 hours')""",
                    (slug,))
        cur.execute("""INSERT INTO public.ch_tieout (destination, day, status, book_cash, broker_cash, book_equity,
                           broker_equity, unexplained_usd, causes, differences)
                       VALUES (%s, NULL, 'drift', 10, 2.75, 100, 2142.75, 7.25, %s, %s)""",
                    (slug, ["fill_not_ingested", "unexplained"], json.dumps(NOW_DIFFS)))
        cur.execute("""INSERT INTO public.ch_tieout (destination, day, status, book_equity, broker_equity, causes,
                           differences) VALUES (%s, '2026-03-09', 'explained', 1040, 1000, %s, %s),
                           (%s, '2026-03-06', 'tied_out', 1000, 1000, '{}', '[]')""",
                    (slug, ["broker_quirk"], json.dumps(DAY_DIFFS), slug))
    conn.close()


def _update(client: Any, output: str, outputs: Any, inputs: list[dict[str, Any]], changed: list[str]) -> Any:
    payload = {"output": output, "outputs": outputs, "inputs": inputs, "state": [], "changedPropIds": changed}
    response = client.post("/_dash-update-component", json=payload)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_json()["response"]


def render(client: Any, slug: str, day: str | None) -> dict[str, Any]:
    outputs = [{"id": "recon-now", "property": "children"}, {"id": "recon-calendar", "property": "children"},
               {"id": "recon-day-detail", "property": "children"}, {"id": "recon-export", "property": "href"}]
    inputs: list[dict[str, Any]] = [{"id": "recon-tick", "property": "n_intervals", "value": 0},
              {"id": "recon-destination", "property": "value", "value": slug},
              {"id": "recon-day", "property": "data", "value": day}]
    return dict(_update(client, "..recon-now.children...recon-calendar.children...recon-day-detail.children..."
                                "recon-export.href..", outputs, inputs, ["recon-destination.value"]))


def test_page_shows_now_the_calendar_and_a_day(app: Dash, seeded: Seeded) -> None:
    # Arrange
    slug = seeded.slugs[0]
    seed_tieout(seeded.dsn, slug)
    client = app.server.test_client()
    assert client.get("/reconciliation").status_code == 200
    # Act
    body = render(client, slug, "2026-03-09")
    # Assert: the latest status, its causes, the days coloured, the day's differences
    text = json.dumps(body)
    assert '"drift"' in text
    assert "fill not ingested yet" in text
    assert "btn-info" in text  # an explained day
    assert "btn-success" in text
    assert "known broker quirk" in text
    assert body["recon-export"]["href"] == f"/reconciliation/export.csv?destination={slug}"


def test_csv_export_lists_every_difference_and_defuses_formulas(app: Dash, seeded: Seeded) -> None:
    slug = seeded.slugs[0]
    seed_tieout(seeded.dsn, slug)
    response = app.server.test_client().get(f"/reconciliation/export.csv?destination={slug}")
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [(r["day"], r["cause"]) for r in rows] == [("now", "fill_not_ingested"), ("now", "unexplained"),
                                                      ("2026-03-09", "broker_quirk"), ("2026-03-06", "")]
    assert rows[1]["amount_usd"] == "-7.25"  # a number stays a number
    assert rows[1]["detail"].startswith("'=")  # a formula does not


def test_trust_badge_and_health_row(app: Dash, seeded: Seeded) -> None:
    from dashboard.pages import reconciliation

    slug = seeded.slugs[0]
    client = app.server.test_client()
    with app.server.test_request_context("/"):
        assert reconciliation.trust_badge(slug).children == "not tied out yet"
    seed_tieout(seeded.dsn, slug)
    with app.server.test_request_context("/"):
        badge = reconciliation.trust_badge(slug, link=True)
    assert badge.children.children == "drift"
    assert badge.href == f"/reconciliation?destination={slug}"
    health = _update(client, "health-tieout.children", {"id": "health-tieout", "property": "children"},
                     [{"id": "health-tick", "property": "n_intervals", "value": 1}], ["health-tick.n_intervals"])
    assert slug in json.dumps(health)
    assert "drift" in json.dumps(health)
