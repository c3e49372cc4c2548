"""How the manager reads fills that arrive twice: provisional from the stream, then from REST.

The rules are the ingester's (:mod:`workers.ingester.provisional`, docs/freshness.md); here is only
what the manager reads: the *effective* activities, one row per execution, through one ``seq`` cursor.

- every REST activity except a fill that ``confirms`` a provisional one (that one is booked instead);
- every provisional fill that is not ``superseded`` (a late one, or one whose REST twin differs).

A provisional row comes with ``unconfirmed`` (``confirmed_by IS NULL`` as read): the rows resting on it
are marked provisional until its REST twin confirms it (:mod:`workers.manager.unconfirmed`).

A REST fill that ``replaces`` a provisional fill the book already applied means the book holds a fill
REST contradicts: the runner rebuilds it from the effective rows (:func:`replaced_applied`).
"""

from __future__ import annotations

import time
from collections.abc import Container, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from core.records import ActivityRecord

if TYPE_CHECKING:
    from workers.manager.runner import DestinationRunner

_REST_COLUMNS = ("seq, activity_id, ts, activity_type, symbol, side, qty, price, net_amount, "
                 "order_id::text AS order_id, parse_error, replaces, ingested_at, false AS unconfirmed, "
                 # non-fills' broker JSON: lot events are read from it (workers.manager.interpret)
                 "CASE WHEN activity_type IN ('FILL', 'PARTIAL_FILL') THEN NULL ELSE raw::text END AS raw")
_PROVISIONAL_COLUMNS = ("seq, activity_id, ts, 'FILL' AS activity_type, symbol, side, qty, price, "
                        "NULL::numeric AS net_amount, order_id::text AS order_id, NULL::text AS parse_error, "
                        "NULL::text AS replaces, ingested_at, confirmed_by IS NULL AS unconfirmed, NULL::text AS raw")


def effective_activities_sql(schema: str, where: str = "") -> str:
    """``SELECT`` of the effective activities of destination ``$1`` (``schema`` already quoted),
    filtered by ``where`` (over the combined rows: ``seq``, ``ingested_at``…), by ``seq``."""
    return f"""SELECT * FROM (
                   SELECT {_REST_COLUMNS} FROM {schema}.activities WHERE destination = $1 AND confirms IS NULL
                   UNION ALL
                   SELECT {_PROVISIONAL_COLUMNS} FROM {schema}.provisional_fills
                   WHERE destination = $1 AND NOT superseded
               ) AS a {f"WHERE {where}" if where else ""} ORDER BY seq"""


def replaced_applied(acts: Iterable[ActivityRecord], applied: Container[str]) -> str | None:
    """The first provisional fill id that a REST fill in ``acts`` replaces and the book has applied."""
    return next((a.replaces for a in acts if a.replaces is not None and a.replaces in applied), None)


async def rebuild_if_replaced(runner: DestinationRunner, acts: Sequence[ActivityRecord]) -> bool:
    """Rebuild ``runner``'s book when REST replaced a provisional fill it applied; True when it did."""
    replaced = replaced_applied(acts, runner.ledger.applied)
    if replaced is None:
        return False
    runner.log.warning("dest=%s REST replaces provisional fill %s: rebuilding the book", runner.slug, replaced)
    await runner.heal(full_rebuild=True)
    return True


async def show_fill_now(runner: DestinationRunner) -> None:
    """A fill changed the book: write the open trades and NOTIFY now, not at the next flush or after
    the NOTIFY window (``UI_SNAPSHOT_SEC``, which stays the limit for price ticks). Fills are rare
    next to ticks; a busy flush (another one running) leaves it to the periodic one."""
    runner.throttle.reopen()
    await runner.flush(datetime.now(UTC), time.monotonic())
