"""Valuation and equity-snapshot decisions: pure functions over plain values, no I/O, no clock.

The manager's loops gather inputs (FIFO positions, marks, the cash ledger, the time) and call these;
``rebuild-equity`` and ``refill-snapshots`` call the same functions over stored history, so a live
snapshot and a rebuilt one of the same instant agree.

Conventions
- Cash is the ledger of the account's activities: a fill moves cash by exactly ``-signed_qty * price``
  and every other activity by its ``net_amount`` (the broker's own accounting; fees arrive as FEE
  activities). The broker's reported cash may differ by a calibration offset (activities older than
  the data window); the manager measures it and adds it.
- ``equity = cash + long_market_value + short_market_value`` (short market value is negative).
- Net deposits are the cumulative ``net_amount`` of CSD, CSW and JNLC activities.
- Drawdown is measured against a flow-adjusted peak: ``peak_t = max_s(E_s - D_s) + D_t`` where ``D`` is
  cumulative net deposits, so a deposit or withdrawal never looks like a gain or a loss. It is
  ``E_t / peak_t - 1`` (``<= 0``); :class:`DrawdownTracker` keeps ``max(E - D)`` which can be recovered
  from the stored series with one ``max(equity - net_deposits)`` query.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from core.errors import InvalidInput
from core.fifo import FifoBook
from core.records import Fill, OpenPosition, Side

ZERO = Decimal(0)
CASH_FLOW_TYPES = frozenset({"CSD", "CSW", "JNLC"})
FILL_TYPES = frozenset({"FILL", "PARTIAL_FILL"})
OFF_HOURS_FACTOR = 15
"""Outside market hours one snapshot per ``OFF_HOURS_FACTOR * SNAPSHOT_SEC`` (60 s -> 15 min). An integer
factor keeps the sparse grid a subset of the dense one, both aligned to the epoch."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ----------------------------------------------------------------------------- cash ledger

@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One activity's effect on cash (and deposits)."""

    activity_id: str
    cash_delta: Decimal
    deposit_delta: Decimal


def ledger_entry(activity_id: str, activity_type: str, *, side: str | None, qty: Decimal | None,
                 price: Decimal | None, net_amount: Decimal | None) -> LedgerEntry:
    """Cash and deposit effect of one stored activity row (fills by qty x price, others by net amount)."""
    kind = activity_type.upper()
    if kind in FILL_TYPES:
        if qty is None or price is None:
            return LedgerEntry(activity_id, ZERO, ZERO)
        buy = (side or "").lower().startswith("buy")
        notional = qty * price
        return LedgerEntry(activity_id, -notional if buy else notional, ZERO)
    amount = net_amount if net_amount is not None else ZERO
    return LedgerEntry(activity_id, amount, amount if kind in CASH_FLOW_TYPES else ZERO)


# ----------------------------------------------------------------------------- valuation

@dataclass(frozen=True, slots=True)
class Mark:
    """The price used to value one symbol, where it came from, and whether it is stale."""

    price: Decimal
    ts: datetime | None
    source: str
    """``zmq``, ``rest`` (broker positions' current_price) or ``fill`` (last fill price)."""
    stale: bool = False


@dataclass(frozen=True, slots=True)
class Legs:
    """The live exit legs protecting a position."""

    stop_price: Decimal | None = None
    take_profit_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class OpenTradeRow:
    """Everything one ``open_trades_<slug>`` row holds."""

    symbol: str
    side: str
    qty: Decimal
    avg_entry_price: Decimal
    cost_basis: Decimal
    entry_time: datetime
    mark_price: Decimal | None
    mark_ts: datetime | None
    price_source: str | None
    price_stale: bool
    market_value: Decimal | None
    unrealized_pl: Decimal | None
    unrealized_plpc: float | None
    prev_close: Decimal | None
    day_change: Decimal | None
    day_change_pct: float | None
    exposure: Decimal | None
    weight: float | None
    entry_order_id: str | None
    stop_price: Decimal | None
    take_profit_price: Decimal | None
    broker_qty: Decimal | None
    qty_mismatch: bool
    lots: list[dict[str, Any]]


def _ratio(num: Decimal, den: Decimal) -> float | None:
    if den == 0:
        return None
    value = float(num / den)
    return value if math.isfinite(value) else None


def value_positions(
    positions: Mapping[str, OpenPosition],
    marks: Mapping[str, Mark],
    *,
    equity: Decimal | None,
    prev_close: Mapping[str, Decimal] | None = None,
    legs: Mapping[str, Legs] | None = None,
    broker_qty: Mapping[str, Decimal] | None = None,
) -> list[OpenTradeRow]:
    """One row per open position, valued at ``marks`` (unpriced symbols keep ``None`` values).

    Unrealized P&L is ``(mark - avg_entry) * qty`` (signed qty, so shorts gain when the price falls);
    the percentage is relative to ``|cost_basis|``. Day change is ``(mark - prev_close) * qty``.
    Exposure is ``|market_value|``; weight is ``market_value / equity``. Lots of unknown price (orphans)
    value at the mark, so they contribute no unrealized P&L.
    """
    prev_close = prev_close or {}
    legs = legs or {}
    broker_qty = broker_qty or {}
    rows: list[OpenTradeRow] = []
    for symbol in sorted(positions):
        pos = positions[symbol]
        mark = marks.get(symbol)
        avg = pos.avg_entry_price
        qty = pos.qty
        if avg is None:
            avg = mark.price if mark is not None else ZERO
        cost = qty * avg
        mv = upl = day = exposure = None
        upl_pc = day_pc = weight = None
        pc = prev_close.get(symbol)
        if mark is not None:
            mv = qty * mark.price
            upl = mv - cost
            upl_pc = _ratio(upl * 100, abs(cost))
            exposure = abs(mv)
            if pc is not None:
                day = (mark.price - pc) * qty
                day_pc = _ratio((mark.price - pc) * 100, pc)
            if equity is not None:
                weight = _ratio(mv, equity)
        leg = legs.get(symbol, Legs())
        bq = broker_qty.get(symbol)
        rows.append(
            OpenTradeRow(
                symbol=symbol,
                side=pos.direction.value,
                qty=qty,
                avg_entry_price=avg,
                cost_basis=cost,
                entry_time=pos.entry_time,
                mark_price=mark.price if mark else None,
                mark_ts=mark.ts if mark else None,
                price_source=mark.source if mark else None,
                price_stale=mark.stale if mark else True,
                market_value=mv,
                unrealized_pl=upl,
                unrealized_plpc=upl_pc,
                prev_close=pc,
                day_change=day,
                day_change_pct=day_pc,
                exposure=exposure,
                weight=weight,
                entry_order_id=pos.entry_order_id,
                stop_price=leg.stop_price,
                take_profit_price=leg.take_profit_price,
                broker_qty=bq,
                qty_mismatch=bq is not None and bq != qty,
                lots=[lot.to_dict() for lot in pos.lots],
            )
        )
    return rows


def qty_mismatches(fifo_qty: Mapping[str, Decimal], broker_qty: Mapping[str, Decimal]) -> dict[str, tuple[Decimal, Decimal]]:
    """Symbols where the FIFO book and the broker disagree: ``{symbol: (fifo, broker)}``."""
    out: dict[str, tuple[Decimal, Decimal]] = {}
    for symbol in set(fifo_qty) | set(broker_qty):
        ours = fifo_qty.get(symbol, ZERO)
        theirs = broker_qty.get(symbol, ZERO)
        if ours != theirs:
            out[symbol] = (ours, theirs)
    return out


# ----------------------------------------------------------------------------- snapshots

@dataclass(frozen=True, slots=True)
class EquitySnapshot:
    """One ``equity_full_<slug>`` row."""

    ts: datetime
    equity: Decimal
    cash: Decimal
    long_market_value: Decimal
    short_market_value: Decimal
    realized_pl: Decimal
    unrealized_pl: Decimal
    net_deposits: Decimal
    drawdown: float
    source: str = "live"


class DrawdownTracker:
    """Flow-adjusted running peak (see module docstring)."""

    __slots__ = ("max_excess",)

    def __init__(self, max_excess: Decimal | None = None) -> None:
        self.max_excess = max_excess
        """``max(equity - net_deposits)`` seen so far (``None`` before the first point)."""

    def update(self, equity: Decimal, net_deposits: Decimal) -> float:
        excess = equity - net_deposits
        if self.max_excess is None or excess > self.max_excess:
            self.max_excess = excess
        peak = self.max_excess + net_deposits
        if peak <= 0:
            return 0.0
        return min(0.0, float(equity / peak - 1))


def make_snapshot(
    ts: datetime,
    *,
    cash: Decimal,
    market_values: Iterable[Decimal],
    unrealized_pl: Decimal,
    realized_pl: Decimal,
    net_deposits: Decimal,
    tracker: DrawdownTracker,
    source: str = "live",
) -> EquitySnapshot:
    """Assemble a snapshot; updates ``tracker``."""
    long_mv = ZERO
    short_mv = ZERO
    for mv in market_values:
        if mv >= 0:
            long_mv += mv
        else:
            short_mv += mv
    equity = cash + long_mv + short_mv
    return EquitySnapshot(
        ts=ts,
        equity=equity,
        cash=cash,
        long_market_value=long_mv,
        short_market_value=short_mv,
        realized_pl=realized_pl,
        unrealized_pl=unrealized_pl,
        net_deposits=net_deposits,
        drawdown=tracker.update(equity, net_deposits),
        source=source,
    )


def snapshot_interval_s(snapshot_sec: float, market_open: bool) -> float:
    """Spacing of the series: ``SNAPSHOT_SEC`` in market hours, sparser outside them."""
    return snapshot_sec if market_open else snapshot_sec * OFF_HOURS_FACTOR


def bucket_start(now: datetime, interval_s: float) -> datetime:
    """``now`` floored to a multiple of ``interval_s`` since the epoch (UTC): the same on every replica."""
    elapsed_us = (now - EPOCH) // timedelta(microseconds=1)
    step_us = max(1, int(round(interval_s * 1_000_000)))
    return EPOCH + timedelta(microseconds=elapsed_us - elapsed_us % step_us)


def due_snapshot(now: datetime, last_ts: datetime | None, *, snapshot_sec: float,
                 market_open: Callable[[datetime], bool]) -> datetime | None:
    """The boundary to stamp a new snapshot with, or ``None`` when the current one is already taken.

    Boundaries are aligned to the epoch so that two replicas stamp identical timestamps (the table's
    primary key then makes a take-over duplicate-free).
    """
    ts = bucket_start(now, snapshot_sec)
    if not market_open(ts):
        ts = bucket_start(now, snapshot_interval_s(snapshot_sec, False))
    if last_ts is not None and ts <= last_ts:
        return None
    return ts


# ----------------------------------------------------------------------------- NOTIFY throttle

class Throttle:
    """At most one event per ``interval_s``, leading edge immediate, trailing edge guaranteed.

    ``offer(now)`` records that something changed; it answers True when the caller should notify now.
    ``due(now)`` answers True when a deferred change must be notified now (call it every flush).
    Times are plain monotonic seconds; nothing here reads a clock.
    """

    __slots__ = ("interval_s", "last_sent", "pending")

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.last_sent: float | None = None
        self.pending = False

    def ready(self, now: float) -> bool:
        """Would :meth:`offer` send right now? (Does not consume the window.)"""
        return self.last_sent is None or now - self.last_sent >= self.interval_s

    def offer(self, now: float) -> bool:
        if self.last_sent is None or now - self.last_sent >= self.interval_s:
            self.last_sent = now
            self.pending = False
            return True
        self.pending = True
        return False

    def due(self, now: float) -> bool:
        if self.pending and self.last_sent is not None and now - self.last_sent >= self.interval_s:
            self.last_sent = now
            self.pending = False
            return True
        return False


# ----------------------------------------------------------------------------- bracket legs

OPEN_EXIT_TYPES = frozenset({"limit", "stop", "stop_limit", "trailing_stop"})
STOP_ORDER_TYPES = frozenset({"stop", "stop_limit", "trailing_stop"})


@dataclass(frozen=True, slots=True)
class OpenOrder:
    """A working (not terminal) order that could protect a position."""

    order_id: str
    parent_order_id: str | None
    symbol: str
    side: str
    order_type: str
    limit_price: Decimal | None
    stop_price: Decimal | None


def select_legs(position: OpenPosition, orders: Iterable[OpenOrder]) -> Legs:
    """The live stop and take-profit of a position.

    Exit-side working orders on the symbol count; children of the position's entry order (its bracket
    legs) win over unrelated standalone orders. A stop leg gives ``stop_price`` (stop, stop-limit,
    trailing stop); a limit leg gives ``take_profit_price``.
    """
    exit_side = "sell" if position.qty > 0 else "buy"
    candidates = [o for o in orders if o.symbol == position.symbol and o.side.startswith(exit_side)]
    children = [o for o in candidates
                if position.entry_order_id is not None and o.parent_order_id == position.entry_order_id]
    chosen = children or candidates
    stop = next((o.stop_price for o in chosen if o.order_type in STOP_ORDER_TYPES and o.stop_price is not None), None)
    take = next((o.limit_price for o in chosen if o.order_type == "limit" and o.limit_price is not None), None)
    return Legs(stop_price=stop, take_profit_price=take)


def missing_boundaries(last_ts: datetime, now: datetime, *, snapshot_sec: float,
                       market_open: Callable[[datetime], bool], max_points: int = 10_000) -> list[datetime]:
    """The snapshot boundaries strictly after ``last_ts`` and at or before ``now`` (a gap to refill).

    The same grid :func:`due_snapshot` stamps live; at most ``max_points`` (the newest ones).
    """
    fine = snapshot_sec
    coarse = snapshot_interval_s(snapshot_sec, False)
    start = max(last_ts, now - timedelta(seconds=coarse * max_points))
    out: list[datetime] = []
    p = bucket_start(start, fine) + timedelta(seconds=fine)
    while p <= now:
        if market_open(p):
            if p > last_ts:
                out.append(p)
            p += timedelta(seconds=fine)
        else:
            if bucket_start(p, coarse) == p and p > last_ts:
                out.append(p)
            nxt_coarse = bucket_start(p, coarse) + timedelta(seconds=coarse)
            # Walk the fine grid only when the market opens before the next coarse point.
            nxt_fine = p + timedelta(seconds=fine)
            p = nxt_fine if market_open(nxt_fine) else nxt_coarse
            if p != nxt_fine and p > nxt_fine and _opens_between(nxt_fine, p, fine, market_open):
                p = nxt_fine
    return out[-max_points:]


def _opens_between(a: datetime, b: datetime, step_s: float, market_open: Callable[[datetime], bool]) -> bool:
    """Coarse probe: does the market open somewhere in ``[a, b)`` (checked every 60 fine steps)?"""
    probe = a
    hop = timedelta(seconds=max(step_s, (b - a).total_seconds() / 60))
    while probe < b:
        if market_open(probe):
            return True
        probe += hop
    return False


# ----------------------------------------------------------------------------- replay (rebuild / refill)

class ActivityLike(Protocol):
    """The stored columns of one activity that accounting needs."""

    @property
    def activity_id(self) -> str: ...

    @property
    def ts(self) -> datetime: ...

    @property
    def activity_type(self) -> str: ...

    @property
    def symbol(self) -> str | None: ...

    @property
    def side(self) -> str | None: ...

    @property
    def qty(self) -> Decimal | None: ...

    @property
    def price(self) -> Decimal | None: ...

    @property
    def net_amount(self) -> Decimal | None: ...

    @property
    def order_id(self) -> str | None: ...

    @property
    def parse_error(self) -> str | None: ...


class EquityReplay:
    """Walks stored activities in time order and values the account at chosen instants.

    Marks are the last fill price of each symbol at or before the instant (the only prices the raw
    data holds), so a replayed point is exact for cash, deposits and realized P&L and approximate for
    market value between fills. Activities must be fed in ``(ts, activity_id)`` order.
    """

    def __init__(self, *, baseline_deposit: Decimal = ZERO, tracker: DrawdownTracker | None = None,
                 source: str = "rebuild") -> None:
        self.book = FifoBook()
        self.cash = ZERO
        self.deposits = ZERO
        self.baseline_deposit = baseline_deposit
        self.has_deposit_activity = False
        self.realized_closed = ZERO
        self.last_price: dict[str, Decimal] = {}
        self.tracker = tracker or DrawdownTracker()
        self.source = source
        self.skipped = 0

    def feed(self, acts: Iterable[ActivityLike]) -> None:
        fills: list[Fill] = []
        for a in acts:
            if a.parse_error is not None:
                self.skipped += 1
                continue
            entry = ledger_entry(a.activity_id, a.activity_type, side=a.side, qty=a.qty, price=a.price,
                                 net_amount=a.net_amount)
            if a.activity_type.upper() in FILL_TYPES:
                if not a.symbol or a.qty is None or a.price is None:
                    self.skipped += 1
                    continue
                try:
                    fills.append(Fill(fill_id=a.activity_id, ts=a.ts, symbol=a.symbol, side=Side.parse(a.side, a.activity_id),
                                      qty=a.qty, price=a.price, order_id=a.order_id))
                except InvalidInput:
                    self.skipped += 1
                    continue
                self.last_price[a.symbol] = a.price
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
        positions = self.book.open_positions()
        mvs: list[Decimal] = []
        upl = ZERO
        partial = ZERO
        for symbol, pos in positions.items():
            price = self.last_price.get(symbol, pos.avg_entry_price or ZERO)
            mv = pos.qty * price
            mvs.append(mv)
            upl += mv - pos.qty * (pos.avg_entry_price if pos.avg_entry_price is not None else price)
            partial += pos.realized_pl
        return make_snapshot(ts, cash=self.cash, market_values=mvs, unrealized_pl=upl,
                             realized_pl=self.realized_closed + partial, net_deposits=self.net_deposits,
                             tracker=self.tracker, source=self.source)


def replay_points(acts: Sequence[ActivityLike], points: Sequence[datetime], replay: EquityReplay,
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
