"""dash-ag-grid infinite row model requests translated to parameterised SQL.

Used by the grids' callbacks and by :mod:`dashboard.export`, so an export holds exactly the rows the
grid shows. :class:`GridTable` is the whitelist (``colId`` -> trusted SQL expression + kind, and the key
columns that make the order total); :func:`grid_table` gives the standard ones (use their ``colId``s as
the grids' ``field``s). :func:`page_query` (one block), :func:`count_query` (``rowCount``) and
:func:`export_query` (unpaged, same order) return a :class:`GridQuery` ``(sql, params)``; anything
outside the whitelist, malformed or past the cost caps raises :class:`GridRequestError` (safe to show).

Safety: identifiers only ever come from the whitelist (validated with :func:`core.schema.quote_ident`);
every browser-supplied value is a bind parameter.

Semantics (server-side equivalents of AG Grid's default filters):
- text: case-insensitive; ``contains/notContains/startsWith/endsWith/equals/notEqual/blank/notBlank``;
  ``notEqual``/``notContains`` also match NULL cells (as AG Grid does); ``blank`` = NULL or ''.
- number: ``equals/notEqual/lessThan/lessThanOrEqual/greaterThan/greaterThanOrEqual/inRange/
  blank/notBlank``; ``inRange`` excludes both ends unless ``in_range_inclusive=True`` (AG Grid's
  ``inRangeInclusive`` default is false); NULL cells never match a comparison.
- date on a timestamp column: day granularity in the display time zone ``tz`` (``equals`` 2024-03-01
  = that whole day in ``tz``; ``lessThan`` = before that day; ``greaterThan`` = after that day).
- combined conditions ``{"operator": "AND"|"OR", "conditions": [...]}`` (and the legacy
  ``condition1``/``condition2`` form).
- sorting: ``sortModel`` order, then the key columns ascending as a tie-breaker (stable paging).
  PostgreSQL puts NULLs last when ascending and first when descending.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from sqlalchemy import TextClause, text

from core.destinations import closed_trades_table, equity_table, open_trades_table
from core.schema import quote_ident
from dashboard.instrument_cols import instrument_specs

DEFAULT_TZ = "America/New_York"
MAX_PAGE_ROWS = 10_000
MAX_CONDITIONS = 10
MAX_SORT_KEYS = 10
MAX_FILTER_TEXT = 500
# the cost caps of one request: every condition is one predicate over every row scanned, and an
# ILIKE pattern costs in proportion to its length, so these bound a request's work, not its shape
MAX_TOTAL_CONDITIONS = 20
MAX_TOTAL_FILTER_TEXT = 1_000
MAX_ROW_INDEX = 100_000_000  # startRow/endRow beyond any table a grid shows (OFFSET is a bigint)
MIN_YEAR, MAX_YEAR = 1900, 2999  # date filters: a day and the day after must both exist in every zone
MAX_NUMBER_EXPONENT = 100  # |exponent| of a filter number: NUMERIC refuses 1e999999 with an error
_PARAM_PREFIX = "g_"
_DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?$")


class GridRequestError(ValueError):
    """The grid request names something outside the whitelist or carries a malformed value."""


class ColumnKind(StrEnum):
    TEXT = "text"
    """Text (or anything cast to text, e.g. uuid): text filter."""
    NUMBER = "number"
    """numeric / integer / double precision: number filter."""
    TIMESTAMP = "timestamp"
    """timestamptz: date filter, day granularity in the display time zone."""
    DATE = "date"
    """date: date filter."""
    BOOLEAN = "boolean"
    """boolean: text (or boolean) filter with ``equals``/``notEqual`` true/false, blank/notBlank."""


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One whitelisted column: a trusted SQL expression (never user input) and its kind."""

    sql_expr: str
    kind: ColumnKind
    label: str | None = None

    @classmethod
    def column(cls, name: str, kind: ColumnKind, label: str | None = None) -> ColumnSpec:
        """A plain column reference (validated and quoted)."""
        return cls(quote_ident(name), kind, label)


@dataclass(frozen=True, slots=True)
class GridTable:
    """A whitelisted table for grid queries.

    ``name``: trusted, already-quoted table expression (``public."closed_trades_x"``).
    ``columns``: ``colId`` -> :class:`ColumnSpec`, in display/export order.
    ``key``: ``colId``s forming a unique key, appended to every ORDER BY.
    ``base_where``/``base_params``: a fixed trusted predicate (e.g. ``destination = :dest``).
    """

    name: str
    columns: Mapping[str, ColumnSpec]
    key: tuple[str, ...]
    base_where: str = ""
    base_params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for col_id in self.columns:
            quote_ident(col_id)  # colIds double as SQL aliases
        for col_id in self.key:
            if col_id not in self.columns:
                raise ValueError(f"key column {col_id!r} is not in the whitelist")
        if any(p.startswith(_PARAM_PREFIX) for p in self.base_params):
            raise ValueError(f"base_params must not start with {_PARAM_PREFIX!r}")
        object.__setattr__(self, "columns", MappingProxyType(dict(self.columns)))
        object.__setattr__(self, "base_params", MappingProxyType(dict(self.base_params)))

    def spec(self, col_id: Any) -> ColumnSpec:
        if not isinstance(col_id, str) or col_id not in self.columns:
            raise GridRequestError(f"unknown column {str(col_id)[:64]!r}")
        return self.columns[col_id]


class GridQuery(NamedTuple):
    """SQL with ``:name`` placeholders for :func:`sqlalchemy.text`, and its bind parameters."""

    sql: str
    params: dict[str, Any]

    def clause(self) -> TextClause:
        return text(self.sql).bindparams(**self.params) if self.params else text(self.sql)


@dataclass(frozen=True, slots=True)
class SortKey:
    col_id: str
    descending: bool


class _Params:
    """Collects bind parameters under generated names (``g_0``, ``g_1``...)."""

    def __init__(self, base: Mapping[str, Any]) -> None:
        self.values: dict[str, Any] = dict(base)
        self._n = 0
        self.conditions = 0
        self.text_chars = 0

    def charge(self, *, conditions: int = 0, text_chars: int = 0) -> None:
        """Count a request's filter work against the cost caps (raises past them)."""
        self.conditions += conditions
        self.text_chars += text_chars
        if self.conditions > MAX_TOTAL_CONDITIONS:
            raise GridRequestError(f"a filter may hold at most {MAX_TOTAL_CONDITIONS} conditions in all")
        if self.text_chars > MAX_TOTAL_FILTER_TEXT:
            raise GridRequestError(f"filter texts may hold at most {MAX_TOTAL_FILTER_TEXT} characters in all")

    def add(self, value: Any) -> str:
        name = f"{_PARAM_PREFIX}{self._n}"
        self._n += 1
        self.values[name] = value
        return f":{name}"


# --- parsing -------------------------------------------------------------------------------------


def parse_sort_model(table: GridTable, sort_model: Any) -> list[SortKey]:
    """Validate ``[{colId, sort}]``; raises :class:`GridRequestError`."""
    if sort_model in (None, ""):
        return []
    if not isinstance(sort_model, list):
        raise GridRequestError("sortModel must be a list")
    if len(sort_model) > MAX_SORT_KEYS:
        raise GridRequestError(f"sortModel has more than {MAX_SORT_KEYS} keys")
    keys: list[SortKey] = []
    for item in sort_model:
        if not isinstance(item, Mapping):
            raise GridRequestError("sortModel entries must be objects")
        col_id = item.get("colId")
        table.spec(col_id)
        assert isinstance(col_id, str)  # checked by spec()
        direction = item.get("sort")
        if direction not in ("asc", "desc"):
            raise GridRequestError(f"unknown sort direction {str(direction)[:16]!r} (asc or desc)")
        keys.append(SortKey(col_id, direction == "desc"))
    return keys


# files of the zone database that name no zone of their own (the host's zone, a template)
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@functools.cache
def _zone_names() -> frozenset[str]:
    return (frozenset(available_timezones()) | {"UTC"}) - _NOT_ZONES


def zone_info(tz: Any) -> ZoneInfo:
    """The IANA zone named ``tz``; :class:`GridRequestError` for anything else.

    Only real zone names count: ``America`` (a directory), ``posixrules`` or ``localtime`` (files
    of the zone database that name no zone, or the server's own zone) are refused.
    """
    if not isinstance(tz, str) or tz not in _zone_names():
        raise GridRequestError(f"unknown time zone {str(tz)[:64]!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise GridRequestError(f"unknown time zone {tz[:64]!r}") from None


def _parse_day(raw: Any) -> date:
    if not isinstance(raw, str) or not (match := _DATE_RE.match(raw.strip())):
        raise GridRequestError(f"bad date {str(raw)[:40]!r} (expected YYYY-MM-DD[ HH:MM:SS])")
    try:
        day = date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise GridRequestError(f"bad date {raw[:40]!r}") from None
    if not MIN_YEAR <= day.year <= MAX_YEAR:
        raise GridRequestError(f"dates must lie in the years {MIN_YEAR} to {MAX_YEAR}")
    return day


def _parse_number(raw: Any) -> Decimal:
    if isinstance(raw, bool) or raw is None or (isinstance(raw, str) and len(raw) > 64):
        raise GridRequestError(f"bad number {str(raw)[:40]!r}")
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise GridRequestError(f"bad number {str(raw)[:40]!r}") from None
    if not value.is_finite():
        raise GridRequestError("numbers must be finite")
    if value and abs(value.adjusted()) > MAX_NUMBER_EXPONENT:
        raise GridRequestError(f"numbers must lie within 1e-{MAX_NUMBER_EXPONENT} and 1e{MAX_NUMBER_EXPONENT}")
    return value


def _parse_text(raw: Any) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float | Decimal):
        raise GridRequestError("text filter value must be a string")
    value = str(raw)
    if len(value) > MAX_FILTER_TEXT:
        raise GridRequestError(f"filter text longer than {MAX_FILTER_TEXT} characters")
    if "\x00" in value:
        raise GridRequestError("filter text contains a NUL character")
    if not is_utf8(value):
        raise GridRequestError("filter text is not valid Unicode (a lone surrogate)")
    return value


def is_utf8(value: str) -> bool:
    """Whether ``value`` can be sent to the database (no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    lowered = str(raw).strip().lower()
    if lowered in {"true", "yes", "1", "t", "y"}:
        return True
    if lowered in {"false", "no", "0", "f", "n"}:
        return False
    raise GridRequestError(f"bad boolean {str(raw)[:16]!r} (true or false)")


def like_escape(value: str) -> str:
    """``value`` as a literal inside a LIKE pattern with ``ESCAPE '\\'``."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# --- filters -------------------------------------------------------------------------------------

_ALLOWED_FILTER_TYPES = {
    ColumnKind.TEXT: {"text"},
    ColumnKind.NUMBER: {"number"},
    ColumnKind.TIMESTAMP: {"date"},
    ColumnKind.DATE: {"date"},
    ColumnKind.BOOLEAN: {"text", "boolean"},
}
_CMP = {
    "equals": "=",
    "notEqual": "<>",
    "lessThan": "<",
    "lessThanOrEqual": "<=",
    "greaterThan": ">",
    "greaterThanOrEqual": ">=",
}


def _text_condition(expr: str, cond: Mapping[str, Any], params: _Params) -> str:
    op = cond.get("type")
    if op == "blank":
        return f"({expr} IS NULL OR {expr} = '')"
    if op == "notBlank":
        return f"({expr} IS NOT NULL AND {expr} <> '')"
    value = _parse_text(cond.get("filter"))
    params.charge(text_chars=len(value))
    if op == "equals":
        return f"lower({expr}) = lower({params.add(value)})"
    if op == "notEqual":
        return f"({expr} IS NULL OR lower({expr}) <> lower({params.add(value)}))"
    patterns = {
        "contains": "%{}%",
        "notContains": "%{}%",
        "startsWith": "{}%",
        "endsWith": "%{}",
    }
    if op not in patterns:
        raise GridRequestError(f"unknown text filter operator {str(op)[:32]!r}")
    placeholder = params.add(patterns[op].format(like_escape(value)))
    if op == "notContains":
        return f"({expr} IS NULL OR {expr} NOT ILIKE {placeholder} ESCAPE '\\')"
    return f"{expr} ILIKE {placeholder} ESCAPE '\\'"


def _scalar_condition(
    expr: str,
    op: Any,
    low: Any,
    high: Any,
    params: _Params,
    *,
    inclusive: bool,
) -> str:
    if op == "blank":
        return f"{expr} IS NULL"
    if op == "notBlank":
        return f"{expr} IS NOT NULL"
    if op in _CMP:
        return f"{expr} {_CMP[op]} {params.add(low)}"
    if op == "inRange":
        lo_op, hi_op = (">=", "<=") if inclusive else (">", "<")
        return f"({expr} {lo_op} {params.add(low)} AND {expr} {hi_op} {params.add(high)})"
    raise GridRequestError(f"unknown operator {str(op)[:32]!r}")


def _number_condition(expr: str, cond: Mapping[str, Any], params: _Params, *, inclusive: bool) -> str:
    op = cond.get("type")
    if op in ("blank", "notBlank"):
        return _scalar_condition(expr, op, None, None, params, inclusive=inclusive)
    if op not in _CMP and op != "inRange":
        raise GridRequestError(f"unknown number filter operator {str(op)[:32]!r}")
    low = _parse_number(cond.get("filter"))
    high = _parse_number(cond.get("filterTo")) if op == "inRange" else None
    return _scalar_condition(expr, op, low, high, params, inclusive=inclusive)


def _date_condition(
    expr: str, kind: ColumnKind, cond: Mapping[str, Any], params: _Params, *, zone: ZoneInfo, inclusive: bool
) -> str:
    op = cond.get("type")
    if op in ("blank", "notBlank"):
        return _scalar_condition(expr, op, None, None, params, inclusive=inclusive)
    if op not in {"equals", "notEqual", "lessThan", "greaterThan", "lessThanOrEqual", "greaterThanOrEqual",
                  "inRange"}:
        raise GridRequestError(f"unknown date filter operator {str(op)[:32]!r}")
    day = _parse_day(cond.get("dateFrom"))
    day_to = _parse_day(cond.get("dateTo")) if op == "inRange" else None
    if kind is ColumnKind.DATE:
        return _scalar_condition(expr, op, day, day_to, params, inclusive=inclusive)

    def start(d: date) -> datetime:
        return datetime.combine(d, time(0), zone)

    def end(d: date) -> datetime:  # exclusive: midnight of the next day (DST-safe)
        return datetime.combine(d + timedelta(days=1), time(0), zone)

    if op == "equals":
        return f"({expr} >= {params.add(start(day))} AND {expr} < {params.add(end(day))})"
    if op == "notEqual":
        return f"({expr} < {params.add(start(day))} OR {expr} >= {params.add(end(day))})"
    if op in ("lessThan", "greaterThanOrEqual"):
        return f"{expr} {'<' if op == 'lessThan' else '>='} {params.add(start(day))}"
    if op in ("greaterThan", "lessThanOrEqual"):
        return f"{expr} {'>=' if op == 'greaterThan' else '<'} {params.add(end(day))}"
    if day_to is None:  # unreachable: inRange always parses dateTo
        raise GridRequestError("inRange needs dateTo")
    low = start(day) if inclusive else end(day)
    high = end(day_to) if inclusive else start(day_to)
    return f"({expr} >= {params.add(low)} AND {expr} < {params.add(high)})"


def _bool_condition(expr: str, cond: Mapping[str, Any], params: _Params) -> str:
    op = cond.get("type")
    if op in ("blank", "notBlank"):
        return _scalar_condition(expr, op, None, None, params, inclusive=False)
    if op not in ("equals", "notEqual"):
        raise GridRequestError(f"unknown boolean filter operator {str(op)[:32]!r}")
    return f"{expr} {_CMP[op]} {params.add(_parse_bool(cond.get('filter')))}"


def _condition(
    spec: ColumnSpec, col_id: str, cond: Any, params: _Params, *, zone: ZoneInfo, inclusive: bool, depth: int = 0
) -> str:
    if not isinstance(cond, Mapping):
        raise GridRequestError(f"filter for {col_id!r} must be an object")
    filter_type = cond.get("filterType")
    if filter_type is not None and filter_type not in _ALLOWED_FILTER_TYPES[spec.kind]:
        raise GridRequestError(f"filter type {str(filter_type)[:16]!r} not allowed on column {col_id!r}")
    if "operator" in cond:
        if depth > 0:
            raise GridRequestError("nested combined filters are not supported")
        operator = cond.get("operator")
        if operator not in ("AND", "OR"):
            raise GridRequestError(f"unknown combining operator {str(operator)[:16]!r} (AND or OR)")
        conditions = cond.get("conditions")
        if conditions is None:  # legacy two-condition form
            conditions = [c for c in (cond.get("condition1"), cond.get("condition2")) if c is not None]
        if not isinstance(conditions, list) or not conditions:
            raise GridRequestError(f"combined filter for {col_id!r} needs a non-empty conditions list")
        if len(conditions) > MAX_CONDITIONS:
            raise GridRequestError(f"more than {MAX_CONDITIONS} conditions for {col_id!r}")
        parts = [
            _condition(spec, col_id, c, params, zone=zone, inclusive=inclusive, depth=depth + 1) for c in conditions
        ]
        return "(" + f" {operator} ".join(parts) + ")"
    expr = spec.sql_expr
    params.charge(conditions=1)
    if spec.kind is ColumnKind.TEXT:
        return _text_condition(expr, cond, params)
    if spec.kind is ColumnKind.NUMBER:
        return _number_condition(expr, cond, params, inclusive=inclusive)
    if spec.kind is ColumnKind.BOOLEAN:
        return _bool_condition(expr, cond, params)
    return _date_condition(expr, spec.kind, cond, params, zone=zone, inclusive=inclusive)


def _where(
    table: GridTable, filter_model: Any, params: _Params, *, tz: str, in_range_inclusive: bool
) -> str:
    clauses = [f"({table.base_where})"] if table.base_where else []
    if filter_model not in (None, "") and filter_model != {}:
        if not isinstance(filter_model, Mapping):
            raise GridRequestError("filterModel must be an object")
        zone = zone_info(tz)
        for col_id, cond in filter_model.items():
            spec = table.spec(col_id)
            clauses.append(_condition(spec, col_id, cond, params, zone=zone, inclusive=in_range_inclusive))
    return (" WHERE " + " AND ".join(clauses)) if clauses else ""


def _order_by(table: GridTable, sort_model: Any) -> str:
    keys = parse_sort_model(table, sort_model)
    seen = {k.col_id for k in keys}
    keys += [SortKey(k, False) for k in table.key if k not in seen]
    if not keys:
        return ""
    return " ORDER BY " + ", ".join(
        f"{table.columns[k.col_id].sql_expr}{' DESC' if k.descending else ' ASC'}" for k in keys
    )


def _select_list(table: GridTable, columns: Sequence[str] | None = None) -> str:
    ids = list(table.columns) if columns is None else list(columns)
    if not ids:
        raise GridRequestError("no columns selected")
    return ", ".join(f"{table.spec(col_id).sql_expr} AS {quote_ident(col_id)}" for col_id in ids)


def _row_index(request: Mapping[str, Any], name: str, default: int | None) -> int:
    value = request.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise GridRequestError(f"{name} must be a non-negative integer")
    if value > MAX_ROW_INDEX:
        raise GridRequestError(f"{name} must be at most {MAX_ROW_INDEX:,}")
    return value


def _paging(request: Mapping[str, Any], max_page_rows: int) -> tuple[int, int]:
    start, end = _row_index(request, "startRow", 0), _row_index(request, "endRow", None)
    if end <= start:
        raise GridRequestError("endRow must be greater than startRow")
    if end - start > max_page_rows:
        raise GridRequestError(f"a block may hold at most {max_page_rows} rows")
    return start, end


# --- public builders -----------------------------------------------------------------------------


def page_query(
    table: GridTable,
    request: Mapping[str, Any],
    *,
    tz: str = DEFAULT_TZ,
    in_range_inclusive: bool = False,
    max_page_rows: int = MAX_PAGE_ROWS,
) -> GridQuery:
    """The rows ``[startRow, endRow)`` of the filtered, sorted table (all whitelisted columns)."""
    if not isinstance(request, Mapping):
        raise GridRequestError("getRowsRequest must be an object")
    start, end = _paging(request, max_page_rows)
    params = _Params(table.base_params)
    where = _where(table, request.get("filterModel"), params, tz=tz, in_range_inclusive=in_range_inclusive)
    order = _order_by(table, request.get("sortModel"))
    limit, offset = params.add(end - start), params.add(start)
    sql = f"SELECT {_select_list(table)} FROM {table.name}{where}{order} LIMIT {limit} OFFSET {offset}"
    return GridQuery(sql, params.values)


def count_query(
    table: GridTable, filter_model: Any, *, tz: str = DEFAULT_TZ, in_range_inclusive: bool = False
) -> GridQuery:
    """One row, column ``n``: how many rows pass the filter."""
    params = _Params(table.base_params)
    where = _where(table, filter_model, params, tz=tz, in_range_inclusive=in_range_inclusive)
    return GridQuery(f"SELECT count(*) AS n FROM {table.name}{where}", params.values)


def export_query(
    table: GridTable,
    sort_model: Any,
    filter_model: Any,
    *,
    tz: str = DEFAULT_TZ,
    in_range_inclusive: bool = False,
    columns: Sequence[str] | None = None,
) -> GridQuery:
    """Every filtered row, in the grid's order (stream it: it is unbounded).

    ``columns``: the ``colId``s to select, in order (default: all whitelisted columns).
    """
    params = _Params(table.base_params)
    where = _where(table, filter_model, params, tz=tz, in_range_inclusive=in_range_inclusive)
    order = _order_by(table, sort_model)
    return GridQuery(f"SELECT {_select_list(table, columns)} FROM {table.name}{where}{order}", params.values)


# --- the standard tables -------------------------------------------------------------------------


class GridKind(StrEnum):
    CLOSED_TRADES = "closed_trades"
    OPEN_POSITIONS = "open_positions"
    EQUITY = "equity"
    ACTIVITIES = "activities"


_T, _N, _TS, _B = ColumnKind.TEXT, ColumnKind.NUMBER, ColumnKind.TIMESTAMP, ColumnKind.BOOLEAN


def _cols(*items: tuple[str, ColumnKind] | tuple[str, ColumnKind, str]) -> dict[str, ColumnSpec]:
    """Whitelist entries; ``uuid`` as text (text filter); ``instrument``: + class/contract (instrument_cols)."""
    out: dict[str, ColumnSpec] = {}
    for name, kind, *how in items:
        out[name] = ColumnSpec(f"{quote_ident(name)}::text" if how == ["uuid"] else quote_ident(name), kind)
        if how == ["instrument"]:
            out |= {k: ColumnSpec(e, ColumnKind(c)) for k, (e, c) in instrument_specs(name).items()}
    return out


_CLOSED_COLUMNS = _cols(
    ("trade_id", _T), ("symbol", _T, "instrument"), ("direction", _T), ("qty", _N), ("entry_time", _TS), ("exit_time", _TS),
    ("entry_price", _N), ("exit_price", _N), ("gross_pl", _N), ("fees", _N), ("net_pl", _N), ("return_pct", _N),
    ("holding_s", _N), ("exit_reason", _T), ("entry_order_id", _T, "uuid"), ("exit_order_id", _T, "uuid"),
    ("is_orphan", _B), ("mae", _N), ("mfe", _N), ("created_at", _TS), ("provisional_fills", _N),
)
_OPEN_COLUMNS = _cols(
    ("symbol", _T, "instrument"), ("side", _T), ("qty", _N), ("avg_entry_price", _N), ("cost_basis", _N), ("entry_time", _TS),
    ("mark_price", _N), ("mark_ts", _TS), ("price_source", _T), ("price_stale", _B), ("market_value", _N),
    ("unrealized_pl", _N), ("unrealized_plpc", _N), ("prev_close", _N), ("day_change", _N), ("day_change_pct", _N),
    ("exposure", _N), ("weight", _N), ("entry_order_id", _T, "uuid"), ("stop_price", _N), ("take_profit_price", _N),
    ("broker_qty", _N), ("qty_mismatch", _B), ("updated_at", _TS), ("provisional_fills", _N),
)
_EQUITY_COLUMNS = _cols(
    ("ts", _TS), ("equity", _N), ("cash", _N), ("long_market_value", _N), ("short_market_value", _N),
    ("realized_pl", _N), ("unrealized_pl", _N), ("net_deposits", _N), ("drawdown", _N), ("source", _T),
)
_ACTIVITY_COLUMNS = _cols(
    ("ts", _TS), ("activity_id", _T), ("activity_type", _T), ("fill_type", _T), ("symbol", _T), ("side", _T),
    ("qty", _N), ("price", _N), ("net_amount", _N), ("leaves_qty", _N), ("cum_qty", _N), ("order_id", _T, "uuid"),
    ("order_status", _T), ("description", _T), ("seq", _N),
)


def grid_table(kind: GridKind | str, slug: str, account_schema: str = "account_activities") -> GridTable:
    """The whitelisted :class:`GridTable` of one destination's grid. Raises ``ValueError`` on a bad slug/kind."""
    kind = GridKind(kind)
    if kind is GridKind.CLOSED_TRADES:
        return GridTable(f"public.{quote_ident(closed_trades_table(slug))}", _CLOSED_COLUMNS, ("trade_id",))
    if kind is GridKind.OPEN_POSITIONS:
        return GridTable(f"public.{quote_ident(open_trades_table(slug))}", _OPEN_COLUMNS, ("symbol",))
    if kind is GridKind.EQUITY:
        return GridTable(f"public.{quote_ident(equity_table(slug))}", _EQUITY_COLUMNS, ("ts",))
    closed_trades_table(slug)  # validates the slug
    return GridTable(
        f"{quote_ident(account_schema)}.activities",
        _ACTIVITY_COLUMNS,
        ("ts", "activity_id"),
        base_where="destination = :dest",
        base_params={"dest": slug},
    )
