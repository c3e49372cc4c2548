"""The positions grid's rows inside a ``pos`` event, for the destination page that asked for them.

The destination page opens ``/stream/events?slug=<slug>&tz=<zone>`` (``assets/sse.js``); on a
``pos`` event of that destination the stream adds what the page's own ``positions`` callback would
return, drawn by the same function (:func:`dashboard.pages.destination_view.position_rows`): the
rows, the status line, the version they are (the server's own, read after the NOTIFY, so at least
as new as the event's) and the zone their times are in. The page then sets its grid from the event
(a clientside callback) instead of a poll and a callback round trip.

Anything that cannot be drawn (an unknown slug or zone, the database away, more rows than
:data:`PUSH_ROWS_MAX`) leaves the event a plain hint, which makes the page re-read as before.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import g
from sqlalchemy.exc import SQLAlchemyError

from dashboard.sse import Enrich

log = logging.getLogger(__name__)

PUSH_ROWS_MAX = 500  # a bigger book is refreshed by its callback: an event stays a few tens of kB
SLUG_MAX_CHARS = 64


def enricher(slug: str | None, tz: str | None) -> Enrich | None:
    """What adds the rows to ``slug``'s ``pos`` events in zone ``tz``; ``None`` without a usable pair."""
    from dashboard.grid_sql import GridRequestError, zone_info

    if not slug or not tz or len(slug) > SLUG_MAX_CHARS:
        return None
    try:
        zone_info(tz)
    except GridRequestError:
        return None

    def enrich(event: dict[str, Any]) -> dict[str, Any]:
        if event.get("kind") != "pos" or event.get("slug") != slug:
            return event
        pushed = positions_push(slug, tz)
        # "drawn": when the rows were ready (epoch s), next to the hub's "t", for bench/e2e's stages
        return event if pushed is None else {**event, **pushed, "drawn": time.time()}

    return enrich


def positions_push(slug: str, tz: str) -> dict[str, Any] | None:
    """``{"v", "rows", "status", "tz"}`` as of now, or ``None`` (the event stays a hint)."""
    from dashboard.context import model
    from dashboard.pages.destination_view import position_rows
    from dashboard.queries import UnknownDestination

    # the read model holds the versions it read once per request, and a stream is one long request:
    # forget them, so the version (and the rows keyed by it) are read after this NOTIFY
    g.pop("ch_versions", None)
    try:
        v_pos = model().trusted(slug, "pos")
        rows, status = position_rows(slug, v_pos, tz)
    except (SQLAlchemyError, UnknownDestination) as exc:
        log.info("positions push for %s skipped (%s): the page re-reads instead", slug, type(exc).__name__)
        return None
    if len(rows) > PUSH_ROWS_MAX:
        return None
    return {"v": v_pos, "rows": rows, "status": status, "tz": tz}
