"""dashboard.export: CSV/XLSX equal the database rows under the grid's sort and filter, formula
injection is neutralised while numbers stay numbers, large exports stream, tearsheet and report."""

from __future__ import annotations

import csv
import io
import json
import re
import socket
import tracemalloc
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import flask
import openpyxl
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from core.db import connect, migrate
from core.dsn import parse_dsn
from core.settings import Settings
from dashboard import export_formats
from dashboard.export import export_url, neutralise, register_export
from dashboard.kpis import kpi_values
from dashboard.queries import ReadModel
from tests.dashboard.test_grid_sql import ROWS, insert_closed, make_dest

NY = ZoneInfo("America/New_York")
NASTY = [
    # trade_id, symbol, exit_reason
    ("n1", '=HYPERLINK("http://evil","x")', "=1+1"),
    ("n2", "+SUM(A1)", "-2+3"),
    ("n3", "@cmd", "\tTAB"),
    ("n4", "\rCR", "ok"),
]


@pytest.fixture
def engine(settings: Settings, db_dsn: str) -> Iterator[Engine]:
    conn = connect(db_dsn)
    migrate(conn, settings, [make_dest()])
    insert_closed(conn, "alpha", ROWS)
    base = datetime(2024, 3, 5, 15, tzinfo=UTC)
    insert_closed(conn, "alpha", [(tid, sym, "long", 1, base, "-3", 0.0, reason, False, None)
                                  for tid, sym, reason in NASTY])
    conn.close()
    eng = sa.create_engine(parse_dsn(db_dsn).sqlalchemy_url())
    yield eng
    eng.dispose()


@pytest.fixture
def export_app(engine: Engine) -> flask.Flask:
    return flask.Flask("export-test")


@pytest.fixture
def model(export_app: flask.Flask, settings: Settings, db_dsn: str) -> Iterator[ReadModel]:
    read_model = ReadModel(settings, db_dsn, app=export_app)
    yield read_model
    read_model.dispose()


@pytest.fixture
def client(export_app: flask.Flask, model: ReadModel) -> flask.testing.FlaskClient:
    register_export(export_app, model)
    return export_app.test_client()


SORT = [{"colId": "net_pl", "sort": "desc"}]
FILTER = {"net_pl": {"filterType": "number", "type": "greaterThan", "filter": -5},
          "symbol": {"filterType": "text", "type": "notContains", "filter": "goog"}}


def expected_rows(engine: Engine) -> list[tuple[Any, ...]]:
    """The same selection written by hand in SQL (independent of grid_sql)."""
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT trade_id, symbol, net_pl, exit_time, return_pct FROM public.closed_trades_alpha "
            "WHERE net_pl > -5 AND symbol NOT ILIKE '%goog%' ORDER BY net_pl DESC, trade_id")).all()


def test_export_url_round_trips_the_grid_state() -> None:
    url = export_url("alpha", "closed_trades", "xlsx", sort_model=SORT, filter_model=FILTER, tz="UTC",
                     columns=["trade_id", "net_pl"])
    path, _, query = url.partition("?")
    args = dict(x.split("=", 1) for x in query.split("&"))
    assert path == "/export/alpha/closed_trades.xlsx"
    assert json.loads(flask.wrappers.Request.from_values(query_string=query).args["filter"]) == FILTER
    assert args["tz"] == "UTC"
    with pytest.raises(ValueError, match="unknown export"):
        export_url("alpha", "passwords", "csv")


def test_csv_equals_database_rows_under_sort_and_filter(client: flask.testing.FlaskClient, engine: Engine) -> None:
    response = client.get(export_url("alpha", "closed_trades", "csv", sort_model=SORT, filter_model=FILTER))
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    expected = expected_rows(engine)
    assert [r["trade_id"] for r in table] == [e.trade_id for e in expected]
    assert [Decimal(r["net_pl"]) for r in table] == [e.net_pl for e in expected]
    assert [r["exit_time (America/New_York)"] for r in table] == [
        e.exit_time.astimezone(NY).strftime("%Y-%m-%d %H:%M:%S") for e in expected]
    assert [r["return_pct"] for r in table] == ["" if e.return_pct is None else repr(e.return_pct) for e in expected]
    assert "fills" not in table[0]


def test_xlsx_equals_database_rows_under_sort_and_filter(client: flask.testing.FlaskClient, engine: Engine) -> None:
    response = client.get(export_url("alpha", "closed_trades", "xlsx", sort_model=SORT, filter_model=FILTER))
    assert response.status_code == 200
    book = openpyxl.load_workbook(io.BytesIO(response.get_data()))
    rows = list(book["closed_trades"].iter_rows(values_only=True))
    header, data = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    expected = expected_rows(engine)
    assert [r[col["trade_id"]] for r in data] == [e.trade_id for e in expected]
    assert [r[col["net_pl"]] for r in data] == [float(e.net_pl) for e in expected]
    assert all(isinstance(r[col["net_pl"]], int | float) for r in data)
    assert [r[col["exit_time (America/New_York)"]] for r in data] == [
        e.exit_time.astimezone(NY).replace(tzinfo=None) for e in expected]
    about = dict(book["export"].iter_rows(values_only=True))
    assert about["time zone"] == "America/New_York"
    assert json.loads(about["filter"]) == FILTER


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_formula_injection_neutralised_and_numbers_stay_numbers(client: flask.testing.FlaskClient, fmt: str) -> None:
    sort = [{"colId": "trade_id", "sort": "asc"}]
    filt = {"trade_id": {"filterType": "text", "type": "startsWith", "filter": "n"}}
    response = client.get(export_url("alpha", "closed_trades", fmt, sort_model=sort, filter_model=filt,
                                     columns=["trade_id", "symbol", "exit_reason", "net_pl", "qty"]))
    assert response.status_code == 200
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(response.get_data(as_text=True), newline="")))[1:]
    else:
        book = openpyxl.load_workbook(io.BytesIO(response.get_data()))
        sheet = book["closed_trades"]
        # xlsx stores a CR as the escape _x000D_ (ECMA-376), which Excel shows as CR
        rows = [tuple(v.replace("_x000D_", "\r") if isinstance(v, str) else v for v in r)
                for r in sheet.iter_rows(min_row=2, values_only=True)]
        assert all(c.data_type == "s" for c in sheet["B"][1:])  # text, never formulas
        assert all(c.data_type == "n" for c in sheet["D"][1:])
    assert [(r[1], r[2]) for r in rows] == [("'" + sym, "'" + reason if reason != "ok" else reason)
                                            for _, sym, reason in NASTY]
    net = [r[3] for r in rows]
    assert net == (["-3"] * 4 if fmt == "csv" else [-3] * 4)


def test_neutralise() -> None:
    assert [neutralise(s) for s in ["=1", "+1", "-1", "@x", "\tx", "\rx", "a=1", "", "1"]] == \
        ["'=1", "'+1", "'-1", "'@x", "'\tx", "'\rx", "a=1", "", "1"]


def test_columns_and_time_zone_parameters(client: flask.testing.FlaskClient, engine: Engine) -> None:
    response = client.get(export_url("alpha", "closed_trades", "csv", columns=["exit_time", "trade_id"],
                                     tz="Europe/London", filter_model={"trade_id": {
                                         "filterType": "text", "type": "equals", "filter": "t2"}}))
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows == [["exit_time (Europe/London)", "trade_id"], ["2024-03-02 04:30:00", "t2"]]


@pytest.mark.parametrize(("url", "status", "message"), [
    ("/export/nobody/closed_trades.csv", 404, "unknown destination"),
    ("/export/ALPHA/closed_trades.csv", 404, "unknown destination"),
    ("/export/alpha/passwords.csv", 404, "unknown export"),
    ("/export/alpha/closed_trades.pdf", 404, "unknown export"),
    ("/export/alpha/closed_trades.csv?filter={oops", 400, "not valid JSON"),
    ('/export/alpha/closed_trades.csv?sort=[{"colId":"x;drop","sort":"asc"}]', 400, "unknown column"),
    ("/export/alpha/closed_trades.xlsx?columns=trade_id,lots", 400, "unknown column"),
    ("/export/alpha/closed_trades.csv?tz=Nowhere/City", 400, "unknown time zone"),
])
def test_bad_requests(client: flask.testing.FlaskClient, url: str, status: int, message: str) -> None:
    response = client.get(url)
    assert response.status_code == status
    assert message in response.get_data(as_text=True)


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_metrics_sheet_holds_the_figures_the_page_shows(client: flask.testing.FlaskClient, model: ReadModel,
                                                         db_dsn: str, fmt: str) -> None:
    _insert_equity(db_dsn)
    response = client.get(f"/export/alpha/metrics.{fmt}")
    assert response.status_code == 200
    with client.application.test_request_context("/"):
        expected = kpi_values(model, "alpha", "America/New_York")
    if fmt == "csv":
        got: dict[str, Any] = dict(csv.reader(io.StringIO(response.get_data(as_text=True))))
        assert {k: (float(v) if v else None) for k, v in got.items() if k != "metric"} == pytest.approx(expected)
    else:
        got = dict(openpyxl.load_workbook(io.BytesIO(response.get_data()))["metrics"].iter_rows(values_only=True))
        assert {k: v for k, v in got.items() if k != "metric"} == pytest.approx(expected)
    assert expected["sharpe"] is not None
    assert expected["trades"] == len(ROWS) + len(NASTY)


def _insert_many(db_dsn: str, n: int) -> None:
    conn = connect(db_dsn)
    with conn, conn.cursor() as cur:
        cur.execute(
            """INSERT INTO public.closed_trades_alpha (trade_id, symbol, direction, qty, entry_time, exit_time,
                   entry_price, exit_price, gross_pl, net_pl, exit_reason)
               SELECT 'b' || lpad(i::text, 7, '0'), 'SYM' || (i %% 50), 'long', 1,
                      timestamptz '2024-01-01' + i * interval '1 minute',
                      timestamptz '2024-01-01' + i * interval '1 minute' + interval '30 seconds',
                      100, 101, 1, (i %% 1000) - 500, 'manual'
               FROM generate_series(1, %s) i""", (n,))
    conn.close()


def test_large_csv_export_streams_from_a_server_side_cursor(client: flask.testing.FlaskClient, db_dsn: str,
                                                           engine: Engine) -> None:
    n = 200_000
    _insert_many(db_dsn, n)
    filt = {"trade_id": {"filterType": "text", "type": "startsWith", "filter": "b"}}
    # Three columns keep the test quick (~7 MB of CSV).
    response = client.get(export_url("alpha", "closed_trades", "csv", filter_model=filt,
                                     columns=["trade_id", "exit_time", "net_pl"],
                                     sort_model=[{"colId": "trade_id", "sort": "desc"}]), buffered=False)
    assert response.is_streamed
    chunks = iter(response.response)
    try:
        first = next(chunks)
        # Mid-stream, the export's connection is parked on a server-side cursor, not holding all rows.
        with engine.connect() as conn:
            queries = conn.execute(sa.text(
                "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()")).scalars().all()
        assert any(q.lstrip().upper().startswith(("FETCH", "DECLARE")) for q in queries), queries
        sizes = [len(first)]
        lines = first.count(b"\n")
        # Heap use over a window of ~2.5 MB of output (tracemalloc is slow, so not over all of it).
        tracemalloc.start()
        try:
            for _ in range(40):
                chunk = next(chunks)
                sizes.append(len(chunk))
                lines += chunk.count(b"\n")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        for chunk in chunks:
            sizes.append(len(chunk))
            lines += chunk.count(b"\n")
    finally:
        response.close()
    assert lines == n + 1
    assert len(sizes) > 50
    assert max(sizes) < 2 * export_formats.CSV_CHUNK_BYTES
    assert first.startswith(b"trade_id,exit_time (America/New_York),net_pl\r\n")
    assert b"b0200000" in first  # descending: the last id comes first
    assert peak < 1024 * 1024, peak


def test_xlsx_is_written_in_constant_memory_mode_and_continues_past_the_row_limit(
        client: flask.testing.FlaskClient, db_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _insert_many(db_dsn, 2_000)
    monkeypatch.setattr(export_formats, "XLSX_MAX_DATA_ROWS", 1_500)
    filt = {"trade_id": {"filterType": "text", "type": "startsWith", "filter": "b"}}
    response = client.get(export_url("alpha", "closed_trades", "xlsx", filter_model=filt,
                                     sort_model=[{"colId": "trade_id", "sort": "asc"}]))
    data = response.get_data()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        sheet_xml = archive.read("xl/worksheets/sheet1.xml")
    # constant_memory mode writes strings inline, row by row, instead of a shared-strings table
    assert "xl/sharedStrings.xml" not in names
    assert b't="inlineStr"' in sheet_xml
    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    assert book.sheetnames == ["closed_trades", "closed_trades (2)", "export"]
    first = list(book["closed_trades"].iter_rows(values_only=True))
    second = list(book["closed_trades (2)"].iter_rows(values_only=True))
    assert first[0] == second[0]
    assert len(first) - 1 == 1_500
    assert len(second) - 1 == 500
    assert first[1][0] == "b0000001"
    assert second[-1][0] == "b0002000"


# --- tearsheet and report ------------------------------------------------------------------------


def _insert_equity(db_dsn: str) -> None:
    """40 trading days, 3 points a day; a 500 deposit on day 10 that is not a return."""
    conn = connect(db_dsn)
    with conn, conn.cursor() as cur:
        equity, deposits = Decimal("10000"), Decimal("0")
        day = datetime(2024, 1, 2, 15, tzinfo=UTC)
        for d in range(40):
            for k in range(3):
                if d == 10 and k == 1:
                    equity += 500
                    deposits += 500
                equity += Decimal(d % 7 - 3) * 5
                cur.execute("INSERT INTO public.equity_full_alpha (ts, equity, net_deposits) VALUES (%s, %s, %s)",
                            (day + timedelta(hours=2 * k), equity, deposits))
            day += timedelta(days=1)
    conn.close()


def test_report_shows_the_pages_sharpe_and_no_second_one(client: flask.testing.FlaskClient, model: ReadModel,
                                                          db_dsn: str) -> None:
    _insert_equity(db_dsn)
    page = client.get("/export/alpha/report.html").get_data(as_text=True)
    with client.application.test_request_context("/"):
        expected = kpi_values(model, "alpha", "America/New_York")
    shown = dict(re.findall(r"<tr><th>([a-z_]+)</th><td>([^<]*)</td></tr>", page))
    assert shown["sharpe"] == f"{expected['sharpe']:,.4f}"
    assert shown["max_drawdown"] == f"{expected['max_drawdown']:,.4f}"
    assert "volatility_ann" not in shown  # the old second metrics path's name for it


def test_tearsheet_is_generated_without_network(client: flask.testing.FlaskClient, db_dsn: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _insert_equity(db_dsn)
    attempts: list[Any] = []
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            attempts.append(address)
            raise OSError("network disabled in this test")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    response = client.get("/export/alpha/tearsheet.html")
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    page = response.get_data(as_text=True)
    assert attempts == []
    assert "alpha tearsheet" in page
    assert page.count("<svg") >= 5
    assert "qtpylib.io" not in page
    assert "<script" not in page.lower()


def test_tearsheet_without_history_explains(client: flask.testing.FlaskClient) -> None:
    response = client.get("/export/alpha/tearsheet.html")
    assert response.status_code == 404
    assert "equity history" in response.get_data(as_text=True)


def test_static_report(client: flask.testing.FlaskClient, db_dsn: str) -> None:
    _insert_equity(db_dsn)
    response = client.get("/export/alpha/report.html?tz=UTC")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "<script" not in page.lower()
    assert "src=" not in page
    assert "<polyline" in page
    assert "Monthly returns" in page
    assert "<th>sharpe</th>" in page


@pytest.mark.parametrize(("kind", "first_header"), [
    ("open_positions", "symbol"), ("equity", "ts (UTC)"), ("activities", "ts (UTC)"),
])
def test_every_grid_kind_exports(client: flask.testing.FlaskClient, db_dsn: str, kind: str,
                                 first_header: str) -> None:
    conn = connect(db_dsn)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO public.equity_full_alpha (ts, equity) VALUES ('2024-01-02 15:00Z', 10000)")
        cur.execute("""INSERT INTO public.open_trades_alpha (symbol, side, qty, avg_entry_price, cost_basis, entry_time)
                       VALUES ('@AAPL', 'long', 3, 100, 300, '2024-01-02 15:00Z')""")
        for dest in ("alpha", "beta"):
            cur.execute("""INSERT INTO account_activities.activities (destination, activity_id, ts, activity_type, raw)
                           VALUES (%s, 'x1', '2024-01-02 15:00Z', 'FILL', '{}')""", (dest,))
    conn.close()
    response = client.get(f"/export/alpha/{kind}.csv?tz=UTC")
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert response.status_code == 200
    assert rows[0][0] == first_header
    assert len(rows) == 2  # header + this destination's one row
    assert rows[1][0] in ("'@AAPL", "2024-01-02 15:00:00")
