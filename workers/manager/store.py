"""The manager's SQL: reading activities and orders, writing the three derived tables, the checkpoint.

Every derived-table write is one statement that also bumps ``public.ch_versions`` (and for open
trades, sends the NOTIFY), so a reader never sees rows without their version. Rows are checked
before they are sent (:mod:`core.storable`): an unstorable value is refused, never written.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from core.destinations import closed_trades_table, equity_table, open_trades_table
from core.errors import InvalidInput
from core.exit_legs import EXIT_ORDER_TYPES, OpenOrder
from core.records import ActivityRecord, OrderMeta, RoundTrip
from core.schema import quote_ident
from core.snapshots import EquitySnapshot
from core.storable import bad_value, first_bad_value
from core.valuation import OpenTradeRow
from workers.alpaca import TERMINAL_ORDER_STATUSES
from workers.heartbeat import REPLICA_ID
from workers.manager.provisional import effective_activities_sql

Columns = tuple[tuple[str, str], ...]
OPEN_COLS: Columns = (
    ("symbol", "text"), ("side", "text"), ("qty", "numeric"), ("avg_entry_price", "numeric"),
    ("cost_basis", "numeric"), ("entry_time", "timestamptz"), ("mark_price", "numeric"),
    ("mark_ts", "timestamptz"), ("price_source", "text"), ("price_stale", "bool"),
    ("market_value", "numeric"), ("unrealized_pl", "numeric"), ("unrealized_plpc", "float8"),
    ("prev_close", "numeric"), ("day_change", "numeric"), ("day_change_pct", "float8"),
    ("exposure", "numeric"), ("weight", "float8"), ("entry_order_id", "uuid"), ("stop_price", "numeric"),
    ("take_profit_price", "numeric"), ("broker_qty", "numeric"), ("qty_mismatch", "bool"), ("lots", "jsonb"),
    ("provisional_fills", "int4"),
)
CLOSED_COLS: Columns = (
    ("trade_id", "text"), ("symbol", "text"), ("direction", "text"), ("qty", "numeric"),
    ("entry_time", "timestamptz"), ("exit_time", "timestamptz"), ("entry_price", "numeric"),
    ("exit_price", "numeric"), ("gross_pl", "numeric"), ("fees", "numeric"), ("net_pl", "numeric"),
    ("return_pct", "float8"), ("holding_s", "float8"), ("exit_reason", "text"), ("entry_order_id", "uuid"),
    ("exit_order_id", "uuid"), ("is_orphan", "bool"), ("mae", "numeric"), ("mfe", "numeric"),
    ("fills", "jsonb"), ("lots", "jsonb"), ("provisional_fills", "int4"),
)
EQUITY_COLS: Columns = (
    ("ts", "timestamptz"), ("equity", "numeric"), ("cash", "numeric"), ("long_market_value", "numeric"),
    ("short_market_value", "numeric"), ("realized_pl", "numeric"), ("unrealized_pl", "numeric"),
    ("net_deposits", "numeric"), ("drawdown", "float8"), ("source", "text"),
)
# The predicate of the partial index ``orders_working_by_symbol`` (migration 4), whatever the order.
WORKING_FILTER = ", ".join(f"'{s}'" for s in sorted(TERMINAL_ORDER_STATUSES))
ACTIVITY_COLUMNS = ("seq, activity_id, ts, activity_type, symbol, side, qty, price, net_amount, "
                    "order_id::text AS order_id, parse_error, "
                    # the broker JSON of non-fills only: corporate actions and option events need its
                    # fields; fills (nearly every row) are read from their typed columns
                    "CASE WHEN activity_type IN ('FILL', 'PARTIAL_FILL') THEN NULL ELSE raw::text END AS raw")


def _numeric_names(cols: Columns) -> tuple[str, ...]:
    return tuple(c for c, t in cols if t in ("numeric", "float8"))


_OPEN_NUMBERS, _CLOSED_NUMBERS, _EQUITY_NUMBERS = (_numeric_names(c) for c in (OPEN_COLS, CLOSED_COLS, EQUITY_COLS))


def uuid_or_none(value: object) -> str | None:
    if value is None:
        return None
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


# --- statements --------------------------------------------------------------------------------

def _unnest(cols: Columns, first_param: int = 1) -> str:
    args = ", ".join(f"${first_param + i}::{t}[]" for i, (_, t) in enumerate(cols))
    names = ", ".join(c for c, _ in cols)
    return f"SELECT * FROM unnest({args}) AS src({names})"


def open_trades_sql(slug: str) -> str:
    """One round trip: upsert all rows, delete flat symbols (not the kept ones), bump ``pos_version``, maybe NOTIFY."""
    table = f"public.{quote_ident(open_trades_table(slug))}"
    n = len(OPEN_COLS)
    names = ", ".join(c for c, _ in OPEN_COLS)
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c, _ in OPEN_COLS[1:])
    return f"""WITH src AS ({_unnest(OPEN_COLS)}),
        up AS (INSERT INTO {table} ({names}, updated_at) SELECT {names}, now() FROM src
               ON CONFLICT (symbol) DO UPDATE SET {sets}, updated_at = now() RETURNING 1),
        del AS (DELETE FROM {table} WHERE symbol <> ALL(${1}::text[]) AND symbol <> ALL(${n + 6}::text[])
                RETURNING 1),
        v AS (UPDATE public.ch_versions SET pos_version = pos_version + 1, updated_at = now()
              WHERE slug = ${n + 1} RETURNING pos_version)
        SELECT v.pos_version,
               CASE WHEN ${n + 2}::bool THEN pg_notify(${n + 3},
                   json_build_object('v', v.pos_version, 'ids', ${n + 4}::text[],
                                     'as_of_ns', ${n + 5}::bigint)::text) END AS notified
        FROM v"""


def closed_trades_sql(slug: str) -> str:
    """Upsert round trips, delete invalidated ones, bump ``closed_version``; returns the version."""
    table = f"public.{quote_ident(closed_trades_table(slug))}"
    n = len(CLOSED_COLS)
    names = ", ".join(c for c, _ in CLOSED_COLS)
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c, _ in CLOSED_COLS[1:])
    return f"""WITH src AS ({_unnest(CLOSED_COLS)}),
        up AS (INSERT INTO {table} ({names}) SELECT {names} FROM src
               ON CONFLICT (trade_id) DO UPDATE SET {sets} RETURNING 1),
        del AS (DELETE FROM {table} WHERE trade_id = ANY(${n + 1}::text[]) RETURNING 1),
        v AS (UPDATE public.ch_versions SET closed_version = closed_version + 1, updated_at = now()
              WHERE slug = ${n + 2} RETURNING closed_version)
        SELECT closed_version FROM v"""


def _on_conflict(replace: bool) -> str:
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c, _ in EQUITY_COLS[1:])
    return f"DO UPDATE SET {sets}" if replace else "DO NOTHING"


def equity_insert_sql(slug: str, *, replace: bool = False) -> str:
    """Insert snapshots (an existing instant is left alone, or with ``replace`` re-stamped); returns rows
    written. For a time-series database of its own, where ``ch_versions`` is not: the version is bumped in
    the primary one after."""
    table = f"public.{quote_ident(equity_table(slug))}"
    names = ", ".join(c for c, _ in EQUITY_COLS)
    return f"""WITH src AS ({_unnest(EQUITY_COLS)}),
        ins AS (INSERT INTO {table} ({names}) SELECT {names} FROM src ON CONFLICT (ts) {_on_conflict(replace)}
                RETURNING 1)
        SELECT count(*) AS inserted FROM ins"""


def equity_sql(slug: str, *, replace: bool = False) -> str:
    """Insert snapshots (an existing instant is left alone, or with ``replace`` re-stamped), bump
    ``equity_version``; returns rows written."""
    table = f"public.{quote_ident(equity_table(slug))}"
    n = len(EQUITY_COLS)
    names = ", ".join(c for c, _ in EQUITY_COLS)
    return f"""WITH src AS ({_unnest(EQUITY_COLS)}),
        ins AS (INSERT INTO {table} ({names}) SELECT {names} FROM src ON CONFLICT (ts) {_on_conflict(replace)}
                RETURNING 1),
        v AS (UPDATE public.ch_versions SET equity_version = equity_version + 1, updated_at = now()
              WHERE slug = ${n + 1} AND EXISTS (SELECT 1 FROM ins) RETURNING 1)
        SELECT (SELECT count(*) FROM ins) AS inserted, (SELECT count(*) FROM v) AS bumped"""


# --- row marshalling ---------------------------------------------------------------------------

def columns(rows: Sequence[Mapping[str, Any]], cols: Columns) -> list[list[Any]]:
    """Column-major arrays for ``unnest`` (jsonb as text, uuid strings validated)."""
    out: list[list[Any]] = []
    for name, kind in cols:
        values = [r.get(name) for r in rows]
        if kind == "jsonb":
            values = [json.dumps(v if v is not None else [], default=str) for v in values]
        elif kind == "uuid":
            values = [uuid_or_none(v) for v in values]
        out.append(values)
    return out


def open_row(row: OpenTradeRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name, _ in OPEN_COLS}


def equity_row(snap: EquitySnapshot) -> dict[str, Any]:
    return asdict(snap)


def bad_open_row(row: OpenTradeRow) -> str | None:
    """``"column=value"`` when the row holds an unstorable number (on every row of every flush: no dict)."""
    for name in _OPEN_NUMBERS:
        value = getattr(row, name)
        if bad_value(value):
            return f"{name}={str(value)[:40]}"
    return None


def storable_trips(trips: Iterable[RoundTrip],
                   unconfirmed: Collection[str] = ()) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of the trips that fit, and ``"trade_id column=value"`` of the refused ones; each row counts
    its fills in ``unconfirmed`` (stream fills REST has not confirmed yet) as ``provisional_fills``."""
    good: list[dict[str, Any]] = []
    refused: list[str] = []
    for trip in trips:
        row = trip.to_row()
        row["provisional_fills"] = trip_provisional_fills(trip, unconfirmed)
        bad = first_bad_value(row, _CLOSED_NUMBERS)
        if bad is None:
            good.append(row)
        else:
            refused.append(f"{trip.trade_id} {bad}")
    return good, refused


def trip_provisional_fills(trip: RoundTrip, unconfirmed: Collection[str]) -> int:
    """How many distinct fills of ``trip`` (opening and closing) are in ``unconfirmed``."""
    if not unconfirmed:
        return 0
    return len({f for f, _ in (*trip.open_fills, *trip.close_fills) if f in unconfirmed})


def storable_snapshots(snaps: Iterable[EquitySnapshot]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of the snapshots that fit, and ``"ts column=value"`` of the refused ones."""
    good: list[dict[str, Any]] = []
    refused: list[str] = []
    for snap in snaps:
        row = equity_row(snap)
        bad = first_bad_value(row, _EQUITY_NUMBERS)
        if bad is None:
            good.append(row)
        else:
            refused.append(f"{snap.ts.isoformat()} {bad}")
    return good, refused


def _raw_json(raw: Any) -> Any:
    """The broker payload a non-fill row was read with (``ACTIVITY_COLUMNS`` sends it as text)."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return None
    return raw


def activity_of(r: asyncpg.Record) -> ActivityRecord:
    return ActivityRecord(seq=r["seq"], activity_id=r["activity_id"], ts=r["ts"], activity_type=r["activity_type"] or "",
                          symbol=r["symbol"], side=r["side"], qty=r["qty"], price=r["price"],
                          net_amount=r["net_amount"], order_id=r["order_id"], parse_error=r["parse_error"],
                          replaces=r.get("replaces"), unconfirmed=bool(r.get("unconfirmed")),
                          raw=_raw_json(r.get("raw")))


# --- reads -------------------------------------------------------------------------------------

OVERLAP_SEQ = 5_000
RECENT_INGEST_S = 15
"""Activity rows are read past the high-water ``seq`` again when ingested this recently: a
transaction that drew a lower ``seq`` but committed later is still picked up (ids dedupe)."""


class Store:
    """One destination's reads and writes (the SQL is built once per destination)."""

    def __init__(self, pool: asyncpg.Pool, account_schema: str, slug: str,
                 series_pool: asyncpg.Pool | None = None) -> None:
        self.pool = pool
        self.series_pool = series_pool
        """The time-series database's pool (``equity_full_<slug>``) when it is not the primary one."""
        self.slug = slug
        self.schema = quote_ident(account_schema)
        self._open_sql = open_trades_sql(slug)
        self._closed_sql = closed_trades_sql(slug)
        self._equity_sql = equity_sql(slug)
        self._equity_table = f"public.{quote_ident(equity_table(slug))}"

    async def ensure_versions(self) -> None:
        await self.pool.execute("INSERT INTO public.ch_versions (slug) VALUES ($1) ON CONFLICT DO NOTHING", self.slug)

    async def activities(self, *, after_seq: int | None) -> list[ActivityRecord]:
        """Every activity (``None``), or those past ``after_seq`` plus recently ingested ones below it; by seq."""
        # REST and provisional (stream) fills, one row per execution: workers.manager.provisional.
        if after_seq is None:
            rows = await self.pool.fetch(effective_activities_sql(self.schema), self.slug)
        else:
            rows = await self.pool.fetch(
                effective_activities_sql(self.schema, "seq > $2 AND (seq > $3 OR ingested_at > now() - "
                                                      "make_interval(secs => $4))"),
                self.slug, max(0, after_seq - OVERLAP_SEQ), after_seq, float(RECENT_INGEST_S))
        return [activity_of(r) for r in rows]

    async def lines_of_days(self, days: Iterable[date]) -> list[ActivityRecord]:
        """The non-fill activities stored around these New York dates (a day either side: a date-only
        row may be stored at UTC midnight), to pair a split's or merger's lines ingested apart."""
        wanted = sorted(set(days))
        if not wanted:
            return []
        start = datetime.combine(wanted[0] - timedelta(days=1), time(0), UTC)
        end = datetime.combine(wanted[-1] + timedelta(days=2), time(0), UTC)
        rows = await self.pool.fetch(
            f"""SELECT {ACTIVITY_COLUMNS} FROM {self.schema}.activities
                WHERE destination = $1 AND ts >= $2 AND ts < $3 AND activity_type NOT IN ('FILL', 'PARTIAL_FILL')
                ORDER BY seq""", self.slug, start, end)
        return [activity_of(r) for r in rows]

    async def orders(self, order_ids: Iterable[str] | None) -> tuple[list[OrderMeta], list[str]]:
        """The orders with these ids (``None``: every order), and ``"id: why"`` of unusable rows."""
        cols = f"""SELECT order_id::text AS order_id, parent_order_id::text AS parent_order_id, order_type, order_class,
                       side, symbol, limit_price, stop_price FROM {self.schema}.orders WHERE destination = $1"""
        if order_ids is None:
            rows = await self.pool.fetch(cols, self.slug)
        else:
            ids = sorted({i for i in order_ids if i and uuid_or_none(i)})
            if not ids:
                return [], []
            rows = await self.pool.fetch(cols + " AND order_id = ANY($2::uuid[])", self.slug, ids)
        out: list[OrderMeta] = []
        unusable: list[str] = []
        for r in rows:
            try:
                out.append(OrderMeta(order_id=r["order_id"], order_type=r["order_type"], order_class=r["order_class"],
                                     parent_order_id=r["parent_order_id"], side=r["side"], symbol=r["symbol"],
                                     limit_price=r["limit_price"], stop_price=r["stop_price"]))
            except InvalidInput as exc:
                unusable.append(f"{r['order_id']}: {exc}")
        return out, unusable

    async def exit_orders(self, symbols: Sequence[str]) -> list[OpenOrder]:
        """Working exit-type orders of ``symbols``, newest first."""
        types = ", ".join(f"'{t}'" for t in EXIT_ORDER_TYPES)
        rows = await self.pool.fetch(
            f"""SELECT order_id::text AS order_id, parent_order_id::text AS parent_order_id, symbol, side, order_type,
                       limit_price, stop_price
                FROM {self.schema}.orders
                WHERE destination = $1 AND symbol = ANY($2::text[])
                  AND order_type IN ({types})
                  AND (status IS NULL OR status NOT IN ({WORKING_FILTER}))
                ORDER BY updated_at DESC NULLS LAST""",
            self.slug, list(symbols))
        return [OpenOrder(order_id=r["order_id"], parent_order_id=r["parent_order_id"], symbol=r["symbol"],
                          side=(r["side"] or "").lower(), order_type=(r["order_type"] or "").lower(),
                          limit_price=r["limit_price"], stop_price=r["stop_price"]) for r in rows]

    async def equity_bounds(self) -> tuple[datetime | None, Decimal | None]:
        """The newest stored snapshot instant and ``max(equity - net_deposits)`` (the drawdown peak)."""
        row = await (self.series_pool or self.pool).fetchrow(
            f"SELECT max(ts) AS last_ts, max(equity - net_deposits) AS max_excess FROM {self._equity_table}")
        return (row["last_ts"], row["max_excess"]) if row else (None, None)

    async def checkpoint(self) -> tuple[str, int] | None:
        """The stored checkpoint text and its ``last_seq``."""
        row = await self.pool.fetchrow("SELECT state::text AS state, last_seq FROM public.ch_fifo_state WHERE slug = $1",
                                       self.slug)
        return None if row is None else (row["state"], int(row["last_seq"]))

    # --- writes ------------------------------------------------------------------------------

    async def save_checkpoint(self, text: str, *, last_seq: int, fill_count: int) -> None:
        await self.pool.execute(
            """INSERT INTO public.ch_fifo_state (slug, state, last_seq, fill_count, replica, updated_at)
               VALUES ($1, $2::jsonb, $3, $4, $5, now())
               ON CONFLICT (slug) DO UPDATE SET state = EXCLUDED.state, last_seq = EXCLUDED.last_seq,
                   fill_count = EXCLUDED.fill_count, replica = EXCLUDED.replica, updated_at = now()""",
            self.slug, text, last_seq, fill_count, REPLICA_ID)

    async def write_open(self, rows: Sequence[OpenTradeRow], *, notify_channel: str | None, ids: Sequence[str],
                         as_of_ns: int, keep: Sequence[str] = ()) -> int | None:
        """Replace the open trades with ``rows`` (rows of ``keep`` stay as stored), NOTIFY ``notify_channel``
        when given; the new ``pos_version``."""
        args = columns([open_row(r) for r in rows], OPEN_COLS)
        record = await self.pool.fetchrow(self._open_sql, *args, self.slug, notify_channel is not None,
                                          notify_channel or "", list(ids), as_of_ns, list(keep))
        return None if record is None else int(record["pos_version"])

    async def write_closed(self, rows: Sequence[Mapping[str, Any]], removed: Sequence[str], *,
                           chunk: int = 5_000) -> int | None:
        """Upsert trip rows and delete ``removed`` (with the first chunk); the last ``closed_version``."""
        version: int | None = None
        for start in range(0, max(len(rows), 1), chunk):
            args = columns(rows[start:start + chunk], CLOSED_COLS)
            got = await self.pool.fetchval(self._closed_sql, *args, list(removed) if start == 0 else [], self.slug)
            version = int(got) if got is not None else version
        return version

    async def write_equity(self, rows: Sequence[Mapping[str, Any]], *, replace: bool = False) -> int:
        """Insert snapshot rows (an instant already stored is kept, or with ``replace`` re-stamped); the
        number written."""
        if not rows:
            return 0
        if self.series_pool is not None:  # rows first, then the version a reader polls for
            sql = equity_insert_sql(self.slug, replace=replace)
            inserted = int(await self.series_pool.fetchval(sql, *columns(rows, EQUITY_COLS)))
            if inserted:
                await self.pool.execute("UPDATE public.ch_versions SET equity_version = equity_version + 1, "
                                        "updated_at = now() WHERE slug = $1", self.slug)
            return inserted
        sql = equity_sql(self.slug, replace=True) if replace else self._equity_sql
        record = await self.pool.fetchrow(sql, *columns(rows, EQUITY_COLS), self.slug)
        return int(record["inserted"]) if record is not None else 0

    async def notify(self, channel: str, payloads: Sequence[str]) -> None:
        await self.pool.execute("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", channel, list(payloads))
