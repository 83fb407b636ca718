"""The WooCommerce connector: REST API v3 keys, signed webhooks, and full imports with variation images.

Registered through the ``hub`` entry-point group like any third-party plugin; it never touches the database:
everything it learns becomes catalog events.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hub.connectors import (
    CatalogEvent,
    CatalogImage,
    CatalogPage,
    ConnectionContext,
    ConnectorError,
    Delivery,
    DeliveryRejected,
    ParsedDelivery,
    ProductChanged,
    ProductDeleted,
    ProductUpserted,
    html_to_text,
)
from hub.hookspecs import hookimpl
from hub.plugins.woocommerce.api import StoreApi

PER_PAGE = 100
MAX_CATALOG_PAGES = 5_000  # 500,000 products: a store that claims more is not believed
MAX_VARIATION_PAGES = 50  # 5,000 variations of one product
TOPICS = ("product.created", "product.updated", "product.deleted", "product.restored")
UPSERT_TOPICS = ("product.created", "product.updated", "product.restored")
PING = re.compile(rb"^webhook_id=\d+$")


class WooSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    store_url: str = Field(description="The store's address, e.g. https://shop.example.com")
    consumer_key: str = Field(pattern=r"^ck_[0-9a-f]{10,64}$", json_schema_extra={"secret": True})
    consumer_secret: str = Field(pattern=r"^cs_[0-9a-f]{10,64}$", json_schema_extra={"secret": True})
    auth: Literal["auto", "basic", "query", "oauth1"] = Field(
        "auto", description="auto: HTTP Basic over HTTPS (query-string keys if the server strips it), "
                            "OAuth 1.0a signatures over plain HTTP")

    @field_validator("store_url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be the store's address, starting with https://")
        return value

    @model_validator(mode="after")
    def _clear_keys(self) -> WooSettings:
        if self.auth in ("basic", "query") and not self.store_url.lower().startswith("https://"):
            raise ValueError(f"auth {self.auth!r} would send the consumer secret in clear over plain HTTP; "
                             "use https:// or auth 'auto' (OAuth 1.0a signatures)")
        return self


def api(ctx: ConnectionContext) -> StoreApi:
    s: WooSettings = ctx.settings
    return StoreApi(ctx.http, s.store_url, s.consumer_key, s.consumer_secret, s.auth)


def webhook_secret(ctx: ConnectionContext) -> str:
    """The secret WooCommerce signs this connection's deliveries with: the random one the core keeps encrypted
    for the connection. (Connections made before it existed used one derived from the consumer secret and the
    webhook URL — which broke when HUB_PUBLIC_URL changed; re-registering their webhooks moves them over.)"""
    if ctx.webhook_secret:
        return ctx.webhook_secret
    mac = hmac.new(ctx.settings.consumer_secret.encode(), f"fashion-hub webhook {ctx.webhook_url}".encode(),
                   hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def _positive_id(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdecimal() or int(value) < 1:
        raise DeliveryRejected(f"{what} must be a positive integer id")
    return str(int(value))


def delivery_events(topic: str, product: dict[str, Any]) -> tuple[CatalogEvent, ...]:
    """What a (verified) delivery means, once its body is known to have the shape its topic header claims."""
    if topic == "product.deleted":
        # WooCommerce's delete payload is {"id": n}, with no time; a product body is never a delete
        if set(product) != {"id"}:
            raise DeliveryRejected('a product.deleted delivery must be {"id": …} and nothing else')
        # the store is asked for the product's current state: a replayed or late delete of a product that came
        # back (trash, then restore) cannot remove it; a gone product becomes a tombstone dated on arrival
        return (ProductChanged(_positive_id(product["id"], "id")),)
    if topic not in UPSERT_TOPICS:
        raise DeliveryRejected(f"unexpected topic {topic!r}")
    if not {"id", "name", "type"} <= set(product):
        raise DeliveryRejected(f"a {topic} delivery must carry a product (id, name, type)")
    ident = _positive_id(product["id"], "id")
    if product["type"] == "variation":
        # a variation is part of its parent: re-read the parent and all its variations, as the import does
        return (ProductChanged(_positive_id(product.get("parent_id"), "a variation's parent_id")),)
    if product["type"] == "variable" and product.get("variations"):
        return (ProductChanged(ident),)  # its variation images are not in here
    return (to_event(product),)


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value not in (None, "") else None
    except InvalidOperation:
        return None


def _time(product: dict[str, Any]) -> datetime | None:
    value = product.get("date_modified_gmt") or product.get("date_modified")
    if not value:
        return None
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def to_event(product: dict[str, Any], variations: list[dict[str, Any]] = ()) -> ProductUpserted:  # type: ignore[assignment]
    """A REST v3 product (and its variations) as a catalog event."""
    images: list[CatalogImage] = []
    seen: set[str] = set()
    gallery = [(image, n) for n, image in enumerate(product.get("images") or [])]
    extra = [(v["image"], len(gallery) + n) for n, v in enumerate(variations) if v.get("image")]
    for image, position in gallery + extra:
        ident = str(image.get("id") or image.get("src"))
        if not image.get("src") or ident in seen:
            continue
        seen.add(ident)
        images.append(CatalogImage(ident, str(image["src"]), str(image.get("alt") or ""), position))
    categories = [c.get("name", "") for c in product.get("categories") or []]
    tags = [t.get("name", "") for t in product.get("tags") or []]
    description = product.get("description") or product.get("short_description")
    return ProductUpserted(
        external_id=str(product["id"]),
        title=html_to_text(product.get("name")),
        description=html_to_text(description),
        url=product.get("permalink") or None,
        category_hint=categories[0] if categories else None,
        tags=tuple(t for t in [*categories[1:], *tags] if t),
        price=_decimal(product.get("price")),
        available=product.get("stock_status", "instock") in ("instock", "onbackorder"),
        status="active" if product.get("status", "publish") == "publish" else str(product.get("status")),
        updated_at=_time(product),
        images=tuple(images),
    )


class WooCommerceConnector:
    name: ClassVar[str] = "woocommerce"
    settings_model: ClassVar[type[BaseModel]] = WooSettings

    async def check(self, ctx: ConnectionContext) -> dict[str, Any]:
        store = api(ctx)
        resp = await store.call("GET", "/products", {"per_page": 1})
        resp.raise_for_status()
        if not isinstance(resp.json(), list):
            raise ConnectorError("the store answered, but not with WooCommerce products")
        return {"products": int(resp.headers.get("X-WP-Total", 0) or 0), "auth": store.mode}

    async def register_webhooks(self, ctx: ConnectionContext) -> dict[str, Any]:
        store = api(ctx)
        created: list[int] = []
        for topic in TOPICS:
            resp = await store.call("POST", "/webhooks", body={
                "name": f"Fashion Hub: {topic}", "topic": topic, "delivery_url": ctx.webhook_url,
                "secret": webhook_secret(ctx), "status": "active"})
            if resp.status_code not in (200, 201):
                await self.unregister_webhooks(ctx, {"webhooks": created})
                raise ConnectorError(f"WooCommerce refused the {topic} webhook (HTTP {resp.status_code})")
            created.append(int(resp.json()["id"]))
        return {"webhooks": created}

    async def unregister_webhooks(self, ctx: ConnectionContext, state: dict[str, Any]) -> None:
        store = api(ctx)
        for webhook in state.get("webhooks") or []:
            await store.call("DELETE", f"/webhooks/{int(webhook)}", {"force": "true"})

    def verify(self, ctx: ConnectionContext, delivery: Delivery) -> bool:
        given = delivery.headers.get("x-wc-webhook-signature")
        if given is None:  # WooCommerce's ping when a webhook is saved is unsigned: it carries nothing
            return bool(PING.fullmatch(delivery.body.strip()))
        expected = base64.b64encode(hmac.new(webhook_secret(ctx).encode(), delivery.body, hashlib.sha256).digest())
        return hmac.compare_digest(given.encode(), expected)

    def parse(self, ctx: ConnectionContext, delivery: Delivery) -> ParsedDelivery:
        if "x-wc-webhook-signature" not in delivery.headers and PING.fullmatch(delivery.body.strip()):
            return ParsedDelivery(delivery_id=None, events=(), topic="ping")
        topic = delivery.headers.get("x-wc-webhook-topic", "")
        # not unique: WooCommerce makes it from the webhook id and the current second (recorded, not trusted)
        delivery_id = delivery.headers.get("x-wc-webhook-delivery-id")
        if not delivery_id:
            raise DeliveryRejected("no X-WC-Webhook-Delivery-ID header")
        try:
            product = json.loads(delivery.body)
            if not isinstance(product, dict) or "id" not in product:
                raise DeliveryRejected("the body is not a product")
            events = delivery_events(topic, product)
        except DeliveryRejected:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise DeliveryRejected(f"malformed {topic or 'WooCommerce'} payload: {type(exc).__name__}: {exc}") from None
        return ParsedDelivery(delivery_id=delivery_id, events=events, topic=topic)

    async def _variations(self, store: StoreApi, product: dict[str, Any]) -> list[dict[str, Any]]:
        if product.get("type") != "variable" or not product.get("variations"):
            return []
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            resp = await store.call("GET", f"/products/{int(product['id'])}/variations", {"per_page": PER_PAGE, "page": page})
            resp.raise_for_status()
            items = resp.json()
            if not isinstance(items, list):
                raise ConnectorError(f"the store's variations of product {product['id']} are not a list")
            found += [v for v in items if isinstance(v, dict)]
            if page >= int(resp.headers.get("X-WP-TotalPages", 1) or 1) or not items:
                return found
            if page >= MAX_VARIATION_PAGES:
                raise ConnectorError(f"product {product['id']} claims more than {MAX_VARIATION_PAGES * PER_PAGE} "
                                     "variations")
            page += 1

    async def product(self, ctx: ConnectionContext, external_id: str) -> ProductUpserted | ProductDeleted:
        store = api(ctx)
        resp = await store.call("GET", f"/products/{int(external_id)}")
        if resp.status_code == 404:
            return ProductDeleted(external_id)
        resp.raise_for_status()
        product = resp.json()
        if product.get("status") == "trash":
            return ProductDeleted(external_id, updated_at=_time(product))
        return to_event(product, await self._variations(store, product))

    async def catalog(self, ctx: ConnectionContext, cursor: str | None) -> AsyncIterator[CatalogPage]:
        store = api(ctx)
        page = int(cursor or 1)
        while True:
            resp = await store.call("GET", "/products", {"per_page": PER_PAGE, "page": page, "orderby": "id",
                                                         "order": "asc", "status": "any"})
            resp.raise_for_status()
            products = resp.json()
            if not isinstance(products, list):
                raise ConnectorError("the store's product list is not a list")
            events = [to_event(p, await self._variations(store, p)) for p in products
                      if isinstance(p, dict) and p.get("status") != "trash"]
            pages = int(resp.headers.get("X-WP-TotalPages", 1) or 1)
            more = page < pages and bool(products)
            yield CatalogPage(tuple(events), cursor=str(page + 1) if more else None,
                              total=int(resp.headers.get("X-WP-Total", 0) or 0) or None)
            if not more:
                return
            if page >= MAX_CATALOG_PAGES:
                raise ConnectorError(f"the store claims more than {MAX_CATALOG_PAGES * PER_PAGE} products")
            page += 1


@hookimpl
def hub_connectors() -> list[WooCommerceConnector]:
    """The WooCommerce connector."""
    return [WooCommerceConnector()]
