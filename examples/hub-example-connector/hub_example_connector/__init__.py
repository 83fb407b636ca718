"""Example Fashion Hub plugin: registered through the ``hub`` entry-point group in pyproject.toml."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, Field

from hub.connectors import (
    CatalogEvent,
    CatalogImage,
    CatalogPage,
    ConnectionContext,
    ConnectorError,
    Delivery,
    DeliveryRejected,
    ParsedDelivery,
    ProductDeleted,
    ProductUpserted,
)
from hub.hookspecs import hookimpl


class FeedSettings(BaseModel):
    feed_url: str = Field(pattern=r"^https?://", description="Base URL of the product feed")
    webhook_secret: str = Field(min_length=8, json_schema_extra={"secret": True})


def _time(value: str | None) -> datetime | None:
    """The feed's ISO 8601 times; one without an offset is UTC (the core needs aware times to order events)."""
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=UTC)


def _product(data: dict[str, Any]) -> ProductUpserted:
    return ProductUpserted(
        external_id=str(data["id"]),
        title=str(data.get("title", "")),
        description=str(data.get("description", "")),
        url=data.get("url"),
        category_hint=data.get("category"),
        tags=tuple(data.get("tags", ())),
        price=Decimal(str(data["price"])) if data.get("price") is not None else None,
        available=bool(data.get("available", True)),
        status=str(data.get("status", "active")),
        updated_at=_time(data.get("updated_at")),
        images=tuple(
            CatalogImage(external_id=str(i["id"]), url=str(i["url"]), alt=str(i.get("alt", "")), position=n)
            for n, i in enumerate(data.get("images", []))
        ),
    )


class FeedConnector:
    name: ClassVar[str] = "example"
    settings_model: ClassVar[type[BaseModel]] = FeedSettings

    async def check(self, ctx: ConnectionContext) -> dict[str, Any]:
        try:
            resp = await ctx.http.get(ctx.settings.feed_url, params={"page": 1})
        except httpx.HTTPError as exc:
            raise ConnectorError(f"cannot reach the feed: {exc}") from None
        if resp.status_code != 200:
            raise ConnectorError(f"the feed answered HTTP {resp.status_code}")
        return {"products_on_first_page": len(resp.json().get("products", []))}

    async def register_webhooks(self, ctx: ConnectionContext) -> dict[str, Any]:
        resp = await ctx.http.post(f"{ctx.settings.feed_url}/webhooks", json={"url": ctx.webhook_url})
        resp.raise_for_status()
        return {"webhook_id": resp.json()["id"]}

    async def unregister_webhooks(self, ctx: ConnectionContext, state: dict[str, Any]) -> None:
        if state.get("webhook_id") is not None:
            await ctx.http.delete(f"{ctx.settings.feed_url}/webhooks/{state['webhook_id']}")

    def verify(self, ctx: ConnectionContext, delivery: Delivery) -> bool:
        given = delivery.headers.get("x-example-signature", "")
        expected = hmac.new(ctx.settings.webhook_secret.encode(), delivery.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(given.encode(), expected.encode())

    def parse(self, ctx: ConnectionContext, delivery: Delivery) -> ParsedDelivery:
        try:
            payload = json.loads(delivery.body)
            kind = payload["event"]
            if kind == "ping":
                events: tuple[CatalogEvent, ...] = ()
            elif kind == "product.deleted":
                events = (ProductDeleted(external_id=str(payload["product"]["id"]),
                                         updated_at=_time(payload["product"].get("deleted_at"))),)
            elif kind in ("product.created", "product.updated"):
                events = (_product(payload["product"]),)
            else:
                raise DeliveryRejected(f"unknown event {kind!r}")
            return ParsedDelivery(delivery_id=str(payload["delivery_id"]), events=events, topic=kind)
        except (ValueError, KeyError, TypeError) as exc:
            raise DeliveryRejected(f"malformed delivery: {exc}") from None

    async def catalog(self, ctx: ConnectionContext, cursor: str | None) -> AsyncIterator[CatalogPage]:
        page = int(cursor or 1)
        while True:
            resp = await ctx.http.get(ctx.settings.feed_url, params={"page": page})
            resp.raise_for_status()
            body = resp.json()
            next_page = body.get("next_page")
            yield CatalogPage(
                events=tuple(_product(item) for item in body.get("products", [])),
                cursor=str(next_page) if next_page else None,
                total=body.get("total"),
            )
            if not next_page:
                return
            page = next_page


@hookimpl
def hub_connectors() -> list[FeedConnector]:
    """The feed connector."""
    return [FeedConnector()]
