"""The page the browser is on, drawn into the first layout response; and the start-up cache warm-up.

The only module that touches Dash's private API (``dash._pages``): a Dash upgrade that moves it
breaks this file alone, and every failure here falls back to Dash's own routing callback.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

import dash
from dash import Dash, dcc, html
from flask import has_request_context, request

from dashboard.context import EXTENSION_KEY
from dashboard.static import warm_static

log = logging.getLogger(__name__)


def page_container(app: Dash) -> Any:
    """``dash.page_container``, with the page the browser is on already inside it.

    The renderer asks for ``/_dash-layout`` from the page itself, so the request's ``Referer``
    (same-origin: the full URL) names the page. Drawn here, the page arrives with the layout: no
    routing callback round trip and no empty shell rendered first. The page's ``dcc.Location`` is
    given the same path and query, so it does not fire the routing callback again on mount.
    Without a usable ``Referer`` (stripped by a proxy, an unknown path), or when the page's layout
    fails, the stock container is returned and Dash's routing callback draws the page as usual.
    """
    from dash._pages import _parse_query_string, _path_to_page

    referrer = request.referrer if has_request_context() else None
    if not referrer:
        return dash.page_container
    url = urlsplit(referrer)
    if url.netloc != request.host or not url.path.startswith(app.config.requests_pathname_prefix):
        return dash.page_container
    page, variables = _path_to_page(app.strip_relative_path(url.path))  # type: ignore[no-untyped-call]
    if not page:
        return dash.page_container
    search = f"?{url.query}" if url.query else ""
    try:
        layout = page["layout"]
        query = _parse_query_string(search)  # type: ignore[no-untyped-call]
        content = layout(**{**(variables or {}), **query}) if callable(layout) else layout
        title = page["title"](**(variables or {})) if callable(page["title"]) else page["title"]
    except Exception:  # noqa: BLE001 - the routing callback draws it (and reports the error) instead
        log.warning("drawing %s into the layout failed; the page route will draw it", url.path, exc_info=True)
        return dash.page_container
    return html.Div([
        dcc.Location(id="_pages_location", refresh="callback-nav", pathname=url.path, search=search),
        html.Div(content, id="_pages_content", disable_n_clicks=True),
        dcc.Store(id="_pages_store", data={"title": title}),
        html.Div(id="_pages_dummy", disable_n_clicks=True),
    ])


def warm_up(app: Dash) -> None:
    """Load what a destination page's first layout draws (default zone, light theme) into the cache."""
    from dashboard.pages.destination_view import first_render

    runtime = app.server.extensions[EXTENSION_KEY]
    model, tz = runtime.model, runtime.settings.display_timezone
    started = time.perf_counter()
    try:
        with app.server.app_context():
            for slug, v in model.versions().items():
                model.session_returns(slug)
                model.closed_pl(slug)
                first_render(slug, v.pos, v.closed, v.equity, tz, "light")
        warm_static(app)
    except Exception:  # noqa: BLE001 - warming is best effort; requests load on demand
        log.warning("cache warm-up failed", exc_info=True)
        return
    log.info("cache warm-up done in %.1fs", time.perf_counter() - started)
