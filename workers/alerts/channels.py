"""Channel adapters: turn one notification into one HTTP request, e-mail or log line.

Every sender raises :class:`DeliveryError` on failure, with a reason that never contains the
channel's URL, token or password (a Slack webhook URL and a Telegram bot URL are themselves
secrets): only the exception type or the HTTP status. ``retry_after_s`` is the server's
``Retry-After`` when it gave one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from core.alert_rules import Channel, ChannelType
from workers.alerts.channels_email import send_email
from workers.backoff import parse_retry_after_s

log = logging.getLogger("workers.alerts.channel")

SIGNATURE_HEADER = "X-ColdHarbour-Signature"
DELIVERY_HEADER = "X-ColdHarbour-Delivery"
TIMESTAMP_HEADER = "X-ColdHarbour-Timestamp"
TELEGRAM_MAX_CHARS = 4096


class DeliveryError(Exception):
    """A delivery failed. ``permanent``: retrying cannot help (a 4xx other than 408/429)."""

    def __init__(self, reason: str, *, permanent: bool = False, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Notification:
    """What every channel sends: ``text`` for people, ``payload`` (JSON) for machines."""

    delivery_id: str  # stable across retries and replicas: receivers dedupe on it
    text: str
    payload: dict[str, Any]

    @property
    def subject(self) -> str:
        return self.text.splitlines()[0][:200] if self.text else "Cold Harbour"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` HMAC of ``timestamp + "." + body``: the receiver recomputes it with the shared secret
    (binding the timestamp lets it refuse replays)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


async def _post(session: aiohttp.ClientSession, channel: Channel, url: str, body: bytes,
                headers: dict[str, str]) -> None:
    try:
        async with session.post(url, data=body, headers={"Content-Type": "application/json", **headers},
                                timeout=aiohttp.ClientTimeout(total=channel.timeout_s)) as resp:
            await resp.read()
            if resp.status < 300:
                return
            retry_after = parse_retry_after_s(resp.headers.get("Retry-After"), datetime.now(UTC))
            permanent = 400 <= resp.status < 500 and resp.status not in {408, 425, 429}
            raise DeliveryError(f"HTTP {resp.status}", permanent=permanent, retry_after_s=retry_after)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        # str(exc) of some aiohttp errors carries the URL: the type is all that is safe to keep
        raise DeliveryError(type(exc).__name__) from None


async def send(channel: Channel, note: Notification, session: aiohttp.ClientSession) -> None:
    """Deliver ``note`` once through ``channel`` or raise :class:`DeliveryError`."""
    if channel.type is ChannelType.LOG:
        log.log(logging.getLevelName(channel.level), "alert %s: %s", note.delivery_id, note.text)
        return
    if channel.type is ChannelType.WEBHOOK:
        body = json.dumps({"delivery_id": note.delivery_id, "text": note.text, **note.payload},
                          separators=(",", ":"), default=str).encode()
        stamp = str(int(datetime.now(UTC).timestamp()))
        headers = {DELIVERY_HEADER: note.delivery_id, TIMESTAMP_HEADER: stamp}
        if channel.secret:
            headers[SIGNATURE_HEADER] = signature(channel.secret, stamp, body)
        await _post(session, channel, channel.url, body, headers)
        return
    if channel.type is ChannelType.SLACK:
        await _post(session, channel, channel.url, json.dumps({"text": note.text}).encode(), {})
        return
    if channel.type is ChannelType.TELEGRAM:
        body = json.dumps({"chat_id": channel.chat_id, "text": note.text[:TELEGRAM_MAX_CHARS],
                           "disable_web_page_preview": True}).encode()
        await _post(session, channel, f"{channel.base_url}/bot{channel.secret}/sendMessage", body, {})
        return
    await send_email(channel, note.subject, note.text, note.delivery_id)
