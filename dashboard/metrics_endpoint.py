"""``GET /metrics`` on the dashboard: the Prometheus text exposition of what operators watch.

Worker heartbeats (age, lag, rows written, errors, REST calls and 429s), the NOTIFY version counters,
open alerts and alert deliveries, all read from the database the workers share, plus this process's
own live-push figures (SSE browsers, NOTIFYs received and delivered, LISTEN reconnects). Rendered by
:mod:`core.alert_metrics`; the catalogue is in docs/alerts.md. It sits behind the dashboard's auth
like every route except ``/healthz``: scrape it with the same credentials (or a Cloudflare service token).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, Response

from core.alert_metrics import CONTENT_TYPE, Family, alert_families, heartbeat_families, render, version_families
from dashboard.context import runtime


def _sse_families() -> list[Family]:
    hub = runtime().hub
    enabled = Family("coldharbour_sse_enabled", "gauge", "1 when live push (SSE) is on (DISABLE_SSE unset).")
    enabled.add(0 if hub is None else 1)
    families = [enabled]
    if hub is not None:
        for name, kind, help_text, value in (
            ("coldharbour_sse_subscribers", "gauge", "Browsers subscribed to /stream/events now.", hub.subscriber_count),
            ("coldharbour_sse_notify_delivered_total", "counter",
             "NOTIFY hints this process received and fanned out to its SSE subscribers.", hub.delivered),
            ("coldharbour_sse_listen_reconnects_total", "counter", "Reconnects of the LISTEN connection.",
             hub.reconnects),
            ("coldharbour_sse_listen_channels", "gauge", "NOTIFY channels the dashboard listens on.",
             len(hub.listening)),
            ("coldharbour_sse_listener_connected", "gauge", "1 while the LISTEN connection is up.",
             1 if hub.connected.is_set() else 0),
        ):
            fam = Family(name, kind, help_text)
            fam.add(value)
            families.append(fam)
    return families


def _rows(sql: str) -> list[dict[str, Any]]:
    try:
        return runtime().model.rows(sql)
    except Exception:  # noqa: BLE001 - a table not migrated yet: that family is simply empty
        return []


def collect() -> str:
    """One scrape's text."""
    heartbeats = []
    for r in runtime().model.heartbeats():
        details = r.get("details")
        heartbeats.append(dict(r) | {"details": json.loads(details) if isinstance(details, str) else details})
    families = heartbeat_families(heartbeats)
    families += version_families(_rows("SELECT slug, pos_version, closed_version, equity_version, activity_version "
                                       "FROM public.ch_versions ORDER BY slug"))
    families += alert_families(
        _rows("SELECT destination, severity, count(*) AS n FROM public.ch_alerts WHERE state = 'open' "
              "GROUP BY 1, 2 ORDER BY 1, 2"),
        _rows("SELECT channel, status, count(*) AS n FROM public.ch_alert_outbox GROUP BY 1, 2 ORDER BY 1, 2"))
    return render(families + _sse_families())


def register_metrics(server: Flask) -> None:
    @server.route("/metrics")
    def metrics() -> Response:
        return Response(collect(), headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})
