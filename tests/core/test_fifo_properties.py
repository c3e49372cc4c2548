"""Property tests of the FIFO engine (hypothesis): accounting identities and order independence."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.fifo import FifoBook, cash_flow_pl, match_fills
from core.records import Direction, Fill, Side

T0 = datetime(2024, 1, 2, 15, 0, tzinfo=UTC)
QTYS = [D(1), D(2), D(3), D(5), D("0.5"), D("1.25"), D("0.001")]
PRICES = [D("9.99"), D("10"), D("10.5"), D("11.25"), D("100"), D("0.0123")]
SETTINGS = settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def fill_lists(draw: st.DrawFn) -> list[Fill]:
    n = draw(st.integers(0, 30))
    out = []
    for i in range(n):
        out.append(Fill(
            fill_id=f"f{draw(st.integers(0, 10**6)):07d}-{i}",
            ts=T0 + timedelta(seconds=draw(st.integers(0, 6))),  # many equal timestamps
            symbol=draw(st.sampled_from(["AAA", "BBB"])),
            side=draw(st.sampled_from([Side.BUY, Side.SELL])),
            qty=draw(st.sampled_from(QTYS)),
            price=draw(st.sampled_from(PRICES)),
            fee=draw(st.sampled_from([D(0), D("0.01"), D("1")])),
        ))
    return out


def _flat_part_cash(fills: list[Fill]) -> D:
    """Independent: cash flow of each symbol's fills up to the last moment its position was flat."""
    total = D(0)
    for symbol in {f.symbol for f in fills}:
        pos = cash = flat_cash = D(0)
        for f in sorted((f for f in fills if f.symbol == symbol), key=lambda f: (f.ts, f.fill_id)):
            signed = f.qty if f.side is Side.BUY else -f.qty
            after = pos + signed
            if after == 0:
                flat_cash = cash - signed * f.price
            elif pos != 0 and (after > 0) != (pos > 0):  # crossed zero inside this fill
                flat_cash = cash + pos * f.price
            cash -= signed * f.price
            pos = after
        total += flat_cash
    return total


def _snapshot(book: FifoBook) -> tuple[object, object]:
    return book.round_trips(), book.open_positions()


@SETTINGS
@given(fill_lists())
def test_realised_pnl_equals_cash_flow_of_the_flat_part(fills: list[Fill]) -> None:
    res = match_fills(fills)
    assert sum((t.gross_pl for t in res.round_trips), D(0)) == _flat_part_cash(fills)


@SETTINGS
@given(fill_lists())
def test_open_quantity_equals_net_position_and_cash_identity_holds(fills: list[Fill]) -> None:
    res = match_fills(fills)
    for symbol in {f.symbol for f in fills}:
        net = sum((f.signed_qty for f in fills if f.symbol == symbol), D(0))
        pos = res.open_positions.get(symbol)
        assert (pos.qty if pos else D(0)) == net
        if pos is not None:
            sign = 1 if pos.direction is Direction.LONG else -1
            assert sum((lot.remaining for lot in pos.lots), D(0)) * sign == net
            assert all(lot.remaining > 0 for lot in pos.lots)
    # all cash = realised (closed trips + partial closes of open positions) - cost of what is still open
    realised = sum((t.gross_pl for t in res.round_trips), D(0)) + sum(
        (p.realized_pl for p in res.open_positions.values()), D(0))
    open_cost = sum((p.cost_basis or D(0) for p in res.open_positions.values()), D(0))
    assert abs(cash_flow_pl(fills) - (realised - open_cost)) < D("1e-40")
    assert sum((t.fees for t in res.round_trips), D(0)) <= sum((f.fee for f in fills), D(0))


@SETTINGS
@given(fill_lists(), st.randoms(use_true_random=False))
def test_input_order_and_duplicates_change_nothing(fills: list[Fill], rnd: object) -> None:
    shuffled = list(fills) + list(fills[: len(fills) // 3])
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert match_fills(shuffled) == match_fills(fills)


@SETTINGS
@given(fill_lists(), st.randoms(use_true_random=False), st.integers(1, 5))
def test_incremental_batches_equal_full_recomputation(fills: list[Fill], rnd: object, batches: int) -> None:
    shuffled = list(fills)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    cuts = sorted(rnd.randint(0, len(shuffled)) for _ in range(batches - 1))  # type: ignore[attr-defined]
    book = FifoBook()
    seen_ids: set[str] = set()
    bounds = [0, *cuts, len(shuffled)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        update = book.apply(shuffled[a:b])
        seen_ids -= set(update.removed_trade_ids)
        seen_ids |= {t.trade_id for t in update.upserted}
        if a == len(shuffled) // 2:  # persist and restore halfway
            book = FifoBook.from_dict(json.loads(json.dumps(book.to_dict())))

    full = FifoBook()
    full.apply(fills)
    assert _snapshot(book) == _snapshot(full)
    # applying the reported upserts/deletes in order reproduces the full set of trade ids
    assert seen_ids == {t.trade_id for t in full.round_trips()}


@SETTINGS
@given(fill_lists(), st.randoms(use_true_random=False), st.booleans(),
       st.sampled_from([None, D("7"), D("-3")]), st.sampled_from([None, D("10.5")]))
def test_orphan_books_are_order_and_batch_independent(fills: list[Fill], rnd: object, allow_short: bool,
                                                      start_qty: D | None, start_px: D | None) -> None:
    from core.records import StartingPosition

    starts = [] if start_qty is None else [StartingPosition("AAA", start_qty, T0 - timedelta(days=1), start_px)]
    full = FifoBook(starting_positions=starts, allow_short=allow_short)
    full.apply(fills)

    shuffled = list(fills)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    cut = rnd.randint(0, len(shuffled))  # type: ignore[attr-defined]
    book = FifoBook(starting_positions=starts, allow_short=allow_short)
    book.apply(shuffled[:cut])
    book = FifoBook.from_dict(json.loads(json.dumps(book.to_dict())))
    book.apply(shuffled[cut:])

    assert _snapshot(book) == _snapshot(full)
    for symbol, pos in full.open_positions().items():
        sign = 1 if pos.direction is Direction.LONG else -1
        assert sum((lot.remaining for lot in pos.lots), D(0)) * sign == pos.qty
        if not allow_short and not (symbol == "AAA" and start_qty is not None and start_qty < 0):
            assert pos.qty > 0  # a long-only book never goes short
    for trip in full.round_trips():
        assert trip.is_orphan == any(not m.price_known or m.open_fill_id.startswith(("start:", "orphan:"))
                                     for m in trip.lots) or trip.open_fills[0][0].startswith("start:")
