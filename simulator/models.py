"""The simulator's state: accounts, positions, orders, activities and equity snapshots (mutable, owned
by the one asyncio loop that runs the engine)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from simulator.wire import ZERO

TERMINAL = frozenset({"filled", "canceled", "expired", "rejected", "replaced", "done_for_day"})


@dataclass(slots=True)
class Position:
    symbol: str  # the order symbol (``BTC/USD``, an OCC symbol, ``AAPL``)
    qty: Decimal = ZERO  # shares, coins or contracts
    avg_entry_price: Decimal = ZERO  # per share / coin (an option's premium per share)
    opened_at: datetime | None = None


@dataclass(slots=True)
class Order:
    id: str
    client_order_id: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    order_class: str
    created_at: datetime
    qty: Decimal | None = None
    notional: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    hwm: Decimal | None = None
    status: str = "new"
    updated_at: datetime | None = None
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    failed_at: datetime | None = None
    filled_qty: Decimal = ZERO
    filled_value: Decimal = ZERO
    parent_id: str | None = None
    leg_ids: list[str] = field(default_factory=list)
    leg_role: str | None = None  # "take_profit" / "stop_loss" for legs
    triggered: bool = False
    extended_hours: bool = False
    position_intent: str | None = None
    force_fill: bool = False  # admin fill: ignore liquidity and session, fill at once
    replaces: str | None = None
    replaced_by: str | None = None
    replaced_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.status not in TERMINAL

    @property
    def remaining(self) -> Decimal | None:
        return None if self.qty is None else self.qty - self.filled_qty


@dataclass(slots=True)
class Activity:
    id: str
    ts: datetime  # when it happened (a date-only posting: midnight New York of its date)
    type: str  # FILL or a non-trade type
    data: dict[str, Any]


@dataclass(slots=True)
class Snapshot:
    ts: datetime
    equity: Decimal
    cashflow: Decimal  # cumulative deposits/withdrawals/journals up to ts
    flows: dict[str, Decimal] = field(default_factory=dict)  # cumulative cash flow per activity type


@dataclass(slots=True)
class Accrual:
    """A fee the broker has charged but posts later, at the end of the day (with a date only)."""

    day: date
    kind: str  # FEE or CFEE
    symbol: str
    amount: Decimal  # cash (negative)
    qty: Decimal | None = None  # CFEE in the asset: the (negative) quantity taken
    price: Decimal | None = None
    description: str = ""
    sub_type: str | None = None


@dataclass(slots=True)
class Account:
    name: str
    key_id: str = field(repr=False)
    secret_key: str = field(repr=False)
    id: str
    account_number: str
    created_at: datetime
    cash: Decimal = ZERO
    cashflow: Decimal = ZERO
    flows: dict[str, Decimal] = field(default_factory=dict)
    last_equity: Decimal | None = None
    positions: dict[str, Position] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    by_client_id: dict[str, str] = field(default_factory=dict)
    open_ids: dict[str, None] = field(default_factory=dict)
    activities: list[Activity] = field(default_factory=list)  # sorted by id (= by time, New York)
    snapshots: list[Snapshot] = field(default_factory=list)
    accruals: list[Accrual] = field(default_factory=list)
    last_ms: int = 0
    style: str = "mixed"
    core: set[str] = field(default_factory=set)  # buy-and-hold symbols the bots leave alone

    def add_activity(self, act: Activity) -> None:
        """Keep ``activities`` sorted by id: a date-only posting lands before that day's fills."""
        if not self.activities or self.activities[-1].id < act.id:
            self.activities.append(act)
        else:
            bisect.insort(self.activities, act, key=lambda a: a.id)
