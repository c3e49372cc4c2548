"""Alpaca's rate-limit headers on every ``/v2/`` answer: ``X-RateLimit-Limit`` (calls a minute per
account), ``X-RateLimit-Remaining`` (left in the current minute) and ``X-RateLimit-Reset`` (epoch
seconds when the minute ends). Informational only: the simulator does not refuse calls past the
limit (fault injection does the 429s), so clients can be tested on how they read the headers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

RATE_LIMIT_PER_MIN = 200
"""What Alpaca allows an account by default."""


class RateLimitWindows:
    """Fixed one-minute windows per API key, as Alpaca reports them."""

    def __init__(self, limit_per_min: int = RATE_LIMIT_PER_MIN, clock: Callable[[], float] = time.time) -> None:
        self.limit_per_min = limit_per_min
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}

    def count(self, key: str) -> dict[str, str]:
        """Count one call of ``key``; the headers to send with its answer."""
        now = self._clock()
        start, used = self._windows.get(key, (now, 0))
        if now - start >= 60.0:
            start, used = now, 0
        used += 1
        self._windows[key] = (start, used)
        return {"X-RateLimit-Limit": str(self.limit_per_min),
                "X-RateLimit-Remaining": str(max(0, self.limit_per_min - used)),
                "X-RateLimit-Reset": str(math.ceil(start + 60.0))}
