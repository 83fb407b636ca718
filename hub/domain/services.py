"""What background work (webhook processing, syncs, imports) needs from the hub, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.connectors import ConnectionContext, Connector
from hub.domain.inbox import DeliveryInbox
from hub.foreground import Foreground
from hub.domain.keys import KnownKey, key_cache
from hub.domain.media import MediaStore
from hub.domain.merchandising import ShopSearch, shop_search_cache
from hub.db.models import Connection, Shop, VectorModel
from hub.domain.pipeline import Pipeline
from hub.domain.prompt_log import PromptLog
from hub.domain.recent import Recent
from hub.domain.secrets import SecretBox
from hub.plugin_manager import Plugins
from hub.settings import Settings

WEBHOOK_SECRET = "__webhook_secret"  # kept with a connection's sealed credentials
BUILDS_SECONDS = 10.0  # /ready reads the builds' progress (a query over every shop's job) at most this often


@dataclass
class Services:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    media: MediaStore
    plugins: Plugins
    secrets: SecretBox
    pipeline: Pipeline | None  # None in a process without one (``hub import``): the service's sweep queues the work
    intake: async_sessionmaker[AsyncSession] | None = None  # the webhook intake's own (default: ``sessions``)
    foreground: Foreground = field(default_factory=Foreground)  # what the in-process workers step aside for
    prompt_log: PromptLog = field(init=False)
    inbox: DeliveryInbox = field(init=False)
    keys: Recent[str, KnownKey] = field(init=False)
    shop_search: Recent[int, ShopSearch] = field(init=False)
    builds: Recent[str, list[Any]] = field(init=False)  # hub.domain.reindex.recent_build_statuses
    intake_connections: Recent[int, Connection] = field(init=False)  # hub.domain.webhooks.intake_connection

    def __post_init__(self) -> None:
        self.prompt_log = PromptLog(self.sessions)
        self.inbox = DeliveryInbox(self.intake or self.sessions)
        self.keys = key_cache(self.settings.query_cache_seconds)
        self.shop_search = shop_search_cache(self.settings.query_cache_seconds)
        self.builds = Recent(BUILDS_SECONDS, (VectorModel,), size=1)
        # the connections deliveries came for: a change made in this process counts at once (a new webhook
        # secret, a connection erased), one made by another within HUB_QUERY_CACHE_SECONDS; a delivery for a
        # connection deleted meanwhile is refused by the database when it is stored
        self.intake_connections = Recent(self.settings.query_cache_seconds, (Connection, Shop))

    def webhook_url(self, row: Connection) -> str:
        """Where the platform should send this connection's deliveries (under the current HUB_PUBLIC_URL)."""
        return f"{self.settings.public_url}/webhooks/{row.connector}/{row.id}"

    def context(self, row: Connection, connector: Connector, http: Any,
                webhook_url: str | None = None, bulk_http: Any = None) -> ConnectionContext:
        """The connector's view of a connection: settings with the secrets decrypted, the connection's webhook
        secret, an HTTP client, the webhook URL (by default the one its webhooks were registered at), and in a
        catalog read the client for large documents and what the last complete read left."""
        opened = self.secrets.open(row.secrets)
        webhook_secret = opened.pop(WEBHOOK_SECRET, None)
        values = dict(row.settings) | opened
        return ConnectionContext(connector.settings_model.model_validate(values), http,
                                 webhook_url or row.webhook_url or self.webhook_url(row), webhook_secret,
                                 installed_by_app=bool(row.via_app), catalog_state=row.catalog_state or {},
                                 bulk_http=bulk_http)
