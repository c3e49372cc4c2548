"""The per-destination REST budget: how many calls a minute we take of the account's allowance.

Alpaca allows about 200 REST calls a minute per account, and the trader's own strategy spends the
same allowance with the same keys. Every REST call of a destination first takes a slot: the clients
of one process share one :class:`RequestBudget` through :func:`shared_budget`, and the processes
(ingester, manager, their replicas) share the destination's window through the database ledger
(:mod:`workers.alpaca.budget_ledger`):

- **never exceeded**: at most ``limit`` calls start in any sliding ``window_s`` (60 s), counted
  across every process that writes to the ledger; if the database is down, each process keeps to
  its own local window (logged once, counted as ``ledger_fallbacks``) rather than stop calling;
- **by priority**: waiting calls of a process are served in :class:`Priority` order (then first
  come), and the lowest class may not take the last ``RECONCILE_RESERVE_SHARE`` of the window
  (the whole destination's window: the rule holds across processes), so a gap repair or a
  confirmation that shows up finds room;
- **the limit** is ``REST_BUDGET_CALLS_PER_MIN``, raised to ``REST_CATCHUP_CALLS_PER_MIN`` only while
  a gap repair is reading full pages (``catching_up``, shown on the Health page), and lowered by the
  broker's ``X-RateLimit-Remaining``: until ``X-RateLimit-Reset`` we take at most our share
  (budget / ``X-RateLimit-Limit``) of what the trader's own calls leave (remaining plus our calls in
  the window, which the broker counted too).

:class:`BudgetWindow` is the pure part (times passed in); :class:`RequestBudget` adds the waiting.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import logging
import math
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from workers.alpaca.budget_ledger import DbLedger, LedgerAnswer, slot_free_in_s

log = logging.getLogger(__name__)

WINDOW_S = 60.0
RECONCILE_RESERVE_SHARE = 0.2
"""Share of the window that reconciliation reads leave to gap repair and confirmations."""
REFRESH_AFTER_S = 1.0
"""The figures read the ledger again (in the background) when its last answer is older than this."""


class Priority(IntEnum):
    """Who gets the next REST slot first (lower first)."""

    GAP_REPAIR = 0
    """Re-reading what the stream may have missed: start, reconnect, resync after dropped rows."""
    CONFIRM = 1
    """Reading the REST twins of provisional fills."""
    RECONCILE = 2
    """Periodic re-reads, positions, account, history: the safety net."""


request_priority: ContextVar[Priority] = ContextVar("request_priority", default=Priority.RECONCILE)
"""The priority of the REST calls made in this task (set with :func:`spending`)."""


@contextlib.contextmanager
def spending(priority: Priority) -> Iterator[None]:
    """REST calls made inside this block (in this task) take slots at ``priority``."""
    token = request_priority.set(priority)
    try:
        yield
    finally:
        request_priority.reset(token)


@dataclass(frozen=True, slots=True)
class HeaderLimit:
    """What the broker's last rate-limit headers allow us until ``until_monotonic``."""

    calls_per_min: int
    """Our share at the configured budget."""
    until_monotonic: float
    left_share: float = 1.0
    """Of the account's allowance, what the trader's own traffic leaves (0..1): a catch-up takes the
    same share of its raised rate (without it, any header would hold a catch-up to the plain budget)."""


def _allowance(limit: str | None, remaining: str | None, ours: int) -> tuple[float, float] | None:
    """``(limit, what is left of it for us: remaining + ours, at most the limit)``, or ``None`` when the
    headers say nothing usable."""
    try:
        total, left = float(limit or ""), float(remaining or "")
    except ValueError:
        return None
    if not (math.isfinite(total) and math.isfinite(left)) or total <= 0 or left < 0:
        return None
    return total, min(total, left + ours)


def left_share(limit: str | None, remaining: str | None, ours: int = 0) -> float | None:
    """What the trader's own traffic leaves of the allowance (0..1); ``ours`` are our calls the broker
    counted too. Pure."""
    allowance = _allowance(limit, remaining, ours)
    return None if allowance is None else allowance[1] / allowance[0]


def header_share(budget_per_min: float, limit: str | None, remaining: str | None, ours: int = 0) -> int | None:
    """Our share of what the trader's own traffic leaves: ``(remaining + ours) × budget / limit``
    (at least 1); ``None`` when the headers say nothing usable. With no other traffic that is the
    whole budget. Pure."""
    allowance = _allowance(limit, remaining, ours)
    return None if allowance is None else max(1, math.floor(allowance[1] * budget_per_min / allowance[0]))


class BudgetWindow:
    """The sliding-window accounting of one destination's calls (pure: every time is passed in)."""

    def __init__(self, *, budget_per_min: float, catchup_per_min: float, window_s: float = WINDOW_S) -> None:
        self.budget_per_min = budget_per_min
        self.catchup_per_min = max(catchup_per_min, budget_per_min)
        self.window_s = window_s
        self.catching_up: set[str] = set()
        """Why the limit is raised now (empty: it is not)."""
        self.header: HeaderLimit | None = None
        self._calls: collections.deque[float] = collections.deque()
        self._waiting: list[tuple[int, int]] = []
        self.calls_total = 0
        self.rate_limited = 0
        self.waited_s = 0.0
        self.max_calls_in_window = 0
        """The most calls that ever started within one window: never above the limit then in force."""
        self._shared: collections.deque[float] = collections.deque()
        self.shared_at: float | None = None
        """When the ledger last answered (``None``: never)."""
        self.holders = 0
        """Processes whose calls are in the destination's window (last ledger answer)."""
        self.max_shared_calls_in_window = 0
        """The same across processes, as the ledger counted them when a slot was taken."""
        self.ledger: str | None = None
        """``"shared"``: the ledger counts every process; ``"local"``: it is down; ``None``: no ledger."""
        self.ledger_fallbacks = 0
        """Calls that took a local slot because the ledger could not be asked."""

    def limit(self, now: float) -> int:
        """Calls allowed in the window now (the header share applies until the broker's reset)."""
        base = self.catchup_per_min if self.catching_up else self.budget_per_min
        allowed = math.floor(base * self.window_s / 60.0)
        if self.header is not None and now < self.header.until_monotonic:
            share = (max(1, math.floor(self.header.left_share * base)) if self.catching_up
                     else self.header.calls_per_min)
            allowed = min(allowed, share)
        return max(1, allowed)

    def limit_for(self, priority: Priority, now: float) -> int:
        total = self.limit(now)
        if priority is Priority.RECONCILE:
            return max(1, total - math.ceil(total * RECONCILE_RESERVE_SHARE))
        return total

    def calls_in_window(self, now: float) -> int:
        while self._calls and self._calls[0] <= now - self.window_s:
            self._calls.popleft()
        return len(self._calls)

    def enqueue(self, priority: Priority, seq: int) -> tuple[int, int]:
        ticket = (int(priority), seq)
        heapq.heappush(self._waiting, ticket)
        return ticket

    def withdraw(self, ticket: tuple[int, int]) -> None:
        with contextlib.suppress(ValueError):
            self._waiting.remove(ticket)
            heapq.heapify(self._waiting)

    def ready(self, ticket: tuple[int, int], now: float) -> float:
        """0.0 if ``ticket`` may take a slot now (it heads the queue and the local window has room),
        else how long to wait before asking again (``inf``: until another waiter moves)."""
        if not self._waiting or self._waiting[0] != ticket:
            return math.inf
        if self.calls_in_window(now) < self.limit_for(Priority(ticket[0]), now):
            return 0.0
        # The oldest call leaving the window frees a slot (unless the limit dropped further).
        return max(0.001, self._calls[0] + self.window_s - now) if self._calls else self.window_s

    def record(self, ticket: tuple[int, int], now: float) -> None:
        """``ticket``'s call starts now: out of the queue, into the window."""
        used = self.calls_in_window(now)
        self.withdraw(ticket)
        self._calls.append(now)
        self.calls_total += 1
        self.max_calls_in_window = max(self.max_calls_in_window, used + 1)

    def try_spend(self, ticket: tuple[int, int], now: float) -> float:
        """Take a slot for ``ticket`` (0.0) or say how long to wait before asking again (``inf``:
        until another waiter moves; the caller is woken). Local window only."""
        wait = self.ready(ticket, now)
        if wait == 0.0:
            self.record(ticket, now)
        return wait

    def observe_shared(self, answer: LedgerAnswer, now: float) -> None:
        """The destination's window as the ledger counted it (every process's calls) at ``now``."""
        self._shared = collections.deque(now - age for age in answer.ages_s)
        self.shared_at = now
        self.holders = answer.holders
        self.ledger = "shared"
        if answer.taken:
            self.max_shared_calls_in_window = max(self.max_shared_calls_in_window, len(answer.ages_s))

    def shared_calls(self, now: float) -> int:
        """Calls of every process in the window now: the ledger's last count, less the calls that
        left the window since, plus ours after it (never fewer than ours)."""
        local = self.calls_in_window(now)
        if self.shared_at is None:
            return local
        while self._shared and self._shared[0] <= now - self.window_s:
            self._shared.popleft()
        since = sum(1 for t in self._calls if t > self.shared_at)
        return max(local, len(self._shared) + since)

    def observe_headers(self, headers: Mapping[str, str], now: float, now_epoch_s: float) -> None:
        """Lower the limit to our share of what the account has left, until its reset."""
        limit, remaining, ours = headers.get("X-RateLimit-Limit"), headers.get("X-RateLimit-Remaining"), self.shared_calls(now)
        share, left = header_share(self.budget_per_min, limit, remaining, ours), left_share(limit, remaining, ours)
        if share is None or left is None:
            return
        try:
            reset_in_s = float(headers.get("X-RateLimit-Reset") or "") - now_epoch_s
        except ValueError:
            reset_in_s = self.window_s
        reset_in_s = min(max(reset_in_s, 1.0), self.window_s)
        self.header = HeaderLimit(share, now + reset_in_s, left)

    def as_dict(self, now: float) -> dict[str, Any]:
        """Heartbeat ``details.budget``: what the Health page shows."""
        used, limit = self.shared_calls(now), self.limit(now)
        lowered = self.header is not None and now < self.header.until_monotonic and self.header.calls_per_min < (
            math.floor(self.budget_per_min * self.window_s / 60.0))
        return {"calls_per_min": used, "budget_per_min": limit, "headroom": max(0, limit - used),
                "configured_per_min": self.budget_per_min, "catching_up": sorted(self.catching_up),
                "lowered_by_broker": lowered, "rate_limited": self.rate_limited, "calls_total": self.calls_total,
                "waiting": len(self._waiting), "waited_s": round(self.waited_s, 3),
                "max_calls_in_window": self.max_calls_in_window, "calls_per_min_here": self.calls_in_window(now),
                "processes": self.holders, "ledger": self.ledger, "ledger_fallbacks": self.ledger_fallbacks,
                "max_shared_calls_in_window": self.max_shared_calls_in_window}


class RequestBudget:
    """One destination's budget shared by every client of the process and, with a ``ledger``, by
    every process (see the module docstring)."""

    def __init__(self, *, budget_per_min: float, catchup_per_min: float, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic, ledger: DbLedger | None = None) -> None:
        self.window = BudgetWindow(budget_per_min=budget_per_min, catchup_per_min=catchup_per_min, window_s=window_s)
        self._clock = clock
        self._seq = itertools.count()
        # One event per waiting call, made in the caller's loop: the budget outlives any one loop.
        self._wakers: set[asyncio.Event] = set()
        self.ledger = ledger
        self._refreshing: set[asyncio.Task[None]] = set()
        if ledger is not None:
            self.window.ledger = "shared"

    def _wake_all(self) -> None:
        for event in self._wakers:
            event.set()

    async def acquire(self, priority: Priority | None = None) -> None:
        """Wait for a slot at ``priority`` (default: the task's :data:`request_priority`)."""
        prio = request_priority.get() if priority is None else priority
        started = self._clock()
        ticket = self.window.enqueue(prio, next(self._seq))
        woken = asyncio.Event()
        self._wakers.add(woken)
        try:
            while (wait := await self._try_take(ticket, prio)) > 0:
                woken.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), timeout=None if math.isinf(wait) else wait)
        except BaseException:
            self.window.withdraw(ticket)
            raise
        finally:
            self._wakers.discard(woken)
            self._wake_all()  # the next waiter may be at the head now
        self.window.waited_s += self._clock() - started

    async def _try_take(self, ticket: tuple[int, int], prio: Priority) -> float:
        """Take a slot (0.0) or say how long to wait: the head of the local queue, once the local
        window has room, asks the ledger (one round trip) whether the destination's has too."""
        wait = self.window.ready(ticket, self._clock())
        if wait > 0 or self.ledger is None:
            if wait == 0:
                self.window.record(ticket, self._clock())
            return wait
        limit = self.window.limit_for(prio, self._clock())
        answer = await self.ledger.take(self.window.window_s, limit, int(prio))
        now = self._clock()
        if answer is None:  # the database is down: keep to the local window rather than stop
            self.window.ledger = "local"
            self.window.ledger_fallbacks += 1
            self.window.record(ticket, now)
            return 0.0
        self.window.observe_shared(answer, now)
        if answer.taken:
            self.window.record(ticket, now)
            return 0.0
        # Another process may take the slot that frees first: then we ask again.
        return max(0.005, slot_free_in_s(answer.ages_s, self.window.window_s, limit))

    async def refresh(self) -> None:
        """Read the destination's window from the ledger without taking a slot (for the figures)."""
        if self.ledger is None:
            return
        answer = await self.ledger.look(self.window.window_s)
        if answer is not None:
            self.window.observe_shared(answer, self._clock())

    def _refresh_soon(self) -> None:
        """The heartbeat reads :meth:`as_dict` synchronously: refresh the other processes' calls in
        the background so the next beat shows them (ours are always counted)."""
        at = self.window.shared_at
        if self.ledger is None or self.ledger.down or self._refreshing or (
                at is not None and self._clock() - at < REFRESH_AFTER_S):
            return
        try:
            task = asyncio.get_running_loop().create_task(self.refresh())
        except RuntimeError:  # no loop: a tool printing the figures
            return
        self._refreshing.add(task)
        task.add_done_callback(self._refreshing.discard)

    async def aclose(self) -> None:
        """Close the ledger's connection (the next call opens it again)."""
        if self.ledger is not None:
            await self.ledger.close()

    @contextlib.contextmanager
    def catching_up(self, reason: str) -> Iterator[None]:
        """Raise the limit to the catch-up rate while this block runs (visible in the heartbeat)."""
        self.window.catching_up.add(reason)
        # a waiter at the head sleeps until the oldest call leaves the window (up to a minute): with the
        # limit raised it may go now (seen: an equity seed held 58 s behind a sleeping head)
        self._wake_all()
        try:
            yield
        finally:
            self.window.catching_up.discard(reason)

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Learn from one response: rate-limit headers, and a 429 (counted)."""
        if status == 429:
            self.window.rate_limited += 1
        self.window.observe_headers(headers, self._clock(), time.time())

    def as_dict(self) -> dict[str, Any]:
        self._refresh_soon()
        return self.window.as_dict(self._clock())


_SHARED: weakref.WeakValueDictionary[tuple[str, str], RequestBudget] = weakref.WeakValueDictionary()


def shared_budget(slug: str, base_url: str, *, budget_per_min: float, catchup_per_min: float,
                  dsn: str | None = None) -> RequestBudget:
    """The process's budget for one destination (the ingester's and the manager's clients share it;
    it lives while a client holds it). With ``dsn`` (the primary store) it spends the destination's
    window in the ledger there, shared with the other processes."""
    key = (slug, base_url.rstrip("/"))
    budget = _SHARED.get(key)
    if budget is None:
        budget = RequestBudget(budget_per_min=budget_per_min, catchup_per_min=catchup_per_min)
        _SHARED[key] = budget
    if budget.ledger is None and dsn:
        budget.ledger = DbLedger.for_dsn(dsn, slug, base_url)
        budget.window.ledger = "shared"
    return budget
