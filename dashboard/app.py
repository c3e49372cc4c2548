"""App factory and WSGI entry point.

``create_app(settings=None)`` builds a complete Dash app (pages, callbacks, routes) around one
:class:`~dashboard.queries.ReadModel`; ``server`` (module attribute, built on first access) is the
Flask app for gunicorn: ``gunicorn -k gthread --threads 32 dashboard.app:server``.

Everything the browser loads is served by the app itself (``serve_locally``; Bootstrap 5.3 CSS from the
installed Bootstrap-Flask package under ``/_vendor/``; AG Grid's theme is built into its bundle): no CDN.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import Dash, Input, Output, State, dcc, html
from flask import Flask, Response, abort, has_request_context, jsonify, request, send_from_directory
from flask_compress import Compress

from core.db import resolve_dsn
from core.settings import PROJECT_ROOT, Settings, load_settings
from dashboard import pages
from dashboard.context import EXTENSION_KEY, Runtime, view_prefs
from dashboard.metrics_endpoint import register_metrics
from dashboard.pages.alerts import nav_item as alerts_nav_item
from dashboard.pages.health import feed_age_s
from dashboard.queries import ReadModel
from dashboard.sse import NotifyHub, register_sse

log = logging.getLogger(__name__)

ASSETS_DIR = PROJECT_ROOT / "assets"
VENDOR_FILES = {"bootstrap.min.css", "bootstrap.min.css.map"}
# plotly.js "cartesian" partial bundle (npm plotly.js-cartesian-dist-min, MIT; same version as the
# plotly package's full bundle): scatter, bar, heatmap, histogram (every trace the pages draw) in
# 1.5 MB instead of 4.8 MB. A fresh browser spends most of a first render compiling plotly.js.
# Installed from npm by the Makefile (package.json: `npm install`), never committed; without it the
# plotly package's full bundle is served.
PLOTLY_BUNDLE = PROJECT_ROOT / "node_modules" / "plotly.js-cartesian-dist-min" / "plotly-cartesian.min.js"
PLOTLY_PATH = "_dash-component-suites/plotly/package_data/plotly.min.js"  # where dcc.Graph loads it from
# Dash loads @babel/polyfill (core-js 2, 99 KB) before everything else. Every browser the dashboard
# supports has those features natively; what Dash's components do need from it is the global
# ``regeneratorRuntime`` (their lazy-loading helpers are transpiled generators). Evaluating core-js
# cost a fresh browser ~0.2 s of main thread per page load, so the page loads regenerator-runtime
# (npm, package.json) in its place; without the package the polyfill stays.
REGENERATOR = PROJECT_ROOT / "node_modules" / "regenerator-runtime" / "runtime.js"
REGENERATOR_URL = "/_vendor/regenerator-runtime.js"
_POLYFILL_TAG = re.compile(r'<script src="[^"]*/dash/deps/polyfill@[^"]*"></script>')
STATIC_MAX_AGE_S = 86400
# V8's explicit compile hint (Chromium 136+; a plain comment elsewhere): compile every function of the
# script eagerly, on the background thread that streams it in, instead of lazily on the main thread
# the first time each is called. Given to the scripts whose code mostly runs while a page first
# renders: React DOM, the Dash renderer and plotly.js (its start-up alone runs ~0.3 s). Measured on a
# fresh browser (docs/performance.md): these three gave the fastest first render; hinting AG Grid and
# the core components as well was slower (eager compilation of code that never runs is wasted work
# on a 2-core host), and no hints slower still.
COMPILE_HINT = b"//# allFunctionsCalledOnLoad\n"
EAGER_SCRIPTS = ("dash/deps/react-dom@", "dash/dash-renderer/", "plotly/package_data/plotly")
# AG Grid's community chunk is fetched by the grid once it mounts; a preload fetches it with the page
AG_GRID_CHUNK = "_dash-component-suites/dash_ag_grid/async-community.js"
HEARTBEAT_OK_FACTOR = 3  # a heartbeat older than 3 intervals is amber, 10 intervals red


class ColdHarbourDash(Dash):
    """Dash with regenerator-runtime in place of the @babel/polyfill script (see :data:`REGENERATOR`)."""

    replace_polyfill = False

    def interpolate_index(self, **kwargs: Any) -> str:  # type: ignore[override]
        if self.replace_polyfill:
            kwargs["scripts"] = _POLYFILL_TAG.sub(f'<script src="{REGENERATOR_URL}"></script>', kwargs["scripts"], 1)
        return super().interpolate_index(**kwargs)  # type: ignore[no-any-return,no-untyped-call]


def _bootstrap_dir() -> Path:
    return Path(str(resources.files("flask_bootstrap"))) / "static" / "bootstrap5" / "css"


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
    _compress(server)
    _precompressed_static(server)  # Flask runs after-request hooks last-registered first: this before
    _compile_hints(server)  # flask-compress, and this before both
    model = ReadModel(settings, dsn, app=server)
    hub: NotifyHub | None = None
    if not settings.disable_sse:
        hub = NotifyHub(dsn)
        if start_listener:
            hub.start()
        register_sse(server, hub)
    server.extensions[EXTENSION_KEY] = Runtime(settings=settings, model=model, hub=hub)

    _register_routes(app, settings, model)
    register_metrics(server)
    _serve_plotly_bundle(app)
    _preload(app, AG_GRID_CHUNK)
    _serve_regenerator(app)
    pages.register_all(app)
    app.layout = lambda: _shell(settings, _page_container(app))
    _register_shell_callbacks(app)
    _wire_optional(app, settings, model)
    if start_listener if warm_cache is None else warm_cache:
        threading.Thread(target=warm_up, args=(app,), name="ch-cache-warmup", daemon=True).start()
    return app


def warm_up(app: Dash) -> None:
    """Load what a destination page's first layout draws (default zone, light theme) into the cache."""
    from dashboard.pages import destination

    runtime = app.server.extensions[EXTENSION_KEY]
    model, tz = runtime.model, runtime.settings.display_timezone
    started = time.perf_counter()
    try:
        with app.server.app_context():
            for slug, v in model.versions().items():
                model.session_returns(slug)
                model.closed_pl(slug)
                destination.first_render(slug, v.pos, v.closed, v.equity, tz, "light")
        _warm_static(app)
    except Exception:  # noqa: BLE001 - warming is best effort; requests load on demand
        log.warning("cache warm-up failed", exc_info=True)
        return
    log.info("cache warm-up done in %.1fs", time.perf_counter() - started)


WARM_CHUNKS = (AG_GRID_CHUNK, "_dash-component-suites/dash/dcc/async-graph.js")


def _warm_static(app: Dash) -> None:
    """Request every script and stylesheet a page loads once, so their compressed bodies are cached."""
    client = app.server.test_client()
    page = client.get("/", headers={"Accept-Encoding": "identity"})
    if page.status_code != 200:  # e.g. behind DASH_AUTH: the first visitor warms it
        return
    prefix = app.config.requests_pathname_prefix
    urls = re.findall(r'(?:src|href)="([^"]+\.(?:js|css)(?:\?[^"]*)?)"', page.get_data(as_text=True))
    for url in [*urls, *(prefix + chunk for chunk in WARM_CHUNKS)]:
        for encoding in ("br", "gzip"):
            client.get(url, headers={"Accept-Encoding": encoding})


def _register_routes(app: Dash, settings: Settings, model: ReadModel) -> None:
    server = app.server
    bootstrap_dir = _bootstrap_dir()
    vendor_cache: dict[str, bytes] = {}

    @server.route("/_vendor/<path:name>")  # type: ignore[untyped-decorator]
    def vendor(name: str) -> Response:
        if name not in VENDOR_FILES:
            abort(404)
        if name.endswith(".css"):  # in memory, not streamed: so it can be compressed (232 KB -> ~30 KB)
            body = vendor_cache.get(name)
            if body is None:
                body = vendor_cache.setdefault(name, (bootstrap_dir / name).read_bytes())
            return _static_response(body, "text/css", hashlib.sha1(body, usedforsecurity=False).hexdigest()[:20])
        response = send_from_directory(bootstrap_dir, name, max_age=STATIC_MAX_AGE_S)
        return response

    @server.route("/healthz")  # type: ignore[untyped-decorator]
    def healthz() -> tuple[Response, int]:
        return _health_payload(settings, model)


def _compress(server: Flask) -> None:
    """zstd/brotli/gzip (what the browser accepts) for pages, scripts, styles and callback JSON.

    The destination page loads ~4.9 MB of JavaScript (AG Grid, plotly.js, Dash): ~1.5 MB compressed.
    That is transfer time on a real network (a tunnel, a phone), not parse time. Streams stay
    uncompressed: ``/stream/events`` must reach the browser event by event, and exports stream.
    """
    server.config.update(
        COMPRESS_MIMETYPES=["text/html", "text/css", "text/javascript", "application/javascript",
                            "application/json"],
        COMPRESS_STREAMS=False,
        COMPRESS_MIN_SIZE=1024,
    )
    Compress(server)


STATIC_PREFIXES = ("/_dash-component-suites/", "/_vendor/", "/assets/")
STATIC_MIMETYPES = {"application/javascript", "text/javascript", "text/css"}
STATIC_CACHE_MAX = 96  # compressed bodies kept (the pages load ~20 static files)
BROTLI_QUALITY = 6


def _precompressed_static(server: Flask) -> None:
    """Compress each static script and stylesheet once per process, not on every request.

    flask-compress compresses every response anew: ~5 MB of JavaScript per fresh visitor, CPU that
    competes with everything else a small host does. Static files only change with a deploy (their
    URLs are fingerprinted, or they carry an ETag), so their compressed bodies are kept in memory;
    flask-compress leaves a response that already has a ``Content-Encoding`` alone.
    """
    import gzip

    import brotli  # a dependency of flask-compress

    cache: dict[tuple[str, str, str, int], bytes] = {}
    lock = threading.Lock()

    @server.after_request
    def precompressed(response: Response) -> Response:
        if (request.method != "GET" or response.status_code != 200 or response.direct_passthrough
                or response.mimetype not in STATIC_MIMETYPES or "Content-Encoding" in response.headers
                or not request.path.startswith(STATIC_PREFIXES)):
            return response
        accepted = request.headers.get("Accept-Encoding", "").lower()
        encoding = "br" if "br" in accepted else "gzip" if "gzip" in accepted else None
        if encoding is None:
            return response
        data = response.get_data()
        etag, weak = response.get_etag()
        key = (request.path, etag or "", encoding, len(data))
        body = cache.get(key)
        if body is None:
            body = (brotli.compress(data, quality=BROTLI_QUALITY) if encoding == "br"
                    else gzip.compress(data, compresslevel=6))
            with lock:
                if len(cache) >= STATIC_CACHE_MAX:
                    cache.pop(next(iter(cache)))
                cache[key] = body
        response.set_data(body)
        response.headers["Content-Encoding"] = encoding
        response.vary.add("Accept-Encoding")
        if etag and not weak:
            response.set_etag(f"{etag}:{encoding}")
        response.make_conditional(request)
        return response


def bundled_plotly_version(path: Path = PLOTLY_BUNDLE) -> str | None:
    """The version in the installed partial bundle's banner (``plotly.js (cartesian - minified) vX.Y.Z``)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(200).decode("ascii", "replace")
    except OSError:
        return None
    match = re.search(r"plotly\.js \(cartesian[^)]*\) v(\d+\.\d+\.\d+)", head)
    return match.group(1) if match else None


def _serve_plotly_bundle(app: Dash) -> None:
    """Serve the cartesian partial bundle where ``dcc.Graph`` fetches plotly.js, and preload it.

    ``dcc.Graph`` loads plotly.js lazily (only when a graph mounts, so the KPI cards and grids never
    wait for it) from a fixed, unversioned URL. Serving the partial bundle there keeps that lazy
    loading; a ``<link rel=preload>`` in the page head starts the download with the page's other
    scripts instead of after the first callbacks. When the partial bundle is not installed, or its
    version differs from the plotly package's plotly.js (an upgrade without updating package.json),
    the full bundle is served as before.
    """
    from plotly.offline import get_plotlyjs_version

    if bundled_plotly_version() != get_plotlyjs_version():
        log.warning("%s is missing or not plotly.js %s (run `npm install`): serving the full bundle",
                    PLOTLY_BUNDLE, get_plotlyjs_version())
        return
    server = app.server
    url = app.config.routes_pathname_prefix + PLOTLY_PATH

    body = PLOTLY_BUNDLE.read_bytes()  # in memory (1.5 MB), not streamed: so it can be compressed
    etag = hashlib.sha1(body, usedforsecurity=False).hexdigest()[:20]

    @server.route(url)  # type: ignore[untyped-decorator]
    def plotly_bundle() -> Response:
        return _static_response(body, "application/javascript", etag)

    _preload(app, PLOTLY_PATH)


def _serve_regenerator(app: ColdHarbourDash) -> None:
    if not REGENERATOR.is_file():
        log.warning("%s is missing (run `npm install`): pages load Dash's @babel/polyfill", REGENERATOR)
        return
    body = REGENERATOR.read_bytes()
    etag = hashlib.sha1(body, usedforsecurity=False).hexdigest()[:20]

    @app.server.route(REGENERATOR_URL)  # type: ignore[untyped-decorator]
    def regenerator_runtime() -> Response:
        return _static_response(body, "application/javascript", etag)

    app.replace_polyfill = True


def _preload(app: Dash, path: str) -> None:
    """A ``<link rel=preload>`` in the page head: the browser fetches ``path`` with the page's scripts."""
    link = f'<link rel="preload" href="{app.config.requests_pathname_prefix}{path}" as="script">'
    app.index_string = app.index_string.replace("{%css%}", "{%css%}\n        " + link, 1)


def _compile_hints(server: Flask) -> None:
    """Prefix :data:`EAGER_SCRIPTS` with :data:`COMPILE_HINT` as they are served."""

    @server.after_request
    def hint(response: Response) -> Response:
        path = request.path
        if (response.status_code == 200 and path.endswith(".js") and not response.direct_passthrough
                and "_dash-component-suites/" in path and any(s in path for s in EAGER_SCRIPTS)):
            response.set_data(COMPILE_HINT + response.get_data())
        return response


def _static_response(body: bytes, mimetype: str, etag: str) -> Response:
    """A cacheable static file answer (ETag, ``max-age``; 304 on a matching ``If-None-Match``)."""
    response = Response(body, mimetype=mimetype)
    response.set_etag(etag)
    response.cache_control.public = True
    response.cache_control.max_age = STATIC_MAX_AGE_S
    response.make_conditional(request)  # 304 and an empty body when the browser holds this ETag
    return response


def _health_payload(settings: Settings, model: ReadModel) -> tuple[Response, int]:
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
        age = float(hb["age_s"]) if hb["age_s"] is not None else None
        worker = {"destination": hb["destination"], "service": hb["service"], "state": hb["state"],
                  "age_s": None if age is None else round(age, 1), "fresh": age is not None and age <= ok_s}
        feed_age = feed_age_s(hb.get("details"), age)
        if feed_age is not None:
            worker["price_feed_age_s"] = round(feed_age, 1)
        body["workers"].append(worker)
        worst = max(worst, age or 0.0)
    body["heartbeat_max_age_s"] = round(worst, 1)
    if any(not w["fresh"] for w in body["workers"]):
        body["status"] = "degraded"  # the dashboard serves; workers need a look (see /health)
    body["destinations"] = len(model.versions())
    body["sse"] = not settings.disable_sse
    body["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return jsonify(body), 200


def _page_container(app: Dash) -> Any:
    """``dash.page_container``, with the page the browser is on already inside it.

    The renderer asks for ``/_dash-layout`` from the page itself, so the request's ``Referer``
    (same-origin: the full URL) names the page. Drawn here, the page arrives with the layout: no
    routing callback round trip and no empty shell rendered first. The page's ``dcc.Location`` is
    given the same path and query, so it does not fire the routing callback again on mount.
    Without a usable ``Referer`` (stripped by a proxy, an unknown path), or when the page's layout
    fails, the stock container is returned and Dash's routing callback draws the page as usual.
    """
    from urllib.parse import urlsplit

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


def _shell(settings: Settings, page_container: Any = None) -> Any:
    _choice, browser_tz, theme = view_prefs()
    nav = dbc.Navbar(
        dbc.Container(
            [
                dbc.NavbarBrand([html.Span("⚓", className="me-2"), "Cold Harbour"], href="/", className="fw-semibold"),
                dbc.NavbarToggler(id="nav-toggler"),
                dbc.Collapse(
                    [
                        dbc.Nav(
                            [
                                dbc.NavItem(dbc.NavLink("Overview", href="/", active="exact")),
                                dbc.NavItem(dbc.NavLink("Activities", href="/activities", active="partial")),
                                alerts_nav_item(),
                                dbc.NavItem(dbc.NavLink("Health", href="/health", active="exact")),
                            ],
                            navbar=True,
                            className="me-auto",
                        ),
                        html.Div(
                            [
                                dbc.Select(
                                    id="tz-choice",
                                    options=[
                                        {"label": f"Exchange ({settings.display_timezone})", "value": "exchange"},
                                        {"label": "UTC", "value": "utc"},
                                        {"label": "Local (browser)", "value": "local"},
                                    ],
                                    value="exchange",
                                    size="sm",
                                    persistence=True,
                                    persistence_type="local",
                                    className="tz-select",
                                ),
                                dbc.Switch(id="theme-switch", label="Dark", value=False, persistence=True,
                                           persistence_type="local", className="mb-0 ms-3 text-nowrap"),
                            ],
                            className="d-flex align-items-center gap-2 py-2 py-lg-0",
                        ),
                    ],
                    id="nav-collapse",
                    navbar=True,
                ),
            ],
            fluid=True,
        ),
        color="body",
        dark=False,
        className="ch-navbar border-bottom mb-3",
    )
    return html.Div(
        [
            dcc.Location(id="url", refresh="callback-nav"),
            # seeded from the cookies assets/theme.js sets: the clientside callbacks below then find
            # nothing to change on load, so no figure or time callback fires a second time
            dcc.Store(id="theme-store", data=theme),
            dcc.Store(id="browser-tz", data=browser_tz or None),
            dcc.Store(id="sse-hint"),
            dcc.Store(id="sse-config", data={"enabled": not settings.disable_sse, "url": "/stream/events"}),
            nav,
            dbc.Container(page_container or dash.page_container, fluid=True, className="pb-5 ch-main"),
        ]
    )


def _register_shell_callbacks(app: Dash) -> None:
    app.clientside_callback(  # type: ignore[no-untyped-call]
        """function(dark, current) {
            const theme = dark ? 'dark' : 'light';
            document.documentElement.setAttribute('data-bs-theme', theme);
            document.body.setAttribute('data-ag-theme-mode', theme);
            if (window.chSetCookie) { window.chSetCookie('ch_theme', theme); }
            return theme === current ? window.dash_clientside.no_update : theme;
        }""",
        Output("theme-store", "data"),
        Input("theme-switch", "value"),
        State("theme-store", "data"),
    )
    app.clientside_callback(  # type: ignore[no-untyped-call]
        """function(_, current) {
            let tz = null;
            try { tz = Intl.DateTimeFormat().resolvedOptions().timeZone || null; } catch (e) { tz = null; }
            return tz === current ? window.dash_clientside.no_update : tz;
        }""",
        Output("browser-tz", "data"),
        Input("url", "pathname"),
        State("browser-tz", "data"),
    )
    app.clientside_callback(  # type: ignore[no-untyped-call]
        """function(choice) {
            if (window.chSetCookie && choice) { window.chSetCookie('ch_tz', choice); }
            return window.dash_clientside.no_update;
        }""",
        Output("tz-choice", "name"),
        Input("tz-choice", "value"),
    )
    app.clientside_callback(  # type: ignore[no-untyped-call]
        """function(config) {
            if (config && config.enabled && window.chSSE) { window.chSSE.start(config.url); }
            return window.dash_clientside.no_update;
        }""",
        Output("sse-hint", "id"),
        Input("sse-config", "data"),
    )
    app.callback(
        Output("nav-collapse", "is_open"),
        Input("nav-toggler", "n_clicks"),
        State("nav-collapse", "is_open"),
        prevent_initial_call=True,
    )(lambda n, is_open: not is_open)


def _wire_optional(app: Dash, settings: Settings, model: ReadModel) -> None:
    """Export routes and auth/security headers live in their own modules (guarded: optional extras)."""
    try:
        from dashboard import export
    except ImportError:  # pragma: no cover - partial checkout
        export = None  # type: ignore[assignment]
    if export is not None:
        export.register_export(
            app.server,
            lambda: model.engine,
            metrics_provider=lambda slug: _metrics_for_export(model, settings, slug),
            account_schema=settings.account_schema,
            default_tz=settings.display_timezone,
        )
    try:
        from dashboard import auth
    except ImportError:  # pragma: no cover - partial checkout
        return
    auth.install_auth(app.server, settings)
    # plotly.js and AG Grid's value formatters compile functions at run time: they need 'unsafe-eval'
    auth.install_security_headers(app.server, app.csp_hashes, allow_unsafe_eval=True)


def _metrics_for_export(model: ReadModel, settings: Settings, slug: str) -> dict[str, Any]:
    from dashboard.pages.destination import kpi_values

    v = model.version_of(slug)
    return {k: val for k, val in kpi_values(slug, settings.display_timezone, v.equity, v.closed).items()}


_default_app: Dash | None = None


def default_app() -> Dash:
    global _default_app
    if _default_app is None:
        _default_app = create_app()
    return _default_app


def __getattr__(name: str) -> Any:
    # ``server`` is built on first access so importing this module has no side effects (gunicorn
    # resolves ``dashboard.app:server`` through this hook).
    if name == "server":
        return default_app().server
    raise AttributeError(name)
