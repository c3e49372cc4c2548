"""core.benchmark against QuantStats (greeks, information_ratio, r_squared, rolling_greeks) and by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import quantstats as qs

from core import benchmark as bm

TOL = 1e-9


def _pair(n: int, seed: int, beta: float = 0.8) -> tuple[pd.Series, pd.Series]:
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2024-01-02 21:00", periods=n, freq="B", tz="UTC")
    b = rng.normal(0.0004, 0.011, n)
    r = 0.0002 + beta * b + rng.normal(0, 0.006, n)
    return pd.Series(r, index=idx), pd.Series(b, index=idx)


def _naive(s: pd.Series) -> pd.Series:
    return pd.Series(s.to_numpy(), index=pd.DatetimeIndex(s.index).tz_localize(None))


@pytest.mark.parametrize(("n", "seed", "beta"), [(30, 1, 0.8), (260, 2, 1.3), (600, 3, -0.4), (5, 4, 0.0)])
def test_metrics_equal_quantstats(n: int, seed: int, beta: float) -> None:
    r, b = _pair(n, seed, beta)
    ours = bm.metrics(r, b)
    r, b = _naive(r), _naive(b)  # QuantStats strips the zone of one side only; give it naive dates
    g = qs.stats.greeks(r, b, prepare_returns=False)
    assert ours["beta"] == pytest.approx(g["beta"], abs=TOL)
    assert ours["alpha"] == pytest.approx(g["alpha"], abs=TOL)
    assert ours["information_ratio"] == pytest.approx(qs.stats.information_ratio(r, b, prepare_returns=False), abs=TOL)
    assert ours["r_squared"] == pytest.approx(qs.stats.r_squared(r, b, prepare_returns=False), abs=TOL)
    assert ours["correlation"] == pytest.approx(float(np.corrcoef(r, b)[0, 1]), abs=TOL)
    assert ours["tracking_error"] == pytest.approx(float(np.std(r - b, ddof=1)) * math.sqrt(252), abs=TOL)
    assert ours["excess_return"] == pytest.approx(float(np.prod(1 + r) - np.prod(1 + b)), abs=TOL)


@pytest.mark.parametrize("window", [5, 20, 126])
def test_rolling_beta_equals_quantstats(window: int) -> None:
    r, b = _pair(300, 7, 1.1)
    ours = bm.rolling_beta(r, b, window)
    theirs = qs.stats.rolling_greeks(_naive(r), _naive(b), periods=window, prepare_returns=False)["beta"]
    theirs.index = r.index
    both = theirs.notna()
    assert ours[~both].isna().all()
    np.testing.assert_allclose(ours[both].to_numpy(), theirs[both].to_numpy(), atol=TOL, rtol=0)


def test_capture_by_hand() -> None:
    idx = pd.date_range("2024-01-02 21:00", periods=4, freq="B", tz="UTC")
    r = pd.Series([0.02, -0.01, 0.04, -0.03], index=idx)
    b = pd.Series([0.01, -0.02, 0.02, -0.01], index=idx)
    out = bm.metrics(r, b)
    up = math.sqrt(1.02 * 1.04) - 1
    up_b = math.sqrt(1.01 * 1.02) - 1
    down = math.sqrt(0.99 * 0.97) - 1
    down_b = math.sqrt(0.98 * 0.99) - 1
    assert out["up_capture"] == pytest.approx(up / up_b, abs=TOL)
    assert out["down_capture"] == pytest.approx(down / down_b, abs=TOL)


def test_align_compounds_missing_strategy_days_and_ignores_time_zones() -> None:
    # benchmark closes every session; the strategy has no return on 2024-01-04
    closes_ny = pd.DatetimeIndex(["2024-01-02 16:00", "2024-01-03 16:00", "2024-01-04 16:00", "2024-01-05 16:00"],
                                 tz="America/New_York")
    prices = pd.Series([100.0, 101.0, 99.0, 102.0], index=closes_ny)
    on = pd.DatetimeIndex(["2024-01-03 21:00", "2024-01-05 21:00"], tz="UTC")  # the same instants in UTC
    r = pd.Series([0.01, 0.02], index=on)
    ar, ab = bm.align(r, prices)
    assert list(ar) == [0.01, 0.02]
    assert ab.iloc[0] == pytest.approx(101 / 100 - 1, abs=TOL)
    assert ab.iloc[1] == pytest.approx(102 / 101 - 1, abs=TOL)  # 01-04 compounded into 01-05


def test_align_drops_periods_before_the_benchmark_starts() -> None:
    prices = pd.Series([50.0, 55.0], index=pd.DatetimeIndex(["2024-01-03 21:00", "2024-01-04 21:00"], tz="UTC"))
    on = pd.DatetimeIndex(["2024-01-02 21:00", "2024-01-03 21:00", "2024-01-04 21:00"], tz="UTC")
    ar, ab = bm.align(pd.Series([0.1, 0.2, 0.3], index=on), prices)
    assert list(ar) == [0.3]
    assert ab.iloc[0] == pytest.approx(0.1, abs=TOL)


def test_relative_drawdown() -> None:
    idx = pd.date_range("2024-01-02", periods=3, freq="D", tz="UTC")
    r = pd.Series([0.1, 0.0, 0.0], index=idx)
    b = pd.Series([0.0, 0.1, 0.0], index=idx)
    dd = bm.relative_drawdown(r, b)
    assert dd.iloc[0] == 0.0
    assert dd.iloc[1] == pytest.approx(1.1 / 1.1 / 1.1 - 1, abs=TOL)


def test_too_short_gives_nan_not_zero() -> None:
    out = bm.metrics(np.array([0.01]), np.array([0.02]))
    assert math.isnan(out["beta"])
    assert math.isnan(out["alpha"])
    assert out["periods"] == 1.0
