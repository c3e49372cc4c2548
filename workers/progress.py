"""The one text progress bar of the offline commands (``backfill``, ``rebuild-equity``…)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 30
REDRAW_MIN_S = 0.1
"""Redrawing faster than a terminal refresh only costs CPU on a large backfill."""


class ProgressBar:
    """``label [#######.......]  42.0% detail`` on one line of ``out`` (stderr by default).

    Progress is ``done / total`` in whatever unit the caller counts (rows, seconds of history).
    A disabled bar draws nothing, so callers need no ``if``.
    """

    def __init__(self, label: str, total: float, *, out: TextIO | None = None, enabled: bool = True) -> None:
        self.label = label
        self.total = max(float(total), 1e-9)
        self.done = 0.0
        self.enabled = enabled
        self._out = out or sys.stderr
        self._last_draw_monotonic = 0.0

    def update(self, done: float, detail: str = "") -> None:
        """Set the absolute progress (clamped to ``[0, total]``) and redraw at most every 0.1 s."""
        self.done = min(max(done, 0.0), self.total)
        now = time.monotonic()
        if now - self._last_draw_monotonic >= REDRAW_MIN_S:
            self._last_draw_monotonic = now
            self._draw(self.done / self.total, detail, end="")

    def advance(self, n: float = 1, detail: str = "") -> None:
        self.update(self.done + n, detail)

    def close(self, detail: str = "") -> None:
        """Draw 100 % and end the line."""
        self._draw(1.0, detail, end="\n")

    def _draw(self, fraction: float, detail: str, end: str) -> None:
        if not self.enabled:
            return
        filled = int(fraction * BAR_WIDTH)
        tail = f" {detail}" if detail else ""
        self._out.write(f"\r{self.label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:6.1%}{tail}{end}")
        self._out.flush()
