"""What background work (webhook processing, syncs, imports) needs from the hub, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.connectors import ConnectionContext, Connector
from hub.core.media import MediaStore
from hub.core.models import Connection
from hub.core.pipeline import Pipeline
from hub.core.secrets import SecretBox
from hub.plugins import Plugins
from hub.settings import Settings


@dataclass
class Services:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    media: MediaStore
    plugins: Plugins
    secrets: SecretBox
    pipeline: Pipeline | None  # None in a process without one (``hub import``): the service's sweep queues the work

    def webhook_url(self, row: Connection) -> str:
        """Where the platform sends this connection's deliveries."""
        return f"{self.settings.public_url}/webhooks/{row.connector}/{row.id}"

    def context(self, row: Connection, connector: Connector, http: Any) -> ConnectionContext:
        """The connector's view of a connection: settings with the secrets decrypted, and an HTTP client."""
        values = dict(row.settings) | self.secrets.open(row.secrets)
        return ConnectionContext(connector.settings_model.model_validate(values), http, self.webhook_url(row))
