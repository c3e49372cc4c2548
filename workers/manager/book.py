"""Pure decisions of the activities -> book step: which rows to skip, which orders to look up, what changed.

No database, no clock: the runner reads the rows, calls these, and writes what they return.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from core.corporate_actions import LotEvent
from core.errors import InvalidInput
from core.fifo import BookUpdate, FifoBook
from core.income import CashEntry
from core.ledger import ZERO
from core.records import ActivityRecord, Fill, OrderMeta, RoundTrip

ORDER_RETRIES = 20
"""A fill's order missing from ``orders`` is looked up again at this many syncs, then left to a full re-read."""
ORDER_RETRY_MAX_IDS = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class Skipped:
    """An activity booked as seen without effect, and why."""

    activity_id: str
    reason: str
    expected: bool = True
    """An unparseable or incomplete row (counted only); ``False``: a row the book refused (logged too)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Triage:
    """The fresh activities sorted: fills for the book, rows to skip (everything else goes to the ledger)."""

    fills: tuple[Fill, ...]
    skipped: tuple[Skipped, ...]


def triage(fresh: Iterable[ActivityRecord]) -> Triage:
    """Fills to apply and rows to skip: unparseable rows, and fills the lot engine cannot use."""
    fills: list[Fill] = []
    skipped: list[Skipped] = []
    for act in fresh:
        if act.parse_error is not None:
            skipped.append(Skipped(activity_id=act.activity_id, reason=f"parse error: {act.parse_error}"))
        elif act.is_fill and (not act.symbol or act.qty is None or act.price is None):
            skipped.append(Skipped(activity_id=act.activity_id, reason="fill without symbol, qty or price"))
        elif act.is_fill:
            try:
                fills.append(act.to_fill())
            except InvalidInput as exc:
                skipped.append(Skipped(activity_id=act.activity_id, reason=str(exc), expected=False))
    return Triage(fills=tuple(fills), skipped=tuple(skipped))


def orders_wanted(fills: Iterable[Fill], known: Mapping[str, object], missing: Mapping[str, int]) -> set[str]:
    """Order ids to read: those of new fills not known yet, plus the ones still being retried."""
    return {f.order_id for f in fills if f.order_id and f.order_id not in known} | set(missing)


def still_missing(wanted: Iterable[str], known: Mapping[str, object], previous: Mapping[str, int], *,
                  bulk: bool) -> dict[str, int]:
    """Order ids still missing after a lookup -> lookups tried; bounded in tries and in count.

    Orders usually land with (or before) their fills; a late one is looked up again a few times,
    then left to the exit-reason refresh of a later full re-read (``bulk``: nothing is retried).
    """
    if bulk:
        return {}
    tries = {o: previous.get(o, 0) + 1 for o in wanted if o not in known}
    kept = sorted(((o, n) for o, n in tries.items() if n <= ORDER_RETRIES), key=lambda item: item[1])
    return dict(kept[:ORDER_RETRY_MAX_IDS])


@dataclass(frozen=True, slots=True, kw_only=True)
class BookChanges:
    """What applying fills changed in the book (a materialised :class:`core.fifo.BookUpdate`)."""

    upserted: tuple[RoundTrip, ...] = ()
    removed_trade_ids: tuple[str, ...] = ()
    symbols: frozenset[str] = frozenset()

    @classmethod
    def of(cls, update: BookUpdate) -> BookChanges:
        return cls(upserted=tuple(update.upserted), removed_trade_ids=tuple(update.removed_trade_ids),
                   symbols=frozenset(update.symbols))

    def merged(self, other: BookChanges) -> BookChanges:
        return BookChanges(upserted=self.upserted + other.upserted,
                           removed_trade_ids=self.removed_trade_ids + other.removed_trade_ids,
                           symbols=self.symbols | other.symbols)


@dataclass(frozen=True, slots=True, kw_only=True)
class TripNews:
    """Round trips to write and announce after one book update."""

    latest: tuple[RoundTrip, ...]
    """The newest state of every upserted trip (a trip re-shaped twice in one update appears once)."""
    removed: tuple[str, ...]
    announce_ids: tuple[str, ...]
    """New, changed and removed trade ids: all are news to a dashboard."""
    realized_closed: Decimal
    """Closed trips' net P&L after the update."""


def tally_trips(changes: BookChanges, trip_pl: dict[str, Decimal], realized_closed: Decimal) -> TripNews:
    """Fold ``changes`` into ``trip_pl`` (trade id -> net P&L, updated in place) and the realized total."""
    latest: dict[str, RoundTrip] = {}
    for trip in changes.upserted:
        latest[trip.trade_id] = trip
    realized = realized_closed
    for tid in changes.removed_trade_ids:
        realized -= trip_pl.pop(tid, ZERO)
    for tid, trip in latest.items():
        realized += trip.net_pl - trip_pl.get(tid, ZERO)
        trip_pl[tid] = trip.net_pl
    return TripNews(latest=tuple(latest.values()), removed=changes.removed_trade_ids,
                    announce_ids=(*latest, *changes.removed_trade_ids), realized_closed=realized)


def newest_seq(acts: Sequence[ActivityRecord], last_seq: int) -> int:
    """The highest stored ``seq`` seen (the incremental cursor)."""
    return max([last_seq, *(a.seq for a in acts if a.seq is not None)])


def cursor(acts: Sequence[ActivityRecord], last_seq: int, *, held: Iterable[str] = ()) -> int:
    """The incremental cursor after a sync: the newest ``seq``, but below every held line (read again
    next time, also after a restart from a checkpoint)."""
    waiting = set(held)
    held_seqs = [a.seq for a in acts if a.seq is not None and a.activity_id in waiting]
    newest = newest_seq(acts, last_seq)
    return min(newest, min(held_seqs) - 1) if held_seqs else newest


@dataclass(frozen=True, slots=True, kw_only=True)
class Applied:
    """What :func:`apply_all` did: the changes, the first refusal, and whether an event was refused."""

    changes: BookChanges
    error: InvalidInput | None = None
    event_refused: bool = False


def apply_all(book: FifoBook, fills: list[Fill], orders: list[OrderMeta], events: list[LotEvent],
              fees: Sequence[CashEntry] = ()) -> Applied:
    """Apply a batch; when the book refuses it (an id reused with other content), every fill and event
    on its own, keeping the first version of each (a refused event: the activities must decide).
    Fee lines (:mod:`core.trip_fees`) cannot be refused; they go with the batch or, after a refusal, last."""
    try:
        return Applied(changes=BookChanges.of(book.apply(fills, orders, events=events, fees=fees)))
    except InvalidInput as exc:
        error = exc
    changes = BookChanges.of(book.apply([], fees=fees)) if fees else BookChanges()
    for i, f in enumerate(fills):
        try:
            update = book.apply([f], orders if i == 0 else ())
        except InvalidInput:
            continue
        changes = changes.merged(BookChanges.of(update))
    refused = False
    for ev in events:
        try:
            update = book.apply([], events=[ev])
        except InvalidInput:
            refused = True
            continue
        changes = changes.merged(BookChanges.of(update))
    return Applied(changes=changes, error=error, event_refused=refused)
