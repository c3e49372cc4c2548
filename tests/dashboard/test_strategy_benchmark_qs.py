"""The benchmark figures the pages show equal QuantStats on the same aligned series, end to end from
PostgreSQL: a strategy across destinations, a strategy in one destination and a destination's own
account returns, each against SPY's stored daily closes. The alignment itself is rebuilt here by hand
from ``benchmark_bars`` (a Python loop over New York dates, not core.benchmark's searchsorted)."""

from __future__ import annotations

import bisect
import math
from datetime import date
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
import quantstats as qs
from dash import Dash

from core.db import connect
from core.metrics_series import DEFAULT_ROLLING_WINDOW
from dashboard import strategy_queries as sq
from dashboard.pages import destination_strategy, strategy
from tests.dashboard.conftest import Seeded
from tests.dashboard.test_strategy_pages import sapp as sapp  # the seeded app with 400 days of SPY

NY = ZoneInfo("America/New_York")
TOL = 1e-9


def _closes(dsn: str) -> dict[date, float]:
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT day, close FROM public.benchmark_bars WHERE symbol = 'SPY' ORDER BY day")
            return {d: float(c) for d, c in cur.fetchall()}
    finally:
        conn.close()


def aligned_by_hand(daily: pd.Series, closes: dict[date, float]) -> tuple[list[float], list[float]]:
    """Each finite return's period against the benchmark over the same New York dates: the close at or
    before the period's date over the close at or before the previous period's (the first period: the
    bar before); periods the benchmark does not cover yet are left out."""
    days = sorted(closes)
    r_out, b_out = [], []
    finite = [(t, float(v)) for t, v in daily.items() if math.isfinite(float(v))]
    prev_pos: int | None = None
    for i, (t, r) in enumerate(finite):
        pos = bisect.bisect_right(days, pd.Timestamp(t).tz_convert(NY).date()) - 1
        before = pos - 1 if i == 0 else prev_pos
        prev_pos = pos
        if pos < 0 or before is None or before < 0:
            continue
        r_out.append(r)
        b_out.append(closes[days[pos]] / closes[days[before]] - 1.0)
    return r_out, b_out


def _check(bench: dict[str, object], daily: pd.Series, closes: dict[date, float]) -> None:
    r_hand, b_hand = aligned_by_hand(daily, closes)
    r = pd.Series(np.asarray(bench["returns"], dtype=float))
    b = pd.Series(np.asarray(bench["benchmark_returns"], dtype=float))
    assert len(r) >= DEFAULT_ROLLING_WINDOW + 10  # long enough for a rolling beta
    np.testing.assert_allclose(r.to_numpy(), r_hand, atol=1e-15, rtol=0)
    np.testing.assert_allclose(b.to_numpy(), b_hand, atol=1e-12, rtol=0)
    idx = pd.date_range("2020-01-01", periods=len(r), freq="D")  # QuantStats wants naive dates
    r.index = b.index = idx
    g = qs.stats.greeks(r, b, prepare_returns=False)
    assert bench["alpha"] == pytest.approx(g["alpha"], abs=TOL)
    assert bench["beta"] == pytest.approx(g["beta"], abs=TOL)
    assert bench["information_ratio"] == pytest.approx(qs.stats.information_ratio(r, b, prepare_returns=False),
                                                       abs=TOL)
    assert bench["r_squared"] == pytest.approx(qs.stats.r_squared(r, b, prepare_returns=False), abs=TOL)
    theirs = qs.stats.rolling_greeks(r, b, periods=DEFAULT_ROLLING_WINDOW, prepare_returns=False)["beta"]
    ours = np.asarray(bench["rolling_beta"], dtype=float)
    both = theirs.notna().to_numpy()
    assert both.sum() > 0
    assert np.isnan(ours[~both]).all()
    np.testing.assert_allclose(ours[both], theirs.to_numpy()[both], atol=TOL, rtol=0)


def test_strategy_page_benchmark_equals_quantstats(sapp: Dash, seeded: Seeded) -> None:
    m = sapp.server.extensions["coldharbour"].model
    closes = _closes(seeded.dsn)
    for destination in (None, seeded.slugs[0]):
        with sapp.server.test_request_context("/"):
            b = strategy.base(m, "s1", destination)
            _closed, _held, book = sq.book_for(m, seeded.slugs, "s1", destination)
        assert b["symbol"] == "SPY"
        _check(b["bench"], sq.by_ny_day(sq.returns_of(book)), closes)


def test_destination_page_benchmark_equals_quantstats(sapp: Dash, seeded: Seeded) -> None:
    m = sapp.server.extensions["coldharbour"].model
    slug = seeded.slugs[0]
    closes = _closes(seeded.dsn)
    with sapp.server.test_request_context("/"):
        daily = sq.by_ny_day(m.session_returns(slug))
        bench = sq.against(daily, sq.benchmark_prices(m, "SPY"))
        shown = destination_strategy.view(m, slug, destination_strategy.ALL, True, "light")
    _check(bench, daily, closes)
    assert shown is not None
    beta_card = next(c for c in shown["kpis"] if "Beta vs SPY" in str(c))
    assert f"{bench['beta']:.2f}" in str(beta_card)  # the card shows this comparison's beta
