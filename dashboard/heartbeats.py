"""How fresh a worker's heartbeat and the manager's price feed are: shared by ``/healthz`` and the Health page."""

from __future__ import annotations

from typing import Any

from dashboard.components.fmt import health_colour

HEARTBEAT_OK_FACTOR = 3
"""A heartbeat older than this many ``HEARTBEAT_SEC`` intervals is amber."""
HEARTBEAT_WARN_FACTOR = 10
"""Older than this many intervals it is red."""

RED_STATES = frozenset({"stalled", "auth_error", "failing"})
"""Heartbeat states that need a person whatever the heartbeat's age: the manager's watchdog saw a loop make
no progress (``stalled``), the broker refused the keys (``auth_error``), an alert channel keeps failing."""
AMBER_STATES = frozenset({"reconnecting", "db_unavailable"})
"""States a worker recovers from by itself (retrying with backoff): amber at best."""
_RANK = {"success": 0, "warning": 1, "danger": 2}


def status_colour(state: Any, age_s: Any, *, ok_s: float, warn_s: float) -> str:
    """The worse of the state's colour and the heartbeat age's: a fresh heartbeat saying ``stalled`` is red."""
    by_age = health_colour(age_s, ok_s=ok_s, warn_s=warn_s)
    by_state = "danger" if state in RED_STATES else "warning" if state in AMBER_STATES else "success"
    return max(by_age, by_state, key=_RANK.__getitem__)


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
