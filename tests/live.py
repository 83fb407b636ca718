"""A real ``hub serve`` for tests that talk to it over the network, as an integrating developer would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller

from tests.services import free_port, wait_for_port

ADMIN = "an-operator-token-for-live-tests-000001"


@dataclass
class LiveHub:
    base: str
    home: Path

    def create_shop(self, name: str, email: str) -> dict[str, Any]:
        resp = httpx.post(f"{self.base}/api/v1/shops", json={"name": name, "email": email},
                          headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
        assert resp.status_code == 201, resp.text
        return dict(resp.json())


class _Outbox:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        return "250 accepted"


@contextmanager
def live_hub(home: Path, model: Path, **settings: str) -> Iterator[LiveHub]:
    """``hub serve`` (embedded default) on a free port with a mail server, the operator token ``ADMIN`` and
    limits high enough for generated traffic; stopped (SIGTERM) at the end."""
    port = free_port()
    mail = Controller(_Outbox(), hostname="127.0.0.1", port=free_port())
    mail.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(HUB_HOME=str(home / "data"), HUB_MODEL=str(model), HUB_ADMIN_TOKEN=ADMIN,
               HUB_RATE_LIMIT="1000000/minute", HUB_AUTH_FAILURE_LIMIT="1000000/minute",
               HUB_SIGNUP_RATE_LIMIT="1000000/minute", HUB_SECRET_KEY="a-secret-key-for-live-tests-0001",
               HUB_PUBLIC_URL=f"http://127.0.0.1:{port}", HUB_SMTP_URL=f"smtp://127.0.0.1:{mail.port}",
               **{f"HUB_{k.upper()}": v for k, v in settings.items()})
    log = (home / "serve.log").open("w+")
    server = subprocess.Popen([sys.executable, "-m", "hub", "serve", "--port", str(port)], env=env, cwd=home,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
        yield LiveHub(f"http://127.0.0.1:{port}", home)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
        mail.stop()
