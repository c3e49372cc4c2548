"""The export file formats: CSV streamed in chunks, XLSX written by xlsxwriter in constant-memory mode,
and the formula-injection guard both use.

A cell a spreadsheet would read as a formula gets a leading single quote (OWASP CSV injection):
one starting with ``= + - @`` (or their fullwidth forms ``＝ ＋ － ＠``, which spreadsheets also
accept), also after leading white space, a byte-order mark or a line break; and one starting with a
tab or a carriage return. Numbers are written as numbers, never neutralised.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import xlsxwriter

from dashboard.grid_sql import ColumnKind, GridTable

CSV_CHUNK_BYTES = 64 * 1024
XLSX_MAX_DATA_ROWS = 1_048_575  # Excel's row limit minus the header; more rows continue on a new sheet
XLSX_OPTIONS: dict[str, Any] = {
    "constant_memory": True,  # rows are flushed to disk as written: memory stays flat
    "strings_to_formulas": False,
    "strings_to_urls": False,
    "strings_to_numbers": False,
    "nan_inf_to_errors": True,
    "tmpdir": None,
}
_FORMULA_STARTS = frozenset("=+-@\uff1d\uff0b\uff0d\uff20")
_CONTROL_STARTS = ("\t", "\r")
# what a spreadsheet skips before it looks for a formula sign
_IGNORED_LEAD = " \n\r\t\u00a0\ufeff\u200b\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u3000"


def neutralise(value: str) -> str:
    """``value`` with a leading single quote when a spreadsheet would read it as a formula."""
    if value.startswith(_CONTROL_STARTS) or value.lstrip(_IGNORED_LEAD)[:1] in _FORMULA_STARTS:
        return "'" + value
    return value


class ExportError(ValueError):
    """A bad export request; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class Column:
    col_id: str
    kind: ColumnKind
    header: str


def columns_of(table: GridTable, requested: str | None, tz: str) -> list[Column]:
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
        out.append(Column(col_id, kind, header))
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


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten(value, name + ".")
        elif isinstance(value, list | tuple):
            yield name, json.dumps(value, default=str)
        else:
            yield name, value


def close_rows(rows: Iterable[Any]) -> None:
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
        close_rows(rows)  # a client that goes away releases the database cursor at once


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


class FileStream:
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
