"""A real ``hub serve`` for tests that talk to it over the network, as an integrating developer would: the SDK's
``hub.testing.running_hub`` (what plugin authors use) with a mail server, so signup works too."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from hub.testing import OPERATOR_TOKEN, RunningHub, running_hub
from tests.services import free_port

ADMIN = OPERATOR_TOKEN
LiveHub = RunningHub


class _Outbox:
    """Keeps what the hub mails: (recipients, message text)."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append((list(envelope.rcpt_tos), envelope.content.decode("utf-8", "replace")))
        return "250 accepted"


@contextmanager
def live_hub(home: Path, model: Path, **settings: str) -> Iterator[RunningHub]:
    """``hub serve`` (embedded default) on a free port with a mail server (its mails in ``hub.outbox``) and the
    operator token ``ADMIN``;
    image URLs on private addresses refused, as in production, unless ``allow_private_fetch="true"``."""
    outbox = _Outbox()
    mail = Controller(outbox, hostname="127.0.0.1", port=free_port())
    mail.start()
    try:
        with running_hub(home, model, smtp_url=f"smtp://127.0.0.1:{mail.port}",
                         **{"allow_private_fetch": "false", **settings}) as hub:
            hub.outbox = outbox.messages  # type: ignore[attr-defined]
            yield hub
    finally:
        mail.stop()
