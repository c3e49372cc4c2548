"""The one pattern for counters: a mutable slotted dataclass deriving from :class:`Counters`.

Each service declares its counters as fields (ints, floats, an optional ``last_error``) with one
docstring line each; :meth:`Counters.as_dict` renders them for the heartbeat's ``details`` so no
service writes that mapping by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(slots=True)
class Counters:
    """Base of every stats record. Subclass with ``@dataclass(slots=True)`` and plain fields."""

    def as_dict(self, *, exclude: frozenset[str] = frozenset({"last_error"})) -> dict[str, Any]:
        """Field name → value (floats rounded to milliseconds), without ``exclude``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in exclude:
                continue
            value = getattr(self, f.name)
            out[f.name] = round(value, 3) if isinstance(value, float) else value
        return out
