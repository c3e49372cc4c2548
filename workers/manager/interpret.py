"""Stored activities -> what the book and the ledger apply: fills, lot events, ledger entries (pure).

Fills come from the typed columns (the hot path). Every other activity is read from its raw
broker JSON by :func:`workers.alpaca.activities.parse_activities` (typed columns fill in what a
payload lacks), so corporate actions, option events and fees in the asset become lot events, and
cash follows :mod:`core.activity_types`: canceled activities change nothing, unknown types still
book their ``net_amount`` and are reported in :attr:`Interpretation.unknown`.

The lines of one split, name change or merger are paired by date: the caller passes the other
lines of the same days (``context``, already booked) and says which fresh lines may still wait
for a partner that has not been ingested yet (``may_wait``); those come back in ``held``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.corporate_actions import LotEvent, StockTransfer
from core.equity_replay import ReadActivities
from core.income import CashEntry
from core.ledger import CashLedger, LedgerEntry, cash_entry_effect, fill_entry, transfer_entry, zero_entry
from core.records import ActivityRecord, Fill
from workers.alpaca.activities import is_paired_code, parse_activities, unpaired_lines
from workers.manager.book import Skipped, triage

_TYPED_FIELDS = ("activity_type", "symbol", "side", "qty", "price", "net_amount", "order_id")


def activity_item(act: ActivityRecord) -> dict[str, Any]:
    """The broker JSON of a stored non-fill activity; typed columns fill in keys the payload lacks.

    A row stored with a parse error keeps only its payload (its typed columns are not trusted).
    """
    raw = act.raw
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = None
    item: dict[str, Any] = dict(raw) if isinstance(raw, Mapping) else {}
    item["id"] = act.activity_id  # the stored key, which the ledger books under
    if act.parse_error is None:
        for key in _TYPED_FIELDS:
            value = getattr(act, key)
            if item.get(key) is None and value is not None:
                item[key] = str(value)
        if not any(item.get(k) for k in ("date", "settle_date", "system_date", "transaction_time")):
            item["date"] = act.ts.isoformat()
    item.setdefault("activity_type", act.activity_type)
    return item


@dataclass(frozen=True, slots=True, kw_only=True)
class Interpretation:
    """What a batch of fresh activities does."""

    fills: tuple[Fill, ...]
    events: tuple[LotEvent, ...]
    entries: tuple[tuple[LedgerEntry, datetime], ...]
    """One ledger entry per booked activity id (fills, cash, zero for canceled or lot-only lines)."""
    cash: tuple[CashEntry, ...]
    skipped: tuple[Skipped, ...]
    unknown: tuple[str, ...]
    """Fresh activities of a type Alpaca does not document (their cash is booked)."""
    problems: tuple[str, ...]
    """Lines that could not become lot events (their cash is still booked)."""
    held: tuple[str, ...]
    """Fresh paired-kind lines waiting for their partner: not booked, read again next time."""
    regrouped: tuple[str, ...] = ()
    """Already-booked lines that were booked without a partner and now have one (the book must be rebuilt)."""


def interpret(fresh: Sequence[ActivityRecord], *, context: Iterable[ActivityRecord] = (),
              may_wait: Callable[[ActivityRecord], bool] = lambda _a: False) -> Interpretation:
    """Fills, lot events and ledger entries of ``fresh`` (rules in the module docstring)."""
    fill_rows = [a for a in fresh if a.is_fill]
    others = [a for a in fresh if not a.is_fill]
    sorted_fills = triage(fill_rows)
    fresh_ids = {a.activity_id for a in others}
    context_items = [activity_item(a) for a in context if a.activity_id not in fresh_ids]
    items = {a.activity_id: activity_item(a) for a in others}
    paired_ids = {i for i, item in items.items() if is_paired_code(str(item.get("activity_type") or ""))}
    held: set[str] = set()
    regrouped: set[str] = set()
    if paired_ids:
        unpaired = unpaired_lines([*context_items, *items.values()])
        held = {a.activity_id for a in others if a.activity_id in unpaired and a.activity_id in paired_ids
                and may_wait(a)}
        if context_items:
            before = unpaired_lines(context_items)
            after = unpaired_lines([*context_items, *(v for k, v in items.items() if k not in held)])
            regrouped = before - after
    parsed = parse_activities([*context_items, *(v for k, v in items.items() if k not in held)])
    booked = fresh_ids - held
    cash = [c for c in parsed.cash if c.entry_id in booked]
    fills = (*sorted_fills.fills, *(f for f in parsed.fills if f.fill_id in booked))  # EXTRD
    entries: list[tuple[LedgerEntry, datetime]] = [(fill_entry(f), f.ts) for f in fills]
    by_id = {c.entry_id: c for c in cash}
    transfers = {e.event_id: e for e in parsed.events if isinstance(e, StockTransfer)}
    unreadable = {p.split(": ", 1)[0] for p in parsed.problems}
    skipped = list(sorted_fills.skipped)
    fill_ids = {f.fill_id for f in fills}
    for a in others:
        if a.activity_id not in booked:
            continue
        entry = by_id.get(a.activity_id)
        if a.activity_id in fill_ids:
            continue
        if entry is not None:
            entries.append((cash_entry_effect(entry), entry.ts))
        elif a.activity_id in transfers:
            entries.append((transfer_entry(transfers[a.activity_id]), transfers[a.activity_id].ts))
        elif a.activity_id in unreadable and not _is_event_source(a.activity_id, parsed.events):
            skipped.append(Skipped(activity_id=a.activity_id, reason="activity not readable"))
        else:  # canceled, a memo, or a line whose effect is all in the lots
            entries.append((zero_entry(a.activity_id), a.ts))
    return Interpretation(fills=fills, events=parsed.events, entries=tuple(entries), cash=tuple(cash),
                          skipped=tuple(skipped), unknown=tuple(i for i in parsed.unknown if i in booked),
                          problems=parsed.problems, held=tuple(sorted(held)), regrouped=tuple(sorted(regrouped)))


def _is_event_source(activity_id: str, events: Iterable[LotEvent]) -> bool:
    return any(e.event_id == activity_id for e in events)


def paired_days(acts: Iterable[ActivityRecord]) -> list[ActivityRecord]:
    """The fresh activities whose day's other lines must be read too (splits, name changes, mergers)."""
    return [a for a in acts if not a.is_fill and is_paired_code(a.activity_type)]


class PairWait:
    """Paired-kind lines waiting for their partner: each may wait ``wait_s`` from when it was first seen."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        self.first_seen: dict[str, float] = {}

    def may_wait(self, paired: Iterable[ActivityRecord]) -> Callable[[ActivityRecord], bool]:
        now = time.monotonic()
        for a in paired:
            self.first_seen.setdefault(a.activity_id, now)
        return lambda a: now - self.first_seen.get(a.activity_id, now) < self.wait_s

    def settle(self, held: Iterable[str]) -> None:
        """Forget every line that is no longer waiting."""
        keep = set(held)
        self.first_seen = {i: t for i, t in self.first_seen.items() if i in keep}


def replay_reader(acts: Sequence[ActivityRecord]) -> ReadActivities:
    """:func:`interpret` as :class:`core.equity_replay.EquityReplay` reads a chunk of stored activities
    (every line of a day arrives in one chunk, so nothing waits)."""
    read = interpret(acts)
    return ReadActivities(fills=read.fills, events=read.events, entries=read.entries, skipped=len(read.skipped),
                          cash=read.cash)


def book_ledger(ledger: CashLedger, read: Interpretation) -> list[tuple[LedgerEntry, datetime]]:
    """Book every entry of ``read`` once (the ledger refuses an id it has seen); the entries newly booked."""
    return [(entry, ts) for entry, ts in read.entries if ledger.book(entry, ts)]
