"""Request-level guards every route shares: a size limit, malformed JSON answered with 400, bad client
input never a 500, HSTS over HTTPS, and a clear answer when a query runs out of time.

- Bodies over :data:`MAX_REQUEST_BYTES` get 413 before anything reads them (Flask's
  ``MAX_CONTENT_LENGTH``). Callback requests are a few KB.
- A callback body that is not JSON, or is nested too deeply for the parser, gets 400 (the parse
  happens here, before Dash, whose own parse would raise ``RecursionError`` as a 500).
- :class:`~dashboard.grid_sql.GridRequestError` (a bad grid request, an unknown destination) raised
  anywhere in a request becomes 400 with its message; a statement cut off by
  ``DASH_STATEMENT_TIMEOUT_S`` (or cancelled because the client left) becomes 503.
- ``Strict-Transport-Security`` on responses to HTTPS requests (directly, or behind a proxy that
  says ``X-Forwarded-Proto: https``), never over plain HTTP where it would be ignored anyway.
"""

from __future__ import annotations

import json
import logging

import flask
from psycopg2 import errors as pg_errors
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import BadRequest

from core.settings import Settings
from dashboard.grid_sql import GridRequestError

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 2 * 1024 * 1024
HSTS = "max-age=31536000; includeSubDomains"
_JSON_PATHS = ("/_dash-update-component",)


def _plain(status: int, message: str) -> flask.Response:
    return flask.Response(message + "\n", status=status, mimetype="text/plain")


def install_guards(server: flask.Flask, settings: Settings) -> None:
    server.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    timeout_s = settings.dash_statement_timeout_s

    @server.before_request
    def parse_json_first() -> flask.Response | None:
        request = flask.request
        if request.method != "POST" or not request.path.endswith(_JSON_PATHS):
            return None
        try:
            body = request.get_data(cache=True)
            data = json.loads(body) if body else None
        except (ValueError, RecursionError):
            return _plain(400, "the request body is not valid JSON (or is nested too deeply)")
        if not isinstance(data, dict):
            return _plain(400, "the request body must be a JSON object")
        return None

    @server.errorhandler(GridRequestError)
    def bad_grid_request(exc: GridRequestError) -> flask.Response:
        return _plain(400, str(exc))

    @server.errorhandler(BadRequest)
    def bad_request(exc: BadRequest) -> flask.Response:
        return _plain(400, exc.description or "bad request")

    @server.errorhandler(DBAPIError)
    def database_gave_up(exc: DBAPIError) -> flask.Response:
        if isinstance(exc.orig, pg_errors.QueryCanceled):
            log.warning("%s: a query ran past %gs (or its client left) and was cancelled", flask.request.path,
                        timeout_s)
            return _plain(503, f"the query took longer than {timeout_s:g}s: narrow the filter and try again")
        raise exc

    @server.after_request
    def hsts(response: flask.Response) -> flask.Response:
        request = flask.request
        if request.is_secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https":
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        return response
