"""App factory and WSGI entry point.

``create_app(settings=None)`` builds a complete Dash app (pages, callbacks, routes) around one
:class:`~dashboard.queries.ReadModel`; ``server`` (module attribute, built on first access) is the
Flask app for gunicorn: ``gunicorn -k gthread --threads 32 dashboard.app:server``.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from dash import Dash

from core.db import resolve_dsn
from core.errors import ConfigError
from core.settings import Settings, load_settings
from dashboard import auth, export, guards, pages
from dashboard.context import EXTENSION_KEY, Runtime
from dashboard.healthz import register_healthz
from dashboard.metrics_endpoint import register_metrics
from dashboard.prerender import page_container, warm_up
from dashboard.queries import ReadModel
from dashboard.shell import register_shell_callbacks, shell
from dashboard.sse import NotifyHub, register_sse
from dashboard.static import ASSETS_DIR, ColdHarbourDash, install_static


def create_app(settings: Settings | None = None, *, start_listener: bool = True,
               warm_cache: bool | None = None) -> Dash:
    """A ready Dash app. ``settings`` default: :func:`core.settings.load_settings`.

    ``start_listener``: run the LISTEN thread feeding ``/stream/events`` (unless ``DISABLE_SSE``).
    ``warm_cache`` (default: same as ``start_listener``): load every destination's equity series and the
    exchange calendar in a background thread, so the first visitor does not pay for them.
    """
    settings = settings or load_settings()
    dsn = resolve_dsn(settings)
    app = ColdHarbourDash(
        __name__,
        use_pages=True,
        pages_folder="",
        serve_locally=True,
        assets_folder=str(ASSETS_DIR),
        external_stylesheets=["/_vendor/bootstrap.min.css"],
        suppress_callback_exceptions=True,
        title="Cold Harbour",
        update_title=None,  # type: ignore[arg-type]  # Dash accepts None: no "Updating..." title
        meta_tags=[{"name": "viewport", "content": "width=device-width, initial-scale=1"}],
    )
    server = app.server
    guards.install_guards(server, settings)
    install_static(app)
    model = ReadModel(settings, dsn, app=server)
    hub: NotifyHub | None = None
    if not settings.disable_sse:
        hub = NotifyHub(dsn, max_streams=settings.sse_max_streams,
                        max_streams_per_client=settings.sse_max_streams_per_client)
        if start_listener:
            hub.start()
        register_sse(server, hub)
    server.extensions[EXTENSION_KEY] = Runtime(settings=settings, model=model, hub=hub)
    register_healthz(server, settings, model)
    register_metrics(server)
    pages.register_all(app)
    app.layout = lambda: shell(settings, page_container(app))
    register_shell_callbacks(app)
    export.register_export(server, model)
    auth.install_auth(server, settings)
    # plotly.js and AG Grid's value formatters compile functions at run time: they need 'unsafe-eval'
    auth.install_security_headers(server, app.csp_hashes, allow_unsafe_eval=True)
    # Dash sets itself up on its first request, unsynchronised: a request arriving while another does
    # it (the warm-up thread's, a second browser tab's) finds no registered component scripts (a 500
    # for AG Grid's lazily loaded chunk) or no callbacks yet. So it is done here, before any request.
    with server.test_request_context("/"):
        app._setup_server()  # type: ignore[no-untyped-call]
    if start_listener if warm_cache is None else warm_cache:
        threading.Thread(target=warm_up, args=(app,), name="ch-cache-warmup", daemon=True).start()
    return app


_default_app: Dash | None = None

APP_LOAD_ERROR_EXIT = 4
"""gunicorn's exit code for "the application could not be loaded": its master stops on it (``App failed
to load``) instead of booting a new worker forever."""


def default_app() -> Dash:
    global _default_app
    if _default_app is None:
        _default_app = create_app()
    return _default_app


def __getattr__(name: str) -> Any:
    # ``server`` is built on first access so importing this module has no side effects (gunicorn
    # resolves ``dashboard.app:server`` through this hook).
    if name == "server":
        try:
            return default_app().server
        except ConfigError as exc:
            # a bad setting is the operator's to fix: one line naming it, not a traceback per worker
            print(f"error: configuration: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(APP_LOAD_ERROR_EXIT) from None
    raise AttributeError(name)
