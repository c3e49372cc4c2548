"""Alpaca activities → the lot engine's inputs: fills, lot events and cash entries.

:func:`parse_activities` reads a batch of activity objects as ``/v2/account/activities`` returns
them (or as the Broker API's NTA events spell them: ``entry_type``, ``settle_date``,
``activity_sub_type``) and says what each means, using the table in :mod:`core.activity_types`:

- ``FILL`` → :class:`core.records.Fill` (through :func:`workers.alpaca.parse.parse_activity`);
- corporate actions and option events → :mod:`core.corporate_actions` events. Alpaca books a
  split, a name change or a stock merger as *lines*: the old shares leave (``qty`` < 0) and the new
  ones arrive (``qty`` > 0), with a third cash line for a cash-and-stock merger. Lines of one action
  are paired by type, date and description (mergers: by date, the cash line by the target's symbol),
  so pass every activity of a day together; a line left alone is reported in ``problems``;
- every booked non-fill activity → a :class:`core.income.CashEntry` of its ``net_amount`` (unknown
  codes too: stored, flagged in ``unknown``, cash still booked).

Status: ``canceled`` (and ``pending``…) lines are dropped; the latest version of an id wins, so a
``correct`` version replaces the one it corrects. Date-only activities get their time of day from
:func:`core.activity_types.activity_time`; crypto symbols get their canonical spelling.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from core.activity_types import LotEffect, StatusEffect, activity_time, effect_of, status_effect
from core.corporate_actions import (
    AssetFee,
    CashInLieu,
    LotEvent,
    Merger,
    OptionAssignment,
    OptionCashSettlement,
    OptionExercise,
    OptionExpiry,
    Spinoff,
    Split,
    StockTransfer,
    SymbolChange,
    Worthless,
)
from core.errors import InvalidInput
from core.income import CashEntry
from core.instruments import AssetClass, canonical_symbol
from core.records import ZERO, Fill
from workers.alpaca.parse import parse_activity

_RATIO_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:-|\s)?\s*for\s*(?:-|\s)?\s*(\d+(?:\.\d+)?)", re.I)
_SPIN_PARENT_RE = re.compile(r"\bfrom\s+([A-Z][A-Z0-9.]*)", re.I)
_NC_RE = re.compile(r"\b([A-Z][A-Z0-9.]*)\s+to\s+([A-Z][A-Z0-9.]*)\s*$", re.I)


@dataclass(frozen=True, slots=True)
class Line:
    """One non-fill activity, read defensively."""

    activity_id: str
    code: str
    ts: datetime
    symbol: str | None
    qty: Decimal | None
    price: Decimal | None
    net_amount: Decimal
    description: str
    sub_type: str | None
    status: str | None
    order_id: str | None


@dataclass(frozen=True, slots=True)
class ParsedActivities:
    fills: tuple[Fill, ...]
    events: tuple[LotEvent, ...]
    cash: tuple[CashEntry, ...]
    unknown: tuple[str, ...]
    """Ids of activities whose code Alpaca does not document (their cash is still in ``cash``)."""
    problems: tuple[str, ...]
    """Activities that could not become events, each with the reason."""


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _when(item: Mapping[str, Any], code: str) -> datetime | None:
    raw = item.get("date") or item.get("settle_date") or item.get("system_date") or item.get("transaction_time")
    if not isinstance(raw, str) or not raw:
        return None
    try:
        if len(raw) == 10:
            return activity_time(code, date.fromisoformat(raw))
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None


def _symbol(code: str, symbol: Any) -> str | None:
    if not isinstance(symbol, str) or not symbol.strip():
        return None
    text = symbol.strip().upper()
    if code == "CFEE":  # crypto fees spell the pair without a slash (ETHUSD)
        return canonical_symbol(text, AssetClass.CRYPTO)
    try:
        return canonical_symbol(text)
    except InvalidInput:
        return text  # stored as given; the lot engine refuses it with the reason if it is traded


def read_line(item: Mapping[str, Any]) -> Line | str:
    """One non-fill activity as a :class:`Line`, or the reason it cannot be read."""
    code = str(item.get("activity_type") or item.get("entry_type") or "").strip().upper()
    activity_id = str(item.get("id") or "")
    if not activity_id:
        return f"activity without id ({code or 'no type'})"
    ts = _when(item, code)
    if ts is None:
        return f"{activity_id}: no usable date"
    return Line(
        activity_id=activity_id, code=code or "UNKNOWN", ts=ts, symbol=_symbol(code, item.get("symbol")),
        qty=_decimal(item.get("qty")), price=_decimal(item.get("price")),
        net_amount=_decimal(item.get("net_amount")) or ZERO, description=str(item.get("description") or ""),
        sub_type=(str(item.get("activity_sub_type") or item.get("sub_type") or "") or None),
        status=(str(item["status"]) if item.get("status") is not None else None),
        order_id=(str(item["order_id"]) if item.get("order_id") else None),
    )


def _ratio_from_text(text: str) -> tuple[Decimal, Decimal] | None:
    m = _RATIO_RE.search(text)
    return (Decimal(m[1]), Decimal(m[2])) if m else None


def _split_events(lines: list[Line], problems: list[str]) -> list[LotEvent]:
    """SPLIT/SSP: the leaving and arriving lines of one symbol give the exact ratio (new/old qty)."""
    out: list[LotEvent] = []
    groups: dict[tuple[str | None, date, str], list[Line]] = defaultdict(list)
    for ln in lines:
        groups[(ln.symbol, ln.ts.date(), ln.description)].append(ln)
    for group in groups.values():
        leaving = [ln for ln in group if ln.qty is not None and ln.qty < 0]
        arriving = [ln for ln in group if ln.qty is not None and ln.qty > 0]
        first = min(group, key=lambda ln: ln.activity_id)
        if leaving and arriving and first.symbol:
            old = -sum((ln.qty for ln in leaving if ln.qty is not None), ZERO)
            new = sum((ln.qty for ln in arriving if ln.qty is not None), ZERO)
            out.append(Split(event_id=first.activity_id, ts=first.ts, symbol=first.symbol, new_rate=new, old_rate=old))
            continue
        ratio = _ratio_from_text(first.description)
        if ratio is not None and first.symbol:  # a single ADD line: the ratio is only in the text
            out.append(Split(event_id=first.activity_id, ts=first.ts, symbol=first.symbol, new_rate=ratio[0],
                             old_rate=ratio[1]))
        else:
            problems.extend(f"{ln.activity_id}: split line without its pair or a ratio" for ln in group)
    return out


def _symbol_change_events(lines: list[Line], problems: list[str]) -> list[LotEvent]:
    out: list[LotEvent] = []
    groups: dict[tuple[date, str], list[Line]] = defaultdict(list)
    for ln in lines:
        groups[(ln.ts.date(), ln.description)].append(ln)
    for group in groups.values():
        old = next((ln for ln in group if ln.qty is not None and ln.qty < 0 and ln.symbol), None)
        new = next((ln for ln in group if ln.qty is not None and ln.qty > 0 and ln.symbol), None)
        first = min(group, key=lambda ln: ln.activity_id)
        names = _NC_RE.search(first.description)
        if old is not None and new is not None and old.symbol and new.symbol and old.symbol != new.symbol:
            out.append(SymbolChange(event_id=old.activity_id, ts=old.ts, symbol=old.symbol, new_symbol=new.symbol))
        elif names is not None and names[1].upper() != names[2].upper():
            out.append(SymbolChange(event_id=first.activity_id, ts=first.ts, symbol=names[1].upper(),
                                    new_symbol=names[2].upper()))
        else:
            problems.extend(f"{ln.activity_id}: name change line without its pair" for ln in group)
    return out


def _merger_events(lines: list[Line], problems: list[str]) -> list[LotEvent]:
    """MA/REORG/VOF/FIMAT: per day, each removal line pairs with the allocation line of the same
    description (or the day's only one); cash lines (no quantity) join the removal of their symbol."""
    out: list[LotEvent] = []
    by_day: dict[date, list[Line]] = defaultdict(list)
    for ln in lines:
        by_day[ln.ts.date()].append(ln)
    for group in by_day.values():
        removals = [ln for ln in group if ln.qty is not None and ln.qty < 0 and ln.symbol]
        allocations = [ln for ln in group if ln.qty is not None and ln.qty > 0 and ln.symbol]
        cash_lines = [ln for ln in group if not ln.qty and ln.net_amount]
        used: set[str] = set()
        for rem in removals:
            alloc = next((a for a in allocations if a.description == rem.description), None)
            if alloc is None and len(allocations) == 1 and len(removals) == 1:
                alloc = allocations[0]
            cash = rem.net_amount + sum((c.net_amount for c in cash_lines if c.symbol == rem.symbol), ZERO)
            used |= {rem.activity_id} | {c.activity_id for c in cash_lines if c.symbol == rem.symbol}
            held = -rem.qty if rem.qty is not None else ZERO
            assert rem.symbol is not None
            if alloc is not None and alloc.symbol and alloc.qty is not None:
                used.add(alloc.activity_id)
                out.append(Merger(event_id=rem.activity_id, ts=rem.ts, symbol=rem.symbol, new_symbol=alloc.symbol,
                                  ratio=alloc.qty / held, cash=max(cash, ZERO)))
            elif cash > 0:
                out.append(Merger(event_id=rem.activity_id, ts=rem.ts, symbol=rem.symbol, cash=cash))
            else:  # shares removed for nothing
                out.append(Worthless(event_id=rem.activity_id, ts=rem.ts, symbol=rem.symbol))
        problems.extend(f"{ln.activity_id}: merger line without a removal to pair with"
                        for ln in group if ln.activity_id not in used)
    return out


def _single_event(ln: Line, effect: LotEffect) -> LotEvent | str | None:
    """Events one line describes on its own (``None``: the line moves cash only)."""
    if effect in (LotEffect.NONE, LotEffect.FILL):
        return None
    if ln.symbol is None:
        return f"{ln.activity_id}: {ln.code} without a symbol"
    qty = abs(ln.qty) if ln.qty is not None else None
    base: dict[str, Any] = {"event_id": ln.activity_id, "ts": ln.ts, "symbol": ln.symbol}
    if effect is LotEffect.CASH_IN_LIEU:
        return CashInLieu(**base, qty=qty, cash=ln.net_amount) if qty else f"{ln.activity_id}: CIL without qty"
    if effect is LotEffect.OPTION_EXPIRY:
        return OptionExpiry(**base, contracts=qty or None)
    if effect in (LotEffect.OPTION_EXERCISE, LotEffect.OPTION_ASSIGNMENT):
        if not qty:
            return f"{ln.activity_id}: {ln.code} without a contract quantity"
        cls = OptionExercise if effect is LotEffect.OPTION_EXERCISE else OptionAssignment
        return cls(**base, contracts=qty)
    if effect is LotEffect.OPTION_CASH_SETTLEMENT:
        return OptionCashSettlement(**base, cash=ln.net_amount, contracts=qty or None)
    if effect is LotEffect.ASSET_FEE:
        return AssetFee(**base, qty=qty) if qty else None  # a USD fee line: cash only
    if effect is LotEffect.STOCK_TRANSFER:
        if not ln.qty:
            return None
        return StockTransfer(**base, qty=ln.qty, price=abs(ln.price) if ln.price is not None else ZERO)
    if effect is LotEffect.SPINOFF:
        parent = _SPIN_PARENT_RE.search(ln.description)
        if not qty or parent is None or parent[1].upper() == ln.symbol:
            return f"{ln.activity_id}: spinoff without the parent symbol or a quantity"
        return Spinoff(event_id=ln.activity_id, ts=ln.ts, symbol=parent[1].upper(), new_symbol=ln.symbol,
                       new_qty=qty, new_price=abs(ln.price) if ln.price is not None else None)
    return None


def _latest_versions(items: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One item per (id, type), the last seen (a correction replaces what it corrects).

    The type is part of the key because Alpaca's own option-event samples give an exercise and its
    share leg (``OPEXC`` and ``OPTRD``) the same id.
    """
    latest: dict[tuple[str, str], Mapping[str, Any]] = {}
    anonymous: list[Mapping[str, Any]] = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        key = str(item.get("id") or "")
        if key:
            k = (key, str(item.get("activity_type") or item.get("entry_type") or ""))
            latest.pop(k, None)
            latest[k] = item
        else:
            anonymous.append(item)
    return [*latest.values(), *anonymous]


def parse_activities(items: Iterable[Mapping[str, Any]]) -> ParsedActivities:
    """Fills, lot events and cash entries of a batch of activities (rules in the module docstring)."""
    fills: list[Fill] = []
    cash: list[CashEntry] = []
    unknown: list[str] = []
    problems: list[str] = []
    paired: dict[LotEffect, list[Line]] = defaultdict(list)
    events: list[LotEvent] = []
    for item in _latest_versions(items):
        code = str(item.get("activity_type") or item.get("entry_type") or "").strip().upper()
        if status_effect(item.get("status")) is StatusEffect.IGNORE:
            continue
        if effect_of(code).lots is LotEffect.FILL and item.get("transaction_time"):
            record = parse_activity({**item, "activity_type": "FILL"})  # EXTRD reads as a fill
            if record.parse_error is None:
                fills.append(record.to_fill())
                continue
            if code == "FILL":
                problems.append(f"{record.activity_id}: {record.parse_error}")
                continue
            # an external trade without what a fill needs (no order id…): its cash still counts
        line = read_line(item)
        if isinstance(line, str):
            problems.append(line)
            continue
        effect = effect_of(line.code)
        if not effect.known:
            unknown.append(line.activity_id)
        if effect.books_cash:
            cash.append(CashEntry(line.activity_id, line.ts, line.code, line.net_amount, symbol=line.symbol,
                                  order_id=line.order_id, description=line.description or line.sub_type,
                                  status=line.status))
        if effect.lots in (LotEffect.SPLIT, LotEffect.SYMBOL_CHANGE, LotEffect.MERGER):
            paired[effect.lots].append(line)
            continue
        try:
            single = _single_event(line, effect.lots)
        except InvalidInput as exc:
            single = f"{line.activity_id}: {exc}"
        if isinstance(single, str):
            problems.append(single)
        elif single is not None:
            events.append(single)
    events += _split_events(paired[LotEffect.SPLIT], problems)
    events += _symbol_change_events(paired[LotEffect.SYMBOL_CHANGE], problems)
    events += _merger_events(paired[LotEffect.MERGER], problems)
    return ParsedActivities(tuple(fills), tuple(events), tuple(cash), tuple(unknown), tuple(problems))


PAIRED_EFFECTS = frozenset({LotEffect.SPLIT, LotEffect.SYMBOL_CHANGE, LotEffect.MERGER})
"""Lot effects whose activities come as several lines that :func:`parse_activities` pairs by date."""


def is_paired_code(code: str | None) -> bool:
    """Does an activity of this type pair with other lines of its day (split, name change, merger)?"""
    return effect_of(code or "").lots in PAIRED_EFFECTS


def unpaired_lines(items: Iterable[Mapping[str, Any]]) -> set[str]:
    """Ids of paired-kind lines whose counterpart is not among ``items`` (same grouping as the parser).

    A split or name change needs both its leaving (``qty`` < 0) and arriving (``qty`` > 0) line; a
    merger's removal needs an allocation line of its description (a lone removal may be a cash
    merger, or a stock merger whose allocation is still to come: it counts as unpaired), an
    allocation or a cash line needs a removal. The caller waits a little for such a line's partner.
    """
    groups: dict[tuple[LotEffect, date, str | None, str], list[Line]] = defaultdict(list)
    for item in _latest_versions(items):
        if status_effect(item.get("status")) is StatusEffect.IGNORE:
            continue
        line = read_line(item)
        if isinstance(line, str):
            continue
        effect = effect_of(line.code).lots
        if effect not in PAIRED_EFFECTS:
            continue
        day = line.ts.date()
        if effect is LotEffect.SPLIT:
            groups[(effect, day, line.symbol, line.description)].append(line)
        elif effect is LotEffect.SYMBOL_CHANGE:
            groups[(effect, day, None, line.description)].append(line)
        else:
            groups[(effect, day, None, "")].append(line)
    out: set[str] = set()
    for (effect, *_), group in groups.items():
        leaving = [ln for ln in group if ln.qty is not None and ln.qty < 0]
        arriving = [ln for ln in group if ln.qty is not None and ln.qty > 0]
        if effect is not LotEffect.MERGER:
            if not leaving or not arriving:
                out.update(ln.activity_id for ln in group)
            continue
        for rem in leaving:
            partner = [a for a in arriving if a.description == rem.description] or (
                arriving if len(arriving) == 1 and len(leaving) == 1 else [])
            if not partner:
                out.add(rem.activity_id)
        if not leaving:
            out.update(ln.activity_id for ln in group)
    return out
