"""Pure reconciliation policy: the broker's positions and account against the book and the ledger.

The broker is the truth for quantity. Under continuous trading it is always a little ahead of the
ingested fills, so a difference only counts (and is healed) once it repeats unchanged with no fill
applied in between; a second confirmed mismatch in a row rebuilds the book from scratch. A mismatch that
a rebuild left exactly as it was (same quantities, same fill count) is *stuck*: the stored activities
cannot explain it, so it is reported and not rebuilt again until a fill or the difference changes
(rebuilding a big book every other reconciliation would only burn the loop's time).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from core.errors import InvalidInput
from core.instruments import canonical_symbol
from core.ledger import LedgerEntry
from core.valuation import Mark, PriceSource
from workers.alpaca import BrokerPosition

ZERO = Decimal(0)
Mismatch = dict[str, tuple[Decimal, Decimal]]
"""symbol -> (FIFO qty, broker qty)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerBook:
    """What ``/v2/positions`` tells the manager: quantities, fallback marks and previous closes."""

    qty: dict[str, Decimal]
    rest_marks: dict[str, Mark]
    prev_close: dict[str, Decimal]


def broker_symbol(symbol: str, asset_class: str | None) -> str:
    """The book's spelling of a broker position's symbol (``BTCUSD`` of class crypto is ``BTC/USD``)."""
    try:
        return canonical_symbol(symbol, asset_class or None)
    except InvalidInput:  # an unknown class or a malformed symbol: compared as the broker spells it
        return symbol


def read_positions(positions: Sequence[BrokerPosition], now: datetime) -> BrokerBook:
    """Quantities of the parseable positions under the book's symbols; positive prices become REST marks
    / previous closes."""
    qty: dict[str, Decimal] = {}
    marks: dict[str, Mark] = {}
    prev: dict[str, Decimal] = {}
    for p in positions:
        if p.parse_error or p.qty is None:
            continue
        symbol = broker_symbol(p.symbol, p.asset_class)
        qty[symbol] = p.qty
        if p.current_price is not None and p.current_price > 0:
            marks[symbol] = Mark(price=p.current_price, ts=now, source=PriceSource.REST)
        if p.lastday_price is not None and p.lastday_price > 0:
            prev[symbol] = p.lastday_price
    return BrokerBook(qty=qty, rest_marks=marks, prev_close=prev)


def qty_mismatches(fifo_qty: Mapping[str, Decimal], broker_qty: Mapping[str, Decimal]) -> Mismatch:
    """Symbols where the FIFO book and the broker disagree: ``{symbol: (fifo, broker)}``."""
    out: Mismatch = {}
    for symbol in set(fifo_qty) | set(broker_qty):
        ours = fifo_qty.get(symbol, ZERO)
        theirs = broker_qty.get(symbol, ZERO)
        if ours != theirs:
            out[symbol] = (ours, theirs)
    return out


class Verdict(StrEnum):
    """What one reconciliation concluded."""

    AGREE = "agree"
    UNCONFIRMED = "unconfirmed"
    """A difference seen for the first time (or while fills arrived): checked again next time."""
    REREAD = "reread"
    """Confirmed: re-read every stored activity (idempotent)."""
    REBUILD = "rebuild"
    """Confirmed twice in a row: rebuild the book from scratch."""
    STUCK = "stuck"
    """The difference a rebuild left unchanged: reported, not healed again until the inputs change."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QtyCheck:
    """The state carried from one reconciliation to the next, and the verdict of the latest."""

    mismatch: Mismatch
    fills_seen: int
    """The book's fill count at this check."""
    streak: int
    """Confirmed mismatches in a row."""
    verdict: Verdict = Verdict.AGREE
    rebuilt: tuple[Mismatch, int] | None = None
    """The mismatch and fill count the last rebuild was made for (a rebuild that changes neither is stuck)."""


def check_quantities(previous: QtyCheck, fifo_qty: Mapping[str, Decimal], broker_qty: Mapping[str, Decimal],
                     fill_count: int) -> QtyCheck:
    """The next :class:`QtyCheck` (see the module docstring)."""
    mismatch = qty_mismatches(fifo_qty, broker_qty)
    if not mismatch:
        return QtyCheck(mismatch=mismatch, fills_seen=fill_count, streak=0, verdict=Verdict.AGREE)
    confirmed = mismatch == previous.mismatch and fill_count == previous.fills_seen
    if not confirmed:
        return QtyCheck(mismatch=mismatch, fills_seen=fill_count, streak=0, verdict=Verdict.UNCONFIRMED,
                        rebuilt=previous.rebuilt)
    if previous.rebuilt == (mismatch, fill_count):
        return replace(previous, verdict=Verdict.STUCK)
    streak = previous.streak + 1
    if streak >= 2:
        return QtyCheck(mismatch=mismatch, fills_seen=fill_count, streak=streak, verdict=Verdict.REBUILD,
                        rebuilt=(mismatch, fill_count))
    return QtyCheck(mismatch=mismatch, fills_seen=fill_count, streak=streak, verdict=Verdict.REREAD,
                    rebuilt=previous.rebuilt)


@dataclass(frozen=True, slots=True, kw_only=True)
class CashCalibration:
    """The offset added to the ledger's cash, and the candidate waiting to be confirmed."""

    offset: Decimal
    candidate: Decimal | None = None
    measured_at: datetime | None = None
    """When the broker read that last confirmed ``offset`` was taken (``None``: not measured this run)."""


def calibrate_cash(previous: CashCalibration, *, broker_cash: Decimal | None, ledger_cash: Decimal,
                   positions_agree: bool, read_at: datetime | None = None) -> CashCalibration:
    """Adopt ``broker_cash - ledger_cash`` as the offset once two reads in a row agree and positions match.

    The offset covers activity history older than the stored window (zero when the ledger is complete).
    """
    if broker_cash is None or not positions_agree:
        return replace(previous, candidate=None)
    candidate = broker_cash - ledger_cash
    if candidate == previous.candidate:
        return CashCalibration(offset=candidate, candidate=candidate, measured_at=read_at)
    return replace(previous, candidate=candidate)


def absorb_late_lines(calibration: CashCalibration, booked: Iterable[tuple[LedgerEntry, datetime]]) -> CashCalibration:
    """The offset after booking lines that arrived late (a date-only FEE posted overnight, found by the
    ingester's backfill) but are dated before the broker read that measured the offset.

    That read's cash already held such a line, so the offset was standing in for it: booking the line
    moves the ledger's cash by its amount and the offset must give that amount back, or equity would step
    by it until two more broker reads re-measure. Only a line the offset can explain (same sign, no larger)
    is absorbed, so a complete ledger (offset zero) is never pushed off by a line the broker had not yet
    posted when it was read; a wrong guess is undone by the next two agreeing reads.
    """
    if calibration.measured_at is None:
        return calibration
    offset = calibration.offset
    for entry, ts in booked:
        delta = entry.cash_delta
        if delta and ts <= calibration.measured_at and (delta > 0) == (offset > 0) and abs(delta) <= abs(offset):
            offset -= delta
    return calibration if offset == calibration.offset else replace(calibration, offset=offset, candidate=None)
