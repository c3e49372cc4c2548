"""Keep a loop running whatever happens in it: :func:`workers.supervise.supervise`, restarted after a bug.

``supervise`` retries temporary and operational failures itself and re-raises a bug (logged with its
traceback). For a monitoring loop a bug in one pass must not end the monitoring, so the loop is
started again after a backoff that grows while the bug repeats; every restart is counted.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from workers.backoff import BackoffPolicy, backoff_delay_s
from workers.supervise import ErrorHook, Logger, LoopHealth, sleep_or_stop, supervise

RESTART_POLICY = BackoffPolicy(base_s=0.5, cap_s=30.0, max_attempts=None)
"""A loop that died of a bug starts again after this backoff (0.5 s doubling to 30 s, jittered)."""


async def keep_running(step: Callable[[], Awaitable[object]], *, name: str, log: Logger, health: LoopHealth,
                       interval_s: float | None = None, first_now: bool = False, once: bool = False,
                       stop: asyncio.Event | None = None, on_error: ErrorHook | None = None,
                       on_restart: Callable[[BaseException], None] | None = None) -> None:
    """Run ``step`` like :func:`supervise` until ``stop`` (or, with ``once``, one success); a bug restarts it."""
    while stop is None or not stop.is_set():
        try:
            await supervise(step, name=name, log=log, interval_s=interval_s, first_now=first_now, once=once,
                            stop=stop, health=health, on_error=on_error)
            return
        except Exception as exc:  # supervise() logged the traceback and counted it in ``health``
            if on_restart is not None:
                on_restart(exc)
            delay = backoff_delay_s(RESTART_POLICY, max(1, health.consecutive_failures), random.random())
            log.error("%s restarting in %.1fs after a bug (%d failures so far)", name, delay, health.failures)
            if await sleep_or_stop(delay, stop):
                return
