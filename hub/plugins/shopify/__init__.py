"""The Shopify connector: a custom app's Admin API token (or a public app's OAuth install), product webhooks,
the mandatory compliance topics, and full imports through the GraphQL Admin API.

Registered through the ``hub`` entry-point group like any third-party plugin; it never touches the database:
everything it learns becomes catalog events.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlencode

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hub.connectors import (
    CatalogEvent,
    CatalogPage,
    ConnectionContext,
    ConnectionDisabled,
    ConnectionErased,
    ConnectorError,
    Delivery,
    DeliveryRejected,
    ParsedDelivery,
    ProductChanged,
    ProductDeleted,
    ProductUpserted,
)
from hub.hookspecs import hookimpl
from hub.plugins.shopify.admin import AdminApi, user_errors
from hub.plugins.shopify.payloads import from_graphql, from_webhook, numeric_id, timestamp

DEFAULT_API_VERSION = "2025-10"
PAGE_SIZE = 250  # products per page: Shopify's maximum
MEDIA_BATCH = 35  # products per media query: 35 x (2 + 25) points stays under the 1,000-point query limit
MEDIA_PER_PRODUCT = 25
WEBHOOK_TOPICS = ("PRODUCTS_CREATE", "PRODUCTS_UPDATE", "PRODUCTS_DELETE", "APP_UNINSTALLED")
PRIVACY_TOPICS = ("customers/data_request", "customers/redact")  # accepted, verified; no customer data is kept
COMPLIANCE_TOPICS = (*PRIVACY_TOPICS, "shop/redact")  # a public app's mandatory topics, sent app-wide
DOMAIN = re.compile(r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$")
FUTURE_SKEW = timedelta(minutes=15)  # X-Shopify-Triggered-At a little ahead of our clock is fine
# fields of a product body: a delivery that carries any of them is a product, never a delete or a shop event
PRODUCT_FIELDS = frozenset({"title", "body_html", "handle", "variants", "images", "media", "product_type", "vendor",
                            "options", "tags", "status"})

SHOP_QUERY = """query Shop {
  shop { name myshopifyDomain currencyCode }
  currentAppInstallation { accessScopes { handle } }
}"""
PRODUCTS_QUERY = """query Products($first: Int!, $after: String) {
  productsCount { count }
  products(first: $first, after: $after, sortKey: ID) {
    pageInfo { hasNextPage endCursor }
    nodes {
      id title descriptionHtml handle productType tags status updatedAt tracksInventory totalInventory
      priceRangeV2 { minVariantPrice { amount currencyCode } }
    }
  }
}"""
PRODUCT_QUERY = """query Product($id: ID!, $first: Int!) {
  product(id: $id) {
    id title descriptionHtml handle productType tags status updatedAt tracksInventory totalInventory
    priceRangeV2 { minVariantPrice { amount currencyCode } }
    media(first: $first) { nodes { ... on MediaImage { id alt image { url altText } } } }
  }
}"""
MEDIA_QUERY = """query ProductMedia($ids: [ID!]!, $first: Int!) {
  nodes(ids: $ids) {
    ... on Product { id media(first: $first) { nodes { ... on MediaImage { id alt image { url altText } } } } }
  }
}"""
CREATE_WEBHOOK = """mutation CreateWebhook($topic: WebhookSubscriptionTopic!, $uri: String!) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: {uri: $uri, format: JSON}) {
    webhookSubscription { id }
    userErrors { field message }
  }
}"""
DELETE_WEBHOOK = """mutation DeleteWebhook($id: ID!) {
  webhookSubscriptionDelete(id: $id) { deletedWebhookSubscriptionId userErrors { field message } }
}"""


def store_domain(value: str) -> str:
    """``https://My-Store.myshopify.com/`` → ``my-store.myshopify.com``; ValueError for anything else."""
    value = value.strip().lower().removeprefix("https://").removeprefix("http://").rstrip("/")
    if not DOMAIN.fullmatch(value):
        raise ValueError("must be the store's permanent domain, like my-store.myshopify.com "
                         "(Shopify admin → Settings → Domains)")
    return value


class ShopifySettings(BaseModel):
    """A connection's settings. There is deliberately no API URL here: the Admin API of a store is always
    ``https://{shop_domain}`` (an operator may point every store at an emulator with HUB_SHOPIFY_API_URL)."""

    model_config = ConfigDict(extra="forbid")
    shop_domain: str = Field(description="The store's permanent domain, e.g. my-store.myshopify.com")
    access_token: str = Field(min_length=8, json_schema_extra={"secret": True},
                              description="Admin API access token (shpat_…) of the custom app, or from OAuth")
    client_secret: str = Field(min_length=8, json_schema_extra={"secret": True},
                               description="The app's client secret (API secret key): signs the webhooks")
    api_version: str = Field(DEFAULT_API_VERSION, pattern=r"^\d{4}-(01|04|07|10)$")

    _domain = field_validator("shop_domain")(lambda value: store_domain(value))


class ShopifyApp(BaseSettings):
    """Operator settings (``HUB_SHOPIFY_*``): the public Shopify app for OAuth installs (custom apps need none of
    it), where the Admin API is, and how old a delivery may be."""

    model_config = SettingsConfigDict(env_prefix="HUB_SHOPIFY_", env_file=".env", extra="ignore")
    client_id: str | None = None
    client_secret: str | None = None
    # while rotating the app's secret: the one before, still accepted on deliveries until Shopify signs with the new
    previous_client_secret: str | None = None
    scopes: str = "read_products"
    api_version: str = DEFAULT_API_VERSION
    # tests and emulators only: every store's Admin API (and OAuth token exchange) at this base URL instead of
    # https://{shop}.myshopify.com. An operator setting by design: no tenant field decides where secrets go.
    api_url: str | None = Field(None, pattern=r"^https?://[^/\s]+")
    # deliveries triggered longer ago are refused (Shopify retries a failed delivery for 4 hours)
    max_delivery_age_hours: float = Field(12.0, gt=0)


def base_url(shop_domain: str) -> str:
    """Where a store's Admin API is: always its own myshopify.com domain (or the operator's emulator)."""
    override = ShopifyApp().api_url
    return override.rstrip("/") if override else f"https://{store_domain(shop_domain)}"


def admin(ctx: ConnectionContext) -> AdminApi:
    s: ShopifySettings = ctx.settings
    return AdminApi(ctx.http, base_url(s.shop_domain), s.api_version, s.access_token, s.shop_domain)


def signing_secrets(ctx: ConnectionContext) -> list[str]:
    """Who signs this connection's deliveries: the operator's app (its current secret, and the previous one while
    it is being rotated) for an app install; the custom app's own secret otherwise."""
    if ctx.installed_by_app:
        app = ShopifyApp()
        return [secret for secret in (app.client_secret, app.previous_client_secret) if secret]
    return [ctx.settings.client_secret]


def _reject(topic: str, why: str) -> DeliveryRejected:
    return DeliveryRejected(f"a {topic} delivery {why}")


def check_shape(topic: str, payload: dict[str, Any], shop_domain: str) -> None:
    """The body must be what the topic header says: a signature covers the body, never the headers."""
    keys = set(payload)
    if topic in ("products/create", "products/update"):
        if "id" not in payload or "title" not in payload or not keys & {"variants", "handle"}:
            raise _reject(topic, "must carry a product (id, title, handle, variants)")
    elif topic == "products/delete":
        if keys != {"id"}:
            raise _reject(topic, 'must be {"id": …} and nothing else')
    elif topic == "app/uninstalled":
        if str(payload.get("myshopify_domain", "")).lower() != shop_domain or keys & PRODUCT_FIELDS:
            raise _reject(topic, "must carry this store's shop object (myshopify_domain)")
    elif topic in COMPLIANCE_TOPICS:
        if str(payload.get("shop_domain", "")).lower() != shop_domain or "shop_id" not in payload:
            raise _reject(topic, "must name this store (shop_id, shop_domain)")
        if topic == "shop/redact" and keys - {"shop_id", "shop_domain"}:
            raise _reject(topic, "carries only shop_id and shop_domain")
        if topic != "shop/redact" and "customer" not in payload:
            raise _reject(topic, "must name a customer")
    else:
        raise DeliveryRejected(f"unexpected topic {topic!r}")


def check_fresh(triggered: datetime | None, received_at: datetime | None) -> None:
    """Refuse deliveries triggered too long before they were received (or claiming to come from the future)."""
    if triggered is None:
        raise DeliveryRejected("no X-Shopify-Triggered-At header")
    now = received_at or datetime.now(UTC)
    if triggered.tzinfo is None:
        triggered = triggered.replace(tzinfo=UTC)
    max_age = timedelta(hours=ShopifyApp().max_delivery_age_hours)
    if triggered < now - max_age:
        raise DeliveryRejected(f"the delivery was triggered at {triggered.isoformat()}, more than {max_age} "
                               "before it arrived: refused as stale (a full sync catches up)")
    if triggered > now + FUTURE_SKEW:
        raise DeliveryRejected(f"the delivery claims to be triggered at {triggered.isoformat()}, in the future")


def signature(secret: str, body: bytes) -> str:
    """``X-Shopify-Hmac-Sha256``: base64 HMAC-SHA256 of the raw body with the app's client secret."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


class ShopifyConnector:
    name: ClassVar[str] = "shopify"
    settings_model: ClassVar[type[BaseModel]] = ShopifySettings

    async def check(self, ctx: ConnectionContext) -> dict[str, Any]:
        data = await admin(ctx).query(SHOP_QUERY, cost=2)
        shop = data.get("shop") or {}
        scopes = {s["handle"] for s in ((data.get("currentAppInstallation") or {}).get("accessScopes") or [])}
        if not scopes & {"read_products", "write_products"}:
            raise ConnectorError("the access token lacks the read_products scope: in your custom app's Admin API "
                                 "configuration, grant read_products and reinstall the app")
        domain = (shop.get("myshopifyDomain") or "").lower()
        if domain and domain != ctx.settings.shop_domain:
            raise ConnectorError(f"this token belongs to {domain}, not {ctx.settings.shop_domain}")
        return {"shop_name": shop.get("name"), "currency": shop.get("currencyCode"), "scopes": sorted(scopes)}

    async def register_webhooks(self, ctx: ConnectionContext) -> dict[str, Any]:
        api = admin(ctx)
        created: dict[str, str] = {}
        for topic in WEBHOOK_TOPICS:
            data = await api.query(CREATE_WEBHOOK, {"topic": topic, "uri": ctx.webhook_url}, cost=10)
            result = data.get("webhookSubscriptionCreate") or {}
            problem = user_errors(result)
            if problem or not result.get("webhookSubscription"):
                await self.unregister_webhooks(ctx, {"subscriptions": created})
                raise ConnectorError(f"Shopify refused the {topic} webhook: {problem or 'no subscription returned'}")
            created[topic] = result["webhookSubscription"]["id"]
        return {"subscriptions": created}

    async def unregister_webhooks(self, ctx: ConnectionContext, state: dict[str, Any]) -> None:
        api = admin(ctx)
        for subscription in (state.get("subscriptions") or {}).values():
            await api.query(DELETE_WEBHOOK, {"id": subscription}, cost=10)

    def verify(self, ctx: ConnectionContext, delivery: Delivery) -> bool:
        given = delivery.headers.get("x-shopify-hmac-sha256", "").encode()
        authentic = any(hmac.compare_digest(given, signature(secret, delivery.body).encode())
                        for secret in signing_secrets(ctx))
        shop = delivery.headers.get("x-shopify-shop-domain", "").strip().lower()
        return authentic and hmac.compare_digest(shop.encode(), ctx.settings.shop_domain.encode())

    def parse(self, ctx: ConnectionContext, delivery: Delivery) -> ParsedDelivery:
        topic = delivery.headers.get("x-shopify-topic", "")
        webhook_id = delivery.headers.get("x-shopify-webhook-id")
        if not webhook_id:
            raise DeliveryRejected("no X-Shopify-Webhook-Id header")
        domain = ctx.settings.shop_domain
        try:
            payload = json.loads(delivery.body)
            if not isinstance(payload, dict):
                raise DeliveryRejected("the body is not a JSON object")
            check_shape(topic, payload, domain)
            triggered = timestamp(delivery.headers.get("x-shopify-triggered-at"))
            check_fresh(triggered, delivery.received_at)
            events: tuple[CatalogEvent, ...] = ()
            ignored = ""
            if topic in COMPLIANCE_TOPICS and not delivery.app_wide:
                ignored = (f"{topic} is applied only when Shopify sends it app-wide to /webhooks/shopify, signed "
                           "with the app's secret: a connection's own webhook URL never erases anything")
            elif topic in ("products/create", "products/update", "products/delete") and ctx.installed_by_app:
                # signed with the app's secret, which every store that installed the app shares, and a product
                # body does not name its store: the product is read from this store's Admin API instead
                events = (ProductChanged(numeric_id(payload["id"])),)
            elif topic in ("products/create", "products/update"):
                events = (from_webhook(payload, domain),)
            elif topic == "products/delete":
                events = (ProductDeleted(numeric_id(payload["id"]), updated_at=triggered),)
            elif topic == "app/uninstalled":
                events = (ConnectionDisabled("the app was uninstalled from the Shopify store"),)
            elif topic == "shop/redact":
                events = (ConnectionErased("Shopify shop/redact: the store asked for its data to be erased"),)
            # customers/*: the hub stores no customer data: nothing to report or erase
        except DeliveryRejected:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise DeliveryRejected(f"malformed {topic or 'Shopify'} payload: {type(exc).__name__}: {exc}") from None
        return ParsedDelivery(delivery_id=webhook_id, events=events, topic=topic, ignored=ignored)

    # -- OAuth install of the operator's public app (hub.connectors.OAuthConnector) ---------------------------

    def _app(self) -> ShopifyApp:
        app = ShopifyApp()
        if not app.client_id or not app.client_secret:
            raise ConnectorError("OAuth installs need the hub's Shopify app: set HUB_SHOPIFY_CLIENT_ID and "
                                 "HUB_SHOPIFY_CLIENT_SECRET (or connect a custom app with its access token)")
        return app

    def _store(self, params: dict[str, Any]) -> tuple[str, str]:
        """The store the merchant named, and where its OAuth endpoints are: never a URL the tenant gave."""
        unknown = sorted(set(params) - {"shop_domain"})
        if unknown:
            raise ConnectorError(f"unknown setting(s) {', '.join(unknown)}: an OAuth install takes only shop_domain")
        try:
            shop = store_domain(str(params.get("shop_domain", "")))
        except ValueError as exc:
            raise ConnectorError(f"shop_domain {exc}") from None
        return shop, base_url(shop)

    def authorize_url(self, params: dict[str, Any], redirect_uri: str, state: str) -> str:
        app = self._app()
        shop, _ = self._store(params)
        # the merchant's browser goes to the store's own admin (Shopify's OAuth screen); nothing secret in it
        return f"{base_url(shop)}/admin/oauth/authorize?" + urlencode(
            {"client_id": app.client_id, "scope": app.scopes, "redirect_uri": redirect_uri, "state": state})

    async def exchange(self, http: httpx.AsyncClient, params: dict[str, Any], query: dict[str, str],
                       redirect_uri: str) -> dict[str, Any]:
        app = self._app()
        shop, base = self._store(params)
        given = query.get("hmac", "")
        message = "&".join(f"{k}={v}" for k, v in sorted(query.items()) if k not in ("hmac", "signature"))
        expected = hmac.new(str(app.client_secret).encode(), message.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise ConnectorError("the callback's hmac does not match: it did not come from Shopify")
        if query.get("shop", "").lower() != shop:
            raise ConnectorError(f"the callback is for {query.get('shop')!r}, not {shop}")
        try:
            age = abs(time.time() - float(query.get("timestamp") or 0))
        except ValueError:
            age = float("inf")
        if not age <= 24 * 3600:  # (NaN included)
            raise ConnectorError("the callback is more than a day old")
        resp = await http.post(f"{base}/admin/oauth/access_token", json={  # (a redirect is never followed with it)
            "client_id": app.client_id, "client_secret": app.client_secret, "code": query.get("code", "")},
            follow_redirects=False)
        if resp.status_code != 200:
            raise ConnectorError(f"Shopify refused the authorization code (HTTP {resp.status_code}); start again")
        try:
            grant = resp.json()
        except ValueError:
            grant = None
        if not isinstance(grant, dict) or not isinstance(grant.get("access_token"), str):
            raise ConnectorError("Shopify's answer to the code exchange has no access token; start again")
        scopes = str(grant.get("scope", "")).split(",")
        if "read_products" not in scopes and "write_products" not in scopes:
            raise ConnectorError("the merchant did not grant read_products")
        return {"shop_domain": shop, "access_token": grant["access_token"], "client_secret": app.client_secret,
                "api_version": app.api_version}

    def connection_key(self, settings: dict[str, Any]) -> str:
        return str(settings.get("shop_domain", "")).lower()

    # -- app-wide deliveries (a public app's compliance topics) ------------------------------------------------

    def delivery_account(self, delivery: Delivery) -> str | None:
        return delivery.headers.get("x-shopify-shop-domain", "").strip().lower() or None

    def verify_app(self, delivery: Delivery) -> bool:
        secret = ShopifyApp().client_secret
        if not secret:
            return False
        given = delivery.headers.get("x-shopify-hmac-sha256", "")
        return hmac.compare_digest(given.encode(), signature(secret, delivery.body).encode())

    def compliance_topic(self, delivery: Delivery) -> bool:
        return delivery.headers.get("x-shopify-topic", "") in COMPLIANCE_TOPICS

    def installed_through_app(self, settings: Any) -> bool:
        app = ShopifyApp()
        return any(secret and hmac.compare_digest(settings.client_secret.encode(), secret.encode())
                   for secret in (app.client_secret, app.previous_client_secret))

    # -- reading the platform on demand (ProductReader, AccessCheck) ----------------------------------------

    async def product(self, ctx: ConnectionContext, external_id: str) -> ProductUpserted | ProductDeleted:
        data = await admin(ctx).query(PRODUCT_QUERY, {"id": f"gid://shopify/Product/{int(external_id)}",
                                                      "first": MEDIA_PER_PRODUCT}, cost=2 + MEDIA_PER_PRODUCT)
        node = data.get("product")
        if not node:
            return ProductDeleted(external_id)
        return from_graphql(node, (node.get("media") or {}).get("nodes") or [], ctx.settings.shop_domain)

    async def access_revoked(self, ctx: ConnectionContext) -> bool:
        try:
            await admin(ctx).query(SHOP_QUERY, cost=2)
        except ConnectorError:
            return True  # 401/403: the token no longer works
        return False

    async def catalog(self, ctx: ConnectionContext, cursor: str | None) -> AsyncIterator[CatalogPage]:
        api = admin(ctx)
        after = cursor
        while True:
            data = await api.query(PRODUCTS_QUERY, {"first": PAGE_SIZE, "after": after}, cost=2 + 2 * PAGE_SIZE)
            products = data["products"]
            nodes = products["nodes"]
            media: dict[str, list[dict[str, Any]]] = {}
            for i in range(0, len(nodes), MEDIA_BATCH):
                ids = [n["id"] for n in nodes[i : i + MEDIA_BATCH]]
                found = await api.query(MEDIA_QUERY, {"ids": ids, "first": MEDIA_PER_PRODUCT},
                                        cost=len(ids) * (2 + MEDIA_PER_PRODUCT))
                for node in found.get("nodes") or []:
                    if node:
                        media[node["id"]] = (node.get("media") or {}).get("nodes") or []
            info = products["pageInfo"]
            more = bool(info.get("hasNextPage")) and bool(info.get("endCursor"))
            yield CatalogPage(
                events=tuple(from_graphql(n, media.get(n["id"], []), ctx.settings.shop_domain) for n in nodes),
                cursor=info["endCursor"] if more else None,
                total=(data.get("productsCount") or {}).get("count"),
            )
            if not more:
                return
            after = info["endCursor"]


@hookimpl
def hub_connectors() -> list[ShopifyConnector]:
    """The Shopify connector."""
    return [ShopifyConnector()]
