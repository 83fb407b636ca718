"""A Shopify emulator on loopback: the GraphQL Admin API the connector uses (shop, products with pageInfo,
media through ``nodes``, webhook subscriptions) with cost-based throttling, 429s, and a CDN serving the
product photos. Webhook payloads and headers follow Shopify's documented formats."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from collections.abc import Iterator
from typing import Any

from hub.testing import FakePlatform, PlatformHandler
from tests.images import photo

TOKEN = "shpat_emulator_token_0001"
APP_CLIENT_ID = "public-app-client-id"
APP_CLIENT_SECRET = "public-app-client-secret-0001"
CLIENT_SECRET = "shpss_emulator_client_secret"
DOMAIN = "fashion-test.myshopify.com"
BIG_ID = 2**53 + 1  # Shopify ids exceed what a float holds exactly


class ShopifyEmulator(FakePlatform):
    def __init__(self, bucket: float = 1000.0, restore_rate: float = 1000.0) -> None:
        self.products: dict[int, dict[str, Any]] = {}
        self.subscriptions: dict[str, tuple[str, str]] = {}
        self.deleted_subscriptions: list[str] = []
        self.scopes = ["read_products", "write_products"]
        self.uninstalled = False  # the app was uninstalled: the access token answers 401
        self.maximum, self.available, self.restore_rate = bucket, bucket, restore_rate
        self.last_refill = time.monotonic()
        self.throttled = 0  # THROTTLED answers given
        self.drain_before_products = 0  # empty the bucket before this many products queries (another app used it)
        self.rate_limit_next = 0  # answer this many requests with HTTP 429
        self.queries: list[str] = []
        self.codes: set[str] = set()
        self.lock = threading.Lock()
        emulator = self

        class Handler(PlatformHandler):
            def do_GET(self) -> None:  # noqa: N802
                match = re.fullmatch(r"/cdn/shop/files/(\d+)\.jpg(\?.*)?", self.path)
                if match:
                    self.send(200, photo(int(match.group(1))), "image/jpeg")
                else:
                    self.send(404, b'{"errors":"Not Found"}')

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if self.path == "/admin/oauth/access_token":
                    grant = json.loads(raw)
                    with emulator.lock:
                        valid = (grant.get("client_id"), grant.get("client_secret")) == (APP_CLIENT_ID,
                                                                                          APP_CLIENT_SECRET)
                        if valid and grant.get("code") in emulator.codes:
                            emulator.codes.discard(grant["code"])  # a code works once
                            self.send(200, json.dumps({"access_token": TOKEN,
                                                        "scope": ",".join(emulator.scopes)}).encode())
                            return
                    self.send(400, b'{"error":"invalid_request","error_description":"The authorization code '
                                    b'was not found or was already used"}')
                    return
                if not re.fullmatch(r"/admin/api/\d{4}-\d{2}/graphql\.json", self.path):
                    self.send(404, b'{"errors":"Not Found"}')
                    return
                if self.headers.get("X-Shopify-Access-Token") != TOKEN or emulator.uninstalled:
                    self.send(401, b'{"errors":"[API] Invalid API key or access token '
                                    b'(unrecognized login or wrong password)"}')
                    return
                with emulator.lock:
                    if emulator.rate_limit_next > 0:
                        emulator.rate_limit_next -= 1
                        self.send(429, b'{"errors":"Exceeded 2 calls per second for api client."}',
                                   headers={"Retry-After": "1.0"})
                        return
                    status, body = emulator.graphql(json.loads(raw))
                self.send(status, json.dumps(body).encode())

        super().__init__(Handler)

    def approve(self, authorize_url: str, secret: str = APP_CLIENT_SECRET) -> str:
        """What the merchant's browser does: approve the app; the callback URL Shopify redirects to."""
        from urllib.parse import parse_qs, urlencode, urlsplit

        asked = {k: v[0] for k, v in parse_qs(urlsplit(authorize_url).query).items()}
        code = uuid.uuid4().hex
        self.codes.add(code)
        params = {"code": code, "host": base64.b64encode(f"{DOMAIN}/admin".encode()).decode(), "shop": DOMAIN,
                  "state": asked["state"], "timestamp": str(int(time.time()))}
        message = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        params["hmac"] = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
        return f"{asked['redirect_uri']}?{urlencode(params)}"

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """A custom app's connection settings. The Admin API is the operator's HUB_SHOPIFY_API_URL (the tests
        point it at this emulator), never a tenant field."""
        return {"shop_domain": DOMAIN, "access_token": TOKEN, "client_secret": CLIENT_SECRET, **overrides}

    # -- the catalog ----------------------------------------------------------------------------------------

    def put(self, pid: int, seeds: list[int], **fields: Any) -> dict[str, Any]:
        product = {
            "id": pid, "title": f"Product {pid}", "body_html": f"<p>About <b>product</b> {pid} &amp; more</p>",
            "handle": f"product-{pid}", "product_type": "Dresses", "tags": ["casual"], "status": "active",
            "updated_at": "2026-11-01T10:00:00-05:00", "price": "49.00", "inventory": 5,
            "media": [{"id": 30_000_000_000 + seed, "seed": seed, "alt": f"photo {seed}"} for seed in seeds],
            **fields,
        }
        with self.lock:
            self.products[pid] = product
        return product

    def image_url(self, seed: int) -> str:
        return f"{self.base}/cdn/shop/files/{seed}.jpg?v=1"

    def rest(self, pid: int) -> dict[str, Any]:
        """The product as a products/create|update webhook carries it (REST Admin JSON)."""
        p = self.products[pid]
        return {
            "id": p["id"], "title": p["title"], "body_html": p["body_html"], "vendor": "Emulator",
            "product_type": p["product_type"], "created_at": "2026-10-01T10:00:00-05:00", "handle": p["handle"],
            "updated_at": p["updated_at"], "published_at": "2026-10-01T10:00:00-05:00", "template_suffix": None,
            "published_scope": "web", "tags": ", ".join(p["tags"]), "status": p["status"],
            "admin_graphql_api_id": f"gid://shopify/Product/{p['id']}",
            "variants": [{"id": p["id"] * 10 + 1, "product_id": p["id"], "title": "Default Title",
                          "price": p["price"], "sku": f"SKU-{p['id']}", "inventory_policy": "deny",
                          "inventory_management": "shopify", "inventory_quantity": p["inventory"],
                          "admin_graphql_api_id": f"gid://shopify/ProductVariant/{p['id'] * 10 + 1}"}],
            "options": [{"name": "Title", "values": ["Default Title"]}],
            "images": [{"id": m["id"] + 7, "product_id": p["id"], "position": n + 1, "alt": m["alt"],
                        "src": self.image_url(m["seed"]), "width": 96, "height": 128, "variant_ids": []}
                       for n, m in enumerate(p["media"])],
            "media": [{"id": m["id"], "product_id": p["id"], "position": n + 1, "alt": m["alt"],
                       "status": "READY", "media_content_type": "IMAGE",
                       "preview_image": {"width": 96, "height": 128, "src": self.image_url(m["seed"])},
                       "admin_graphql_api_id": f"gid://shopify/MediaImage/{m['id']}"}
                      for n, m in enumerate(p["media"])],
        }

    def _node(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"gid://shopify/Product/{p['id']}", "title": p["title"], "descriptionHtml": p["body_html"],
            "handle": p["handle"], "productType": p["product_type"], "tags": p["tags"],
            "status": p["status"].upper(), "updatedAt": p["updated_at"], "tracksInventory": True,
            "totalInventory": p["inventory"],
            "priceRangeV2": {"minVariantPrice": {"amount": p["price"], "currencyCode": "EUR"}},
        }

    # -- GraphQL --------------------------------------------------------------------------------------------

    def _cost(self, requested: float) -> dict[str, Any] | None:
        now = time.monotonic()
        self.available = min(self.maximum, self.available + (now - self.last_refill) * self.restore_rate)
        self.last_refill = now
        if requested > self.available:
            return None
        self.available -= requested
        return {"requestedQueryCost": requested, "actualQueryCost": requested,
                "throttleStatus": self.status()}

    def status(self) -> dict[str, float]:
        return {"maximumAvailable": self.maximum, "currentlyAvailable": round(self.available, 1),
                "restoreRate": self.restore_rate}

    def graphql(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        query, variables = request["query"], request.get("variables") or {}
        self.queries.append(query.split("(")[0].split("{")[0].strip())
        if "products(" in query:
            requested = 2 + 2 * int(variables["first"])
        elif "nodes(ids" in query:
            requested = len(variables["ids"]) * (2 + int(variables["first"]))
        elif "mutation" in query:
            requested = 10
        else:
            requested = 2
        if "products(" in query and self.drain_before_products > 0:
            self.drain_before_products -= 1
            self.available, self.last_refill = 0.0, time.monotonic()
        if requested > 1000:
            return 200, {"errors": [{"message": f"Query cost is {requested}, which exceeds the single query "
                                                "max cost limit (1000).", "extensions": {"code": "MAX_COST_EXCEEDED"}}]}
        cost = self._cost(requested)
        if cost is None:
            self.throttled += 1
            return 200, {"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
                         "extensions": {"cost": {"requestedQueryCost": requested, "actualQueryCost": None,
                                                 "throttleStatus": self.status()}}}
        return 200, {"data": self._data(query, variables), "extensions": {"cost": cost}}

    def _data(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        if "webhookSubscriptionCreate" in query:
            sub_id = f"gid://shopify/WebhookSubscription/{uuid.uuid4().int % 10**12}"
            self.subscriptions[sub_id] = (variables["topic"], variables["uri"])
            return {"webhookSubscriptionCreate": {"webhookSubscription": {"id": sub_id}, "userErrors": []}}
        if "webhookSubscriptionDelete" in query:
            self.subscriptions.pop(variables["id"], None)
            self.deleted_subscriptions.append(variables["id"])
            return {"webhookSubscriptionDelete": {"deletedWebhookSubscriptionId": variables["id"], "userErrors": []}}
        if "product(id:" in query:
            p = self.products.get(int(variables["id"].rsplit("/", 1)[1]))
            return {"product": None if p is None else {**self._node(p), "media": {"nodes": [
                {"id": f"gid://shopify/MediaImage/{m['id']}", "alt": m["alt"],
                 "image": {"url": self.image_url(m["seed"]), "altText": m["alt"]}}
                for m in p["media"][: int(variables["first"])]]}}}
        if "products(" in query:
            ordered = sorted(self.products.values(), key=lambda p: p["id"])
            start = int(base64.b64decode(variables["after"]).decode()) if variables.get("after") else 0
            chunk = ordered[start : start + int(variables["first"])]
            end = start + len(chunk)
            return {"productsCount": {"count": len(ordered)}, "products": {
                "pageInfo": {"hasNextPage": end < len(ordered),
                             "endCursor": base64.b64encode(str(end).encode()).decode() if chunk else None},
                "nodes": [self._node(p) for p in chunk]}}
        if "nodes(ids" in query:
            nodes = []
            for gid in variables["ids"]:
                p = self.products.get(int(gid.rsplit("/", 1)[1]))
                nodes.append(None if p is None else {"id": gid, "media": {"nodes": [
                    {"id": f"gid://shopify/MediaImage/{m['id']}", "alt": m["alt"],
                     "image": {"url": self.image_url(m["seed"]), "altText": m["alt"]}}
                    for m in p["media"][: int(variables["first"])]]}})
            return {"nodes": nodes}
        return {"shop": {"name": "Fashion Test", "myshopifyDomain": DOMAIN, "currencyCode": "EUR"},
                "currentAppInstallation": {"accessScopes": [{"handle": s} for s in self.scopes]}}


def running_emulator(monkeypatch: Any, *, app: bool = False) -> Iterator[ShopifyEmulator]:
    """For a fixture: an emulator that every store's Admin API points at (HUB_SHOPIFY_API_URL, the operator's
    setting — never a tenant field), and with ``app`` the operator's public app configured."""
    shopify = ShopifyEmulator()
    monkeypatch.setenv("HUB_SHOPIFY_API_URL", shopify.base)
    if app:
        monkeypatch.setenv("HUB_SHOPIFY_CLIENT_ID", APP_CLIENT_ID)
        monkeypatch.setenv("HUB_SHOPIFY_CLIENT_SECRET", APP_CLIENT_SECRET)
    try:
        yield shopify
    finally:
        shopify.close()


def now_iso(delta_seconds: float = 0) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=delta_seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shop_payload(domain: str = DOMAIN) -> dict[str, Any]:
    """The shop object app/uninstalled carries (abridged, with the fields Shopify documents)."""
    return {"id": 548380009, "name": "Fashion Test", "email": "owner@fashion-test.example", "domain": None,
            "province": "Tennessee", "country": "US", "address1": "1 Main St", "zip": "37011", "city": "Nashville",
            "source": None, "phone": "555-555-5555", "latitude": 45.45, "longitude": -75.43,
            "primary_locale": "en", "created_at": "2026-01-02T09:00:00-05:00", "updated_at": None,
            "country_code": "US", "country_name": "United States", "currency": "USD", "customer_email": None,
            "timezone": "(GMT-05:00) Eastern Time (US & Canada)", "iana_timezone": "America/New_York",
            "shop_owner": "John Smith", "money_format": "${{amount}}", "weight_unit": "kg",
            "plan_display_name": "Shopify Plus", "plan_name": "enterprise", "myshopify_domain": domain}


def delivery(topic: str, payload: dict[str, Any], *, webhook_id: str | None = None,
             triggered_at: str | None = None, secret: str = CLIENT_SECRET,
             domain: str = DOMAIN) -> tuple[bytes, dict[str, str]]:
    """A webhook request as Shopify sends it: raw JSON body and its headers (triggered just now by default)."""
    triggered_at = triggered_at or now_iso()
    body = json.dumps(payload).encode()
    mac = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return body, {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": mac,
        "X-Shopify-Shop-Domain": domain,
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "X-Shopify-Triggered-At": triggered_at,
        "X-Shopify-Event-Id": str(uuid.uuid4()),
        "X-Shopify-API-Version": "2025-10",
    }
