"""Strategy-tagged orders for seeded destinations (tests and ``python -m bench dashboard``).

For every round trip of ``closed_trades_<slug>`` (numbered ``i`` by trade id) the opening order is
written to ``orders`` with a client order id naming strategy ``s<k>`` (``k = i mod strategies``):

- ``i mod 5 = 0``: the opening order is a bracket **leg** (own id ``alpaca-leg-…``) of a parent tagged ``s<k>-``;
- ``i mod 5 = 1``: it **replaced** an order tagged ``s<k>-`` and carries another strategy's tag itself;
- otherwise it is tagged directly, except ``i mod 11 = 0``, which is ``manual-…`` (unattributed).

Every closing order carries a third strategy's tag (a trip closed by another strategy's order). The
open positions get opening orders tagged ``s<k>`` by their symbol's position. :func:`expected_sql`
is the same rule written in SQL, for an independent recomputation. The rules are published the way
the workers publish them (``ch_strategy_rules``).
"""

from __future__ import annotations

import json

from core.db import connect
from core.destinations import closed_trades_table, open_trades_table
from core.schema import quote_ident
from core.settings import Settings
from core.strategies import StrategyRule


def rules(strategies: int) -> list[StrategyRule]:
    return [StrategyRule(f"s{k}", prefix=f"s{k}-") for k in range(strategies)]


def expected_sql(slug: str, strategies: int) -> str:
    """``trade_id, strategy, net_pl, fees`` of every round trip of ``slug`` by the seeding rule."""
    ct = quote_ident(closed_trades_table(slug))
    return f"""SELECT trade_id, CASE WHEN i % 11 = 0 AND i % 5 NOT IN (0, 1) THEN 'unattributed'
                                     ELSE 's' || (i % {strategies}) END AS strategy, net_pl, fees
               FROM (SELECT *, row_number() OVER (ORDER BY trade_id) AS i FROM public.{ct}) t"""


def seed_strategies(dsn: str, settings: Settings, slugs: list[str], strategies: int = 4) -> None:
    schema = quote_ident(settings.account_schema)
    n = strategies
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("DELETE FROM public.ch_strategy_rules")
            for pos, rule in enumerate(rules(n)):
                cur.execute("INSERT INTO public.ch_strategy_rules (position, name, rule) VALUES (%s, %s, %s)",
                            (pos, rule.name, json.dumps(rule.as_json())))
            for slug in slugs:
                ct = quote_ident(closed_trades_table(slug))
                ot = quote_ident(open_trades_table(slug))
                cur.execute(f"""
                    CREATE TEMP TABLE tagged ON COMMIT DROP AS
                    SELECT trade_id, entry_order_id, exit_order_id, symbol, entry_time, exit_time, i, i % {n} AS k,
                           gen_random_uuid() AS parent
                    FROM (SELECT *, row_number() OVER (ORDER BY trade_id) AS i FROM public.{ct}) t""")
                common = "destination, order_id, client_order_id, parent_order_id, symbol, side, status, submitted_at, raw"
                cur.execute(f"""
                    INSERT INTO {schema}.orders ({common})
                    SELECT %(d)s, parent, 's' || k || '-p' || i, NULL, symbol, 'buy', CASE WHEN i %% 5 = 1 THEN 'replaced'
                           ELSE 'filled' END, entry_time - interval '1 second', '{{}}'::jsonb
                    FROM tagged WHERE i %% 5 IN (0, 1)
                    UNION ALL
                    SELECT %(d)s, entry_order_id,
                           CASE WHEN i %% 5 = 0 THEN 'alpaca-leg-' || i
                                WHEN i %% 5 = 1 THEN 's' || ((k + 1) %% {n}) || '-r' || i
                                WHEN i %% 11 = 0 THEN 'manual-' || i
                                ELSE 's' || k || '-' || i END,
                           CASE WHEN i %% 5 = 0 THEN parent END, symbol, 'buy', 'filled', entry_time,
                           CASE WHEN i %% 5 = 1 THEN jsonb_build_object('replaces', parent) ELSE '{{}}'::jsonb END
                    FROM tagged
                    UNION ALL
                    SELECT %(d)s, exit_order_id, 's' || ((k + 3) %% {n}) || '-x' || i, NULL, symbol, 'sell', 'filled',
                           exit_time, '{{}}'::jsonb
                    FROM tagged
                    ON CONFLICT DO NOTHING""", {"d": slug})
                cur.execute(f"""
                    WITH numbered AS (SELECT symbol, row_number() OVER (ORDER BY symbol) - 1 AS k,
                                             gen_random_uuid() AS oid FROM public.{ot}),
                         upd AS (UPDATE public.{ot} o SET entry_order_id = numbered.oid FROM numbered
                                 WHERE o.symbol = numbered.symbol RETURNING numbered.*)
                    INSERT INTO {schema}.orders ({common})
                    SELECT %(d)s, oid, 's' || (k %% {n}) || '-open', NULL, symbol, 'buy', 'filled', now(), '{{}}'::jsonb
                    FROM upd""", {"d": slug})
                cur.execute("DROP TABLE tagged")
                cur.execute("""UPDATE public.ch_versions SET closed_version = closed_version + 1,
                               pos_version = pos_version + 1 WHERE slug = %s""", (slug,))
            cur.execute(f"ANALYZE {schema}.orders")
    finally:
        conn.close()
