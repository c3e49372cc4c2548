"""Provisional fills: a ``trade_updates`` fill booked at once, confirmed later by its REST FILL activity.

Pure: no database, no clock. The rules (docs/freshness.md):

- A stream ``fill``/``partial_fill`` with an order, symbol, side, qty and price becomes a
  :class:`ProvisionalFill` with id ``stream::<execution_id>`` (``stream::<order_id>:<cum_qty>`` when
  the update has no execution id). A duplicate delivery has the same id and is stored once.
- **Match.** A REST FILL activity and a provisional fill are the same execution when they name the
  same order and either the activity id's suffix (after ``::``) equals the execution id, or their
  cumulative quantities (``cum_qty`` of the activity, ``filled_qty`` of the update's order) are
  equal. Within one order ``cum_qty`` strictly increases, so at most one fill of each side matches:
  partial fills of different sizes cannot be confused with each other.
- **Confirm.** A REST fill that matches a provisional one already stored and still open, with the
  same content (symbol, side ignoring ``sell_short``, qty, price), *confirms* it: the provisional row
  stays booked and the REST row is stored with ``confirms`` set (the manager skips it).
- **Replace.** Same match, different content: REST wins. The provisional row is ``superseded`` and
  the REST row is stored with ``replaces`` set (the manager rebuilds its book without the
  provisional fill).
- **Late.** A provisional fill whose REST fill is already stored (or arrives in the same batch) is
  stored ``superseded`` from the start: the REST row stands, nothing is booked twice.
- REST only (a reconnect gap): the activity is an ordinary fill. Stream only: the provisional row
  stays booked and open until its activity arrives.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from core.records import ActivityRecord
from workers.alpaca.records import OrderEventRow

PROVISIONAL_PREFIX = "stream::"
"""Every provisional fill id starts with this (never a REST id: those start with a date)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisionalFill:
    """One stream execution, as the ``provisional_fills`` row stores it."""

    activity_id: str
    ts: datetime
    order_id: uuid.UUID
    execution_id: str | None
    fill_type: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    cum_qty: Decimal | None
    raw: Any = field(default=None, repr=False, compare=False)
    confirmed_by: str | None = None
    superseded: bool = False


@dataclass(frozen=True, slots=True)
class StoredFillRef:
    """What matching needs of a stored REST FILL activity."""

    activity_id: str
    order_id: uuid.UUID
    cum_qty: Decimal | None


@dataclass(slots=True)
class Links:
    """The outcome of matching one batch (see the module docstring)."""

    rest_confirms: dict[str, str] = field(default_factory=dict)
    """REST activity id -> the provisional id it confirms (same content)."""
    rest_replaces: dict[str, str] = field(default_factory=dict)
    """REST activity id -> the provisional id it replaces (content differs)."""
    stored_updates: dict[str, tuple[str, bool]] = field(default_factory=dict)
    """Stored provisional id -> (REST id, superseded)."""
    new_provisional: dict[str, ProvisionalFill] = field(default_factory=dict)
    """The batch's provisional fills with their state decided (late ones superseded)."""


def provisional_from_update(row: OrderEventRow) -> ProvisionalFill | None:
    """The provisional fill a trade update carries, or ``None`` (not a fill, or incomplete)."""
    if not row.is_fill or row.parse_error or row.order_id is None or row.qty is None or row.price is None:
        return None
    order = next((o for o in row.orders if o.order_id == row.order_id), None)
    if order is None or not order.symbol or not order.side or row.qty <= 0:
        return None
    cum = order.filled_qty
    if row.execution_id:
        pid = f"{PROVISIONAL_PREFIX}{row.execution_id}"
    elif cum is not None:
        pid = f"{PROVISIONAL_PREFIX}{row.order_id}:{cum.normalize()}"
    else:
        return None
    return ProvisionalFill(activity_id=pid, ts=row.ts, order_id=row.order_id, execution_id=row.execution_id,
                           fill_type=row.event, symbol=order.symbol, side=order.side, qty=row.qty, price=row.price,
                           cum_qty=cum, raw=row.raw)


def execution_suffix(activity_id: str) -> str | None:
    """The part of a REST activity id after ``::`` (Alpaca: ``<NY time>::<uuid>``)."""
    _, sep, tail = activity_id.partition("::")
    return tail or None if sep else None


def _order_uuid(value: str | uuid.UUID | None) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def is_usable_rest_fill(act: ActivityRecord) -> bool:
    return act.is_fill and act.parse_error is None and _order_uuid(act.order_id) is not None


def same_execution(rest_id: str, rest_order: uuid.UUID | None, rest_cum: Decimal | None, prov: ProvisionalFill) -> bool:
    """The match rule: same order, and the id suffix is the execution id or the cumulative quantities agree."""
    if rest_order is None or rest_order != prov.order_id:
        return False
    if prov.execution_id is not None and execution_suffix(rest_id) == prov.execution_id:
        return True
    return rest_cum is not None and prov.cum_qty is not None and rest_cum == prov.cum_qty


def _side(text: str | None) -> str:
    t = (text or "").lower()
    return "sell" if t in ("sell", "sell_short") else t


def same_content(rest: ActivityRecord, prov: ProvisionalFill) -> bool:
    """Equal as the book sees a fill (the REST spelling ``sell_short`` is a ``sell``)."""
    return (rest.symbol == prov.symbol and _side(rest.side) == _side(prov.side) and rest.qty == prov.qty
            and rest.price == prov.price)


def link_fills(
    new_rest: Iterable[ActivityRecord],
    new_provisional: Iterable[ProvisionalFill],
    stored_provisional: Sequence[ProvisionalFill],
    stored_rest: Sequence[StoredFillRef],
) -> Links:
    """Decide confirmations, replacements and late provisional fills for one batch (module docstring).

    ``stored_*`` are the rows already in the database for the orders of the batch; REST rows of the
    batch that are already stored (re-reads) change nothing.
    """
    links = Links()
    known_rest = {r.activity_id for r in stored_rest}
    fresh_rest = [a for a in new_rest if is_usable_rest_fill(a) and a.activity_id not in known_rest]
    stored_ids = {p.activity_id for p in stored_provisional}
    open_stored = [p for p in stored_provisional if p.confirmed_by is None and not p.superseded]
    taken: set[str] = set()
    for act in fresh_rest:
        order = _order_uuid(act.order_id)
        prov = next((p for p in open_stored if p.activity_id not in taken
                     and same_execution(act.activity_id, order, act.cum_qty, p)), None)
        if prov is None:
            continue
        taken.add(prov.activity_id)
        if same_content(act, prov):
            links.rest_confirms[act.activity_id] = prov.activity_id
            links.stored_updates[prov.activity_id] = (act.activity_id, False)
        else:
            links.rest_replaces[act.activity_id] = prov.activity_id
            links.stored_updates[prov.activity_id] = (act.activity_id, True)
    every_rest: list[tuple[str, uuid.UUID | None, Decimal | None]] = [
        (r.activity_id, r.order_id, r.cum_qty) for r in stored_rest]
    every_rest += [(a.activity_id, _order_uuid(a.order_id), a.cum_qty) for a in fresh_rest]
    for prov in new_provisional:
        if prov.activity_id in stored_ids:
            continue  # a duplicate delivery of a stored one: the insert is a no-op
        late = next((rid for rid, order, cum in every_rest if same_execution(rid, order, cum, prov)), None)
        if late is not None:
            prov = dataclasses.replace(prov, confirmed_by=late, superseded=True)
        links.new_provisional[prov.activity_id] = prov
    return links
