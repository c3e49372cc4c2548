"""The provisional-fill match rule (workers/ingester/provisional.py, docs/freshness.md): pure tables."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.records import ActivityRecord
from workers.alpaca.parse import parse_trade_update
from workers.ingester.provisional import (
    PROVISIONAL_PREFIX,
    ProvisionalFill,
    StoredFillRef,
    execution_suffix,
    link_fills,
    provisional_from_update,
)
from workers.manager.provisional import replaced_applied

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
ORDER = uuid.UUID("11111111-1111-4111-8111-111111111111")
OTHER = uuid.UUID("22222222-2222-4222-8222-222222222222")


def exec_id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def prov(n: int, cum: str, qty: str, price: str = "10", *, order: uuid.UUID = ORDER, side: str = "sell",
         execution: bool = True, **kw: object) -> ProvisionalFill:
    eid = exec_id(n) if execution else None
    return ProvisionalFill(activity_id=f"{PROVISIONAL_PREFIX}{eid or f'{order}:{cum}'}", ts=T0 + timedelta(seconds=n),
                           order_id=order, execution_id=eid, fill_type="partial_fill", symbol="AAPL", side=side,
                           qty=Decimal(qty), price=Decimal(price), cum_qty=Decimal(cum), **kw)  # type: ignore[arg-type]


def rest(n: int, cum: str | None, qty: str, price: str = "10", *, order: uuid.UUID = ORDER, suffix: str | None = None,
         side: str = "sell_short") -> ActivityRecord:
    """A REST FILL whose id suffix is random (the simulator's) unless ``suffix`` is given (Alpaca's
    execution id)."""
    tail = suffix or str(uuid.uuid5(uuid.NAMESPACE_OID, f"rest-{n}"))
    return ActivityRecord(activity_id=f"2026120110{n:05d}000::{tail}", ts=T0 + timedelta(seconds=n), activity_type="FILL",
                          symbol="AAPL", side=side, qty=Decimal(qty), price=Decimal(price), order_id=str(order),
                          cum_qty=None if cum is None else Decimal(cum))


def test_same_fill_stream_first_then_rest_confirms() -> None:
    # Arrange: the provisional fill is stored; its REST twin arrives (side spelled sell_short)
    p = prov(1, "5", "5")
    r = rest(1, "5", "5")
    # Act
    links = link_fills([r], [], [p], [])
    # Assert: the REST row confirms it, the provisional one is marked confirmed (not superseded)
    assert links.rest_confirms == {r.activity_id: p.activity_id}
    assert links.rest_replaces == {}
    assert links.stored_updates == {p.activity_id: (r.activity_id, False)}


def test_same_fill_rest_first_makes_the_late_provisional_superseded() -> None:
    r = rest(1, "5", "5")
    p = prov(1, "5", "5")
    links = link_fills([], [p], [], [StoredFillRef(r.activity_id, ORDER, Decimal(5))])
    assert links.new_provisional[p.activity_id].superseded
    assert links.new_provisional[p.activity_id].confirmed_by == r.activity_id


def test_same_fill_both_in_one_batch_keeps_the_rest_row() -> None:
    r, p = rest(1, "5", "5"), prov(1, "5", "5")
    links = link_fills([r], [p], [], [])
    assert links.rest_confirms == {}
    assert links.new_provisional[p.activity_id].superseded


def test_stream_only_stays_provisional_and_rest_only_is_an_ordinary_fill() -> None:
    p = prov(1, "5", "5")
    only_stream = link_fills([], [p], [], [])
    only_rest = link_fills([rest(2, "5", "5", order=OTHER)], [], [p], [])
    assert only_stream.new_provisional[p.activity_id].confirmed_by is None
    assert not only_stream.new_provisional[p.activity_id].superseded
    assert (only_rest.rest_confirms, only_rest.rest_replaces, only_rest.stored_updates) == ({}, {}, {})


@pytest.mark.parametrize("rest_order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_partial_fills_of_different_sizes_each_match_their_own(rest_order: tuple[int, ...]) -> None:
    # Arrange: one order filled 30 + 70 + 100 on the stream; REST lists them in any order, ids not execution ids
    stored = [prov(1, "30", "30"), prov(2, "100", "70"), prov(3, "200", "100")]
    rests = [rest(1, "30", "30"), rest(2, "100", "70"), rest(3, "200", "100")]
    # Act
    links = link_fills([rests[i] for i in rest_order], [], stored, [])
    # Assert: matched by cumulative quantity, one to one, never crossed
    assert links.rest_confirms == {r.activity_id: p.activity_id for r, p in zip(rests, stored, strict=True)}


def test_same_key_different_content_is_replaced_by_rest() -> None:
    p = prov(1, "5", "5", price="10.00")
    r = rest(1, "5", "5", price="10.01")
    links = link_fills([r], [], [p], [])
    assert links.rest_replaces == {r.activity_id: p.activity_id}
    assert links.stored_updates == {p.activity_id: (r.activity_id, True)}


def test_execution_id_suffix_matches_without_cumulative_quantity() -> None:
    p = prov(7, "5", "5")
    r = rest(9, None, "5", suffix=exec_id(7))
    links = link_fills([r], [], [p], [])
    assert links.rest_confirms == {r.activity_id: p.activity_id}


def test_reconnect_gap_confirms_what_the_stream_saw_and_books_the_rest() -> None:
    # Arrange: fills 1, 2 and 4 came on the stream; 3 fell in a reconnect gap
    stored = [prov(1, "1", "1"), prov(2, "2", "1"), prov(4, "4", "1")]
    rests = [rest(n, str(n), "1") for n in (1, 2, 3, 4)]
    # Act
    links = link_fills(rests, [], stored, [])
    # Assert: three confirmations; fill 3 is an ordinary REST fill
    assert sorted(links.rest_confirms.values()) == sorted(p.activity_id for p in stored)
    assert rests[2].activity_id not in links.rest_confirms
    assert rests[2].activity_id not in links.rest_replaces


def test_rereads_and_duplicates_change_nothing() -> None:
    # A REST row already stored (a backfill re-read) and a duplicate delivery of a stored provisional fill
    p = prov(1, "5", "5", confirmed_by="x")
    r = rest(1, "5", "5")
    links = link_fills([r], [prov(1, "5", "5")], [p], [StoredFillRef(r.activity_id, ORDER, Decimal(5))])
    assert (links.rest_confirms, links.stored_updates, links.new_provisional) == ({}, {}, {})


def test_a_confirmed_provisional_fill_is_not_matched_twice() -> None:
    p = prov(1, "5", "5", confirmed_by="2026::first")
    links = link_fills([rest(2, "5", "5")], [], [p], [])
    assert links.rest_confirms == {}


def _update(event: str, *, execution_id: str | None = "e-1", filled_qty: str = "3") -> dict[str, object]:
    data: dict[str, object] = {
        "event": event, "timestamp": "2026-12-01T10:00:00.123456789-05:00", "price": "101.5", "qty": "3",
        "position_qty": "3",
        "order": {"id": str(ORDER), "symbol": "AAPL", "side": "buy", "qty": "10", "filled_qty": filled_qty,
                  "status": "partially_filled", "created_at": "2026-12-01T15:00:00Z",
                  "updated_at": "2026-12-01T15:00:00Z", "type": "market", "order_class": "", "time_in_force": "day"},
    }
    if execution_id:
        data["execution_id"] = execution_id
    return data


@pytest.mark.parametrize(("event", "execution_id", "expected_id"), [
    ("partial_fill", "e-1", "stream::e-1"),
    ("fill", None, f"stream::{ORDER}:3"),
    ("new", "e-1", None),
    ("canceled", None, None),
])
def test_provisional_from_update(event: str, execution_id: str | None, expected_id: str | None) -> None:
    fill = provisional_from_update(parse_trade_update(_update(event, execution_id=execution_id)))
    assert (fill.activity_id if fill else None) == expected_id
    if fill is not None:
        assert (fill.symbol, fill.side, fill.qty, fill.price, fill.cum_qty) == ("AAPL", "buy", Decimal(3),
                                                                                Decimal("101.5"), Decimal(3))


@pytest.mark.parametrize(("activity_id", "suffix"), [("20260101093000000::abc", "abc"), ("nosep", None),
                                                     ("2026::", None)])
def test_execution_suffix(activity_id: str, suffix: str | None) -> None:
    assert execution_suffix(activity_id) == suffix


def test_manager_rebuilds_only_when_a_booked_provisional_fill_is_replaced() -> None:
    r = ActivityRecord(activity_id="2026::r", ts=T0, activity_type="FILL", replaces="stream::e-1")
    assert replaced_applied([r], {"stream::e-1"}) == "stream::e-1"
    assert replaced_applied([r], set()) is None
