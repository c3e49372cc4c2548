"""Charts and KPI rows of the strategy and comparison pages (pure drawing over plain series)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.components import figures, fmt
from dashboard.pages.common import kpi, tone_of

PALETTE = ("#3b7dd8", "#2e9e5b", "#d6892f", "#8e5bd6", "#d64545", "#2aa7a7", "#a0a53a", "#c55a9b", "#5b6fd6",
           "#7a7a7a")
BENCH_COLOUR = "#8a94a6"
GROWTH_HEIGHT_PX = 420
COMPARE_HEIGHT_PX = 380


def _dates(index: pd.Index) -> list[str]:
    """ISO dates: plotly reads them as dates whatever the index's zone (a day is a New York date)."""
    idx = pd.DatetimeIndex(index)
    if idx.tz is not None:
        idx = idx.tz_convert("America/New_York").tz_localize(None)
    return [d.strftime("%Y-%m-%d") for d in idx]


def _layout(fig: go.Figure, theme: str | None, height: int) -> go.Figure:
    fig.update_layout(template=figures.template(theme), height=height, margin={"l": 55, "r": 15, "t": 30, "b": 35},
                      paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
                      legend={"orientation": "h", "y": -0.1, "x": 0, "yanchor": "top"}, hovermode="x unified",
                      uirevision="keep")
    return fig


def growth_figure(growth: pd.Series, cum_pnl: pd.Series, bench_growth: pd.Series | None,
                  relative_dd: pd.Series | None, *, bench_label: str, theme: str | None) -> dict[str, Any]:
    """Growth of $1 (and the benchmark's), cumulative P&L, and the relative (or plain) drawdown below."""
    if growth.empty:
        return figures.plain(figures.empty("No round trips for this strategy yet.", theme, height=GROWTH_HEIGHT_PX))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.05,
                        specs=[[{"secondary_y": True}], [{}]])
    x = _dates(growth.index)
    fig.add_trace(go.Scatter(x=x, y=growth.to_numpy(), name="Growth of $1", line={"color": PALETTE[0], "width": 1.8},
                             hovertemplate="%{y:.4f}<extra>Growth of $1</extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=_dates(cum_pnl.index), y=cum_pnl.to_numpy(), name="Cumulative P&L",
                             line={"color": PALETTE[1], "width": 1, "dash": "dot"},
                             hovertemplate="%{y:$,.2f}<extra>Cumulative P&L</extra>"), row=1, col=1, secondary_y=True)
    if bench_growth is not None and not bench_growth.empty:
        fig.add_trace(go.Scatter(x=_dates(bench_growth.index), y=bench_growth.to_numpy(), name=f"{bench_label} (growth of $1)",
                                 line={"color": BENCH_COLOUR, "width": 1.4},
                                 hovertemplate="%{y:.4f}<extra>" + bench_label + "</extra>"), row=1, col=1)
    if relative_dd is not None and not relative_dd.empty:
        dd, dd_name = relative_dd, f"Drawdown relative to {bench_label}"
    else:
        wealth = growth.to_numpy()
        dd = pd.Series(wealth / np.maximum.accumulate(np.maximum(wealth, 1e-12)) - 1.0, index=growth.index)
        dd_name = "Drawdown"
    fig.add_trace(go.Scatter(x=_dates(dd.index), y=dd.to_numpy(), name=dd_name, fill="tozeroy",
                             line={"color": figures.DOWN, "width": 1},
                             hovertemplate="%{y:.2%}<extra>" + dd_name + "</extra>"), row=2, col=1)
    fig.update_yaxes(title_text="Growth of $1", tickformat=".2f", row=1, col=1, secondary_y=False)
    fig.update_yaxes(title_text="P&L", tickformat="$,.0f", row=1, col=1, secondary_y=True, showgrid=False)
    fig.update_yaxes(tickformat=".0%", row=2, col=1)
    fig.update_xaxes(type="date", row=1, col=1)
    # no axis title: at 390 px it collides with the rotated dates and the legend (the section says New York days)
    fig.update_xaxes(type="date", row=2, col=1)
    return figures.plain(_layout(fig, theme, GROWTH_HEIGHT_PX))


def compare_figure(curves: Sequence[tuple[str, pd.Series]], theme: str | None) -> dict[str, Any]:
    """Overlaid growth-of-$1 curves, one per compared item (the benchmark grey)."""
    if not curves:
        return figures.plain(figures.empty("Pick destinations or strategies to compare.", theme,
                                           height=COMPARE_HEIGHT_PX))
    fig = go.Figure()
    colour = 0
    for label, growth in curves:
        is_bench = label.startswith("Benchmark")
        line = {"color": BENCH_COLOUR, "width": 1.4, "dash": "dash"} if is_bench else {
            "color": PALETTE[colour % len(PALETTE)], "width": 1.6}
        colour += 0 if is_bench else 1
        fig.add_trace(go.Scatter(x=_dates(growth.index), y=growth.to_numpy(), name=label, line=line,
                                 hovertemplate="%{y:.4f}<extra>" + label.replace("<", "") + "</extra>"))
    fig.update_yaxes(title_text="Growth of $1", tickformat=".2f")
    fig.update_xaxes(type="date")
    return figures.plain(_layout(fig, theme, COMPARE_HEIGHT_PX))


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
        cards += [
            kpi(f"Alpha vs {bench_label}", fmt.pct(_f(bench, "alpha"), sign=True), sub="annualised"),
            kpi(f"Beta vs {bench_label}", fmt.num(_f(bench, "beta"))),
            kpi("Correlation", fmt.num(_f(bench, "correlation")), sub=f"R² {fmt.num(_f(bench, 'r_squared'))}"),
            kpi("Information ratio", fmt.num(_f(bench, "information_ratio")), sub="per day"),
            kpi("Tracking error", fmt.pct(_f(bench, "tracking_error"))),
            kpi("Excess return", fmt.pct(_f(bench, "excess_return"), sign=True),
                tone=tone_of(_f(bench, "excess_return"))),
            kpi("Up / down capture", f"{fmt.num(_f(bench, 'up_capture'))} / {fmt.num(_f(bench, 'down_capture'))}"),
        ]
    return cards
