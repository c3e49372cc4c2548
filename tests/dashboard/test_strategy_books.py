"""Per-strategy books on a real PostgreSQL: attribution through legs, replacements and trips closed by
another strategy, P&L equal to an independent recomputation in SQL, daily returns recomputed by hand."""

from __future__ import annotations

from datetime import date, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from core.db import connect
from core.strategies import UNATTRIBUTED
from dashboard import strategy_queries as sq
from dashboard.queries import ReadModel
from tests.dashboard.conftest import Seeded
from tests.dashboard.strategy_seed import expected_sql, seed_strategies

NY = ZoneInfo("America/New_York")
N_STRATEGIES = 4


@pytest.fixture
def model(seeded: Seeded) -> ReadModel:
    seed_strategies(seeded.dsn, seeded.settings, seeded.slugs, N_STRATEGIES)
    return ReadModel(seeded.settings, seeded.dsn)


def _sql(dsn: str, sql: str) -> list[tuple[object, ...]]:
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def test_attribution_equals_the_seeding_rule(model: ReadModel, seeded: Seeded) -> None:
    for slug in seeded.slugs:
        expected = {t: s for t, s, _pl, _f in _sql(seeded.dsn, expected_sql(slug, N_STRATEGIES))}
        got = dict(zip(sq.trades(model, slug)["trade_id"], sq.trades(model, slug)["strategy"], strict=True))
        assert got == expected
        assert UNATTRIBUTED in got.values()


def test_per_strategy_pl_equals_sql(model: ReadModel, seeded: Seeded) -> None:
    slugs = seeded.slugs
    for slug in slugs:
        sums = {s: (float(pl), float(f)) for s, pl, f in _sql(
            seeded.dsn, f"SELECT strategy, sum(net_pl), sum(fees) FROM ({expected_sql(slug, N_STRATEGIES)}) e GROUP BY 1")}
        for name, (pl, fees) in sums.items():
            closed, _held, book = sq.book_for(model, slugs, name, slug)
            figures = sq.kpis(closed, _held, sq.returns_of(book))
            assert figures["realized_pl"] == pytest.approx(pl, abs=1e-6)
            assert figures["fees"] == pytest.approx(fees, abs=1e-6)
            assert float(book["realized"].sum()) == pytest.approx(pl, abs=1e-6)
    across = {s: float(pl) for s, pl in _sql(seeded.dsn, " UNION ALL ".join(
        f"({expected_sql(s, N_STRATEGIES)})" for s in slugs).join(["SELECT strategy, sum(net_pl) FROM (", ") e GROUP BY 1"]))}
    for name, pl in across.items():
        closed, _held, _book = sq.book_for(model, slugs, name)
        assert float(closed["net_pl"].sum()) == pytest.approx(pl, abs=1e-6)


def test_open_positions_and_unrealized(model: ReadModel, seeded: Seeded) -> None:
    slug = seeded.slugs[0]
    rows = _sql(seeded.dsn, f"""SELECT symbol, unrealized_pl FROM public.open_trades_{slug} ORDER BY symbol""")
    expected: dict[str, float] = {}
    for k, (_sym, unrealized) in enumerate(rows):
        expected[f"s{k % N_STRATEGIES}"] = expected.get(f"s{k % N_STRATEGIES}", 0.0) + float(unrealized)
    for name, value in expected.items():
        _closed, held, book = sq.book_for(model, seeded.slugs, name, slug)
        assert sq.kpis(_closed, held, sq.returns_of(book))["unrealized_pl"] == pytest.approx(value, abs=1e-6)
        assert book["unrealized"].iloc[-1] == pytest.approx(value, abs=1e-6)


def _business_day(ts: pd.Timestamp) -> date:
    d = ts.tz_convert(NY).date()
    while d.weekday() >= 5:
        d -= timedelta(days=1)
    return d


def test_daily_returns_recomputed_by_hand(model: ReadModel, seeded: Seeded) -> None:
    slug = seeded.slugs[1]
    closed, _held, _ = sq.book_for(model, seeded.slugs, "s1", slug)
    book = sq.daily_book(closed, closed.iloc[:0], today=pd.Timestamp("2000-01-01", tz="UTC"))
    trips = [(_business_day(e), _business_day(x), abs(q * p), pl) for e, x, q, p, pl in
             zip(closed["entry_time"], closed["exit_time"], closed["qty"], closed["entry_price"], closed["net_pl"],
                 strict=True)]
    for day, row in book.iterrows():
        d = day.date()
        capital = sum(n for e, x, n, _ in trips if e <= d <= x)
        pnl = sum(pl for _e, x, _n, pl in trips if x == d)
        assert row["capital"] == pytest.approx(capital, abs=1e-6)
        assert row["ret"] == pytest.approx(pnl / capital if capital else 0.0, abs=1e-12)
    assert book["growth"].iloc[-1] == pytest.approx(float(np.prod(1 + book["ret"])), rel=1e-12)


def test_configured_capital_replaces_exposure(model: ReadModel, seeded: Seeded) -> None:
    closed, _held, _ = sq.book_for(model, seeded.slugs, "s2", seeded.slugs[0])
    book = sq.daily_book(closed, closed.iloc[:0], today=pd.Timestamp("2000-01-01", tz="UTC"), capital_usd=50_000)
    assert (book["capital"] == 50_000).all()
    np.testing.assert_allclose(book["ret"].to_numpy(), book["pnl"].to_numpy() / 50_000, atol=1e-12)


def test_benchmark_prices_prefer_one_minute_bars(model: ReadModel, seeded: Seeded) -> None:
    conn = connect(seeded.dsn)
    with conn, conn.cursor() as cur:
        cur.execute("""INSERT INTO public.benchmark_bars (symbol, day, open, high, low, close)
                       VALUES ('SPY', '2024-03-04', 1, 1, 1, 500), ('SPY', '2024-03-05', 1, 1, 1, 505)""")
        # the feed's bars on 03-05: the last one before 16:00 New York wins; one after the close does not count
        cur.execute("""INSERT INTO public.price_bars (symbol, ts, open, high, low, close, ticks) VALUES
                       ('SPY', '2024-03-05 20:59:00+00', 1, 1, 1, 506.5, 3),
                       ('SPY', '2024-03-05 21:30:00+00', 1, 1, 1, 999, 3)""")
    conn.close()
    prices = sq.benchmark_prices(model, "SPY")
    assert [(ts.date().isoformat(), v) for ts, v in prices.items()] == [("2024-03-04", 500.0), ("2024-03-05", 506.5)]
    assert sq.benchmark_of(model, "no_such_destination") == "SPY"
