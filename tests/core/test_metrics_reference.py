"""Every metric QuantStats 0.0.86 also computes, compared to it to a relative tolerance of 1e-9.

QuantStats is called on tz-naive return series: with pandas 3 its benchmark alignment refuses a
tz-aware index ("Cannot compare dtypes datetime64[us, UTC] and datetime64[us]"), and its
``_prepare_returns`` strips the timezone anyway. Its warnings are silenced locally (it warns, for
example, when a series has no non-zero return).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from core import metrics as M

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import quantstats as qs

REL = 1e-9
# Deliberate convention differences (docs/core_analytics.md):
# - Calmar without any drawdown is undefined (NaN) here; QuantStats divides by zero (inf).
# - A series under water from its first period to its end: QuantStats' drawdown_details finds no
#   period start (its shift() leaves the first row unmarked) and reports no drawdown period; we
#   report the one period.


# On a constant series QuantStats reports the rounding of the mean as dispersion (volatility 1.9e-15,
# Sharpe 1.4e14, skew 0): ours is exactly 0 volatility and undefined (NaN) ratios and shape.
_UNDEFINED_WHEN_CONSTANT = {"sharpe", "smart_sharpe", "skew", "kurtosis"}


def _deliberate(name: str, mine: float, ref: float, constant: bool = False) -> bool:
    if name == "calmar":
        return math.isnan(float(mine)) and math.isinf(float(ref))
    if name == "longest_drawdown_days":
        return float(ref) == 0 and float(mine) > 0
    if name in _UNDEFINED_WHEN_CONSTANT:
        return math.isnan(float(mine)) and constant
    if name == "volatility":
        return float(mine) == 0.0 and abs(float(ref)) < 1e-12
    return False



def close(a: float, b: float, rel: float = REL) -> bool:
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= rel * max(abs(a), abs(b)) or abs(a - b) < 1e-15


def naive(s: pd.Series) -> pd.Series:
    out = s.copy()
    out.index = pd.DatetimeIndex(out.index).tz_convert("UTC").tz_localize(None)
    return out


def equity_from_returns(r: np.ndarray, start: str, freq: str = "B", base: float = 1e5) -> pd.Series:
    idx = pd.date_range(start, periods=len(r) + 1, freq=freq, tz="UTC")
    return pd.Series(base * np.r_[1.0, np.cumprod(1.0 + r)], index=idx)


def qs_reference(rn: pd.Series) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = qs.stats
        dd = s.drawdown_details(s.to_drawdown_series(rn))
        return {
            "cumulative_return": s.comp(rn),
            "cagr": s.cagr(rn),
            "volatility": s.volatility(rn),
            "sharpe": s.sharpe(rn),
            "smart_sharpe": s.smart_sharpe(rn),
            "sortino": s.sortino(rn),
            "smart_sortino": s.smart_sortino(rn),
            "calmar": s.calmar(rn),
            "omega": s.omega(rn),
            "max_drawdown": s.max_drawdown(rn),
            "ulcer_index": s.ulcer_index(rn),
            "var": s.value_at_risk(rn),
            "cvar": s.conditional_value_at_risk(rn),
            "skew": s.skew(rn),
            "kurtosis": s.kurtosis(rn),
            "best_day": s.best(rn),
            "worst_day": s.worst(rn),
            "best_month": s.best(rn, aggregate="ME"),
            "worst_month": s.worst(rn, aggregate="ME"),
            "max_consecutive_wins": s.consecutive_wins(rn),
            "max_consecutive_losses": s.consecutive_losses(rn),
            "longest_drawdown_days": dd["days"].max() if len(dd) else 0,
        }


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def case_daily() -> np.ndarray:
    return _rng(1).normal(0.0005, 0.01, 500)


def case_ten_years() -> np.ndarray:
    return _rng(2).normal(0.0003, 0.012, 2520)


def case_flat_stretches() -> np.ndarray:
    r = _rng(3).normal(0.0002, 0.01, 400)
    r[50:120] = 0.0
    r[300:330] = 0.0
    return r


def case_short() -> np.ndarray:
    return np.array([0.01, -0.02, 0.015, 0.005])  # 5 equity points


def case_three_points() -> np.ndarray:
    return np.array([-0.01, 0.02])


def case_constant() -> np.ndarray:
    return np.full(30, 0.001)


def case_all_gains() -> np.ndarray:
    return np.abs(_rng(5).normal(0.001, 0.002, 60)) + 1e-5


CASES = {
    "daily": case_daily,
    "ten_years": case_ten_years,
    "flat_stretches": case_flat_stretches,
    "five_points": case_short,
    "three_points": case_three_points,
    "constant": case_constant,
    "all_gains": case_all_gains,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_summary_matches_quantstats(case: str) -> None:
    r = CASES[case]()
    equity = equity_from_returns(r, "2015-01-02")

    mine = M.summary(equity, include_series=False)
    ours_returns = M.returns_from_equity(equity)
    ref = qs_reference(naive(ours_returns))

    np.testing.assert_allclose(ours_returns.to_numpy(), r, rtol=1e-9, atol=1e-14)
    constant = case == "constant"
    bad = {k: (mine[k], v) for k, v in ref.items()
           if not close(mine[k], v) and not _deliberate(k, mine[k], v, constant)}
    assert not bad, bad
    if case == "constant":
        assert mine["volatility"] == 0.0
        assert all(math.isnan(mine[k]) for k in _UNDEFINED_WHEN_CONSTANT)


def test_nan_edges_are_dropped_like_quantstats_skips_them() -> None:
    r = case_daily()
    equity = equity_from_returns(r, "2016-03-01")
    with_nans = equity.copy()
    with_nans.iloc[:3] = np.nan
    with_nans.iloc[-2:] = np.nan

    mine = M.summary(with_nans, include_series=False)
    # QuantStats reading the same equity as prices: pct_change leaves NaN returns at both edges
    prices = naive(with_nans)
    qs_returns = prices.pct_change(fill_method=None)
    ref = qs_reference(qs_returns.dropna())

    assert mine["periods"] == len(r) - 5
    bad = {k: (mine[k], v) for k, v in ref.items() if not close(mine[k], v) and not _deliberate(k, mine[k], v)}
    assert not bad, bad
    # the statistics QuantStats computes on observed data agree even with the NaN rows kept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, fn in [("sharpe", qs.stats.sharpe), ("sortino", qs.stats.sortino),
                         ("volatility", qs.stats.volatility), ("skew", qs.stats.skew)]:
            assert close(mine[name], fn(qs_returns)), name


def test_intraday_is_resampled_to_session_closes() -> None:
    # 5-minute bars from 13:30 to 21:00 UTC on 20 weekdays (summer: NYSE 13:30-20:00 UTC)
    days = pd.bdate_range("2024-06-03", periods=20, tz="UTC")  # no half day before July 3
    days = days[days.strftime("%m-%d") != "06-19"]  # Juneteenth: closed
    stamps = pd.DatetimeIndex(np.concatenate(
        [pd.date_range(d + pd.Timedelta(hours=13, minutes=30), d + pd.Timedelta(hours=21), freq="5min")
         .tz_convert(None).to_numpy() for d in days])).tz_localize("UTC")
    equity = pd.Series(1e5 * np.cumprod(1 + _rng(7).normal(0, 0.0008, len(stamps))), index=stamps)
    equity = equity[equity.index <= days[-1] + pd.Timedelta(hours=20)]  # no after-hours tail to roll over

    mine = M.summary(equity, include_series=False)

    # independent daily series: the last bar at or before 20:00 UTC each day is the session close;
    # bars after 20:00 belong to the next session, whose close value is its own last bar <= 20:00
    at_or_before_close = equity[(equity.index.hour < 20) | ((equity.index.hour == 20) & (equity.index.minute == 0))]
    daily = at_or_before_close.groupby(at_or_before_close.index.date).last()
    daily_returns = pd.Series(daily.to_numpy()[1:] / daily.to_numpy()[:-1] - 1,
                              index=pd.to_datetime(daily.index[1:]))
    ref = qs_reference(daily_returns)
    assert mine["periods"] == len(days) - 1
    bad = {k: (mine[k], v) for k, v in ref.items() if not close(mine[k], v) and not _deliberate(k, mine[k], v)}
    assert not bad, bad


def test_drawdown_periods_match_quantstats_details() -> None:
    r = pd.Series(case_ten_years(), index=pd.bdate_range("2012-01-02", periods=2520, tz="UTC"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = qs.stats.drawdown_details(qs.stats.to_drawdown_series(naive(r)))

    table = M.drawdown_periods(r).to_frame()

    assert len(table) == len(ref)
    assert list(table["start"].dt.strftime("%Y-%m-%d")) == list(ref["start"])
    assert list(table["valley"].dt.strftime("%Y-%m-%d")) == list(ref["valley"])
    assert list(table["end"].dt.strftime("%Y-%m-%d")) == list(ref["end"])
    assert list(table["days"]) == list(ref["days"])
    np.testing.assert_allclose(table["depth"].to_numpy() * 100, ref["max drawdown"].to_numpy(), rtol=REL)
    worst = M.drawdown_periods(r).worst(3)
    assert list(worst["depth"]) == sorted(table["depth"])[:3]


def test_drawdown_series_and_rolling_match_quantstats() -> None:
    r = pd.Series(case_flat_stretches(), index=pd.bdate_range("2019-01-02", periods=400, tz="UTC"))
    rn = naive(r)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_dd = qs.stats.to_drawdown_series(rn)
        ref_rs = qs.stats.rolling_sharpe(rn, rolling_period=63)
        ref_rso = qs.stats.rolling_sortino(rn, rolling_period=63)
        ref_rv = qs.stats.rolling_volatility(rn, rolling_period=63)

    np.testing.assert_allclose(M.drawdown_series(r).to_numpy(), ref_dd.to_numpy(), rtol=REL, atol=1e-15)
    np.testing.assert_allclose(M.rolling_sharpe(r, 63).to_numpy(), ref_rs.to_numpy(), rtol=1e-8, equal_nan=True)
    np.testing.assert_allclose(M.rolling_sortino(r, 63).to_numpy(), ref_rso.to_numpy(), rtol=1e-8, equal_nan=True)
    np.testing.assert_allclose(M.rolling_volatility(r, 63).to_numpy(), ref_rv.to_numpy(), rtol=1e-8, equal_nan=True)


def test_monthly_table_matches_quantstats_where_data_exists() -> None:
    r = pd.Series(case_ten_years()[:700], index=pd.bdate_range("2018-03-05", periods=700, tz="UTC"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = qs.stats.monthly_returns(naive(r))

    mine = M.monthly_returns_table(r)

    assert list(mine.index) == [int(y) for y in ref.index]
    ours = mine.to_numpy()
    theirs = ref.to_numpy()
    observed = ~np.isnan(ours)
    np.testing.assert_allclose(ours[observed], theirs[observed], rtol=REL, atol=1e-15)
    # deliberate difference: months without data are NaN here, 0 in QuantStats
    assert np.all(theirs[~observed] == 0)
    assert np.isnan(mine.loc[2018, "JAN"])


def test_benchmark_metrics_match_quantstats() -> None:
    rng = _rng(11)
    b = rng.normal(0.0004, 0.01, 800)
    r = 0.6 * b + rng.normal(0.0002, 0.006, 800)
    equity = equity_from_returns(r, "2017-01-02")
    bench_prices = equity_from_returns(b, "2017-01-02", base=250.0)

    mine = M.summary(equity, benchmark=bench_prices, include_series=False)
    rn = naive(M.returns_from_equity(equity))
    bn = naive(M.returns_from_equity(bench_prices))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        greeks = qs.stats.greeks(rn, bn)
        ir = qs.stats.information_ratio(rn, bn)
        corr = rn.corr(bn)

    assert close(mine["beta"], greeks["beta"])
    assert close(mine["alpha"], greeks["alpha"])
    assert close(mine["information_ratio"], ir)
    assert close(mine["correlation"], corr)


def test_win_rate_and_extremes_match_quantstats() -> None:
    r = pd.Series(case_flat_stretches(), index=pd.bdate_range("2019-01-02", periods=400, tz="UTC"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert close(M.win_rate(r), qs.stats.win_rate(naive(r)))
        assert close(M.conditional_value_at_risk(r, method="historical"),
                     qs.stats.conditional_value_at_risk(naive(r), method="historical"))
