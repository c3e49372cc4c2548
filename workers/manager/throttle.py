"""The ``pos_channel`` NOTIFY throttle: at most one per ``UI_SNAPSHOT_SEC``, leading edge immediate."""

from __future__ import annotations


class Throttle:
    """At most one event per ``interval_s``, leading edge immediate, trailing edge guaranteed.

    ``offer(now)`` records that something changed; it answers True when the caller should notify now.
    ``due(now)`` answers True when a deferred change must be notified now (call it every flush).
    Times are plain monotonic seconds; nothing here reads a clock.
    """

    __slots__ = ("interval_s", "last_sent", "pending")

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.last_sent: float | None = None
        self.pending = False

    def ready(self, now: float) -> bool:
        """Would :meth:`offer` send right now? (Does not consume the window.)"""
        return self.last_sent is None or now - self.last_sent >= self.interval_s

    def offer(self, now: float) -> bool:
        if self.ready(now):
            self.last_sent = now
            self.pending = False
            return True
        self.pending = True
        return False

    def due(self, now: float) -> bool:
        if self.pending and self.last_sent is not None and now - self.last_sent >= self.interval_s:
            self.last_sent = now
            self.pending = False
            return True
        return False

    def reopen(self) -> None:
        """Forget the last send (it failed): the next :meth:`offer` sends at once."""
        self.last_sent = None
