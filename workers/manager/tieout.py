"""The tie-out loop: the book against the broker on a schedule, stored with its history, repaired.

Per owned destination, every ``TIEOUT_INTERVAL_S``: three REST calls through the destination's own
broker client (``/v2/positions``, ``/v2/account``, ``/v2/account/portfolio/history?period=ND&timeframe=1D``),
the book read from the tables the manager writes and the raw activities (the book is not kept a
second time), :func:`core.tieout.tie_out`, and one row per destination-day in ``public.ch_tieout``
(a new row when the status or its causes change, so the history says when it stopped tying out).

The repair path: when an open difference is caused by missing raw data, a ``ch_backfill_requests``
row is written and the ingester's own backfill (:meth:`workers.ingester.loops.Ingester.backfill`:
idempotent upserts, checkpoints only move forward) re-reads that window; the next pass shows the
result. One request per destination at a time, and none again within ``REPAIR_COOLDOWN_PASSES`` intervals.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import asyncpg

from core.destinations import Destination, equity_table, open_trades_table
from core.instruments import instrument_for
from core.schema import quote_ident
from core.settings import Settings
from core.tieout import (
    BookDay,
    BookPosition,
    BrokerDay,
    BrokerPositionFigures,
    Cause,
    Difference,
    PendingFill,
    Status,
    TieOut,
    Tolerances,
    average_cost,
    is_corporate_action,
    ny_day,
    status_of,
    tie_out,
)
from workers.alpaca import BrokerAccount, BrokerPosition, PortfolioHistory
from workers.alpaca.budget import Priority, spending
from workers.errors import describe
from workers.manager.port import BrokerPort
from workers.manager.provisional import effective_activities_sql

if TYPE_CHECKING:
    from workers.manager.service import AccountManager

log = logging.getLogger("workers.manager.tieout")

TIEOUT_TICK_S = 1.0
"""How often the loop looks for a destination that is due (each is due every ``TIEOUT_INTERVAL_S``)."""
REPAIR_COOLDOWN_PASSES = 2
"""A destination's next repair backfill waits this many tie-out intervals after the last one closed
(600 s at the default interval: bounds the REST cost of a cause that a backfill cannot repair)."""
CALLS_PER_PASS = 3
"""REST calls one tie-out pass makes (positions, account, portfolio history)."""
TIEOUT_CHANNEL = "ch_tieout"
"""NOTIFY hint (payload: the destination slug) after a pass is stored."""
FILL_TYPES = ("FILL", "PARTIAL_FILL")
BOOKED_SQL = ("(parse_error IS NULL OR parse_error ~ '^activity_type: unknown [^;]*$') "
              "AND lower(coalesce(raw::jsonb->>'status', '')) IN "
              "('', 'executed', 'filled', 'settled', 'correct', 'corrected', 'correction')")
"""The stored activities that move the book (as :mod:`workers.manager.interpret` books them): a type
Alpaca may add one day still books its ``net_amount``; a canceled, pending or rejected one nothing
(``core.activity_types.status_effect``)."""


def tolerances(settings: Settings) -> Tolerances:
    return Tolerances(position_usd=Decimal(str(settings.tieout_position_tolerance_usd)),
                      account_day_usd=Decimal(str(settings.tieout_account_day_tolerance_usd)))


def broker_figures(positions: Sequence[BrokerPosition]) -> list[BrokerPositionFigures]:
    """The parseable ``/v2/positions`` items as tie-out records."""
    return [BrokerPositionFigures(symbol=p.symbol, qty=p.qty, cost_basis=p.cost_basis, market_value=p.market_value,
                                  current_price=p.current_price, asset_class=p.asset_class)
            for p in positions if p.qty is not None and not p.parse_error]


def broker_days(history: PortfolioHistory) -> list[BrokerDay]:
    """Daily points by their New York day (Alpaca stamps a day at its midnight), with their cashflow."""
    out: list[BrokerDay] = []
    for i, ts in enumerate(history.timestamps):
        equity = history.equity[i] if i < len(history.equity) else None
        flows = {kind: v[i] for kind, v in history.cashflow.items() if i < len(v) and v[i] is not None and v[i] != 0}
        out.append(BrokerDay(day=ny_day(ts), equity=equity, cashflow={k: Decimal(v) for k, v in flows.items() if v}))
    return out


class TieoutReader:
    """The book's side of one destination: the SQL over the manager's tables and the raw activities."""

    def __init__(self, pool: asyncpg.Pool, series_pool: asyncpg.Pool | None, account_schema: str, slug: str) -> None:
        self.pool = pool
        self.series_pool = series_pool or pool
        self.slug = slug
        schema = quote_ident(account_schema)
        self.schema = schema
        self._eff = effective_activities_sql(schema, BOOKED_SQL)
        self._open = (f"SELECT symbol, qty, avg_entry_price, mark_price, price_source, mark_ts, price_stale "
                      f"FROM public.{quote_ident(open_trades_table(slug))}")
        self._equity = (f"SELECT DISTINCT ON (d) (ts AT TIME ZONE 'America/New_York')::date AS d, equity "
                        f"FROM public.{quote_ident(equity_table(slug))} WHERE ts >= $1 ORDER BY d, ts DESC")

    async def refresh_seeded_days(self, days: Sequence[tuple[date, Decimal]]) -> int:
        """Past days whose end-of-day point is the seed's copy of the broker's history (``source =
        'history'``) take the broker's figure as it is now; returns the days changed.

        The seed copies the history once, on the first run. Alpaca's end-of-day point can repeat the
        previous day's equity for a while before it is corrected (a documented quirk); a copy taken in
        that window would keep the wrong figure for good, and the day would never tie out. Only such
        copies move: a day that has live snapshots after its seeded point keeps them.
        """
        if not days:
            return 0
        table = f"public.{quote_ident(equity_table(self.slug))}"
        rows = await self.series_pool.fetch(
            f"""WITH v AS (SELECT * FROM unnest($1::date[], $2::numeric[]) AS v(d, equity)),
                    last AS (SELECT DISTINCT ON ((ts AT TIME ZONE 'America/New_York')::date)
                                    (ts AT TIME ZONE 'America/New_York')::date AS d, ts, source, equity
                             FROM {table} WHERE ts >= $3 ORDER BY (ts AT TIME ZONE 'America/New_York')::date, ts DESC)
                UPDATE {table} AS e SET equity = v.equity
                FROM last JOIN v USING (d)
                WHERE e.ts = last.ts AND last.source = 'history' AND last.equity <> v.equity
                RETURNING e.ts""",
            [d for d, _ in days], [e for _, e in days], datetime.combine(min(d for d, _ in days), datetime.min.time(), UTC)
            - timedelta(days=1))
        if rows:
            await self.pool.execute("UPDATE public.ch_versions SET equity_version = equity_version + 1, updated_at = now() "
                                    "WHERE slug = $1", self.slug)
        return len(rows)

    async def positions(self) -> list[BookPosition]:
        rows = await self.pool.fetch(self._open)
        return [BookPosition(symbol=r["symbol"], qty=r["qty"], avg_entry_price=r["avg_entry_price"],
                             mark_price=r["mark_price"], price_source=r["price_source"], mark_ts=r["mark_ts"],
                             mark_stale=bool(r["price_stale"])) for r in rows]

    async def cash(self) -> Decimal:
        """Cash as the stored activities book it: fills at ``qty x price x multiplier``, the rest at net amount."""
        rows = await self.pool.fetch(
            f"""WITH eff AS ({self._eff})
                SELECT symbol, sum(CASE WHEN lower(side) LIKE 'buy%' THEN -qty * price ELSE qty * price END) AS cash
                FROM eff WHERE activity_type IN ('FILL', 'PARTIAL_FILL') AND qty IS NOT NULL AND price IS NOT NULL
                GROUP BY symbol
                UNION ALL
                SELECT NULL, sum(net_amount) FROM eff WHERE activity_type NOT IN ('FILL', 'PARTIAL_FILL')""",
            self.slug)
        total = Decimal(0)
        for r in rows:
            if r["cash"] is not None:
                total += r["cash"] * (_multiplier(r["symbol"]) if r["symbol"] else 1)
        return total

    async def pending_fills(self, since: datetime) -> list[PendingFill]:
        """Filled quantity of orders (as the broker's orders show it) that no stored fill books."""
        rows = await self.pool.fetch(
            f"""WITH eff AS ({self._eff}),
                booked AS (SELECT order_id, sum(qty) AS qty FROM eff
                           WHERE activity_type IN ('FILL', 'PARTIAL_FILL') GROUP BY order_id)
                SELECT o.order_id::text AS order_id, o.symbol, o.side, o.filled_qty - COALESCE(b.qty, 0) AS qty,
                       COALESCE(o.filled_avg_price, 0) AS price, COALESCE(o.filled_at, o.updated_at) AS ts
                FROM {self.schema}.orders o LEFT JOIN booked b ON b.order_id = o.order_id::text
                WHERE o.destination = $2 AND o.filled_qty > COALESCE(b.qty, 0) AND o.symbol IS NOT NULL
                  AND COALESCE(o.filled_at, o.updated_at) >= $3""",
            self.slug, self.slug, since)
        return [PendingFill(symbol=r["symbol"], qty=r["qty"] if (r["side"] or "").startswith("buy") else -r["qty"],
                            price=r["price"], ts=r["ts"], order_id=r["order_id"]) for r in rows if r["ts"] is not None]

    async def days(self, since: datetime) -> tuple[dict[date, BookDay], set[str]]:
        """The book's days since ``since``: end-of-day equity and non-trade flows; corporate-action symbols."""
        # A date-only posting is dated by its own ``date`` (the raw table stamps it at UTC midnight,
        # which is the evening before in New York); anything else by its New York day.
        flows = await self.pool.fetch(
            f"""WITH eff AS ({self._eff})
                SELECT CASE WHEN raw::jsonb->>'date' ~ '^\\d{{4}}-\\d{{2}}-\\d{{2}}$' THEN (raw::jsonb->>'date')::date
                            ELSE (ts AT TIME ZONE 'America/New_York')::date END AS d,
                       activity_type, sum(net_amount) AS amount,
                       array_agg(DISTINCT symbol) FILTER (WHERE symbol IS NOT NULL) AS symbols
                FROM eff WHERE ts >= $2 AND activity_type NOT IN ('FILL', 'PARTIAL_FILL')
                GROUP BY 1, 2""",
            self.slug, since)
        equity = await self.series_pool.fetch(self._equity, since)
        by_day: dict[date, dict[str, Decimal]] = {}
        actions: dict[date, int] = {}
        corporate: set[str] = set()
        for r in flows:
            if r["amount"]:
                by_day.setdefault(r["d"], {})[r["activity_type"]] = r["amount"]
            if is_corporate_action(r["activity_type"]):
                actions[r["d"]] = actions.get(r["d"], 0) + 1
                corporate.update(r["symbols"] or ())
        eod = {r["d"]: r["equity"] for r in equity}
        days = {d: BookDay(day=d, equity=eod.get(d), flows=by_day.get(d, {}), corporate_actions=actions.get(d, 0))
                for d in set(by_day) | set(eod) | set(actions)}
        return days, corporate

    async def average_cost(self, symbols: Sequence[str]) -> dict[str, Decimal]:
        """The broker's way of costing the held ``symbols``: average cost over their stored fills and the
        lines of their corporate actions (signed quantities at the cost the broker carries: a split's
        shares out and in, a symbol change's or a merger's old symbol out and new one in)."""
        if not symbols:
            return {}
        rows = await self.pool.fetch(
            f"""WITH eff AS ({self._eff})
                SELECT symbol, side, qty, price, activity_type FROM eff
                WHERE symbol = ANY($2::text[]) AND qty IS NOT NULL AND price IS NOT NULL ORDER BY ts, seq""",
            self.slug, list(symbols))
        lines: list[tuple[str, Decimal, Decimal]] = []
        for r in rows:
            if r["activity_type"] in FILL_TYPES:
                lines.append((r["symbol"], r["qty"] if (r["side"] or "").startswith("buy") else -r["qty"], r["price"]))
            elif is_corporate_action(r["activity_type"]):
                lines.append((r["symbol"], r["qty"], r["price"]))  # signed on the activity itself
        return average_cost(lines)


def _multiplier(symbol: str) -> Decimal:
    try:
        return instrument_for(symbol).multiplier
    except ValueError:
        return Decimal(1)


async def compute(reader: TieoutReader, broker: BrokerPort, settings: Settings, *, now: datetime | None = None,
                  since: datetime | None = None) -> TieOut:
    """One tie-out of a destination (three broker calls)."""
    now = now or datetime.now(UTC)
    history_days = settings.tieout_history_days
    window_start = since or now - timedelta(days=history_days)
    period_days = max(1, (now - window_start).days + 1)
    positions = await broker.get_positions()
    account = await broker.get_account()
    history = await broker.get_portfolio_history(period=f"{period_days}D", timeframe="1D")
    book = await reader.positions()
    theirs = broker_figures(positions)
    days, corporate = await reader.days(window_start)
    pending = await reader.pending_fills(window_start)
    held = sorted({p.symbol for p in book} & {p.symbol for p in positions})
    return tie_out(now=now, book_positions=book, broker_positions=theirs, book_cash=await reader.cash(),
                   broker_cash=account.cash, broker_equity=account.equity, pending=pending,
                   corporate_symbols=corporate, avg_cost=await reader.average_cost(held),
                   broker_days=[d for d in broker_days(history) if d.day >= ny_day(window_start)], book_days=days,
                   base_value_null=history.base_value is None and bool(history.timestamps),
                   tolerances=tolerances(settings), broker_positions_value=_positions_value(account))


def _positions_value(account: BrokerAccount) -> Decimal | None:
    """The account answer's own value of its positions (Alpaca's short market value is negative)."""
    if account.long_market_value is None or account.short_market_value is None:
        return None
    return account.long_market_value + account.short_market_value


# --- storage -----------------------------------------------------------------------------------------
def _causes(diffs: Sequence[Difference], tol: Tolerances) -> list[str]:
    return sorted({d.cause.value for d in diffs if d.open and status_of([d], tol) is not Status.TIED_OUT})


def _unexplained(diffs: Sequence[Difference]) -> Decimal:
    return sum((abs(d.amount_usd) for d in diffs if d.open and d.cause is Cause.UNEXPLAINED), Decimal(0))


async def store(pool: asyncpg.Pool, slug: str, report: TieOut, tol: Tolerances) -> int:
    """Write the report: the latest row of each destination-day is updated while its status and causes
    stay the same, else a new row starts (the history). Returns the rows inserted."""
    rows: list[tuple[date | None, str, Decimal | None, Decimal | None, Decimal | None, Decimal | None,
                     Decimal, list[str], str]] = [
        (None, report.status.value, report.book_cash, report.broker_cash, report.book_equity, report.broker_equity,
         _unexplained(report.differences), _causes(report.differences, tol),
         json.dumps([d.to_dict() for d in report.differences]))]
    for one in report.days:
        rows.append((one.day, one.status.value, None, None, one.book_equity, one.broker_equity,
                     _unexplained(one.differences), _causes(one.differences, tol),
                     json.dumps([d.to_dict() for d in one.differences])))
    inserted = 0
    async with pool.acquire() as conn, conn.transaction():
        latest = {r["day"]: r for r in await conn.fetch(
            """SELECT DISTINCT ON (day) id, day, status, causes FROM public.ch_tieout WHERE destination = $1
               ORDER BY day, id DESC""", slug)}
        for day, status, bc, brc, be, bre, unexplained, causes, diffs in rows:
            last = latest.get(day)
            if last is not None and last["status"] == status and list(last["causes"]) == causes:
                await conn.execute(
                    """UPDATE public.ch_tieout SET book_cash = $2, broker_cash = $3, book_equity = $4,
                       broker_equity = $5, unexplained_usd = $6, differences = $7::jsonb, checked_at = now()
                       WHERE id = $1""", last["id"], bc, brc, be, bre, unexplained, diffs)
            else:
                await conn.execute(
                    """INSERT INTO public.ch_tieout (destination, day, status, book_cash, broker_cash, book_equity,
                       broker_equity, unexplained_usd, causes, differences)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb)""",
                    slug, day, status, bc, brc, be, bre, unexplained, causes, diffs)
                inserted += 1
        await conn.execute("SELECT pg_notify($1, $2)", TIEOUT_CHANNEL, slug)
    return inserted


# --- repair ------------------------------------------------------------------------------------------
async def repair_due(pool: asyncpg.Pool, slug: str, cooldown_s: float) -> bool:
    """No request open for ``slug`` and none closed within the cooldown."""
    row = await pool.fetchrow(
        """SELECT count(*) FILTER (WHERE done_at IS NULL) AS open,
                  count(*) FILTER (WHERE done_at > now() - make_interval(secs => $2)) AS recent
           FROM public.ch_backfill_requests WHERE destination = $1""", slug, cooldown_s)
    return row is not None and row["open"] == 0 and row["recent"] == 0


async def request_and_run_backfill(pool: asyncpg.Pool, settings: Settings, dest: Destination, *, since: datetime,
                                   reason: str) -> int:
    """Record the request, run the ingester's backfill of ``[since, now]``, close the request. Rows read."""
    from workers.ingester.loops import Ingester

    request_id = await pool.fetchval(
        """INSERT INTO public.ch_backfill_requests (destination, since, reason, started_at)
           VALUES ($1, $2, $3, now()) RETURNING id""", dest.slug, since, reason[:500])
    ingester = Ingester(settings=settings, destination=dest, pool=pool, since=since)
    try:
        with spending(Priority.GAP_REPAIR):  # the destination's REST budget serves a repair first
            rows = await ingester.backfill(since=since)
    except Exception as exc:  # recorded on the request; the next pass after the cooldown asks again
        await pool.execute("UPDATE public.ch_backfill_requests SET done_at = now(), error = $2 WHERE id = $1",
                           request_id, describe(exc, 300))
        raise
    finally:
        await ingester.broker.close()
    await pool.execute("UPDATE public.ch_backfill_requests SET done_at = now(), rows_read = $2 WHERE id = $1",
                       request_id, rows)
    return rows


REPAIRED_CAUSES = (Cause.FILL_NOT_INGESTED, Cause.POSTED_LATER, Cause.CORPORATE_ACTION)
"""Causes a repair backfill's reason names (a corporate action only when its activity is not stored)."""


def repair_reason(report: TieOut) -> str:
    diffs = [d for d in report.differences if d.open and d.cause in REPAIRED_CAUSES]
    diffs += [d for day in report.days for d in day.differences if d.open and d.cause in REPAIRED_CAUSES]
    return "tie-out: " + "; ".join(sorted({f"{d.cause.value} {d.subject}".strip() for d in diffs}))[:400]


# --- the loop ----------------------------------------------------------------------------------------
class TieoutLoop:
    """The manager's shared tie-out loop over whichever destinations the process owns."""

    def __init__(self, manager: AccountManager) -> None:
        self.manager = manager
        self.next_due_mono: dict[str, float] = {}
        self.passes = 0
        self.calls = 0
        self.repairs = 0
        self.last: dict[str, Status] = {}

    async def run_once(self) -> None:
        """Tie out every owned destination that is due, one after the other (each is three calls)."""
        m = self.manager
        if m.pool is None:
            return
        now_mono = time.monotonic()
        for slug, runner in list(m.runners.items()):
            if not runner.ready or runner.broker is None or now_mono < self.next_due_mono.get(slug, 0.0):
                continue
            self.next_due_mono[slug] = now_mono + m.settings.tieout_interval_s
            try:
                await self.one(runner.dest, runner.broker)
            except Exception as exc:  # one destination's failure never stops the others; retried next interval
                log.warning("dest=%s tie-out failed: %s", slug, describe(exc, 300))

    async def one(self, dest: Destination, broker: BrokerPort) -> TieOut:
        m = self.manager
        assert m.pool is not None
        reader = TieoutReader(m.pool, m.series_pool, m.settings.account_schema, dest.slug)
        report = await compute(reader, broker, m.settings)
        self.passes += 1
        self.calls += CALLS_PER_PASS
        tol = tolerances(m.settings)
        await store(m.pool, dest.slug, report, tol)
        drifted = [(d.day, d.broker_equity) for d in report.days
                   if d.broker_equity is not None and d.book_equity != d.broker_equity]
        if (refreshed := await reader.refresh_seeded_days(drifted)):
            log.info("dest=%s tie-out: %d seeded end-of-day point(s) follow the broker's corrected history",
                     dest.slug, refreshed)
            self.next_due_mono[dest.slug] = time.monotonic() + min(m.settings.tieout_interval_s, 5.0)
        if self.last.get(dest.slug) != report.status:
            log.info("dest=%s tie-out %s", dest.slug, report.status.value)
            self.last[dest.slug] = report.status
        if report.repair_since is not None and await repair_due(m.pool, dest.slug,
                                                                 REPAIR_COOLDOWN_PASSES * m.settings.tieout_interval_s):
            self.repairs += 1
            rows = await request_and_run_backfill(m.pool, m.settings, dest, since=report.repair_since,
                                                  reason=repair_reason(report))
            log.info("dest=%s tie-out repair: backfill since %s read %d rows", dest.slug,
                     report.repair_since.isoformat(), rows)
            self.next_due_mono[dest.slug] = time.monotonic() + min(m.settings.tieout_interval_s, 5.0)
        return report


# --- the CLI -----------------------------------------------------------------------------------------
def format_report(dest: Destination, report: TieOut) -> str:
    """A plain-text report: now, then the past days that did not tie out."""
    lines = [f"{dest.name} ({dest.slug}): {report.status.value} as of {report.as_of.isoformat(timespec='seconds')}",
             f"  cash   book {report.book_cash:,.2f}  broker {_fmt(report.broker_cash)}",
             f"  equity book {report.book_equity:,.2f}  broker {_fmt(report.broker_equity)}"]
    for d in report.differences:
        lines.append(f"  - {d.scope.value} {d.subject}: {d.amount_usd:+,.2f} {d.cause.value}"
                     f"{'' if d.open else ' (settled)'}: {d.detail}")
    tied = sum(1 for day in report.days if day.status is Status.TIED_OUT)
    lines.append(f"  past days: {len(report.days)} compared, {tied} tied out")
    for day in report.days:
        if day.status is Status.TIED_OUT:
            continue
        lines.append(f"  {day.day.isoformat()} {day.status.value}")
        for d in day.differences:
            lines.append(f"    - {d.scope.value} {d.subject}: {d.amount_usd:+,.2f} {d.cause.value}: {d.detail}")
    return "\n".join(lines)


def _fmt(v: Decimal | None) -> str:
    return "n/a" if v is None else f"{v:,.2f}"


async def reconcile(settings: Settings, destination: Destination, *, since: datetime | None = None,
                    progress: bool = False, repair: bool = True) -> TieOut:
    """``python -m workers reconcile``: recompute, store and print one destination's tie-out.

    With ``repair`` a difference caused by missing raw data runs the backfill for its window and
    the tie-out is computed again.
    """
    from workers.db import create_pool, create_series_pool
    from workers.manager.port import default_broker

    pool = await create_pool(settings, min_size=1, max_size=3)
    series = await create_series_pool(settings, max_size=2)
    broker = default_broker(destination, settings)
    try:
        reader = TieoutReader(pool, series, settings.account_schema, destination.slug)
        report = await compute(reader, broker, settings, since=since)
        tol = tolerances(settings)
        await store(pool, destination.slug, report, tol)
        if repair and report.repair_since is not None:
            rows = await request_and_run_backfill(pool, settings, destination, since=report.repair_since,
                                                  reason="reconcile command: " + repair_reason(report))
            print(f"repair: backfill since {report.repair_since.isoformat()} read {rows} rows")
            report = await compute(reader, broker, settings, since=since)
            await store(pool, destination.slug, report, tol)
        print(format_report(destination, report))
        return report
    finally:
        await broker.close()
        if series is not None:
            await series.close()
        await pool.close()

