"""How fresh a worker's heartbeat and the manager's price feed are: shared by ``/healthz`` and the Health page."""

from __future__ import annotations

from typing import Any

HEARTBEAT_OK_FACTOR = 3
"""A heartbeat older than this many ``HEARTBEAT_SEC`` intervals is amber."""
HEARTBEAT_WARN_FACTOR = 10
"""Older than this many intervals it is red."""

FEED_AGE_KEY = "price_feed_last_tick_age_s"
"""Manager heartbeat detail: seconds since the newest price tick of any symbol, when the heartbeat was
written (``None`` before the first tick; the key is absent from older managers)."""


def feed_age_s(details: Any, heartbeat_age_s: Any = None) -> float | None:
    """Seconds since the manager's newest price tick, now: the age it reported plus the heartbeat's age.

    ``None`` when the heartbeat carries no feed age (no feed, no tick yet, or an older manager).
    """
    if not isinstance(details, dict):
        return None
    raw: Any = details.get(FEED_AGE_KEY)
    if raw is None:
        raw = details.get("zmq_age_s")  # the key's earlier name
    try:
        age = float(raw)
    except (TypeError, ValueError):
        return None
    if age != age or age < 0 or age == float("inf"):  # NaN, inf or nonsense: treat as unknown
        return None
    try:
        since = float(heartbeat_age_s) if heartbeat_age_s is not None else 0.0
    except (TypeError, ValueError):
        since = 0.0
    return age + max(0.0, since if since == since else 0.0)
