"""Health rows: one per (destination, service), written every ``HEARTBEAT_SEC``."""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime
from typing import Any

import asyncpg

from core.schema import quote_ident

REPLICA_ID = f"{socket.gethostname()}:{os.getpid()}"


async def write_heartbeat(
    pool: asyncpg.Pool | asyncpg.Connection,
    account_schema: str,
    destination: str,
    service: str,
    *,
    state: str,
    last_event_at: datetime | None = None,
    last_backfill_at: datetime | None = None,
    lag_s: float | None = None,
    rows_ingested: int | None = None,
    errors: int | None = None,
    last_error: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Upsert the heartbeat row; ``None`` keeps the stored value (except ``state``)."""
    table = f"{quote_ident(account_schema)}.heartbeats"
    await pool.execute(
        f"""INSERT INTO {table} AS h (destination, service, replica, state, last_event_at, last_backfill_at,
                lag_s, rows_ingested, errors, last_error, details, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8, 0), COALESCE($9, 0), $10,
                    COALESCE($11::jsonb, '{{}}'::jsonb), now())
            ON CONFLICT (destination, service) DO UPDATE SET
                replica = EXCLUDED.replica, state = EXCLUDED.state,
                last_event_at = COALESCE($5, h.last_event_at),
                last_backfill_at = COALESCE($6, h.last_backfill_at),
                lag_s = COALESCE($7, h.lag_s),
                rows_ingested = COALESCE($8, h.rows_ingested),
                errors = COALESCE($9, h.errors),
                last_error = COALESCE($10, h.last_error),
                details = COALESCE($11::jsonb, h.details),
                updated_at = now()""",
        destination,
        service,
        REPLICA_ID,
        state,
        last_event_at,
        last_backfill_at,
        lag_s,
        rows_ingested,
        errors,
        last_error,
        json.dumps(details) if details is not None else None,
    )
