"""Charts and KPI rows of the strategy and comparison pages (pure drawing over plain series)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.io as pio

from dashboard.components import figures, fmt
from dashboard.pages.common import kpi, tone_of

PALETTE = ("#3b7dd8", "#2e9e5b", "#d6892f", "#8e5bd6", "#d64545", "#2aa7a7", "#a0a53a", "#c55a9b", "#5b6fd6",
           "#7a7a7a")
BENCH_COLOUR = "#8a94a6"
GROWTH_HEIGHT_PX = 420
# Growth of $1 at up to three decimals, trailing zeros trimmed (0.985, 0.99, 1): ".2f" drew a quiet
# account's 0.985 and 0.995 as 0.99 and 1.00, repeating labels
GROWTH_TICKS = ".3~f"
COMPARE_HEIGHT_PX = 380


_TEMPLATES: dict[str, dict[str, Any]] = {}


def _template(theme: str | None) -> dict[str, Any]:
    """The plotly template as plain JSON, built once per process (validating it per figure costs ~50 ms)."""
    name = figures.template(theme)
    if name not in _TEMPLATES:
        _TEMPLATES[name] = pio.templates[name].to_plotly_json()
    return _TEMPLATES[name]


def _dates(index: pd.Index) -> list[str]:
    """ISO dates: plotly reads them as dates whatever the index's zone (a day is a New York date)."""
    idx = pd.DatetimeIndex(index)
    if idx.tz is not None:
        idx = idx.tz_convert("America/New_York").tz_localize(None)
    return list(idx.strftime("%Y-%m-%d"))


def _values(series: pd.Series | np.ndarray) -> list[float | None]:
    arr = np.asarray(series, dtype=float)
    return [None if not math.isfinite(v) else v for v in arr.tolist()]


def _line(x: list[str], y: list[float | None], name: str, line: dict[str, Any], hover: str, **extra: Any
          ) -> dict[str, Any]:
    return {"type": "scatter", "mode": "lines", "x": x, "y": y, "name": name, "line": line,
            "hovertemplate": hover + "<extra>" + name.replace("<", "") + "</extra>", **extra}


LEGEND_ROWS_PX = 2 * figures.LEGEND_ROW_PX - 10
"""The top margin: room for the legend's two rows on a phone (one on a desktop), never over the plot."""
DATE_TICKS = 4
"""At most this many date ticks: a phone's card has room for four two-line "Jul / 2026" labels."""


def _layout(theme: str | None, **axes: Any) -> dict[str, Any]:
    # the legend in the top margin, its bottom on the plot's top edge (below the dates it covered the
    # tick labels; over the plot it hid the data), as on the destination page's charts
    return {"template": _template(theme), "margin": {"l": 55, "r": 15, "t": LEGEND_ROWS_PX, "b": 35},
            "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
            "legend": {"orientation": "h", "y": 1.0, "x": 0, "yanchor": "bottom"}, "hovermode": "x unified",
            "uirevision": "keep", **axes}


def growth_figure(growth: pd.Series, cum_pnl: pd.Series, bench_growth: pd.Series | None,
                  relative_dd: pd.Series | None, *, bench_label: str, theme: str | None,
                  empty_text: str = "No round trips for this strategy yet.") -> dict[str, Any]:
    """Growth of $1 (and the benchmark's), cumulative P&L (left out when empty), and the relative (or
    plain) drawdown below."""
    if growth.empty:
        return figures.plain(figures.empty(empty_text, theme, height=GROWTH_HEIGHT_PX))
    x = _dates(growth.index)
    # legend names short enough for the legend's rows on a phone
    data = [_line(x, _values(growth), "Growth of $1", {"color": PALETTE[0], "width": 1.8}, "%{y:.4f}")]
    if not cum_pnl.empty:
        data.append(_line(_dates(cum_pnl.index), _values(cum_pnl), "P&L",
                          {"color": PALETTE[1], "width": 1, "dash": "dot"}, "%{y:$,.2f}", yaxis="y2"))
    if bench_growth is not None and not bench_growth.empty:
        data.append(_line(_dates(bench_growth.index), _values(bench_growth), bench_label,
                          {"color": BENCH_COLOUR, "width": 1.4}, "%{y:.4f}"))
    if relative_dd is not None and not relative_dd.empty:
        dd, dd_name = relative_dd, f"Drawdown vs {bench_label}"
    else:
        wealth = growth.to_numpy(dtype=float)
        dd = pd.Series(wealth / np.maximum.accumulate(np.maximum(wealth, 1e-12)) - 1.0, index=growth.index)
        dd_name = "Drawdown"
    data.append(_line(_dates(dd.index), _values(dd), dd_name, {"color": figures.DOWN, "width": 1}, "%{y:.2%}",
                      fill="tozeroy", xaxis="x2", yaxis="y3"))
    # two rows on one time axis (the top one's dates hidden), P&L on the top row's right
    layout = _layout(theme,
                     xaxis={"type": "date", "anchor": "y", "domain": [0, 1], "matches": "x2", "showticklabels": False},
                     xaxis2={"type": "date", "anchor": "y3", "domain": [0, 1], "nticks": DATE_TICKS},
                     yaxis={"title": {"text": "Growth of $1"}, "tickformat": GROWTH_TICKS, "domain": [0.31, 1]},
                     yaxis2={"title": {"text": "P&L"}, "tickformat": "$,.0f", "overlaying": "y", "side": "right",
                             "showgrid": False, "anchor": "x"},
                     yaxis3={"tickformat": figures.DRAWDOWN_TICKS, "domain": [0, 0.27], "anchor": "x2"})
    return {"data": data, "layout": layout}


def compare_figure(curves: Sequence[tuple[str, pd.Series]], theme: str | None) -> dict[str, Any]:
    """Overlaid growth-of-$1 curves, one per compared item (the benchmark grey)."""
    if not curves:
        return figures.plain(figures.empty("Pick destinations or strategies to compare.", theme,
                                           height=COMPARE_HEIGHT_PX))
    data = []
    colour = 0
    for label, growth in curves:
        is_bench = label.startswith("Benchmark")
        line = {"color": BENCH_COLOUR, "width": 1.4, "dash": "dash"} if is_bench else {
            "color": PALETTE[colour % len(PALETTE)], "width": 1.6}
        colour += 0 if is_bench else 1
        data.append(_line(_dates(growth.index), _values(growth), label, line, "%{y:.4f}"))
    layout = _layout(theme, xaxis={"type": "date", "nticks": DATE_TICKS},
                     yaxis={"title": {"text": "Growth of $1"}, "tickformat": GROWTH_TICKS})
    return {"data": data, "layout": layout}


def _f(values: Mapping[str, Any], key: str) -> float | None:
    v = values.get(key)
    return float(v) if isinstance(v, int | float) and math.isfinite(float(v)) else None


def kpi_row(values: Mapping[str, Any], bench: Mapping[str, Any] | None, bench_label: str | None) -> list[Any]:
    """The strategy page's KPI cards: P&L first, then the destination page's ratios, then the benchmark's."""
    cards = [
        kpi("Realized P&L", fmt.money(_f(values, "realized_pl"), sign=True), tone=tone_of(_f(values, "realized_pl"))),
        kpi("Unrealized P&L", fmt.money(_f(values, "unrealized_pl"), sign=True),
            tone=tone_of(_f(values, "unrealized_pl")), sub=f"{int(values.get('open_positions') or 0)} open"),
        kpi("Fees", fmt.money(_f(values, "fees"))),
        kpi("Total return", fmt.pct(_f(values, "total_return"), sign=True), tone=tone_of(_f(values, "total_return")),
            sub="on gross exposure"),
        kpi("CAGR", fmt.pct(_f(values, "cagr"), sign=True)),
        kpi("Sharpe", fmt.num(_f(values, "sharpe"))),
        kpi("Sortino", fmt.num(_f(values, "sortino"))),
        kpi("Max drawdown", fmt.pct(_f(values, "max_drawdown"))),
        kpi("Volatility", fmt.pct(_f(values, "volatility"))),
        kpi("Trades", f"{int(values.get('trades') or 0):,}"),
        kpi("Win rate", fmt.pct(_f(values, "win_rate"))),
        kpi("Profit factor", fmt.num(_f(values, "profit_factor"))),
        kpi("Expectancy", fmt.money(_f(values, "expectancy"), sign=True)),
    ]
    if bench is not None and bench_label:
        cards += bench_kpis(bench, bench_label)
    return cards


def bench_kpis(bench: Mapping[str, Any], bench_label: str) -> list[Any]:
    """The benchmark's cards: alpha, beta, correlation and R², IR, tracking error, excess return, capture."""
    return [
        kpi(f"Alpha vs {bench_label}", fmt.pct(_f(bench, "alpha"), sign=True), sub="annualised"),
        kpi(f"Beta vs {bench_label}", fmt.num(_f(bench, "beta"))),
        kpi("Correlation", fmt.num(_f(bench, "correlation")), sub=f"R² {fmt.num(_f(bench, 'r_squared'))}"),
        kpi("Information ratio", fmt.num(_f(bench, "information_ratio")), sub="per day"),
        kpi("Tracking error", fmt.pct(_f(bench, "tracking_error"))),
        kpi("Excess return", fmt.pct(_f(bench, "excess_return"), sign=True), tone=tone_of(_f(bench, "excess_return"))),
        kpi("Up / down capture", f"{fmt.num(_f(bench, 'up_capture'))} / {fmt.num(_f(bench, 'down_capture'))}"),
    ]
