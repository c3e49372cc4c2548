"""The read side: every query the dashboard runs, memoised by destination and data version.

One pooled SQLAlchemy engine (psycopg2) per process. Results are cached with flask-caching under keys
that contain the destination slug and the relevant counter from ``public.ch_versions``
(``pos_version``, ``closed_version``, ``equity_version``, ``activity_version``): a new version is a
new key, so nothing is ever served stale and nothing needs invalidating. The version check itself is
one primary-key read of a tiny table and is never cached.

The equity series is the one large object (up to millions of points): it is kept per process as
numpy arrays and refreshed incrementally (only rows newer than the last one held are fetched), and
every chart downsamples the visible window from it (:func:`downsample`).
"""

from __future__ import annotations

import io
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from flask import Flask, g, has_request_context
from flask_caching import Cache
from sqlalchemy import text
from sqlalchemy.engine import Engine

from core.db import resolve_dsn
from core.destinations import closed_trades_table, equity_table, open_trades_table
from core.schema import Store, quote_ident
from core.settings import Settings
from dashboard import grid_sql
from dashboard.cancel import WATCHER, client_socket, watch_client
from dashboard.db import ExportSlots, cache_config, cache_key, f8, make_engine
from dashboard.equity_store import MAX_POINTS, EquitySeries, equity_window, load_equity, to_ns

__all__ = ["MAX_POINTS", "DestinationRow", "EquitySeries", "ReadModel", "UnknownDestination", "Versions",
           "cache_config", "f8"]

log = logging.getLogger(__name__)
T = TypeVar("T")
# Statements naming these read the time-series database (core.schema.table_store).
_SERIES_TABLES = re.compile(r"\b(?:equity_full_\w+|price_bars)\b")

PRICE_PATH_MAX_BARS = 1500  # a trade's price path: one-minute bars, merged into wider ones beyond this
VERSION_KINDS = ("pos", "closed", "equity", "activity")
OPEN_NUMBER_COLUMNS = ("qty", "avg_entry_price", "cost_basis", "mark_price", "market_value", "unrealized_pl",
                       "unrealized_plpc", "day_change", "day_change_pct", "exposure", "weight", "stop_price",
                       "take_profit_price")
ORDER_SEARCH_MAX_CHARS = 100


@dataclass(frozen=True, slots=True)
class Versions:
    """Data version counters of one destination (``public.ch_versions``)."""

    pos: int = 0
    closed: int = 0
    equity: int = 0
    activity: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"pos": self.pos, "closed": self.closed, "equity": self.equity, "activity": self.activity}


@dataclass(frozen=True, slots=True)
class DestinationRow:
    """A registry row (``public.ch_destinations``): no secrets, only the masked key."""

    slug: str
    name: str
    is_live: bool
    enabled: bool
    initial_deposit: float | None
    masked_key: str | None
    description: str


class UnknownDestination(grid_sql.GridRequestError):
    """A slug that is not in the registry (a client asked for it): answered with 400."""


class ReadModel:
    """All dashboard reads for one process. Thread-safe (the engine pools; the series store locks)."""

    def __init__(self, settings: Settings, dsn: str, *, app: Flask | None = None, engine: Engine | None = None):
        self.settings = settings
        self.dsn = dsn
        self.engine = engine or make_engine(dsn, timeout_s=settings.db_connect_timeout_s,
                                            statement_timeout_s=settings.dash_statement_timeout_s)
        # The time series (equity_full_<slug>, price_bars) live in a database of their own when
        # TIMESCALE_LIVE_CONN_STRING names one: each statement goes where the tables it names are.
        self.series_dsn = resolve_dsn(settings, Store.TIMESERIES) if settings.separate_timeseries else dsn
        self.series_engine = self.engine if self.series_dsn == dsn else make_engine(
            self.series_dsn, timeout_s=settings.db_connect_timeout_s,
            statement_timeout_s=settings.dash_statement_timeout_s)
        self._series_export_engine: Engine | None = None
        self._export_engine: Engine | None = None
        self._export_engine_lock = threading.Lock()
        self.export_slots = ExportSlots(settings.export_max_concurrent)
        self._flask = app or Flask("coldharbour-cache")
        self.cache = Cache(app=self._flask, config=cache_config(settings, dsn))
        self._series: dict[str, EquitySeries] = {}
        self._series_lock = threading.Lock()
        self.account_schema = settings.account_schema

    # -- plumbing ----------------------------------------------------------------------------------
    def _engine_for(self, sql: str) -> Engine:
        """The time-series engine for a statement on the time-series tables, else the primary one
        (no statement names both: they may be two databases)."""
        return self.series_engine if _SERIES_TABLES.search(sql) else self.engine

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """One statement on the read pool, cancelled if the requesting client hangs up."""
        with self._engine_for(sql).connect() as conn, watch_client(_canceller(conn)):
            result = conn.execute(text(sql), dict(params or {}))
            return [dict(r._mapping) for r in result]

    def memo(self, key_parts: Sequence[Any], compute: Callable[[], T], timeout_s: int = 300) -> T:
        """``compute()`` once per key. Keys hold the slug and the server's own data version (see
        :meth:`trusted`), never a version a client sent: a client cannot fill the cache."""
        key = cache_key(*key_parts)
        hit = self.cache.get(key)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        value = compute()
        self.cache.set(key, value, timeout=timeout_s)
        return value

    # -- exports (their own pool, see dashboard.db) ------------------------------------------------
    @property
    def export_engine(self) -> Engine:
        with self._export_engine_lock:
            if self._export_engine is None:
                limit = self.settings.export_max_concurrent
                self._export_engine = make_engine(
                    self.dsn, pool_size=limit, max_overflow=0, timeout_s=self.settings.db_connect_timeout_s,
                    statement_timeout_s=self.settings.export_statement_timeout_s,
                    application_name="coldharbour-dashboard-export")
            return self._export_engine

    def _export_engine_for(self, sql: str) -> Engine:
        if self.series_engine is self.engine or not _SERIES_TABLES.search(sql):
            return self.export_engine
        with self._export_engine_lock:
            if self._series_export_engine is None:
                self._series_export_engine = make_engine(
                    self.series_dsn, pool_size=self.settings.export_max_concurrent, max_overflow=0,
                    timeout_s=self.settings.db_connect_timeout_s,
                    statement_timeout_s=self.settings.export_statement_timeout_s,
                    application_name="coldharbour-dashboard-export")
            return self._series_export_engine

    @property
    def exports_in_flight(self) -> int:
        return self.export_slots.in_flight

    def export_count(self, query: grid_sql.GridQuery) -> int:
        """``count(*)`` of an export's selection, on the export pool (sizes an XLSX before writing it)."""
        with self._export_engine_for(query.sql).connect() as conn, watch_client(_canceller(conn)):
            return int(conn.execute(query.clause()).scalar_one())

    def export_rows(self, query: grid_sql.GridQuery, fetch_rows: int = 2_000) -> Iterator[Sequence[Any]]:
        """Every row of ``query`` from a server-side cursor on the export pool, ``fetch_rows`` at a time.

        Lazy: the connection is taken at the first ``next()`` and given back when the iterator ends or
        is closed (a client that goes away mid-download). A cursor lives in a transaction, so a long
        export reads one ``REPEATABLE READ`` snapshot while the manager keeps writing. Created inside
        a request, a client that hangs up also cancels a statement in progress (a long first FETCH).
        """
        sock = client_socket()

        def rows() -> Iterator[Sequence[Any]]:
            gone = threading.Event()  # sticky: a cancel between two FETCHes would find nothing to cancel
            with self._export_engine_for(query.sql).connect() as conn:
                cancel_statement = _canceller(conn)

                def cancel() -> None:
                    gone.set()
                    cancel_statement()

                streaming = conn.execution_options(isolation_level="REPEATABLE READ", stream_results=True,
                                                   yield_per=fetch_rows)
                with WATCHER.watch(cancel, sock) if sock is not None else _nothing():
                    for row in streaming.execute(query.clause()):
                        if gone.is_set():
                            log.info("export stopped: its client went away")
                            return
                        yield row

        return rows()

    def dispose(self) -> None:
        """Close every pooled connection (tests, shutdown)."""
        self.engine.dispose()
        if self.series_engine is not self.engine:
            self.series_engine.dispose()
        for extra in (self._export_engine, self._series_export_engine):
            if extra is not None:
                extra.dispose()

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True

    # -- registry and versions ---------------------------------------------------------------------
    def versions(self) -> dict[str, Versions]:
        """Every destination's counters: the cheap "what changed?" question (never cached)."""
        try:
            rows = self.rows(
                "SELECT slug, pos_version, closed_version, equity_version, activity_version FROM public.ch_versions"
            )
        except Exception:  # noqa: BLE001 - an unmigrated database has no versions yet
            log.debug("ch_versions not readable", exc_info=True)
            return {}
        return {
            r["slug"]: Versions(r["pos_version"], r["closed_version"], r["equity_version"], r["activity_version"])
            for r in rows
        }

    def _copy_out(self, sql: str) -> bytes:
        """``COPY (…) TO STDOUT`` through one pooled raw connection: bulk reads without row objects."""
        buffer = io.BytesIO()
        raw = self._engine_for(sql).raw_connection()
        try:
            cur = raw.cursor()
            with watch_client(raw.driver_connection.cancel):  # type: ignore[union-attr]
                cur.copy_expert(sql, buffer)
            cur.close()
            raw.commit()
        finally:
            raw.close()
        return buffer.getvalue()

    def version_of(self, slug: str) -> Versions:
        rows = self.rows(
            "SELECT pos_version, closed_version, equity_version, activity_version FROM public.ch_versions "
            "WHERE slug = :s",
            {"s": slug},
        )
        if not rows:
            return Versions()
        r = rows[0]
        return Versions(r["pos_version"], r["closed_version"], r["equity_version"], r["activity_version"])

    def current(self, slug: str) -> Versions:
        """The server's own versions of ``slug``, read once per request; :class:`UnknownDestination`
        for a slug that is not registered."""
        held: dict[str, Versions] | None = g.setdefault("ch_versions", {}) if has_request_context() else None
        if held is not None and slug in held:
            return held[slug]
        rows = self.rows(
            "SELECT pos_version, closed_version, equity_version, activity_version FROM public.ch_versions "
            "WHERE slug = :s",
            {"s": slug},
        )
        if not rows:
            raise UnknownDestination(f"unknown destination {str(slug)[:48]!r}")
        r = rows[0]
        v = Versions(r["pos_version"], r["closed_version"], r["equity_version"], r["activity_version"])
        if held is not None:
            held[slug] = v
        return v

    def trusted(self, slug: str, kind: str, version: int | None = None) -> int:
        """The version to key ``slug``'s ``kind`` data by: always the server's own.

        ``version`` (what the caller last saw, often sent by the browser) is ignored on purpose:
        were it part of a cache key, any client could fill the cache with one entry per number.
        """
        del version
        return int(getattr(self.current(slug), kind))

    def destinations(self) -> list[DestinationRow]:
        def load() -> list[DestinationRow]:
            try:
                rows = self.rows(
                    "SELECT slug, name, is_live, enabled, initial_deposit, masked_key, description "
                    "FROM public.ch_destinations ORDER BY name"
                )
            except Exception:  # noqa: BLE001 - not migrated yet: no destinations configured
                log.debug("ch_destinations not readable", exc_info=True)
                return []
            return [
                DestinationRow(
                    r["slug"], r["name"], bool(r["is_live"]), bool(r["enabled"]),
                    float(r["initial_deposit"]) if r["initial_deposit"] is not None else None,
                    r["masked_key"], r["description"] or "",
                )
                for r in rows
            ]

        # the registry changes only when the workers restart with a new destinations file
        token = tuple(sorted(self.versions()))
        return self.memo(("dests", token), load, timeout_s=30)

    def destination(self, slug: str) -> DestinationRow | None:
        return next((d for d in self.destinations() if d.slug == slug), None)

    # -- open positions ----------------------------------------------------------------------------
    def open_positions(self, slug: str, version: int | None = None) -> list[dict[str, Any]]:
        v = self.trusted(slug, "pos", version)
        table = quote_ident(open_trades_table(slug))

        def load() -> list[dict[str, Any]]:
            numbers = ", ".join(f"{f8(c)} AS {c}" for c in OPEN_NUMBER_COLUMNS)
            return self.rows(
                f"""SELECT symbol, side, entry_time, mark_ts, price_source, price_stale, qty_mismatch, updated_at,
                           provisional_fills, {numbers}
                    FROM public.{table} ORDER BY symbol"""
            )

        return self.memo(("open", slug, v), load)

    # -- closed trades -----------------------------------------------------------------------------
    def closed_block(self, slug: str, request: Mapping[str, Any], tz: str) -> dict[str, Any]:
        """One infinite-row-model block: ``{"rowData": [...], "rowCount": n}`` (server-side sort/filter)."""
        v = self.trusted(slug, "closed")
        table = grid_sql.grid_table(grid_sql.GridKind.CLOSED_TRADES, slug, self.account_schema)
        return self.grid_block(("closed", slug, v), table, request, tz)

    def grid_block(
        self, key: Sequence[Any], table: grid_sql.GridTable, request: Mapping[str, Any], tz: str
    ) -> dict[str, Any]:
        req = {k: request.get(k) for k in ("startRow", "endRow", "sortModel", "filterModel")}

        def load_count() -> int:
            q = grid_sql.count_query(table, req.get("filterModel"), tz=tz)
            return int(self.rows(q.sql, q.params)[0]["n"])

        # the count first (one per filter and version): it tells which end of the order is nearer
        count = self.memo((*key, "count", req.get("filterModel"), tz), load_count)

        def load_rows() -> list[dict[str, Any]]:
            backwards = reversed_request(table, req, count)
            if backwards is not None:
                q = grid_sql.page_query(table, backwards, tz=tz)
                return [_jsonable(r, tz) for r in reversed(self.rows(q.sql, q.params))]
            q = grid_sql.page_query(table, req, tz=tz)
            return [_jsonable(r, tz) for r in self.rows(q.sql, q.params)]

        rows = self.memo((*key, "rows", req, tz), load_rows)
        return {"rowData": rows, "rowCount": count}

    def closed_pl(self, slug: str, version: int | None = None) -> pd.DataFrame:
        """Per trade: exit time, symbol, exit reason, net P&L, return (for trade stats and breakdowns)."""
        v = self.trusted(slug, "closed", version)
        table = quote_ident(closed_trades_table(slug))

        def load() -> pd.DataFrame:
            sql = (
                f"COPY (SELECT (extract(epoch FROM exit_time) * 1000000)::int8 AS exit_us, symbol, exit_reason, "
                f"{f8('net_pl')} AS net_pl, {f8('return_pct')} AS return_pct, holding_s, {f8('fees')} AS fees "
                f"FROM public.{table} ORDER BY exit_time, trade_id) TO STDOUT WITH (FORMAT csv, HEADER true)"
            )
            buffer = io.BytesIO(self._copy_out(sql))
            frame = pd.read_csv(buffer, dtype={"symbol": str, "exit_reason": str})
            frame["exit_time"] = pd.to_datetime(frame.pop("exit_us") * 1000, utc=True)
            return frame

        return self.memo(("closed_pl", slug, v), load)

    def trade(self, slug: str, trade_id: str) -> dict[str, Any] | None:
        table = quote_ident(closed_trades_table(slug))
        rows = self.rows(f"SELECT * FROM public.{table} WHERE trade_id = :t", {"t": trade_id})
        return rows[0] if rows else None

    def trade_orders(self, slug: str, order_ids: Sequence[str]) -> list[dict[str, Any]]:
        ids = [i for i in order_ids if i]
        if not ids:
            return []
        schema = quote_ident(self.account_schema)
        return self.rows(
            f"""SELECT order_id::text AS order_id, symbol, side, order_type, order_class, {f8('qty')} AS qty,
                       {f8('filled_qty')} AS filled_qty, {f8('filled_avg_price')} AS filled_avg_price,
                       {f8('limit_price')} AS limit_price, {f8('stop_price')} AS stop_price, status,
                       submitted_at, filled_at, parent_order_id::text AS parent_order_id
                FROM {schema}.orders WHERE destination = :d
                  AND (order_id::text = ANY(:ids) OR parent_order_id::text = ANY(:ids))
                ORDER BY submitted_at""",
            {"d": slug, "ids": list(ids)},
        )

    # -- price path ---------------------------------------------------------------------------------
    def price_bars(self, symbol: str, start: datetime, end: datetime,
                   max_bars: int = PRICE_PATH_MAX_BARS) -> list[dict[str, Any]]:
        """The manager's one-minute bars of ``symbol`` in ``[start, end]``, oldest first.

        Wider than ``max_bars`` minutes, the bars are merged into equal buckets in SQL (open of the
        first, high/low of all, close of the last), so a long trade's path stays a few thousand points.
        Empty when no bars cover the window, or when the database predates ``price_bars``.
        """
        from sqlalchemy.exc import ProgrammingError

        minutes = max(1.0, (end - start).total_seconds() / 60)
        width = max(1, int(np.ceil(minutes / max_bars)))
        params = {"s": symbol, "a": start, "b": end, "w": width}
        if width == 1:
            sql = """SELECT ts, open, high, low, close, ticks FROM public.price_bars
                     WHERE symbol = :s AND ts >= date_trunc('minute', CAST(:a AS timestamptz)) AND ts <= :b
                     ORDER BY ts"""
        else:
            sql = """SELECT date_bin(make_interval(mins => :w), ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS ts,
                            (array_agg(open ORDER BY ts))[1] AS open, max(high) AS high, min(low) AS low,
                            (array_agg(close ORDER BY ts DESC))[1] AS close, sum(ticks)::int AS ticks
                     FROM public.price_bars
                     WHERE symbol = :s AND ts >= date_trunc('minute', CAST(:a AS timestamptz)) AND ts <= :b
                     GROUP BY 1 ORDER BY 1"""
        try:
            return self.rows(sql, params)
        except ProgrammingError:  # no price_bars table yet (workers not migrated): no price path
            log.warning("price_bars is missing: run the workers once to migrate the schema")
            return []

    # -- activities --------------------------------------------------------------------------------
    def activities_block(self, slug: str, request: Mapping[str, Any], tz: str) -> dict[str, Any]:
        v = self.trusted(slug, "activity")
        table = grid_sql.grid_table(grid_sql.GridKind.ACTIVITIES, slug, self.account_schema)
        return self.grid_block(("acts", slug, v), table, request, tz)

    def orders(self, slug: str, search: str = "", limit: int = 200, tz: str | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` orders whose symbol, status or ids contain ``search`` (literally: ``%``
        and ``_`` match themselves). A search longer than :data:`ORDER_SEARCH_MAX_CHARS` raises
        :class:`~dashboard.grid_sql.GridRequestError`."""
        schema = quote_ident(self.account_schema)
        needle = search.strip()
        if len(needle) > ORDER_SEARCH_MAX_CHARS:
            raise grid_sql.GridRequestError(f"search is limited to {ORDER_SEARCH_MAX_CHARS} characters")
        if "\x00" in needle:
            raise grid_sql.GridRequestError("search contains a NUL character")
        pattern = f"%{grid_sql.like_escape(needle)}%" if needle else "%"
        rows = self.rows(
            f"""SELECT submitted_at, symbol, side, order_type, order_class, {f8('qty')} AS qty,
                       {f8('filled_qty')} AS filled_qty, {f8('filled_avg_price')} AS filled_avg_price, status,
                       order_id::text AS order_id, client_order_id
                FROM {schema}.orders WHERE destination = :d
                  AND (symbol ILIKE :p ESCAPE '\\' OR status ILIKE :p ESCAPE '\\' OR order_id::text ILIKE :p ESCAPE '\\'
                       OR client_order_id ILIKE :p ESCAPE '\\')
                ORDER BY submitted_at DESC NULLS LAST LIMIT :n""",
            {"d": slug, "p": pattern, "n": limit},
        )
        return [_jsonable(r, tz) for r in rows]

    # -- health ------------------------------------------------------------------------------------
    def heartbeats(self) -> list[dict[str, Any]]:
        schema = quote_ident(self.account_schema)
        try:
            return self.rows(
                f"""SELECT destination, service, replica, state, last_event_at, lag_s, rows_ingested, errors,
                           last_error, details, updated_at,
                           extract(epoch FROM now() - updated_at) AS age_s
                    FROM {schema}.heartbeats ORDER BY destination, service"""
            )
        except Exception:  # noqa: BLE001 - not migrated yet
            log.debug("heartbeats not readable", exc_info=True)
            return []

    # -- equity ------------------------------------------------------------------------------------
    def equity_series(self, slug: str, version: int | None = None) -> EquitySeries:
        """The full curve, refreshed incrementally when ``equity_version`` moved."""
        v = self.trusted(slug, "equity", version)
        with self._series_lock:
            held = self._series.get(slug)
            if held is not None and held.version == v:
                return held
            table = quote_ident(equity_table(slug))
            first = self.rows(f"SELECT min(ts) AS t FROM public.{table}")[0]["t"]
            first_ns = to_ns(first) if first is not None else None
            if held is None or held.first_ts_ns != first_ns or len(held) == 0:
                fresh = load_equity(self._copy_out, table, None)
            else:
                fresh = held.extended(load_equity(self._copy_out, table, int(held.ts_ns[-1])))
            fresh.version = v
            fresh.first_ts_ns = first_ns
            self._series[slug] = fresh
            return fresh

    def session_returns(self, slug: str, version: int | None = None) -> pd.Series:
        """Cash-flow-neutral returns per NYSE session (``core.metrics``), memoised per equity version."""
        from dashboard import analytics

        series = self.equity_series(slug, version)
        return self.memo(("returns", slug, series.version, len(series)),
                         lambda: analytics.session_returns(series.ts_ns, series.equity, series.net_deposits))

    def daily_equity(self, slug: str, tz: str, version: int | None = None) -> pd.DataFrame:
        """Daily closing equity and net deposits in ``tz`` (index: naive local dates)."""
        series = self.equity_series(slug, version)

        def load() -> pd.DataFrame:
            if len(series) == 0:
                return pd.DataFrame(columns=["equity", "net_deposits"])
            idx = pd.DatetimeIndex(series.ts_ns.view("datetime64[ns]"), tz="UTC").tz_convert(tz)
            frame = pd.DataFrame({"equity": series.equity, "net_deposits": series.net_deposits}, index=idx)
            # each day's last point as stored: groupby().last() would skip a NaN (a corrupt stored value)
            # and show an older figure as if it were current
            day = idx.normalize().tz_localize(None)
            last = ~day.duplicated(keep="last")
            daily = frame[last]
            daily.index = day[last]
            daily.index.name = "date"
            return daily

        return self.memo(("daily", slug, series.version, len(series), tz), load)

    def equity_window(
        self, slug: str, start_ns: int | None = None, end_ns: int | None = None, max_points: int = MAX_POINTS
    ) -> dict[str, np.ndarray]:
        """Downsampled equity, drawdown and deposit markers within ``[start_ns, end_ns]``."""
        return equity_window(self.equity_series(slug), start_ns, end_ns, max_points)


def _canceller(conn: Any) -> Callable[[], None]:
    """Cancels what ``conn`` (a SQLAlchemy connection) is running, from any thread."""
    def cancel() -> None:
        conn.connection.driver_connection.cancel()

    return cancel


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def reversed_request(table: grid_sql.GridTable, request: Mapping[str, Any], count: int) -> dict[str, Any] | None:
    """The same block read from the other end of the order, when that end is nearer; else ``None``.

    ``OFFSET n`` walks ``n`` rows, so a block deep in the second half of a 100k-row order costs a walk
    of most of the table. Reversing every sort key (the tie-breaking key columns included, which the
    grid orders ascending) reverses the whole order exactly, NULL placement included (PostgreSQL puts
    NULLs last ascending, first descending), so rows ``[start, end)`` are rows
    ``[count - end, count - start)`` of the reversed order, read backwards. Anything unusual (a
    malformed request, too many keys) gets ``None``: the normal path validates and answers it.
    """
    start, end = request.get("startRow"), request.get("endRow")
    if (isinstance(start, bool) or isinstance(end, bool) or not isinstance(start, int) or not isinstance(end, int)
            or start < 0 or end <= start or start + end <= count or start >= count):
        return None
    sort_model = request.get("sortModel") or []
    if not isinstance(sort_model, list):
        return None
    flipped: list[dict[str, Any]] = []
    for item in sort_model:
        if not isinstance(item, Mapping) or item.get("sort") not in ("asc", "desc"):
            return None
        flipped.append({"colId": item.get("colId"), "sort": "asc" if item["sort"] == "desc" else "desc"})
    seen = {item["colId"] for item in flipped}
    flipped += [{"colId": k, "sort": "desc"} for k in table.key if k not in seen]
    if len(flipped) > grid_sql.MAX_SORT_KEYS:
        return None
    return {"startRow": max(0, count - end), "endRow": count - start, "sortModel": flipped,
            "filterModel": request.get("filterModel")}


def _jsonable(row: Mapping[str, Any], tz: str | None = None) -> dict[str, Any]:
    """JSON-safe row; timestamps as ``YYYY-MM-DD HH:MM:SS`` wall time in ``tz`` (ISO UTC without one)."""
    zone = ZoneInfo(tz) if tz else None
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, datetime):
            out[k] = v.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") if zone else v.astimezone(UTC).isoformat()
        elif v is None or isinstance(v, bool | int | float | str):
            out[k] = v
        elif hasattr(v, "is_finite"):  # Decimal; beyond float range or NaN: an empty (flagged) cell
            number = float(v)
            out[k] = number if np.isfinite(number) else None
        else:
            out[k] = str(v)
    return out
