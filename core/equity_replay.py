"""Replaying stored activities into equity snapshots (``rebuild-equity``, ``refill-snapshots``); pure.

The live manager and the replay book the same things: fills by ``qty × price × multiplier``
(:func:`core.ledger.fill_entry`), other activities by their type and status
(:func:`core.ledger.cash_entry_effect`), and the same lot events (splits, name changes, mergers,
option expiry/exercise/assignment, fees in the asset…) in the same FIFO book. The manager passes
:func:`workers.manager.interpret.interpret` as ``read``, so a live point and a replayed one of the
same instant agree on cash, deposits, positions and realized P&L. Without ``read`` the typed
columns alone are booked (fills, and ``net_amount`` of the others).

Market value differs where prices moved: the raw data holds no prices but the fills', so a replayed
point marks each symbol at its last fill, or at its average cost when a lot event (a split, a symbol
change…) touched it after that fill (the fill's price is then on another scale or symbol).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from core.corporate_actions import LotEvent
from core.errors import InvalidInput
from core.fifo import FifoBook
from core.income import CashEntry
from core.ledger import ZERO, LedgerEntry, fill_entry, ledger_entry
from core.records import ActivityRecord, Fill, Side
from core.snapshots import DrawdownTracker, EquitySnapshot, SnapshotSource, make_snapshot
from core.valuation import multiplier_of


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadActivities:
    """What a batch of stored activities does (the replay's view of the manager's interpretation)."""

    fills: Sequence[Fill]
    events: Sequence[LotEvent] = ()
    entries: Sequence[tuple[LedgerEntry, datetime]] = ()
    """One ledger entry per booked activity (fills included)."""
    skipped: int = 0
    cash: Sequence[CashEntry] = ()
    """The non-fill cash lines (fee lines among them are charged to round trips, :mod:`core.trip_fees`)."""


Reader = Callable[[Sequence[ActivityRecord]], ReadActivities]


def read_typed(acts: Iterable[ActivityRecord]) -> ReadActivities:
    """The typed columns only: fills, and every other activity's ``net_amount`` by its type."""
    fills: list[Fill] = []
    entries: list[tuple[LedgerEntry, datetime]] = []
    skipped = 0
    for a in acts:
        if a.parse_error is not None:
            skipped += 1
            continue
        if a.is_fill:
            if not a.symbol or a.qty is None or a.price is None:
                skipped += 1
                continue
            try:
                f = Fill(fill_id=a.activity_id, ts=a.ts, symbol=a.symbol, side=Side.parse(a.side, a.activity_id),
                         qty=a.qty, price=a.price, order_id=a.order_id)
            except InvalidInput:
                skipped += 1
                continue
            fills.append(f)
            entries.append((fill_entry(f), a.ts))
            continue
        entries.append((ledger_entry(a.activity_id, a.activity_type, side=a.side, qty=a.qty, price=a.price,
                                     net_amount=a.net_amount, symbol=a.symbol), a.ts))
    return ReadActivities(fills=fills, entries=entries, skipped=skipped)


class EquityReplay:
    """Walks stored activities in ``(ts, activity_id)`` order and values the account at chosen instants."""

    def __init__(self, *, baseline_deposit: Decimal = ZERO, tracker: DrawdownTracker | None = None,
                 source: SnapshotSource = SnapshotSource.REBUILD, read: Reader | None = None) -> None:
        self.book = FifoBook()
        self.read: Reader = read or read_typed
        self.cash = ZERO
        self.deposits = ZERO
        self.baseline_deposit = baseline_deposit
        """``initial_deposit``: counts only while the activities hold no cash flow of their own."""
        self.has_deposit_activity = False
        self.realized_closed = ZERO
        self.trip_pl: dict[str, Decimal] = {}
        self.last_price: dict[str, tuple[Decimal, datetime]] = {}
        self.event_at: dict[str, datetime] = {}
        self.tracker = tracker or DrawdownTracker()
        self.source = source
        self.skipped = 0
        """Activities left out: unparseable, or fills missing a symbol, quantity, price or side."""

    def feed(self, acts: Sequence[ActivityRecord]) -> None:
        """Book ``acts`` (in order): cash, deposits, their fills and lot events into the FIFO book."""
        read = self.read(acts)
        self.skipped += read.skipped
        seen: set[str] = set()
        for entry, _ts in read.entries:
            if entry.activity_id in seen:
                continue
            seen.add(entry.activity_id)
            self.cash += entry.cash_delta
            if entry.deposit_delta:
                self.has_deposit_activity = True
                self.deposits += entry.deposit_delta
        for f in read.fills:
            self.last_price[f.symbol] = (f.price, f.ts)
        for ev in read.events:
            for symbol in ev.symbols:
                self.event_at[symbol] = max(ev.ts, self.event_at.get(symbol, ev.ts))
        if read.fills or read.events or read.cash:
            update = self.book.apply(list(read.fills), events=list(read.events), fees=read.cash)
            for tid in update.removed_trade_ids:  # a late fill or event replayed its group
                self.realized_closed -= self.trip_pl.pop(tid, ZERO)
            for trip in update.upserted:
                self.realized_closed += trip.net_pl - self.trip_pl.get(trip.trade_id, ZERO)
                self.trip_pl[trip.trade_id] = trip.net_pl

    @property
    def net_deposits(self) -> Decimal:
        return self.deposits if self.has_deposit_activity else self.deposits + self.baseline_deposit

    def _price(self, symbol: str, avg: Decimal | None) -> Decimal:
        last = self.last_price.get(symbol)
        event = self.event_at.get(symbol)
        if last is not None and (event is None or last[1] > event):
            return last[0]
        return avg if avg is not None else (last[0] if last is not None else ZERO)

    def snapshot(self, ts: datetime) -> EquitySnapshot:
        """The account at ``ts`` given everything fed so far (updates the drawdown tracker)."""
        mvs: list[Decimal] = []
        upl = ZERO
        partial = ZERO
        for symbol, pos in self.book.open_positions().items():
            price = self._price(symbol, pos.avg_entry_price)
            units = pos.qty * multiplier_of(symbol)
            mv = units * price
            mvs.append(mv)
            upl += mv - units * (pos.avg_entry_price if pos.avg_entry_price is not None else price)
            partial += pos.realized_pl
        return make_snapshot(ts, cash=self.cash, market_values=mvs, unrealized_pl=upl,
                             realized_pl=self.realized_closed + partial, net_deposits=self.net_deposits,
                             tracker=self.tracker, source=self.source)


def replay_points(acts: Sequence[ActivityRecord], points: Sequence[datetime], replay: EquityReplay,
                  on_point: Callable[[EquitySnapshot], None] | None = None) -> list[EquitySnapshot]:
    """Snapshots at ``points`` (ascending) from ``acts`` (sorted by ts): each sees every activity at or before it."""
    out: list[EquitySnapshot] = []
    i = 0
    for ts in points:
        j = i
        while j < len(acts) and acts[j].ts <= ts:
            j += 1
        if j > i:
            replay.feed(acts[i:j])
            i = j
        snap = replay.snapshot(ts)
        out.append(snap)
        if on_point is not None:
            on_point(snap)
    return out
