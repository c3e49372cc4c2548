"""The activity ingester: every order, trade update and account activity of every owned destination
lands in ``<ACCOUNT_SCHEMA>`` exactly once, whatever the network or the database does.

Reading order:

- :mod:`~workers.ingester.options`: knobs (:class:`IngesterOptions`), states, counters.
- :mod:`~workers.ingester.rules`: the pure decisions (which order state wins, batch merging,
  checkpoints, backfill start, health state and lag).
- :mod:`~workers.ingester.store`: the SQL (one statement per batch, idempotent).
- :mod:`~workers.ingester.writer`: the batch writer (buffer, flush, retry, bounded memory).
- :mod:`~workers.ingester.loops`: one destination's tasks (stream, backfill, writer, heartbeat).
- :mod:`~workers.ingester.commands`: :func:`run_ingester` (ownership through
  :class:`workers.locks.OwnershipLoop`, so one replica ingests a destination) and
  :func:`run_backfill` (re-read a range on demand).
"""

from __future__ import annotations

from workers.ingester.commands import run_backfill, run_ingester
from workers.ingester.loops import Ingester, ProgressCallback
from workers.ingester.options import (
    SERVICE,
    STREAM_ACTIVITIES,
    STREAM_ORDERS,
    STREAM_TRADE_UPDATES,
    IngestCounters,
    IngesterOptions,
    IngestState,
    WriterStats,
)
from workers.ingester.rules import Batch, BatchResult, Checkpoint, order_version
from workers.ingester.store import COPY_MIN_ROWS, RawStore
from workers.ingester.writer import BatchWriter

__all__ = [
    "COPY_MIN_ROWS",
    "SERVICE",
    "STREAM_ACTIVITIES",
    "STREAM_ORDERS",
    "STREAM_TRADE_UPDATES",
    "Batch",
    "BatchResult",
    "BatchWriter",
    "Checkpoint",
    "IngestCounters",
    "IngestState",
    "Ingester",
    "IngesterOptions",
    "ProgressCallback",
    "RawStore",
    "WriterStats",
    "order_version",
    "run_backfill",
    "run_ingester",
]
