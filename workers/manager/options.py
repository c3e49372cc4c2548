"""The manager's fixed tunables (the settings in :class:`core.settings.Settings` are the knobs) and counters."""

from __future__ import annotations

from dataclasses import dataclass

from workers.stats import Counters

SERVICE = "manager"
CHECKPOINT_INTERVAL_S = 60.0
"""A checkpoint is written at most this often (and on drain) when the book changed."""
CHECKPOINT_COST_S_PER_FILL = 7.5e-6
"""Serialising the book costs about this per fill on the event loop: big books are saved less often."""
CHECKPOINT_MAX_LOOP_SHARE = 0.01
GAP_REFILL_MAX_POINTS = 5_000
GAP_REFILL_MAX_AGE_S = 3_600.0
"""Only a recent gap (a take-over, a restart) is bridged with today's values; older holes are for
``refill-snapshots``, which replays the activities."""
LATE_SNAPSHOTS_MAX = 100
"""A late flush stamps at most this many grid instants it missed."""
FLUSH_CONCURRENCY = 4
"""Destinations written at once: on a small machine many concurrent statements are slower than a queue."""
NOTIFY_IDS_MAX = 50
DRAIN_TIMEOUT_S = 7.0
BAR_WRITE_INTERVAL_S = 1.0
"""Price bars are written at most this often (or every FLUSH_INTERVAL_S when that is longer)."""
BAR_DRAIN_TIMEOUT_S = 2.0
PAIR_WAIT_S = 30.0
"""A split's, name change's or merger's line without its partner waits this long for it (the ingester may
commit the lines of one corporate action apart); then it is booked alone."""
RESTAMP_SETTLE_S = 2.0
"""The newest snapshot is re-stamped once activities dated before it stop arriving for this long (a backfill)."""
LEADING_EDGE_WAIT_MAX_S = 1.0
"""The leading-edge loop re-reads the feed list at least this often (a take-over may add a feed)."""
STALL_FACTOR = 10
"""A loop that has not completed a pass in this many of its periods (and ``STALL_HEARTBEATS`` heartbeats) is stalled."""
STALL_HEARTBEATS = 3


@dataclass(slots=True)
class DestinationStats(Counters):
    """Counters for one destination since this replica took it over (heartbeat ``details.stats``)."""

    fills_applied: int = 0
    activities_applied: int = 0
    activities_skipped: int = 0
    activities_unknown: int = 0
    """Activities of a type Alpaca does not document (their net amount is booked as cash): the Health page flags them."""
    lot_events: int = 0
    """Corporate actions, option events and fees in the asset passed to the book (duplicates included)."""
    trips_written: int = 0
    pos_writes: int = 0
    pos_notifies: int = 0
    closed_notifies: int = 0
    snapshots: int = 0
    restamps: int = 0
    """The newest snapshot re-stamped because activities dated before it arrived after it."""
    gap_snapshots: int = 0
    syncs: int = 0
    reconciles: int = 0
    account_refreshes: int = 0
    qty_mismatches: int = 0
    rereads: int = 0
    checkpoints: int = 0
    heartbeats: int = 0
    price_ticks: int = 0
    values_refused: int = 0
    """Rows (open trades, round trips, snapshots) not written because a value was unstorable."""
    errors: int = 0
    last_error: str | None = None
