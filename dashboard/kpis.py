"""A destination's headline figures, computed once per data version: the KPI cards, the metrics export
and the static report all show these, so no two places can disagree about one account's Sharpe ratio.

Every figure comes from :mod:`core.metrics` through :mod:`dashboard.analytics` (cash-flow-neutral
returns per NYSE session); the day's P&L from calendar days in the display zone. The income and fee
lines (:func:`income_lines`) come from the raw activities, placed by :mod:`core.activity_types` and
:mod:`core.income` exactly as the P&L breakdown places them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.activity_types import LotEffect, PnlLine, StatusEffect, effect_of, status_effect
from core.income import regulatory_basis
from core.schema import quote_ident
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


@dataclass(frozen=True, slots=True)
class IncomeLine:
    """One line of the "Income & fees" breakdown: a signed dollar total and how many activities made it."""

    key: str
    label: str
    amount: float
    count: int
    is_pnl: bool = True
    """``False`` for stock journals: securities moved in or out at their value, not a gain or a cost."""


INCOME_LINES = (
    ("dividends", "Dividends"), ("withholding", "Withholding"), ("interest", "Interest"),
    ("regulatory_fees", "Regulatory fees (TAF, REG, ORF, CAT)"), ("other_fees", "Commission & other fees"),
    ("crypto_fees", "Crypto fees (in the asset)"), ("other", "Other cash"), ("stock_journals", "Stock journals & transfers"),
)
_LINE_OF = {PnlLine.DIVIDEND: "dividends", PnlLine.WITHHOLDING: "withholding", PnlLine.INTEREST: "interest",
            PnlLine.OTHER: "other"}


def income_key(code: str, description: str | None) -> str | None:
    """The breakdown line of one activity type (``None``: not income or a fee, e.g. a fill or a deposit)."""
    effect = effect_of(code)
    if effect.code == "CFEE":
        return "crypto_fees"
    if effect.lots is LotEffect.STOCK_TRANSFER:
        return "stock_journals"
    if effect.line is PnlLine.FEE:
        return "regulatory_fees" if effect.code == "FEE" and regulatory_basis(description) else "other_fees"
    if effect.external_flow or not effect.books_cash:
        return None
    return _LINE_OF.get(effect.line)


def income_lines(model: ReadModel, slug: str) -> list[IncomeLine]:
    """Dividends, withholding, interest, fees by kind, other cash and stock journals of one destination,
    memoised per activity version; lines with no activity are left out.

    An activity's dollars are its ``net_amount``; a fee taken in the asset (``CFEE`` with no cash) and
    a stock journal count at ``qty × price``. Canceled (and pending…) activities count nothing.
    """
    v = model.trusted(slug, "activity")

    def compute() -> list[IncomeLine]:
        schema = quote_ident(model.account_schema)
        rows: list[dict[str, Any]] = model.rows(
            f"""SELECT upper(activity_type) AS code, raw ->> 'status' AS status,
                       CASE WHEN upper(activity_type) = 'FEE' THEN description END AS description, count(*) AS n,
                       sum(CASE WHEN coalesce(net_amount, 0) <> 0 THEN net_amount
                                ELSE coalesce(qty * price, 0) END)::float8 AS amount
                FROM {schema}.activities WHERE destination = :d AND upper(activity_type) NOT IN ('FILL', 'EXTRD')
                GROUP BY 1, 2, 3""",
            {"d": slug},
        )
        totals: dict[str, list[float]] = {}
        for r in rows:
            key = income_key(str(r["code"]), r["description"])
            if key is None or status_effect(r["status"]) is StatusEffect.IGNORE:
                continue
            line = totals.setdefault(key, [0.0, 0])
            line[0] += float(r["amount"] or 0.0)
            line[1] += int(r["n"])
        return [IncomeLine(key, label, totals[key][0], int(totals[key][1]), key != "stock_journals")
                for key, label in INCOME_LINES if key in totals]

    return model.memo(("income", slug, v), compute)


def income_net(lines: list[IncomeLine]) -> float:
    """What the P&L lines add up to (stock journals are transfers, not P&L)."""
    return sum(line.amount for line in lines if line.is_pnl)
