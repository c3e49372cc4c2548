"""Every event kind a real Alpaca account produces, end to end: simulator → ingester → manager →
database → dashboard query. For each kind, against the broker's own answers:

* open positions (``open_trades_<slug>``) equal ``/v2/positions``: quantity exactly, cost basis to the
  cent, canonical symbols (``BTC/USD`` for the broker's ``BTCUSD``), options × 100;
* realized P&L of the round trips (``closed_trades_<slug>``) equals the independent cash ledger of
  :mod:`tests.e2e_real_accounts.ledger`, computed from ``/v2/account/activities`` alone;
* the latest equity snapshot (``equity_full_<slug>``) is within a cent of ``/v2/account`` equity.

Each test collects every mismatch it finds and fails with all of them (and with what did not catch
up, if anything), so one run tells which part of which event is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from tests.e2e_real_accounts.conftest import Account, World, money
from tests.e2e_real_accounts.ledger import CENT, executed_deposits, fee_lines, realized, value_of_lines

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

DUST = Decimal("0.000000001")  # below Alpaca's 9-decimal increment: not a position


def check_positions(acct: Account, family: list[str]) -> list[str]:
    out = []
    for sym in family:
        broker = acct.positions.get(sym)
        row = acct.open_rows.get(sym)
        if broker is not None and abs(broker.qty) < DUST:
            if row is not None:
                out.append(f"{acct.name} {sym}: dust {broker.qty} shown as an open position (qty {row['qty']})")
            continue
        if broker is None and row is None:
            continue
        if broker is None:
            out.append(f"{acct.name} {sym}: open in the book (qty {row['qty']}, cost {row['cost_basis']}), "  # type: ignore[index]
                       "flat at the broker")
            continue
        if row is None:
            out.append(f"{acct.name} {sym}: broker holds {broker.qty} (cost {broker.cost_basis}), the book nothing")
            continue
        if money(row["qty"]) != broker.qty:
            out.append(f"{acct.name} {sym}: qty {row['qty']} in the book, {broker.qty} at the broker")
        if abs(money(row["cost_basis"]) - broker.cost_basis) > CENT:
            out.append(f"{acct.name} {sym}: cost basis {row['cost_basis']} in the book, {broker.cost_basis} at the broker")
    return out


def check_realized(acct: Account, family: list[str]) -> list[str]:
    want = realized(acct.ledger, family, acct.positions)
    trips = [r for r in acct.closed_rows if r["symbol"] in family]
    got = sum((money(r["gross_pl"]) for r in trips), Decimal(0))
    if abs(got - want) > CENT:
        return [f"{acct.name} {'+'.join(family)}: realized {got} over {len(trips)} round trips, the cash ledger says "
                f"{want.quantize(CENT)}"]
    return []


def check_equity(acct: Account) -> list[str]:
    broker = Decimal(acct.account["equity"])
    if acct.equity_row is None:
        return [f"{acct.name}: no equity snapshot (broker equity {broker})"]
    got = money(acct.equity_row["equity"])
    if abs(got - broker) > CENT:
        missing = value_of_lines(acct.unstored, acct.positions)
        why = (f"; the lines never stored are worth {missing.quantize(CENT)}"
               f"{' (all of it)' if abs(got - broker + missing) <= CENT else ''}") if acct.unstored else ""
        return [f"{acct.name}: equity {got} in equity_full at {acct.equity_row['ts']:%H:%M:%S}, broker {broker} "
                f"(off by {(got - broker).quantize(CENT)}{why})"]
    return []


def check_cash_ledger(acct: Account) -> list[str]:
    """The manager's own cash ledger equals the broker's cash: the calibration offset it applies
    (broker cash − booked cash, heartbeat ``cash_offset``) is zero, so no line's cash was dropped."""
    offset = acct.manager.get("cash_offset")
    if offset is None:
        return [f"{acct.name}: the manager heartbeat carries no cash_offset"]
    if abs(Decimal(str(offset))) > CENT:
        missing = value_of_lines((a for a in acct.unstored if not a.get("qty")), {})
        why = " = the cash of lines never stored" if abs(Decimal(str(offset)) - missing) <= CENT else ""
        return [f"{acct.name}: the manager's cash ledger is {offset} off the broker's cash (calibrated away){why}; "
                f"its quantity mismatches: {acct.manager.get('qty_mismatch')}"]
    return []


def check_stored(acct: Account, kind: str, sub_type: str | None = None) -> list[str]:
    """The broker's lines of ``kind`` are all in the raw table (date-only ones included), none unreadable."""
    ids = {a["id"] for a in acct.activities if a["activity_type"] == kind
           and (sub_type is None or a.get("activity_sub_type") == sub_type)}
    if not ids:
        return [f"{acct.name}: the simulator posted no {kind} (scenario broken)"]
    rows = [r for r in acct.raw_rows if r["activity_id"] in ids]
    out = []
    if len({r["activity_id"] for r in rows}) != len(ids):
        out.append(f"{acct.name}: {len(ids) - len(rows)} of {len(ids)} {kind} activities not stored")
    out += [f"{acct.name}: {kind} {r['activity_id']} stored with parse error {r['parse_error']!r}"
            for r in rows if r["parse_error"]]
    return out


def verdict(world: World, problems: list[str], *accounts: Account) -> None:
    notes = [f"{a.name}: {a.caught_up}" for a in accounts if a.caught_up]
    assert not problems, "\n".join(problems + notes)


# kind -> (families in A, families in B, extra checks)
Extra = Callable[[World], list[str]]
KINDS: dict[str, tuple[list[str], list[str], list[tuple[str, str | None]]]] = {
    "forward_split": (["NVDA"], ["NVDA"], [("SPLIT", "FSPLIT")]),
    "reverse_split_cash_in_lieu": (["REV"], ["REV"], [("SPLIT", "RSPLIT"), ("CIL", None)]),
    "name_change": (["OLDN", "NEWN"], ["OLDN", "NEWN"], [("NC", None)]),
    "spinoff": (["PAR", "CHILD"], ["PAR", "CHILD"], [("SPIN", None)]),
    "stock_merger": (["TGT1", "ACQ"], ["TGT1", "ACQ"], [("MA", None)]),
    "cash_merger": (["TGT2"], [], [("MA", None)]),
    "stock_and_cash_merger": (["TGT3", "ACQB"], ["TGT3", "ACQB"], [("MA", None)]),
    "reorganisation": (["ROLD", "RNEW"], ["ROLD", "RNEW"], [("REORG", None)]),
    "worthless_removal": (["DEAD"], [], [("REORG", "WRM")]),
    "dividend_with_withholding": (["DIVY"], [], [("DIV", None), ("DIVNRA", None)]),
    "sell_short": (["SHRT"], ["SHRT"], []),
}


CASH_KINDS = frozenset({"reverse_split_cash_in_lieu", "cash_merger", "stock_and_cash_merger", "dividend_with_withholding"})


@pytest.mark.parametrize("kind", list(KINDS))
def test_equity_event_books_match_the_broker(world: World, kind: str) -> None:
    fam_a, fam_b, stored = KINDS[kind]
    problems: list[str] = []
    for acct, fam in ((world.a, fam_a), (world.b, fam_b)):
        if fam:
            problems += check_positions(acct, fam) + check_realized(acct, fam)
    for code, sub in stored:
        problems += check_stored(world.a, code, sub)
    if kind == "sell_short":
        for acct in (world.a, world.b):
            if not any(r["activity_type"] == "FILL" and r["symbol"] == "SHRT" and r["side"] == "sell_short"
                       for r in acct.raw_rows):
                problems.append(f"{acct.name}: no stored SHRT fill with side sell_short")
        row = world.b.open_rows.get("SHRT")
        if row is not None and row["side"] != "short":
            problems.append(f"{world.b.name}: SHRT open as {row['side']!r}, the broker's position is short")
    if kind == "dividend_with_withholding" and any(r["symbol"] == "DIVY" for r in world.a.closed_rows):
        problems.append(f"{world.a.name}: a dividend closed a DIVY round trip")
    if kind in CASH_KINDS:  # the event's own cash (cash in lieu, merger cash, dividend, withholding) booked
        problems += check_cash_ledger(world.a)
    problems += check_equity(world.a) + (check_equity(world.b) if fam_b else [])
    verdict(world, problems, world.a, world.b)


def _option_family(world: World, kind: str) -> list[str]:
    c = world.scenario.contracts
    return {"option_expiry": [c.expiring_otm_call], "option_exercise": [c.exercised_call, "OPU"],
            "option_assignment": [c.assigned_call, "OPV"], "cash_settled_option": [c.cash_settled_put]}[kind]


@pytest.mark.parametrize(("kind", "code"), [("option_expiry", "OPEXP"), ("option_exercise", "OPEXC"),
                                        ("option_assignment", "OPASN"), ("cash_settled_option", "OPCSH")])
def test_option_event_books_match_the_broker(world: World, kind: str, code: str) -> None:
    fam = _option_family(world, kind)
    problems = check_positions(world.b, fam) + check_realized(world.b, fam) + check_stored(world.b, code)
    if code in ("OPEXC", "OPASN"):
        problems += check_stored(world.b, "OPTRD")
    contract = fam[0]
    if not any(r["symbol"] == contract for r in world.b.closed_rows):
        problems.append(f"{world.b.name}: no round trip for {contract} after {code}")
    problems += check_equity(world.b)
    verdict(world, problems, world.b)


def test_crypto_fee_in_the_asset_under_both_spellings(world: World) -> None:
    b = world.b
    problems = check_positions(b, ["BTC/USD"]) + check_realized(b, ["BTC/USD"]) + check_stored(b, "CFEE")
    raw = b.broker.get("/v2/positions")
    if not any(p["symbol"] == "BTCUSD" for p in raw):
        problems.append("the broker no longer spells the position BTCUSD (scenario broken)")
    if "BTCUSD" in b.open_rows:
        problems.append(f"{b.name}: the book keeps the position under BTCUSD, not the canonical BTC/USD")
    problems += check_equity(b)
    verdict(world, problems, b)


def test_crypto_dust_is_not_an_open_position_and_the_coin_fee_reaches_the_trip(world: World) -> None:
    b = world.b
    problems = check_positions(b, ["ETH/USD"]) + check_realized(b, ["ETH/USD"])
    held = b.positions.get("ETH/USD")
    if held is None or not Decimal(0) < held.qty < DUST:
        problems.append(f"the broker should hold ETH dust, holds {held} (scenario broken)")
    trips = [r for r in b.closed_rows if r["symbol"] == "ETH/USD"]
    asset_fee = b.ledger["ETH/USD"].asset_fee_cost
    fees = sum((money(r["fees"]) for r in trips), Decimal(0))
    if not trips:
        problems.append(f"{b.name}: no ETH/USD round trip after selling all but dust")
    elif fees < asset_fee - CENT:
        problems.append(f"{b.name}: ETH/USD trip fees {fees}, the coin fee alone cost {asset_fee.quantize(CENT)}")
    problems += check_equity(b)
    verdict(world, problems, b)


def test_regulatory_fees_posted_at_the_end_of_the_day_reach_the_round_trips(world: World) -> None:
    a = world.a
    problems = check_stored(a, "FEE")
    lines = fee_lines(a.activities)
    if not all(line["id"].startswith(line["date"].replace("-", "") + "000000000::") for line in lines):
        problems.append("the simulator's FEE lines are not date-only (scenario broken)")
    by_symbol: dict[str, Decimal] = {}
    for line in lines:
        by_symbol[line["symbol"]] = by_symbol.get(line["symbol"], Decimal(0)) - Decimal(line["net_amount"])
    for sym, charged in sorted(by_symbol.items()):
        if sym in a.positions:
            continue  # fees of an open position are not in a round trip yet
        trips = [r for r in a.closed_rows if r["symbol"] == sym]
        got = sum((money(r["fees"]) for r in trips), Decimal(0))
        if abs(got - charged) > CENT:
            problems.append(f"{a.name} {sym}: round-trip fees {got}, the broker charged {charged} (REG+TAF)")
    problems += check_cash_ledger(a) + check_equity(a)
    verdict(world, problems, a)


def test_a_canceled_activity_changes_neither_cash_nor_deposits(world: World) -> None:
    a = world.a
    canceled = [x for x in a.activities if x.get("status") == "canceled"]
    problems = [] if canceled else ["the simulator posted no canceled activity (scenario broken)"]
    if canceled and not any(r["activity_id"] == canceled[0]["id"] for r in a.raw_rows):
        problems.append(f"{a.name}: the canceled CSD is not stored")
    deposits = executed_deposits(a.activities)
    if a.equity_row is None or money(a.equity_row["net_deposits"]) != deposits:
        got = None if a.equity_row is None else a.equity_row["net_deposits"]
        problems.append(f"{a.name}: net deposits {got} in equity_full, executed deposits at the broker {deposits}")
    problems += check_cash_ledger(a) + check_equity(a)
    verdict(world, problems, a)


def test_an_unknown_future_activity_type_still_books_its_cash(world: World) -> None:
    a = world.a
    problems: list[str] = []
    if not any(r["activity_type"] == "ZZNEW" for r in a.raw_rows):
        problems.append(f"{a.name}: the ZZNEW activity is not stored")
    problems += check_cash_ledger(a) + check_equity(a)
    verdict(world, problems, a)


def test_the_dashboard_queries_serve_the_same_books(world: World) -> None:
    from core.settings import Settings
    from dashboard.queries import ReadModel

    model = ReadModel(Settings(postgresql_live_conn_string=world.stack.dsn), world.stack.dsn)
    problems: list[str] = []
    try:
        for acct in (world.a, world.b):
            shown: dict[str, Any] = {r["symbol"]: r for r in model.open_positions(acct.slug)}
            if sorted(shown) != sorted(acct.open_rows):
                problems.append(f"{acct.name}: the positions grid shows {sorted(shown)}, the table {sorted(acct.open_rows)}")
            for sym, row in acct.open_rows.items():
                if sym in shown and abs(float(shown[sym]["cost_basis"]) - float(row["cost_basis"])) > 0.005:
                    problems.append(f"{acct.name} {sym}: grid cost {shown[sym]['cost_basis']}, table {row['cost_basis']}")
            closed = model.closed_pl(acct.slug)
            table_net = float(sum((money(r["net_pl"]) for r in acct.closed_rows), Decimal(0)))
            if abs(float(closed["net_pl"].sum()) - table_net) > 0.005 or len(closed) != len(acct.closed_rows):
                problems.append(f"{acct.name}: closed P&L query {closed['net_pl'].sum()} over {len(closed)} trips, "
                                f"table {table_net} over {len(acct.closed_rows)}")
            problems += check_positions(acct, sorted(set(acct.positions) | set(acct.open_rows)))
    finally:
        model.dispose()
    verdict(world, problems, world.a, world.b)
