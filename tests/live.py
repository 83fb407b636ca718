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
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        return "250 accepted"


@contextmanager
def live_hub(home: Path, model: Path, **settings: str) -> Iterator[RunningHub]:
    """``hub serve`` (embedded default) on a free port with a mail server and the operator token ``ADMIN``;
    image URLs on private addresses refused, as in production, unless ``allow_private_fetch="true"``."""
    mail = Controller(_Outbox(), hostname="127.0.0.1", port=free_port())
    mail.start()
    try:
        with running_hub(home, model, smtp_url=f"smtp://127.0.0.1:{mail.port}",
                         **{"allow_private_fetch": "false", **settings}) as hub:
            yield hub
    finally:
        mail.stop()
