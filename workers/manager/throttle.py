"""The ``pos_channel`` NOTIFY throttle: at most one per :func:`notify_window_s`, leading edge immediate.

The window is a fifth of the page's polling interval (``UI_SNAPSHOT_SEC``; 0.1 s at the default
0.5 s): a price tick's revaluation is written and NOTIFYd at once when the window is open, and the
page patches its grid from the stream (issue 18: tick -> visible P&L p95 <= 0.30 s), which a 0.5 s
window alone would use up. Fills do not wait for it (:func:`workers.manager.provisional.show_fill_now`).
It scales with the setting, so a slow ``UI_SNAPSHOT_SEC`` still means few NOTIFYs.
"""

from __future__ import annotations

PUSH_WINDOW_FRACTION = 0.2
"""The pos NOTIFY window as a share of ``UI_SNAPSHOT_SEC``. At the default, at most 10 revaluations
a second per destination are written at once and NOTIFYd (the flush writes every ``FLUSH_INTERVAL_S``
anyway), each one small event per open page."""


def notify_window_s(ui_snapshot_sec: float) -> float:
    """The pos NOTIFY window for a polling interval of ``ui_snapshot_sec``."""
    return ui_snapshot_sec * PUSH_WINDOW_FRACTION


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
