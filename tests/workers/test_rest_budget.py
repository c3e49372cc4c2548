"""The per-destination REST budget (workers/alpaca/budget.py): never exceeded, spent by priority,
lowered by the broker's headers, raised only while catching up; and the client spending it against
the simulator's rate-limit headers."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.destinations import Destination
from core.settings import Settings
from tests.simulator_fixtures import SimHandle
from workers.alpaca import BrokerClient
from workers.alpaca.budget import (
    BudgetWindow,
    Priority,
    RequestBudget,
    header_share,
    shared_budget,
    spending,
)


def window(budget: float = 20.0, catchup: float = 60.0) -> BudgetWindow:
    return BudgetWindow(budget_per_min=budget, catchup_per_min=catchup)


def spend(w: BudgetWindow, priority: Priority, now: float, seq: int = 0) -> bool:
    ticket = w.enqueue(priority, seq)
    granted = w.try_spend(ticket, now) == 0.0
    if not granted:
        w.withdraw(ticket)
    return granted


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5.0), st.sampled_from(list(Priority))), min_size=1, max_size=300),
       st.sampled_from([1.0, 20.0, 45.0]))
def test_never_more_calls_in_any_window_than_the_limit(steps: list[tuple[float, Priority]], budget: float) -> None:
    # Arrange: calls asked at random times and priorities
    w, now, granted = window(budget), 0.0, []
    # Act
    for i, (gap_s, priority) in enumerate(steps):
        now += gap_s
        if spend(w, priority, now, i):
            granted.append(now)
    # Assert: every 60 s window holds at most the limit
    limit = max(1, int(budget))
    assert all(sum(1 for t in granted if start <= t < start + 60.0) <= limit for start in granted)
    assert w.max_calls_in_window <= limit


def test_reconciliation_leaves_a_reserve_for_gap_repair_and_confirmations() -> None:
    # Arrange: 20 a minute, reconciliation may take 16
    w = window(20.0)
    # Act
    reconcile = sum(spend(w, Priority.RECONCILE, 0.0, i) for i in range(30))
    confirm = sum(spend(w, Priority.CONFIRM, 1.0, 100 + i) for i in range(30))
    # Assert
    assert (reconcile, confirm) == (16, 4)
    assert not spend(w, Priority.GAP_REPAIR, 59.0)
    assert spend(w, Priority.GAP_REPAIR, 60.0)  # the first calls left the window


def test_waiting_calls_are_served_by_priority_then_arrival() -> None:
    w = window(1.0)
    assert spend(w, Priority.RECONCILE, 0.0)
    tickets = [w.enqueue(p, i) for i, p in enumerate([Priority.RECONCILE, Priority.CONFIRM, Priority.GAP_REPAIR,
                                                      Priority.CONFIRM])]
    served: list[tuple[int, int]] = []
    now = 60.0
    while len(served) < len(tickets):
        for t in tickets:
            if t not in served and w.try_spend(t, now) == 0.0:
                served.append(t)
        now += 60.0
    assert [Priority(t[0]) for t in served] == [Priority.GAP_REPAIR, Priority.CONFIRM, Priority.CONFIRM,
                                                Priority.RECONCILE]
    assert [t[1] for t in served] == [2, 1, 3, 0]


@pytest.mark.parametrize(("limit", "remaining", "ours", "share"), [
    ("200", "200", 0, 20), ("200", "50", 0, 5), ("200", "0", 0, 1), ("200", "5", 0, 1), ("1000", "1000", 0, 20),
    ("200", "180", 20, 20),  # all of the 20 used were ours: the trader's bot took nothing
    ("200", "40", 10, 5),  # the bot took 150
    ("200", "200", 5, 20),  # never above the budget
    (None, "10", 0, None), ("abc", "1", 0, None), ("0", "5", 0, None), ("200", "-1", 0, None), ("200", "nan", 0, None),
])
def test_header_share(limit: str | None, remaining: str | None, ours: int, share: int | None) -> None:
    assert header_share(20.0, limit, remaining, ours) == share


def test_remaining_lowers_the_budget_until_the_reset() -> None:
    # Arrange: the trader's bot left 50 of 200 calls, the minute resets in 30 s
    w = window(20.0)
    # Act
    w.observe_headers({"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "50", "X-RateLimit-Reset": "1030"},
                      now=0.0, now_epoch_s=1000.0)
    # Assert: our share (5) until the reset, then the configured 20 again
    assert w.limit(10.0) == 5
    assert w.as_dict(10.0)["lowered_by_broker"] is True
    assert w.limit(31.0) == 20


def test_catching_up_raises_the_limit_only_while_it_lasts() -> None:
    w = window(20.0, 60.0)
    w.catching_up.add("gap repair")
    assert w.limit(0.0) == 60
    assert w.as_dict(0.0)["catching_up"] == ["gap repair"]
    w.catching_up.clear()
    assert w.limit(0.0) == 20


def test_a_catch_up_takes_the_same_share_of_its_raised_rate_that_the_headers_leave() -> None:
    # Arrange: every Alpaca response carries the headers; a first one where nobody else spent anything,
    # then one where the trader's bot has taken three quarters of the allowance
    w = window(20.0, 60.0)
    w.catching_up.add("gap repair")
    w.observe_headers({"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "200", "X-RateLimit-Reset": "1060"},
                      now=0.0, now_epoch_s=1000.0)
    # Assert: the raised rate holds (the plain budget's share, 20, must not cap it)
    assert w.limit(1.0) == 60
    assert w.as_dict(1.0)["lowered_by_broker"] is False
    # Act
    w.observe_headers({"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "50", "X-RateLimit-Reset": "1060"},
                      now=2.0, now_epoch_s=1002.0)
    # Assert: a quarter of each rate: 15 while catching up, 5 after it
    assert w.limit(3.0) == 15
    w.catching_up.clear()
    assert w.limit(3.0) == 5


async def test_a_waiter_goes_as_soon_as_a_catch_up_raises_the_limit() -> None:
    # Arrange: one call a minute (two while catching up), that one spent: a waiter sleeps until the
    # oldest call leaves the window, a minute from now
    budget = RequestBudget(budget_per_min=1.0, catchup_per_min=2.0, window_s=60.0)
    await budget.acquire(Priority.RECONCILE)
    waiter = asyncio.create_task(budget.acquire(Priority.GAP_REPAIR))
    await asyncio.sleep(0.05)  # the waiter's first steps: queued, then asleep
    assert budget.as_dict()["waiting"] == 1
    # Act
    with budget.catching_up("gap repair"):
        # Assert: it takes the slot the raise made (liveness bound far below the minute it would sleep)
        await asyncio.wait_for(waiter, timeout=20)
        assert budget.as_dict()["calls_per_min_here"] == 2


async def test_async_budget_serves_waiters_by_priority() -> None:
    # Arrange: one call per 0.2 s window, the window already used
    budget = RequestBudget(budget_per_min=300.0, catchup_per_min=300.0, window_s=0.2)
    await budget.acquire(Priority.RECONCILE)
    order: list[Priority] = []

    async def call(priority: Priority) -> None:
        with spending(priority):
            await budget.acquire()
        order.append(priority)

    # Act: three calls wait at once
    tasks = [asyncio.create_task(call(p)) for p in (Priority.RECONCILE, Priority.CONFIRM, Priority.GAP_REPAIR)]
    await asyncio.sleep(0)  # every call is queued before the window frees a slot
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    # Assert
    assert order == [Priority.GAP_REPAIR, Priority.CONFIRM, Priority.RECONCILE]
    assert budget.window.max_calls_in_window == 1


async def test_a_cancelled_waiter_does_not_block_the_queue() -> None:
    budget = RequestBudget(budget_per_min=300.0, catchup_per_min=300.0, window_s=0.2)
    await budget.acquire(Priority.RECONCILE)
    first = asyncio.create_task(budget.acquire(Priority.GAP_REPAIR))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.wait_for(budget.acquire(Priority.RECONCILE), 10)
    assert budget.window.calls_total == 2


async def test_client_spends_the_shared_budget_and_reads_the_simulators_headers(
        simulator: SimHandle, settings: Settings) -> None:
    # Arrange: the ingester's and the manager's clients of one destination, as in `python -m workers all`
    acct = simulator.accounts[0]
    dest = Destination(name=acct["name"], slug="budget_sim", key_id=acct["key_id"], secret_key=acct["secret_key"],
                       base_url=simulator.rest_url, stream_url=simulator.stream_url)
    ingester_client, manager_client = BrokerClient(dest, settings), BrokerClient(dest, settings)
    try:
        # Act
        await ingester_client.get_account()
        await manager_client.get_positions()
        # Assert: one budget, two calls, the simulator's 200-a-minute headers seen (our share: the full 20)
        assert ingester_client.budget is manager_client.budget
        assert ingester_client.budget is shared_budget("budget_sim", simulator.rest_url, budget_per_min=1, catchup_per_min=1)
        shown = ingester_client.budget.as_dict() if ingester_client.budget else {}
        assert (shown["calls_per_min"], shown["budget_per_min"], shown["headroom"]) == (2, 20, 18)
        assert ingester_client.budget is not None
        assert ingester_client.budget.window.header is not None
        assert ingester_client.budget.window.header.calls_per_min == 20  # only our own calls were counted
    finally:
        await ingester_client.close()
        await manager_client.close()


def test_client_without_settings_is_unbudgeted() -> None:
    dest = Destination(name="x", slug="x", key_id="k", secret_key="s", base_url="http://127.0.0.1:9")
    assert BrokerClient(dest).budget is None
