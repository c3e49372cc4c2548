"""The tie-out's records: causes, statuses, the inputs both sides give, the differences and reports.

Pure data and the two status rules (:func:`status_of`, :func:`worst`); :mod:`core.tieout` compares.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from core.activity_types import LotEffect, PnlLine, effect_of

ZERO = Decimal(0)
CENT = Decimal("0.01")


class Cause(StrEnum):
    """Why the book and the broker differ."""

    FILL_NOT_INGESTED = "fill_not_ingested"
    """The broker filled an order whose fill activity is not stored yet."""
    POSTED_LATER = "posted_later"
    """A fee, dividend or interest posted on another day than it is dated (or not ingested yet)."""
    CORPORATE_ACTION = "corporate_action"
    """A split, symbol change, merger or spinoff the book has not applied."""
    PRICE = "price"
    """The book's mark differs from the broker's ``current_price``."""
    COST_METHOD = "cost_method"
    """FIFO lots (the book) against the broker's average cost."""
    BROKER_QUIRK = "broker_quirk"
    """A known oddity of Alpaca's figures (a repeated end-of-day point, a null ``base_value``)."""
    UNEXPLAINED = "unexplained"
    """Nothing above accounts for it: counts against the account."""


class Status(StrEnum):
    """The trust status of a destination now, or of one account-day."""

    TIED_OUT = "tied_out"
    """Every figure agrees within its tolerance."""
    EXPLAINED = "explained"
    """Differences remain, each with a known cause."""
    DRIFT = "drift"
    """An unexplained difference beyond its tolerance."""


class Scope(StrEnum):
    """Which figure a difference is about."""

    POSITION_QTY = "position_qty"
    POSITION_COST = "position_cost"
    POSITION_VALUE = "position_value"
    CASH = "cash"
    EQUITY = "equity"
    DAY_EQUITY = "day_equity"
    DAY_CASH = "day_cash"
    NOTE = "note"


MISSING_DATA_CAUSES = frozenset({Cause.FILL_NOT_INGESTED, Cause.POSTED_LATER})
"""Causes a backfill of the raw data can repair (when the difference is still open)."""
POSITION_SCOPES = frozenset({Scope.POSITION_QTY, Scope.POSITION_COST, Scope.POSITION_VALUE})
_CORPORATE_LOTS = frozenset({LotEffect.SPLIT, LotEffect.SYMBOL_CHANGE, LotEffect.MERGER, LotEffect.SPINOFF,
                             LotEffect.CASH_IN_LIEU, LotEffect.STOCK_TRANSFER})
_LATE_LINES = frozenset({PnlLine.FEE, PnlLine.DIVIDEND, PnlLine.WITHHOLDING, PnlLine.INTEREST})


def is_corporate_action(activity_type: str) -> bool:
    """Whether an activity type changes lots the way a corporate action does."""
    return effect_of(activity_type).lots in _CORPORATE_LOTS


def is_late_posting(activity_type: str) -> bool:
    """Whether Alpaca posts this type after the day it is dated (fees, dividends, interest)."""
    return effect_of(activity_type).line in _LATE_LINES


@dataclass(frozen=True, slots=True, kw_only=True)
class Tolerances:
    """Differences at or under these are agreement (``TIEOUT_*`` settings)."""

    position_usd: Decimal = CENT
    """Per position and figure (quantity value, cost basis, market value)."""
    account_day_usd: Decimal = Decimal(1)
    """Per account figure now (cash, equity) and per account-day (equity, each activity type)."""
    price_timing_fraction: Decimal = Decimal("0.01")
    """A live (not stale) mark within this fraction of the broker's ``current_price`` is the market
    moving between the two reads, not a difference of the books: a note, never "explained"."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BookPosition:
    """One open position of the book (``open_trades_<slug>``): signed quantity, per-unit prices."""

    symbol: str
    qty: Decimal
    avg_entry_price: Decimal
    mark_price: Decimal | None = None
    price_source: str | None = None
    mark_ts: datetime | None = None
    """When the mark's price was observed (``None``: unknown)."""
    mark_stale: bool = False
    """The manager's own judgement that the mark is old (its feed stopped, or a fill price stands in)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerPositionFigures:
    """One ``/v2/positions`` item: signed quantity, dollar cost basis and market value."""

    symbol: str
    qty: Decimal
    cost_basis: Decimal | None = None
    market_value: Decimal | None = None
    current_price: Decimal | None = None
    asset_class: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingFill:
    """Filled quantity the broker's orders show and no stored fill activity books (signed by side)."""

    symbol: str
    qty: Decimal
    price: Decimal
    ts: datetime
    order_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerDay:
    """One daily point of the broker's portfolio history (its New York day)."""

    day: date
    equity: Decimal | None
    cashflow: Mapping[str, Decimal] = field(default_factory=dict)
    """Non-trade cash per activity type within the day."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BookDay:
    """The book's figures of one New York day."""

    day: date
    equity: Decimal | None
    """The last equity snapshot of the day (``None``: no snapshot that day)."""
    flows: Mapping[str, Decimal] = field(default_factory=dict)
    """Non-trade activities' ``net_amount`` per type, dated that day."""
    corporate_actions: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Difference:
    """One figure that differs, and why."""

    scope: Scope
    subject: str
    """Symbol, activity type, or empty for account figures."""
    amount_usd: Decimal
    """``broker - book`` in dollars (for a quantity: its value at the broker's price)."""
    cause: Cause
    book: Decimal | None = None
    broker: Decimal | None = None
    day: date | None = None
    open: bool = True
    """``False``: settled (the money agrees; kept as a note of what happened)."""
    detail: str = ""
    age_s: float | None = None
    """For a fill not yet ingested: how long ago the broker filled it."""

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope.value, "subject": self.subject, "amount_usd": str(self.amount_usd),
                "cause": self.cause.value, "book": None if self.book is None else str(self.book),
                "broker": None if self.broker is None else str(self.broker),
                "day": None if self.day is None else self.day.isoformat(), "open": self.open,
                "detail": self.detail, "age_s": self.age_s}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Difference:
        def dec(v: Any) -> Decimal | None:
            return None if v is None else Decimal(str(v))

        return cls(scope=Scope(d["scope"]), subject=str(d.get("subject", "")), amount_usd=Decimal(str(d["amount_usd"])),
                   cause=Cause(d["cause"]), book=dec(d.get("book")), broker=dec(d.get("broker")),
                   day=date.fromisoformat(d["day"]) if d.get("day") else None, open=bool(d.get("open", True)),
                   detail=str(d.get("detail", "")), age_s=d.get("age_s"))


@dataclass(frozen=True, slots=True, kw_only=True)
class DayTieOut:
    """One account-day."""

    day: date
    status: Status
    book_equity: Decimal | None
    broker_equity: Decimal | None
    differences: tuple[Difference, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class TieOut:
    """A destination's tie-out: now, and every past day the broker reports."""

    as_of: datetime
    status: Status
    book_cash: Decimal
    broker_cash: Decimal | None
    book_equity: Decimal
    broker_equity: Decimal | None
    differences: tuple[Difference, ...]
    days: tuple[DayTieOut, ...] = ()
    repair_since: datetime | None = None
    """Start of the raw-data window a backfill should re-read (``None``: nothing to repair)."""


def status_of(differences: Iterable[Difference], tolerances: Tolerances) -> Status:
    """The status the open differences give (see the module docstring)."""
    explained = False
    for d in differences:
        if not d.open or abs(d.amount_usd) <= tolerance_of(d, tolerances):
            continue
        if d.cause is Cause.UNEXPLAINED:
            return Status.DRIFT
        explained = True
    return Status.EXPLAINED if explained else Status.TIED_OUT


def tolerance_of(d: Difference, tolerances: Tolerances) -> Decimal:
    """The tolerance a difference is judged by (a position's, or an account-day's)."""
    return tolerances.position_usd if d.scope in POSITION_SCOPES else tolerances.account_day_usd


def worst(statuses: Iterable[Status]) -> Status:
    """Drift over explained over tied out."""
    rank = {Status.TIED_OUT: 0, Status.EXPLAINED: 1, Status.DRIFT: 2}
    return max(statuses, key=rank.__getitem__, default=Status.TIED_OUT)
