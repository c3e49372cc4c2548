"""The ``trade_updates`` websocket: one session per :class:`TradeUpdatesStream` (connect,
authenticate, listen, receive). The reconnect loop is the ingester's (:mod:`workers.ingester.loops`).

The key id and secret travel in the auth frame only; they never appear in reprs, logs or errors.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from core.destinations import Destination
from workers.alpaca.errors import BrokerAuthError, BrokerProtocolError, BrokerTemporaryError, StreamStale
from workers.alpaca.parse import parse_trade_update, undecodable_trade_update
from workers.alpaca.records import OrderEventRow
from workers.alpaca.rest import safe_text


def stream_url_for(destination: Destination) -> str:
    """The destination's ``stream_url``, else its REST URL with ``ws(s)://`` and ``/stream``."""
    if destination.stream_url:
        return destination.stream_url
    parts = urlsplit(destination.base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/stream", "", ""))


class TradeUpdatesStream:
    """One ``trade_updates`` websocket session: connect, authenticate, listen, receive.

    Use :meth:`open` once, then iterate :meth:`updates` until it raises; every failure is a
    :class:`BrokerError` (auth, temporary, stale). A new instance (or :meth:`open` again) is a
    reconnect with a fresh authentication.
    """

    def __init__(
        self,
        destination: Destination,
        *,
        stale_after_s: float = 60.0,
        ping_interval_s: float = 10.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.destination = destination
        self.url = stream_url_for(destination)
        self._stale_after_s = stale_after_s
        self._ping_interval_s = ping_interval_s
        self._connect_timeout_s = connect_timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.messages_received = 0

    def __repr__(self) -> str:
        return f"TradeUpdatesStream({self.destination.slug!r}, url={self.url!r})"

    async def open(self) -> None:
        """Connect, authenticate and subscribe to ``trade_updates``."""
        await self.close()
        self._session = aiohttp.ClientSession()
        try:
            # A hung handshake must not stall the reconnect loop: the whole upgrade is bounded.
            self._ws = await asyncio.wait_for(
                self._session.ws_connect(
                    self.url,
                    heartbeat=self._ping_interval_s,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                    max_msg_size=16 * 1024 * 1024,
                    autoping=True,
                ),
                timeout=self._connect_timeout_s,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            await self.close()
            raise BrokerTemporaryError(f"websocket connect to {self.url} failed: {type(exc).__name__}: {safe_text(str(exc))}") from None
        try:
            await self._ws.send_str(
                json.dumps(
                    {
                        "action": "authenticate",
                        "data": {"key_id": self.destination.key_id, "secret_key": self.destination.secret_key},
                    }
                )
            )
            reply = await self._receive_control(self._connect_timeout_s)
            status = (reply.get("data") or {}).get("status") if isinstance(reply.get("data"), Mapping) else None
            if reply.get("stream") != "authorization" or status != "authorized":
                reason = str((reply.get("data") or {}).get("message") or "") if isinstance(reply.get("data"), Mapping) else ""
                if "connection limit" in reason.lower():
                    # Our previous session is not reaped yet (Alpaca allows one per account): transient.
                    raise BrokerTemporaryError(f"websocket: {safe_text(reason)}")
                if status == "unauthorized":
                    raise BrokerAuthError(f"websocket authentication rejected: {safe_text(reason) or 'unauthorized'}")
                raise BrokerProtocolError(f"websocket: unexpected auth reply {safe_text(json.dumps(reply))}")
            await self._ws.send_str(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
            reply = await self._receive_control(self._connect_timeout_s)
            if reply.get("stream") != "listening":
                raise BrokerProtocolError(f"websocket: unexpected listen reply {safe_text(json.dumps(reply))}")
        except BaseException:
            await self.close()
            raise

    async def _receive_control(self, timeout_s: float) -> dict[str, Any]:
        message = await self._receive(timeout_s)
        if not isinstance(message, dict):
            raise BrokerProtocolError("websocket: control reply is not an object")
        return message

    async def _receive(self, timeout_s: float) -> Any:
        """The next decoded JSON message. Raises StreamStale / BrokerTemporaryError / BrokerProtocolError."""
        ws = self._ws
        if ws is None:
            raise BrokerTemporaryError("websocket: not connected")
        try:
            msg = await asyncio.wait_for(ws.receive(), timeout=timeout_s)
        except TimeoutError:
            raise StreamStale(f"websocket: nothing received for {timeout_s:.1f}s") from None
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            self.messages_received += 1
            payload = msg.data if isinstance(msg.data, str) else bytes(msg.data).decode("utf-8", "replace")
            try:
                return json.loads(payload)
            except ValueError:
                return _Undecodable(payload)
        if msg.type == aiohttp.WSMsgType.ERROR:
            raise BrokerTemporaryError(f"websocket error: {type(ws.exception()).__name__}")
        raise BrokerTemporaryError(f"websocket closed ({msg.type.name}, code {ws.close_code})")

    async def updates(self) -> AsyncIterator[OrderEventRow]:
        """Trade updates as rows, forever; raises a :class:`BrokerError` when the session ends.

        Messages that are not JSON or carry an unexpected shape are yielded as rows with
        ``parse_error`` (stored raw), never dropped silently.
        """
        while True:
            message = await self._receive(self._stale_after_s)
            if isinstance(message, _Undecodable):
                yield undecodable_trade_update(message.text)
                continue
            for item in message if isinstance(message, list) else [message]:
                if not isinstance(item, Mapping):
                    continue
                stream = item.get("stream")
                if stream == "trade_updates":
                    yield parse_trade_update(item.get("data"))
                elif stream == "authorization":
                    data = item.get("data")
                    if isinstance(data, Mapping) and data.get("status") == "unauthorized":
                        raise BrokerAuthError("websocket: authorization revoked")
                # "listening" acknowledgements and unknown control frames are ignored.

    async def close(self) -> None:
        ws, session = self._ws, self._session
        self._ws, self._session = None, None
        if ws is not None and not ws.closed:
            try:
                await asyncio.wait_for(ws.close(), timeout=2.0)
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
        if session is not None:
            await session.close()


@dataclass(frozen=True, slots=True)
class _Undecodable:
    text: str
