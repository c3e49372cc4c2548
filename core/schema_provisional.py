"""Provisional rows marked (schema migration 11, listed in :mod:`core.schema`).

Kept apart from :mod:`core.schema` for size only; pure SQL text like it. The manager writes the column
(:mod:`workers.manager.unconfirmed`); the dashboard shows it (docs/freshness.md, "Provisional rows").
"""

from __future__ import annotations

PROVISIONAL_COLUMN = "provisional_fills integer NOT NULL DEFAULT 0"
"""On open and closed trade rows: how many of the row's fills only the live stream has reported so far."""


def provisional_statements(account_schema: str) -> tuple[str, ...]:
    """Migration 11 for ``account_schema`` (already quoted)."""
    return (
        # Every existing open_trades_<slug> / closed_trades_<slug> gets the column. A constant default:
        # no table rewrite, no row lost; tables created later have it in their DDL (core.schema).
        f"""DO $$ DECLARE t text; BEGIN
            FOR t IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
                       AND (c.relname LIKE 'open\\_trades\\_%' OR c.relname LIKE 'closed\\_trades\\_%') LOOP
                EXECUTE format('ALTER TABLE public.%I ADD COLUMN IF NOT EXISTS {PROVISIONAL_COLUMN}', t);
            END LOOP; END $$""",
        # The manager's start reads the unconfirmed fills (a handful) of a table holding every stream fill.
        f"""CREATE INDEX IF NOT EXISTS provisional_fills_unconfirmed ON {account_schema}.provisional_fills
            (destination) WHERE confirmed_by IS NULL AND NOT superseded""",
    )
