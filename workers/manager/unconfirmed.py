"""Which booked fills only the live stream has reported so far, and the rows that rest on them.

The manager books a provisional (stream) fill at once and keeps it booked when its REST activity
confirms it (:mod:`workers.manager.provisional`). Until then every derived row resting on it says so
in ``provisional_fills`` (docs/freshness.md, "Provisional rows"):

- on ``open_trades_<slug>``: the fills of the position since it was opened, opening and closing ones
  (:attr:`core.records.OpenPosition.fill_ids`), so a stream-only partial close marks the row too;
- on ``closed_trades_<slug>``: the trip's opening and closing fills.

A fill is *unconfirmed* from the read that brings it with ``unconfirmed`` set (``confirmed_by IS
NULL``) until its ``provisional_fills.confirmed_by`` is set. While the runner holds unconfirmed fills,
every read cycle asks which of them (the :data:`CHECK_MAX_IDS` oldest) were confirmed since: one
primary-key lookup. The ingester's confirming REST row wakes the manager (``ch_new_fills``), so the
mark clears within a read cycle. A confirmation rewrites the open rows and closed trips whose count
changed and NOTIFYs them like any other change.

A read of every activity (a re-read, a rebuild from raw) sets the set anew from what it read, so a
rebuild gives the same marks. A replaced fill (``superseded``) stays counted until the rebuild its
replacing REST row triggers takes it out of the book. After a restart or take-over from a checkpoint
the set is read from ``provisional_fills``, and the closed rows the table has marked are written
again from the book: a confirmation may have landed while nobody owned the destination.
"""

from __future__ import annotations

import itertools
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from core.destinations import closed_trades_table
from core.records import ActivityRecord, OpenPosition, RoundTrip
from core.schema import quote_ident
from workers.manager.book import TripNews
from workers.manager.provisional import show_fill_now
from workers.manager.store import Store, storable_trips, trip_provisional_fills

if TYPE_CHECKING:
    from workers.manager.runner import DestinationRunner

CHECK_MAX_IDS = 2_000
"""Unconfirmed fills asked about per read cycle, oldest first (a REST outage may pile up thousands)."""


class Unconfirmed:
    """One destination's booked stream fills not confirmed yet, and the closed trips marked with them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.ids: dict[str, None] = {}
        """Unconfirmed fill ids, oldest first (a dict: ordered, O(1) membership)."""
        self.flagged: dict[str, RoundTrip] = {}
        """Trips written with ``provisional_fills > 0``, by trade id: rewritten when a fill of theirs is confirmed."""
        self.started = False
        self.confirmed = 0
        """Confirmations seen since this runner started."""
        self._version = 0
        self._counted: tuple[Mapping[str, OpenPosition], int] | None = None
        self._counts: dict[str, int] = {}
        schema = store.schema
        self._confirmed_sql = f"""SELECT activity_id, superseded FROM {schema}.provisional_fills
            WHERE destination = $1 AND activity_id = ANY($2::text[]) AND confirmed_by IS NOT NULL"""
        self._stored_sql = f"""SELECT activity_id FROM {schema}.provisional_fills
            WHERE destination = $1 AND confirmed_by IS NULL AND NOT superseded ORDER BY seq"""
        self._marked_sql = (f"SELECT trade_id FROM public.{quote_ident(closed_trades_table(store.slug))} "
                            "WHERE provisional_fills > 0")

    # --- the set -------------------------------------------------------------------------------
    def add(self, ids: Iterable[str]) -> None:
        before = len(self.ids)
        self.ids.update(dict.fromkeys(ids))
        if len(self.ids) != before:
            self._version += 1

    def drop(self, ids: Iterable[str]) -> set[str]:
        """Take ``ids`` out of the set; the ones that were in it."""
        gone = {i for i in ids if self.ids.pop(i, 0) is None}
        if gone:
            self._version += 1
        return gone

    def reset(self, ids: Iterable[str]) -> set[str]:
        """The set is exactly ``ids`` now (a read of every activity); the ids that left it."""
        new = dict.fromkeys(ids)
        gone = set(self.ids) - set(new)
        if new.keys() != self.ids.keys():
            self._version += 1
        self.ids = new
        return gone

    # --- counts on rows ------------------------------------------------------------------------
    def open_counts(self, positions: Mapping[str, OpenPosition]) -> dict[str, int]:
        """Symbol -> unconfirmed fills of its position (positive counts only); cached per book state and set."""
        if not self.ids:
            return {}
        if self._counted is None or self._counted[0] is not positions or self._counted[1] != self._version:
            ids = self.ids
            self._counts = {s: n for s, p in positions.items() if (n := len({f for f in p.fill_ids if f in ids}))}
            self._counted = (positions, self._version)
        return self._counts

    def storable(self, news: TripNews) -> tuple[list[dict[str, Any]], list[str]]:
        """:func:`~workers.manager.store.storable_trips` of the news, counting unconfirmed fills, and the
        marked trips remembered (a confirmation rewrites them)."""
        rows, refused = storable_trips(news.latest, self.ids)
        for tid in news.removed:
            self.flagged.pop(tid, None)
        for trip in news.latest:
            if trip_provisional_fills(trip, self.ids):
                self.flagged[trip.trade_id] = trip
            else:
                self.flagged.pop(trip.trade_id, None)
        return rows, refused

    # --- reads ---------------------------------------------------------------------------------
    async def stored(self) -> list[str]:
        rows = await self.store.pool.fetch(self._stored_sql, self.store.slug)
        return [r["activity_id"] for r in rows]

    async def confirmations(self, applied: Container[str]) -> set[str]:
        """Ids of the set confirmed since (the oldest :data:`CHECK_MAX_IDS`); a replaced one the book never
        applied leaves the set too, one it applied stays until the rebuild."""
        asked = list(itertools.islice(self.ids, CHECK_MAX_IDS))
        rows = await self.store.pool.fetch(self._confirmed_sql, self.store.slug, asked)
        self.drop(r["activity_id"] for r in rows if r["superseded"] and r["activity_id"] not in applied)
        return self.drop(r["activity_id"] for r in rows if not r["superseded"])

    async def marked(self) -> set[str]:
        return {r["trade_id"] for r in await self.store.pool.fetch(self._marked_sql)}


async def track_confirmations(runner: DestinationRunner, acts: Sequence[ActivityRecord], *, bulk: bool) -> None:
    """After a read of ``acts`` (``bulk``: every activity): update the unconfirmed set, learn confirmations,
    and rewrite + NOTIFY the rows whose count changed (module docstring)."""
    t = runner.unconfirmed
    first = not t.started
    read = [a.activity_id for a in acts if a.unconfirmed]
    if bulk:
        gone = t.reset(read)
    else:
        if first:
            t.add(await t.stored())
        t.add(read)
        gone = t.drop([a.activity_id for a in acts if not a.unconfirmed])  # a re-read that shows it confirmed
    if t.ids:
        gone |= await t.confirmations(runner.ledger.applied)
    t.started = True
    t.confirmed += len(gone)
    if runner.book.fill_count == 0:  # a book built from nothing: every row it makes is written with its count
        t.flagged.clear()
        return
    if first:  # from a checkpoint: the marks the table holds may be out of date
        marked = await t.marked()
        if marked or t.ids:
            await _rewrite(runner, [trip for trip in runner.book.round_trips()
                                    if trip.trade_id in marked or trip_provisional_fills(trip, t.ids)])
    if gone:
        await _show_confirmed(runner, gone)


async def _show_confirmed(runner: DestinationRunner, gone: set[str]) -> None:
    trips = [trip for trip in runner.unconfirmed.flagged.values()
             if any(f in gone for f, _ in (*trip.open_fills, *trip.close_fills))]
    await _rewrite(runner, trips)
    symbols = {s for s, p in runner.positions.items() if not gone.isdisjoint(p.fill_ids)}
    if symbols:
        runner.dirty |= symbols  # their ids go with the NOTIFY
        await show_fill_now(runner)


async def _rewrite(runner: DestinationRunner, trips: list[RoundTrip]) -> None:
    if trips:
        news = TripNews(latest=tuple(trips), removed=(), announce_ids=tuple(t.trade_id for t in trips),
                        realized_closed=runner.realized_closed)
        await runner.write_closed(news, bulk=False)
