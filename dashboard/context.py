"""Per-process dashboard state reachable from callbacks and Flask routes.

The app factory stores one :class:`Runtime` in ``server.extensions["coldharbour"]``; callbacks run
inside a Flask request, so :func:`runtime` finds it through ``flask.current_app``. Nothing here is
module-global, so several apps (tests) can live in one process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import current_app

from core.settings import Settings

if TYPE_CHECKING:
    from dashboard.queries import ReadModel
    from dashboard.sse import NotifyHub

EXTENSION_KEY = "coldharbour"


@dataclass(slots=True)
class Runtime:
    settings: Settings
    model: ReadModel
    hub: NotifyHub | None


def runtime() -> Runtime:
    return current_app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


def model() -> ReadModel:
    return runtime().model


def resolve_tz(choice: str | None, browser_tz: str | None, settings: Settings | None = None) -> str:
    """The IANA zone for the user's choice: ``exchange`` (default), ``utc`` or ``local`` (the browser's)."""
    exchange = (settings or runtime().settings).display_timezone
    if choice == "utc":
        return "UTC"
    if choice == "local" and browser_tz:
        try:
            ZoneInfo(browser_tz)
        except (ZoneInfoNotFoundError, ValueError):
            return exchange
        return browser_tz
    return exchange
