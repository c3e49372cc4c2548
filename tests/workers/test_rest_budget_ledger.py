"""The REST budget across processes (workers/alpaca/budget_ledger.py): two OS processes spending
one destination's window through the real PostgreSQL ledger never start more than the limit in
any window together; priority still orders the calls of a process; the reserve holds across
processes; with the database down each process keeps to its local window and says so."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import psycopg2
import pytest

from core import db
from core.destinations import Destination
from core.settings import Settings
from tests.simulator_fixtures import SimHandle
from workers.alpaca import BrokerClient
from workers.alpaca.budget import BudgetWindow, Priority, RequestBudget
from workers.alpaca.budget_ledger import DbLedger, LedgerAnswer, LedgerConnection, slot_free_in_s

ROOT = Path(__file__).resolve().parents[2]
URL = "http://broker.test"

# A child process: one budget on the ledger, 30 calls at CONFIRM once the parent says go; prints
# its stats as JSON. Limit 600/min over a 2 s window = 20 calls a window.
CHILD = """
import asyncio, json, sys
from workers.alpaca.budget import Priority, RequestBudget
from workers.alpaca.budget_ledger import DbLedger, LedgerConnection

async def main(dsn, holder):
    ledger = DbLedger(LedgerConnection(dsn), "acct", "http://broker.test", holder=holder)
    budget = RequestBudget(budget_per_min=600, catchup_per_min=600, window_s=2.0, ledger=ledger)
    assert await ledger.look(2.0) is not None  # connected before the race starts
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for _ in range(30):
        await budget.acquire(Priority.CONFIRM)
    await budget.aclose()
    print(json.dumps(budget.window.as_dict(0.0) | {"calls_total": budget.window.calls_total}), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.fixture
def ledger_dsn(db_dsn: str, settings: Settings) -> str:
    """The per-test database with the migrations applied (ch_rest_calls, ch_rest_take)."""
    conn = psycopg2.connect(db_dsn)
    try:
        db.migrate(conn, settings)
        conn.commit()
    finally:
        conn.close()
    return db_dsn


def ledger_rows(dsn: str) -> list[tuple[str, object, int]]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT holder, started_at, priority FROM public.ch_rest_calls ORDER BY started_at")
            return list(cur.fetchall())
    finally:
        conn.close()


def most_in_any_window(starts: list, window: timedelta) -> int:  # type: ignore[type-arg]
    """The most start times (sorted) inside any half-open window of that length."""
    best, lo = 0, 0
    for hi, t in enumerate(starts):
        while starts[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def test_two_processes_together_never_start_more_than_the_limit_in_a_window(ledger_dsn: str) -> None:
    # Arrange: two real OS processes, each alone allowed 20 calls a 2 s window, each wanting 30
    children = [subprocess.Popen([sys.executable, "-c", CHILD, ledger_dsn, f"proc{i}"], cwd=ROOT, text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE) for i in (1, 2)]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        # Act: both start at once
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=120)[0] for child in children]
    finally:
        for child in children:
            child.kill()
    stats = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    rows = ledger_rows(ledger_dsn)
    # Assert: all 60 calls made, 30 each, none outside the ledger, never 21 in one window together
    assert [s["calls_total"] for s in stats] == [30, 30]
    assert [s["ledger_fallbacks"] for s in stats] == [0, 0]
    assert sorted(holder for holder, _, _ in rows) == ["proc1"] * 30 + ["proc2"] * 30
    assert most_in_any_window([t for _, t, _ in rows], timedelta(seconds=2)) == 20
    assert max(s["max_shared_calls_in_window"] for s in stats) == 20


async def test_priority_orders_a_process_s_waiters_while_another_process_fills_the_window(ledger_dsn: str) -> None:
    # Arrange: another process (its own connection and holder) has taken the whole window
    other = DbLedger(LedgerConnection(ledger_dsn), "acct", URL, holder="other")
    mine = DbLedger(LedgerConnection(ledger_dsn), "acct", URL, holder="mine")
    budget = RequestBudget(budget_per_min=600, catchup_per_min=600, window_s=2.0, ledger=mine)
    for _ in range(20):
        answer = await other.take(2.0, 20, int(Priority.CONFIRM))
        assert answer is not None
        assert answer.taken
    served: list[Priority] = []

    async def call(priority: Priority) -> None:
        await budget.acquire(priority)
        served.append(priority)

    # Act: the lowest class asks first, the highest last
    await asyncio.gather(*(call(p) for p in (Priority.RECONCILE, Priority.CONFIRM, Priority.GAP_REPAIR)))
    # Assert: served by priority once the other process's calls left the window
    assert served == [Priority.GAP_REPAIR, Priority.CONFIRM, Priority.RECONCILE]
    assert [holder for holder, _, _ in ledger_rows(ledger_dsn)] == ["other"] * 20 + ["mine"] * 3
    await other.close()
    await budget.aclose()


async def test_the_reserve_holds_across_processes_and_the_health_figures_count_every_process(ledger_dsn: str) -> None:
    # Arrange: 20 a minute: reconciliation may take 16, the last 4 are left to repairs and confirmations
    other = DbLedger(LedgerConnection(ledger_dsn), "acct", URL, holder="other")
    budget = RequestBudget(budget_per_min=20, catchup_per_min=60,
                           ledger=DbLedger(LedgerConnection(ledger_dsn), "acct", URL, holder="mine"))
    reconcile_limit = budget.window.limit_for(Priority.RECONCILE, 0.0)
    for _ in range(reconcile_limit):
        answer = await other.take(60.0, reconcile_limit, int(Priority.RECONCILE))
        assert answer is not None
        assert answer.taken
    assert budget.ledger is not None
    # Act
    refused = await budget.ledger.take(60.0, reconcile_limit, int(Priority.RECONCILE))
    await budget.acquire(Priority.CONFIRM)
    shown = budget.as_dict()
    # Assert: this process's reconciliation is refused by the other's 16 calls; a confirmation is not
    assert reconcile_limit == 16
    assert refused is not None
    assert (refused.taken, len(refused.ages_s), refused.holders) == (False, 16, 1)
    assert (shown["calls_per_min"], shown["calls_per_min_here"], shown["headroom"], shown["processes"]) == (17, 1, 3, 2)
    assert shown["ledger"] == "shared"
    await other.close()
    await budget.aclose()


async def test_database_down_falls_back_to_the_local_window_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    # Arrange: nothing listens on port 1
    ledger = DbLedger(LedgerConnection("postgresql://postgres@127.0.0.1:1/none"), "acct", URL)
    budget = RequestBudget(budget_per_min=3, catchup_per_min=3, ledger=ledger)
    # Act
    with caplog.at_level(logging.WARNING, logger="workers.alpaca.budget_ledger"):
        for _ in range(3):
            await budget.acquire(Priority.CONFIRM)
    # Assert: the calls went on, counted as fallbacks; the local window is still the limit
    shown = budget.as_dict()
    assert (shown["ledger"], shown["ledger_fallbacks"], shown["calls_per_min"]) == ("local", 3, 3)
    assert [r.levelno for r in caplog.records if "unreachable" in r.getMessage()] == [logging.WARNING]
    assert budget.window.ready(budget.window.enqueue(Priority.GAP_REPAIR, 99), time.monotonic()) > 0


async def test_the_ledger_is_asked_again_once_the_database_answers(db_dsn: str, settings: Settings) -> None:
    # Arrange: a database without the ledger's function yet
    budget = RequestBudget(budget_per_min=20, catchup_per_min=20,
                           ledger=DbLedger(LedgerConnection(db_dsn, retry_after_s=0.0), "acct", URL))
    await budget.acquire(Priority.CONFIRM)
    assert (budget.window.ledger, budget.window.ledger_fallbacks) == ("local", 1)
    conn = psycopg2.connect(db_dsn)
    db.migrate(conn, settings)
    conn.commit()
    conn.close()
    # Act
    await budget.acquire(Priority.CONFIRM)
    # Assert: shared again, and the call is in the ledger
    assert (budget.window.ledger, budget.window.ledger_fallbacks) == ("shared", 1)
    assert len(ledger_rows(db_dsn)) == 1
    await budget.aclose()


async def test_broker_clients_of_a_process_spend_the_ledger_of_the_primary_store(
        simulator: SimHandle, settings: Settings, ledger_dsn: str) -> None:
    # Arrange: the ingester's and the manager's clients, as deployed, with the primary store configured
    acct = simulator.accounts[0]
    dest = Destination(name=acct["name"], slug="ledger_sim", key_id=acct["key_id"], secret_key=acct["secret_key"],
                       base_url=simulator.rest_url, stream_url=simulator.stream_url)
    ingester_client, manager_client = BrokerClient(dest, settings), BrokerClient(dest, settings)
    try:
        # Act
        await ingester_client.get_account()
        await manager_client.get_positions()
    finally:
        await ingester_client.close()
        await manager_client.close()
    # Assert: both calls are in the ledger under the destination
    assert ingester_client.budget is not None
    assert ingester_client.budget.window.ledger == "shared"
    assert [p for _, _, p in ledger_rows(ledger_dsn)] == [int(Priority.RECONCILE)] * 2


@pytest.mark.parametrize(("ages_s", "limit", "expected_s"), [
    ((), 20, 0.0),
    ((5.0, 1.0), 3, 0.0),            # room already
    ((50.0, 10.0, 1.0), 3, 10.0),     # full: the oldest leaves in 10 s
    ((50.0, 40.0, 10.0, 1.0), 3, 20.0),  # one over (the limit was lowered): the second oldest must leave
    ((70.0,), 1, 0.0),                # already out of the window
])
def test_slot_free_in_s(ages_s: tuple[float, ...], limit: int, expected_s: float) -> None:
    assert slot_free_in_s(ages_s, 60.0, limit) == expected_s


def test_shared_count_ages_the_ledger_snapshot_and_adds_our_later_calls() -> None:
    w = BudgetWindow(budget_per_min=20, catchup_per_min=20)
    w.observe_shared(LedgerAnswer(False, (50.0, 30.0, 5.0), 2), now=100.0)
    w.record(w.enqueue(Priority.CONFIRM, 0), 101.0)
    assert w.shared_calls(101.0) == 4     # three of the others' + ours since
    assert w.shared_calls(131.0) == 2     # two of theirs left the window
    assert w.as_dict(131.0)["processes"] == 2
