"""The read side against a real PostgreSQL: versions, memoisation, grid blocks, equity windows, caches."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import redis

from core.db import connect
from core.schema import quote_ident
from dashboard.queries import MAX_POINTS, ReadModel, cache_config
from tests.dashboard.conftest import Seeded
from tests.dashboard.seed import insert_open_position, simulate_fill


@pytest.fixture
def model(seeded: Seeded) -> ReadModel:
    return ReadModel(seeded.settings, seeded.dsn)


def _scalar(dsn: str, sql: str) -> object:
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql)
            row = cur.fetchone()
            return row[0] if row else None
    finally:
        conn.close()


def test_registry_and_versions(model: ReadModel, seeded: Seeded) -> None:
    dests = model.destinations()
    assert [d.slug for d in dests] == sorted(seeded.slugs)
    assert all(d.masked_key and "seed-secret" not in d.masked_key for d in dests)
    versions = model.versions()
    assert set(versions) == set(seeded.slugs)
    assert versions["alpha_paper"].pos == 1


def test_unmigrated_database_reads_as_empty(db_dsn: str, settings) -> None:
    model = ReadModel(settings, db_dsn)
    assert model.destinations() == []
    assert model.versions() == {}
    assert model.heartbeats() == []


def test_open_positions_are_memoised_per_version(model: ReadModel, seeded: Seeded) -> None:
    slug = "alpha_paper"
    before = model.open_positions(slug)
    assert {r["symbol"] for r in before} == {"AAPL", "MSFT", "NVDA", "AMZN"}
    # a write without a version bump is not seen: the cache key is (slug, pos_version)
    conn = connect(seeded.dsn)
    try:
        with conn, conn.cursor() as cur:
            insert_open_position(cur, slug, "QUIET", qty=1, entry=10, mark=11)
    finally:
        conn.close()
    assert "QUIET" not in {r["symbol"] for r in model.open_positions(slug)}
    # the manager's way (row + version bump + NOTIFY) is seen at once
    simulate_fill(seeded.dsn, slug, "LOUD")
    after = {r["symbol"] for r in model.open_positions(slug)}
    assert {"QUIET", "LOUD"} <= after


def test_closed_block_sorts_and_filters_on_the_server(model: ReadModel, seeded: Seeded) -> None:
    table = quote_ident("closed_trades_alpha_paper")
    best = float(_scalar(seeded.dsn, f"SELECT max(net_pl) FROM public.{table}"))
    block = model.closed_block("alpha_paper", {"startRow": 0, "endRow": 50,
                                                "sortModel": [{"colId": "net_pl", "sort": "desc"}]}, "UTC")
    assert block["rowCount"] == 200
    assert len(block["rowData"]) == 50
    assert block["rowData"][0]["net_pl"] == pytest.approx(best)

    nvda = int(_scalar(seeded.dsn, f"SELECT count(*) FROM public.{table} WHERE symbol = 'NVDA'"))
    filtered = model.closed_block("alpha_paper", {
        "startRow": 0, "endRow": 500,
        "filterModel": {"symbol": {"filterType": "text", "type": "equals", "filter": "nvda"}},
    }, "UTC")
    assert filtered["rowCount"] == nvda
    assert {r["symbol"] for r in filtered["rowData"]} == {"NVDA"}


def test_grid_times_are_rendered_in_the_display_zone(model: ReadModel) -> None:
    request = {"startRow": 0, "endRow": 1, "sortModel": [{"colId": "exit_time", "sort": "asc"}]}
    utc = model.closed_block("alpha_paper", request, "UTC")["rowData"][0]["exit_time"]
    tokyo = model.closed_block("alpha_paper", request, "Asia/Tokyo")["rowData"][0]["exit_time"]
    assert utc != tokyo
    assert int(tokyo[11:13]) == (int(utc[11:13]) + 9) % 24


def test_equity_window_is_downsampled_and_zoomable(model: ReadModel) -> None:
    series = model.equity_series("alpha_paper")
    assert len(series) == 2000
    window = model.equity_window("alpha_paper", max_points=500)
    assert window["ts"].size <= 500
    assert window["ts"][0] == series.ts_ns[0]
    assert window["ts"][-1] == series.ts_ns[-1]
    assert window["flow"].size == 2  # a top-up and a withdrawal
    assert window["flow"][0] > 0 > window["flow"][1]
    assert (window["drawdown"] <= 0).all()

    start, end = int(series.ts_ns[100]), int(series.ts_ns[400])
    zoomed = model.equity_window("alpha_paper", start, end, max_points=MAX_POINTS)
    assert zoomed["ts"][0] >= series.ts_ns[99]
    assert zoomed["ts"][-1] <= series.ts_ns[401]
    assert zoomed["ts"].size >= 300  # the full resolution inside a narrow window


def test_equity_series_refreshes_incrementally(model: ReadModel, seeded: Seeded) -> None:
    first = model.equity_series("alpha_paper")
    conn = connect(seeded.dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("""INSERT INTO public.equity_full_alpha_paper (ts, equity, net_deposits)
                           SELECT max(ts) + interval '1 minute', 123456.78, max(net_deposits)
                           FROM public.equity_full_alpha_paper""")
            cur.execute("UPDATE public.ch_versions SET equity_version = equity_version + 1 WHERE slug = 'alpha_paper'")
    finally:
        conn.close()
    second = model.equity_series("alpha_paper")
    fresh = ReadModel(seeded.settings, seeded.dsn).equity_series("alpha_paper")
    assert len(second) == len(first) + 1
    assert second.equity[-1] == pytest.approx(123456.78)
    np.testing.assert_array_equal(second.ts_ns, fresh.ts_ns)
    np.testing.assert_allclose(second.equity, fresh.equity)


def test_daily_equity_and_session_returns(model: ReadModel) -> None:
    daily = model.daily_equity("alpha_paper", "America/New_York")
    assert {"equity", "net_deposits"} <= set(daily.columns)
    returns = model.session_returns("alpha_paper")
    assert len(returns) > 100
    # deposits are not returns: no session gains anywhere near the 20% top-up
    assert returns.abs().max() < 0.1


def test_redis_cache_is_shared_between_processes(seeded: Seeded) -> None:
    client = redis.Redis.from_url("redis://127.0.0.1:6379/15")
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail("the shared-cache test needs Redis on 127.0.0.1:6379 (it runs on these machines; start it)")
    settings = seeded.settings.replace(cache_type="RedisCache", cache_redis_url="redis://127.0.0.1:6379/15")
    one, two = ReadModel(settings, seeded.dsn), ReadModel(settings, seeded.dsn)
    key = ("probe", uuid.uuid4().hex)
    calls: list[int] = []
    assert one.memo(key, lambda: calls.append(1) or {"v": 1}) == {"v": 1}
    assert two.memo(key, lambda: calls.append(2) or {"v": 2}) == {"v": 1}  # computed once, served twice
    assert calls == [1]
    rows = two.open_positions("alpha_paper")
    assert one.open_positions("alpha_paper") == rows


def test_cache_config_kinds(seeded: Seeded, tmp_path) -> None:
    fs = cache_config(seeded.settings.replace(cache_type="FileSystemCache", cache_dir=str(tmp_path)), seeded.dsn)
    assert fs["CACHE_DIR"] == str(tmp_path)
    other = cache_config(seeded.settings, seeded.dsn.rsplit("/", 1)[0] + "/elsewhere")
    assert other["CACHE_KEY_PREFIX"] != cache_config(seeded.settings, seeded.dsn)["CACHE_KEY_PREFIX"]
    model = ReadModel(seeded.settings.replace(cache_type="FileSystemCache", cache_dir=str(tmp_path)), seeded.dsn)
    assert model.memo(("fs", 1), lambda: [1, 2]) == [1, 2]
    assert any(tmp_path.iterdir())


def _grid_ids(dsn: str, table: object, request: dict) -> list[str]:
    from dashboard import grid_sql

    q = grid_sql.page_query(table, request, tz="UTC")  # type: ignore[arg-type]
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(q.clause().compile(compile_kwargs={"literal_binds": True}).string)
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


@pytest.mark.parametrize("sort", [[{"colId": "net_pl", "sort": "desc"}], [{"colId": "symbol", "sort": "asc"}],
                                  [{"colId": "mae", "sort": "asc"}],  # NULLs: last ascending, first descending
                                  [{"colId": "symbol", "sort": "desc"}, {"colId": "exit_time", "sort": "asc"}],
                                  []])
def test_deep_blocks_read_from_the_nearer_end_return_the_same_rows(model: ReadModel, seeded: Seeded,
                                                                    sort: list) -> None:
    from dashboard import grid_sql
    from dashboard.queries import reversed_request

    table = grid_sql.grid_table(grid_sql.GridKind.CLOSED_TRADES, "alpha_paper")
    conn = connect(seeded.dsn)
    try:  # some NULLs in a sortable column, so the reversed order must place them exactly
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE public.closed_trades_alpha_paper SET mae = NULL WHERE trade_id IN "
                        "(SELECT trade_id FROM public.closed_trades_alpha_paper ORDER BY trade_id LIMIT 30)")
    finally:
        conn.close()
    count = 200
    for start, end in [(150, 175), (120, 200), (180, 260), (101, 102)]:
        request = {"startRow": start, "endRow": end, "sortModel": sort, "filterModel": {}}
        backwards = reversed_request(table, request, count)
        assert backwards is not None  # past the middle: read from the other end
        assert backwards["startRow"] == max(0, count - end)
        assert backwards["endRow"] == count - start
        expected = _grid_ids(seeded.dsn, table, request)
        assert _grid_ids(seeded.dsn, table, backwards)[::-1] == expected
        block = model.closed_block("alpha_paper", request, "UTC")
        assert [r["trade_id"] for r in block["rowData"]] == expected
    # the first half, malformed requests and blocks past the end take the normal path
    assert reversed_request(table, {"startRow": 0, "endRow": 100, "sortModel": sort}, count) is None
    assert reversed_request(table, {"startRow": 250, "endRow": 300, "sortModel": sort}, count) is None
    assert reversed_request(table, {"startRow": "150", "endRow": 175, "sortModel": sort}, count) is None
    assert reversed_request(table, {"startRow": 150, "endRow": 175, "sortModel": [{"colId": "net_pl"}]}, count) is None


def test_symbol_equals_filter_uses_the_lower_symbol_index(seeded: Seeded) -> None:
    from dashboard import grid_sql

    table = grid_sql.grid_table(grid_sql.GridKind.CLOSED_TRADES, "alpha_paper")
    q = grid_sql.count_query(table, {"symbol": {"filterType": "text", "type": "equals", "filter": "NVDA"}}, tz="UTC")
    conn = connect(seeded.dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET LOCAL enable_seqscan = off")  # a 200-row table: ask whether the index *can* serve
            cur.execute("EXPLAIN " + q.clause().compile(compile_kwargs={"literal_binds": True}).string)
            plan = "\n".join(row[0] for row in cur.fetchall())
    finally:
        conn.close()
    assert "closed_trades_alpha_paper_lsym" in plan, plan
