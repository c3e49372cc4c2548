"""Per-process dashboard state reachable from callbacks and Flask routes.

The app factory stores one :class:`Runtime` in ``server.extensions["coldharbour"]``; callbacks run
inside a Flask request, so :func:`runtime` finds it through ``flask.current_app``. Nothing here is
module-global, so several apps (tests) can live in one process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

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
        from dashboard.grid_sql import GridRequestError, zone_info

        try:
            zone_info(browser_tz)
        except GridRequestError:
            return exchange
        return browser_tz
    return exchange


# Cookies the browser sets from its persisted choices (assets/theme.js, and the switches' clientside
# callbacks) so a page's layout can be drawn for the visitor's zone and theme in the first response,
# instead of a placeholder that the data callbacks replace a round trip later.
TZ_COOKIE, BROWSER_TZ_COOKIE, THEME_COOKIE = "ch_tz", "ch_btz", "ch_theme"
TZ_CHOICES = ("exchange", "utc", "local")


def view_prefs() -> tuple[str, str, str]:
    """``(tz choice, browser zone, theme)`` from the request's cookies (defaults outside a request)."""
    from flask import has_request_context, request

    if not has_request_context():
        return "exchange", "", "light"
    choice = request.cookies.get(TZ_COOKIE, "exchange")
    theme = request.cookies.get(THEME_COOKIE, "light")
    return (choice if choice in TZ_CHOICES else "exchange", request.cookies.get(BROWSER_TZ_COOKIE, "")[:64],
            theme if theme in ("light", "dark") else "light")
