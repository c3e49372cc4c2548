"""What Alpaca's trading protocol means, written down once (the simulator speaks the same).

Constants and tiny pure helpers only: which order statuses are final, which trade-update events
are executions, which activity types exist, how progress through an order's life is ranked, what
time an activity id encodes, and the two stand-ins the parser uses for what the broker left out
(the ``malformed:`` id and the epoch timestamp).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from core.records import ActivityRecord

ACTIVITIES_PAGE_SIZE = 100
NON_TRADE_CATEGORY = "non_trade_activity"  # ``category`` of /v2/account/activities: every type but FILL
ORDERS_PAGE_LIMIT = 500

TERMINAL_ORDER_STATUSES = frozenset({"filled", "canceled", "expired", "rejected", "replaced", "done_for_day"})
"""An order in one of these states changes no more (``orders`` rows in other states are refreshed)."""

FILL_EVENTS = frozenset({"fill", "partial_fill"})
"""``trade_updates`` events that are executions."""

# Alpaca's documented activity types (alpaca.trading.enums.ActivityType); others are kept and flagged.
KNOWN_ACTIVITY_TYPES = frozenset(
    {
        "FILL", "TRANS", "MISC", "ACATC", "ACATS", "CFEE", "CSD", "CSW", "DIV", "DIVCGL", "DIVCGS",
        "DIVFEE", "DIVFT", "DIVNRA", "DIVROC", "DIVTW", "DIVTXEX", "FEE", "INT", "INTNRA", "INTTW",
        "JNL", "JNLC", "JNLS", "MA", "NC", "OPASN", "OPCA", "OPCSH", "OPEXC", "OPEXP", "OPTRD",
        "PTC", "PTR", "REORG", "SC", "SSO", "SSP", "CIL", "SPIN", "SPLIT", "VOF", "WH",
    }
)  # fmt: skip
UNKNOWN_ACTIVITY_TYPE = "UNKNOWN"
"""Stored when an item has no ``activity_type`` at all."""

# How far an order has progressed: a delivery never moves an order to a lower rank (see
# workers.ingester.rules.order_version); statuses not listed rank 0.
ORDER_STATUS_RANK = {
    "new": 0, "pending_new": 0, "accepted": 0, "pending_cancel": 0, "pending_replace": 0,
    "accepted_for_bidding": 0, "held": 0, "calculated": 1, "partially_filled": 2, "stopped": 2,
    "suspended": 1, "done_for_day": 3, "filled": 4, "canceled": 4, "expired": 4, "rejected": 4, "replaced": 4,
}  # fmt: skip

NEW_YORK = ZoneInfo("America/New_York")
"""The zone of the times inside activity ids."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""Stand-in timestamp for an item without a usable time (it is stored, flagged, never a checkpoint)."""

MALFORMED_ID_PREFIX = "malformed:"
"""An activity without an id gets ``malformed:<hash of the payload>``: stable, so a re-read dedupes."""


def is_epoch_stand_in(ts: datetime) -> bool:
    """True for the parser's :data:`EPOCH` stand-in (no real broker event is that old)."""
    return ts <= EPOCH


def malformed_id(payload_hash: str) -> str:
    return MALFORMED_ID_PREFIX + payload_hash


def is_malformed_id(activity_id: str) -> bool:
    """True for ids the parser made up: never a page token nor a checkpoint."""
    return activity_id.startswith(MALFORMED_ID_PREFIX)


def activity_id_time(activity_id: str) -> datetime | None:
    """The time Alpaca encodes in an activity id, as UTC; ``None`` when the id carries none.

    Ids read ``YYYYMMDDHHMMSSmmm::<uuid>`` in New York local time (a fill at 18:55:09.981Z has id
    ``20220202135509981::…``); postings that carry only a date use its midnight.
    """
    prefix = activity_id.split("::", 1)[0]
    if len(prefix) != 17 or not prefix.isdigit():
        return None
    with contextlib.suppress(ValueError):
        local = datetime.strptime(prefix[:14], "%Y%m%d%H%M%S").replace(tzinfo=NEW_YORK)
        return local.replace(microsecond=int(prefix[14:]) * 1000).astimezone(UTC)
    return None


def activity_time(row: ActivityRecord) -> datetime:
    """When an activity happened, for checkpoints: ``ts`` for fills; for the others the id's time
    when it has one (their ``date`` is only a day)."""
    if row.activity_type != "FILL":
        encoded = activity_id_time(row.activity_id)
        if encoded is not None:
            return encoded
    return row.ts
