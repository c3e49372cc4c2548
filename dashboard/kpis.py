"""A destination's headline figures, computed once per data version: the KPI cards, the metrics export
and the static report all show these, so no two places can disagree about one account's Sharpe ratio.

Every figure comes from :mod:`core.metrics` through :mod:`dashboard.analytics` (cash-flow-neutral
returns per NYSE session); the day's P&L from calendar days in the display zone.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from dashboard import analytics

if TYPE_CHECKING:
    from dashboard.queries import ReadModel

KPI_KEYS = ("equity", "day_pl", "day_return", "total_return", "cagr", "sharpe", "smart_sharpe", "sortino", "calmar",
            "max_drawdown", "current_drawdown", "volatility", "win_rate", "profit_factor", "expectancy", "avg_win",
            "avg_loss", "payoff_ratio", "avg_holding_s", "trades")


def kpi_values(model: ReadModel, slug: str, tz: str) -> dict[str, float | None]:
    """``name -> value`` (``None`` where a figure has no data yet), memoised per the server's equity and
    closed-trade versions.

    A stored value that is not a finite number (NaN, infinity, or beyond float range in a table)
    gives ``nan`` for the figures built on it, which the pages render as a flagged cell.
    """

    v_eq, v_closed = model.trusted(slug, "equity"), model.trusted(slug, "closed")

    def compute() -> dict[str, float | None]:
        daily = model.daily_equity(slug, tz)
        returns = model.session_returns(slug)
        out: dict[str, float | None] = dict(analytics.summary(returns))
        out |= analytics.trade_stats(model.closed_pl(slug))
        out["equity"] = float(daily["equity"].iloc[-1]) if not daily.empty else None
        out["day_pl"], out["day_return"] = analytics.day_change(daily)
        out["current_drawdown"] = analytics.current_drawdown(returns)
        return {k: out.get(k) for k in KPI_KEYS}

    return model.memo(("kpis", slug, v_eq, v_closed, tz), compute)


def is_bad(value: float | None) -> bool:
    """A figure that exists but is not a finite number (a corrupt stored value upstream)."""
    return value is not None and not math.isfinite(value)
