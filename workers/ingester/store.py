"""SQL for the raw tables of one ``ACCOUNT_SCHEMA``: every write idempotent, one batch one statement.

A batch is written by ONE statement (data-modifying CTEs: activities, order events, orders,
checkpoints, the ``ch_versions`` bump and the NOTIFY), so it is atomic without BEGIN/COMMIT and
costs one round trip: the live path's latency depends on it. Rows travel as parallel arrays
through ``unnest``; large activity batches are first binary-COPied into a temp table (then the
caller must hold a transaction: :meth:`RawStore.needs_transaction`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from core.records import ActivityRecord
from core.schema import quote_ident
from workers.alpaca.records import OrderEventRow, OrderRow
from workers.alpaca.wire import FILL_EVENTS, ORDER_STATUS_RANK, TERMINAL_ORDER_STATUSES
from workers.ingester.provisional import Links, ProvisionalFill, StoredFillRef, is_usable_rest_fill, link_fills
from workers.ingester.rules import Batch, BatchResult, Checkpoint
from workers.notify import NEW_FILLS_CHANNEL

COPY_MIN_ROWS = 1000
"""From this many activities a batch is COPied (binary) rather than sent as arrays: faster in bulk."""
_STAGING_TABLE = "ch_ingest_activities_stage"

_ACT_COLS = ("activity_id, ts, activity_type, fill_type, symbol, side, qty, price, net_amount, leaves_qty, "
             "cum_qty, order_id, order_status, description, raw, parse_error, confirms, replaces")
_ACT_TYPES = ("text timestamptz text text text text numeric numeric numeric numeric numeric uuid text text jsonb text "
              "text text")
_EV_TYPES = "text timestamptz uuid text text numeric numeric numeric jsonb text"
_ORDER_COLS = ("client_order_id parent_order_id symbol side order_type order_class time_in_force qty notional "
               "filled_qty filled_avg_price limit_price stop_price trail_price trail_percent status created_at "
               "updated_at submitted_at filled_at canceled_at expired_at raw parse_error").split()  # fmt: skip
_ORDER_TYPES = ("uuid text uuid text text text text text numeric numeric numeric numeric numeric numeric "
                "numeric numeric text timestamptz timestamptz timestamptz timestamptz timestamptz timestamptz "
                "jsonb text")  # fmt: skip
_ORDER_FIELDS = ["order_id", *_ORDER_COLS[:-2]]


_PROV_COLS = ("activity_id, ts, order_id, execution_id, fill_type, symbol, side, qty, price, cum_qty, raw, "
              "confirmed_by, superseded")
_PROV_TYPES = "text timestamptz uuid text text text text numeric numeric numeric jsonb text bool"
_PROV_UPDATE_TYPES = "text text bool"  # stored provisional id, the REST id that matched it, superseded


def _arrays(types: str, first: int) -> str:
    return ", ".join(f"${i + first}::{t}[]" for i, t in enumerate(types.split()))


def _n(types: str) -> int:
    return len(types.split())


# Parameter numbers: $1 slug, then each group's arrays in this order.
_EV_FIRST = 2 + _n(_ACT_TYPES)
_ORDER_FIRST = _EV_FIRST + _n(_EV_TYPES)
_CP_FIRST = _ORDER_FIRST + _n(_ORDER_TYPES)  # three checkpoint arrays, then the NOTIFY channel
_CHANNEL = _CP_FIRST + 3
_PROV_FIRST = _CHANNEL + 1
_PROV_UPDATE_FIRST = _PROV_FIRST + _n(_PROV_TYPES)
_ACT_ARRAYS = _arrays(_ACT_TYPES, 2)
_EV_ARRAYS = _arrays(_EV_TYPES, _EV_FIRST)
_ORDER_ARRAYS = _arrays(_ORDER_TYPES, _ORDER_FIRST)
_PROV_ARRAYS = _arrays(_PROV_TYPES, _PROV_FIRST)
_PROV_UPDATE_ARRAYS = _arrays(_PROV_UPDATE_TYPES, _PROV_UPDATE_FIRST)


def _sql_list(values: Sequence[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _status_rank_sql(col: str) -> str:
    return f"CASE {col} " + " ".join(f"WHEN '{k}' THEN {v}" for k, v in ORDER_STATUS_RANK.items()) + " ELSE 0 END"


def _orders_cte(s: str) -> str:
    # Same order as rules.order_version(): progress first, then updated_at. An equal state (e.g. the
    # flat and the nested rendering of one order) is not rewritten, so re-reads change nothing.
    newer = (f"((COALESCE(EXCLUDED.filled_qty, 0), {_status_rank_sql('EXCLUDED.status')}, "
             f"COALESCE(EXCLUDED.updated_at, '-infinity')) > "
             f"(COALESCE(o.filled_qty, 0), {_status_rank_sql('o.status')}, COALESCE(o.updated_at, '-infinity')))")
    # Only a parent's nested legs carry the parent link: a leg's own update must not erase it.
    updates = ", ".join(
        f"{c} = COALESCE(o.{c}, EXCLUDED.{c})" if c == "parent_order_id"
        else f"{c} = CASE WHEN {newer} THEN EXCLUDED.{c} ELSE o.{c} END"
        for c in _ORDER_COLS
    )
    learned_parent = "(o.parent_order_id IS NULL AND EXCLUDED.parent_order_id IS NOT NULL)"
    return f"""
            ord AS (
                INSERT INTO {s}.orders AS o (destination, order_id, {", ".join(_ORDER_COLS)})
                SELECT $1, * FROM unnest({_ORDER_ARRAYS})
                ON CONFLICT (destination, order_id) DO UPDATE SET {updates}, ingested_at = now()
                WHERE {newer} OR {learned_parent}
                RETURNING parse_error IS NOT NULL AS malformed
            ),"""


def _tail_sql(s: str) -> str:
    """Everything after the ``act`` CTE: events, orders, checkpoints, counts, version bump, NOTIFY."""
    fill_events = _sql_list(sorted(FILL_EVENTS))
    return f"""
            ev AS (
                INSERT INTO {s}.order_events (destination, event_key, ts, order_id, event, execution_id, price, qty,
                    position_qty, raw, parse_error)
                SELECT $1, * FROM unnest({_EV_ARRAYS})
                ON CONFLICT (destination, event_key, ts) DO NOTHING
                RETURNING event, parse_error IS NOT NULL AS malformed
            ),{_orders_cte(s)}
            cp AS (
                INSERT INTO {s}.checkpoints AS c (destination, stream, last_id, last_ts, updated_at)
                SELECT $1, u.stream, u.last_id, u.last_ts, now()
                FROM unnest(${_CP_FIRST}::text[], ${_CP_FIRST + 1}::text[], ${_CP_FIRST + 2}::timestamptz[])
                    AS u (stream, last_id, last_ts)
                ON CONFLICT (destination, stream) DO UPDATE SET
                    last_id = CASE WHEN c.last_ts IS NULL OR EXCLUDED.last_ts >= c.last_ts
                                   THEN COALESCE(EXCLUDED.last_id, c.last_id) ELSE c.last_id END,
                    last_ts = GREATEST(c.last_ts, EXCLUDED.last_ts),
                    updated_at = now()
            ),
            prov AS (
                INSERT INTO {s}.provisional_fills (destination, {_PROV_COLS}, confirmed_at)
                SELECT $1, u.*, CASE WHEN u.confirmed_by IS NULL THEN NULL ELSE now() END
                FROM unnest({_PROV_ARRAYS}) AS u ({_PROV_COLS})
                ON CONFLICT (destination, activity_id) DO NOTHING
                RETURNING seq, superseded
            ),
            prov_upd AS (
                UPDATE {s}.provisional_fills AS p SET confirmed_by = u.rest_id, superseded = u.superseded,
                    confirmed_at = now()
                FROM unnest({_PROV_UPDATE_ARRAYS}) AS u (activity_id, rest_id, superseded)
                WHERE p.destination = $1 AND p.activity_id = u.activity_id AND p.confirmed_by IS NULL
                RETURNING 1
            ),
            counts AS (
                SELECT (SELECT count(*) FROM act) AS new_activities,
                       (SELECT count(*) FROM act WHERE activity_type = 'FILL')
                           + (SELECT count(*) FROM prov WHERE NOT superseded) AS new_fills,
                       GREATEST((SELECT max(seq) FROM act WHERE activity_type = 'FILL'),
                                (SELECT max(seq) FROM prov WHERE NOT superseded)) AS max_fill_seq,
                       (SELECT count(*) FROM prov WHERE NOT superseded) AS new_provisional,
                       (SELECT count(*) FROM prov_upd) AS provisional_linked,
                       (SELECT count(*) FROM ev) AS new_events,
                       (SELECT count(*) FROM ev WHERE event IN ({fill_events})) AS new_fill_events,
                       (SELECT count(*) FROM ord) AS orders_changed,
                       (SELECT count(*) FROM act WHERE malformed) + (SELECT count(*) FROM ev WHERE malformed)
                           + (SELECT count(*) FROM ord WHERE malformed) AS new_malformed
            ),
            ver AS (
                INSERT INTO public.ch_versions AS v (slug, activity_version, updated_at)
                SELECT $1, 1, now() FROM counts
                WHERE new_activities + new_events + orders_changed + new_provisional + provisional_linked > 0
                ON CONFLICT (slug) DO UPDATE SET activity_version = v.activity_version + 1, updated_at = now()
                RETURNING activity_version
            )
            SELECT c.*, (SELECT activity_version FROM ver) AS activity_version,
                   CASE WHEN c.new_fills + c.new_fill_events > 0 THEN pg_notify(${_CHANNEL}, json_build_object(
                       'd', $1::text, 'n', c.new_fills, 'max_seq', c.max_fill_seq, 'events', c.new_fill_events,
                       'v', (SELECT activity_version FROM ver))::text) END AS notified
            FROM counts AS c"""


class RawStore:
    """The raw tables of one ``ACCOUNT_SCHEMA`` (see the module docstring)."""

    def __init__(self, account_schema: str) -> None:
        s = quote_ident(account_schema)
        self.schema = account_schema
        tail = _tail_sql(s)
        insert_act = f"INSERT INTO {s}.activities (destination, {_ACT_COLS})"
        conflict = ("ON CONFLICT (destination, activity_id, ts) DO NOTHING "
                    "RETURNING activity_type, seq, parse_error IS NOT NULL AS malformed")
        self._write_unnest = f"WITH act AS ({insert_act} SELECT $1, * FROM unnest({_ACT_ARRAYS}) {conflict}),{tail}"
        # The staged variant keeps the parameter numbering: the activity arrays arrive empty (referenced
        # only so PostgreSQL knows their types), so both statements take the same arguments.
        typed = " + ".join(f"cardinality({a})" for a in _ACT_ARRAYS.split(", "))
        self._write_staged = (
            f"WITH act AS ({insert_act} SELECT $1, * FROM {_STAGING_TABLE} WHERE {typed} = 0 {conflict}),{tail}"
        )
        self._create_staging = f"""
            CREATE TEMP TABLE IF NOT EXISTS {_STAGING_TABLE} (activity_id text, ts timestamptz, activity_type text,
                fill_type text, symbol text, side text, qty numeric, price numeric, net_amount numeric,
                leaves_qty numeric, cum_qty numeric, order_id uuid, order_status text, description text, raw jsonb,
                parse_error text, confirms text, replaces text) ON COMMIT DELETE ROWS"""
        # The stored fills of some orders: provisional ones (all of them) and REST FILL activities.
        self._select_fill_refs = f"""
            SELECT true AS provisional, activity_id, ts, order_id, execution_id, fill_type, symbol, side, qty, price,
                   cum_qty, confirmed_by, superseded
            FROM {s}.provisional_fills WHERE destination = $1 AND order_id = ANY($2::uuid[])
            UNION ALL
            SELECT false, activity_id, ts, order_id, NULL, NULL, NULL, NULL, NULL, NULL, cum_qty, NULL, false
            FROM {s}.activities WHERE destination = $1 AND activity_type = 'FILL' AND order_id = ANY($2::uuid[])"""
        self._select_checkpoints = f"SELECT stream, last_id, last_ts FROM {s}.checkpoints WHERE destination = $1"
        self._select_open_orders = f"""
            SELECT order_id FROM {s}.orders
            WHERE destination = $1 AND (status IS NULL OR status NOT IN ({_sql_list(sorted(TERMINAL_ORDER_STATUSES))}))
            ORDER BY updated_at NULLS FIRST LIMIT $2"""

    @staticmethod
    def needs_transaction(batch: Batch) -> bool:
        """True when :meth:`write_batch` takes several statements (COPY path): wrap it in a transaction."""
        return len(batch.activities) >= COPY_MIN_ROWS

    async def link_fills(self, conn: asyncpg.Connection, slug: str, batch: Batch) -> Links:
        """Match the batch's REST fills and provisional fills with each other and with stored ones
        (:func:`workers.ingester.provisional.link_fills`). One read, only when the batch has fills."""
        rest = [a for a in batch.activities.values() if is_usable_rest_fill(a)]
        if not rest and not batch.provisional:
            return Links()
        order_ids = sorted({str(a.order_id) for a in rest} | {str(p.order_id) for p in batch.provisional.values()})
        rows = await conn.fetch(self._select_fill_refs, slug, order_ids)
        stored_prov = [_stored_provisional(r) for r in rows if r["provisional"]]
        stored_rest = [StoredFillRef(r["activity_id"], r["order_id"], r["cum_qty"]) for r in rows if not r["provisional"]]
        return link_fills(rest, batch.provisional.values(), stored_prov, stored_rest)

    async def write_batch(self, conn: asyncpg.Connection, slug: str, batch: Batch) -> BatchResult:
        """Write ``batch``: rows, checkpoints, version bump and NOTIFY, atomically (see the module doc)."""
        links = await self.link_fills(conn, slug, batch)
        activities = list(batch.activities.values())
        if len(activities) >= COPY_MIN_ROWS:
            await conn.execute(self._create_staging)
            records = zip(*_activity_columns(activities, links), strict=True)
            await conn.copy_records_to_table(_STAGING_TABLE, records=records)
            sql, act_args = self._write_staged, _activity_columns([], links)
        else:
            sql, act_args = self._write_unnest, _activity_columns(activities, links)
        cps = list(batch.checkpoints.values())
        updates = sorted(links.stored_updates.items())
        row = await conn.fetchrow(
            sql,
            slug,
            *act_args,
            *_event_columns(list(batch.events.values())),
            *_order_columns(list(batch.orders.values())),
            [cp.stream for cp in cps],
            [cp.last_id for cp in cps],
            [cp.last_ts for cp in cps],
            NEW_FILLS_CHANNEL,
            *_provisional_columns(list(links.new_provisional.values())),
            [pid for pid, _ in updates],
            [rest_id for _, (rest_id, _) in updates],
            [superseded for _, (_, superseded) in updates],
        )
        assert row is not None
        return BatchResult(
            new_activities=int(row["new_activities"]),
            new_fills=int(row["new_fills"]),
            max_fill_seq=row["max_fill_seq"],
            new_events=int(row["new_events"]),
            new_fill_events=int(row["new_fill_events"]),
            orders_changed=int(row["orders_changed"]),
            activity_version=row["activity_version"],
            new_malformed=int(row["new_malformed"]),
            new_provisional=int(row["new_provisional"]),
        )

    async def load_checkpoints(self, conn: asyncpg.Pool | asyncpg.Connection, slug: str) -> dict[str, Checkpoint]:
        rows = await conn.fetch(self._select_checkpoints, slug)
        return {r["stream"]: Checkpoint(r["stream"], r["last_id"], r["last_ts"]) for r in rows}

    async def open_order_ids(self, conn: asyncpg.Pool | asyncpg.Connection, slug: str, limit: int) -> list[uuid.UUID]:
        return [r["order_id"] for r in await conn.fetch(self._select_open_orders, slug, limit)]


def _json(raw: Any) -> str:
    text = json.dumps(raw, separators=(",", ":"), default=str, ensure_ascii=False)
    # PostgreSQL jsonb cannot hold U+0000; keep the payload storable rather than losing the row.
    return text.replace("\\u0000", "\\ufffd")


def _activity_columns(rows: Sequence[ActivityRecord], links: Links) -> list[list[Any]]:
    return [
        [r.activity_id for r in rows],
        [r.ts for r in rows],
        [r.activity_type for r in rows],
        [r.fill_type for r in rows],
        [r.symbol for r in rows],
        [r.side for r in rows],
        [r.qty for r in rows],
        [r.price for r in rows],
        [r.net_amount for r in rows],
        [r.leaves_qty for r in rows],
        [r.cum_qty for r in rows],
        [r.order_id for r in rows],
        [r.order_status for r in rows],
        [r.description for r in rows],
        [_json(r.raw) for r in rows],
        [r.parse_error for r in rows],
        [links.rest_confirms.get(r.activity_id) for r in rows],
        [links.rest_replaces.get(r.activity_id) for r in rows],
    ]


def _provisional_columns(rows: Sequence[ProvisionalFill]) -> list[list[Any]]:
    return [
        [r.activity_id for r in rows],
        [r.ts for r in rows],
        [r.order_id for r in rows],
        [r.execution_id for r in rows],
        [r.fill_type for r in rows],
        [r.symbol for r in rows],
        [r.side for r in rows],
        [r.qty for r in rows],
        [r.price for r in rows],
        [r.cum_qty for r in rows],
        [_json(r.raw) for r in rows],
        [r.confirmed_by for r in rows],
        [r.superseded for r in rows],
    ]


def _stored_provisional(r: asyncpg.Record) -> ProvisionalFill:
    return ProvisionalFill(activity_id=r["activity_id"], ts=r["ts"], order_id=r["order_id"],
                           execution_id=r["execution_id"], fill_type=r["fill_type"] or "", symbol=r["symbol"] or "",
                           side=r["side"] or "", qty=r["qty"], price=r["price"], cum_qty=r["cum_qty"],
                           confirmed_by=r["confirmed_by"], superseded=r["superseded"])


def _event_columns(rows: Sequence[OrderEventRow]) -> list[list[Any]]:
    return [
        [r.event_key for r in rows],
        [r.ts for r in rows],
        [r.order_id for r in rows],
        [r.event for r in rows],
        [r.execution_id for r in rows],
        [r.price for r in rows],
        [r.qty for r in rows],
        [r.position_qty for r in rows],
        [_json(r.raw) for r in rows],
        [r.parse_error for r in rows],
    ]


def _order_columns(rows: Sequence[OrderRow]) -> list[list[Any]]:
    columns = [[getattr(r, name) for r in rows] for name in _ORDER_FIELDS]
    columns.append([_json(r.raw) for r in rows])
    columns.append([r.parse_error for r in rows])
    return columns
