"""Fault knobs for reliability tests: set by CLI flags and changed at run time by ``POST /admin/faults``.

Besides transport faults (REST errors and hangs, websocket drops, delays, duplicates, reorders) the
ledger knobs make each reconciliation cause happen on purpose: a fill or an activity missing from
the activities endpoint (for good, or for a while), an activity listed twice, a trade update never
sent, and the day's fees posted days late.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from simulator.models import Activity

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

    hide_activity_ids: list[str] = field(default_factory=list)
    """Activities (fills or non-trade) the activities endpoint leaves out (a dropped record)."""
    delay_activity_s: float = 0.0
    """Every activity appears on the activities endpoint only this many simulated seconds after it happened."""
    duplicate_activity_ids: list[str] = field(default_factory=list)
    """Activities the activities endpoint lists twice (same id, as a buggy page boundary would)."""
    drop_fill_updates: int = 0
    """The next N ``fill``/``partial_fill`` trade updates are never sent."""
    fee_post_delay_days: int = 0
    """End-of-day fees (FEE, CFEE) are posted this many days late (still dated their trade day)."""

    history_null_base: bool = False
    """Portfolio history answers ``base_value: null`` (a quirk of Alpaca's)."""
    history_repeat_previous_day: bool = False
    """The daily history's newest end-of-day point (the last day before today) repeats the previous
    day's equity and P&L, as Alpaca's does after 8 PM ET until it corrects the point (another quirk)."""

    def visible(self, acts: list[Activity], now: datetime) -> list[Activity]:
        """The activities the REST endpoint shows now, after the ledger faults."""
        if not (self.hide_activity_ids or self.delay_activity_s or self.duplicate_activity_ids):
            return acts
        hidden = set(self.hide_activity_ids)
        twice = set(self.duplicate_activity_ids)
        cutoff = now - timedelta(seconds=self.delay_activity_s)
        out: list[Activity] = []
        for a in acts:
            if a.id in hidden or (self.delay_activity_s and a.ts > cutoff):
                continue
            out.append(a)
            if a.id in twice:
                out.append(a)  # the same id twice in a row: pagination by id still terminates
        return out

    def shape_history(self, body: dict[str, Any], *, today_key: int | None) -> None:
        """Apply the history quirks to a portfolio-history body; ``today_key``: today's daily timestamp
        (only for ``timeframe=1D``; the newest point before it is the day just ended)."""
        if self.history_null_base:
            body["base_value"] = None  # a quirk Alpaca's history shows for some accounts
        if not self.history_repeat_previous_day or today_key is None:
            return
        ended = [i for i, ts in enumerate(body["timestamp"]) if ts < today_key]
        if len(ended) >= 2:
            i = ended[-1]
            for key in ("equity", "profit_loss", "profit_loss_pct"):
                body[key][i] = body[key][i - 1]

    def drop_trade_update(self, data: dict[str, Any]) -> bool:
        """Whether to swallow this trade update (counted, not random, so a test drops exactly N)."""
        if self.drop_fill_updates > 0 and data.get("event") in ("fill", "partial_fill"):
            self.drop_fill_updates -= 1
            return True
        return False

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
            elif key in ("hide_activity_ids", "duplicate_activity_ids"):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"{key} must be a list of activity ids")
            elif key in ("drop_fill_updates", "fee_post_delay_days"):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{key} must be an integer >= 0")
            elif key in ("emit_pending_new", "history_null_base", "history_repeat_previous_day"):
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false")
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
