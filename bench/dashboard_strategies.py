"""The strategy pages' callbacks at scale, for ``python -m bench dashboard`` (issue 20).

The benchmark's destination (100,000 round trips) gets opening orders tagged with ten strategies
(:func:`tests.dashboard.strategy_seed.seed_strategies`: bracket legs, replaced orders, trips closed by
another strategy's order, unattributed ones) and a year of SPY daily bars; then the strategies page,
one strategy's page (across destinations and narrowed to one; benchmark on and off; both themes),
the comparison page, the destination page's strategy section (mounted, then every strategy or one
of the ten, benchmark on and off, both themes) and the CSV export are measured like the destination
page's callbacks.

Alone (without the first-render browsers of ``python -m bench dashboard``):
``python -m bench.dashboard_strategies [--quick]`` seeds the same 100,000 round trips (1,000,000 equity
points; ``--quick``: 300,000) and prints the same rows.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from core.db import connect
from core.settings import Settings

if TYPE_CHECKING:
    from bench.dashboard import _Caller

STRATEGIES = 10


def prepare(dsn: str, settings: Settings, slug: str) -> None:
    from tests.dashboard.strategy_seed import seed_strategies

    seed_strategies(dsn, settings, [slug], STRATEGIES)
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("""INSERT INTO public.benchmark_bars (symbol, day, open, high, low, close)
                           SELECT 'SPY', d::date, 1, 1, 1, 400 * exp(0.0003 * i + 0.01 * sin(i))
                           FROM generate_series(now() - interval '400 days', now(), interval '1 day')
                                WITH ORDINALITY AS g(d, i)
                           WHERE extract(isodow FROM d) < 6 ON CONFLICT DO NOTHING""")
    finally:
        conn.close()


def callbacks(app: Any, slug: str, runs: int, caller: type[_Caller], measure: Any) -> list[dict[str, Any]]:
    """Rows like :func:`bench.dashboard.callbacks`' (``caller``/``measure`` are its helpers)."""
    c = caller(app)
    strat_outputs = [("strat-kpis", "children"), ("strat-growth", "figure"), ("strat-trades", "rowData"),
                     ("strat-open", "rowData"), ("strat-status", "children"), ("strat-bench-note", "children"),
                     ("strat-export-csv", "href"), ("strat-token", "data")]

    def strategies_page(i: int) -> tuple[float, float, int, int]:
        return c.call([("_pages_content", "children"), ("_pages_store", "data")],
                      [("_pages_location", "pathname", "/strategies"), ("_pages_location", "search", "")],
                      [], "_pages_location.pathname")

    def strategy_view(i: int) -> tuple[float, float, int, int]:
        return c.call(strat_outputs,
                      [("strat-dest", "value", slug if i % 2 else "*"), ("strat-bench", "value", i % 4 < 2),
                       ("theme-store", "data", "dark" if i % 8 < 4 else "light"), ("strat-tick", "n_intervals", i)],
                      [("strat-name", "data", f"s{i % STRATEGIES}"), ("strat-token", "data", None)], "strat-dest.value")

    def strategy_page(i: int) -> tuple[float, float, int, int]:
        return c.call([("_pages_content", "children"), ("_pages_store", "data")],
                      [("_pages_location", "pathname", f"/strategy/s{i % STRATEGIES}"), ("_pages_location", "search", "")],
                      [], "_pages_location.pathname")

    def compare(i: int) -> tuple[float, float, int, int]:
        items = [f"d:{slug}"] + [f"s:s{(i + k) % STRATEGIES}" for k in range(1 + i % 4)]
        return c.call([("cmp-table", "children"), ("cmp-growth", "figure"), ("cmp-export-csv", "href")],
                      [("cmp-items", "value", items), ("cmp-bench", "value", "SPY" if i % 2 else ""),
                       ("theme-store", "data", "light")], [], "cmp-items.value")

    def dest_strategy_mount(i: int) -> tuple[float, float, int, int]:
        return c.call([("dest-strategy", "children")], [("dest-defer", "n_intervals", 1)],
                      [("dest-slug", "data", slug)], "dest-defer.n_intervals")

    def dest_strategy_view(i: int) -> tuple[float, float, int, int]:
        key = "*" if i % (STRATEGIES + 1) == 0 else f"s{i % (STRATEGIES + 1) - 1}"
        return c.call([("dest-strat-kpis", "children"), ("dest-strat-growth", "figure"),
                       ("dest-strat-table", "children"), ("dest-strat-note", "children"), ("dest-strat-shown", "data")],
                      [("dest-strat", "value", key), ("dest-strat-bench", "value", i % 4 < 2),
                       ("theme-store", "data", "dark" if i % 8 < 4 else "light"), ("dest-strat-tick", "n_intervals", i)],
                      [("dest-slug", "data", slug), ("dest-strat-shown", "data", None)], "dest-strat.value")

    rows = [measure(f"strategies.{name}", runs, fn) for name, fn in
            [("strategies_page", strategies_page), ("strategy_view", strategy_view), ("strategy_page", strategy_page),
             ("compare", compare), ("dest_strategy_mount", dest_strategy_mount),
             ("dest_strategy_view", dest_strategy_view)]]
    import time

    t0 = time.perf_counter()
    body = c.client.get("/strategy/s3/trades.csv").get_data()
    rows.append({"name": "dashboard.strategies.trades_csv_ms", "value": round((time.perf_counter() - t0) * 1000, 1),
                 "unit": "ms", "bytes": len(body), "note": "every round trip of one strategy (~10,000)"})
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    """The strategy rows of ``python -m bench dashboard`` on their own (no browsers)."""
    from bench.dashboard import SLUG, _Caller, _database, _measure
    from dashboard.app import create_app

    trades, points = (100_000, 300_000) if quick else (100_000, 1_000_000)
    runs = 20 if quick else 40
    out: list[dict[str, Any]] = []
    with _database(trades, points) as (dsn, settings):
        prepare(dsn, settings, SLUG)
        app = create_app(settings, start_listener=False)
        try:
            out.extend(callbacks(app, SLUG, runs, _Caller, _measure))
        finally:
            app.server.extensions["coldharbour"].model.dispose()
    for row in out:
        row.setdefault("closed_trades", trades)
        row.setdefault("equity_points", points)
        row.setdefault("strategies", STRATEGIES)
    return out


if __name__ == "__main__":
    for result in run(quick="--quick" in sys.argv[1:]):
        print(json.dumps(result, default=str), flush=True)
