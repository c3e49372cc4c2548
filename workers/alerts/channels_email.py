"""E-mail over SMTP (``smtplib`` in a thread: one message per delivery, STARTTLS when configured)."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from core.alert_rules import Channel


def _send_blocking(channel: Channel, subject: str, body: str, delivery_id: str) -> None:
    msg = EmailMessage()
    msg["From"] = channel.sender
    msg["To"] = ", ".join(channel.recipients)
    msg["Subject"] = subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain="coldharbour.local")
    msg["X-ColdHarbour-Delivery"] = delivery_id
    msg.set_content(body)
    with smtplib.SMTP(channel.host, channel.port, timeout=channel.timeout_s) as smtp:
        if channel.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if channel.username:
            smtp.login(channel.username, channel.secret)
        smtp.send_message(msg)


async def send_email(channel: Channel, subject: str, body: str, delivery_id: str) -> None:
    """Send one message or raise :class:`~workers.alerts.channels.DeliveryError` (reason: the error type
    and SMTP code only; the server's text may echo the login)."""
    from workers.alerts.channels import DeliveryError

    try:
        await asyncio.to_thread(_send_blocking, channel, subject, body, delivery_id)
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(f"SMTP {exc.smtp_code}", permanent=exc.smtp_code in {535, 550, 553}) from None
    except (smtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as exc:
        raise DeliveryError(type(exc).__name__) from None
