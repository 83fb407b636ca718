"""What a connector is, and the catalog events it turns platform data into.

Connectors never touch the database, the queue or the vector store: they check credentials, manage their
webhooks on the platform, verify and parse deliveries, and iterate the catalog — all as catalog events that
the core applies (``hub.core.catalog``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Protocol, runtime_checkable

import httpx
from pydantic import BaseModel


@dataclass(frozen=True)
class CatalogImage:
    """One image of a product on the platform."""

    external_id: str
    url: str
    alt: str = ""
    position: int = 0


@dataclass(frozen=True)
class ProductUpserted:
    """A product was created or changed; ``images`` is its complete current list."""

    external_id: str
    title: str
    images: tuple[CatalogImage, ...]
    description: str = ""
    url: str | None = None
    category_hint: str | None = None
    tags: tuple[str, ...] = ()
    price: Decimal | None = None
    currency: str | None = None
    available: bool = True
    status: str = "active"  # "active" products are recommended; "draft"/"archived" are not
    updated_at: datetime | None = None


@dataclass(frozen=True)
class ProductDeleted:
    """A product is gone from the platform, with all its images."""

    external_id: str
    updated_at: datetime | None = None


CatalogEvent = ProductUpserted | ProductDeleted


@dataclass(frozen=True)
class Delivery:
    """One webhook request as the platform sent it: the raw body is what signatures are computed over."""

    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ParsedDelivery:
    """What a verified delivery means: an id to deduplicate on, and the events (none for a ping)."""

    delivery_id: str | None
    events: tuple[CatalogEvent, ...] = ()
    topic: str = ""


class ConnectionContext:
    """What a connector gets for one connection: its validated settings and an HTTP client from the core."""

    def __init__(self, settings: BaseModel, http: httpx.AsyncClient, webhook_url: str) -> None:
        self.settings = settings
        self.http = http
        self.webhook_url = webhook_url


class ConnectorError(Exception):
    """A problem the shop can fix (bad token, wrong domain, missing scope); the message says which."""


class DeliveryRejected(Exception):
    """A webhook delivery that is malformed (400) — as opposed to unauthentic (verify returns False)."""


@runtime_checkable
class Connector(Protocol):
    """A platform connector. ``settings_model`` marks secret fields with ``json_schema_extra={"secret": True}``."""

    name: ClassVar[str]
    settings_model: ClassVar[type[BaseModel]]

    async def check(self, ctx: ConnectionContext) -> dict[str, Any]:
        """Verify the credentials against the platform; return facts worth showing (shop name…)."""

    async def register_webhooks(self, ctx: ConnectionContext) -> dict[str, Any]:
        """Create the platform's webhooks pointing at ``ctx.webhook_url``; return state to keep."""

    async def unregister_webhooks(self, ctx: ConnectionContext, state: dict[str, Any]) -> None:
        """Remove what ``register_webhooks`` created."""

    def verify(self, ctx: ConnectionContext, delivery: Delivery) -> bool:
        """True if the delivery is authentic (signature over the raw body, constant-time compare)."""

    def parse(self, ctx: ConnectionContext, delivery: Delivery) -> ParsedDelivery:
        """The events of an authentic delivery; raise ``DeliveryRejected`` for a malformed one."""

    def catalog(self, ctx: ConnectionContext, cursor: str | None) -> AsyncIterator[tuple[CatalogEvent, str | None]]:
        """Every product as events, each with the cursor to resume after it (a sync after a restart)."""


def secret_fields(model: type[BaseModel]) -> set[str]:
    """The settings a connector marks secret: stored encrypted, never returned by the API."""
    return {
        name
        for name, info in model.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("secret")
    }
