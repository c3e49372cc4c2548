"""Plausible dashboard data for tests, screenshots and the benchmark.

``seed(dsn, settings)`` migrates the database and fills, for each destination, the derived tables the
dashboard reads (``open_trades_<slug>``, ``closed_trades_<slug>``, ``equity_full_<slug>``), the raw
``orders``/``activities``/``heartbeats`` rows and ``ch_versions``. Everything is generated in SQL with
``generate_series`` and a fixed ``setseed``, so 100,000 closed trades and 1,000,000 equity points take
seconds, and two runs produce the same numbers.

The dashboard only reads; this module stands in for the workers (``simulate_fill`` plays the manager:
a row in ``open_trades_<slug>``, a version bump and a NOTIFY).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal

from core.db import connect, migrate
from core.destinations import (
    PAPER_URL,
    Destination,
    closed_channel,
    closed_trades_table,
    equity_table,
    open_trades_table,
    pos_channel,
)
from core.schema import quote_ident
from core.settings import Settings

SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "TSLA", "META", "SPY", "QQQ", "AMD", "GOOGL"]
EXIT_REASONS = ["take_profit", "stop_loss", "trailing_stop", "manual", "end_of_day"]


@dataclass(frozen=True, slots=True)
class SeedSpec:
    """How much data one destination gets."""

    name: str
    closed_trades: int = 300
    equity_points: int = 365 * 26  # a year of 15-minute bars during the session
    open_positions: int = 4
    initial_deposit: Decimal = Decimal("100000")
    drift: float = 0.00004  # per equity step
    vol: float = 0.0012


DEFAULT_SPECS = (
    SeedSpec("Alpha Paper", closed_trades=400, drift=0.00005),
    SeedSpec("Beta Momentum", closed_trades=250, initial_deposit=Decimal("50000"), drift=0.00002, vol=0.0018),
    SeedSpec("Gamma Live", closed_trades=120, open_positions=3, initial_deposit=Decimal("25000"), drift=-0.00001),
)


def destination_for(spec: SeedSpec) -> Destination:
    from core.destinations import slugify

    return Destination(
        name=spec.name,
        slug=slugify(spec.name),
        key_id="PKSEED" + slugify(spec.name).upper()[:10],
        secret_key="seed-secret-not-real",  # noqa: S106 - a placeholder, never used against a broker
        base_url=PAPER_URL,
        initial_deposit=spec.initial_deposit,
        description=f"seeded test data ({spec.closed_trades} trades)",
    )


def seed(dsn: str, settings: Settings, specs: tuple[SeedSpec, ...] | list[SeedSpec] = DEFAULT_SPECS) -> list[str]:
    """Migrate ``dsn`` and fill it; returns the slugs in order."""
    dests = [destination_for(s) for s in specs]
    conn = connect(dsn)
    try:
        migrate(conn, settings, dests)
        schema = quote_ident(settings.account_schema)
        for index, (spec, dest) in enumerate(zip(specs, dests, strict=True)):
            with conn, conn.cursor() as cur:
                cur.execute("SELECT setseed(%s)", (0.1 + index / 10,))
                _equity(cur, dest.slug, spec)
                _closed(cur, dest.slug, spec)
                _open(cur, dest.slug, spec)
                _raw(cur, schema, dest.slug, spec)
                cur.execute(
                    """UPDATE public.ch_versions SET pos_version = 1, closed_version = 1, equity_version = 1,
                       activity_version = 1, updated_at = now() WHERE slug = %s""",
                    (dest.slug,),
                )
            with conn, conn.cursor() as cur:
                for table in (closed_trades_table(dest.slug), equity_table(dest.slug), open_trades_table(dest.slug)):
                    cur.execute(f"ANALYZE public.{quote_ident(table)}")
    finally:
        conn.close()
    return [d.slug for d in dests]


def _equity(cur: object, slug: str, spec: SeedSpec) -> None:
    eq = quote_ident(equity_table(slug))
    n = spec.equity_points
    deposit = float(spec.initial_deposit)
    # Steps spread evenly over the last 365 days; a deposit at 1/3 and a withdrawal at 2/3 of the way.
    cur.execute(  # type: ignore[attr-defined]
        f"""
        WITH steps AS (
            SELECT i,
                   now() - interval '365 days' + (i * (interval '365 days' / %(n)s)) AS ts,
                   %(drift)s + %(vol)s * (random() + random() + random() - 1.5) * 2 AS r,
                   %(dep)s
                   + CASE WHEN i >= %(n)s / 3 THEN %(dep)s * 0.2 ELSE 0 END
                   - CASE WHEN i >= 2 * %(n)s / 3 THEN %(dep)s * 0.1 ELSE 0 END AS net_dep
            FROM generate_series(0, %(n)s - 1) AS i
        ), curve AS (
            SELECT ts, net_dep, exp(sum(r) OVER (ORDER BY i)) AS growth FROM steps
        ), eq AS (
            SELECT ts, net_dep, net_dep * growth AS equity FROM curve
        )
        INSERT INTO public.{eq} (ts, equity, cash, long_market_value, short_market_value, realized_pl,
                                 unrealized_pl, net_deposits, drawdown, source)
        SELECT ts, round(equity::numeric, 2), round((equity * 0.4)::numeric, 2), round((equity * 0.6)::numeric, 2),
               0, round((equity - net_dep)::numeric, 2), 0, net_dep,
               equity / max(equity) OVER (ORDER BY ts) - 1, 'seed'
        FROM eq
        ON CONFLICT (ts) DO NOTHING
        """,
        {"n": n, "drift": spec.drift, "vol": spec.vol, "dep": deposit},
    )


def _closed(cur: object, slug: str, spec: SeedSpec) -> None:
    ct = quote_ident(closed_trades_table(slug))
    cur.execute(  # type: ignore[attr-defined]
        f"""
        WITH base AS (
            SELECT i,
                   (%(symbols)s::text[])[1 + floor(random() * %(nsym)s)::int] AS symbol,
                   CASE WHEN random() < 0.7 THEN 'long' ELSE 'short' END AS direction,
                   (1 + floor(random() * 200))::numeric AS qty,
                   now() - interval '360 days' + (i * (interval '359 days' / %(n)s)) AS entry_time,
                   (60 + random() * 3 * 86400) AS holding_s,
                   (20 + random() * 480)::numeric AS entry_price,
                   (random() - 0.46) * 0.06 AS move,
                   (%(reasons)s::text[])[1 + floor(random() * 5)::int] AS exit_reason,
                   gen_random_uuid() AS entry_oid, gen_random_uuid() AS exit_oid
            FROM generate_series(1, %(n)s) AS i
        ), priced AS (
            SELECT *, round(entry_price, 2) AS ep, round(entry_price * (1 + move)::numeric, 2) AS xp FROM base
        ), pl AS (
            SELECT *, (xp - ep) * qty * CASE WHEN direction = 'long' THEN 1 ELSE -1 END AS gross,
                   round(qty * 0.005, 2) AS fee
            FROM priced
        )
        INSERT INTO public.{ct} (trade_id, symbol, direction, qty, entry_time, exit_time, entry_price, exit_price,
                                 gross_pl, fees, net_pl, return_pct, holding_s, exit_reason, entry_order_id,
                                 exit_order_id, is_orphan, mae, mfe, fills, lots)
        SELECT 'T' || lpad(i::text, 7, '0'), symbol, direction, qty, entry_time,
               entry_time + holding_s * interval '1 second', ep, xp, round(gross, 2), fee, round(gross - fee, 2),
               ((xp - ep) / ep * CASE WHEN direction = 'long' THEN 100 ELSE -100 END)::float8, holding_s, exit_reason,
               entry_oid, exit_oid, false,
               round(-abs(move)::numeric * ep * qty * 0.8, 2), round(abs(move)::numeric * ep * qty * 1.2, 2),
               CASE WHEN i <= 2000 THEN jsonb_build_array(
                   jsonb_build_object('order_id', entry_oid, 'side', CASE WHEN direction = 'long' THEN 'buy' ELSE 'sell' END,
                                      'qty', qty, 'price', ep, 'ts', entry_time),
                   jsonb_build_object('order_id', exit_oid, 'side', CASE WHEN direction = 'long' THEN 'sell' ELSE 'buy' END,
                                      'qty', qty, 'price', xp, 'ts', entry_time + holding_s * interval '1 second'))
               ELSE '[]'::jsonb END,
               CASE WHEN i <= 2000 THEN jsonb_build_array(jsonb_build_object('qty', qty, 'entry_price', ep,
                   'entry_time', entry_time, 'exit_price', xp)) ELSE '[]'::jsonb END
        FROM pl
        """,
        {"n": spec.closed_trades, "symbols": SYMBOLS, "nsym": len(SYMBOLS), "reasons": EXIT_REASONS},
    )


def _open(cur: object, slug: str, spec: SeedSpec) -> None:
    ot = quote_ident(open_trades_table(slug))
    for k in range(spec.open_positions):
        symbol = SYMBOLS[k]
        insert_open_position(cur, slug, symbol, qty=10 * (k + 1), entry=100.0 + 37 * k,
                             mark=(100.0 + 37 * k) * (1.02 if k % 2 == 0 else 0.985), stale=(k == spec.open_positions - 1))
    cur.execute(f"UPDATE public.{ot} SET weight = exposure / NULLIF((SELECT sum(exposure) FROM public.{ot}), 0)")  # type: ignore[attr-defined]


def insert_open_position(cur: object, slug: str, symbol: str, *, qty: float, entry: float, mark: float,
                         side: str = "long", stale: bool = False) -> None:
    """Upsert one open position the way the manager would write it."""
    ot = quote_ident(open_trades_table(slug))
    sign = 1 if side == "long" else -1
    lots = json.dumps([{"qty": qty, "entry_price": entry}])
    cur.execute(  # type: ignore[attr-defined]
        f"""INSERT INTO public.{ot} (symbol, side, qty, avg_entry_price, cost_basis, entry_time, mark_price, mark_ts,
                price_source, price_stale, market_value, unrealized_pl, unrealized_plpc, prev_close, day_change,
                day_change_pct, exposure, weight, stop_price, take_profit_price, broker_qty, lots, updated_at)
            VALUES (%(s)s, %(side)s, %(q)s, %(e)s, %(q)s * %(e)s, now() - interval '3 hours', %(m)s,
                    now() - CASE WHEN %(stale)s THEN interval '5 minutes' ELSE interval '1 second' END,
                    'zmq', %(stale)s, %(q)s * %(m)s, %(sign)s * %(q)s * (%(m)s - %(e)s),
                    100 * %(sign)s * (%(m)s - %(e)s) / %(e)s, %(e)s * 0.995, %(q)s * (%(m)s - %(e)s * 0.995),
                    100 * (%(m)s - %(e)s * 0.995) / (%(e)s * 0.995), %(q)s * %(m)s, NULL,
                    round(%(e)s * 0.95, 2), round(%(e)s * 1.08, 2), %(q)s, %(lots)s::jsonb, now())
            ON CONFLICT (symbol) DO UPDATE SET qty = EXCLUDED.qty, mark_price = EXCLUDED.mark_price,
                market_value = EXCLUDED.market_value, unrealized_pl = EXCLUDED.unrealized_pl, updated_at = now()""",
        {"s": symbol, "side": side, "q": qty, "e": entry, "m": mark, "stale": stale, "sign": sign, "lots": lots},
    )


def _raw(cur: object, schema: str, slug: str, spec: SeedSpec) -> None:
    n_fill_acts = min(spec.closed_trades, 500)
    cur.execute(  # type: ignore[attr-defined]
        f"""
        INSERT INTO {schema}.activities (destination, activity_id, ts, activity_type, fill_type, symbol, side, qty,
                                          price, net_amount, order_id, order_status, description, raw)
        SELECT %(slug)s, 'A' || lpad(i::text, 7, '0'), now() - interval '360 days' + i * interval '17 hours',
               'FILL', 'fill', (%(symbols)s::text[])[1 + (i %% 10)],
               CASE WHEN i %% 2 = 0 THEN 'buy' ELSE 'sell' END, (1 + i %% 50)::numeric,
               round((50 + (i %% 97) * 3.7)::numeric, 2), NULL, gen_random_uuid(), 'filled', NULL,
               jsonb_build_object('id', 'A' || i, 'activity_type', 'FILL')
        FROM generate_series(1, %(n)s) AS i
        """,
        {"slug": slug, "symbols": SYMBOLS, "n": n_fill_acts},
    )
    deposit = float(spec.initial_deposit)
    for k, (days, amount, desc) in enumerate(
        [(365, deposit, "initial deposit"), (243, deposit * 0.2, "top-up"), (122, -deposit * 0.1, "withdrawal")]
    ):
        cur.execute(  # type: ignore[attr-defined]
            f"""INSERT INTO {schema}.activities (destination, activity_id, ts, activity_type, net_amount, description, raw)
                VALUES (%s, %s, now() - %s * interval '1 day', %s, %s, %s, '{{}}'::jsonb)""",
            (slug, f"CSD{k}", days, "CSD" if amount > 0 else "CSW", amount, desc),
        )
    cur.execute(  # type: ignore[attr-defined]
        f"""
        INSERT INTO {schema}.orders (destination, order_id, client_order_id, symbol, side, order_type, order_class,
                                      time_in_force, qty, filled_qty, filled_avg_price, limit_price, stop_price, status,
                                      created_at, updated_at, submitted_at, filled_at, raw)
        SELECT %(slug)s, gen_random_uuid(), 'cli-' || i, (%(symbols)s::text[])[1 + (i %% 10)],
               CASE WHEN i %% 2 = 0 THEN 'buy' ELSE 'sell' END, CASE WHEN i %% 3 = 0 THEN 'limit' ELSE 'market' END,
               CASE WHEN i %% 4 = 0 THEN 'bracket' ELSE 'simple' END, 'day', (1 + i %% 50)::numeric,
               (1 + i %% 50)::numeric, round((50 + (i %% 97) * 3.7)::numeric, 2), NULL, NULL,
               CASE WHEN i %% 15 = 0 THEN 'canceled' ELSE 'filled' END,
               now() - i * interval '11 hours', now() - i * interval '11 hours', now() - i * interval '11 hours',
               now() - i * interval '11 hours', '{{}}'::jsonb
        FROM generate_series(1, %(n)s) AS i
        """,
        {"slug": slug, "symbols": SYMBOLS, "n": min(spec.closed_trades, 300)},
    )
    manager_details = {"price_feed": {"received": 48213, "malformed": 0, "conflated": 310, "unsubscribed": 0},
                       "stale_symbols": [SYMBOLS[spec.open_positions - 1]] if spec.open_positions else [],
                       "open_positions": spec.open_positions}
    for service, age_s, state, err, details in (("ingester", 2, "running", None, {"backfill": "done"}),
                                                ("manager", 3, "running", None, manager_details)):
        cur.execute(  # type: ignore[attr-defined]
            f"""INSERT INTO {schema}.heartbeats (destination, service, replica, state, last_event_at, lag_s,
                    rows_ingested, errors, last_error, details, updated_at)
                VALUES (%s, %s, 'seed-1', %s, now() - %s * interval '1 second', 0.4, 1234, 0, %s,
                        %s::jsonb, now() - %s * interval '1 second')
                ON CONFLICT (destination, service) DO UPDATE SET updated_at = EXCLUDED.updated_at""",
            (slug, service, state, age_s, err, json.dumps(details), age_s),
        )


def simulate_fill(dsn: str, slug: str, symbol: str, *, qty: float = 7, entry: float = 42.5, mark: float = 43.1) -> None:
    """Play the manager: upsert an open position, bump ``pos_version`` and NOTIFY ``pos_channel_<slug>``."""
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            insert_open_position(cur, slug, symbol, qty=qty, entry=entry, mark=mark)
            cur.execute(
                "UPDATE public.ch_versions SET pos_version = pos_version + 1, updated_at = now() WHERE slug = %s "
                "RETURNING pos_version",
                (slug,),
            )
            row = cur.fetchone()
            version = row[0] if row else 0
            cur.execute("SELECT pg_notify(%s, %s)", (pos_channel(slug), json.dumps({"v": version})))
    finally:
        conn.close()


def simulate_close(dsn: str, slug: str) -> None:
    """Bump ``closed_version`` and NOTIFY ``closed_channel_<slug>`` (after inserting a closed trade)."""
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE public.ch_versions SET closed_version = closed_version + 1 WHERE slug = %s RETURNING closed_version",
                (slug,),
            )
            row = cur.fetchone()
            cur.execute("SELECT pg_notify(%s, %s)", (closed_channel(slug), json.dumps({"v": row[0] if row else 0})))
    finally:
        conn.close()


def simulate_activity(dsn: str, settings: Settings, slug: str, activity_id: str, symbol: str) -> int:
    """Play the ingester: store one new FILL activity (newest of all) and bump ``activity_version``."""
    schema = quote_ident(settings.account_schema)
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                f"""INSERT INTO {schema}.activities (destination, activity_id, ts, activity_type, fill_type, symbol,
                                                     side, qty, price, net_amount, order_status, raw)
                    VALUES (%s, %s, now() + interval '1 minute', 'FILL', 'fill', %s, 'buy', 3, 12.34, NULL, 'filled',
                            jsonb_build_object('id', %s::text))""",
                (slug, activity_id, symbol, activity_id),
            )
            cur.execute("UPDATE public.ch_versions SET activity_version = activity_version + 1 WHERE slug = %s "
                        "RETURNING activity_version", (slug,))
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()
