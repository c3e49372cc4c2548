"""Pure retry-delay calculations: exponential backoff with jitter and rate-limit header arithmetic.

No I/O and no clock here: callers pass the attempt number, a random draw and "now", so every
function is deterministic and testable. The loops that sleep are :func:`workers.supervise.supervise`
and the REST client's request retry (:mod:`workers.alpaca.rest`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Exponential backoff ``base_s * multiplier**(attempt-1)`` capped at ``cap_s``, then jittered.

    ``jitter`` is the fraction of the delay that is randomised: 1.0 is "full jitter" (uniform in
    ``[0, delay]``), 0.0 is no jitter. ``max_attempts`` bounds retry loops (``None``: unbounded
    attempts, but every single delay is still bounded by ``cap_s``).
    """

    base_s: float = 0.25
    cap_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    max_attempts: int | None = 6

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s or self.multiplier < 1:
            raise ValueError(f"invalid backoff policy: {self!r}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be within [0, 1], got {self.jitter}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")


def backoff_delay_s(policy: BackoffPolicy, attempt: int, rand: float) -> float:
    """Delay before retry number ``attempt`` (1-based); ``rand`` is a uniform draw in ``[0, 1)``.

    Always within ``[(1 - jitter) * d, d]`` where ``d = min(cap_s, base_s * multiplier**(attempt-1))``.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    exponent = min(attempt - 1, 64)  # beyond this the cap always wins; avoids float overflow
    ceiling = min(policy.cap_s, policy.base_s * policy.multiplier**exponent)
    rand = min(max(rand, 0.0), 1.0)
    return ceiling * (1.0 - policy.jitter + policy.jitter * rand)


def should_retry(policy: BackoffPolicy, attempt: int) -> bool:
    """True while another attempt is allowed after ``attempt`` failures."""
    return policy.max_attempts is None or attempt < policy.max_attempts


def parse_retry_after_s(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); ``None`` if absent/bad."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - now).total_seconds())
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def rate_limit_wait_s(remaining: str | None, reset_epoch_s: str | None, now: datetime) -> float:
    """Seconds to hold off before the next request given ``X-RateLimit-Remaining``/``-Reset``.

    Alpaca sends ``X-RateLimit-Reset`` as a Unix epoch in seconds. Zero unless the budget is spent
    (``remaining <= 0``) and the reset time is in the future. Unparseable headers mean "no limit".
    """
    try:
        left = int(float(remaining)) if remaining is not None else None
        reset = float(reset_epoch_s) if reset_epoch_s is not None else None
    except ValueError:
        return 0.0
    if left is None or left > 0 or reset is None or not math.isfinite(reset):
        return 0.0
    return max(0.0, reset - now.timestamp())


def retry_delay_s(
    policy: BackoffPolicy,
    attempt: int,
    rand: float,
    *,
    retry_after_s: float | None = None,
    max_wait_s: float | None = None,
) -> float:
    """The wait before the next attempt: the server's ``Retry-After`` when given (never less than
    the server asked for, but bounded by ``max_wait_s``), else the jittered backoff."""
    if retry_after_s is not None:
        wait = retry_after_s + backoff_delay_s(policy, 1, rand) * 0.1  # small spread so replicas don't stampede
        return min(wait, max_wait_s) if max_wait_s is not None else wait
    return backoff_delay_s(policy, attempt, rand)
