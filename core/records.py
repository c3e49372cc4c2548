"""Domain records the analytics core works on: activities, fills, order metadata, lots and round trips.

Plain, frozen, slotted dataclasses. Quantities and money are exact :class:`~decimal.Decimal`;
every datetime is timezone-aware UTC (naive input is refused, other zones are converted).
Constructors validate their input and raise :class:`core.errors.InvalidInput` naming the row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from core.errors import InvalidInput

ZERO = Decimal(0)


class Side(StrEnum):
    """Which way a fill moved the position."""

    BUY = "buy"
    """Adds to a long or covers a short."""
    SELL = "sell"
    """Reduces a long or opens/adds to a short."""

    @classmethod
    def parse(cls, value: object, row: str) -> Side:
        """Accept the broker's spellings (``sell_short``, ``buy_to_cover``…); refuse anything else."""
        text = str(value).strip().lower() if value is not None else ""
        if text in ("buy", "b", "buy_to_cover", "cover", "long"):
            return cls.BUY
        if text in ("sell", "s", "sell_short", "short", "ss"):
            return cls.SELL
        raise InvalidInput(f"{row}: unknown side {value!r} (expected buy or sell)")


class Direction(StrEnum):
    """Direction of a position or round trip."""

    LONG = "long"
    SHORT = "short"


class ExitReason(StrEnum):
    """Why a round trip closed, derived from the order that closed it."""

    TAKE_PROFIT = "take_profit"
    """A limit leg of a bracket/OCO/OTO chain."""
    STOP_LOSS = "stop_loss"
    """A stop, stop-limit or trailing-stop leg of a chain."""
    MANUAL = "manual"
    """Anything else: a standalone order, a market exit, an unknown order."""


class OrderClass(StrEnum):
    SIMPLE = "simple"
    BRACKET = "bracket"
    OCO = "oco"
    OTO = "oto"
    MLEG = "mleg"
    OTHER = "other"

    @classmethod
    def parse(cls, value: object) -> OrderClass:
        text = str(value or "").strip().lower()
        if text in ("", "simple", "none"):
            return cls.SIMPLE
        try:
            return cls(text)
        except ValueError:
            return cls.OTHER


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"
    TRAILING_STOP = "trailing_stop"
    OTHER = "other"

    @classmethod
    def parse(cls, value: object) -> OrderType:
        text = str(value or "").strip().lower()
        try:
            return cls(text)
        except ValueError:
            return cls.OTHER


CHAINED_CLASSES = frozenset({OrderClass.BRACKET, OrderClass.OCO, OrderClass.OTO})
STOP_TYPES = frozenset({OrderType.STOP, OrderType.STOP_LIMIT, OrderType.TRAILING_STOP})


def to_decimal(value: object, what: str, row: str) -> Decimal:
    """Exact decimal from a Decimal/int/str/float; NaN and infinities are refused with the row named."""
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool):
        raise InvalidInput(f"{row}: {what} must be a number, got {value!r}")
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{row}: {what} is not finite ({value!r})")
        result = Decimal(repr(value))  # shortest round-trip text, not the binary expansion
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise InvalidInput(f"{row}: {what} is not a number ({value!r})") from None
    else:
        raise InvalidInput(f"{row}: {what} must be a number, got {type(value).__name__}")
    if not result.is_finite():
        raise InvalidInput(f"{row}: {what} is not finite ({value!r})")
    return result


def to_utc(value: object, what: str, row: str) -> datetime:
    """A timezone-aware datetime converted to UTC; naive datetimes are refused."""
    if not isinstance(value, datetime):
        raise InvalidInput(f"{row}: {what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidInput(f"{row}: {what} is a naive datetime ({value.isoformat()}); use timezone-aware UTC")
    return value.astimezone(UTC)


def _opt_decimal(value: object, what: str, row: str) -> Decimal | None:
    return None if value is None else to_decimal(value, what, row)


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution (an Alpaca FILL/partial_fill activity or trade_update fill)."""

    fill_id: str
    ts: datetime
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal = ZERO
    order_id: str | None = None

    def __post_init__(self) -> None:
        row = f"fill {self.fill_id!r}"
        if not isinstance(self.fill_id, str) or not self.fill_id:
            raise InvalidInput(f"{row}: fill_id must be a non-empty string")
        if not isinstance(self.symbol, str) or not self.symbol:
            raise InvalidInput(f"{row}: symbol must be a non-empty string")
        set_ = object.__setattr__
        set_(self, "ts", to_utc(self.ts, "ts", row))
        if not isinstance(self.side, Side):
            set_(self, "side", Side.parse(self.side, row))
        qty = to_decimal(self.qty, "qty", row)
        if qty <= 0:
            raise InvalidInput(f"{row}: qty must be positive, got {qty}")
        price = to_decimal(self.price, "price", row)
        if price < 0:
            raise InvalidInput(f"{row}: price must not be negative, got {price}")
        set_(self, "qty", qty)
        set_(self, "price", price)
        set_(self, "fee", to_decimal(self.fee, "fee", row))
        if self.order_id is not None:
            set_(self, "order_id", str(self.order_id))

    @property
    def signed_qty(self) -> Decimal:
        return self.qty if self.side is Side.BUY else -self.qty

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (decimals as strings, ISO 8601 times)."""
        return {
            "id": self.fill_id,
            "ts": self.ts.isoformat(),
            "symbol": self.symbol,
            "side": self.side.value,
            "qty": str(self.qty),
            "price": str(self.price),
            "fee": str(self.fee),
            "order_id": self.order_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fill:
        return cls(
            fill_id=data["id"],
            ts=datetime.fromisoformat(data["ts"]),
            symbol=data["symbol"],
            side=Side.parse(data["side"], f"fill {data['id']!r}"),
            qty=Decimal(data["qty"]),
            price=Decimal(data["price"]),
            fee=Decimal(data.get("fee", "0")),
            order_id=data.get("order_id"),
        )


FILL_ACTIVITY_TYPES = frozenset({"FILL", "PARTIAL_FILL"})
"""Activity types that are executions (the rest move cash or change lots by corporate action)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityRecord:
    """One account activity, the same shape everywhere: built by the broker adapter from broker
    JSON, stored by the ingester (one ``activities`` row), read back by the manager and the replay.

    Keyword-only so fields can be added without touching callers: instrument details (asset class,
    option contract) and corporate-action terms (old/new quantity, rate, status) belong here next to
    ``qty``/``price``/``description``. ``parse_error`` is set when the payload did not parse fully;
    such a record is stored raw and never booked.
    """

    activity_id: str
    ts: datetime
    """When it happened (UTC): a fill's ``transaction_time``; other activities' ``date`` (midnight UTC
    when the broker gives only a date)."""
    activity_type: str
    """The broker's code (``FILL``, ``DIV``, ``CSD``…); unknown codes are kept and flagged."""
    seq: int | None = None
    """The store's arrival sequence (``None`` until stored): the manager's incremental cursor."""
    symbol: str | None = None
    side: str | None = None
    """As the broker spells it (``buy``, ``sell``, ``sell_short``…); :meth:`to_fill` normalises it."""
    qty: Decimal | None = None
    price: Decimal | None = None
    net_amount: Decimal | None = None
    """Cash effect of a non-fill activity, signed (a withdrawal is negative)."""
    order_id: str | None = None
    """The order a fill belongs to (canonical UUID text)."""
    fill_type: str | None = None
    """``fill`` or ``partial_fill`` for executions."""
    leaves_qty: Decimal | None = None
    cum_qty: Decimal | None = None
    order_status: str | None = None
    description: str | None = None
    parse_error: str | None = None
    raw: Any = field(default=None, repr=False, compare=False)
    """The broker payload as received (stored as ``jsonb``); ``None`` when read back for accounting."""
    replaces: str | None = None
    """On a REST fill read by the manager: the provisional (stream) fill it replaces because their
    content differs (docs/freshness.md); a book that applied that one is rebuilt."""
    unconfirmed: bool = False
    """On a fill read by the manager: a provisional (stream) fill whose REST activity had not confirmed it
    yet when read; the rows resting on it are marked provisional (docs/freshness.md)."""

    def __post_init__(self) -> None:
        if not isinstance(self.activity_id, str) or not self.activity_id:
            raise InvalidInput(f"activity {self.activity_id!r}: activity_id must be a non-empty string")
        if self.ts.tzinfo is not UTC:  # the hot path (one per ingested row): convert only when needed
            object.__setattr__(self, "ts", to_utc(self.ts, "ts", f"activity {self.activity_id!r}"))

    @property
    def is_fill(self) -> bool:
        return self.activity_type.upper() in FILL_ACTIVITY_TYPES

    def to_fill(self) -> Fill:
        """The lot engine's input for this execution; :class:`InvalidInput` naming the activity when
        it is not a usable fill (not an execution, unparsed, or missing symbol/side/qty/price)."""
        row = f"activity {self.activity_id!r}"
        if not self.is_fill:
            raise InvalidInput(f"{row}: {self.activity_type!r} is not a fill")
        if self.parse_error is not None:
            raise InvalidInput(f"{row}: not parsed ({self.parse_error})")
        if not self.symbol or self.qty is None or self.price is None:
            raise InvalidInput(f"{row}: a fill needs symbol, qty and price")
        return Fill(fill_id=self.activity_id, ts=self.ts, symbol=self.symbol, side=Side.parse(self.side, row),
                    qty=self.qty, price=self.price, order_id=self.order_id)


@dataclass(frozen=True, slots=True)
class OrderMeta:
    """What the lot engine needs to know about an order to chain legs and name exit reasons."""

    order_id: str
    order_type: OrderType = OrderType.MARKET
    order_class: OrderClass = OrderClass.SIMPLE
    parent_order_id: str | None = None
    side: Side | None = None
    symbol: str | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None

    def __post_init__(self) -> None:
        row = f"order {self.order_id!r}"
        set_ = object.__setattr__
        set_(self, "order_id", str(self.order_id))
        if not isinstance(self.order_type, OrderType):
            set_(self, "order_type", OrderType.parse(self.order_type))
        if not isinstance(self.order_class, OrderClass):
            set_(self, "order_class", OrderClass.parse(self.order_class))
        if self.parent_order_id is not None:
            set_(self, "parent_order_id", str(self.parent_order_id))
        if self.side is not None and not isinstance(self.side, Side):
            set_(self, "side", Side.parse(self.side, row))
        set_(self, "limit_price", _opt_decimal(self.limit_price, "limit_price", row))
        set_(self, "stop_price", _opt_decimal(self.stop_price, "stop_price", row))

    @property
    def is_chained_leg(self) -> bool:
        """A child leg, or an order that belongs to a bracket/OCO/OTO chain."""
        return self.parent_order_id is not None or self.order_class in CHAINED_CLASSES

    def to_dict(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "order_type": self.order_type.value,
            "order_class": self.order_class.value,
            "parent_order_id": self.parent_order_id,
            "side": self.side.value if self.side else None,
            "symbol": self.symbol,
            "limit_price": None if self.limit_price is None else str(self.limit_price),
            "stop_price": None if self.stop_price is None else str(self.stop_price),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OrderMeta:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class StartingPosition:
    """A position held before the first fill of the data window (e.g. the broker's position list)."""

    symbol: str
    qty: Decimal
    """Signed: negative for a short."""
    as_of: datetime
    avg_entry_price: Decimal | None = None
    """``None`` when unknown: lots opened from it then carry no P&L (see docs/core_analytics.md)."""

    def __post_init__(self) -> None:
        row = f"starting position {self.symbol!r}"
        set_ = object.__setattr__
        set_(self, "qty", to_decimal(self.qty, "qty", row))
        set_(self, "as_of", to_utc(self.as_of, "as_of", row))
        price = _opt_decimal(self.avg_entry_price, "avg_entry_price", row)
        if price is not None and price < 0:
            raise InvalidInput(f"{row}: avg_entry_price must not be negative, got {price}")
        set_(self, "avg_entry_price", price)

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "qty": str(self.qty),
            "as_of": self.as_of.isoformat(),
            "avg_entry_price": None if self.avg_entry_price is None else str(self.avg_entry_price),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StartingPosition:
        return cls(
            symbol=data["symbol"],
            qty=Decimal(data["qty"]),
            as_of=datetime.fromisoformat(data["as_of"]),
            avg_entry_price=None if data.get("avg_entry_price") is None else Decimal(data["avg_entry_price"]),
        )


@dataclass(frozen=True, slots=True)
class Lot:
    """An open FIFO lot: what is left of one opening fill (or of a starting position)."""

    symbol: str
    fill_id: str
    order_id: str | None
    direction: Direction
    entry_time: datetime
    entry_price: Decimal | None
    """``None`` for an orphan lot whose price is unknown."""
    qty: Decimal
    remaining: Decimal
    is_orphan: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "fill_id": self.fill_id,
            "order_id": self.order_id,
            "direction": self.direction.value,
            "entry_time": self.entry_time.isoformat(),
            "entry_price": None if self.entry_price is None else str(self.entry_price),
            "qty": str(self.qty),
            "remaining": str(self.remaining),
            "is_orphan": self.is_orphan,
        }


@dataclass(frozen=True, slots=True)
class LotMatch:
    """One FIFO match: ``qty`` units of an opening lot closed by one closing fill."""

    open_fill_id: str
    close_fill_id: str
    qty: Decimal
    entry_time: datetime
    exit_time: datetime
    entry_price: Decimal
    """The exit price when the lot was an orphan of unknown price (so its P&L is zero)."""
    exit_price: Decimal
    gross_pl: Decimal
    price_known: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "open_fill_id": self.open_fill_id,
            "close_fill_id": self.close_fill_id,
            "qty": str(self.qty),
            "entry_time": self.entry_time.isoformat(),
            "exit_time": self.exit_time.isoformat(),
            "entry_price": str(self.entry_price),
            "exit_price": str(self.exit_price),
            "gross_pl": str(self.gross_pl),
            "price_known": self.price_known,
        }


LotRow = tuple[str, str, Decimal, datetime, datetime, Decimal, Decimal, Decimal, bool]
"""A :class:`LotMatch` as a plain tuple (cheap to build in the engine's hot path)."""


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """A closed trade: the position in one symbol from flat (or a flip) back to flat (or a flip)."""

    trade_id: str
    symbol: str
    direction: Direction
    qty: Decimal
    entry_time: datetime
    exit_time: datetime
    entry_price: Decimal
    exit_price: Decimal
    gross_pl: Decimal
    fees: Decimal
    net_pl: Decimal
    return_pct: float | None
    holding_s: float
    exit_reason: ExitReason
    entry_order_id: str | None
    exit_order_id: str | None
    is_orphan: bool
    open_fills: tuple[tuple[str, Decimal], ...]
    """(fill id, quantity used to open) in time order; a flipping fill appears with its opening part."""
    close_fills: tuple[tuple[str, Decimal], ...]
    """(fill id, quantity used to close) in time order."""
    lot_rows: tuple[LotRow, ...] = field(default=())
    """The FIFO matches as plain tuples in :class:`LotMatch` field order (see :attr:`lots`)."""

    @property
    def lots(self) -> tuple[LotMatch, ...]:
        """The FIFO lot matches that compose this round trip, in matching order."""
        return tuple(LotMatch(*row) for row in self.lot_rows)

    def to_row(self) -> dict[str, Any]:
        """Values for one ``closed_trades_<slug>`` row (numeric columns as Decimal, jsonb as lists)."""
        return {
            "trade_id": self.trade_id,
            "symbol": self.symbol,
            "direction": self.direction.value,
            "qty": self.qty,
            "entry_time": self.entry_time,
            "exit_time": self.exit_time,
            "entry_price": self.entry_price,
            "exit_price": self.exit_price,
            "gross_pl": self.gross_pl,
            "fees": self.fees,
            "net_pl": self.net_pl,
            "return_pct": self.return_pct,
            "holding_s": self.holding_s,
            "exit_reason": self.exit_reason.value,
            "entry_order_id": self.entry_order_id,
            "exit_order_id": self.exit_order_id,
            "is_orphan": self.is_orphan,
            "mae": None,
            "mfe": None,
            "fills": [{"fill_id": f, "qty": str(q), "role": "open"} for f, q in self.open_fills]
            + [{"fill_id": f, "qty": str(q), "role": "close"} for f, q in self.close_fills],
            "lots": [LotMatch(*row).to_dict() for row in self.lot_rows],
            "provisional_fills": 0,  # the engine cannot tell: the manager counts them (workers.manager.unconfirmed)
        }


@dataclass(frozen=True, slots=True)
class OpenPosition:
    """The open part of one symbol's book: its FIFO lots and what the position summary shows."""

    symbol: str
    direction: Direction
    qty: Decimal
    """Signed like the broker's position (negative for a short)."""
    avg_entry_price: Decimal | None
    """Average price of the remaining lots (``None`` if any remaining lot has an unknown price)."""
    cost_basis: Decimal | None
    """``qty * avg_entry_price * multiplier`` (signed, in dollars: 100 per option contract)."""
    entry_time: datetime
    """When the current position (flat -> non-flat) was opened."""
    entry_order_id: str | None
    realized_pl: Decimal
    """Gross P&L already realised by partial closes inside the still-open position."""
    lots: tuple[Lot, ...]
    is_orphan: bool
    fill_ids: tuple[str, ...] = field(default=(), compare=False, repr=False)
    """Every fill the position rests on: its opening and closing fills since it was opened (a flip's
    fill and dust carried over included), in time order. Marks a row provisional (workers.manager.unconfirmed)."""

    def to_row(self) -> dict[str, Any]:
        """Values for the ``open_trades_<slug>`` columns this engine owns."""
        return {
            "symbol": self.symbol,
            "side": self.direction.value,
            "qty": self.qty,
            "avg_entry_price": self.avg_entry_price,
            "cost_basis": self.cost_basis,
            "entry_time": self.entry_time,
            "entry_order_id": self.entry_order_id,
            "lots": [lot.to_dict() for lot in self.lots],
        }
