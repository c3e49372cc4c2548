"""One stack for the whole folder: embedded PostgreSQL, the simulator, ``python -m workers all``
(:mod:`bench.stack`); the day of :mod:`tests.e2e_real_accounts.scenario` is traded once, then the
tests read the broker's truth and the product's tables and compare.

"Caught up" is read from the database, never from a clock: every activity the broker lists is stored
by the ingester, the manager's heartbeat says it has booked up to the newest one, and its derived
tables (open positions, round trips, the latest equity snapshot after that) stop changing. The
deadlines below are liveness bounds; a test asserts on values, never on how long anything took.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from bench.stack import Stack, StackConfig
from core.destinations import closed_trades_table, equity_table, open_trades_table
from tests.e2e_real_accounts import scenario
from tests.e2e_real_accounts.ledger import Broker, BrokerPosition, build_ledger

INGEST_DEADLINE_S = 75.0  # the ingester's own backfill pass runs every 60 s: it may be the one that finds a line
SETTLE_DEADLINE_S = 30.0
STABLE_READS = 4  # identical reads of the derived tables in a row, 0.5 s apart


@dataclass(slots=True)
class Account:
    """One destination: the broker's truth and the product's tables, read once the manager caught up."""

    name: str
    slug: str
    broker: Broker
    activities: list[dict[str, Any]] = field(default_factory=list)
    positions: dict[str, BrokerPosition] = field(default_factory=dict)
    account: dict[str, Any] = field(default_factory=dict)
    open_rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    closed_rows: list[dict[str, Any]] = field(default_factory=list)
    equity_row: dict[str, Any] | None = None
    raw_rows: list[dict[str, Any]] = field(default_factory=list)
    manager: dict[str, Any] = field(default_factory=dict)  # the manager heartbeat's details
    caught_up: str = ""  # empty, or what did not converge (shown in every failure)

    @property
    def ledger(self) -> Any:
        return build_ledger(self.activities)

    @property
    def unstored(self) -> list[dict[str, Any]]:
        """Broker activities the ingester never stored."""
        stored = {r["activity_id"] for r in self.raw_rows}
        return [a for a in self.activities if a["id"] not in stored]


@dataclass(slots=True)
class World:
    stack: Stack
    scenario: scenario.Scenario
    a: Account
    b: Account


def _rows(stack: Stack, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    from core.db import connect

    conn = connect(stack.dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql, params or None)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        conn.close()


def read_tables(stack: Stack, acct: Account) -> None:
    slug = acct.slug
    acct.open_rows = {r["symbol"]: r for r in _rows(
        stack, f'SELECT symbol, side, qty, avg_entry_price, cost_basis, market_value, broker_qty, qty_mismatch, updated_at '
               f'FROM public."{open_trades_table(slug)}" ORDER BY symbol')}
    acct.closed_rows = _rows(stack, f'SELECT trade_id, symbol, direction, qty, gross_pl, fees, net_pl, exit_time '
                                    f'FROM public."{closed_trades_table(slug)}" ORDER BY exit_time, trade_id')
    eq = _rows(stack, f'SELECT ts, equity, cash, net_deposits, unrealized_pl FROM public."{equity_table(slug)}" '
                      f'ORDER BY ts DESC LIMIT 1')
    acct.equity_row = eq[0] if eq else None


def _fingerprint(acct: Account) -> str:
    opened = sorted((s, str(r["qty"]), str(r["cost_basis"]), str(r["market_value"])) for s, r in acct.open_rows.items())
    closed = sorted((r["trade_id"], str(r["gross_pl"]), str(r["fees"])) for r in acct.closed_rows)
    eq = acct.equity_row
    return json.dumps([opened, closed, None if eq is None else str(eq["equity"])])


def _destination_key(stack: Stack, acct: Account) -> str:
    """How the ingester names this destination in the raw tables (slug or name)."""
    rows = _rows(stack, "SELECT DISTINCT destination FROM account_activities.activities")
    keys = {r["destination"] for r in rows}
    return acct.slug if acct.slug in keys else acct.name


def _store_rows(stack: Stack, acct: Account) -> set[str]:
    """Reads what the ingester stored for ``acct``; returns the broker's ids still missing."""
    key = _destination_key(stack, acct)
    acct.raw_rows = _rows(stack, "SELECT activity_id, activity_type, symbol, side, parse_error, seq, ingested_at "
                                 "FROM account_activities.activities WHERE destination = %s ORDER BY seq", (key,))
    return {a["id"] for a in acct.activities} - {r["activity_id"] for r in acct.raw_rows}


def _wait_ingested(stack: Stack, accounts: list[Account]) -> None:
    """Until every broker activity of every account is stored (one deadline for all accounts)."""
    deadline = time.monotonic() + INGEST_DEADLINE_S
    missing = {a.name: _store_rows(stack, a) for a in accounts}
    while any(missing.values()) and time.monotonic() < deadline:
        time.sleep(0.25)
        missing = {a.name: _store_rows(stack, a) for a in accounts}
    for acct in accounts:
        if missing[acct.name]:
            gone = Counter(f"{a['activity_type']} dated {a.get('date') or a.get('transaction_time', '')[:10]}"
                           f"{' (date-only)' if 'transaction_time' not in a else ''}"
                           for a in acct.activities if a["id"] in missing[acct.name])
            cash = sum((Decimal(a.get("net_amount") or "0") for a in acct.activities
                        if a["id"] in missing[acct.name] and a["activity_type"] != "FILL"), Decimal(0))
            acct.caught_up += (f"the ingester never stored {len(missing[acct.name])} broker activities: "
                               + ", ".join(f"{n} x {what}" for what, n in sorted(gone.items()))
                               + f" (their cash: {cash}); ")


def _manager_seq(stack: Stack, acct: Account) -> int:
    """How far the manager has booked: its heartbeat's ``last_seq`` or its checkpoint's, whichever is further."""
    key = _destination_key(stack, acct)
    rows = _rows(stack, "SELECT details FROM account_activities.heartbeats WHERE service = 'manager' "
                        "AND destination IN (%s, %s)", (key, acct.slug))
    seqs = [int((r["details"] or {}).get("last_seq") or 0) for r in rows if isinstance(r["details"], dict)]
    seqs += [int(r["last_seq"]) for r in _rows(stack, "SELECT last_seq FROM public.ch_fifo_state WHERE slug = %s",
                                                 (acct.slug,))]
    return max(seqs, default=0)


def _newest_line_seq(acct: Account) -> int:
    """The newest stored non-fill line (a REST fill may only confirm the stream's provisional one,
    which the manager books under its own seq, so fills are left to the stability check)."""
    return max((int(r["seq"]) for r in acct.raw_rows if r["activity_type"] != "FILL"), default=0)


def _manager_details(stack: Stack, acct: Account) -> dict[str, Any]:
    rows = _rows(stack, "SELECT details FROM account_activities.heartbeats WHERE service = 'manager' "
                        "AND destination IN (%s, %s) ORDER BY updated_at DESC LIMIT 1",
                 (_destination_key(stack, acct), acct.slug))
    return dict(rows[0]["details"] or {}) if rows and isinstance(rows[0]["details"], dict) else {}


def _settled(stack: Stack, acct: Account, state: dict[str, Any]) -> bool:
    """One poll: has the manager booked the newest stored line, and have its tables stopped changing,
    with an equity snapshot taken after the last row was stored?"""
    if _manager_seq(stack, acct) < _newest_line_seq(acct):
        return False
    stored_at = max((r["ingested_at"] for r in acct.raw_rows), default=None)
    read_tables(stack, acct)
    eq = acct.equity_row
    fresh = eq is not None and (stored_at is None or eq["ts"].timestamp() > stored_at.timestamp() + 1.0)
    now = _fingerprint(acct)
    state["same"] = state.get("same", 0) + 1 if (now == state.get("previous") and fresh) else 0
    state["previous"] = now
    return bool(state["same"] >= STABLE_READS)


def _wait_settled(stack: Stack, accounts: list[Account]) -> None:
    deadline = time.monotonic() + SETTLE_DEADLINE_S
    states: dict[str, dict[str, Any]] = {a.name: {} for a in accounts}
    pending = list(accounts)
    while pending and time.monotonic() < deadline:
        pending = [a for a in pending if not _settled(stack, a, states[a.name])]
        time.sleep(0.5)
    for acct in pending:
        read_tables(stack, acct)
        newest = _newest_line_seq(acct)
        booked = _manager_seq(stack, acct)
        acct.caught_up += ("the manager's tables did not settle" if booked >= newest else
                           f"the manager booked up to seq {booked}, the newest stored line is {newest}")
        acct.caught_up += f" within {SETTLE_DEADLINE_S:.0f}s; "


def _load_broker(acct: Account) -> None:
    acct.activities = acct.broker.activities()
    acct.positions = acct.broker.positions()
    acct.account = acct.broker.account()


@pytest.fixture(scope="package")
def world() -> Iterator[World]:
    config = StackConfig(destinations=2, symbols=scenario.SYMBOLS_ARG, web="none",
                         sim_args=("--clock-offset-s", str(scenario.CLOCK_OFFSET_S)),
                         env={"SNAPSHOT_SEC": "1", "EQUITY_UPDATE_INTERVAL_S": "1", "CLOSED_SYNC_SEC": "1",
                              "HEARTBEAT_SEC": "1"})
    with Stack(config) as stack:
        stack.wait_ready(INGEST_DEADLINE_S)
        done = scenario.run(stack)
        accounts = []
        for i, (name, slug) in enumerate(zip(stack.names, stack.slugs, strict=True)):
            acct = Account(name, slug, Broker(stack.rest_url, f"PKBENCH{i:011d}", f"bench-secret-{i:06d}"))
            _load_broker(acct)
            accounts.append(acct)
        _wait_ingested(stack, accounts)
        _wait_settled(stack, accounts)
        for acct in accounts:
            _load_broker(acct)  # prices are pinned: the broker's marks are those the product last saw
            acct.manager = _manager_details(stack, acct)
        yield World(stack, done, accounts[0], accounts[1])
        for name in ("simulator", "workers"):
            errors = stack.error_lines(name)
            if errors:
                print(f"\n{name} logged {len(errors)} error lines; last ones:\n" + "\n".join(errors[-10:]))


def money(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)
