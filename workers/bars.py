"""Storing one-minute price bars (``public.price_bars``, migration 5).

:class:`workers.prices.BarBuilder` turns every accepted tick into bars; the manager takes them from
each feed about once a second and hands them to a :class:`BarWriter`, which upserts them with
:func:`write_bars`. The upsert is idempotent and merges: the open stays the first writer's, high and
low widen (``greatest`` / ``least``), close is the latest written, ticks the largest count seen. Sending
a bar twice, or a later fuller state of it, is therefore safe, and so are two replicas (or a restarted
manager) writing the same minute. Bars that fail to be written stay pending and go with the next write.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from core.storable import bad_value
from workers.prices import Bar
from workers.stats import Counters

log = logging.getLogger(__name__)

MAX_PENDING_BARS = 50_000
"""Bars kept for a retry while the database refuses them (the oldest minutes go first past this)."""

UPSERT_BARS_SQL = """INSERT INTO public.price_bars AS b (symbol, ts, open, high, low, close, ticks)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (symbol, ts) DO UPDATE SET
    high = greatest(b.high, EXCLUDED.high),
    low = least(b.low, EXCLUDED.low),
    close = EXCLUDED.close,
    ticks = greatest(b.ticks, EXCLUDED.ticks),
    updated_at = now()"""


async def write_bars(conn: asyncpg.Connection | asyncpg.Pool, bars: Sequence[Bar]) -> int:
    """Upsert ``bars`` in one ``executemany`` (atomic); the number of bars sent.

    Rows go in ``(symbol, ts)`` order so that concurrent writers lock them in the same order.
    """
    if not bars:
        return 0
    rows = [(b.symbol, b.ts, b.open, b.high, b.low, b.close, b.ticks)
            for b in sorted(bars, key=lambda b: (b.symbol, b.ts))]
    await conn.executemany(UPSERT_BARS_SQL, rows)
    return len(rows)


@dataclass(slots=True)
class BarWriterStats(Counters):
    """Counters since start (heartbeat ``details.price_bars``)."""

    written: int = 0
    """Bar rows upserted (a bar re-sent with more ticks counts again)."""
    writes: int = 0
    failures: int = 0
    dropped: int = 0
    """Pending bars given up because more than ``MAX_PENDING_BARS`` were waiting."""
    pending: int = 0
    refused: int = 0
    """Bars never queued: a price not finite or beyond :data:`core.storable.MAX_ABS_STORED`."""
    last_error: str | None = None


class BarWriter:
    """Bars taken from the builders and not stored yet; :meth:`write` sends them all, keeps them on failure.

    Pending bars are keyed by ``(source, symbol, minute)``: a newer state of a pending bar is merged
    into it exactly as the table merges (:meth:`Bar.merged`), so nothing is lost when a write fails
    and sources (feeds) stay apart until the database merges them.
    """

    def __init__(self, *, max_pending: int = MAX_PENDING_BARS) -> None:
        self.max_pending = max_pending
        self._pending: dict[tuple[Hashable, str, datetime], Bar] = {}
        self.stats = BarWriterStats()

    def offer(self, source: Hashable, bars: Iterable[Bar]) -> None:
        """Queue ``bars`` (from :meth:`BarBuilder.take`) for the next :meth:`write`; unstorable ones are refused."""
        pending = self._pending
        for bar in bars:
            if any(bad_value(v) for v in (bar.open, bar.high, bar.low, bar.close)):
                self.stats.refused += 1
                continue
            key = (source, bar.symbol, bar.ts)
            prev = pending.get(key)
            pending[key] = bar if prev is None else prev.merged(bar)
        self._trim()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def write(self, conn: asyncpg.Connection | asyncpg.Pool) -> int:
        """Write every pending bar; on any error they stay pending (merged with what arrived since) and it re-raises."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        try:
            n = await write_bars(conn, list(batch.values()))
        except BaseException as exc:  # incl. cancellation: the bars go with the next write (or the drain's)
            for key, bar in self._pending.items():  # offered while we waited: newer states
                prev = batch.get(key)
                batch[key] = bar if prev is None else prev.merged(bar)
            self._pending = batch
            self._trim()
            if not isinstance(exc, Exception):
                raise
            self.stats.failures += 1
            self.stats.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
            raise
        self.stats.writes += 1
        self.stats.written += n
        self.stats.pending = len(self._pending)
        return n

    def _trim(self) -> None:
        excess = len(self._pending) - self.max_pending
        if excess > 0:
            oldest = sorted(self._pending, key=lambda k: self._pending[k].ts)[:excess]
            for key in oldest:
                del self._pending[key]
            self.stats.dropped += excess
            log.warning("price bars: %d pending bars dropped (database unavailable too long); %d so far",
                        excess, self.stats.dropped)
        self.stats.pending = len(self._pending)
