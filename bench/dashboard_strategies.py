"""The strategy pages' callbacks at scale, for ``python -m bench dashboard`` (issue 20).

The benchmark's destination (100,000 round trips) gets opening orders tagged with ten strategies
(:func:`tests.dashboard.strategy_seed.seed_strategies`: bracket legs, replaced orders, trips closed by
another strategy's order, unattributed ones) and a year of SPY daily bars; then the strategies page,
one strategy's page (across destinations and narrowed to one; benchmark on and off; both themes),
the comparison page and the CSV export are measured like the destination page's callbacks.
"""

from __future__ import annotations

from typing import Any

from core.db import connect
from core.settings import Settings

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


def callbacks(app: Any, slug: str, runs: int, caller: Any, measure: Any) -> list[dict[str, Any]]:
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

    rows = [measure(f"strategies.{name}", runs, fn) for name, fn in
            [("strategies_page", strategies_page), ("strategy_view", strategy_view), ("strategy_page", strategy_page),
             ("compare", compare)]]
    import time

    t0 = time.perf_counter()
    body = c.client.get("/strategy/s3/trades.csv").get_data()
    rows.append({"name": "dashboard.strategies.trades_csv_ms", "value": round((time.perf_counter() - t0) * 1000, 1),
                 "unit": "ms", "bytes": len(body), "note": "every round trip of one strategy (~10,000)"})
    return rows
