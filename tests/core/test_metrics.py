"""Metrics: time-weighted returns with cash flows, input validation, trade statistics."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from core import metrics as M
from core.errors import InvalidInput
from core.records import Direction, ExitReason, RoundTrip


def _equity(values: list[float], start: str = "2024-03-04", freq: str = "B") -> pd.Series:
    return pd.Series(values, index=pd.date_range(start, periods=len(values), freq=freq, tz="UTC"), dtype=float)


def test_deposit_is_not_a_gain_and_withdrawal_is_not_a_loss() -> None:
    equity = _equity([100.0, 110.0, 160.0, 176.0, 100.0])
    flows = pd.Series([50.0, -80.0], index=[equity.index[2] - pd.Timedelta(hours=3), equity.index[4]])

    r = M.returns_from_equity(equity, flows)

    # 100 -> 110 is +10%; +50 deposit then 160 is flat; 160 -> 176 is +10%; -80 then 100 is +4.1667%
    np.testing.assert_allclose(r.to_numpy(), [0.10, 0.0, 0.10, 100 / 96 - 1], rtol=1e-12)
    assert M.cumulative_return(r) == pytest.approx(1.1 * 1.1 * (100 / 96) - 1, rel=1e-12)


def test_simultaneous_and_unsorted_flows_are_summed() -> None:
    equity = _equity([100.0, 130.0, 132.6])
    t = equity.index[1] - pd.Timedelta(hours=1)
    flows = pd.Series([20.0, 10.0, 0.0], index=[t, t, equity.index[0] - pd.Timedelta(days=3)])

    r = M.returns_from_equity(equity, flows)

    np.testing.assert_allclose(r.to_numpy(), [0.0, 0.02], atol=1e-15)


def test_flows_from_cumulative_net_deposits() -> None:
    equity = _equity([1000.0, 1010.0, 1510.0, 1520.0])
    cumulative = pd.Series([1000.0, 1000.0, 1500.0, 1500.0], index=equity.index)

    flows = M.flows_from_cumulative(cumulative)
    r = M.returns_from_equity(equity, flows)

    assert list(flows) == [500.0]
    np.testing.assert_allclose(r.to_numpy(), [0.01, 0.0, 1520 / 1510 - 1])


def test_flows_before_first_and_after_last_observation_are_ignored() -> None:
    equity = _equity([100.0, 101.0])
    flows = pd.Series([1000.0, 5.0], index=[equity.index[0] - pd.Timedelta(days=1), equity.index[1] + pd.Timedelta(days=1)])

    r = M.returns_from_equity(equity, flows)

    np.testing.assert_allclose(r.to_numpy(), [0.01])


def test_withdrawing_everything_is_refused_with_the_row() -> None:
    equity = _equity([100.0, 50.0])
    flows = pd.Series([-100.0], index=[equity.index[1]])
    with pytest.raises(InvalidInput, match="row 1"):
        M.returns_from_equity(equity, flows)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ([100.0, 0.0, 101.0], "row 1"),
        ([100.0, 101.0, -5.0], "row 2"),
        ([100.0, math.inf, 101.0], "row 1"),
        ([100.0, 101.0, -math.inf], "row 2"),
    ],
)
def test_bad_equity_values_name_the_row(values: list[float], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        M.summary(_equity(values))


def test_naive_index_is_refused() -> None:
    s = pd.Series([1.0, 2.0], index=pd.date_range("2024-01-02", periods=2))
    with pytest.raises(InvalidInput, match="naive"):
        M.summary(s)


def test_non_monotonic_index_names_the_row() -> None:
    idx = pd.DatetimeIndex(["2024-01-02", "2024-01-04", "2024-01-03"], tz="UTC")
    with pytest.raises(InvalidInput, match="row 2"):
        M.summary(pd.Series([1.0, 2.0, 3.0], index=idx))


def test_duplicate_timestamp_is_refused() -> None:
    idx = pd.DatetimeIndex(["2024-01-02", "2024-01-02"], tz="UTC")
    with pytest.raises(InvalidInput, match="row 1"):
        M.returns_from_equity(pd.Series([1.0, 2.0], index=idx))


def test_nan_cash_flow_is_refused() -> None:
    equity = _equity([100.0, 101.0])
    with pytest.raises(InvalidInput, match="cash_flows: row 0"):
        M.returns_from_equity(equity, pd.Series([math.nan], index=[equity.index[1]]))


def test_interior_nan_is_a_gap_not_a_zero() -> None:
    r = M.returns_from_equity(_equity([100.0, math.nan, 121.0]))
    np.testing.assert_allclose(r.to_numpy(), [0.21])


def test_summary_on_tiny_series_does_not_crash() -> None:
    for values in ([100.0], [100.0, 101.0], [100.0, 101.0, 99.0]):
        out = M.summary(_equity(values))
        assert out["periods"] == len(values) - 1


def test_drawdown_never_recovered_from_the_start_is_one_period() -> None:
    r = M.returns_from_equity(_equity([100.0, 90.0, 95.0, 80.0, 85.0]))

    table = M.drawdown_periods(r)

    assert len(table.depth) == 1
    assert table.depth[0] == pytest.approx(-0.2)
    assert not table.recovered[0]
    assert table.periods[0] == 4


def test_period_returns_compound_within_the_month() -> None:
    idx = pd.DatetimeIndex(["2024-01-30", "2024-01-31", "2024-02-01"], tz="UTC")
    r = pd.Series([0.1, 0.1, -0.5], index=idx)

    monthly = M.period_returns(r, "M")

    np.testing.assert_allclose(monthly.to_numpy(), [0.21, -0.5])


def test_cumulative_returns_compound() -> None:
    r = pd.Series([0.1, np.nan, -0.5], index=pd.bdate_range("2024-01-02", periods=3, tz="UTC"))
    np.testing.assert_allclose(M.cumulative_returns(r).to_numpy(), [0.1, 0.1, -0.45])


def test_annualisation_is_explicit() -> None:
    r = pd.Series(np.random.default_rng(3).normal(0.001, 0.01, 300),
                  index=pd.bdate_range("2020-01-01", periods=300, tz="UTC"))
    assert M.sharpe(r, periods_per_year=365) == pytest.approx(M.sharpe(r) * math.sqrt(365 / 252))
    assert M.volatility(r, annualize=False) == pytest.approx(float(np.std(r.to_numpy(), ddof=1)))


def test_intraday_resampling_can_be_disabled() -> None:
    equity = _equity([100.0, 101.0, 102.0, 101.0], start="2024-03-04 15:00", freq="h")
    assert M.summary(equity, include_series=False)["periods"] == 0  # one session
    assert M.summary(equity, resample=False, include_series=False)["periods"] == 3


def _trip(net: str, exit_day: int, hold_h: int = 2) -> RoundTrip:
    exit_time = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=exit_day)
    return RoundTrip(
        trade_id=f"t{exit_day}", symbol="X", direction=Direction.LONG, qty=Decimal(1),
        entry_time=exit_time - timedelta(hours=hold_h), exit_time=exit_time, entry_price=Decimal(100),
        exit_price=Decimal(100) + Decimal(net), gross_pl=Decimal(net), fees=Decimal(0), net_pl=Decimal(net),
        return_pct=float(net), holding_s=hold_h * 3600.0, exit_reason=ExitReason.MANUAL, entry_order_id=None,
        exit_order_id=None, is_orphan=False, open_fills=(), close_fills=(),
    )


def test_trade_statistics() -> None:
    trips = [_trip("10", 1), _trip("20", 2), _trip("-5", 3), _trip("-15", 4), _trip("-1", 5), _trip("30", 6, 4)]

    stats = M.trade_stats(reversed(trips))

    assert stats["trades"] == 6
    assert stats["win_rate"] == pytest.approx(0.5)
    assert stats["profit_factor"] == pytest.approx(60 / 21)
    assert stats["avg_win"] == pytest.approx(20.0)
    assert stats["avg_loss"] == pytest.approx(-7.0)
    assert stats["payoff_ratio"] == pytest.approx(20 / 7)
    assert stats["expectancy"] == pytest.approx(39 / 6)
    assert stats["max_consecutive_wins"] == 2
    assert stats["max_consecutive_losses"] == 3
    assert stats["avg_holding_s"] == pytest.approx((5 * 2 + 4) * 3600 / 6)


def test_trade_statistics_edge_cases() -> None:
    assert math.isnan(M.trade_stats([])["win_rate"])
    assert M.trade_stats([_trip("1", 1)])["profit_factor"] == math.inf


def test_summary_has_every_metric_and_series() -> None:
    r = np.random.default_rng(5).normal(0.0005, 0.01, 300)
    equity = _equity(list(1e4 * np.r_[1, np.cumprod(1 + r)]))
    bench = _equity(list(300 * np.r_[1, np.cumprod(1 + np.random.default_rng(6).normal(0, 0.01, 300))]))

    out = M.summary(equity, benchmark=bench, trips=[_trip("1", 1)], rolling_window=20)

    for key in ("cumulative_return", "cagr", "volatility", "sharpe", "smart_sharpe", "sortino", "smart_sortino",
                "calmar", "omega", "max_drawdown", "longest_drawdown_days", "ulcer_index", "var", "cvar", "skew",
                "kurtosis", "best_day", "worst_day", "best_month", "worst_month", "win_rate_days", "beta", "alpha",
                "correlation", "information_ratio", "trades", "drawdown", "drawdown_periods", "monthly_returns",
                "rolling_sharpe", "rolling_sortino", "rolling_volatility"):
        assert key in out, key
    assert out["rolling_sharpe"].notna().sum() == 300 - 19
    assert len(out["drawdown_periods"]) <= 5
    assert out["monthly_returns"].shape[1] == 13
