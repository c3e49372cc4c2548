"""The one supervised loop every worker service uses, and the health record a watchdog reads.

:func:`supervise` runs one step of work again and again. A failure is classified once
(:func:`workers.errors.classify`): temporary and operational failures are logged, reported and
retried after a bounded, jittered backoff (:mod:`workers.backoff`); a bug is logged with its
traceback and re-raised, so the task supervising the service (the ownership loop) restarts it
instead of it looping on an error nobody expected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from workers.backoff import BackoffPolicy, backoff_delay_s, should_retry
from workers.errors import ErrorKind, classify, describe

Logger = logging.Logger | logging.LoggerAdapter[Any]
PolicyFor = Callable[[BaseException, ErrorKind], BackoffPolicy]
ErrorHook = Callable[[BaseException, ErrorKind], None]

DEFAULT_POLICY = BackoffPolicy(base_s=0.2, cap_s=30.0, max_attempts=None)
"""Temporary failures: 0.2 s doubling to 30 s, jittered, for as long as it takes."""
OPERATIONAL_POLICY = BackoffPolicy(base_s=5.0, cap_s=300.0, max_attempts=None)
"""Operational failures (a person must act): retried rarely so the fix is picked up without a restart."""


@dataclass(slots=True)
class LoopHealth:
    """Progress of one supervised loop: what a watchdog and the heartbeat's ``details`` read."""

    name: str
    last_ok_monotonic: float | None = None
    """``time.monotonic()`` of the last step that completed (``None`` before the first)."""
    last_beat_monotonic: float | None = None
    """The last sign of life: a completed step or a :meth:`beat` from inside a long step."""
    consecutive_failures: int = 0
    failures: int = 0
    last_error: str | None = None
    last_kind: ErrorKind | None = None

    def beat(self) -> None:
        """Called by a long-running step (e.g. per stream message) to show it is not stuck."""
        self.last_beat_monotonic = time.monotonic()

    def succeeded(self) -> None:
        self.last_ok_monotonic = self.last_beat_monotonic = time.monotonic()
        self.consecutive_failures = 0

    def failed(self, exc: BaseException, kind: ErrorKind) -> None:
        self.consecutive_failures += 1
        self.failures += 1
        self.last_error = describe(exc)
        self.last_kind = kind

    def silent_for_s(self, now_monotonic: float | None = None) -> float | None:
        """Seconds since the last sign of life (``None`` before the first): a watchdog's input."""
        if self.last_beat_monotonic is None:
            return None
        return (time.monotonic() if now_monotonic is None else now_monotonic) - self.last_beat_monotonic

    def as_dict(self) -> dict[str, Any]:
        silent = self.silent_for_s()
        return {"failures": self.failures, "consecutive_failures": self.consecutive_failures,
                "silent_for_s": None if silent is None else round(silent, 3), "last_error": self.last_error}


async def sleep_or_stop(delay_s: float, stop: asyncio.Event | None) -> bool:
    """Sleep ``delay_s`` or until ``stop`` is set; True when stopped."""
    if stop is None:
        await asyncio.sleep(delay_s)
        return False
    if stop.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, delay_s))
    return stop.is_set()


def _default_policy_for(exc: BaseException, kind: ErrorKind) -> BackoffPolicy:
    return OPERATIONAL_POLICY if kind is ErrorKind.OPERATIONAL else DEFAULT_POLICY


async def supervise(
    step: Callable[[], Awaitable[object]],
    *,
    name: str,
    log: Logger,
    policy_for: PolicyFor = _default_policy_for,
    interval_s: float | None = None,
    first_now: bool = True,
    once: bool = False,
    stop: asyncio.Event | None = None,
    health: LoopHealth | None = None,
    on_error: ErrorHook | None = None,
    rand: Callable[[], float] = random.random,
) -> None:
    """Run ``step`` until ``stop`` is set (forever without one; with ``once``: until it succeeds).

    ``interval_s`` is the pause between two steps (a step that waits for its own trigger passes
    ``None``); ``first_now=False`` waits one interval before the first step. After a temporary or
    operational failure the loop waits ``backoff_delay_s(policy, consecutive failures)`` with
    ``policy = policy_for(exc, kind)`` and tries again; a policy with ``max_attempts`` re-raises
    once they are spent. ``on_error`` sees every classified failure (counters, heartbeat state).
    A bug (see :mod:`workers.errors`) is logged with its traceback and re-raised.
    """
    state = health or LoopHealth(name)
    if interval_s is not None and not first_now and await sleep_or_stop(interval_s, stop):
        return
    while stop is None or not stop.is_set():
        try:
            await step()
        except Exception as exc:
            kind = classify(exc)
            state.failed(exc, kind)
            if kind is ErrorKind.BUG:
                log.exception("%s failed unexpectedly (a bug): %s", name, describe(exc))
                raise
            if on_error is not None:
                on_error(exc, kind)
            policy = policy_for(exc, kind)
            attempt = state.consecutive_failures
            if not should_retry(policy, attempt):
                log.error("%s failed %d times, giving up: %s", name, attempt, describe(exc))
                raise
            delay = backoff_delay_s(policy, attempt, rand())
            level = logging.ERROR if kind is ErrorKind.OPERATIONAL else logging.WARNING
            log.log(level, "%s failed (%s): %s; retry %d in %.2fs", name, kind.value, describe(exc), attempt, delay)
            if await sleep_or_stop(delay, stop):
                return
            continue
        state.succeeded()
        if once:
            return
        if interval_s is not None and await sleep_or_stop(interval_s, stop):
            return
