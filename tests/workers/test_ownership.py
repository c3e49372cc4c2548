"""OwnershipLoop on a real PostgreSQL: one replica serves a destination, a standby takes over, a
destination whose task died is restarted, and a lost lock connection means what the service says."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import asyncpg

from core.destinations import Destination
from core.settings import Settings
from workers.locks import OwnershipLocks, OwnershipLoop

SERVICE = "test-service"


def dest(name: str) -> Destination:
    return Destination(name=name, slug=name.lower(), key_id="PKTESTKEY0001", secret_key="s3cr3t",
                       base_url="http://127.0.0.1:9")


class Service:
    """Serves destinations until told to stop; can be told to die of a bug."""

    def __init__(self) -> None:
        self.started: Counter[str] = Counter()
        self.stopped: Counter[str] = Counter()
        self.crash: set[str] = set()
        self.changed = asyncio.Event()

    async def serve(self, destination: Destination, stop: asyncio.Event) -> None:
        self.started[destination.slug] += 1
        self.changed.set()
        try:
            while not stop.is_set():
                if destination.slug in self.crash:
                    self.crash.discard(destination.slug)
                    raise ValueError("a bug in the service")
                await asyncio.sleep(0.01)
        finally:
            self.stopped[destination.slug] += 1
            self.changed.set()

    async def until(self, cond: Callable[[], bool]) -> None:
        """Wait for ``cond`` after each start/stop (the bound only stops a hung test)."""
        while not cond():
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), timeout=10)


def loop_for(settings: Settings, service: Service, *, keep: bool) -> OwnershipLoop:
    return OwnershipLoop(OwnershipLocks(settings, SERVICE), [dest("Alpha"), dest("Beta")], service.serve,
                         service=SERVICE, interval_s=0.05, keep_on_connection_loss=keep)


async def test_one_owner_a_standby_takeover_and_a_restart_after_a_bug(settings: Settings) -> None:
    # Arrange: two replicas of one service
    first, second = Service(), Service()
    a, b = loop_for(settings, first, keep=True), loop_for(settings, second, keep=True)
    try:
        # Act 1: both check; the first to check owns everything
        await a.check()
        await b.check()
        await first.until(lambda: len(first.started) == 2)
        assert sorted(a.served) == ["alpha", "beta"]
        assert b.served == {}

        # Act 2: a destination's service dies of a bug: the next check restarts it
        first.crash.add("alpha")
        await first.until(lambda: first.stopped["alpha"] == 1)
        assert a.served["alpha"].task.done()
        await a.check()
        await first.until(lambda: first.started["alpha"] == 2)
        assert not a.served["alpha"].task.done()

        # Act 3: the owner goes away (its lock connection closes): the standby takes over
        await a.drain(timeout_s=5)
        await a.locks.close()
        await b.check()
        assert sorted(b.served) == ["alpha", "beta"]
        assert first.stopped == Counter({"alpha": 2, "beta": 1})
        assert b.takeovers == 2
    finally:
        for loop in (a, b):
            await loop.drain(timeout_s=5)
            await loop.locks.close()


async def test_lost_lock_connection_keep_or_stop(settings: Settings, db_dsn: str) -> None:
    # Arrange: an ingester-like loop (keeps serving) and a manager-like one (stops), each owning its destinations
    keeper_service, stopper_service = Service(), Service()
    keeper = loop_for(settings, keeper_service, keep=True)
    stopper = OwnershipLoop(OwnershipLocks(settings, "other-service"), [dest("Gamma")], stopper_service.serve,
                            service="other-service", interval_s=0.05, keep_on_connection_loss=False,
                            cancel_on_release=True)
    conn = await asyncpg.connect(db_dsn)
    try:
        await keeper.check()
        await stopper.check()
        await stopper_service.until(lambda: stopper_service.started["gamma"] == 1)
        kept_tasks = {slug: s.task for slug, s in keeper.served.items()}
        first_gamma = stopper.served["gamma"].task

        # Act: the database terminates every session holding an advisory lock in this database
        killed = await conn.fetch("SELECT pg_terminate_backend(pid) FROM (SELECT DISTINCT pid FROM pg_locks "
                                  "WHERE locktype = 'advisory' AND database = "
                                  "(SELECT oid FROM pg_database WHERE datname = current_database())) AS holders")
        await keeper.check()
        await stopper.check()

        # Assert: the keeper still runs the same tasks (and holds the locks again); the stopper restarted
        assert len(killed) == 2
        assert {slug: s.task for slug, s in keeper.served.items()} == kept_tasks
        assert keeper.locks.owned == {"alpha", "beta"}
        assert first_gamma.cancelled()
        assert stopper.served["gamma"].task is not first_gamma
        await stopper_service.until(lambda: stopper_service.started["gamma"] == 2)
    finally:
        await conn.close()
        for loop in (keeper, stopper):
            await loop.drain(timeout_s=5)
            await loop.locks.close()


async def test_run_stops_with_the_event_and_drain_stops_every_destination(settings: Settings) -> None:
    service = Service()
    loop = loop_for(settings, service, keep=True)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        await service.until(lambda: len(service.started) == 2)
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        await loop.drain(timeout_s=5)
        assert service.stopped == Counter({"alpha": 1, "beta": 1})
        assert loop.served == {}
        assert loop.health.last_ok_monotonic is not None
    finally:
        await loop.drain(timeout_s=5)
        await loop.locks.close()
