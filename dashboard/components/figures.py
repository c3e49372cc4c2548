"""Plotly figures. Every function takes plain arrays/frames and a theme and returns a ``go.Figure``.

All traces are already downsampled by the caller (:func:`dashboard.queries.downsample`); times arrive
as naive wall-clock values in the display zone, whose label goes on the axis.

Money axes use the page's one money format (``−$1,000``, as the grids' ``d3.format('$,.2f')`` and the
cards' :func:`dashboard.components.fmt.money`), never plotly's ``tickprefix`` (``$−1000``). Every graph
slot has a fixed height (:data:`GRAPH_HEIGHT_PX`), given to its container as well as to its figure.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.instruments import OptionRight, parse_occ

UP = "#2e9e5b"
DOWN = "#d64545"
ACCENT = "#3b7dd8"
MUTED = "#8a94a6"

# One height per graph slot, in CSS pixels: the figure's ``layout.height`` and its container's
# ``style.height`` (dashboard.pages.common.graph). dcc.Graph resizes a figure whose layout has no
# width by deleting ``layout.height`` and reading the container's height; a container sized only by
# its content then measures 0 px and the chart draws over the next card.
DRAWDOWN_TICKS = "~%"
"""Percent ticks at their own precision (see :func:`equity_underwater`)."""
EQUITY_HEIGHT_PX = 460
AGGREGATE_HEIGHT_PX = 320
MONTHLY_HEIGHT_PX = 220
CALENDAR_HEIGHT_PX = 220
PANEL_HEIGHT_PX = 280
TRADE_PATH_HEIGHT_PX = 340
BREAKDOWN_HEIGHT_PX = 420  # P&L by symbol / by exit reason: up to 24 horizontal bars, one label row each
GRAPH_HEIGHT_PX: dict[str, int] = {
    "ov-aggregate": AGGREGATE_HEIGHT_PX,
    "dest-equity": EQUITY_HEIGHT_PX,
    "dest-monthly": MONTHLY_HEIGHT_PX,
    "dest-calendar": CALENDAR_HEIGHT_PX,
    "dest-by-symbol": BREAKDOWN_HEIGHT_PX,
    "dest-by-reason": BREAKDOWN_HEIGHT_PX,
    "dest-rolling": PANEL_HEIGHT_PX,
    "dest-dist": PANEL_HEIGHT_PX,
    "trade-path": TRADE_PATH_HEIGHT_PX,
}

# d3-format money ticks: sign before the symbol and thousands separators (-1000 -> "−$1,000"), cents
# only when the ticks are closer than a dollar apart.
MONEY_TICKS: dict[str, Any] = {
    "tickformatstops": [
        {"dtickrange": [None, 1], "value": "$,.2f"},
        {"dtickrange": [1, None], "value": "$,.0f"},
    ],
}
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

RANGE_BUTTONS = [
    {"count": 1, "label": "1D", "step": "day", "stepmode": "backward"},
    {"count": 7, "label": "1W", "step": "day", "stepmode": "backward"},
    {"count": 1, "label": "1M", "step": "month", "stepmode": "backward"},
    {"count": 1, "label": "YTD", "step": "year", "stepmode": "todate"},
    {"count": 1, "label": "1Y", "step": "year", "stepmode": "backward"},
    {"label": "All", "step": "all"},
]


def template(theme: str | None) -> str:
    return "plotly_dark" if theme == "dark" else "plotly_white"


def range_selector(theme: str | None, *, y: float) -> dict[str, object]:
    dark = theme == "dark"
    return {"buttons": RANGE_BUTTONS, "x": 0, "y": y,
            "bgcolor": "rgba(128,128,128,0.18)", "activecolor": "rgba(59,125,216,0.55)",
            "font": {"color": "#e6e6e6" if dark else "#333333", "size": 11}}


LEGEND_ROW_PX = 36  # the top margin a one-row legend takes (29 px drawn, with its padding)
RANGE_BUTTONS_PX = 28  # the range buttons' row, above the legend's


def _above_legend(fig: go.Figure, height_px: int, bottom_px: int) -> float:
    """The range buttons' ``y`` (plot fraction) for a row just above the legend, and the top margin for both."""
    top_px = LEGEND_ROW_PX + RANGE_BUTTONS_PX
    fig.update_layout(margin={"t": top_px})
    plot_px = max(1, height_px - top_px - bottom_px)
    return 1 + (LEGEND_ROW_PX - 4) / plot_px


def _base(fig: go.Figure, theme: str | None, *, height: int | None = None) -> go.Figure:
    fig.update_layout(
        template=template(theme),
        margin={"l": 50, "r": 15, "t": LEGEND_ROW_PX, "b": 30},
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        # one row in the top margin, its bottom on the plot's top edge: over the plot it hid the data
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0},
        hovermode="x unified",
        uirevision="keep",  # keep zoom across live refreshes
    )
    # a tick label wider than the room at an axis's end (a date under the y ticks) is left out, not overlapped
    fig.update_xaxes(ticklabeloverflow="hide past domain")
    if height:
        fig.update_layout(height=height)
    return fig


def plain(fig: go.Figure) -> dict[str, Any]:
    """The figure as the plain ``{"data", "layout"}`` dict plotly.js reads.

    Memoise this, not the ``go.Figure``: caches pickle their values, and unpickling a ``go.Figure``
    rebuilds and re-validates every property (its template included), ~30 ms per figure, on every hit.
    """
    out: dict[str, Any] = fig.to_plotly_json()
    # The graph's container has the slot's height (GRAPH_HEIGHT_PX) and plotly fills it: a figure
    # height that differs from it (an empty-state figure in a shorter slot) would overflow the card.
    out.get("layout", {}).pop("height", None)
    # numpy arrays would reach the browser base64-encoded ("bdata") and become typed arrays there,
    # which a later ``Patch().extend`` (the live equity append) cannot extend: send plain lists.
    for trace in out.get("data", []):
        for key in ("x", "y"):
            value = trace.get(key)
            if isinstance(value, dict) and "bdata" in value and "shape" not in value:
                value = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
            if isinstance(value, np.ndarray):
                trace[key] = _plain_list(value)
    return out


def _plain_list(values: np.ndarray) -> list[Any]:
    """A JSON-ready list; times as ISO strings, which plotly.js reads as dates.

    ``tolist()`` of a ``datetime64[ns]`` array gives integers (a Python datetime cannot hold
    nanoseconds), and plotly.js would draw those on a linear axis as ``1.78×10^18``.
    """
    if values.dtype.kind == "M":
        whole_seconds = not (values.astype("datetime64[ns]").astype(np.int64) % 1_000_000_000).any()
        strings: Any = np.datetime_as_string(values, unit="s" if whole_seconds else "ms")
        return list(strings.tolist())
    return list(values.tolist())


def empty(message: str, theme: str | None, *, height: int = PANEL_HEIGHT_PX) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, font={"size": 14, "color": MUTED},
                       xref="paper", yref="paper", x=0.5, y=0.5)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _base(fig, theme, height=height)


def equity_underwater(
    x: Any, equity: Any, dd_x: Any, drawdown: Any, flows_x: Any, flows: Any, flows_y: Any, *, tz_label: str,
    theme: str | None,
) -> go.Figure:
    """Equity (top) and underwater drawdown (bottom) on one shared time axis, with range buttons."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.04)
    fig.add_trace(go.Scatter(x=x, y=equity, name="Equity", mode="lines", line={"color": ACCENT, "width": 1.6},
                               hovertemplate="%{y:$,.2f}<extra>Equity</extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=dd_x, y=drawdown, name="Drawdown", mode="lines", fill="tozeroy",
                               line={"color": DOWN, "width": 1}, hovertemplate="%{y:.2%}<extra>Drawdown</extra>"),
                  row=2, col=1)
    amounts = np.asarray(flows, dtype=float)
    if amounts.size:
        colours = [UP if f > 0 else DOWN for f in amounts]
        labels = [f"{'Deposit' if f > 0 else 'Withdrawal'} ${abs(f):,.0f}" for f in amounts]
        fig.add_trace(go.Scatter(x=flows_x, y=flows_y, mode="markers", name="Deposits / withdrawals",
                                 marker={"symbol": "diamond", "size": 11, "color": colours,
                                         "line": {"width": 1, "color": "white"}},
                                 text=labels, hovertemplate="%{text}<extra></extra>"), row=1, col=1)
    fig.update_xaxes(rangeselector=range_selector(theme, y=1.12), row=1, col=1)
    fig.update_xaxes(title_text=f"Time, {tz_label}", row=2, col=1)
    fig.update_yaxes(title_text="Equity", **MONEY_TICKS, row=1, col=1)
    # "~%": the ticks' own precision (0%, −0.5%, −1%): ".0%" drew a shallow drawdown's −0.5% and −1.5%
    # as −1% and −2%, repeating labels next to their neighbours
    fig.update_yaxes(title_text="Drawdown", tickformat=DRAWDOWN_TICKS, row=2, col=1)
    _base(fig, theme, height=EQUITY_HEIGHT_PX)
    # below the date ticks (two lines where the year shows) and the axis title: at -0.15 a phone's
    # slightly taller title line reached into the legend's first row
    fig.update_layout(legend={"y": -0.19, "yanchor": "top"})
    return fig


# Heatmap cell texts and ticks: at 390 px a card leaves ~270 px of plot, ~22 px a month column; a
# 10 px "Jan" or "−2.5" fits it, so neither plotly's auto-rotation nor its shrink-to-fit (which draws
# cell texts at 4 px on a phone) kicks in.
HEATMAP_FONT_PX = 10
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def percent_points(value: float) -> str:
    """A return as compact percent points for a heatmap cell: ``−2.5``, ``0.3``, ``12`` (≥ 10: no decimals)."""
    if not np.isfinite(value):
        return ""
    points = value * 100
    text = f"{abs(points):.0f}" if abs(points) >= 9.95 else f"{abs(points):.1f}"
    return ("\u2212" if points < 0 and text.strip("0.") else "") + text


def _heatmap_axes(fig: go.Figure) -> None:
    """Ticks upright in the heatmaps' small font; no zoom/pan (a phone's swipe scrolls the page)."""
    font = {"size": HEATMAP_FONT_PX}
    fig.update_xaxes(tickangle=0, tickfont=font, fixedrange=True, showgrid=False)
    fig.update_yaxes(tickfont=font, fixedrange=True, showgrid=False)


def monthly_heatmap(table: pd.DataFrame, theme: str | None) -> go.Figure:
    """``table``: index years, columns 1..12, values fractional monthly returns (cells in percent points)."""
    z = table.reindex(columns=range(1, 13)).to_numpy(dtype=float)
    text = [[percent_points(v) for v in row] for row in z]
    bound = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 0.01
    fig = go.Figure(go.Heatmap(z=z, x=list(MONTHS), y=[str(y) for y in table.index], text=text,
                               texttemplate="%{text}", textfont={"size": HEATMAP_FONT_PX},
                               colorscale=[[0, DOWN], [0.5, "#f2f2f2" if theme != "dark" else "#333"], [1, UP]],
                               zmin=-bound, zmax=bound, showscale=False, hoverongaps=False, xgap=1, ygap=1,
                               hovertemplate="%{y} %{x}: %{z:.2%}<extra></extra>"))
    fig.update_yaxes(type="category", autorange="reversed")
    _heatmap_axes(fig)
    fig.add_annotation(text="return, %", showarrow=False, xref="paper", yref="paper", x=0, y=1, xanchor="left",
                       yanchor="bottom", font={"size": HEATMAP_FONT_PX, "color": MUTED})
    _base(fig, theme, height=MONTHLY_HEIGHT_PX)
    fig.update_layout(margin={"l": 40, "r": 10, "t": 24, "b": 24})
    return fig


def _quarter_ticks(idx: pd.DatetimeIndex, week: np.ndarray) -> tuple[list[int], list[str]]:
    """The calendar's week columns where a quarter starts, labelled ``Jan 2026``, ``Apr``, ``Jul``, ``Oct``
    (a quarter is ~13 columns, ~65 px on a phone: room for the label; a month would not be); the first
    label carries the year too (``Jul 2026``)."""
    vals: list[int] = []
    texts: list[str] = []
    for k, day in enumerate(idx):
        if day.day <= 7 and day.month in (1, 4, 7, 10) and (k == 0 or idx[k - 1].month != day.month):
            vals.append(int(week[k]))
            # the year on January's label, and on the first label of a calendar that starts later
            named = day.month == 1 or not texts
            texts.append(f"{MONTHS[day.month - 1]} {day.year}" if named else MONTHS[day.month - 1])
    return vals, texts


def daily_calendar(daily_pl: pd.Series, theme: str | None) -> go.Figure:
    """Daily P&L as a GitHub-style calendar (weeks across, weekdays down) for the last year."""
    if daily_pl.empty:
        return empty("No daily P&L yet", theme)
    s = daily_pl.iloc[-371:]
    idx = pd.DatetimeIndex(s.index)
    week = ((idx - idx[0].normalize()).days + idx[0].day_of_week) // 7
    frame = pd.DataFrame({"w": week, "d": idx.day_of_week, "v": s.to_numpy(), "t": idx.strftime("%Y-%m-%d")})
    grid = frame.pivot_table(index="d", columns="w", values="v", aggfunc="sum")
    labels = frame.pivot_table(index="d", columns="w", values="t", aggfunc="first")
    bound = float(np.nanmax(np.abs(grid.to_numpy()))) or 1.0
    fig = go.Figure(go.Heatmap(
        z=grid.to_numpy(), x=list(grid.columns), y=[WEEKDAYS[int(d)] for d in grid.index],
        text=labels.reindex_like(grid).to_numpy(), colorscale=[[0, DOWN], [0.5, "#eeeeee" if theme != "dark" else "#333"],
                                                               [1, UP]],
        zmin=-bound, zmax=bound, xgap=1, ygap=1, showscale=False, hoverongaps=False,
        hovertemplate="%{text}: %{z:$,.2f}<extra></extra>"))
    tick_vals, tick_text = _quarter_ticks(idx, np.asarray(week))
    fig.update_xaxes(tickmode="array", tickvals=tick_vals, ticktext=tick_text, ticks="")
    fig.update_yaxes(autorange="reversed")
    _heatmap_axes(fig)
    _base(fig, theme, height=CALENDAR_HEIGHT_PX)
    fig.update_layout(margin={"l": 40, "r": 10, "t": 16, "b": 24})
    return fig


def symbol_label(symbol: str) -> str:
    """A symbol as a chart's category label: an OCC option symbol spelled out short (``AAPL250117C00150000``
    -> ``AAPL 150C 17 Jan 25``: underlying, strike and right, expiry), anything else as it is."""
    try:
        contract = parse_occ(symbol)
    except ValueError:
        return symbol
    strike = f"{contract.strike.normalize():f}"
    right = "C" if contract.right is OptionRight.CALL else "P"
    day = contract.expiry
    return f"{contract.underlying} {strike}{right} {day.day} {MONTHS[day.month - 1]} {day:%y}"


BAR_ROWS_MIN = 10
BAR_FONT_PX = 10  # category labels of the breakdown bars: one row each (BREAKDOWN_HEIGHT_PX leaves ~14 px a bar)


def bars(labels: Sequence[str], values: Sequence[float], title: str, theme: str | None) -> go.Figure:
    """Horizontal bars, the first label on top: a long label (an option) reads upright in the left margin,
    which grows to fit it (vertical bars turned 24 OCC symbols on their side, over each other on a phone)."""
    vals = np.asarray(values, dtype=float)
    names = [str(label) for label in labels]
    fig = go.Figure(go.Bar(x=vals, y=[symbol_label(n) for n in names], orientation="h", customdata=names,
                           marker_color=[UP if v >= 0 else DOWN for v in vals],
                           hovertemplate="%{customdata}: %{x:$,.2f}<extra></extra>"))
    fig.update_layout(title={"text": title, "font": {"size": 13}})
    fig.update_xaxes(**MONEY_TICKS, nticks=5)  # a phone's card has room for ~4 money ticks
    # first label on top; room for at least BAR_ROWS_MIN bars, so two exit reasons are not two slabs
    rows = max(len(names), BAR_ROWS_MIN)
    fig.update_yaxes(type="category", range=[rows - 0.5, -0.5], automargin=True, tickfont={"size": BAR_FONT_PX},
                     dtick=1, ticks="")
    _base(fig, theme, height=BREAKDOWN_HEIGHT_PX)
    fig.update_layout(margin={"l": 10, "r": 15, "t": LEGEND_ROW_PX, "b": 30}, hovermode="closest")
    return fig


def rolling(x: Sequence[object], sharpe: Sequence[float], vol: Sequence[float], *, window: int, tz_label: str,
            theme: str | None) -> go.Figure:
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    # legend names short enough for one row in a phone's card (two rows would cover the plot's top)
    fig.add_trace(go.Scatter(x=x, y=sharpe, name=f"Sharpe ({window}d)", line={"color": ACCENT}),
                  secondary_y=False)
    fig.add_trace(go.Scatter(x=x, y=vol, name=f"Volatility ({window}d)", line={"color": MUTED}),
                  secondary_y=True)
    fig.update_yaxes(title_text="Sharpe", secondary_y=False)
    # one decimal: a volatility that moves within a point would read "7%, 7%, 7%" in whole percents
    fig.update_yaxes(title_text="Volatility", tickformat=".1%", showgrid=False, secondary_y=True)
    fig.update_xaxes(title_text=f"Date, {tz_label}", type="date")
    return _base(fig, theme, height=PANEL_HEIGHT_PX)


def distribution(returns: Sequence[float], theme: str | None) -> go.Figure:
    r = np.asarray(returns, dtype=float)
    r = r[np.isfinite(r)]
    fig = go.Figure(go.Histogram(x=r, nbinsx=60, marker_color=ACCENT, opacity=0.85,
                                 hovertemplate="%{x:.2%}: %{y} days<extra></extra>"))
    if r.size:
        fig.add_vline(x=float(np.mean(r)), line_dash="dash", line_color=MUTED)
    fig.update_xaxes(tickformat=".1%", title_text="Daily return")
    fig.update_yaxes(title_text="Days")
    return _base(fig, theme, height=PANEL_HEIGHT_PX)


def aggregate(x: Sequence[object], equity: Sequence[float], index: Sequence[float], *, tz_label: str,
              theme: str | None) -> go.Figure:
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=x, y=equity, name="Total equity", line={"color": ACCENT},
                             hovertemplate="%{y:$,.0f}<extra>Total equity</extra>"), secondary_y=False)
    fig.add_trace(go.Scatter(x=x, y=index, name="Growth of $1", line={"color": UP, "dash": "dot"},
                             hovertemplate="%{y:$.3f}<extra>Growth of $1 (cash-flow neutral)</extra>"),
                  secondary_y=True)
    fig.update_yaxes(**MONEY_TICKS, secondary_y=False)
    # the growth of $1 in dollars and cents ($1.04); its own grid would cross the equity's
    fig.update_yaxes(tickformat="$,.2f", showgrid=False, secondary_y=True)
    _base(fig, theme, height=AGGREGATE_HEIGHT_PX)
    buttons_y = _above_legend(fig, AGGREGATE_HEIGHT_PX, 50)  # the date ticks and the axis title below
    fig.update_xaxes(title_text=f"Date, {tz_label}", type="date", rangeselector=range_selector(theme, y=buttons_y))
    return fig


LEVEL_LABEL_SPAN = 0.08  # level labels closer than this share of the price span share one line


def _level_groups(levels: dict[str, float], prices: Sequence[float]) -> list[list[tuple[str, float]]]:
    """The levels from low to high, those whose labels would overlap (an entry and an exit at the same
    price, a tight stop) in one group: one label for each group, above its highest line."""
    ordered = sorted(levels.items(), key=lambda item: item[1])
    finite = [p for p in prices if np.isfinite(p)]
    span = (max(finite) - min(finite)) if finite else 0.0
    groups: list[list[tuple[str, float]]] = []
    for name, value in ordered:
        if groups and value - groups[-1][-1][1] <= span * LEVEL_LABEL_SPAN:
            groups[-1].append((name, value))
        else:
            groups.append([(name, value)])
    return groups


def trade_path(points: list[dict[str, object]], levels: dict[str, float | None], theme: str | None,
               *, tz_label: str, path: dict[str, list[Any]] | None = None) -> go.Figure:
    """Fills on the price path with entry/exit and bracket levels as horizontal lines.

    ``path``: the symbol's bars (``x``, ``close``, ``high``, ``low``), drawn as the close with its
    high-low range shaded; without it only the fills are joined.
    """
    fig = go.Figure()
    if path and path.get("x"):
        fig.add_trace(go.Scatter(x=path["x"], y=path["high"], mode="lines", line={"width": 0}, showlegend=False,
                                 hoverinfo="skip", name="High"))
        fig.add_trace(go.Scatter(x=path["x"], y=path["low"], mode="lines", line={"width": 0}, fill="tonexty",
                                 fillcolor="rgba(127,127,127,0.18)", name="High-low range", hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=path["x"], y=path["close"], mode="lines", name="Price (1-min close)",
                                 line={"color": ACCENT, "width": 1.4}, hovertemplate="%{y:$,.2f}<extra>close</extra>"))
    if points:
        fig.add_trace(go.Scatter(x=[p["x"] for p in points], y=[p["price"] for p in points], mode="lines+markers",
                                 name="Fills", line={"color": MUTED, "dash": "dot"},
                                 marker={"size": 12, "color": [UP if p["side"] == "buy" else DOWN for p in points],
                                         "symbol": ["triangle-up" if p["side"] == "buy" else "triangle-down"
                                                    for p in points]},
                                 text=[f"{p['side']} {p['qty']} @ {p['price']}" for p in points],
                                 hovertemplate="%{text}<extra></extra>"))
    colours = {"Entry": ACCENT, "Exit": MUTED, "Stop": DOWN, "Take profit": UP}
    drawn = {name: float(value) for name, value in levels.items() if value is not None and np.isfinite(value)}
    for name, value in drawn.items():
        fig.add_hline(y=value, line_dash="dash", line_color=colours.get(name, MUTED))
    prices = [*drawn.values(), *(float(p["price"]) for p in points)]  # type: ignore[arg-type]
    if path and path.get("x"):
        prices += [float(v) for v in (*path["high"], *path["low"]) if v is not None]
    for group in _level_groups(drawn, prices):
        fig.add_annotation(text=" · ".join(f"{name} {value:,.2f}" for name, value in group), xref="paper",
                           x=0, xanchor="left", y=group[-1][1], yanchor="bottom", showarrow=False,
                           font={"size": 11, "color": colours.get(group[-1][0], MUTED)})
    fig.update_xaxes(title_text=f"Time, {tz_label}")
    fig.update_yaxes(**MONEY_TICKS)
    return _base(fig, theme, height=TRADE_PATH_HEIGHT_PX)
