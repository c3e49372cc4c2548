"""Fault knobs for reliability tests: set by CLI flags and changed at run time by ``POST /admin/faults``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

STREAM_CONFLICT_MODES = ("reject", "replace", "allow")


@dataclass(slots=True)
class Faults:
    """Every knob defaults to "behave like Alpaca"."""

    rest_error_rate: float = 0.0
    """Fraction of ``/v2`` REST calls answered with an error code instead of the real answer."""
    rest_error_codes: list[int] = field(default_factory=lambda: [429, 500, 503])
    """Codes the erroring calls pick from (uniformly); 429 carries ``Retry-After``."""
    retry_after_s: int = 1
    """``Retry-After`` header value of the 429 answers."""
    rest_hang_s: float = 0.0
    """REST calls sleep this long before answering (0 = off)."""
    rest_hang_rate: float = 1.0
    """Fraction of REST calls that hang when ``rest_hang_s`` > 0."""
    ws_drop_every_s: float = 0.0
    """Close every trade_updates websocket every N wall seconds (0 = never)."""
    ws_delay_ms: float = 0.0
    """Delay every trade update by this many milliseconds."""
    ws_duplicate_rate: float = 0.0
    """Fraction of trade updates sent twice."""
    ws_reorder_rate: float = 0.0
    """Fraction of trade updates swapped with the next queued one."""
    stream_conflict: str = "reject"
    """Second trade_updates connection of an account: reject (Alpaca), replace the first, or allow."""
    emit_pending_new: bool = False
    """Send a ``pending_new`` trade update before ``new`` (as Alpaca does for some orders)."""

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update; unknown knobs or bad values raise ``ValueError`` and change nothing."""
        known = {f.name: f for f in fields(self)}
        staged: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown fault knob {key!r} (known: {', '.join(sorted(known))})")
            current = getattr(self, key)
            if key == "rest_error_codes":
                if isinstance(value, int):
                    value = [value]
                if not isinstance(value, list) or not value or not all(isinstance(c, int) and 400 <= c <= 599 for c in value):
                    raise ValueError("rest_error_codes must be a non-empty list of HTTP error codes")
            elif key == "emit_pending_new":
                if not isinstance(value, bool):
                    raise ValueError("emit_pending_new must be true or false")
            elif key == "stream_conflict":
                if value not in STREAM_CONFLICT_MODES:
                    raise ValueError(f"stream_conflict must be one of {STREAM_CONFLICT_MODES}")
            else:
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"{key} must be a number >= 0")
                if key.endswith("_rate") and value > 1:
                    raise ValueError(f"{key} must be between 0 and 1")
                value = type(current)(value)
            staged[key] = value
        for key, value in staged.items():
            setattr(self, key, value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
