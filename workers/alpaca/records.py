"""The adapter's records: what the broker's orders, trade updates, account, positions and
portfolio history say, typed and exact. Activities are :class:`core.records.ActivityRecord`.

Each keeps the payload it came from in ``raw`` (stored as ``jsonb``, never shown in a repr) and a
``parse_error`` when the payload did not parse fully.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from workers.alpaca.wire import FILL_EVENTS


@dataclass(frozen=True, slots=True)
class OrderRow:
    """One order's state as stored in ``orders`` (latest ``updated_at`` wins). Legs are separate rows."""

    order_id: uuid.UUID
    raw: Any = field(repr=False)
    client_order_id: str | None = None
    parent_order_id: uuid.UUID | None = None
    symbol: str | None = None
    side: str | None = None
    order_type: str | None = None
    order_class: str | None = None
    time_in_force: str | None = None
    qty: Decimal | None = None
    notional: Decimal | None = None
    filled_qty: Decimal | None = None
    filled_avg_price: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    status: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    submitted_at: datetime | None = None
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    parse_error: str | None = None


@dataclass(frozen=True, slots=True)
class OrderEventRow:
    """One trade update as stored in ``order_events`` (key: ``event_key`` + ``ts``), plus the order it carries."""

    event_key: str
    ts: datetime
    event: str
    raw: Any = field(repr=False)
    order_id: uuid.UUID | None = None
    execution_id: str | None = None
    price: Decimal | None = None
    qty: Decimal | None = None
    position_qty: Decimal | None = None
    parse_error: str | None = None
    orders: tuple[OrderRow, ...] = ()

    @property
    def is_fill(self) -> bool:
        return self.event in FILL_EVENTS


@dataclass(frozen=True, slots=True)
class BrokerAccount:
    """``/v2/account``: the money fields as exact decimals."""

    account_id: str | None
    account_number: str | None
    status: str | None
    currency: str | None
    cash: Decimal | None
    equity: Decimal | None
    last_equity: Decimal | None
    portfolio_value: Decimal | None
    buying_power: Decimal | None
    long_market_value: Decimal | None
    short_market_value: Decimal | None
    raw: Any = field(repr=False)
    parse_error: str | None = None


@dataclass(frozen=True, slots=True)
class BrokerPosition:
    """One ``/v2/positions`` item. ``qty`` is signed (negative for shorts), as Alpaca sends it."""

    symbol: str
    qty: Decimal | None
    side: str | None
    avg_entry_price: Decimal | None
    market_value: Decimal | None
    cost_basis: Decimal | None
    unrealized_pl: Decimal | None
    unrealized_plpc: Decimal | None
    current_price: Decimal | None
    lastday_price: Decimal | None
    change_today: Decimal | None
    asset_id: str | None
    asset_class: str | None
    raw: Any = field(repr=False)
    parse_error: str | None = None


@dataclass(frozen=True, slots=True)
class PortfolioHistory:
    """``/v2/account/portfolio/history``: parallel series; unparseable points are ``None``."""

    timestamps: tuple[datetime, ...]
    equity: tuple[Decimal | None, ...]
    profit_loss: tuple[Decimal | None, ...]
    profit_loss_pct: tuple[Decimal | None, ...]
    base_value: Decimal | None
    timeframe: str | None
    raw: Any = field(repr=False)
    parse_error: str | None = None
    cashflow: dict[str, tuple[Decimal | None, ...]] = field(default_factory=dict)
    """Per activity type, the non-trade cash within each point (parallel to ``timestamps``; absent: empty)."""
