"""LISTEN/NOTIFY helpers. A NOTIFY is a hint ("something changed, version N"), never the data."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

NOTIFY_PAYLOAD_MAX_BYTES = 8000
NEW_FILLS_CHANNEL = "ch_new_fills"


def encode_payload(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, separators=(",", ":"), default=str)
    if len(text.encode()) >= NOTIFY_PAYLOAD_MAX_BYTES:
        raise ValueError(f"NOTIFY payload too large ({len(text)} bytes); send ids/counts only")
    return text


async def notify(conn: asyncpg.Pool | asyncpg.Connection, channel: str, payload: dict[str, Any]) -> None:
    """``pg_notify`` with a small JSON payload (delivered when the surrounding transaction commits)."""
    await conn.execute("SELECT pg_notify($1, $2)", channel, encode_payload(payload))
