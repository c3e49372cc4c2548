"""Figures and formats as the browser gets them: dates as dates, one money format, slot heights."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from dashboard.components import figures, fmt
from dashboard.pages import overview

MONEY_RE = re.compile(r"^[+\u2212]?\$\d{1,3}(,\d{3})*(\.\d\d)?$")


def _daily_index(unit: str) -> pd.DatetimeIndex:
    # the read model builds daily indexes from int64 ns timestamps (datetime64[ns]); seeded test
    # frames often come from pd.date_range (datetime64[us] under pandas 3): both must reach plotly as dates
    ts_ns = (np.arange(5, dtype=np.int64) * 86_400 + 1_780_000_000) * 1_000_000_000
    idx = pd.DatetimeIndex(ts_ns.view("datetime64[ns]"), tz="UTC").tz_convert("America/New_York")
    return pd.DatetimeIndex(idx.normalize().tz_localize(None).as_unit(unit))


@pytest.mark.parametrize("unit", ["ns", "us", "ms", "s"])
def test_time_axes_reach_the_browser_as_iso_dates(unit: str) -> None:
    x = _daily_index(unit)
    agg = figures.plain(figures.aggregate(x, np.arange(5.0), np.ones(5), tz_label="UTC", theme=None))
    roll = figures.plain(figures.rolling(x, np.zeros(5), np.ones(5), window=63, tz_label="UTC", theme=None))
    for fig in (agg, roll):
        for trace in fig["data"]:
            assert trace["x"] == ["2026-05-28T00:00:00", "2026-05-29T00:00:00", "2026-05-30T00:00:00",
                                  "2026-05-31T00:00:00", "2026-06-01T00:00:00"]
        assert fig["layout"]["xaxis"]["type"] == "date"


def test_sub_second_times_keep_their_milliseconds() -> None:
    x = pd.DatetimeIndex(np.array([0, 250_000_000], dtype=np.int64).view("datetime64[ns]"))
    trace = figures.plain(figures.rolling(x, [1.0, 2.0], [0.1, 0.2], window=2, tz_label="UTC", theme=None))["data"][0]
    assert trace["x"] == ["1970-01-01T00:00:00.000", "1970-01-01T00:00:00.250"]


def test_money_axes_use_the_page_money_format_not_a_prefix() -> None:
    built = [  # (figure, its money axis: the bars are horizontal)
        (figures.aggregate(_daily_index("ns"), np.arange(5.0), np.ones(5), tz_label="UTC", theme=None), "yaxis"),
        (figures.bars(["AAPL", "MSFT"], [-1000.0, 250.0], "Net P&L", None), "xaxis"),
        (figures.trade_path([], {}, None, tz_label="UTC"), "yaxis"),
    ]
    for fig, money_axis in built:
        axis = fig.to_plotly_json()["layout"][money_axis]
        assert "tickprefix" not in axis
        assert [stop["value"] for stop in axis["tickformatstops"]] == ["$,.2f", "$,.0f"]


@pytest.mark.parametrize(("value", "kwargs", "expected"), [
    (-1000, {}, "\u2212$1,000.00"),
    (-264.92, {}, "\u2212$264.92"),
    (1234567.891, {}, "$1,234,567.89"),
    (5, {"sign": True}, "+$5.00"),
    (-52967.4, {"decimals": 0}, "\u2212$52,967"),
    (0, {"sign": True}, "$0.00"),
])
def test_money_is_one_format(value: float, kwargs: dict[str, object], expected: str) -> None:
    text = fmt.money(value, **kwargs)  # type: ignore[arg-type]
    assert text == expected
    assert MONEY_RE.match(text)


def test_plain_figures_leave_the_height_to_their_slot() -> None:
    # dcc.Graph sizes a figure without a width from its container; a layout height that differs from
    # the slot's (an empty state in a shorter slot) would overflow the card
    for fig in (figures.empty("nothing", None), figures.distribution([0.01, -0.02], None)):
        assert "height" not in figures.plain(fig)["layout"]
    assert set(figures.GRAPH_HEIGHT_PX) >= {"ov-aggregate", "dest-equity", "dest-monthly", "dest-calendar",
                                            "dest-rolling", "dest-dist", "trade-path"}


def test_calendar_rows_are_labelled_by_their_weekday() -> None:
    # two weeks of Tuesdays to Fridays: no Monday row, so the first row is Tuesday, not "Mon"
    days = [d for d in pd.date_range("2026-03-02", "2026-03-15", freq="D") if d.day_of_week in (1, 2, 3, 4)]
    fig = figures.daily_calendar(pd.Series(np.arange(len(days), dtype=float), index=days), None)
    assert list(fig.to_plotly_json()["data"][0]["y"]) == ["Tue", "Wed", "Thu", "Fri"]


def test_live_equity_closes_today() -> None:
    daily = pd.DataFrame({"equity": [100.0, 110.0], "net_deposits": [50.0, 50.0]},
                         index=pd.DatetimeIndex(["2020-01-01", "2020-01-02"]))
    moved = overview._with_live_equity(daily, 123.0, "UTC")
    assert list(moved["equity"]) == [100.0, 110.0, 123.0]
    assert moved.index[-1] == pd.Timestamp.now(tz="UTC").normalize().tz_localize(None)
    assert moved["net_deposits"].iloc[-1] == 50.0
    today = overview._with_live_equity(moved.iloc[:-1].rename(index={moved.index[1]: moved.index[-1]}), 99.0, "UTC")
    assert list(today["equity"]) == [100.0, 99.0]
