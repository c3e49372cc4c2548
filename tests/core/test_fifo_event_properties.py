"""Property tests of lot events in the FIFO engine (hypothesis): the guarantees fills already have.

- incremental = full recomputation, for any split of fills and events into batches, in any order,
  with a JSON save/restore in the middle;
- order independence: shuffled and duplicated input changes nothing;
- realized P&L equals the independent cash ledger once every symbol is flat (fees in the asset and
  fill fees are the only difference, and both are reported as fees).

Events drawn: forward and reverse splits, fees in the asset, cash in lieu, a symbol change, a stock
(and cash) merger into a symbol that may be held, a cash merger, a spinoff, stock transfers in and
out, option expiry and exercise (into the option's underlying), a worthless removal.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.corporate_actions import (
    AssetFee,
    CashInLieu,
    LotEvent,
    Merger,
    OptionExercise,
    OptionExpiry,
    Spinoff,
    Split,
    StockTransfer,
    SymbolChange,
    Worthless,
)
from core.fifo import FifoBook, cash_flow_pl, match_fills
from core.records import Fill, Side

T0 = datetime(2024, 1, 2, 15, 0, tzinfo=UTC)
OPTION = "AAA240621C00010000"  # its underlying is AAA: exercise ties the two symbols together
SYMBOLS = ["AAA", "BBB", "CCC", OPTION]
QTYS = [D(1), D(2), D(3), D("0.5"), D("1.25")]
PRICES = [D("9.99"), D("10"), D("10.5"), D("11.25"), D("0.5")]
RATIOS = [(D(2), D(1)), (D(3), D(1)), (D(1), D(2)), (D(3), D(2)), (D(1), D(4))]
SETTINGS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
TOLERANCE = D("1e-20")  # prices a split divides (10 / 3) and flip fees are money, summed here at 28 digits


@st.composite
def fills_and_events(draw: st.DrawFn) -> tuple[list[Fill], list[LotEvent]]:
    fills = []
    for i in range(draw(st.integers(0, 25))):
        symbol = draw(st.sampled_from(SYMBOLS))
        fills.append(Fill(
            fill_id=f"f{i:03d}",
            ts=T0 + timedelta(minutes=draw(st.integers(0, 40))),  # equal timestamps on purpose
            symbol=symbol,
            side=draw(st.sampled_from([Side.BUY, Side.SELL])),
            qty=draw(st.sampled_from(QTYS if symbol != OPTION else QTYS[:3])),  # whole contracts
            price=draw(st.sampled_from(PRICES)),
            fee=draw(st.sampled_from([D(0), D("0.01")])),
        ))
    events: list[LotEvent] = []
    for i in range(draw(st.integers(0, 5))):
        ts = T0 + timedelta(minutes=draw(st.integers(0, 40)))
        kind = draw(st.sampled_from(["split", "fee", "cil", "nc", "expiry", "exercise", "worthless", "merger",
                                     "cash_merger", "spinoff", "transfer_in", "transfer_out"]))
        eid = f"e{i:02d}-{kind}"
        if kind == "split":
            new, old = draw(st.sampled_from(RATIOS))
            events.append(Split(event_id=eid, ts=ts, symbol=draw(st.sampled_from(["AAA", "BBB"])), new_rate=new,
                                old_rate=old))
        elif kind == "fee":
            events.append(AssetFee(event_id=eid, ts=ts, symbol="BBB", qty=draw(st.sampled_from([D("0.25"), D(1)]))))
        elif kind == "cil":
            events.append(CashInLieu(event_id=eid, ts=ts, symbol="AAA", qty=D("0.5"), cash=D("5.25")))
        elif kind == "nc":
            events.append(SymbolChange(event_id=eid, ts=ts, symbol="BBB", new_symbol="CCC"))
        elif kind == "expiry":
            events.append(OptionExpiry(event_id=eid, ts=ts, symbol=OPTION))
        elif kind == "exercise":
            events.append(OptionExercise(event_id=eid, ts=ts, symbol=OPTION, contracts=D(1)))
        elif kind == "merger":  # stock and cash, into a symbol that may be held already
            events.append(Merger(event_id=eid, ts=ts, symbol="BBB", new_symbol="CCC", ratio=D(2),
                                 cash=draw(st.sampled_from([D(0), D("1.5")]))))
        elif kind == "cash_merger":
            events.append(Merger(event_id=eid, ts=ts, symbol="CCC", cash=D("12.5")))
        elif kind == "spinoff":
            events.append(Spinoff(event_id=eid, ts=ts, symbol="AAA", new_symbol="DDD", new_qty=D("0.5"),
                                  basis_fraction=D("0.25")))
        elif kind == "transfer_in":
            events.append(StockTransfer(event_id=eid, ts=ts, symbol="BBB", qty=D(1), price=D(10)))
        elif kind == "transfer_out":
            events.append(StockTransfer(event_id=eid, ts=ts, symbol="BBB", qty=D(-1), price=D("10.5")))
        else:
            events.append(Worthless(event_id=eid, ts=ts, symbol="CCC"))
    return fills, events


def _snapshot(book: FifoBook) -> tuple[object, object]:
    return book.round_trips(), book.open_positions()


@SETTINGS
@given(fills_and_events(), st.randoms(use_true_random=False))
def test_any_batches_in_any_order_with_a_restore_equal_the_full_run(data: tuple[list[Fill], list[LotEvent]],
                                                                      rnd: random.Random) -> None:
    fills, events = data
    full = FifoBook()
    full.apply(fills, events=events)

    items: list[Fill | LotEvent] = [*fills, *events]
    rnd.shuffle(items)
    cuts = sorted(rnd.sample(range(len(items) + 1), k=min(3, len(items) + 1)))
    book = FifoBook()
    for n, (a, b) in enumerate(zip([0, *cuts], [*cuts, len(items)], strict=True)):
        part = items[a:b]
        book.apply([x for x in part if isinstance(x, Fill)], events=[x for x in part if not isinstance(x, Fill)])
        if n == 1:
            book = FifoBook.from_dict(json.loads(json.dumps(book.to_dict())))
    assert _snapshot(book) == _snapshot(full)


@SETTINGS
@given(fills_and_events(), st.randoms(use_true_random=False))
def test_shuffled_and_duplicated_input_changes_nothing(data: tuple[list[Fill], list[LotEvent]],
                                                         rnd: random.Random) -> None:
    fills, events = data
    expected = match_fills(fills, events=events)
    more_fills = fills + fills[::3]
    more_events = events + events[::2]
    rnd.shuffle(more_fills)
    rnd.shuffle(more_events)
    assert match_fills(more_fills, events=more_events) == expected


def _ledger(fills: list[Fill], events: list[LotEvent]) -> D:
    """Independent: net positions and cash only (no lots, no FIFO), events applied to net quantities."""
    pos: dict[str, D] = {}
    cash = D(0)
    items: list[tuple[tuple[datetime, int, str], Fill | LotEvent]] = [((f.ts, 1, f.fill_id), f) for f in fills]
    items += [((e.ts, 0, e.event_id), e) for e in events]
    for _, item in sorted(items, key=lambda it: it[0]):
        if isinstance(item, Fill):
            mult = D(100) if item.symbol == OPTION else D(1)
            signed = item.qty if item.side is Side.BUY else -item.qty
            pos[item.symbol] = pos.get(item.symbol, D(0)) + signed
            cash -= signed * item.price * mult
            continue
        held = pos.get(item.symbol, D(0))
        sign = 1 if held > 0 else -1
        if isinstance(item, Split):
            pos[item.symbol] = held * item.new_rate / item.old_rate
        elif isinstance(item, CashInLieu):
            take = min(item.qty, abs(held))
            cash += sign * item.cash * take / item.qty  # received on a long, paid on a short
            pos[item.symbol] = held - sign * take
        elif isinstance(item, AssetFee):
            pos[item.symbol] = held - item.qty  # units leave (beyond those held: a short), no cash
        elif isinstance(item, SymbolChange):
            pos[item.new_symbol] = pos.get(item.new_symbol, D(0)) + held
            pos[item.symbol] = D(0)
        elif isinstance(item, OptionExpiry | Worthless):
            pos[item.symbol] = D(0)
        elif isinstance(item, OptionExercise):
            pos[item.symbol] = held - sign * min(item.contracts, abs(held))
            pos["AAA"] = pos.get("AAA", D(0)) + 100 * item.contracts  # a call: shares bought at the strike
            cash -= 100 * item.contracts * D(10)
        elif isinstance(item, Merger):
            if held:
                cash += sign * item.cash  # received on a long, paid on a short
                if item.new_symbol is not None:
                    pos[item.new_symbol] = pos.get(item.new_symbol, D(0)) + held * item.ratio
                pos[item.symbol] = D(0)
        elif isinstance(item, Spinoff):
            if held:
                pos[item.new_symbol] = pos.get(item.new_symbol, D(0)) + sign * item.new_qty
        elif isinstance(item, StockTransfer):
            if item.qty > 0:  # a deposit of shares counts as cash spent on them at their price
                pos[item.symbol] = held + item.qty
                cash -= item.qty * item.price
            elif held > 0:
                take = min(-item.qty, held)
                pos[item.symbol] = held - take
                cash += take * item.price
    for symbol, left in pos.items():  # the test closes everything at 10
        cash += left * D(10) * (D(100) if symbol == OPTION else D(1))
    return cash


@SETTINGS
@given(fills_and_events())
def test_realized_pnl_equals_the_cash_ledger_once_flat(data: tuple[list[Fill], list[LotEvent]]) -> None:
    fills, events = data
    book = FifoBook()
    book.apply(fills, events=events)
    # flatten whatever is still open, one fill per symbol after everything else
    end = T0 + timedelta(hours=2)
    closing = [Fill(fill_id=f"close-{symbol}", ts=end, symbol=symbol, side=Side.SELL if pos.qty > 0 else Side.BUY,
                    qty=abs(pos.qty), price=D(10))
               for symbol, pos in book.open_positions().items()]
    book.apply(closing)
    assert book.open_positions() == {}
    assert book.dust() == {}
    fill_fees = sum((f.fee for f in fills + closing), D(0))
    realized = sum((t.net_pl for t in book.round_trips()), D(0)) + fill_fees  # gross minus fees taken in the asset
    assert abs(realized - _ledger(fills, events)) < TOLERANCE


@SETTINGS
@given(fills_and_events())
def test_cash_flow_pl_agrees_with_the_ledger_when_every_event_found_its_position(
        data: tuple[list[Fill], list[LotEvent]]) -> None:
    fills, events = data
    # the kinds whose cash depends on what is held are left out: cash_flow_pl reads only the events
    plain = [e for e in events if not isinstance(e, CashInLieu | Merger)
             and not (isinstance(e, StockTransfer) and e.qty < 0)]
    book = FifoBook()
    book.apply(fills, events=plain)
    closing = [Fill(fill_id=f"close-{symbol}", ts=T0 + timedelta(hours=2), symbol=symbol,
                    side=Side.SELL if pos.qty > 0 else Side.BUY, qty=abs(pos.qty), price=D(10))
               for symbol, pos in book.open_positions().items()]
    assert abs(cash_flow_pl(fills + closing, plain) - _ledger(fills, plain)) < TOLERANCE
