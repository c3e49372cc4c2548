"""Replaying stored activities into equity snapshots (``rebuild-equity``, ``refill-snapshots``); pure.

The live manager and the replay book cash with the same :func:`core.ledger.ledger_entry` and take
snapshots with the same :func:`core.snapshots.make_snapshot`, so a live point and a replayed one of
the same instant agree on cash, deposits and realized P&L. Market value differs where prices moved:
the raw data holds no prices but the fills', so a replayed point marks each symbol at its last fill.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal

from core.errors import InvalidInput
from core.fifo import FifoBook
from core.ledger import CASH_FLOW_TYPES, ZERO, ledger_entry
from core.records import ActivityRecord, Fill, Side
from core.snapshots import DrawdownTracker, EquitySnapshot, SnapshotSource, make_snapshot


class EquityReplay:
    """Walks stored activities in ``(ts, activity_id)`` order and values the account at chosen instants."""

    def __init__(self, *, baseline_deposit: Decimal = ZERO, tracker: DrawdownTracker | None = None,
                 source: SnapshotSource = SnapshotSource.REBUILD) -> None:
        self.book = FifoBook()
        self.cash = ZERO
        self.deposits = ZERO
        self.baseline_deposit = baseline_deposit
        """``initial_deposit``: counts only while the activities hold no cash flow of their own."""
        self.has_deposit_activity = False
        self.realized_closed = ZERO
        self.last_price: dict[str, Decimal] = {}
        self.tracker = tracker or DrawdownTracker()
        self.source = source
        self.skipped = 0
        """Activities left out: unparseable, or fills missing a symbol, quantity, price or side."""

    def feed(self, acts: Iterable[ActivityRecord]) -> None:
        """Book ``acts`` (in order): cash, deposits, and their fills into the FIFO book."""
        fills: list[Fill] = []
        for a in acts:
            if a.parse_error is not None:
                self.skipped += 1
                continue
            if a.is_fill:
                if not a.symbol or a.qty is None or a.price is None:
                    self.skipped += 1
                    continue
                try:
                    fills.append(Fill(fill_id=a.activity_id, ts=a.ts, symbol=a.symbol,
                                      side=Side.parse(a.side, a.activity_id), qty=a.qty, price=a.price,
                                      order_id=a.order_id))
                except InvalidInput:
                    self.skipped += 1
                    continue
                self.last_price[a.symbol] = a.price
            entry = ledger_entry(a.activity_id, a.activity_type, side=a.side, qty=a.qty, price=a.price,
                                 net_amount=a.net_amount)
            self.cash += entry.cash_delta
            if a.activity_type.upper() in CASH_FLOW_TYPES:
                self.has_deposit_activity = True
                self.deposits += entry.deposit_delta
        if fills:
            update = self.book.apply(fills)
            self.realized_closed += sum((t.net_pl for t in update.upserted), ZERO)

    @property
    def net_deposits(self) -> Decimal:
        return self.deposits if self.has_deposit_activity else self.deposits + self.baseline_deposit

    def snapshot(self, ts: datetime) -> EquitySnapshot:
        """The account at ``ts`` given everything fed so far (updates the drawdown tracker)."""
        mvs: list[Decimal] = []
        upl = ZERO
        partial = ZERO
        for symbol, pos in self.book.open_positions().items():
            price = self.last_price.get(symbol, pos.avg_entry_price or ZERO)
            mv = pos.qty * price
            mvs.append(mv)
            upl += mv - pos.qty * (pos.avg_entry_price if pos.avg_entry_price is not None else price)
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
