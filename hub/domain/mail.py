"""Outgoing mail over SMTP (``HUB_SMTP_URL``): the signup key delivery."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import anyio

from hub.errors import Unavailable

SMTP_TIMEOUT = 15


def _send(url: str, message: EmailMessage) -> None:
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    if parts.scheme == "smtps":
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            host, parts.port or 465, timeout=SMTP_TIMEOUT, context=ssl.create_default_context()
        )
    else:
        client = smtplib.SMTP(host, parts.port or 25, timeout=SMTP_TIMEOUT)
    with client:
        if parts.scheme == "smtp+starttls":
            client.starttls(context=ssl.create_default_context())
        if parts.username:
            client.login(unquote(parts.username), unquote(parts.password or ""))
        client.send_message(message)


async def send_mail(url: str | None, sender: str, to: str, subject: str, body: str) -> None:
    """Send one plain-text mail; raise ``Unavailable`` when the server can't be reached."""
    if not url:
        raise Unavailable("mail", "signup is disabled until HUB_SMTP_URL is set")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    try:
        await anyio.to_thread.run_sync(_send, url, message)
    except (OSError, smtplib.SMTPException) as exc:
        raise Unavailable("mail", f"could not send mail ({type(exc).__name__})") from None
