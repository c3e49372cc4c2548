"""Everything the browser loads, served by the app itself (no CDN): Bootstrap's CSS under ``/_vendor/``,
plotly.js's cartesian partial bundle where ``dcc.Graph`` fetches plotly.js, regenerator-runtime in
place of Dash's @babel/polyfill, compile hints on the scripts that run during the first render, and
compression done once per static file. Why each exists, and what it saves: docs/web_architecture.md
("No CDN", "First render").
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from dash import Dash
from flask import Flask, Response, abort, request, send_from_directory
from flask_compress import Compress

from core.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

ASSETS_DIR = PROJECT_ROOT / "assets"
VENDOR_FILES = {"bootstrap.min.css", "bootstrap.min.css.map"}
# npm packages (package.json), installed by the Makefile, never committed; without them the stock
# files are served
PLOTLY_BUNDLE = PROJECT_ROOT / "node_modules" / "plotly.js-cartesian-dist-min" / "plotly-cartesian.min.js"
PLOTLY_PATH = "_dash-component-suites/plotly/package_data/plotly.min.js"  # where dcc.Graph loads it from
REGENERATOR = PROJECT_ROOT / "node_modules" / "regenerator-runtime" / "runtime.js"
REGENERATOR_URL = "/_vendor/regenerator-runtime.js"
_POLYFILL_TAG = re.compile(r'<script src="[^"]*/dash/deps/polyfill@[^"]*"></script>')
STATIC_MAX_AGE_S = 86400
COMPILE_HINT = b"//# allFunctionsCalledOnLoad\n"  # V8: compile eagerly, off the main thread
EAGER_SCRIPTS = ("dash/deps/react-dom@", "dash/dash-renderer/", "plotly/package_data/plotly")
AG_GRID_CHUNK = "_dash-component-suites/dash_ag_grid/async-community.js"  # fetched once the grid mounts
WARM_CHUNKS = (AG_GRID_CHUNK, "_dash-component-suites/dash/dcc/async-graph.js")
STATIC_PREFIXES = ("/_dash-component-suites/", "/_vendor/", "/assets/")
STATIC_MIMETYPES = {"application/javascript", "text/javascript", "text/css"}
STATIC_CACHE_MAX = 96  # compressed bodies kept (the pages load ~20 static files)
BROTLI_QUALITY = 6


class ColdHarbourDash(Dash):
    """Dash with regenerator-runtime in place of the @babel/polyfill script (see :data:`REGENERATOR`)."""

    replace_polyfill = False

    def interpolate_index(self, **kwargs: Any) -> str:  # type: ignore[override]
        if self.replace_polyfill:
            kwargs["scripts"] = _POLYFILL_TAG.sub(f'<script src="{REGENERATOR_URL}"></script>', kwargs["scripts"], 1)
        return super().interpolate_index(**kwargs)  # type: ignore[no-any-return,no-untyped-call]


def install_static(app: ColdHarbourDash) -> None:
    """Compression, the vendor route, the plotly bundle, regenerator-runtime and the preloads."""
    server = app.server
    _compress(server)
    # Flask runs after-request hooks last-registered first: compress-once runs before flask-compress,
    # and the compile hints before both
    _precompressed_static(server)
    _compile_hints(server)
    _serve_vendor(server)
    _serve_plotly_bundle(app)
    _preload(app, AG_GRID_CHUNK)
    _serve_regenerator(app)


def _bootstrap_dir() -> Path:
    return Path(str(resources.files("flask_bootstrap"))) / "static" / "bootstrap5" / "css"


def _serve_vendor(server: Flask) -> None:
    bootstrap_dir = _bootstrap_dir()
    vendor_cache: dict[str, bytes] = {}

    @server.route("/_vendor/<path:name>")
    def vendor(name: str) -> Response:
        if name not in VENDOR_FILES:
            abort(404)
        if name.endswith(".css"):  # in memory, not streamed: so it can be compressed (232 KB -> ~30 KB)
            body = vendor_cache.get(name)
            if body is None:
                body = vendor_cache.setdefault(name, (bootstrap_dir / name).read_bytes())
            return static_response(body, "text/css", hashlib.sha1(body, usedforsecurity=False).hexdigest()[:20])
        return send_from_directory(bootstrap_dir, name, max_age=STATIC_MAX_AGE_S)


def _compress(server: Flask) -> None:
    """zstd/brotli/gzip for pages, scripts, styles and callback JSON; streams (SSE, exports) stay as they are."""
    server.config.update(
        COMPRESS_MIMETYPES=["text/html", "text/css", "text/javascript", "application/javascript",
                            "application/json"],
        COMPRESS_STREAMS=False,
        COMPRESS_MIN_SIZE=1024,
    )
    Compress(server)


def _precompressed_static(server: Flask) -> None:
    """Compress each static script and stylesheet once per process, not on every request.

    Static files change only with a deploy (fingerprinted URLs or ETags), so their compressed bodies
    are kept in memory; flask-compress leaves a response that has a ``Content-Encoding`` alone.
    """
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
    """The cartesian partial bundle at ``dcc.Graph``'s plotly.js URL (still lazily loaded), preloaded.

    A missing bundle, or one whose version differs from the plotly package's plotly.js, leaves the
    full bundle in place.
    """
    from plotly.offline import get_plotlyjs_version

    if bundled_plotly_version() != get_plotlyjs_version():
        log.warning("%s is missing or not plotly.js %s (run `npm install`): serving the full bundle",
                    PLOTLY_BUNDLE, get_plotlyjs_version())
        return
    url = app.config.routes_pathname_prefix + PLOTLY_PATH
    body = PLOTLY_BUNDLE.read_bytes()  # in memory (1.5 MB), not streamed: so it can be compressed
    etag = hashlib.sha1(body, usedforsecurity=False).hexdigest()[:20]

    @app.server.route(url)  # type: ignore[untyped-decorator]
    def plotly_bundle() -> Response:
        return static_response(body, "application/javascript", etag)

    _preload(app, PLOTLY_PATH)


def _serve_regenerator(app: ColdHarbourDash) -> None:
    if not REGENERATOR.is_file():
        log.warning("%s is missing (run `npm install`): pages load Dash's @babel/polyfill", REGENERATOR)
        return
    body = REGENERATOR.read_bytes()
    etag = hashlib.sha1(body, usedforsecurity=False).hexdigest()[:20]

    @app.server.route(REGENERATOR_URL)  # type: ignore[untyped-decorator]
    def regenerator_runtime() -> Response:
        return static_response(body, "application/javascript", etag)

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


def static_response(body: bytes, mimetype: str, etag: str) -> Response:
    """A cacheable static file answer (ETag, ``max-age``; 304 on a matching ``If-None-Match``)."""
    response = Response(body, mimetype=mimetype)
    response.set_etag(etag)
    response.cache_control.public = True
    response.cache_control.max_age = STATIC_MAX_AGE_S
    response.make_conditional(request)  # 304 and an empty body when the browser holds this ETag
    return response


def warm_static(app: Dash) -> None:
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
