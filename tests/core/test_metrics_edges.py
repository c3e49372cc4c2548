"""Metrics edge cases: constant series, drawdown lengths across DST and early closes, flat windows."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from core import metrics as M

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # QuantStats' own import-time deprecation noise (see test_metrics_reference)
    import quantstats as qs


def _series(values: list[float] | np.ndarray, start: str = "2024-01-02") -> pd.Series:
    return pd.Series(np.asarray(values, dtype=np.float64),
                     index=pd.date_range(start, periods=len(values), freq="D", tz="UTC"))


CONSTANTS = {
    "zeros": np.zeros(30),
    "exact 0.001": np.full(50, 0.001),
    "tenths": np.full(12, 0.1),  # 0.1 * 12 / 12 is not 0.1 in binary: the mean's rounding
    # returns of an equity compounding at a fixed rate: equal up to the last bit of the division
    "geometric equity": (100 * 1.001 ** np.arange(61))[1:] / (100 * 1.001 ** np.arange(61))[:-1] - 1,
}


@pytest.mark.parametrize("values", CONSTANTS.values(), ids=CONSTANTS.keys())
def test_shape_of_a_constant_series_is_undefined(values: np.ndarray) -> None:
    r = _series(values)
    assert math.isnan(M.skew(r))
    assert math.isnan(M.kurtosis(r))
    assert math.isnan(M.sharpe(r))
    assert math.isnan(M.sharpe(r, rf=0.04))
    assert M.volatility(r) == 0.0
    summary = M.summary_from_returns(r, include_series=False)
    assert math.isnan(summary["skew"])
    assert math.isnan(summary["kurtosis"])


def test_pandas_gives_a_number_for_the_geometric_series_and_we_do_not() -> None:
    r = _series(CONSTANTS["geometric equity"])
    assert not math.isnan(float(r.skew()))  # the rounding residue has a "shape" to pandas (QuantStats' skew)
    assert math.isnan(M.skew(r))


def test_a_varying_series_still_matches_quantstats_skew_and_kurtosis() -> None:
    r = _series(np.random.default_rng(3).normal(0.001, 0.01, 300))
    naive = r.copy()
    naive.index = naive.index.tz_localize(None)
    assert M.skew(r) == pytest.approx(float(qs.stats.skew(naive)), rel=1e-9)
    assert M.kurtosis(r) == pytest.approx(float(qs.stats.kurtosis(naive)), rel=1e-9)


# Session closes in UTC: 16:00 New York is 21:00 UTC in winter, 20:00 in summer, 18:00 on an early close.
DRAWDOWNS = [
    pytest.param(["2024-03-07 21:00", "2024-03-08 21:00", "2024-03-11 20:00", "2024-03-12 20:00"], 4,
                 id="spring-forward"),
    pytest.param(["2024-10-31 20:00", "2024-11-01 20:00", "2024-11-04 21:00", "2024-11-05 21:00"], 4,
                 id="fall-back"),
    pytest.param(["2024-11-26 21:00", "2024-11-27 21:00", "2024-11-29 18:00", "2024-12-02 21:00"], 3,
                 id="half-day"),
    pytest.param(["2024-07-01 20:00", "2024-07-02 20:00", "2024-07-03 17:00", "2024-07-05 20:00"], 2,
                 id="half-day-before-holiday"),
]


@pytest.mark.parametrize(("closes", "days"), DRAWDOWNS)
def test_drawdown_days_count_exchange_calendar_days(closes: list[str], days: int) -> None:
    # Arrange: up, down (drawdown starts), still under water, recovered on the last close
    index = pd.DatetimeIndex([pd.Timestamp(c, tz="UTC") for c in closes])
    returns = pd.Series([0.01, -0.02, 0.005, 0.05], index=index)
    # Act
    table = M.drawdown_periods(returns)
    # Assert: our count, and QuantStats' on the same New York session dates
    assert table.days.tolist() == [days]
    dated = returns.copy()
    dated.index = pd.DatetimeIndex([t.tz_convert("America/New_York").date() for t in index])
    reference = qs.stats.drawdown_details(qs.stats.to_drawdown_series(dated))
    assert reference["days"].tolist() == [days]


def test_drawdown_days_on_a_utc_midnight_daily_series_are_unchanged() -> None:
    r = _series([0.01, -0.02, 0.0, 0.0, 0.05])
    assert M.drawdown_periods(r).days.tolist() == [3]


def _flat_tail(value: float, n_flat: int = 30) -> pd.Series:
    noisy = np.random.default_rng(7).normal(0.0, 0.05, 300) * 40  # large values first: running sums remember them
    return pd.Series(np.r_[noisy, np.full(n_flat, value)],
                     index=pd.date_range("2023-01-02", periods=300 + n_flat, freq="D", tz="UTC"))


@pytest.mark.parametrize(("value", "rf", "sortino"), [
    (0.0, 0.0, math.nan),
    (0.0, 0.04, -math.sqrt(252)),  # excess return is the constant -rf per day: all downside
    (0.001, 0.0, math.nan),
    (-0.002, 0.0, -math.sqrt(252)),
])
def test_rolling_ratios_over_an_all_flat_window_are_exact(value: float, rf: float, sortino: float) -> None:
    r = _flat_tail(value)
    window = 20
    vol = M.rolling_volatility(r, window)
    sharpe = M.rolling_sharpe(r, window, rf=rf)
    sort = M.rolling_sortino(r, window, rf=rf)
    tail = slice(-10, None)  # windows entirely inside the flat stretch
    assert (vol.iloc[tail] == 0.0).all()
    assert sharpe.iloc[tail].isna().all()
    if math.isnan(sortino):
        assert sort.iloc[tail].isna().all()
    else:
        np.testing.assert_allclose(sort.iloc[tail].to_numpy(), sortino, rtol=1e-12)


def test_rolling_ratios_elsewhere_still_match_quantstats() -> None:
    r = _flat_tail(0.0)
    naive = r.copy()
    naive.index = naive.index.tz_localize(None)
    window = 20
    ours = M.rolling_volatility(r, window).iloc[window:290].to_numpy()
    ref = qs.stats.rolling_volatility(naive, rolling_period=window).iloc[window:290].to_numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-9)
    ours_s = M.rolling_sharpe(r, window).iloc[window:290].to_numpy()
    ref_s = qs.stats.rolling_sharpe(naive, rolling_period=window).iloc[window:290].to_numpy()
    np.testing.assert_allclose(ours_s, ref_s, rtol=1e-9)


@pytest.mark.parametrize(("values", "flat"), [
    ([], False), ([0.0, 0.0, 0.0], True), ([0.001, 0.001 + 2e-16], True), ([0.0, 1e-12], False),
    ([5.0, 5.0 + 1e-14], True), ([0.01, -0.01], False),
])
def test_is_flat(values: list[float], flat: bool) -> None:
    assert M.is_flat(np.asarray(values, dtype=np.float64)) is flat


@pytest.mark.parametrize("rf", [0.0, 0.04])
def test_rolling_ratios_shares_work_but_not_results(rf: float) -> None:
    r = _flat_tail(-0.001)
    r.iloc[5] = np.nan  # a gap inside the noisy part
    vol, sharpe, sortino = M.rolling_ratios(r, 20, rf=rf)
    pd.testing.assert_series_equal(vol, M.rolling_volatility(r, 20))
    pd.testing.assert_series_equal(sharpe, M.rolling_sharpe(r, 20, rf=rf))
    pd.testing.assert_series_equal(sortino, M.rolling_sortino(r, 20, rf=rf))
