"""dashboard.grid_sql against a real PostgreSQL: every filter type and operator, sorting, paging,
rejection of anything outside the whitelist, and injection attempts that stay harmless."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from core.db import connect, migrate
from core.destinations import Destination
from core.dsn import parse_dsn
from core.settings import Settings
from dashboard.grid_sql import (
    ColumnKind,
    ColumnSpec,
    GridKind,
    GridRequestError,
    GridTable,
    count_query,
    export_query,
    grid_table,
    page_query,
)

SLUG = "alpha"
ENTRY_ORDER = uuid.UUID("11111111-2222-3333-4444-555555555555")

# trade_id, symbol, direction, qty, exit_time (UTC), net_pl, return_pct, exit_reason, is_orphan, entry_order_id
ROWS: list[tuple[Any, ...]] = [
    ("t1", "AAPL", "long", 10, datetime(2024, 3, 1, 14, 30, tzinfo=UTC), "100.5", 0.01, "take_profit", False,
     ENTRY_ORDER),
    # 23:30 on 1 March in New York, 2 March in UTC
    ("t2", "MSFT", "short", 5, datetime(2024, 3, 2, 4, 30, tzinfo=UTC), "-20", -0.02, "stop_loss", False, None),
    ("t3", "aapl_x", "long", 1, datetime(2024, 3, 2, 5, 30, tzinfo=UTC), "0", None, "manual", True, None),
    ("t4", "100%FUN", "long", 2, datetime(2024, 3, 3, 15, 0, tzinfo=UTC), "55.25", 0.05, "", False, None),
    ("t5", "XAAPL", "short", 3, datetime(2024, 3, 4, 15, 0, tzinfo=UTC), "-1", -0.001, "take_profit", False, None),
    ("t6", "GOOG", "long", 7, datetime(2024, 2, 28, 15, 0, tzinfo=UTC), "1000", 0.1, "manual", False, None),
]
ALL = {r[0] for r in ROWS}


def make_dest(slug: str = SLUG) -> Destination:
    return Destination(name=slug, slug=slug, key_id="PKTESTKEY0001", secret_key="s3cr3t-value",
                       base_url="http://127.0.0.1:1")


def insert_closed(conn: Any, slug: str, rows: list[tuple[Any, ...]]) -> None:
    with conn, conn.cursor() as cur:
        for tid, sym, direction, qty, exit_time, net_pl, ret, reason, orphan, entry_order in rows:
            cur.execute(
                f"""INSERT INTO public.closed_trades_{slug}
                    (trade_id, symbol, direction, qty, entry_time, exit_time, entry_price, exit_price, gross_pl,
                     net_pl, return_pct, exit_reason, is_orphan, entry_order_id)
                    VALUES (%s, %s, %s, %s, %s, %s, 1, 1, %s, %s, %s, %s, %s, %s)""",
                (tid, sym, direction, qty, exit_time, exit_time, net_pl, net_pl, ret, reason, orphan,
                 str(entry_order) if entry_order else None),
            )


@pytest.fixture
def engine(settings: Settings, db_dsn: str) -> Iterator[Engine]:
    conn = connect(db_dsn)
    migrate(conn, settings, [make_dest()])
    insert_closed(conn, SLUG, ROWS)
    conn.close()
    eng = sa.create_engine(parse_dsn(db_dsn).sqlalchemy_url())
    yield eng
    eng.dispose()


@pytest.fixture
def table() -> GridTable:
    return grid_table(GridKind.CLOSED_TRADES, SLUG)


def ids(engine: Engine, table: GridTable, filter_model: Any = None, sort_model: Any = None,
        tz: str = "America/New_York", **kwargs: Any) -> list[str]:
    query = export_query(table, sort_model, filter_model, tz=tz, **kwargs)
    with engine.connect() as conn:
        return [row.trade_id for row in conn.execute(sa.text(query.sql), query.params)]


def text_f(type_: str, value: str | None = None) -> dict[str, Any]:
    return {"filterType": "text", "type": type_, "filter": value}


def num_f(type_: str, value: Any = None, to: Any = None) -> dict[str, Any]:
    return {"filterType": "number", "type": type_, "filter": value, "filterTo": to}


def date_f(type_: str, frm: str | None = None, to: str | None = None) -> dict[str, Any]:
    return {"filterType": "date", "type": type_, "dateFrom": frm, "dateTo": to}


FILTER_CASES = [
    # text (case-insensitive; LIKE wildcards in the value are literal)
    ({"symbol": text_f("contains", "aapl")}, {"t1", "t3", "t5"}),
    ({"symbol": text_f("notContains", "aapl")}, {"t2", "t4", "t6"}),
    ({"symbol": text_f("equals", "aapl")}, {"t1"}),
    ({"symbol": text_f("notEqual", "aapl")}, ALL - {"t1"}),
    ({"symbol": text_f("startsWith", "aapl")}, {"t1", "t3"}),
    ({"symbol": text_f("endsWith", "L")}, {"t1", "t5"}),
    ({"symbol": text_f("contains", "%")}, {"t4"}),
    ({"symbol": text_f("contains", "_")}, {"t3"}),
    ({"exit_reason": text_f("blank")}, {"t4"}),
    ({"exit_reason": text_f("notBlank")}, ALL - {"t4"}),
    ({"entry_order_id": text_f("blank")}, ALL - {"t1"}),
    ({"entry_order_id": text_f("notBlank")}, {"t1"}),
    ({"entry_order_id": text_f("startsWith", "11111111-2222")}, {"t1"}),
    ({"entry_order_id": text_f("notContains", "zzz")}, ALL),  # NULL cells pass negative text filters
    # numbers
    ({"net_pl": num_f("equals", 0)}, {"t3"}),
    ({"net_pl": num_f("equals", "100.5")}, {"t1"}),
    ({"net_pl": num_f("notEqual", 0)}, ALL - {"t3"}),
    ({"net_pl": num_f("lessThan", 0)}, {"t2", "t5"}),
    ({"net_pl": num_f("lessThanOrEqual", 0)}, {"t2", "t3", "t5"}),
    ({"net_pl": num_f("greaterThan", 55.25)}, {"t1", "t6"}),
    ({"net_pl": num_f("greaterThanOrEqual", 55.25)}, {"t1", "t4", "t6"}),
    ({"net_pl": num_f("inRange", -1, 100.5)}, {"t3", "t4"}),
    ({"return_pct": num_f("blank")}, {"t3"}),
    ({"return_pct": num_f("notBlank")}, ALL - {"t3"}),
    ({"return_pct": num_f("lessThan", 0)}, {"t2", "t5"}),  # double precision column
    # dates: whole days in America/New_York
    ({"exit_time": date_f("equals", "2024-03-01 00:00:00")}, {"t1", "t2"}),
    ({"exit_time": date_f("notEqual", "2024-03-01")}, {"t3", "t4", "t5", "t6"}),
    ({"exit_time": date_f("lessThan", "2024-03-02 00:00:00")}, {"t1", "t2", "t6"}),
    ({"exit_time": date_f("greaterThan", "2024-03-02 00:00:00")}, {"t4", "t5"}),
    ({"exit_time": date_f("inRange", "2024-03-01", "2024-03-03")}, {"t3"}),
    ({"exit_time": date_f("blank")}, set()),
    ({"exit_time": date_f("notBlank")}, ALL),
    # boolean
    ({"is_orphan": text_f("equals", "true")}, {"t3"}),
    ({"is_orphan": {"filterType": "boolean", "type": "notEqual", "filter": True}}, ALL - {"t3"}),
    # combined conditions, both spellings
    ({"symbol": {"filterType": "text", "operator": "OR",
                 "conditions": [text_f("startsWith", "ms"), text_f("endsWith", "fun")]}}, {"t2", "t4"}),
    ({"symbol": {"filterType": "text", "operator": "AND",
                 "conditions": [text_f("contains", "a"), text_f("notContains", "x")]}}, {"t1"}),
    ({"net_pl": {"filterType": "number", "operator": "OR",
                 "condition1": num_f("lessThan", -10), "condition2": num_f("greaterThan", 500)}}, {"t2", "t6"}),
    # several columns are ANDed
    ({"symbol": text_f("contains", "a"), "net_pl": num_f("greaterThan", 0)}, {"t1"}),
    ({}, ALL),
    (None, ALL),
]


@pytest.mark.parametrize(("filter_model", "expected"), FILTER_CASES)
def test_filter(engine: Engine, table: GridTable, filter_model: Any, expected: set[str]) -> None:
    assert set(ids(engine, table, filter_model)) == expected


def test_date_filter_uses_the_display_time_zone(engine: Engine, table: GridTable) -> None:
    day = {"exit_time": date_f("equals", "2024-03-01")}
    assert set(ids(engine, table, day, tz="UTC")) == {"t1"}
    assert set(ids(engine, table, day, tz="America/New_York")) == {"t1", "t2"}
    next_day = {"exit_time": date_f("equals", "2024-03-02")}
    assert set(ids(engine, table, next_day, tz="America/New_York")) == {"t3"}
    assert set(ids(engine, table, next_day, tz="Asia/Tokyo")) == {"t2", "t3"}


def test_in_range_inclusive_option(engine: Engine, table: GridTable) -> None:
    dates = {"exit_time": date_f("inRange", "2024-03-01", "2024-03-03")}
    nums = {"net_pl": num_f("inRange", -1, 100.5)}
    assert set(ids(engine, table, dates, in_range_inclusive=True)) == {"t1", "t2", "t3", "t4"}
    assert set(ids(engine, table, nums, in_range_inclusive=True)) == {"t1", "t3", "t4", "t5"}


def test_multi_sort_then_key_tie_breaker(engine: Engine, table: GridTable) -> None:
    by_direction_pl = [{"colId": "direction", "sort": "asc"}, {"colId": "net_pl", "sort": "desc"}]
    assert ids(engine, table, sort_model=by_direction_pl) == ["t6", "t1", "t4", "t3", "t5", "t2"]
    assert ids(engine, table, sort_model=[{"colId": "direction", "sort": "desc"}]) == \
        ["t2", "t5", "t1", "t3", "t4", "t6"]
    assert ids(engine, table) == ["t1", "t2", "t3", "t4", "t5", "t6"]


def test_nulls_sort_last_ascending(engine: Engine, table: GridTable) -> None:
    assert ids(engine, table, sort_model=[{"colId": "return_pct", "sort": "asc"}]) == \
        ["t2", "t5", "t1", "t4", "t6", "t3"]


def test_page_and_count(engine: Engine, table: GridTable) -> None:
    request = {"startRow": 2, "endRow": 4, "sortModel": [{"colId": "net_pl", "sort": "desc"}],
               "filterModel": {"symbol": text_f("notEqual", "goog")}}
    page = page_query(table, request)
    count = count_query(table, request["filterModel"])
    with engine.connect() as conn:
        rows = conn.execute(page.clause()).mappings().all()
        total = conn.execute(sa.text(count.sql), count.params).scalar_one()
    # order without GOOG: t1 100.5, t4 55.25, t3 0, t5 -1, t2 -20
    assert [r["trade_id"] for r in rows] == ["t3", "t5"]
    assert total == 5
    assert set(rows[0].keys()) == set(table.columns)
    assert rows[0]["net_pl"] == Decimal("0")


def test_paging_with_ties_is_stable_and_complete(settings: Settings, db_dsn: str, engine: Engine,
                                                 table: GridTable) -> None:
    conn = connect(db_dsn)
    same = datetime(2024, 5, 1, 15, tzinfo=UTC)
    insert_closed(conn, SLUG, [(f"z{i:02d}", "TIE", "long", 1, same, "5", 0.0, "manual", False, None)
                               for i in range(23)])
    conn.close()
    sort = [{"colId": "symbol", "sort": "asc"}]
    seen: list[str] = []
    with engine.connect() as c:
        for start in range(0, 29, 7):
            q = page_query(table, {"startRow": start, "endRow": start + 7, "sortModel": sort, "filterModel": {}})
            seen += [r.trade_id for r in c.execute(q.clause())]
    assert len(seen) == 29
    assert len(set(seen)) == 29
    assert seen == ids(engine, table, sort_model=sort)


def test_activities_grid_is_scoped_to_its_destination(settings: Settings, db_dsn: str, engine: Engine) -> None:
    conn = connect(db_dsn)
    with conn, conn.cursor() as cur:
        for dest, aid in (("alpha", "a1"), ("alpha", "a2"), ("beta", "b1")):
            cur.execute(
                """INSERT INTO account_activities.activities (destination, activity_id, ts, activity_type, symbol, raw)
                   VALUES (%s, %s, now(), 'FILL', 'AAPL', '{}')""", (dest, aid))
    conn.close()
    table = grid_table("activities", "alpha")
    q = export_query(table, [{"colId": "activity_id", "sort": "desc"}], {"symbol": text_f("equals", "aapl")})
    with engine.connect() as c:
        got = [r.activity_id for r in c.execute(q.clause())]
    assert got == ["a2", "a1"]


BAD_REQUESTS = [
    ({"startRow": 0, "endRow": 10, "sortModel": [{"colId": "nope", "sort": "asc"}]}, "unknown column"),
    ({"startRow": 0, "endRow": 10, "sortModel": [{"colId": "symbol", "sort": "sideways"}]}, "sort direction"),
    ({"startRow": 0, "endRow": 10, "sortModel": [{"colId": "fills", "sort": "asc"}]}, "unknown column"),
    ({"startRow": 0, "endRow": 10, "filterModel": {"nope": text_f("equals", "x")}}, "unknown column"),
    ({"startRow": 0, "endRow": 10, "filterModel": {"symbol": text_f("regex", "x")}}, "unknown text filter operator"),
    ({"startRow": 0, "endRow": 10, "filterModel": {"net_pl": num_f("contains", 1)}}, "unknown number filter"),
    ({"startRow": 0, "endRow": 10, "filterModel": {"exit_time": date_f("before", "2024-01-01")}}, "unknown date"),
    ({"startRow": 0, "endRow": 10, "filterModel": {"net_pl": text_f("contains", "1")}}, "not allowed"),
    ({"startRow": 0, "endRow": 10, "filterModel": {"symbol": {"filterType": "set", "values": ["A"]}}},
     "not allowed"),
    ({"startRow": 0, "endRow": 10, "filterModel": {"net_pl": num_f("equals", "1; DROP TABLE x")}}, "bad number"),
    ({"startRow": 0, "endRow": 10, "filterModel": {"net_pl": num_f("equals", "NaN")}}, "finite"),
    ({"startRow": 0, "endRow": 10, "filterModel": {"exit_time": date_f("equals", "yesterday")}}, "bad date"),
    ({"startRow": 0, "endRow": 10, "filterModel": {"exit_time": date_f("equals", "2024-02-30")}}, "bad date"),
    ({"startRow": 0, "endRow": 10, "filterModel": {"is_orphan": text_f("equals", "maybe")}}, "bad boolean"),
    ({"startRow": 0, "endRow": 10, "filterModel": {"symbol": {"operator": "XOR", "conditions": [
        text_f("equals", "a")]}}}, "combining operator"),
    ({"startRow": 0, "endRow": 10, "filterModel": {"symbol": {"operator": "AND", "conditions": [
        {"operator": "OR", "conditions": [text_f("equals", "a")]}]}}}, "nested"),
    ({"startRow": 0, "endRow": 10, "filterModel": {"symbol": text_f("contains", "x" * 501)}}, "longer"),
    ({"startRow": 0, "endRow": 10, "filterModel": ["symbol"]}, "filterModel must be an object"),
    ({"startRow": 5, "endRow": 5}, "greater than"),
    ({"startRow": -1, "endRow": 5}, "non-negative"),
    ({"startRow": "0", "endRow": 5}, "non-negative"),
    ({"startRow": 0, "endRow": 100_001}, "at most"),
]


@pytest.mark.parametrize(("request_", "message"), BAD_REQUESTS)
def test_bad_requests_raise_clear_errors(table: GridTable, request_: dict[str, Any], message: str) -> None:
    with pytest.raises(GridRequestError, match=message):
        page_query(table, request_)


def test_unknown_time_zone_is_rejected(table: GridTable) -> None:
    with pytest.raises(GridRequestError, match="time zone"):
        export_query(table, [], {"exit_time": date_f("equals", "2024-01-01")}, tz="Mars/Olympus")


INJECTIONS = [
    "'; DROP TABLE public.closed_trades_alpha; --",
    "x' OR '1'='1",
    "\\'; SELECT pg_sleep(10); --",
    ":g_0 OR 1=1",
    "%' OR 1=1 --",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_in_values_is_harmless(engine: Engine, table: GridTable, payload: str) -> None:
    query = export_query(table, [], {"symbol": text_f("contains", payload), "exit_reason": text_f("equals", payload)})
    assert payload not in query.sql
    assert ids(engine, table, {"symbol": text_f("contains", payload)}) == []
    assert ids(engine, table, {"symbol": text_f("notEqual", payload)}) == sorted(ALL)


@pytest.mark.parametrize("col_id", ['symbol"; DROP TABLE x; --', "symbol desc", "1", "SYMBOL", "pg_sleep(1)"])
def test_injection_in_identifiers_is_rejected(table: GridTable, col_id: str) -> None:
    with pytest.raises(GridRequestError, match="unknown column"):
        export_query(table, [{"colId": col_id, "sort": "asc"}], {})
    with pytest.raises(GridRequestError, match="unknown column"):
        export_query(table, [], {col_id: text_f("equals", "x")})


def test_table_survives_injection_attempts(engine: Engine, table: GridTable) -> None:
    for payload in INJECTIONS:
        ids(engine, table, {"symbol": text_f("equals", payload)})
    assert len(ids(engine, table)) == len(ROWS)


def test_whitelist_validates_identifiers() -> None:
    with pytest.raises(ValueError, match="refusing identifier"):
        GridTable('public."t"', {'bad"id': ColumnSpec.column("x", ColumnKind.TEXT)}, ())
    with pytest.raises(ValueError, match="key column"):
        GridTable('public."t"', {"x": ColumnSpec.column("x", ColumnKind.TEXT)}, ("y",))
    with pytest.raises(ValueError, match="invalid slug"):
        grid_table("closed_trades", "Robert'); DROP TABLE")
