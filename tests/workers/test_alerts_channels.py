"""Channel adapters against real local servers: an HTTP receiver (webhook, Slack, Telegram) and aiosmtpd."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Iterator
from email.header import decode_header, make_header

import aiohttp
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message

from core.alert_rules import Channel, ChannelType
from tests.workers.test_alerts_support import Receiver, free_port
from workers.alerts.channels import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliveryError,
    Notification,
    send,
)

NOTE = Notification(delivery_id="alert:7:fired:ops", text="[critical] deep drawdown · alpha: equity is 6% down",
                    payload={"event": "fired", "alert_id": 7, "severity": "critical"})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_webhook_signs_the_body(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    channel = Channel("ops", ChannelType.WEBHOOK, url=f"{receiver.url}/hook", secret="k3y")

    await send(channel, NOTE, session)

    (got,) = receiver.received
    body = got.json
    assert (body["delivery_id"], body["event"], body["alert_id"], body["text"]) == (
        "alert:7:fired:ops", "fired", 7, NOTE.text)
    assert got.headers[DELIVERY_HEADER] == "alert:7:fired:ops"
    expected = hmac.new(b"k3y", got.headers[TIMESTAMP_HEADER].encode() + b"." + got.body, hashlib.sha256).hexdigest()
    assert got.headers[SIGNATURE_HEADER] == f"sha256={expected}"


async def test_webhook_without_secret_sends_no_signature(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    await send(Channel("ops", ChannelType.WEBHOOK, url=f"{receiver.url}/hook"), NOTE, session)

    assert SIGNATURE_HEADER not in receiver.received[0].headers


async def test_slack_incoming_webhook_format(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    await send(Channel("slack", ChannelType.SLACK, url=f"{receiver.url}/services/T0/B0/X"), NOTE, session)

    (got,) = receiver.received
    assert got.path == "/services/T0/B0/X"
    assert got.json == {"text": NOTE.text}


async def test_telegram_bot_api(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    channel = Channel("tg", ChannelType.TELEGRAM, secret="123:ABC", chat_id="-1001", base_url=receiver.url)

    await send(channel, NOTE, session)

    (got,) = receiver.received
    assert got.path == "/bot123:ABC/sendMessage"
    assert got.json == {"chat_id": "-1001", "text": NOTE.text, "disable_web_page_preview": True}


@pytest.mark.parametrize(("status", "permanent"), [(500, False), (503, False), (429, False), (400, True), (404, True)])
async def test_http_failures_are_typed_and_never_echo_the_url(receiver: Receiver, session: aiohttp.ClientSession,
                                                              status: int, permanent: bool) -> None:
    receiver.always_fail, receiver.fail_status = True, status
    channel = Channel("tg", ChannelType.TELEGRAM, secret="999:SECRET-TOKEN", chat_id="1", base_url=receiver.url)

    with pytest.raises(DeliveryError) as caught:
        await send(channel, NOTE, session)

    assert caught.value.permanent is permanent
    assert caught.value.reason == f"HTTP {status}"
    assert "SECRET-TOKEN" not in str(caught.value)


async def test_unreachable_server_is_temporary(session: aiohttp.ClientSession) -> None:
    channel = Channel("slack", ChannelType.SLACK, url=f"http://127.0.0.1:{free_port()}/T0/SECRETPATH", timeout_s=2)

    with pytest.raises(DeliveryError) as caught:
        await send(channel, NOTE, session)

    assert not caught.value.permanent
    assert "SECRETPATH" not in caught.value.reason


async def test_log_channel(caplog: pytest.LogCaptureFixture, session: aiohttp.ClientSession) -> None:
    with caplog.at_level(logging.INFO, logger="workers.alerts.channel"):
        await send(Channel("log", ChannelType.LOG, level="WARNING"), NOTE, session)

    assert any(NOTE.text in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


class Recorder(Message):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[object] = []

    def handle_message(self, message: object) -> None:
        self.messages.append(message)


@pytest.fixture
def smtp() -> Iterator[tuple[Controller, Recorder]]:
    handler = Recorder()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, handler
    controller.stop()


async def test_email_over_smtp(smtp: tuple[Controller, Recorder], session: aiohttp.ClientSession) -> None:
    controller, handler = smtp
    channel = Channel("mail", ChannelType.EMAIL, host="127.0.0.1", port=controller.port, sender="ch@example.com",
                      recipients=("me@example.com", "ops@example.com"))

    await send(channel, NOTE, session)

    await asyncio.sleep(0)  # the server thread has handled the message once DATA was acknowledged
    (msg,) = handler.messages
    assert str(make_header(decode_header(msg["Subject"]))) == NOTE.subject  # type: ignore[index]
    assert msg["To"] == "me@example.com, ops@example.com"  # type: ignore[index]
    assert msg["X-ColdHarbour-Delivery"] == "alert:7:fired:ops"  # type: ignore[index]
    assert NOTE.text in msg.get_payload(decode=True).decode()  # type: ignore[attr-defined]


async def test_email_starttls_refused_by_a_plain_server_is_never_sent_in_clear(
        smtp: tuple[Controller, Recorder], session: aiohttp.ClientSession) -> None:
    controller, handler = smtp
    channel = Channel("mail", ChannelType.EMAIL, host="127.0.0.1", port=controller.port, starttls=True,
                      sender="ch@example.com", recipients=("me@example.com",), username="u", secret="smtp-pass")

    with pytest.raises(DeliveryError) as caught:
        await send(channel, NOTE, session)

    assert handler.messages == []
    assert "smtp-pass" not in caught.value.reason


async def test_email_server_down_is_temporary(session: aiohttp.ClientSession) -> None:
    channel = Channel("mail", ChannelType.EMAIL, host="127.0.0.1", port=free_port(), sender="a@b", recipients=("c@d",),
                      timeout_s=2)

    with pytest.raises(DeliveryError) as caught:
        await send(channel, NOTE, session)

    assert not caught.value.permanent
