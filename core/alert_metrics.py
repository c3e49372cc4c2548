"""Operator metrics in the Prometheus text exposition format (version 0.0.4), written by hand.

Pure: callers pass rows they read (heartbeats, alert counts, version counters) and in-process
counters; :func:`render` turns metric families into the text a Prometheus server scrapes from
``/metrics`` on the dashboard and on the workers. The catalogue is in docs/alerts.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(slots=True)
class Family:
    """One metric: ``kind`` is ``gauge`` or ``counter``; samples are ``(labels, value)``."""

    name: str
    kind: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float | int | None, **labels: str) -> None:
        if value is not None:
            self.samples.append((labels, float(value)))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def render(families: Iterable[Family]) -> str:
    """The exposition text: ``# HELP``/``# TYPE`` per family, then one line per sample."""
    lines: list[str] = []
    for fam in families:
        lines.append(f"# HELP {fam.name} {_escape(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        for labels, value in fam.samples:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            lines.append(f"{fam.name}{{{text}}} {_number(value)}" if text else f"{fam.name} {_number(value)}")
    return "\n".join(lines) + "\n"


def _num(value: Any) -> float | None:
    """A sample value from a row: int, float or Decimal (PostgreSQL's extract() is numeric); else none."""
    return float(value) if isinstance(value, int | float | Decimal) and not isinstance(value, bool) else None


def heartbeat_families(rows: Sequence[Mapping[str, Any]]) -> list[Family]:
    """Per worker (destination, service): heartbeat age, lag, rows written, errors, REST calls and 429s.

    ``rows`` carry ``destination, service, state, age_s, lag_s, rows_ingested, errors, details``.
    """
    age = Family("coldharbour_heartbeat_age_seconds", "gauge", "Seconds since the worker's last heartbeat.")
    up = Family("coldharbour_worker_running", "gauge", "1 while the worker's last heartbeat says running.")
    lag = Family("coldharbour_ingest_lag_seconds", "gauge", "The worker's reported lag (ingester: since the last REST backfill).")
    rows_written = Family("coldharbour_rows_written_total", "counter", "Rows the worker reports written since it started.")
    errors = Family("coldharbour_worker_errors_total", "counter", "Errors the worker reports since it started.")
    rest = Family("coldharbour_rest_requests_total", "counter", "Broker REST requests made by the worker's client.")
    limited = Family("coldharbour_rest_rate_limited_total", "counter", "Broker REST answers 429 (budget spent).")
    for r in rows:
        labels = {"destination": str(r["destination"]), "service": str(r["service"])}
        age.add(_num(r.get("age_s")), **labels)
        up.add(1 if r.get("state") == "running" else 0, **labels)
        lag.add(_num(r.get("lag_s")), **labels)
        rows_written.add(_num(r.get("rows_ingested")), **labels)
        errors.add(_num(r.get("errors")), **labels)
        details = r.get("details") if isinstance(r.get("details"), Mapping) else {}
        broker = details.get("broker") if isinstance(details, Mapping) else None
        if isinstance(broker, Mapping):
            rest.add(_num(broker.get("requests")), **labels)
            limited.add(_num(broker.get("rate_limited")), **labels)
    return [age, up, lag, rows_written, errors, rest, limited]


def alert_families(open_rows: Sequence[Mapping[str, Any]], outbox_rows: Sequence[Mapping[str, Any]]) -> list[Family]:
    """Open alerts per (destination, severity) and outbox rows per (channel, status)."""
    open_alerts = Family("coldharbour_alerts_open", "gauge", "Alert episodes open now.")
    deliveries = Family("coldharbour_alert_deliveries", "gauge", "Alert/report notifications by channel and status "
                        "(pending, sent, failed), as stored in the outbox.")
    for r in open_rows:
        open_alerts.add(_num(r["n"]), destination=str(r["destination"]), severity=str(r["severity"]))
    for r in outbox_rows:
        deliveries.add(_num(r["n"]), channel=str(r["channel"]), status=str(r["status"]))
    return [open_alerts, deliveries]


def version_families(rows: Sequence[Mapping[str, Any]]) -> list[Family]:
    """``ch_versions`` counters: each bump is one NOTIFY the workers sent on that destination's channel."""
    fam = Family("coldharbour_notify_versions_total", "counter",
                 "Data version per destination and kind; each bump is one NOTIFY hint sent by the workers.")
    for r in rows:
        for kind in ("pos", "closed", "equity", "activity"):
            fam.add(_num(r.get(f"{kind}_version")), destination=str(r["slug"]), kind=kind)
    return [fam]


def counter_family(name: str, help_text: str, values: Mapping[tuple[tuple[str, str], ...], float | int],
                   kind: str = "counter") -> Family:
    """A family from ``{((label, value), ...): number}`` (process-local counters)."""
    fam = Family(name, kind, help_text)
    for labels, value in values.items():
        fam.add(value, **dict(labels))
    return fam
