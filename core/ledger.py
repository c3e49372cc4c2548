"""The cash ledger: what each activity does to cash and net deposits, and which ones are booked.

Pure (no I/O, no clock). A fill moves cash by exactly ``-signed_qty * price * multiplier`` (100 per
option contract, :mod:`core.instruments`); every other activity by its ``net_amount`` (the broker's own
accounting; fees arrive as FEE activities) when :mod:`core.activity_types` says it books cash and its
status is not canceled (:func:`cash_entry_effect`). Net deposits are the cumulative ``net_amount`` of
the external flows (CSD, CSW, JNL, JNLC, ACATC) plus the value of securities journaled or transferred
in or out (JNLS, ACATS: :func:`transfer_entry`). The broker's reported cash may differ by a
calibration offset (activities older than the stored window); the manager measures and adds it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from core.activity_types import StatusEffect, effect_of, status_effect
from core.corporate_actions import StockTransfer
from core.errors import InvalidInput
from core.income import CashEntry
from core.instruments import multiplier_for
from core.records import FILL_ACTIVITY_TYPES, Fill, Side

ZERO = Decimal(0)
CASH_FLOW_TYPES = frozenset(code for code in ("CSD", "CSW", "JNL", "JNLC", "ACATC") if effect_of(code).external_flow)
"""Activity types that move money into or out of the account (deposits, withdrawals, journals)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerEntry:
    """One activity's effect on cash (and deposits)."""

    activity_id: str
    cash_delta: Decimal
    deposit_delta: Decimal


def _multiplier(symbol: str | None) -> Decimal:
    if not symbol:
        return Decimal(1)
    try:
        return multiplier_for(symbol)
    except InvalidInput:  # a malformed option symbol: the lot engine refuses the fill with the reason
        return Decimal(1)


def ledger_entry(activity_id: str, activity_type: str, *, side: str | None, qty: Decimal | None,
                 price: Decimal | None, net_amount: Decimal | None, symbol: str | None = None) -> LedgerEntry:
    """Cash and deposit effect of one stored activity (fills by qty x price x multiplier, others by net amount)."""
    kind = activity_type.upper()
    if kind in FILL_ACTIVITY_TYPES:
        if qty is None or price is None:
            return LedgerEntry(activity_id=activity_id, cash_delta=ZERO, deposit_delta=ZERO)
        notional = qty * price * _multiplier(symbol)
        buy = (side or "").lower().startswith("buy")
        return LedgerEntry(activity_id=activity_id, cash_delta=-notional if buy else notional, deposit_delta=ZERO)
    effect = effect_of(kind)
    amount = net_amount if net_amount is not None and effect.books_cash else ZERO
    return LedgerEntry(activity_id=activity_id, cash_delta=amount,
                       deposit_delta=amount if effect.external_flow else ZERO)


def fill_entry(fill: Fill) -> LedgerEntry:
    """A fill's cash: ``-qty x price x multiplier`` for a buy, ``+`` for a sell (fees arrive as activities)."""
    notional = fill.qty * fill.price * _multiplier(fill.symbol)
    return LedgerEntry(activity_id=fill.fill_id, cash_delta=-notional if fill.side is Side.BUY else notional,
                       deposit_delta=ZERO)


def cash_entry_effect(entry: CashEntry) -> LedgerEntry:
    """A non-fill activity's cash (:class:`core.income.CashEntry`): its ``net_amount`` when the type books
    cash (unknown types too), nothing when canceled; a deposit when the type is an external flow."""
    effect = effect_of(entry.activity_type)
    if not effect.books_cash or status_effect(entry.status) is StatusEffect.IGNORE:
        return LedgerEntry(activity_id=entry.entry_id, cash_delta=ZERO, deposit_delta=ZERO)
    return LedgerEntry(activity_id=entry.entry_id, cash_delta=entry.amount,
                       deposit_delta=entry.amount if effect.external_flow else ZERO)


def transfer_entry(event: StockTransfer) -> LedgerEntry:
    """Securities journaled or transferred (JNLS, ACATS): no cash, their value is a deposit (in) or a
    withdrawal (out), so the shares arriving never look like a gain."""
    value = event.qty * event.price * _multiplier(event.symbol)
    return LedgerEntry(activity_id=event.event_id, cash_delta=ZERO, deposit_delta=value)


def zero_entry(activity_id: str) -> LedgerEntry:
    """An activity seen and booked without effect (canceled, a memo, a line whose effect is in the lots)."""
    return LedgerEntry(activity_id=activity_id, cash_delta=ZERO, deposit_delta=ZERO)


class CashLedger:
    """Cash, net deposits and the ids already booked: the non-FIFO part of a destination's state.

    Mutable (it is the running state a checkpoint saves); :meth:`book` refuses an id it has seen.
    """

    __slots__ = ("cash", "net_deposits", "applied", "deposit_events", "skipped")

    def __init__(self) -> None:
        self.cash = ZERO
        self.net_deposits = ZERO
        self.applied: set[str] = set()
        self.deposit_events: list[tuple[datetime, Decimal]] = []
        """``(ts, deposit_delta)`` of every cash-flow activity: deposits as of any instant."""
        self.skipped = 0
        """Activities marked booked without effect (unparseable or incomplete rows)."""

    def book(self, entry: LedgerEntry, ts: datetime) -> bool:
        """Apply one entry once; ``False`` when its activity was already booked."""
        if entry.activity_id in self.applied:
            return False
        self.applied.add(entry.activity_id)
        self.cash += entry.cash_delta
        if entry.deposit_delta:
            self.net_deposits += entry.deposit_delta
            self.deposit_events.append((ts, entry.deposit_delta))
        return True

    def skip(self, activity_id: str) -> None:
        """Mark an activity as seen without booking it (it is counted, never retried)."""
        self.applied.add(activity_id)
        self.skipped += 1

    def deposits_until(self, ts: datetime, baseline: Decimal) -> Decimal:
        """Net deposits at ``ts``: ``baseline`` plus every cash flow at or before it."""
        return baseline + sum((d for t, d in self.deposit_events if t <= ts), ZERO)

    def to_dict(self) -> dict[str, Any]:
        return self.snapshot()()

    def snapshot(self) -> Callable[[], dict[str, Any]]:
        """The state as of now, as a document built later (in another thread) from copies of the containers."""
        cash, deposits, skipped = self.cash, self.net_deposits, self.skipped
        applied, events = set(self.applied), list(self.deposit_events)
        return lambda: {"cash": str(cash), "net_deposits": str(deposits), "applied": sorted(applied),
                        "deposit_events": [[t.isoformat(), str(d)] for t, d in events], "skipped": skipped}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CashLedger:
        ledger = cls()
        ledger.cash = Decimal(data["cash"])
        ledger.net_deposits = Decimal(data["net_deposits"])
        ledger.applied = set(data["applied"])
        ledger.deposit_events = [(datetime.fromisoformat(t), Decimal(d)) for t, d in data["deposit_events"]]
        ledger.skipped = int(data.get("skipped", 0))
        return ledger
