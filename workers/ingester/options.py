"""The ingester's knobs, its states and its counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from workers.backoff import BackoffPolicy
from workers.stats import Counters

SERVICE = "ingester"
"""``heartbeats.service`` and the ownership-lock namespace."""
STREAM_ACTIVITIES = "activities"
STREAM_ORDERS = "orders"
STREAM_TRADE_UPDATES = "trade_updates"
"""``checkpoints.stream`` values: how far each source has been read."""


class IngestState(StrEnum):
    """What a destination's ingester is doing (``heartbeats.state``)."""

    STARTING = "starting"  # first backfill / first connect not done yet
    RUNNING = "running"  # stream connected, writes succeeding
    RECONNECTING = "reconnecting"  # websocket down, retrying with backoff (REST timer still runs)
    DB_UNAVAILABLE = "db_unavailable"  # writes failing; buffering in memory
    AUTH_ERROR = "auth_error"  # broker rejected the credentials; backing off
    STOPPED = "stopped"  # drained and stopped


@dataclass(frozen=True, slots=True)
class IngesterOptions:
    """Tuning knobs; the defaults suit production, tests shorten them."""

    flush_max_rows: int = 5000
    max_buffer_rows: int = 200_000
    backfill_interval_s: float = 60.0
    overlap_s: float = 300.0
    # First run reads the whole account history: a position opened before the window would otherwise
    # look like an orphan close to the lot engine and skew cash, equity and P&L.
    default_lookback_days: float = 3650.0
    # A stream fill triggers an activities-only REST read (the confirmation of its provisional fill)
    # at most this often: 12 calls a minute at most, inside the 20 a minute budget with room for the
    # reconciliation reads. What the trader sees comes from the stream (docs/freshness.md).
    fill_catchup_min_interval_s: float = 5.0
    # How far behind the checkpoint a confirmation pass starts: the stream says the fill just happened.
    confirm_overlap_s: float = 5.0
    # The periodic pass while the stream stays up (a reconnect re-reads overlap_s): late-posted
    # activities land within a minute; at 5 fills/s 300 s would be 15 pages a pass.
    reconcile_overlap_s: float = 60.0
    # Every pass that is not a fill confirmation also re-reads the non-trade activities dated since
    # New York midnight this many days ago (Alpaca posts fees and some dividends after their date,
    # behind the cursor). Usually one page: one REST call a pass.
    dated_lookback_days: int = 4
    stream_stale_after_s: float = 90.0
    stream_ping_interval_s: float = 10.0
    request_timeout_s: float = 10.0
    drain_timeout_s: float = 10.0
    lock_check_interval_s: float = 5.0
    max_order_refreshes: int = 200
    db_retry: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(base_s=0.2, cap_s=5.0, max_attempts=None))
    reconnect: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(base_s=0.5, cap_s=30.0, max_attempts=None))
    auth_retry: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(base_s=5.0, cap_s=300.0, max_attempts=None))
    backfill_retry: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(base_s=1.0, cap_s=60.0, max_attempts=None))


@dataclass(slots=True)
class IngestCounters(Counters):
    """What one destination's ingester has seen since it started (heartbeat ``details``)."""

    activities_seen: int = 0
    events_seen: int = 0
    orders_seen: int = 0
    broker_errors: int = 0
    handler_errors: int = 0
    """Trade updates whose handling raised (a bug, logged with its traceback)."""
    reconnects: int = 0
    backfills: int = 0


@dataclass(slots=True)
class WriterStats(Counters):
    """The batch writer's counters since start."""

    rows_committed: int = 0
    batches: int = 0
    new_fills: int = 0
    dropped_rows: int = 0
    """Rows refused while the buffer was full (a full REST backfill re-reads them)."""
    malformed_rows: int = 0
    """Stored raw with ``parse_error`` set."""
    db_failures: int = 0
    unstorable_rows: int = 0
    """Rows the database refused even one by one (logged, skipped)."""
    provisional_fills: int = 0
    """Stream fills stored provisional and booked (late ones, whose REST twin was first, not counted)."""
