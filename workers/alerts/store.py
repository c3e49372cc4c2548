"""The alerts worker's database side: read a destination's snapshot, store episodes and their outbox.

Reads only what the destination's rules need. Writes are idempotent: an episode is opened with
``ON CONFLICT DO NOTHING`` against the one-open-episode index, and each notification is an outbox row
keyed ``alert:<id>:<event>:<channel>`` inserted in the same transaction, so two replicas, a retry or a
restart never open one episode twice nor queue one message twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from core.alert_rules import AlertRule, RuleKind
from core.alerts import (
    AccountState,
    DestinationSnapshot,
    FillRecord,
    HeartbeatRecord,
    OrderRecord,
    PositionRecord,
    TieoutState,
)
from core.destinations import closed_trades_table, equity_table, open_trades_table
from core.schema import quote_ident
from core.tieout_records import Difference, Tolerances
from workers.notify import notify

TIEOUT_CHANNEL = "ch_tieout"  # the manager's NOTIFY after a tie-out pass (workers.manager.tieout.TIEOUT_CHANNEL)
ALERTS_CHANNEL = "ch_alerts"  # NOTIFY hint: an episode opened or resolved ({"id", "state", "d"})
_ACCOUNT_KINDS = {RuleKind.DRAWDOWN, RuleKind.DAILY_LOSS, RuleKind.CONCENTRATION, RuleKind.GROSS_EXPOSURE}
_POSITION_KINDS = {RuleKind.CONCENTRATION, RuleKind.GROSS_EXPOSURE, RuleKind.PRICE_STALE}
_HEARTBEAT_KINDS = {RuleKind.HEARTBEAT_STALE, RuleKind.STREAM_DISCONNECTED, RuleKind.INGEST_LAG, RuleKind.REST_BUDGET}


@dataclass(frozen=True, slots=True)
class EpisodeKey:
    rule: str
    slug: str
    subject: str


@dataclass(slots=True)
class DayCache:
    """Today's reference points: recomputed when the local day changes."""

    day: str = ""
    start_equity: Decimal | None = None
    start_deposits: Decimal | None = None


@dataclass(slots=True)
class AccountCache:
    """Incremental peak: ``max(equity - net_deposits)`` of the rows read so far."""

    last_ts: datetime | None = None
    peak_excess: Decimal | None = None
    day_high_excess: Decimal | None = None
    day: DayCache | None = None


def _live_equity(rows: Sequence[asyncpg.Record]) -> Decimal | None:
    """The manager's own equity at its last flush: each open row's weight is market_value / equity."""
    for r in rows:
        if r["market_value"] is not None and r["weight"]:
            return Decimal(r["market_value"]) / Decimal(repr(r["weight"]))
    return None


async def _account(conn: asyncpg.Connection, slug: str, cache: AccountCache, tz: str, now: datetime,
                   live: Decimal | None, series: asyncpg.Pool | None = None) -> AccountState | None:
    conn = series or conn  # equity_full_<slug> lives in the time-series database when it is one of its own
    table = f"public.{quote_ident(equity_table(slug))}"
    local_day = now.astimezone(ZoneInfo(tz)).date()
    day_start = datetime.combine(local_day, datetime.min.time(), tzinfo=ZoneInfo(tz))
    if cache.day is None or cache.day.day != local_day.isoformat():
        row = await conn.fetchrow(f"SELECT equity, net_deposits FROM {table} WHERE ts < $1 ORDER BY ts DESC LIMIT 1",
                                  day_start)
        high = await conn.fetchval(f"SELECT max(equity - net_deposits) FROM {table} WHERE ts >= $1", day_start)
        cache.day = DayCache(local_day.isoformat(), row["equity"] if row else None, row["net_deposits"] if row else None)
        cache.day_high_excess = high
    new = await conn.fetchrow(
        f"SELECT max(ts) AS ts, max(equity - net_deposits) AS excess FROM {table} WHERE $1::timestamptz IS NULL OR ts > $1",
        cache.last_ts)
    if new is not None and new["ts"] is not None:
        cache.last_ts = new["ts"]
        for attr in ("peak_excess", "day_high_excess"):
            held = getattr(cache, attr)
            setattr(cache, attr, new["excess"] if held is None else max(held, new["excess"]))
    latest = await conn.fetchrow(f"SELECT equity, net_deposits FROM {table} ORDER BY ts DESC LIMIT 1")
    if latest is None:
        return None
    equity = live if live is not None else latest["equity"]
    start_equity = cache.day.start_equity
    if start_equity is None:  # no point before today: today's first one is the start
        first = await conn.fetchrow(f"SELECT equity, net_deposits FROM {table} WHERE ts >= $1 ORDER BY ts LIMIT 1",
                                    day_start)
        if first is not None:
            cache.day.start_equity, cache.day.start_deposits = first["equity"], first["net_deposits"]
            start_equity = first["equity"]
    return AccountState(equity=equity, net_deposits=latest["net_deposits"], peak_excess=cache.peak_excess,
                        day_start_equity=start_equity, day_start_deposits=cache.day.start_deposits,
                        day_high_excess=cache.day_high_excess)


async def load_tieout(conn: asyncpg.Connection, slug: str, tolerances: Tolerances) -> TieoutState | None:
    """The latest tie-out pass: the manager writes a pass in one transaction, so its rows (the "now" row
    and every day it checked) share one ``checked_at``; a day the pass no longer covers is not in it."""
    rows = await conn.fetch(
        """SELECT day, checked_at, differences::text AS differences FROM public.ch_tieout
           WHERE destination = $1 AND checked_at = (SELECT max(checked_at) FROM public.ch_tieout WHERE destination = $1)""",
        slug)
    if not rows:
        return None
    diffs: list[Difference] = []
    for r in rows:
        for raw in json.loads(r["differences"]):
            d = Difference.from_dict(raw)
            if d.day is None and r["day"] is not None:  # the row's day is the difference's day
                d = replace(d, day=r["day"])
            diffs.append(d)
    return TieoutState(checked_at=rows[0]["checked_at"], differences=tuple(diffs), tolerances=tolerances)


def _window(rules: Sequence[AlertRule], kind: RuleKind) -> float:
    return max((r.number("window_s") for r in rules if r.kind is kind), default=0.0)


async def load_snapshot(conn: asyncpg.Connection, *, slug: str, rules: Sequence[AlertRule], account_schema: str,
                        heartbeat_sec: float, tz: str, now: datetime, cache: AccountCache,
                        rate_limited: dict[float, int], series: asyncpg.Pool | None = None,
                        tolerances: Tolerances | None = None) -> DestinationSnapshot:
    """Everything ``rules`` read for ``slug`` at ``now`` (the database's clock)."""
    kinds = {r.kind for r in rules}
    raw = quote_ident(account_schema)
    positions: tuple[PositionRecord, ...] = ()
    account = None
    if kinds & (_ACCOUNT_KINDS | _POSITION_KINDS):
        rows = await conn.fetch(f"SELECT symbol, qty, market_value, weight, price_stale "
                                f"FROM public.{quote_ident(open_trades_table(slug))} ORDER BY symbol")
        positions = tuple(PositionRecord(r["symbol"], r["qty"], r["market_value"], r["price_stale"]) for r in rows)
        if kinds & _ACCOUNT_KINDS:
            account = await _account(conn, slug, cache, tz, now, _live_equity(rows), series)
    fills: tuple[FillRecord, ...] = ()
    if RuleKind.LARGE_FILL in kinds:
        window = timedelta(seconds=_window(rules, RuleKind.LARGE_FILL))
        # "when we learned of it": a fill ingested late still counts as new
        rows = await conn.fetch(
            f"""SELECT activity_id, greatest(ts, ingested_at) AS seen, symbol, side, qty, price FROM {raw}.activities
                WHERE destination = $1 AND activity_type = 'FILL' AND ts >= $2 AND qty IS NOT NULL AND price IS NOT NULL""",
            slug, now - window - timedelta(hours=1))
        fills = tuple(FillRecord(r["activity_id"], r["seen"], r["symbol"] or "", r["side"] or "", r["qty"], r["price"])
                      for r in rows if r["seen"] >= now - window)
    orders: tuple[OrderRecord, ...] = ()
    if RuleKind.ORDER_REJECTED in kinds:
        statuses = sorted({s for r in rules if r.kind is RuleKind.ORDER_REJECTED for s in r.strings("statuses")})
        rows = await conn.fetch(
            f"""SELECT order_id::text AS id, coalesce(symbol, '') AS symbol, status,
                       greatest(coalesce(updated_at, ingested_at), ingested_at) AS at
                FROM {raw}.orders WHERE destination = $1 AND status = ANY($2::text[]) AND updated_at >= $3""",
            slug, statuses, now - timedelta(seconds=_window(rules, RuleKind.ORDER_REJECTED)) - timedelta(hours=1))
        orders = tuple(OrderRecord(r["id"], r["symbol"], r["status"], r["at"]) for r in rows)
    closed: tuple[Decimal, ...] = ()
    if RuleKind.LOSING_STREAK in kinds:
        depth = max(int(r.number("trades")) for r in rules if r.kind is RuleKind.LOSING_STREAK) + 1
        rows = await conn.fetch(f"SELECT net_pl FROM public.{quote_ident(closed_trades_table(slug))} "
                                "ORDER BY exit_time DESC, trade_id DESC LIMIT $1", depth)
        closed = tuple(r["net_pl"] for r in rows)
    heartbeats: tuple[HeartbeatRecord, ...] = ()
    if kinds & _HEARTBEAT_KINDS:
        rows = await conn.fetch(f"SELECT service, state, updated_at, lag_s, details FROM {raw}.heartbeats "
                                "WHERE destination = $1", slug)
        heartbeats = tuple(HeartbeatRecord(r["service"], r["state"], r["updated_at"], r["lag_s"],
                                           MappingProxyType(_json(r["details"]))) for r in rows)
    tieout = None
    if RuleKind.RECONCILIATION_DRIFT in kinds:
        tieout = await load_tieout(conn, slug, tolerances or Tolerances())
    return DestinationSnapshot(slug=slug, now=now, heartbeat_sec=heartbeat_sec, account=account, positions=positions,
                               fills=fills, orders=orders, closed_pl_newest_first=closed, heartbeats=heartbeats,
                               rate_limited_in_window=MappingProxyType(dict(rate_limited)), tieout=tieout)


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


async def rate_limited_now(conn: asyncpg.Connection, account_schema: str, slug: str) -> int:
    """429 answers counted so far by every service's broker client for ``slug`` (cumulative per process)."""
    rows = await conn.fetch(f"SELECT details FROM {quote_ident(account_schema)}.heartbeats WHERE destination = $1",
                            slug)
    total = 0
    for r in rows:
        broker = _json(r["details"]).get("broker")
        if isinstance(broker, dict) and isinstance(broker.get("rate_limited"), int):
            total += broker["rate_limited"]
    return total


async def load_episodes(conn: asyncpg.Connection, slugs: Sequence[str]
                        ) -> tuple[dict[EpisodeKey, int], dict[EpisodeKey, datetime]]:
    """Open episodes (key -> alert id) and the last resolve time per key: cool-downs survive a take-over."""
    open_rows = await conn.fetch("SELECT id, rule, destination, subject FROM public.ch_alerts "
                                 "WHERE state = 'open' AND destination = ANY($1::text[])", list(slugs))
    resolved = await conn.fetch("SELECT rule, destination, subject, max(resolved_at) AS at FROM public.ch_alerts "
                                "WHERE state = 'resolved' AND destination = ANY($1::text[]) "
                                "GROUP BY rule, destination, subject", list(slugs))
    return ({EpisodeKey(r["rule"], r["destination"], r["subject"]): r["id"] for r in open_rows},
            {EpisodeKey(r["rule"], r["destination"], r["subject"]): r["at"] for r in resolved})


def _outbox_payload(event: str, alert: dict[str, Any]) -> str:
    return json.dumps({"event": event, **alert}, default=str)


async def _queue(conn: asyncpg.Connection, alert_id: int, event: str, channels: Sequence[str],
                 payload: dict[str, Any]) -> None:
    await conn.executemany(
        """INSERT INTO public.ch_alert_outbox (dedupe_key, channel, alert_id, event, payload)
           VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (dedupe_key) DO NOTHING""",
        [(f"alert:{alert_id}:{event}:{c}", c, alert_id, event, _outbox_payload(event, payload)) for c in channels])


async def open_episode(conn: asyncpg.Connection, rule: AlertRule, key: EpisodeKey, *, text: str,
                       value: float | None, at: datetime, replica: str) -> tuple[int, bool]:
    """Open the episode and queue its messages; ``(id, False)`` when it was already open (no new message)."""
    async with conn.transaction():
        alert_id = await conn.fetchval(
            """INSERT INTO public.ch_alerts (rule, kind, destination, subject, severity, opened_at, message, value,
                                             channels, replica)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
               ON CONFLICT (rule, destination, subject) WHERE state = 'open' DO NOTHING RETURNING id""",
            rule.name, rule.kind.value, key.slug, key.subject, rule.severity.value, at, text, value,
            list(rule.channels), replica)
        if alert_id is None:
            existing = await conn.fetchval("SELECT id FROM public.ch_alerts WHERE rule = $1 AND destination = $2 "
                                           "AND subject = $3 AND state = 'open'", key.rule, key.slug, key.subject)
            return int(existing or 0), False
        await _queue(conn, alert_id, "fired", rule.channels, {
            "alert_id": alert_id, "rule": rule.name, "kind": rule.kind.value, "destination": key.slug,
            "subject": key.subject, "severity": rule.severity.value, "opened_at": at.isoformat(), "value": value,
            "text": text})
        await notify(conn, ALERTS_CHANNEL, {"id": alert_id, "state": "open", "d": key.slug})
    return int(alert_id), True


async def resolve_episode(conn: asyncpg.Connection, rule: AlertRule | None, alert_id: int, key: EpisodeKey, *,
                          text: str, at: datetime) -> bool:
    """Close the episode and queue its resolved messages (none when ``rule`` is gone from the file)."""
    async with conn.transaction():
        row = await conn.fetchrow(
            """UPDATE public.ch_alerts SET state = 'resolved', resolved_at = $2, resolved_message = $3, updated_at = now()
               WHERE id = $1 AND state = 'open' RETURNING severity, opened_at""", alert_id, at, text)
        if row is None:
            return False
        if rule is not None:
            await _queue(conn, alert_id, "resolved", rule.channels, {
                "alert_id": alert_id, "rule": rule.name, "kind": rule.kind.value, "destination": key.slug,
                "subject": key.subject, "severity": row["severity"], "opened_at": row["opened_at"].isoformat(),
                "resolved_at": at.isoformat(), "text": text})
        await notify(conn, ALERTS_CHANNEL, {"id": alert_id, "state": "resolved", "d": key.slug})
    return True
