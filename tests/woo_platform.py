"""A WooCommerce emulator on loopback: REST API v3 products (simple and variable, with variations), pages
driven by X-WP-Total/X-WP-TotalPages, webhooks, uploads served from it — over HTTPS (a throwaway certificate)
with HTTP Basic or query-string keys, or over plain HTTP with OAuth 1.0a signatures, as WooCommerce does."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from oauthlib.oauth1.rfc5849 import signature as oauth

from hub.testing import FakePlatform, PlatformHandler
from tests.images import photo

KEY = "ck_" + "1a2b3c4d5e" * 4
SECRET = "cs_" + "9f8e7d6c5b" * 4
API = "/wp-json/wc/v3"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (the test points SSL_CERT_FILE at the certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "woo-cert.pem", folder / "woo-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class WooEmulator(FakePlatform):
    def __init__(self, tls_folder: Path | None = None, strip_authorization: bool = False,
                 pretty_permalinks: bool = True) -> None:
        self.products: dict[int, dict[str, Any]] = {}
        self.variations: dict[int, list[dict[str, Any]]] = {}
        self.webhooks: dict[int, dict[str, Any]] = {}
        self.deleted_webhooks: list[int] = []
        self.strip_authorization = strip_authorization
        self.pretty_permalinks = pretty_permalinks
        self.permission = "read_write"
        self.fail_next = 0  # answer this many API requests with 503
        self.rate_limit_next = 0  # and this many with 429
        self.auth_seen: list[str] = []
        self.requests: list[str] = []
        self.lock = threading.Lock()
        self.cert: Path | None = None
        # how the "store" reaches the hub (the tests' in-process app): (url, body, headers) -> HTTP status
        self.sender: Callable[[str, bytes, dict[str, str]], int] | None = None
        self.pings: list[tuple[int, int]] = []
        self.uploads_down = False  # (webhook id, the status the delivery URL answered)
        emulator = self

        class Handler(PlatformHandler):
            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None,
                      ctype: str = "application/json") -> None:
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def _handle(self, method: str) -> None:
                parts = urlsplit(self.path)
                if method == "GET" and parts.path.startswith("/wp-content/uploads/"):
                    if emulator.uploads_down:  # the shop's hosting has an outage
                        self._send(503, b"<html>Service Unavailable</html>", ctype="text/html")
                        return
                    seed = int(parts.path.rsplit("/", 1)[1].split(".")[0])
                    self._send(200, photo(seed), ctype="image/jpeg")
                    return
                if not parts.path.startswith(API) or not emulator.pretty_permalinks:
                    self._send(404, b"<html><body>Not Found</body></html>", ctype="text/html")
                    return
                length = int(self.headers.get("Content-Length", 0) or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                with emulator.lock:
                    emulator.requests.append(f"{method} {parts.path}")
                    if emulator.rate_limit_next > 0:
                        emulator.rate_limit_next -= 1
                        self._send(429, {"code": "too_many_requests", "message": "Slow down"}, {"Retry-After": "1"})
                        return
                    if emulator.fail_next > 0:
                        emulator.fail_next -= 1
                        self._send(503, {"code": "unavailable", "message": "Maintenance"})
                        return
                    how = emulator.authenticate(self, method, parts)
                    if how is None:
                        self._send(401, {"code": "woocommerce_rest_authentication_error",
                                         "message": "Consumer key is invalid.", "data": {"status": 401}})
                        return
                    emulator.auth_seen.append(how)
                    status, payload, headers = emulator.route(method, parts.path[len(API):],
                                                              dict(parse_qsl(parts.query)), body)
                self._send(status, payload, headers)

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def do_DELETE(self) -> None:  # noqa: N802
                self._handle("DELETE")

        context = None
        if tls_folder is not None:
            self.cert, key = self_signed(tls_folder)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.cert, key)
        super().__init__(Handler, tls=context)

    def settings(self, **overrides: Any) -> dict[str, Any]:
        return {"store_url": self.base, "consumer_key": KEY, "consumer_secret": SECRET, **overrides}

    # -- authentication, as WooCommerce checks it -----------------------------------------------------------

    def authenticate(self, handler: PlatformHandler, method: str, parts: Any) -> str | None:
        query = dict(parse_qsl(parts.query))
        header = None if self.strip_authorization else handler.headers.get("Authorization")
        https = self.base.startswith("https")
        if https and header and header.startswith("Basic "):
            key, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            return "basic" if (key, secret) == (KEY, SECRET) else None
        if https and "consumer_key" in query:
            return "query" if (query["consumer_key"], query.get("consumer_secret")) == (KEY, SECRET) else None
        if not https and "oauth_signature" in query:
            params = [(k, v) for k, v in parse_qsl(parts.query) if k != "oauth_signature"]
            uri = f"{self.base}{parts.path}"
            base_string = oauth.signature_base_string(method, oauth.base_string_uri(uri),
                                                      oauth.normalize_parameters(params))
            expected = oauth.sign_hmac_sha256_with_client(base_string, SimpleNamespace(
                client_secret=SECRET, resource_owner_secret=None))
            ok = query.get("oauth_consumer_key") == KEY and hmac.compare_digest(expected, query["oauth_signature"])
            return "oauth1" if ok else None
        return None

    # -- the catalog ----------------------------------------------------------------------------------------

    def upload(self, seed: int) -> str:
        return f"{self.base}/wp-content/uploads/2026/11/{seed}.jpg"

    def put(self, pid: int, seeds: list[int], variation_seeds: list[int] = (), **fields: Any) -> dict[str, Any]:  # type: ignore[assignment]
        product = {
            "id": pid, "name": f"Product {pid}", "slug": f"product-{pid}", "permalink": f"https://shop.example/product/product-{pid}/",
            "date_created": "2026-10-01T10:00:00", "date_created_gmt": "2026-10-01T08:00:00",
            "date_modified": "2026-11-01T10:00:00", "date_modified_gmt": "2026-11-01T08:00:00",
            "type": "variable" if variation_seeds else "simple", "status": "publish", "featured": False,
            "catalog_visibility": "visible", "description": f"<p>About product {pid}</p>",
            "short_description": "<p>Short</p>", "sku": f"SKU-{pid}", "price": "29.00", "regular_price": "29.00",
            "sale_price": "", "stock_status": "instock", "categories": [{"id": 15, "name": "Dresses", "slug": "dresses"}],
            "tags": [{"id": 30, "name": "casual", "slug": "casual"}],
            "images": [{"id": 5000 + s, "date_created": "2026-10-01T10:00:00", "src": self.upload(s),
                        "name": f"photo-{s}", "alt": f"photo {s}"} for s in seeds],
            "variations": [pid * 100 + n for n in range(len(variation_seeds))],
            **fields,
        }
        with self.lock:
            self.products[pid] = product
            self.variations[pid] = [
                {"id": pid * 100 + n, "permalink": f"{product['permalink']}?attribute_pa_color={n}", "price": "31.00",
                 "stock_status": "instock", "date_modified_gmt": product["date_modified_gmt"],
                 "image": {"id": 7000 + s, "src": self.upload(s), "name": f"variation-{s}", "alt": f"variation {s}"}}
                for n, s in enumerate(variation_seeds)]
        return product

    def route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        if method == "GET" and path == "/products":
            per_page, page = int(query.get("per_page", 10)), int(query.get("page", 1))
            items = sorted((p for p in self.products.values() if p["status"] != "trash"), key=lambda p: p["id"])
            pages = max(1, -(-len(items) // per_page))
            chunk = items[(page - 1) * per_page : page * per_page]
            return 200, chunk, {"X-WP-Total": str(len(items)), "X-WP-TotalPages": str(pages)}
        if method == "GET" and path.startswith("/products/") and path.endswith("/variations"):
            pid = int(path.split("/")[2])
            items = self.variations.get(pid, [])
            return 200, items, {"X-WP-Total": str(len(items)), "X-WP-TotalPages": "1"}
        if method == "GET" and path.startswith("/products/"):
            product = self.products.get(int(path.split("/")[2]))
            if product is None:
                return 404, {"code": "woocommerce_rest_product_invalid_id", "message": "Invalid ID."}, {}
            return 200, product, {}
        if path.startswith("/webhooks") and self.permission != "read_write":
            return 401, {"code": "woocommerce_rest_cannot_create", "message": "Sorry, you are not allowed to create "
                                                                              "resources."}, {}
        if method == "POST" and path == "/webhooks":
            hook_id = len(self.webhooks) + len(self.deleted_webhooks) + 1
            self.webhooks[hook_id] = dict(body, id=hook_id, failure_count=0)
            # WC_REST_Webhooks_Controller::create_item pings the delivery URL before it answers the request
            status = self.ping(hook_id) if self.sender is not None else None
            if status is not None and not 200 <= status < 300:
                self.webhooks[hook_id]["failure_count"] += 1
            return 201, self.webhooks[hook_id], {}
        if method == "DELETE" and path.startswith("/webhooks/"):
            hook_id = int(path.rsplit("/", 1)[1])
            self.deleted_webhooks.append(hook_id)
            return 200, self.webhooks.pop(hook_id, {"id": hook_id}), {}
        return 404, {"code": "rest_no_route", "message": "No route was found matching the URL and request method."}, {}

    def trash(self, pid: int) -> None:
        """The merchant moves a product to the trash (WooCommerce then sends product.deleted with its id)."""
        with self.lock:
            self.products[pid] = dict(self.products[pid], status="trash")

    def erase(self, pid: int) -> None:
        """Deleted for good: the API answers 404 for it."""
        with self.lock:
            self.products.pop(pid, None)
            self.variations.pop(pid, None)

    def variation_payload(self, pid: int, n: int = 0) -> dict[str, Any]:
        """What product.updated carries when a variation is saved: the variation itself, not its parent."""
        parent = self.products[pid]
        variation = self.variations[pid][n]
        return {"id": variation["id"], "name": f"{parent['name']} - XL", "slug": f"{parent['slug']}-xl",
                "permalink": variation["permalink"], "type": "variation", "status": "publish", "parent_id": pid,
                "date_modified_gmt": variation["date_modified_gmt"], "price": variation["price"],
                "stock_status": variation["stock_status"], "images": [variation["image"]], "categories": [],
                "tags": [], "description": "", "short_description": "", "variations": []}

    # -- deliveries, as WooCommerce's webhook sender makes them ---------------------------------------------

    def delivery_id(self, hook_id: int, when: float | None = None) -> str:
        """X-WC-Webhook-Delivery-ID: wp_hash($webhook_id . strtotime('now')) — one value per webhook per second."""
        second = int(when if when is not None else time.time())
        return hashlib.md5(f"{hook_id}{second}".encode()).hexdigest()  # noqa: S324 - as WordPress's wp_hash

    def ping(self, hook_id: int) -> int:
        """WC_Webhook::deliver_ping: an unsigned form body naming the webhook."""
        assert self.sender is not None
        hook = self.webhooks[hook_id]
        status = self.sender(hook["delivery_url"], f"webhook_id={hook_id}".encode(), {
            "Content-Type": "application/x-www-form-urlencoded", "User-Agent": "WooCommerce/9.4.0 Hookshot"})
        self.pings.append((hook_id, status))
        return status

    def delivery(self, topic: str, payload: dict[str, Any], delivery_id: str | None = None,
                 secret: str | None = None) -> tuple[bytes, dict[str, str]]:
        hook = next((h for h in self.webhooks.values() if h["topic"] == topic), None)
        assert hook is not None or secret is not None, f"no webhook registered for {topic}"
        key = secret or hook["secret"]
        body = json.dumps(payload).encode()
        signature = base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()
        resource, event = topic.split(".")
        return body, {
            "Content-Type": "application/json", "User-Agent": "WooCommerce/9.4.0 Hookshot (WordPress/6.7)",
            "X-WC-Webhook-Source": f"{self.base}/", "X-WC-Webhook-Topic": topic, "X-WC-Webhook-Resource": resource,
            "X-WC-Webhook-Event": event, "X-WC-Webhook-Signature": signature,
            "X-WC-Webhook-ID": str(hook["id"] if hook else 0),
            "X-WC-Webhook-Delivery-ID": delivery_id or self.delivery_id(hook["id"] if hook else 0),
        }
