"""CSV / Excel exports of the grids, a metrics sheet, a QuantStats tearsheet and a static HTML report.

Public API (the app factory calls :func:`register_export` once):

- :func:`register_export` ``(server, engine_provider, *, metrics_provider=None,
  account_schema="account_activities", default_tz="America/New_York", url_prefix="/export")``
  adds these GET routes to the Flask ``server``:

  - ``/export/<slug>/<kind>.csv`` and ``/export/<slug>/<kind>.xlsx`` with ``kind`` one of
    ``closed_trades``, ``open_positions``, ``equity``, ``activities`` (the grids) or ``metrics``.
    Query parameters: ``sort`` (the grid's ``sortModel`` as JSON), ``filter`` (its ``filterModel``
    as JSON), ``columns`` (comma-separated ``colId``s, default all), ``tz`` (IANA zone for times,
    default ``default_tz``). The rows are exactly the grid's (same :mod:`dashboard.grid_sql`
    translation), all of them, in the grid's order. CSV is streamed from a server-side cursor;
    XLSX is written by xlsxwriter in ``constant_memory`` mode to a temporary file, then streamed.
  - ``/export/<slug>/tearsheet.html``: QuantStats HTML tearsheet of the daily returns (cash-flow
    neutral: deposits are not returns) from ``equity_full_<slug>``; no benchmark, no network.
  - ``/export/<slug>/report.html``: a static, self-contained HTML report (no script, no PDF):
    summary statistics, the metrics from ``metrics_provider``, monthly returns, equity curve (SVG).

  ``engine_provider()`` returns the read-side SQLAlchemy ``Engine`` (psycopg2 driver).
  ``metrics_provider(slug)`` returns a mapping ``name -> value`` (numbers, strings, datetimes,
  nested mappings are flattened as ``a.b``); without it the metrics export answers 404.
  Unknown destination -> 404; a bad ``sort``/``filter``/``columns``/``tz`` -> 400 with a message.

- :func:`export_url` ``(slug, kind, fmt="csv", *, sort_model=None, filter_model=None, columns=None,
  tz=None, url_prefix="/export")`` builds the link for a grid's current state (prepend the Dash
  app's ``requests_pathname_prefix`` when it is not ``/``).
- :func:`neutralise` ``(text)``: the formula-injection guard used in both formats (a cell starting
  with ``= + - @``, tab or CR gets a leading single quote; numbers are written as numbers).
- :func:`daily_returns` ``(engine, slug, tz)``: the daily return series the tearsheet uses.

Times are rendered in the chosen zone; each time column's header names it, e.g.
``exit_time (America/New_York)``.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import math
import numbers
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import flask
import pandas as pd
import xlsxwriter
from sqlalchemy import text
from sqlalchemy.engine import Engine

from core.destinations import equity_table
from core.errors import ConfigError
from core.schema import quote_ident
from dashboard.grid_sql import (
    DEFAULT_TZ,
    ColumnKind,
    GridKind,
    GridQuery,
    GridRequestError,
    GridTable,
    export_query,
    grid_table,
)

log = logging.getLogger(__name__)

EngineProvider = Callable[[], Engine]
MetricsProvider = Callable[[str], Mapping[str, Any]]

EXPORT_KINDS = (*(k.value for k in GridKind), "metrics")
FORMATS = ("csv", "xlsx")
CSV_CHUNK_BYTES = 64 * 1024
FETCH_ROWS = 2_000
XLSX_MAX_DATA_ROWS = 1_048_575  # Excel's row limit minus the header; more rows continue on a new sheet
XLSX_OPTIONS: dict[str, Any] = {
    "constant_memory": True,  # rows are flushed to disk as written: memory stays flat
    "strings_to_formulas": False,
    "strings_to_urls": False,
    "strings_to_numbers": False,
    "nan_inf_to_errors": True,
    "tmpdir": None,
}
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_MAX_JSON_PARAM = 20_000
_SLUG_RE = re.compile(r"^[a-z0-9_]{1,48}$")
# matplotlib (used by QuantStats) is not thread-safe; tearsheets are rare, so serialise them.
_PLOT_LOCK = threading.Lock()


class ExportError(ValueError):
    """A bad export request; the message is safe to show."""


def neutralise(value: str) -> str:
    """Prefix a single quote to text a spreadsheet would read as a formula (OWASP CSV injection)."""
    return "'" + value if value.startswith(_FORMULA_PREFIXES) else value


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


# --- cell rendering ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Column:
    col_id: str
    kind: ColumnKind
    header: str


def _columns(table: GridTable, requested: str | None, tz: str) -> list[_Column]:
    ids = list(table.columns)
    if requested:
        ids = [c.strip() for c in requested.split(",") if c.strip()]
        for col_id in ids:
            table.spec(col_id)
        if not ids:
            raise ExportError("columns is empty")
    out = []
    for col_id in ids:
        kind = table.columns[col_id].kind
        header = f"{col_id} ({tz})" if kind is ColumnKind.TIMESTAMP else col_id
        out.append(_Column(col_id, kind, header))
    return out


def _local(value: datetime, zone: ZoneInfo) -> datetime:
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(zone)


def _time_text(value: datetime) -> str:
    """``YYYY-MM-DD HH:MM:SS[.ffffff]`` wall time (the zone is in the column header)."""
    return value.replace(tzinfo=None).isoformat(sep=" ")


def _csv_cell(value: Any, zone: ZoneInfo) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, numbers.Integral):  # int, numpy integers
        return str(int(value))
    if isinstance(value, numbers.Real):  # float, numpy floats
        return repr(float(value))
    if isinstance(value, datetime):
        return _time_text(_local(value, zone))
    if isinstance(value, date):
        return value.isoformat()
    return neutralise(str(value))


def _csv_converter(kind: ColumnKind | None, zone: ZoneInfo) -> Callable[[Any], str]:
    """A per-column cell renderer (faster than type-dispatching every cell); generic when kind is None."""
    if kind is ColumnKind.TEXT:
        return lambda v: "" if v is None else neutralise(v if isinstance(v, str) else str(v))
    if kind is ColumnKind.NUMBER:
        return lambda v: "" if v is None else format(v, "f") if isinstance(v, Decimal) else repr(v)
    if kind is ColumnKind.TIMESTAMP:
        return lambda v: "" if v is None else _time_text(_local(v, zone))
    return lambda v: _csv_cell(v, zone)


def _xlsx_cell(sheet: Any, row: int, col: int, value: Any, zone: ZoneInfo, formats: Mapping[str, Any]) -> None:
    if value is None:
        return  # constant_memory: an unwritten cell is blank
    if isinstance(value, bool):
        sheet.write_boolean(row, col, value)
    elif isinstance(value, Decimal | numbers.Real):
        number = float(value)
        if math.isfinite(number):
            sheet.write_number(row, col, number)
        else:
            sheet.write_string(row, col, str(value))
    elif isinstance(value, datetime):
        sheet.write_datetime(row, col, _local(value, zone).replace(tzinfo=None), formats["datetime"])
    elif isinstance(value, date):
        sheet.write_datetime(row, col, datetime(value.year, value.month, value.day), formats["date"])  # noqa: DTZ001
    else:
        sheet.write_string(row, col, neutralise(str(value)))


# --- request parsing -----------------------------------------------------------------------------


def _zone_param(raw: str | None, default: str) -> tuple[str, ZoneInfo]:
    name = (raw or default).strip()
    try:
        return name, ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ExportError(f"unknown time zone {name[:64]!r}") from None


def _json_param(args: Mapping[str, str], name: str) -> Any:
    raw = args.get(name)
    if not raw:
        return None
    if len(raw) > _MAX_JSON_PARAM:
        raise ExportError(f"{name} is too long")
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise ExportError(f"{name} is not valid JSON") from None


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, name + ".")
        elif isinstance(value, list | tuple):
            yield name, json.dumps(value, default=str)
        else:
            yield name, value


# --- database ------------------------------------------------------------------------------------


def _destination_name(engine: Engine, slug: str) -> str | None:
    if not _SLUG_RE.match(slug):
        return None
    with engine.connect() as conn:
        row = conn.execute(text("SELECT name FROM public.ch_destinations WHERE slug = :s"), {"s": slug}).first()
    return None if row is None else str(row[0])


def _stream_rows(engine: Engine, query: GridQuery) -> Iterator[Sequence[Any]]:
    """Rows from a server-side cursor, ``FETCH_ROWS`` at a time; the connection closes with the iterator.

    A server-side cursor lives in a transaction (the engine is autocommit for single reads): one
    ``REPEATABLE READ`` snapshot, so a long export is consistent while the manager keeps writing.
    """
    with engine.connect() as conn:
        streaming = conn.execution_options(isolation_level="REPEATABLE READ", stream_results=True,
                                           yield_per=FETCH_ROWS)
        result = streaming.execute(query.clause())
        yield from result


def daily_returns(engine: Engine, slug: str, tz: str = DEFAULT_TZ) -> tuple[pd.Series, pd.Series]:
    """Daily returns and end-of-day equity from ``equity_full_<slug>``, days in ``tz``.

    Cash-flow neutral: ``r_t = (E_t - E_{t-1} - (D_t - D_{t-1})) / E_{t-1}`` with ``D`` the net
    deposits, the first day measured from the first recorded point.
    """
    table = f"public.{quote_ident(equity_table(slug))}"
    sql = f"""
        WITH last_per_day AS (
            SELECT DISTINCT ON (day) day, equity, net_deposits
            FROM (SELECT (ts AT TIME ZONE :tz)::date AS day, ts, equity, net_deposits FROM {table}) t
            ORDER BY day, ts DESC)
        SELECT NULL::date AS day, equity, net_deposits FROM (
            SELECT equity, net_deposits FROM {table} ORDER BY ts LIMIT 1) first_point
        UNION ALL
        SELECT day, equity, net_deposits FROM last_per_day"""
    with engine.connect() as conn:
        rows = conn.execute(text(sql), {"tz": tz}).all()
    if len(rows) < 2:
        empty = pd.Series([], dtype="float64", index=pd.DatetimeIndex([]))
        return empty, empty
    days = pd.DatetimeIndex([pd.Timestamp(r[0]) for r in rows[1:]])
    equity = pd.Series([float(r[1]) for r in rows], dtype="float64")
    deposits = pd.Series([float(r[2] or 0) for r in rows], dtype="float64")
    prev = equity.shift(1)
    returns = ((equity - prev - deposits.diff()) / prev).iloc[1:]
    returns = returns.replace([math.inf, -math.inf], math.nan).fillna(0.0)
    return (
        pd.Series(returns.to_numpy(), index=days, name="returns"),
        pd.Series(equity.iloc[1:].to_numpy(), index=days, name="equity"),
    )


# --- writers -------------------------------------------------------------------------------------


def _close(rows: Iterable[Any]) -> None:
    close = getattr(rows, "close", None)
    if close is not None:
        close()


def csv_chunks(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    zone: ZoneInfo,
    kinds: Sequence[ColumnKind | None] | None = None,
) -> Iterator[bytes]:
    """Encode rows as CSV in ~``CSV_CHUNK_BYTES`` chunks (lazy: pulls rows only as chunks are consumed)."""
    converters = [_csv_converter(k, zone) for k in (kinds or [None] * len(header))]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    try:
        for row in rows:
            writer.writerow([convert(v) for convert, v in zip(converters, row, strict=True)])
            if buffer.tell() >= CSV_CHUNK_BYTES:
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
        if buffer.tell():
            yield buffer.getvalue().encode()
    finally:
        _close(rows)  # a client that goes away releases the database cursor at once


def write_xlsx(
    path: str,
    sheet_name: str,
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    zone: ZoneInfo,
    about: Sequence[tuple[str, str]] = (),
) -> int:
    """Write rows to ``path`` in constant-memory mode; returns the number of data rows."""
    workbook = xlsxwriter.Workbook(path, {**XLSX_OPTIONS, "tmpdir": os.path.dirname(path)})
    formats = {
        "header": workbook.add_format({"bold": True}),
        "datetime": workbook.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"}),
        "date": workbook.add_format({"num_format": "yyyy-mm-dd"}),
    }

    def new_sheet(part: int) -> Any:
        sheet = workbook.add_worksheet(sheet_name if part == 1 else f"{sheet_name} ({part})")
        for col, title in enumerate(header):
            sheet.write_string(0, col, title, formats["header"])
        sheet.freeze_panes(1, 0)
        return sheet

    count, part = 0, 1
    sheet, row_no = new_sheet(part), 0
    for row in rows:
        if row_no >= XLSX_MAX_DATA_ROWS:
            part += 1
            sheet, row_no = new_sheet(part), 0
        row_no += 1
        for col, value in enumerate(row):
            _xlsx_cell(sheet, row_no, col, value, zone, formats)
        count += 1
    if about:
        info = workbook.add_worksheet("export")
        for i, (key, value) in enumerate(about):
            info.write_string(i, 0, key, formats["header"])
            info.write_string(i, 1, neutralise(value))
    workbook.close()
    return count


class _FileStream:
    """Streams an open (already unlinked) file in chunks; closes it at the end or on ``close()``."""

    def __init__(self, fh: io.BufferedReader) -> None:
        self._fh = fh

    def __iter__(self) -> Iterator[bytes]:
        try:
            while chunk := self._fh.read(CSV_CHUNK_BYTES):
                yield chunk
        finally:
            self._fh.close()

    def close(self) -> None:
        self._fh.close()


# --- HTML report ---------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:,.4f}"
    if isinstance(value, Decimal):
        return f"{value:,.2f}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)


def summary_stats(returns: pd.Series, equity: pd.Series) -> dict[str, float]:
    """Plain-numpy summary of daily returns (252 trading days a year, no risk-free rate)."""
    if returns.empty:
        return {}
    growth = float((1 + returns).prod())
    years = max(len(returns) / 252, 1 / 252)
    std = float(returns.std(ddof=1)) if len(returns) > 1 else 0.0
    curve = (1 + returns).cumprod()
    drawdown = curve / curve.cummax() - 1
    return {
        "total_return": growth - 1,
        "cagr": growth ** (1 / years) - 1 if growth > 0 else -1.0,
        "volatility_ann": std * math.sqrt(252),
        "sharpe": float(returns.mean()) / std * math.sqrt(252) if std > 0 else math.nan,
        "max_drawdown": float(drawdown.min()),
        "best_day": float(returns.max()),
        "worst_day": float(returns.min()),
        "days": float(len(returns)),
        "final_equity": float(equity.iloc[-1]),
    }


def _svg_curve(equity: pd.Series, width: int = 800, height: int = 220) -> str:
    if len(equity) < 2:
        return ""
    values = equity.to_numpy(dtype="float64")
    step = max(1, len(values) // 2000)
    values = values[::step]
    low, high = float(values.min()), float(values.max())
    span = (high - low) or 1.0
    points = " ".join(
        f"{i * width / (len(values) - 1):.1f},{height - (v - low) / span * height:.1f}" for i, v in enumerate(values)
    )
    return (
        f'<svg viewBox="0 0 {width} {height}" width="100%" height="{height}" role="img" '
        f'aria-label="equity curve"><polyline fill="none" stroke="#2a6fdb" stroke-width="1.5" '
        f'points="{points}"/></svg>'
    )


def render_report(title: str, tz: str, returns: pd.Series, equity: pd.Series,
                  metrics: Mapping[str, Any] | None) -> str:
    """A self-contained static HTML report (no script, no external resource)."""
    esc = html.escape
    stats = summary_stats(returns, equity)
    stat_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(_fmt(v))}</td></tr>" for k, v in stats.items())
    metric_rows = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(_fmt(v))}</td></tr>" for k, v in _flatten(metrics or {})
    )
    monthly = ""
    if not returns.empty:
        by_month = (1 + returns).groupby([returns.index.year, returns.index.month]).prod() - 1
        years = sorted({y for y, _ in by_month.index})
        head = "".join(f"<th>{m}</th>" for m in range(1, 13))
        body = ""
        for year in years:
            cells = "".join(
                f"<td>{by_month[(year, m)] * 100:.2f}%</td>" if (year, m) in by_month.index else "<td></td>"
                for m in range(1, 13)
            )
            body += f"<tr><th>{year}</th>{cells}</tr>"
        monthly = f"<h2>Monthly returns</h2><table><tr><th></th>{head}</tr>{body}</table>"
    generated = datetime.now(UTC).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}} table{{border-collapse:collapse;margin-bottom:1.5rem}}
th,td{{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}} th{{background:#f4f4f4;text-align:left}}
@media print{{body{{margin:0}}}}
</style></head><body>
<h1>{esc(title)}</h1>
<p>Generated {esc(generated)} ({esc(tz)}). Daily returns are cash-flow neutral (deposits are not returns).</p>
{'<p>No equity history yet.</p>' if returns.empty else ''}
{_svg_curve(equity)}
<h2>Summary</h2><table>{stat_rows}</table>
{f'<h2>Metrics</h2><table>{metric_rows}</table>' if metric_rows else ''}
{monthly}
</body></html>"""


def quantstats_tearsheet(returns: pd.Series, title: str) -> str:
    """QuantStats' HTML tearsheet, benchmark-free (so nothing is downloaded) and without remote links."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt
    import quantstats  # heavy import (matplotlib, seaborn, yfinance): only when a tearsheet is asked for

    with _PLOT_LOCK, tempfile.TemporaryDirectory(prefix="ch-tearsheet-") as tmp:
        path = os.path.join(tmp, "tearsheet.html")
        with warnings.catch_warnings():
            # QuantStats 0.0.86 / seaborn use APIs pandas 3 and matplotlib 3.11 deprecate
            for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning, UserWarning):
                warnings.filterwarnings("ignore", category=category, module=r"(quantstats|seaborn)(\.|$)")
            quantstats.reports.html(  # type: ignore[no-untyped-call]
                returns, benchmark=None, rf=0.0, title=title, output=path, figfmt="svg",
                download_filename="tearsheet.html",
            )
        plt.close("all")
        with open(path, encoding="utf-8") as fh:
            page = fh.read()
    # The template links a remote favicon: drop it so the page loads nothing from outside.
    return re.sub(r"<link[^>]*rel=\"shortcut icon\"[^>]*>", "", page)


# --- routes --------------------------------------------------------------------------------------


def register_export(
    server: flask.Flask,
    engine_provider: EngineProvider,
    *,
    metrics_provider: MetricsProvider | None = None,
    account_schema: str = "account_activities",
    default_tz: str = DEFAULT_TZ,
    url_prefix: str = "/export",
) -> None:
    """Add the export routes (see the module docstring) to ``server``."""
    ZoneInfo(default_tz)
    prefix = url_prefix.rstrip("/")

    def fail(status: int, message: str) -> flask.Response:
        return flask.Response(message + "\n", status=status, mimetype="text/plain")

    def stamp() -> str:
        return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")

    def export(slug: str, kind: str, fmt: str) -> flask.Response:
        if kind not in EXPORT_KINDS or fmt not in FORMATS:
            return fail(404, "unknown export")
        engine = engine_provider()
        name = _destination_name(engine, slug)
        if name is None:
            return fail(404, "unknown destination")
        args = flask.request.args
        try:
            tz, zone = _zone_param(args.get("tz"), default_tz)
            if kind == "metrics":
                if metrics_provider is None:
                    return fail(404, "metrics are not available")
                header: list[str] = ["metric", "value"]
                kinds: list[ColumnKind | None] = [None, None]
                rows: Iterable[Sequence[Any]] = list(_flatten(metrics_provider(slug)))
                about_sort = about_filter = ""
            else:
                table = grid_table(kind, slug, account_schema)
                columns = _columns(table, args.get("columns"), tz)
                sort_model, filter_model = _json_param(args, "sort"), _json_param(args, "filter")
                query = export_query(table, sort_model, filter_model, tz=tz, columns=[c.col_id for c in columns])
                header = [c.header for c in columns]
                kinds = [c.kind for c in columns]
                rows = _stream_rows(engine, query)
                about_sort, about_filter = json.dumps(sort_model or []), json.dumps(filter_model or {})
        except (GridRequestError, ExportError, ConfigError) as exc:
            return fail(400, str(exc))
        filename = f"{slug}_{kind}_{stamp()}.{fmt}"
        headers = {"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"}
        if fmt == "csv":
            return flask.Response(csv_chunks(header, rows, zone, kinds), mimetype="text/csv; charset=utf-8",
                                  headers=headers)
        about = [("destination", name), ("export", kind), ("time zone", tz), ("sort", about_sort),
                 ("filter", about_filter), ("generated (UTC)", datetime.now(UTC).isoformat(timespec="seconds"))]
        fd, path = tempfile.mkstemp(prefix="ch-export-", suffix=".xlsx")
        os.close(fd)
        try:
            write_xlsx(path, kind, header, rows, zone, about)
            fh = open(path, "rb")  # noqa: SIM115 - closed by _FileStream when the response ends
        finally:
            _close(rows)
            os.unlink(path)  # the open handle keeps the data readable until it is closed
        return flask.Response(
            _FileStream(fh),
            mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            headers=headers,
            direct_passthrough=True,
        )

    def html_page(slug: str, which: str) -> flask.Response:
        engine = engine_provider()
        name = _destination_name(engine, slug)
        if name is None:
            return fail(404, "unknown destination")
        try:
            tz, _ = _zone_param(flask.request.args.get("tz"), default_tz)
        except ExportError as exc:
            return fail(400, str(exc))
        returns, equity = daily_returns(engine, slug, tz)
        if which == "tearsheet":
            if len(returns) < 2:
                return fail(404, "not enough equity history for a tearsheet yet (needs two days)")
            page = quantstats_tearsheet(returns, html.escape(f"{name} tearsheet"))
        else:
            page = render_report(f"{name} report", tz, returns, equity,
                                 metrics_provider(slug) if metrics_provider else None)
        return flask.Response(page, mimetype="text/html", headers={
            "Content-Disposition": f'attachment; filename="{slug}_{which}_{stamp()}.html"',
            "Cache-Control": "no-store",
        })

    server.add_url_rule(f"{prefix}/<slug>/<kind>.<fmt>", "ch_export", export, methods=["GET"])
    server.add_url_rule(f"{prefix}/<slug>/tearsheet.html", "ch_export_tearsheet",
                        lambda slug: html_page(slug, "tearsheet"), methods=["GET"])
    server.add_url_rule(f"{prefix}/<slug>/report.html", "ch_export_report",
                        lambda slug: html_page(slug, "report"), methods=["GET"])
