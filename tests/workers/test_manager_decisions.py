"""The manager's pure decisions, without a database: book triage, marks, reconciliation, seeding, watchdog."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.ledger import CashLedger, LedgerEntry
from core.records import ActivityRecord, Direction, Lot, OpenPosition
from core.snapshots import DrawdownTracker, due_points
from core.valuation import Mark, PriceSource
from workers.alpaca import PortfolioHistory
from workers.manager import checkpoint
from workers.manager.book import BookChanges, still_missing, tally_trips, triage
from workers.manager.health import stall_limit_s, stall_reason
from workers.manager.marks import choose_marks, newly_stale, ns_to_utc, tick_time
from workers.manager.reconcile import (
    CashCalibration,
    QtyCheck,
    Verdict,
    absorb_late_lines,
    calibrate_cash,
    check_quantities,
)
from workers.manager.seed import seed_points
from workers.manager.throttle import Throttle
from workers.supervise import LoopHealth

T = datetime(2026, 1, 6, 15, 0, tzinfo=UTC)
T_NS = int(T.timestamp()) * 1_000_000_000
D = Decimal


def act(aid: str, kind: str = "FILL", *, symbol: str | None = "AAPL", side: str | None = "buy",
        qty: str | None = "1", price: str | None = "10", parse_error: str | None = None) -> ActivityRecord:
    return ActivityRecord(activity_id=aid, ts=T, activity_type=kind, seq=1, symbol=symbol, side=side,
                          qty=None if qty is None else D(qty), price=None if price is None else D(price),
                          parse_error=parse_error)


@pytest.mark.parametrize(
    ("record", "fill", "skipped", "expected"),
    [
        (act("ok"), True, False, True),
        (act("div", "DIV", symbol=None, side=None, qty=None, price=None), False, False, True),
        (act("unparsed", parse_error="price: not a number"), False, True, True),
        (act("noqty", qty=None), False, True, True),
        (act("nosymbol", symbol=""), False, True, True),
        (act("badside", side="sideways"), False, True, False),  # refused by the lot engine: logged too
        (act("zero", qty="0"), False, True, False),
    ],
)
def test_triage(record: ActivityRecord, fill: bool, skipped: bool, expected: bool) -> None:
    result = triage([record])

    assert [f.fill_id for f in result.fills] == ([record.activity_id] if fill else [])
    assert [s.activity_id for s in result.skipped] == ([record.activity_id] if skipped else [])
    assert all(s.expected is expected for s in result.skipped)


@pytest.mark.parametrize(
    ("wanted", "known", "previous", "bulk", "expected"),
    [
        ({"a", "b"}, {"a"}, {}, False, {"b": 1}),
        ({"b"}, {}, {"b": 19}, False, {"b": 20}),
        ({"b"}, {}, {"b": 20}, False, {}),  # given up after ORDER_RETRIES lookups
        ({"a", "b"}, {}, {"a": 3}, True, {}),  # a full re-read retries nothing
    ],
)
def test_still_missing(wanted: set[str], known: set[str], previous: dict[str, int], bulk: bool,
                       expected: dict[str, int]) -> None:
    assert still_missing(wanted, dict.fromkeys(known), previous, bulk=bulk) == expected


def test_tally_trips_keeps_the_realized_total_in_step() -> None:
    trip_pl = {"old": D(5), "gone": D(-2)}

    news = tally_trips(BookChanges(removed_trade_ids=("gone",)), trip_pl, D(3))

    assert (news.realized_closed, news.announce_ids, trip_pl) == (D(5), ("gone",), {"old": D(5)})


@pytest.mark.parametrize(
    ("event_ns", "received_ns", "expected"),
    [
        (T_NS, T_NS + 5, T),
        (0, T_NS, T),  # no publisher time: the receive time
        (3 * 10**20, T_NS, T),  # a unit mix-up beyond year 9999: the receive time, never an exception
        (2**63 - 1, T_NS, T),
        (-5, T_NS, T),
        (0, 0, None),
    ],
)
def test_tick_time_never_raises(event_ns: int, received_ns: int, expected: datetime | None) -> None:
    assert tick_time(event_ns, received_ns) == expected


def test_ns_to_utc_out_of_range_is_none() -> None:
    assert ns_to_utc(10**30) is None


def _position(symbol: str, entry: str | None = "100") -> OpenPosition:
    lot = Lot(symbol, "f1", None, Direction.LONG, T, None if entry is None else D(entry), D(1), D(1))
    return OpenPosition(symbol, Direction.LONG, D(1), lot.entry_price, lot.entry_price, T, None, D(0), (lot,), False)


def _mark(price: int, source: PriceSource, ts: datetime = T, stale: bool = False) -> Mark:
    return Mark(price=D(price), ts=ts, source=source, stale=stale)


@pytest.mark.parametrize(
    ("mark", "rest", "fresh", "use_rest", "expected"),
    [
        (_mark(101, PriceSource.ZMQ), _mark(99, PriceSource.REST), True, True, _mark(101, PriceSource.ZMQ)),
        (_mark(101, PriceSource.ZMQ), _mark(99, PriceSource.REST), False, True, _mark(99, PriceSource.REST)),
        (_mark(101, PriceSource.ZMQ, T + timedelta(seconds=1)), _mark(99, PriceSource.REST), False, True,
         _mark(101, PriceSource.ZMQ, T + timedelta(seconds=1), stale=True)),  # REST older than the last tick
        (_mark(101, PriceSource.ZMQ), _mark(99, PriceSource.REST), False, False,
         _mark(101, PriceSource.ZMQ, stale=True)),
        (None, None, False, True, _mark(100, PriceSource.FILL, stale=True)),
    ],
)
def test_choose_marks(mark: Mark | None, rest: Mark | None, fresh: bool, use_rest: bool, expected: Mark) -> None:
    marks = {} if mark is None else {"X": mark}
    rest_marks = {} if rest is None else {"X": rest}

    chosen = choose_marks({"X": _position("X")}, marks, rest_marks, zmq_fresh=lambda _s: fresh, use_rest=use_rest)

    assert chosen == {"X": expected}


def test_unpriced_position_without_entry_price_has_no_mark() -> None:
    assert choose_marks({"X": _position("X", None)}, {}, {}, zmq_fresh=lambda _s: True, use_rest=True) == {}


def test_newly_stale_flags_only_fresh_zmq_marks() -> None:
    marks = {"A": _mark(1, PriceSource.ZMQ), "B": _mark(1, PriceSource.REST), "C": _mark(1, PriceSource.ZMQ, stale=True)}
    assert newly_stale(marks, lambda _s: True) == {"A": _mark(1, PriceSource.ZMQ, stale=True)}


@pytest.mark.parametrize(
    ("observations", "verdicts"),
    [
        ([({"A": 1}, {"A": 1}, 5)], [Verdict.AGREE]),
        ([({"A": 1}, {"A": 2}, 5), ({"A": 1}, {"A": 2}, 5), ({"A": 1}, {"A": 2}, 5)],
         [Verdict.UNCONFIRMED, Verdict.REREAD, Verdict.REBUILD]),
        ([({"A": 1}, {"A": 2}, 5), ({"A": 1}, {"A": 2}, 6)], [Verdict.UNCONFIRMED, Verdict.UNCONFIRMED]),  # fills moved
        ([({"A": 1}, {"A": 2}, 5), ({"A": 1}, {"A": 3}, 5)], [Verdict.UNCONFIRMED, Verdict.UNCONFIRMED]),  # differs
        ([({"A": 1}, {"A": 2}, 5), ({"A": 1}, {"A": 2}, 5), ({"A": 1}, {"A": 1}, 5)],
         [Verdict.UNCONFIRMED, Verdict.REREAD, Verdict.AGREE]),
        # a rebuild that changes nothing is not repeated; a new fill or another difference starts over
        ([({"A": 1}, {"A": 2}, 5)] * 5, [Verdict.UNCONFIRMED, Verdict.REREAD, Verdict.REBUILD, Verdict.STUCK,
                                         Verdict.STUCK]),
        ([({"A": 1}, {"A": 2}, 5)] * 4 + [({"A": 1}, {"A": 2}, 6)] * 3,
         [Verdict.UNCONFIRMED, Verdict.REREAD, Verdict.REBUILD, Verdict.STUCK, Verdict.UNCONFIRMED, Verdict.REREAD,
          Verdict.REBUILD]),
    ],
)
def test_quantity_checks(observations: list[tuple[dict[str, int], dict[str, int], int]], verdicts: list[Verdict]) -> None:
    check = QtyCheck(mismatch={}, fills_seen=0, streak=0)
    got = []
    for fifo, broker, fills in observations:
        check = check_quantities(check, {s: D(q) for s, q in fifo.items()}, {s: D(q) for s, q in broker.items()},
                                 fills)
        got.append(check.verdict)
    assert got == verdicts


@pytest.mark.parametrize(
    ("reads", "agree", "offsets"),
    [
        ([D(1000), D(1000)], True, [D(0), D(50)]),  # adopted on the second agreeing read
        ([D(1000), D(1010)], True, [D(0), D(0)]),
        ([D(1000), D(1000)], False, [D(0), D(0)]),  # never while positions disagree
        ([None, D(1000), D(1000)], True, [D(0), D(0), D(50)]),
    ],
)
def test_cash_calibration(reads: list[Decimal | None], agree: bool, offsets: list[Decimal]) -> None:
    calibration = CashCalibration(offset=D(0))
    got = []
    for broker_cash in reads:
        calibration = calibrate_cash(calibration, broker_cash=broker_cash, ledger_cash=D(950), positions_agree=agree)
        got.append(calibration.offset)
    assert got == offsets


def _fee(amount: str, ts: datetime) -> tuple[LedgerEntry, datetime]:
    return LedgerEntry(activity_id=f"fee-{amount}-{ts:%H%M}", cash_delta=D(amount), deposit_delta=D(0)), ts


@pytest.mark.parametrize(
    ("offset", "lines", "want"),
    [
        ("-0.02", [("-0.01", -1), ("-0.01", -1)], "0"),  # yesterday's fees, found after the offset was measured
        ("-0.02", [("-0.01", +1)], "-0.02"),  # posted after the read: the broker's cash did not hold it yet
        ("0", [("-0.01", -1)], "0"),  # a complete ledger is never pushed off
        ("-0.02", [("-0.05", -1)], "-0.02"),  # larger than what the offset stands in for
        ("-0.02", [("+0.01", -1)], "-0.02"),  # the other sign: not what the offset explains
    ],
)
def test_late_lines_dated_before_the_broker_read_are_absorbed_by_the_offset(
        offset: str, lines: list[tuple[str, int]], want: str) -> None:
    measured_at = T + timedelta(hours=6)
    calibration = CashCalibration(offset=D(offset), candidate=D(offset), measured_at=measured_at)
    booked = [_fee(amount, measured_at + timedelta(minutes=m)) for amount, m in lines]
    assert absorb_late_lines(calibration, booked).offset == D(want)


def test_the_offset_measured_by_two_reads_carries_its_read_time() -> None:
    first, second = T, T + timedelta(seconds=5)
    calibration = calibrate_cash(CashCalibration(offset=D(0)), broker_cash=D(1000), ledger_cash=D(950),
                                 positions_agree=True, read_at=first)
    assert calibration.measured_at is None
    calibration = calibrate_cash(calibration, broker_cash=D(1000), ledger_cash=D(950), positions_agree=True,
                                 read_at=second)
    assert (calibration.offset, calibration.measured_at) == (D(50), second)
    assert absorb_late_lines(CashCalibration(offset=D(50)), [_fee("10", first)]).offset == D(50)  # not measured


def _history(points: list[tuple[datetime, str | None]]) -> PortfolioHistory:
    return PortfolioHistory(timestamps=tuple(t for t, _ in points),
                            equity=tuple(None if e is None else D(e) for _, e in points), profit_loss=(),
                            profit_loss_pct=(), base_value=None, timeframe="1D", raw={})


def test_seed_points_from_history_skip_empty_and_recent_points() -> None:
    now = T + timedelta(days=3)
    history = _history([(T, "0"), (T + timedelta(days=1), "5000"), (T + timedelta(days=2), None),
                        (now - timedelta(minutes=5), "5100")])

    snaps = seed_points(history, now=now, deposits_until=lambda ts: D(0) if ts <= T else D(5000),
                        initial_deposit=None, deposit_baseline=D(0), first_seen=None, tracker=DrawdownTracker())

    assert [(s.ts, s.equity, s.net_deposits, s.source) for s in snaps] == [
        (T + timedelta(days=1), D(5000), D(5000), "history")]


def test_seed_point_at_the_first_deposit_without_history() -> None:
    snaps = seed_points(_history([]), now=T, deposits_until=lambda _ts: D(0), initial_deposit=D(2500),
                        deposit_baseline=D(2500), first_seen=T - timedelta(days=9), tracker=DrawdownTracker())
    assert [(s.ts, s.equity, s.cash, s.source) for s in snaps] == [(T - timedelta(days=9), D(2500), D(2500), "seed")]


def _health(last_ok_ago_s: float | None, now: float, error: str | None = None) -> LoopHealth:
    health = LoopHealth("x", last_ok_monotonic=None if last_ok_ago_s is None else now - last_ok_ago_s)
    health.last_error = error
    return health


@pytest.mark.parametrize(
    ("last_ok_ago_s", "started_ago_s", "error", "stalled"),
    [
        (1.0, 100.0, None, None),
        (29.0, 100.0, None, None),  # the limit is max(3 heartbeats, 10 periods) = 30 s
        (31.0, 100.0, "OSError: down", "flush: no progress for 31s (OSError: down)"),
        (None, 10.0, None, None),  # not started long enough ago
        (None, 40.0, None, "flush: no progress for 40s"),
    ],
)
def test_stall_reason(last_ok_ago_s: float | None, started_ago_s: float, error: str | None,
                      stalled: str | None) -> None:
    now = time.monotonic()
    loops = {"flush": _health(last_ok_ago_s, now, error)}

    got = stall_reason(loops, {"flush": 3.0}, now_mono=now, started_mono=now - started_ago_s, heartbeat_sec=5.0)

    assert got == stalled


def test_stall_limit_is_never_under_three_heartbeats() -> None:
    assert (stall_limit_s(0.05, 1.0), stall_limit_s(60.0, 1.0)) == (3.0, 600.0)


def test_throttle_leading_edge_and_guaranteed_trailing_edge() -> None:
    th = Throttle(1.0)
    assert th.offer(10.0) is True
    assert th.offer(10.3) is False
    assert th.due(10.9) is False
    assert th.due(11.0) is True  # the deferred change is sent one interval after the last
    assert th.due(11.5) is False  # and only once
    th.reopen()
    assert th.offer(11.6) is True  # a failed send reopens the window


def test_due_points_stamps_every_instant_a_late_flush_missed() -> None:
    def always(_ts: datetime) -> bool:
        return True

    assert due_points(T + timedelta(seconds=3.5), T, snapshot_sec=1, market_open=always, max_points=100) == [
        T + timedelta(seconds=s) for s in (1, 2, 3)]
    assert due_points(T + timedelta(seconds=0.5), T, snapshot_sec=1, market_open=always, max_points=100) == []
    assert due_points(T + timedelta(seconds=0.5), None, snapshot_sec=1, market_open=always, max_points=100) == [T]


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", '{"format": 2}', '{"format": 1, "book": {}}', '{"format": 1}'],
)
def test_unusable_checkpoints_are_refused_by_name(text: str) -> None:
    with pytest.raises(checkpoint.InvalidInput, match="checkpoint"):
        checkpoint.decode(text)


def test_checkpoint_round_trip() -> None:
    from core.fifo import FifoBook

    ledger = CashLedger()
    ledger.skip("x")
    saved = checkpoint.decode(checkpoint.encode(FifoBook(), ledger, D("12.5")))
    assert (saved.cash_offset, saved.ledger.applied, saved.book.fill_count) == (D("12.5"), {"x"}, 0)
