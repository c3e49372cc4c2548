"""``GET /healthz``: is the database reachable, and how fresh is every worker's heartbeat.

200 ``ok`` (all fresh) or ``degraded`` (the dashboard serves; a worker needs a look, see ``/health``);
503 ``unavailable`` when the database cannot be reached. It never raises, and it is open even behind
``DASH_AUTH`` so a container health check can call it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, jsonify

from core.settings import Settings
from dashboard.heartbeats import HEARTBEAT_OK_FACTOR, RED_STATES, feed_age_s

if TYPE_CHECKING:
    from dashboard.queries import ReadModel


def register_healthz(server: Flask, settings: Settings, model: ReadModel) -> None:
    @server.route("/healthz")
    def healthz() -> tuple[Response, int]:
        return health_payload(settings, model)


def health_payload(settings: Settings, model: ReadModel) -> tuple[Response, int]:
    started = time.perf_counter()
    body: dict[str, Any] = {"status": "ok", "database": {"ok": True}, "workers": []}
    try:
        model.ping()
    except Exception as exc:  # noqa: BLE001 - report, never raise, from a health check
        body["status"] = "unavailable"
        body["database"] = {"ok": False, "error": type(exc).__name__}
        body["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return jsonify(body), 503
    ok_s = settings.heartbeat_sec * HEARTBEAT_OK_FACTOR
    worst = 0.0
    for hb in model.heartbeats():
        age = _finite_or_none(hb["age_s"])
        worker = {"destination": hb["destination"], "service": hb["service"], "state": hb["state"],
                  "age_s": None if age is None else round(age, 1), "fresh": age is not None and age <= ok_s}
        feed_age = feed_age_s(hb.get("details"), age)
        if feed_age is not None:
            worker["price_feed_age_s"] = round(feed_age, 1)
        body["workers"].append(worker)
        worst = max(worst, age or 0.0)
    body["heartbeat_max_age_s"] = round(worst, 1)
    # a fresh heartbeat that says ``stalled`` (or an auth error) is a worker that needs a look too
    if any(not w["fresh"] or w["state"] in RED_STATES for w in body["workers"]):
        body["status"] = "degraded"
    body["destinations"] = len(model.versions())
    body["sse"] = not settings.disable_sse
    body["exports_in_flight"] = model.exports_in_flight
    body["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return jsonify(body), 200


def _finite_or_none(value: Any) -> float | None:
    try:
        age = float(value)
    except (TypeError, ValueError):
        return None
    return age if age == age and age not in (float("inf"), float("-inf")) else None
