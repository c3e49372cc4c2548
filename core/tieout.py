"""Tie-out: the book against the broker's own figures, with a cause for every difference.

Pure (no I/O, no clock): the manager's tie-out loop loads plain records and calls :func:`tie_out`.
Every amount is an exact ``Decimal`` in dollars, signed ``broker - book``.

Rules
- **Positions**, per canonical instrument (:func:`core.instruments.canonical_symbol`; values are
  ``qty x price x multiplier``, so an option contract counts 100 shares):
  - a *quantity* difference is a **fill not yet ingested** when the broker's orders show filled
    quantity of that instrument that no stored fill activity books (with the oldest one's age), a
    **corporate action not yet applied** when a stored corporate-action activity names it, else
    **unexplained**;
  - with the quantity equal, a *cost basis* difference that the broker's average cost explains is
    the **cost method** (the book keeps FIFO lots, Alpaca an average); a corporate action, else
    unexplained;
  - with the quantity equal, a *market value* difference is a **price difference**: the book's mark
    against the broker's ``current_price`` (both shown).
- **Cash now**: ``broker cash - book cash``, explained by the cash of the fills not yet ingested and
  by the postings the broker's history shows and the book has not ingested (**posted later**); the
  rest is unexplained.
- **Equity now**: ``broker equity - book equity`` (book equity: book cash + the book's positions at
  its marks), explained by the explained cash and the explained positions' market value; the rest
  is unexplained.
- **Past days** (every day of the broker's daily history before today): end-of-day equity, book vs
  broker. A broker point equal to its previous day's while the book moved is the **broker quirk**
  (Alpaca's history repeats the previous day's close); unbooked fills up to that day explain it;
  then postings booked on another day than the broker's; then a corporate action that day.
  Per non-trade activity type, the broker's ``cashflow`` that day against the book's activities of
  that day: a shift between days whose window totals agree is a settled **posted later** (a note:
  the money agrees); more at the broker than in the book is an open posted-later (not ingested).
- **Status**: ``drift`` when an open unexplained difference passes its tolerance, ``explained``
  when an open explained one does, else ``tied_out``. Tolerances: :class:`Tolerances`.
- **Repair**: a difference whose cause is missing raw data (:data:`MISSING_DATA_CAUSES`) asks for
  a backfill from :attr:`TieOut.repair_since`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from core.activity_types import NEW_YORK
from core.instruments import instrument_for
from core.tieout_records import (
    CENT,
    MISSING_DATA_CAUSES,
    POSITION_SCOPES,
    ZERO,
    BookDay,
    BookPosition,
    BrokerDay,
    BrokerPositionFigures,
    Cause,
    DayTieOut,
    Difference,
    PendingFill,
    Scope,
    Status,
    TieOut,
    Tolerances,
    is_corporate_action,
    is_late_posting,
    status_of,
    tolerance_of,
    worst,
)

__all__ = ["CENT", "MISSING_DATA_CAUSES", "POSITION_SCOPES", "ZERO", "BookDay", "BookPosition", "BrokerDay",
           "BrokerPositionFigures", "Cause", "DayTieOut", "Difference", "PendingFill", "Scope", "Status", "TieOut",
           "Tolerances", "average_cost", "book_equity", "compare_account", "compare_days", "compare_positions",
           "is_corporate_action", "is_late_posting", "ny_day", "pending_cash", "status_of", "tie_out",
           "tolerance_of", "unposted_by_type", "worst"]


# --- positions ---------------------------------------------------------------------------------------
def _multiplier(symbol: str) -> Decimal:
    try:
        return instrument_for(symbol).multiplier
    except ValueError:  # InvalidInput: an unreadable symbol is valued as one unit, and shows as a difference
        return Decimal(1)


def average_cost(fills: Iterable[tuple[str, Decimal, Decimal]]) -> dict[str, Decimal]:
    """Dollar cost basis per symbol under average cost (``(symbol, signed qty, price)`` in time order).

    Adding to a position re-averages; reducing it keeps the average; crossing zero starts anew at
    the crossing fill's price. Multipliers apply (an option's cost is per contract).
    """
    qty: dict[str, Decimal] = {}
    avg: dict[str, Decimal] = {}
    for symbol, q, price in fills:
        held = qty.get(symbol, ZERO)
        new = held + q
        if held == 0 or (held > 0) == (q > 0):
            avg[symbol] = (abs(held) * avg.get(symbol, ZERO) + abs(q) * price) / abs(new) if new else ZERO
        elif new != 0 and (new > 0) != (held > 0):
            avg[symbol] = price
        qty[symbol] = new
    return {s: qty[s] * avg[s] * _multiplier(s) for s in qty if qty[s] != 0}


def _canonical(symbol: str, asset_class: str | None = None) -> str:
    try:
        return instrument_for(symbol, asset_class).symbol
    except ValueError:
        return symbol.strip().upper()


def compare_positions(book: Sequence[BookPosition], broker: Sequence[BrokerPositionFigures], *, now: datetime,
                      pending: Sequence[PendingFill], corporate_symbols: Iterable[str],
                      avg_cost: Mapping[str, Decimal], tolerances: Tolerances) -> list[Difference]:
    """Per-instrument differences (see the module docstring); agreement yields nothing."""
    ours = {_canonical(p.symbol): p for p in book}
    theirs = {_canonical(p.symbol, p.asset_class): p for p in broker}
    corporate = {_canonical(s) for s in corporate_symbols}
    waiting: dict[str, list[PendingFill]] = {}
    for f in pending:
        waiting.setdefault(_canonical(f.symbol), []).append(f)
    cost_of = {_canonical(s): v for s, v in avg_cost.items()}
    out: list[Difference] = []
    costs: dict[str, tuple[Decimal, Decimal | None, Decimal | None]] = {}  # symbol: book FIFO, book average, broker
    for symbol in sorted(set(ours) | set(theirs)):
        mine, bro = ours.get(symbol), theirs.get(symbol)
        mult = _multiplier(symbol)
        qty_book = mine.qty if mine else ZERO
        qty_broker = bro.qty if bro else ZERO
        price = _price(mine, bro)
        cost_book = mine.qty * mine.avg_entry_price * mult if mine is not None else ZERO
        costs[symbol] = (cost_book, cost_of.get(symbol), bro.cost_basis if bro is not None else ZERO)
        if qty_book != qty_broker:
            out.append(_qty_difference(symbol, qty_book, qty_broker, price * mult, now=now,
                                       pending=waiting.get(symbol, []), corporate=symbol in corporate))
            # the quantity difference is valued at the broker's price: the book's own quantity at its
            # mark against that price is the rest of the equity difference
            marked = _value_difference(symbol, mine, bro, mult, now=now, tolerances=tolerances, own_qty=True) \
                if mine is not None and bro is not None else None
            if marked is not None:
                out.append(marked)
            continue
        if mine is None or bro is None:  # a zero-quantity row on one side only: nothing held
            continue
        if bro.cost_basis is not None and abs(bro.cost_basis - cost_book) > tolerances.position_usd:
            avg = cost_of.get(symbol)
            # The book's own fills costed the broker's way give the broker's figure: the same fills under
            # two conventions, so a note, not a difference of the books.
            agrees = avg is not None and abs(avg - bro.cost_basis) <= tolerances.position_usd
            if agrees and avg is not None:
                cause, why = Cause.COST_METHOD, f"broker average cost {_usd(avg)}, book FIFO lots {_usd(cost_book)}"
            elif symbol in corporate:
                cause, why = Cause.CORPORATE_ACTION, "a corporate action names it"
            else:
                cause, why = Cause.UNEXPLAINED, "cost basis differs with the quantity equal"
            out.append(Difference(scope=Scope.POSITION_COST, subject=symbol, amount_usd=bro.cost_basis - cost_book,
                                  cause=cause, book=cost_book, broker=bro.cost_basis, detail=why, open=not agrees))
        value = _value_difference(symbol, mine, bro, mult, now=now, tolerances=tolerances)
        if value is not None:
            out.append(value)
    return _infer_corporate_actions(out, costs, tolerances)


def _value_difference(symbol: str, mine: BookPosition, bro: BrokerPositionFigures, mult: Decimal, *, now: datetime,
                      tolerances: Tolerances, own_qty: bool = False) -> Difference | None:
    """Market values at two prices. Both sides read a moving market at different instants (the book's
    mark is the feed's last tick, ``current_price`` the broker's at its answer): a live mark within
    :attr:`Tolerances.price_timing_fraction` of the broker's price is a note, never a difference of
    the books; a stale mark, or a price further off, is an open price difference. ``own_qty``: the
    book's quantity at both prices (the quantities differ; that difference is valued apart)."""
    if mine.mark_price is None or bro.current_price is None:
        return None
    mv_book = mine.qty * mine.mark_price * mult
    mv_broker = bro.market_value if bro.market_value is not None and not own_qty else mine.qty * bro.current_price * mult
    if abs(mv_broker - mv_book) <= tolerances.position_usd:
        return None
    age = f", {_age(max(0.0, (now - mine.mark_ts).total_seconds()))} old" if mine.mark_ts is not None else ""
    source = mine.price_source or "unknown source"
    off = abs(mine.mark_price - bro.current_price)
    timing = not mine.mark_stale and bro.current_price and off <= abs(bro.current_price) * tolerances.price_timing_fraction
    why = f"mark {mine.mark_price} ({source}{', stale' if mine.mark_stale else ''}{age}) vs broker current_price " \
          f"{bro.current_price}"
    if timing:
        why += ": the market moved between the two reads (the quantity and cost agree)"
    return Difference(scope=Scope.POSITION_VALUE, subject=symbol, amount_usd=mv_broker - mv_book, cause=Cause.PRICE,
                      book=mv_book, broker=mv_broker, open=not timing, detail=why)


def _infer_corporate_actions(diffs: list[Difference], costs: Mapping[str, tuple[Decimal, Decimal | None, Decimal | None]],
                             tolerances: Tolerances) -> list[Difference]:
    """Unexplained quantity differences whose cost basis the broker kept: a corporate action the book
    has not applied, because its activity is not stored yet (Alpaca applies a split or a symbol
    change to the position before it lists the activity). A fill moves cost by its quantity times its
    price; a split, a symbol change, a merger in stock or a spinoff moves quantities (or cost between
    instruments) and keeps the total.

    - one instrument: the quantity changed, the broker's cost basis equals the book's (FIFO lots or
      average cost): a split;
    - several: the unexplained quantity and cost differences together keep the total cost basis and
      one instrument is held on one side only: a symbol change, merger or spinoff.
    """
    def same(a: Decimal | None, b: Decimal | None) -> bool:
        return a is not None and b is not None and abs(a - b) <= tolerances.position_usd

    def kept(symbol: str) -> bool:
        fifo, avg, broker = costs[symbol]
        return bool(broker) and (same(fifo, broker) or same(avg, broker))

    out: list[Difference] = []
    group: list[int] = []
    for d in diffs:
        if d.cause is Cause.UNEXPLAINED and d.scope is Scope.POSITION_QTY and kept(d.subject):
            d = _as_corporate(d, "the broker's quantity changed with its cost basis kept: a split")
        elif d.cause is Cause.UNEXPLAINED and d.scope in (Scope.POSITION_QTY, Scope.POSITION_COST):
            group.append(len(out))
        out.append(d)
    symbols = {out[i].subject for i in group}
    moved = sum(((costs[s][2] or ZERO) - costs[s][0] for s in symbols), ZERO)
    one_sided = any(out[i].scope is Scope.POSITION_QTY and not (out[i].book and out[i].broker) for i in group)
    if len(symbols) >= 2 and one_sided and abs(moved) <= tolerances.position_usd * len(symbols):
        for i in group:
            out[i] = _as_corporate(out[i], f"the cost basis moved between {', '.join(sorted(symbols))} with its total "
                                           "kept: a symbol change, merger or spinoff")
    return out


def _as_corporate(d: Difference, why: str) -> Difference:
    return Difference(scope=d.scope, subject=d.subject, amount_usd=d.amount_usd, cause=Cause.CORPORATE_ACTION,
                      book=d.book, broker=d.broker, day=d.day, detail=why + ", its activity not ingested yet")


def _price(mine: BookPosition | None, bro: BrokerPositionFigures | None) -> Decimal:
    if bro is not None and bro.current_price is not None:
        return bro.current_price
    if mine is not None and mine.mark_price is not None:
        return mine.mark_price
    return mine.avg_entry_price if mine is not None else ZERO


def _qty_difference(symbol: str, qty_book: Decimal, qty_broker: Decimal, unit_value: Decimal, *, now: datetime,
                    pending: Sequence[PendingFill], corporate: bool) -> Difference:
    amount = (qty_broker - qty_book) * unit_value
    if pending:
        oldest = min(f.ts for f in pending)
        age_s = max(0.0, (now - oldest).total_seconds())
        waiting = sum((f.qty for f in pending), ZERO)
        why = f"{len(pending)} fill(s) of {waiting} not ingested, oldest {_age(age_s)} old"
        return Difference(scope=Scope.POSITION_QTY, subject=symbol, amount_usd=amount, cause=Cause.FILL_NOT_INGESTED,
                          book=qty_book, broker=qty_broker, detail=why, age_s=age_s)
    cause = Cause.CORPORATE_ACTION if corporate else Cause.UNEXPLAINED
    why = "a corporate action names it, not applied by the book" if corporate else "quantity differs"
    return Difference(scope=Scope.POSITION_QTY, subject=symbol, amount_usd=amount, cause=cause,
                      book=qty_book, broker=qty_broker, detail=why)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _usd(v: Decimal) -> str:
    """Dollars as the pages write them: the sign before the dollar sign (−$65.91, not $-65.91)."""
    return f"{MINUS if v < 0 else ''}${abs(v):,.2f}"


MINUS = "\u2212"


# --- cash and equity now -----------------------------------------------------------------------------
def pending_cash(pending: Iterable[PendingFill]) -> Decimal:
    """What the unbooked fills did to the broker's cash (a buy spends, a sell brings in)."""
    return sum((-f.qty * f.price * _multiplier(f.symbol) for f in pending), ZERO)


def book_equity(book: Sequence[BookPosition], cash: Decimal) -> Decimal:
    """Cash plus every position at its mark (an unmarked one at its cost)."""
    value = cash
    for p in book:
        value += p.qty * (p.mark_price if p.mark_price is not None else p.avg_entry_price) * _multiplier(p.symbol)
    return value


def compare_account(*, book_cash: Decimal, broker_cash: Decimal | None, equity_book: Decimal,
                    broker_equity: Decimal | None, pending: Sequence[PendingFill],
                    unposted: Mapping[str, Decimal], positions: Sequence[Difference],
                    tolerances: Tolerances, broker_moved: Decimal = ZERO) -> list[Difference]:
    """Cash and equity now; ``unposted``: per type, broker postings the book has not ingested;
    ``broker_moved``: how much the broker's own position values moved between its positions answer
    and its account answer (two reads of a moving market, a moment apart)."""
    out: list[Difference] = []
    explained_cash = ZERO
    if broker_cash is not None:
        diff = broker_cash - book_cash
        fills_cash = pending_cash(pending)
        posted = sum(unposted.values(), ZERO)
        parts: list[tuple[Cause, Decimal, str]] = []
        if fills_cash and pending:
            parts.append((Cause.FILL_NOT_INGESTED, fills_cash, f"{len(pending)} fill(s) not ingested"))
        if posted:
            kinds = ", ".join(f"{t} {_usd(v)}" for t, v in sorted(unposted.items()))
            parts.append((Cause.POSTED_LATER, posted, f"posted by the broker, not ingested: {kinds}"))
        for cause, amount, why in parts:
            out.append(Difference(scope=Scope.CASH, subject=cause.value, amount_usd=amount, cause=cause, detail=why))
            explained_cash += amount
        rest = diff - explained_cash
        if abs(rest) > tolerances.account_day_usd:
            out.append(Difference(scope=Scope.CASH, subject="", amount_usd=rest, cause=Cause.UNEXPLAINED,
                                  book=book_cash, broker=broker_cash,
                                  detail=f"cash differs by {_usd(diff)}, {_usd(explained_cash)} of it explained"))
    if broker_equity is not None:
        diff = broker_equity - equity_book
        explaining = [d for d in positions if d.cause is not Cause.UNEXPLAINED and d.scope is not Scope.POSITION_COST]
        explained_pos = sum((d.amount_usd for d in explaining), ZERO)
        rest = diff - explained_cash - explained_pos - broker_moved
        cause = Cause.UNEXPLAINED if abs(rest) > tolerances.account_day_usd else _dominant(positions, out)
        if abs(diff) > tolerances.account_day_usd or abs(rest) > tolerances.account_day_usd:
            amount = rest if cause is Cause.UNEXPLAINED else diff
            # explained only by notes (marks a moment apart): the books agree, the note says by how much
            is_open = cause is Cause.UNEXPLAINED or bool(out) or any(d.open for d in explaining)
            out.append(Difference(scope=Scope.EQUITY, subject="", amount_usd=amount, cause=cause,
                                  book=equity_book, broker=broker_equity, open=is_open,
                                  detail=f"total {_usd(diff)}: cash {_usd(explained_cash)} and positions "
                                         f"{_usd(explained_pos)} explained, the broker's positions moved "
                                         f"{_usd(broker_moved)} between its answers, {_usd(rest)} left"))
    return out


def _dominant(*groups: Sequence[Difference]) -> Cause:
    best: Difference | None = None
    for d in (d for g in groups for d in g if d.cause is not Cause.UNEXPLAINED):
        if best is None or abs(d.amount_usd) > abs(best.amount_usd):
            best = d
    return best.cause if best is not None else Cause.PRICE


# --- past days ---------------------------------------------------------------------------------------
def unposted_by_type(broker_days: Sequence[BrokerDay], book_days: Mapping[date, BookDay]) -> dict[str, Decimal]:
    """Per activity type, what the broker's history moved over its days beyond the book's activities
    over the same window (postings the book has not ingested); only the types that differ.

    The book's side counts every day it is given, not only the broker's days: a fee dated a day the
    broker has no point for (before the account's first point, a holiday) still matches its posting.
    """
    first = min((d.day for d in broker_days), default=None)
    if first is None:
        return {}
    books = [b for b in book_days.values() if b.day >= first - timedelta(days=7)]
    types = {t for d in broker_days for t in d.cashflow} | {t for b in books for t in b.flows}
    out: dict[str, Decimal] = {}
    for t in sorted(types):
        broker = sum((d.cashflow.get(t, ZERO) for d in broker_days), ZERO)
        book = sum((b.flows.get(t, ZERO) for b in books), ZERO)
        if broker != book:
            out[t] = broker - book
    return out


def compare_days(broker_days: Sequence[BrokerDay], book_days: Mapping[date, BookDay], *, today: date,
                 pending: Sequence[PendingFill], tolerances: Tolerances) -> list[DayTieOut]:
    """Every broker day before ``today`` that the book has a figure for, oldest first."""
    ordered = sorted(broker_days, key=lambda d: d.day)
    unposted = unposted_by_type(ordered, book_days)
    shifted = _shifted_days(ordered, book_days)
    out: list[DayTieOut] = []
    prev_broker: BrokerDay | None = None
    prev_book: BookDay | None = None
    shift = ZERO  # cumulative late-posting difference (broker - book) through the day
    for bd in ordered:
        book = book_days.get(bd.day)
        # The history's first point is its base: the cash that funded it (an account's first deposit)
        # is in its equity, not its cashflow; with that day's equity agreeing, the money agrees.
        base = prev_broker is None and book is not None and _agrees(bd.equity, book.equity, tolerances)
        diffs = _day_cash(bd, book, unposted, shifted, base=base)
        shift += sum((d.amount_usd for d in diffs if d.subject and is_late_posting(d.subject)), ZERO)
        if bd.day < today and book is not None:
            diffs += _day_equity(bd, book, prev_broker, prev_book, shift=shift, pending=pending,
                                 tolerances=tolerances)
            out.append(DayTieOut(day=bd.day, status=status_of(diffs, tolerances), book_equity=book.equity,
                                 broker_equity=bd.equity, differences=tuple(diffs)))
        prev_broker, prev_book = bd, book
    return out


def _shifted_days(ordered: Sequence[BrokerDay], book_days: Mapping[date, BookDay]) -> set[tuple[str, date]]:
    """``(type, day)`` whose difference a neighbouring day's cancels: the running difference of that
    type leaves zero and comes back (a posting the book dates one day and the broker buckets in
    another, e.g. an evening deposit after the broker's end-of-day point)."""
    out: set[tuple[str, date]] = set()
    types = {t for d in ordered for t in d.cashflow} | {t for b in book_days.values() for t in b.flows}
    for t in types:
        running, group = ZERO, []
        for bd in ordered:
            book = book_days.get(bd.day)
            diff = bd.cashflow.get(t, ZERO) - (book.flows.get(t, ZERO) if book is not None else ZERO)
            if not diff and not running:
                continue
            running += diff
            group.append(bd.day)
            if not running:
                out.update((t, day) for day in group)
                group = []
    return out


def _agrees(broker: Decimal | None, book: Decimal | None, tolerances: Tolerances) -> bool:
    return broker is not None and book is not None and abs(broker - book) <= tolerances.account_day_usd


def _day_cash(bd: BrokerDay, book: BookDay | None, unposted: Mapping[str, Decimal],
              shifted: set[tuple[str, date]], *, base: bool = False) -> list[Difference]:
    flows = book.flows if book is not None else {}
    out: list[Difference] = []
    for t in sorted(set(bd.cashflow) | set(flows)):
        broker, mine = bd.cashflow.get(t, ZERO), flows.get(t, ZERO)
        if broker == mine:
            continue
        missing = unposted.get(t, ZERO)
        late = is_late_posting(t)
        if not missing or (t, bd.day) in shifted:
            cause = Cause.POSTED_LATER
            is_open, why = False, "dated another day than the broker's point holds it (the days net to zero)"
        elif base and not broker:
            cause, is_open = Cause.BROKER_QUIRK, False
            why = "the history's first point holds it in its base value (its cashflow starts after that point)"
        elif late and missing * (broker - mine) > 0:
            cause, is_open, why = Cause.POSTED_LATER, True, "posted by the broker, not ingested yet"
        else:
            cause, is_open, why = Cause.UNEXPLAINED, True, "the book's activities differ from the broker's cashflow"
        out.append(Difference(scope=Scope.DAY_CASH, subject=t, amount_usd=broker - mine, cause=cause, book=mine,
                              broker=broker, day=bd.day, open=is_open, detail=why))
    return out


def _day_equity(bd: BrokerDay, book: BookDay, prev_broker: BrokerDay | None, prev_book: BookDay | None, *,
                shift: Decimal, pending: Sequence[PendingFill], tolerances: Tolerances) -> list[Difference]:
    if bd.equity is None or book.equity is None:
        return []
    diff = bd.equity - book.equity
    if abs(diff) <= tolerances.account_day_usd:
        return []
    end = _day_end(bd.day)
    waiting = [f for f in pending if f.ts < end]
    repeated = (prev_broker is not None and prev_broker.equity == bd.equity and prev_book is not None
                and prev_book.equity is not None and prev_book.equity != book.equity)
    if repeated:
        cause, why = Cause.BROKER_QUIRK, "the broker's end-of-day point repeats the previous day's equity"
    elif waiting:
        cause, why = Cause.FILL_NOT_INGESTED, f"{len(waiting)} fill(s) up to this day not ingested"
    elif shift and abs(diff - shift) <= tolerances.account_day_usd:
        cause, why = Cause.POSTED_LATER, "postings booked on another day than the broker's"
    elif book.corporate_actions:
        cause, why = Cause.CORPORATE_ACTION, "a corporate action that day"
    else:
        cause, why = Cause.UNEXPLAINED, "end-of-day equity differs"
    return [Difference(scope=Scope.DAY_EQUITY, subject="", amount_usd=diff, cause=cause, book=book.equity,
                       broker=bd.equity, day=bd.day, detail=why)]


def _day_end(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), NEW_YORK).astimezone(UTC)


def ny_day(ts: datetime) -> date:
    """The New York calendar day of an instant (Alpaca's daily points and date-only activities)."""
    return ts.astimezone(NEW_YORK).date()


# --- the whole tie-out -------------------------------------------------------------------------------
def tie_out(*, now: datetime, book_positions: Sequence[BookPosition], broker_positions: Sequence[BrokerPositionFigures],
            book_cash: Decimal, broker_cash: Decimal | None, broker_equity: Decimal | None,
            pending: Sequence[PendingFill] = (), corporate_symbols: Iterable[str] = (),
            avg_cost: Mapping[str, Decimal] | None = None, broker_days: Sequence[BrokerDay] = (),
            book_days: Mapping[date, BookDay] | None = None, base_value_null: bool = False,
            tolerances: Tolerances | None = None, broker_positions_value: Decimal | None = None) -> TieOut:
    """Compare the book with the broker now and on every past day (see the module docstring).

    ``broker_positions_value``: the account answer's long plus short market value (``None``: unknown),
    against the positions answer's market values: the market's move between the two broker reads."""
    tol = tolerances or Tolerances()
    days_book = book_days or {}
    corporate = {_canonical(s) for s in corporate_symbols}
    positions = compare_positions(book_positions, broker_positions, now=now, pending=pending,
                                  corporate_symbols=corporate, avg_cost=avg_cost or {}, tolerances=tol)
    # a corporate action seen in the positions only: its activity is missing raw data
    unstored = [d for d in positions if d.cause is Cause.CORPORATE_ACTION and d.subject not in corporate]
    unposted = unposted_by_type(broker_days, days_book)
    # Only where the broker moved more of that kind than the book (a fee the book lacks), never the
    # reverse (a posting the book dates just before the broker's window).
    broker_total = {t: sum((d.cashflow.get(t, ZERO) for d in broker_days), ZERO) for t in unposted}
    unposted = {t: v for t, v in unposted.items() if is_late_posting(t) and v * broker_total[t] > 0}
    equity_book = book_equity(book_positions, book_cash)
    account = compare_account(book_cash=book_cash, broker_cash=broker_cash, equity_book=equity_book,
                              broker_equity=broker_equity, pending=pending, unposted=unposted, positions=positions,
                              tolerances=tol, broker_moved=_broker_moved(broker_positions, broker_positions_value))
    days = compare_days(broker_days, days_book, today=ny_day(now), pending=pending, tolerances=tol)
    diffs = positions + account
    if base_value_null:
        diffs.append(Difference(scope=Scope.NOTE, subject="base_value", amount_usd=ZERO, cause=Cause.BROKER_QUIRK,
                                open=False, detail="the broker's portfolio history has a null base_value"))
    status = status_of(diffs, tol)
    if status is Status.TIED_OUT and any(d.status is Status.DRIFT for d in days):
        status = Status.EXPLAINED  # now ties out; the past days keep their own status
    return TieOut(as_of=now, status=status, book_cash=book_cash, broker_cash=broker_cash, book_equity=equity_book,
                  broker_equity=broker_equity, differences=tuple(diffs), days=tuple(days),
                  repair_since=_repair_since(diffs, days, pending, broker_days, tol, unstored, today=ny_day(now)))


def _broker_moved(broker: Sequence[BrokerPositionFigures], value_at_account: Decimal | None) -> Decimal:
    values = [p.market_value for p in broker]
    if value_at_account is None or any(v is None for v in values):
        return ZERO
    return value_at_account - sum((v for v in values if v is not None), ZERO)


def _repair_since(diffs: Sequence[Difference], days: Sequence[DayTieOut], pending: Sequence[PendingFill],
                  broker_days: Sequence[BrokerDay], tol: Tolerances,
                  unstored: Sequence[Difference] = (), today: date | None = None) -> datetime | None:
    """From the oldest thing missing: an unbooked fill's time, else a week before the window's first
    day (a late posting, or a corporate action's activity, is dated on or before the day the broker
    posted it, the same margin :func:`unposted_by_type` gives the book)."""
    wanted = [d for d in [*diffs, *(x for day in days for x in day.differences)]
              if d.open and d.cause in MISSING_DATA_CAUSES and abs(d.amount_usd) > tolerance_of(d, tol)]
    wanted += [d for d in unstored if abs(d.amount_usd) > tolerance_of(d, tol)]
    if not wanted:
        return None
    if all(d.cause is Cause.FILL_NOT_INGESTED for d in wanted) and pending:
        return min(f.ts for f in pending) - timedelta(minutes=5)
    first = min((d.day for d in broker_days), default=None)
    start = first or min((d.day for d in wanted if d.day is not None), default=None) or (today if unstored else None)
    if start is None:
        return None
    return datetime.combine(start - timedelta(days=7), datetime.min.time(), NEW_YORK).astimezone(UTC)
