"""CSV / Excel exports of the grids, a metrics sheet, a QuantStats tearsheet and a static HTML report.

:func:`register_export` ``(server, model)`` adds these GET routes; every read goes through the
:class:`~dashboard.queries.ReadModel` (grid rows on its export pool, figures from
:mod:`dashboard.kpis`):

- ``/export/<slug>/<kind>.csv`` and ``.xlsx`` with ``kind`` one of ``closed_trades``,
  ``open_positions``, ``equity``, ``activities`` (the grids) or ``metrics`` (the KPIs the page shows,
  then its "Income & fees" lines as ``income.<line>``). The trade and position grids carry the
  asset class and option contract columns derived from the symbol (:mod:`dashboard.instrument_cols`).
  Query parameters: ``sort`` (the grid's ``sortModel`` as JSON), ``filter`` (its ``filterModel``),
  ``columns`` (comma-separated ``colId``s, default all), ``tz`` (IANA zone for times, default
  ``DISPLAY_TIMEZONE``). The rows are exactly the grid's (same :mod:`dashboard.grid_sql`
  translation), all of them, in the grid's order. CSV streams from a server-side cursor; XLSX is
  written in constant-memory mode, at most ``XLSX_MAX_ROWS`` rows (beyond, a 400 says to use CSV).
  The equity export's ``drawdown`` is the chart's (:meth:`EquitySeries.drawdown`), not a stored one.
- ``/export/<slug>/tearsheet.html`` (QuantStats) and ``/export/<slug>/report.html`` (static, no script).

At most ``EXPORT_MAX_CONCURRENT`` exports run at once per process (one more gets 429 and
``Retry-After``), on their own connections, so they never take one a callback needs. A client that
goes away stops its export (the cursor is closed, a statement in progress cancelled). Unknown
destination -> 404; a bad ``sort``/``filter``/``columns``/``tz`` -> 400 with a message.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import flask
import numpy as np
from sqlalchemy.exc import DBAPIError

from core.errors import ConfigError
from dashboard import analytics, kpis, report
from dashboard.db import EXPORT_RETRY_AFTER_S, ExportBusy
from dashboard.export_formats import (
    CSV_CHUNK_BYTES,
    XLSX_MAX_DATA_ROWS,
    Column,
    ExportError,
    FileStream,
    close_rows,
    columns_of,
    csv_chunks,
    flatten,
    neutralise,
    write_xlsx,
)
from dashboard.grid_sql import (
    ColumnKind,
    GridKind,
    GridRequestError,
    count_query,
    export_query,
    grid_table,
    zone_info,
)
from dashboard.queries import ReadModel

__all__ = ["CSV_CHUNK_BYTES", "EXPORT_KINDS", "XLSX_MAX_DATA_ROWS", "export_url", "neutralise", "register_export"]

log = logging.getLogger(__name__)

EXPORT_KINDS = (*(k.value for k in GridKind), "metrics")
FORMATS = ("csv", "xlsx")
FETCH_ROWS = 2_000
_MAX_JSON_PARAM = 20_000
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DERIVED_DRAWDOWN = "drawdown"  # the equity export's drawdown column: computed from the curve, not stored


def export_url(
    slug: str,
    kind: str,
    fmt: str = "csv",
    *,
    sort_model: Sequence[Mapping[str, Any]] | None = None,
    filter_model: Mapping[str, Any] | None = None,
    columns: Sequence[str] | None = None,
    tz: str | None = None,
    url_prefix: str = "/export",
) -> str:
    """The export link for a grid's current sort/filter state."""
    if kind not in EXPORT_KINDS or fmt not in FORMATS:
        raise ValueError(f"unknown export {kind!r}.{fmt!r}")
    query: dict[str, str] = {}
    if sort_model:
        query["sort"] = json.dumps(list(sort_model), separators=(",", ":"))
    if filter_model:
        query["filter"] = json.dumps(dict(filter_model), separators=(",", ":"))
    if columns:
        query["columns"] = ",".join(columns)
    if tz:
        query["tz"] = tz
    base = f"{url_prefix.rstrip('/')}/{slug}/{kind}.{fmt}"
    return f"{base}?{urlencode(query)}" if query else base


# --- request parsing -----------------------------------------------------------------------------


def _zone_param(raw: str | None, default: str) -> str:
    name = (raw or default).strip()
    try:
        zone_info(name)
    except GridRequestError as exc:
        raise ExportError(str(exc)) from None
    return name


def _json_param(args: Mapping[str, str], name: str) -> Any:
    raw = args.get(name)
    if not raw:
        return None
    if len(raw) > _MAX_JSON_PARAM:
        raise ExportError(f"{name} is too long")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        raise ExportError(f"{name} is not valid JSON (or nested too deeply)") from None


def _fail(status: int, message: str, headers: Mapping[str, str] | None = None) -> flask.Response:
    return flask.Response(message + "\n", status=status, mimetype="text/plain", headers=dict(headers or {}))


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def _ns(value: datetime) -> int:
    """Exact UTC ns (microsecond resolution, as the equity curve is read)."""
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return (aware - _EPOCH) // timedelta(microseconds=1) * 1000


# --- the grid exports ----------------------------------------------------------------------------


class _Selection:
    """What one grid export reads and writes: header, kinds, the query and the row stream."""

    def __init__(self, model: ReadModel, slug: str, kind: str, args: Mapping[str, str], tz: str) -> None:
        table = grid_table(kind, slug, model.account_schema)
        self.columns: list[Column] = columns_of(table, args.get("columns"), tz)
        self.sort_model, self.filter_model = _json_param(args, "sort"), _json_param(args, "filter")
        ids = [c.col_id for c in self.columns]
        self.curve_drawdown = kind == GridKind.EQUITY and DERIVED_DRAWDOWN in ids
        if self.curve_drawdown:
            self._refuse_derived_order()
            if "ts" not in ids:
                ids.append("ts")  # read to place each row on the curve, not written
        self.query = export_query(table, self.sort_model, self.filter_model, tz=tz, columns=ids)
        self.count = count_query(table, self.filter_model, tz=tz)
        self._ids, self._model, self._slug = ids, model, slug

    def _refuse_derived_order(self) -> None:
        sorted_by = {s.get("colId") for s in self.sort_model or [] if isinstance(s, Mapping)}
        filtered_by = set(self.filter_model or {}) if isinstance(self.filter_model, Mapping) else set()
        if DERIVED_DRAWDOWN in sorted_by | filtered_by:
            raise ExportError("drawdown is computed from the equity curve: sort or filter by ts or equity")

    @property
    def header(self) -> list[str]:
        return [c.header for c in self.columns]

    @property
    def kinds(self) -> list[ColumnKind | None]:
        return [c.kind for c in self.columns]

    def rows(self) -> Iterator[Sequence[Any]]:
        rows = self._model.export_rows(self.query, FETCH_ROWS)
        if not self.curve_drawdown:
            return rows
        return _with_curve_drawdown(rows, self._model, self._slug, self._ids, len(self.columns))


def _with_curve_drawdown(rows: Iterator[Sequence[Any]], model: ReadModel, slug: str, ids: list[str],
                         width: int) -> Iterator[Sequence[Any]]:
    """Each equity row with the drawdown the chart draws at its timestamp (empty for a point the
    curve does not hold yet)."""
    series = model.equity_series(slug)
    ts_ns, drawdown = series.ts_ns, series.drawdown()
    ts_at, dd_at = ids.index("ts"), ids.index(DERIVED_DRAWDOWN)
    try:
        for row in rows:
            out = list(row)
            at = int(np.searchsorted(ts_ns, _ns(out[ts_at])))
            out[dd_at] = float(drawdown[at]) if at < ts_ns.size and ts_ns[at] == _ns(out[ts_at]) else None
            yield out[:width]
    finally:
        close_rows(rows)


def _xlsx_response(model: ReadModel, selection: _Selection, kind: str, tz: str, about: list[tuple[str, str]],
                   headers: dict[str, str]) -> flask.Response:
    cap = model.settings.xlsx_max_rows
    total = model.export_count(selection.count)
    if total > cap:
        raise ExportError(f"{total:,} rows are more than an Excel export holds here ({cap:,}, XLSX_MAX_ROWS): "
                          "use the CSV export, which streams any number of rows")
    fd, path = tempfile.mkstemp(prefix="ch-export-", suffix=".xlsx")
    os.close(fd)
    rows = selection.rows()
    try:
        write_xlsx(path, kind, selection.header, rows, zone_info(tz), about)
        fh = open(path, "rb")  # noqa: SIM115 - closed by FileStream when the response ends
    finally:
        close_rows(rows)
        os.unlink(path)  # the open handle keeps the data readable until it is closed
    return flask.Response(FileStream(fh), mimetype=XLSX_MIME, headers=headers, direct_passthrough=True)


def _grid_export(model: ReadModel, slug: str, name: str, kind: str, fmt: str, tz: str) -> flask.Response:
    headers = {"Content-Disposition": f'attachment; filename="{slug}_{kind}_{_stamp()}.{fmt}"',
               "Cache-Control": "no-store"}
    if kind == "metrics":
        income = {line.key: line.amount for line in kpis.income_lines(model, slug)}
        figures: Iterable[Sequence[Any]] = list(flatten({**kpis.kpi_values(model, slug, tz), "income": income}))
        header, kinds = ["metric", "value"], [None, None]
        if fmt == "csv":
            return flask.Response(csv_chunks(header, figures, zone_info(tz), kinds),
                                  mimetype="text/csv; charset=utf-8", headers=headers)
        fd, path = tempfile.mkstemp(prefix="ch-export-", suffix=".xlsx")
        os.close(fd)
        try:
            write_xlsx(path, kind, header, figures, zone_info(tz), [("destination", name), ("time zone", tz)])
            with open(path, "rb") as fh:
                return flask.Response(fh.read(), mimetype=XLSX_MIME, headers=headers)
        finally:
            os.unlink(path)
    selection = _Selection(model, slug, kind, flask.request.args, tz)
    if fmt == "csv":
        return flask.Response(csv_chunks(selection.header, selection.rows(), zone_info(tz), selection.kinds),
                              mimetype="text/csv; charset=utf-8", headers=headers)
    about = [("destination", name), ("export", kind), ("time zone", tz),
             ("sort", json.dumps(selection.sort_model or [])), ("filter", json.dumps(selection.filter_model or {})),
             ("generated (UTC)", datetime.now(UTC).isoformat(timespec="seconds"))]
    return _xlsx_response(model, selection, kind, tz, about, headers)


# --- the HTML pages ------------------------------------------------------------------------------


def _html_page(model: ReadModel, slug: str, name: str, which: str, tz: str) -> flask.Response:
    v = model.current(slug)
    returns = model.session_returns(slug)
    if which == "tearsheet":
        if len(returns) < 2:
            return _fail(404, "not enough equity history for a tearsheet yet (needs two sessions)")
        page = model.memo(("tearsheet", slug, v.equity),
                          lambda: report.tearsheet(report.tearsheet_returns(returns), f"{name} tearsheet"))
    else:
        figures = kpis.kpi_values(model, slug, tz)
        daily = model.daily_equity(slug, tz)
        page = report.render_report(f"{name} report", tz, figures, analytics.monthly_table(returns),
                                    daily["equity"].to_numpy(dtype=float))
    return flask.Response(page, mimetype="text/html", headers={
        "Content-Disposition": f'attachment; filename="{slug}_{which}_{_stamp()}.html"',
        "Cache-Control": "no-store",
    })


# --- routes --------------------------------------------------------------------------------------


def _guarded(model: ReadModel, work: Callable[[str, str, str], flask.Response]) -> Callable[..., flask.Response]:
    """Resolve the destination and zone, take an export slot (429 when none is free), answer bad input
    with 400 and a database that gives up with 503; the slot is given back when the response closes."""

    def view(slug: str, **_: Any) -> flask.Response:
        dest = model.destination(slug)
        if dest is None:
            return _fail(404, "unknown destination")
        try:
            tz = _zone_param(flask.request.args.get("tz"), model.settings.display_timezone)
            model.export_slots.acquire()
        except ExportError as exc:
            return _fail(400, str(exc))
        except ExportBusy:
            return _fail(429, f"{model.export_slots.limit} exports are running: try again in a few seconds",
                         {"Retry-After": str(EXPORT_RETRY_AFTER_S)})
        release = model.export_slots.releaser()
        try:
            response = work(slug, dest.name, tz)
        except (GridRequestError, ExportError, ConfigError) as exc:
            release()
            return _fail(400, str(exc))
        except DBAPIError as exc:
            release()
            log.warning("export of %s failed in the database: %s", slug, type(exc.orig).__name__)
            return _fail(503, "the database did not answer in time: try again, or narrow the export with a filter")
        except BaseException:
            release()
            raise
        if not response.is_streamed:
            release()  # the work is done: the body is in memory
            return response
        # a streamed body gives the slot back when it ends or is closed; not Response.call_on_close,
        # which a WSGI server never calls for a direct_passthrough body (the XLSX file stream)
        response.response = _Releasing(response.response, release)
        response.call_on_close(release)
        return response

    return view


class _Releasing:
    """A response body that calls ``release`` once it is exhausted or closed (even if never started)."""

    def __init__(self, body: Iterable[Any], release: Callable[[], None]) -> None:
        self._body, self._release = body, release

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self._body
        finally:
            self._release()

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._release()


def register_export(server: flask.Flask, model: ReadModel, *, url_prefix: str = "/export") -> None:
    """Add the export routes (see the module docstring) to ``server``."""
    prefix = url_prefix.rstrip("/")

    def grid(slug: str, kind: str, fmt: str) -> flask.Response:
        if kind not in EXPORT_KINDS or fmt not in FORMATS:
            return _fail(404, "unknown export")
        return _guarded(model, lambda s, name, tz: _grid_export(model, s, name, kind, fmt, tz))(slug)

    server.add_url_rule(f"{prefix}/<slug>/<kind>.<fmt>", "ch_export", grid, methods=["GET"])
    def page(which: str) -> Callable[..., flask.Response]:
        def work(slug: str, name: str, tz: str) -> flask.Response:
            return _html_page(model, slug, name, which, tz)

        return _guarded(model, work)

    for which in ("tearsheet", "report"):
        server.add_url_rule(f"{prefix}/<slug>/{which}.html", f"ch_export_{which}", page(which), methods=["GET"])

