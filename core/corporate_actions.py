"""Lot events: what changes lots besides fills (corporate actions, option events, fees in the asset).

Each event is a frozen record with an ``event_id`` (unique, like a fill id), a UTC ``ts`` and the
``symbol`` whose lots it changes. :class:`core.fifo.FifoBook` applies them in time order with the
fills; the rules of each kind are in its docstring and, with the reasons, in
``docs/core_analytics.md`` ("Lot events").

The broker adapter builds these from Alpaca's activities (``SPLIT``, ``CIL``, ``NC``/``SC``, ``MA``,
``REORG``, ``SPIN``, ``OPEXP``, ``OPEXC``/``OPXRC``, ``OPASN``, ``OPCSH``, ``CFEE``, ``JNLS``,
``ACATS``); nothing here knows the broker's JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar

from core.errors import InvalidInput
from core.instruments import parse_occ
from core.records import ZERO, to_decimal, to_utc


class EventKind(StrEnum):
    """The kinds of lot event (the ``kind`` of each record's JSON form)."""

    SPLIT = "split"
    CASH_IN_LIEU = "cash_in_lieu"
    SYMBOL_CHANGE = "symbol_change"
    MERGER = "merger"
    SPINOFF = "spinoff"
    WORTHLESS = "worthless"
    OPTION_EXPIRY = "option_expiry"
    OPTION_EXERCISE = "option_exercise"
    OPTION_ASSIGNMENT = "option_assignment"
    OPTION_CASH_SETTLEMENT = "option_cash_settlement"
    ASSET_FEE = "asset_fee"
    STOCK_TRANSFER = "stock_transfer"


def _check_common(ev: Any) -> str:
    row = f"{ev.kind.value} event {ev.event_id!r}"
    if not isinstance(ev.event_id, str) or not ev.event_id:
        raise InvalidInput(f"{row}: event_id must be a non-empty string")
    if not isinstance(ev.symbol, str) or not ev.symbol:
        raise InvalidInput(f"{row}: symbol must be a non-empty string")
    object.__setattr__(ev, "ts", to_utc(ev.ts, "ts", row))
    return row


def _decimal_field(ev: Any, name: str, row: str, *, positive: bool = False, non_negative: bool = False,
                   optional: bool = False) -> None:
    value = getattr(ev, name)
    if value is None:
        if optional:
            return
        raise InvalidInput(f"{row}: {name} is required")
    number = to_decimal(value, name, row)
    if positive and number <= 0:
        raise InvalidInput(f"{row}: {name} must be positive, got {number}")
    if non_negative and number < 0:
        raise InvalidInput(f"{row}: {name} must not be negative, got {number}")
    object.__setattr__(ev, name, number)


def _symbol_field(ev: Any, name: str, row: str) -> None:
    value = getattr(ev, name)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{row}: {name} must be a non-empty string")
    if value == ev.symbol:
        raise InvalidInput(f"{row}: {name} must differ from symbol {ev.symbol!r}")


class _EventBase:
    """Shared behaviour: the symbols an event ties together and its JSON form."""

    __slots__ = ()
    kind: ClassVar[EventKind]
    event_id: str
    ts: datetime
    symbol: str

    @property
    def symbols(self) -> tuple[str, ...]:
        """Every symbol whose lots this event reads or writes (they replay together)."""
        return (self.symbol,)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, Decimal):
                value = str(value)
            out[f.name] = value
        return out


@dataclass(frozen=True, slots=True)
class Split(_EventBase):
    """Forward or reverse split: ``new_rate`` new shares for every ``old_rate`` held (10-for-1:
    new 10, old 1; 1-for-10 reverse: new 1, old 10).

    Every open lot keeps its cost and entry time; its quantity is multiplied by ``new/old`` (rounded
    to 9 decimals, Alpaca's precision) and its price divided by it. A fractional remainder the broker
    pays out arrives as a separate :class:`CashInLieu`.
    """

    kind: ClassVar[EventKind] = EventKind.SPLIT
    event_id: str
    ts: datetime
    symbol: str
    new_rate: Decimal
    old_rate: Decimal

    def __post_init__(self) -> None:
        row = _check_common(self)
        _decimal_field(self, "new_rate", row, positive=True)
        _decimal_field(self, "old_rate", row, positive=True)

    @property
    def ratio(self) -> Decimal:
        return self.new_rate / self.old_rate


@dataclass(frozen=True, slots=True)
class CashInLieu(_EventBase):
    """Cash paid for ``qty`` units removed (a split's or merger's fractional remainder).

    A sale of ``qty`` at ``cash / qty`` (oldest lots first): the difference to their cost is realized.
    """

    kind: ClassVar[EventKind] = EventKind.CASH_IN_LIEU
    event_id: str
    ts: datetime
    symbol: str
    qty: Decimal
    cash: Decimal

    def __post_init__(self) -> None:
        row = _check_common(self)
        _decimal_field(self, "qty", row, positive=True)
        _decimal_field(self, "cash", row, non_negative=True)


@dataclass(frozen=True, slots=True)
class SymbolChange(_EventBase):
    """Name/symbol change (``NC``, ``SC``): the open position continues under ``new_symbol``, the
    same round trip, lots, costs and entry times."""

    kind: ClassVar[EventKind] = EventKind.SYMBOL_CHANGE
    event_id: str
    ts: datetime
    symbol: str
    new_symbol: str

    def __post_init__(self) -> None:
        row = _check_common(self)
        _symbol_field(self, "new_symbol", row)

    @property
    def symbols(self) -> tuple[str, ...]:
        return (self.symbol, self.new_symbol)


@dataclass(frozen=True, slots=True)
class Merger(_EventBase):
    """Merger or reorganisation (``MA``, ``REORG``) of the whole position in ``symbol``.

    - stock: ``ratio`` shares of ``new_symbol`` per share held; the position moves to ``new_symbol``
      like a symbol change scaled like a split (costs and entry times kept);
    - cash: ``cash`` (total, in dollars) is received for the position;
    - both: the cash is a return of capital that lowers the cost of the new lots pro rata (a price
      can fall below zero if the cash exceeds the cost: that gain is realized when they are sold);
    - cash only (``new_symbol`` ``None``): a sale of the whole position for ``cash``.
    """

    kind: ClassVar[EventKind] = EventKind.MERGER
    event_id: str
    ts: datetime
    symbol: str
    new_symbol: str | None = None
    ratio: Decimal = ZERO
    cash: Decimal = ZERO

    def __post_init__(self) -> None:
        row = _check_common(self)
        _decimal_field(self, "ratio", row, non_negative=True)
        _decimal_field(self, "cash", row, non_negative=True)
        if self.new_symbol is None:
            if self.ratio != 0:
                raise InvalidInput(f"{row}: a stock ratio needs new_symbol")
        else:
            _symbol_field(self, "new_symbol", row)
            if self.ratio <= 0:
                raise InvalidInput(f"{row}: a stock merger needs a positive ratio")

    @property
    def symbols(self) -> tuple[str, ...]:
        return (self.symbol,) if self.new_symbol is None else (self.symbol, self.new_symbol)


@dataclass(frozen=True, slots=True)
class Spinoff(_EventBase):
    """Spinoff (``SPIN``): ``new_qty`` shares of ``new_symbol`` received for the position in ``symbol``.

    ``basis_fraction`` of each parent lot's cost moves to the new shares (pro rata to the parent
    lots' quantities, same entry times); the parent keeps its quantity and the rest of its cost.
    The broker states the allocation as the new shares' cost per share (``new_price``, the price
    of Alpaca's ``SPIN`` line): then the fraction is ``new_qty × new_price / parent cost`` (at most
    1). Otherwise the adapter gives the fraction from market values (new value / (parent value +
    new value)); 0 leaves the whole cost with the parent and the new shares at zero cost.
    """

    kind: ClassVar[EventKind] = EventKind.SPINOFF
    event_id: str
    ts: datetime
    symbol: str
    new_symbol: str
    new_qty: Decimal
    basis_fraction: Decimal = ZERO
    new_price: Decimal | None = None

    def __post_init__(self) -> None:
        row = _check_common(self)
        _symbol_field(self, "new_symbol", row)
        _decimal_field(self, "new_qty", row, positive=True)
        _decimal_field(self, "basis_fraction", row, non_negative=True)
        _decimal_field(self, "new_price", row, non_negative=True, optional=True)
        if self.basis_fraction > 1:
            raise InvalidInput(f"{row}: basis_fraction must be between 0 and 1, got {self.basis_fraction}")
        if self.new_price is not None and self.basis_fraction:
            raise InvalidInput(f"{row}: give basis_fraction or new_price, not both")

    @property
    def symbols(self) -> tuple[str, ...]:
        return (self.symbol, self.new_symbol)


@dataclass(frozen=True, slots=True)
class Worthless(_EventBase):
    """Worthless removal: the whole position is closed at price 0 (its cost is a realized loss)."""

    kind: ClassVar[EventKind] = EventKind.WORTHLESS
    event_id: str
    ts: datetime
    symbol: str

    def __post_init__(self) -> None:
        _check_common(self)


@dataclass(frozen=True, slots=True)
class OptionExpiry(_EventBase):
    """Expiry out of the money (``OPEXP``): ``contracts`` (all when ``None``) close at price 0, so a
    long loses its premium and a short keeps it."""

    kind: ClassVar[EventKind] = EventKind.OPTION_EXPIRY
    event_id: str
    ts: datetime
    symbol: str
    contracts: Decimal | None = None

    def __post_init__(self) -> None:
        row = _check_common(self)
        _decimal_field(self, "contracts", row, positive=True, optional=True)


@dataclass(frozen=True, slots=True)
class OptionExercise(_EventBase):
    """Exercise of a long option (``OPEXC``/``OPXRC``; also an in-the-money expiry).

    The contracts close at price 0 (the premium is realized on the option's round trip) and
    ``contracts × 100`` shares of the underlying are bought (call) or sold (put) at the strike, as
    the broker's ``OPTRD`` books them; that share leg then matches like any fill.
    """

    kind: ClassVar[EventKind] = EventKind.OPTION_EXERCISE
    event_id: str
    ts: datetime
    symbol: str
    contracts: Decimal

    def __post_init__(self) -> None:
        row = _check_common(self)
        _decimal_field(self, "contracts", row, positive=True)

    @property
    def symbols(self) -> tuple[str, ...]:
        return (self.symbol, parse_occ(self.symbol).underlying)


@dataclass(frozen=True, slots=True)
class OptionAssignment(_EventBase):
    """Assignment of a short option (``OPASN``): the contracts close at price 0 (the premium
    received is realized) and ``contracts × 100`` shares are sold (call) or bought (put) at the strike."""

    kind: ClassVar[EventKind] = EventKind.OPTION_ASSIGNMENT
    event_id: str
    ts: datetime
    symbol: str
    contracts: Decimal

    def __post_init__(self) -> None:
        row = _check_common(self)
        _decimal_field(self, "contracts", row, positive=True)

    @property
    def symbols(self) -> tuple[str, ...]:
        return (self.symbol, parse_occ(self.symbol).underlying)


@dataclass(frozen=True, slots=True)
class OptionCashSettlement(_EventBase):
    """Cash settlement (``OPCSH``): ``contracts`` (all when ``None``) close for ``cash`` in total
    (signed as the account sees it: received positive, paid negative)."""

    kind: ClassVar[EventKind] = EventKind.OPTION_CASH_SETTLEMENT
    event_id: str
    ts: datetime
    symbol: str
    cash: Decimal
    contracts: Decimal | None = None

    def __post_init__(self) -> None:
        row = _check_common(self)
        _decimal_field(self, "cash", row)
        _decimal_field(self, "contracts", row, positive=True, optional=True)


@dataclass(frozen=True, slots=True)
class AssetFee(_EventBase):
    """A fee taken in the asset (crypto ``CFEE``): ``qty`` units leave the long position (oldest
    lots first) at their cost, and that cost is a fee of the round trip, not a trading loss. A fee
    larger than the position (posted after the day's sales) takes the rest as a short at price 0, as the
    broker's position goes below zero until the next buy covers it."""

    kind: ClassVar[EventKind] = EventKind.ASSET_FEE
    event_id: str
    ts: datetime
    symbol: str
    qty: Decimal

    def __post_init__(self) -> None:
        row = _check_common(self)
        _decimal_field(self, "qty", row, positive=True)


@dataclass(frozen=True, slots=True)
class StockTransfer(_EventBase):
    """Shares journaled or transferred in (``qty`` > 0) or out (< 0) at ``price`` (``JNLS``,
    ``ACATS``): in, a lot opens at that price (the value is an external flow, like a deposit);
    out, the shares leave like a sale at that price."""

    kind: ClassVar[EventKind] = EventKind.STOCK_TRANSFER
    event_id: str
    ts: datetime
    symbol: str
    qty: Decimal
    price: Decimal

    def __post_init__(self) -> None:
        row = _check_common(self)
        _decimal_field(self, "qty", row)
        if self.qty == 0:
            raise InvalidInput(f"{row}: qty must not be zero")
        _decimal_field(self, "price", row, non_negative=True)


LotEvent = (Split | CashInLieu | SymbolChange | Merger | Spinoff | Worthless | OptionExpiry | OptionExercise
            | OptionAssignment | OptionCashSettlement | AssetFee | StockTransfer)
EVENT_TYPES: dict[EventKind, type[Any]] = {
    cls.kind: cls
    for cls in (Split, CashInLieu, SymbolChange, Merger, Spinoff, Worthless, OptionExpiry, OptionExercise,
                OptionAssignment, OptionCashSettlement, AssetFee, StockTransfer)
}
_TYPES = tuple(EVENT_TYPES.values())


def is_lot_event(value: object) -> bool:
    return isinstance(value, _TYPES)


def event_from_dict(data: dict[str, Any]) -> LotEvent:
    """The record :meth:`to_dict` wrote (decimals from their text, times from ISO 8601)."""
    try:
        cls = EVENT_TYPES[EventKind(data["kind"])]
    except (KeyError, ValueError):
        raise InvalidInput(f"lot event {data.get('event_id')!r}: unknown kind {data.get('kind')!r}") from None
    kwargs = {k: v for k, v in data.items() if k != "kind"}
    if isinstance(kwargs.get("ts"), str):
        kwargs["ts"] = datetime.fromisoformat(kwargs["ts"])
    try:
        event: LotEvent = cls(**kwargs)
    except TypeError as exc:
        raise InvalidInput(f"lot event {data.get('event_id')!r}: {exc}") from None
    return event
