"""The platform of the example connector, as a real HTTP server on loopback: a paged product feed, a webhook
registry, and product photos served from the same server. Tests change its catalog and send signed webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from typing import Any

from hub.testing import FakePlatform, PlatformHandler
from tests.images import photo

SECRET = "feed-webhook-secret-123"


class FeedPlatform(FakePlatform):
    def __init__(self, page_size: int = 50) -> None:
        self.products: dict[str, dict[str, Any]] = {}
        self.page_size = page_size
        self.webhooks: dict[int, str] = {}
        self.deleted: list[int] = []
        self.failures: dict[int, int] = {}  # page -> how many more times it answers 503
        self.page_requests: list[int] = []
        self.image_key: str | None = None  # set: images answer 401 without this X-Image-Key header
        self.image_headers: list[dict[str, str]] = []  # the headers of every image request
        self.elsewhere = ""  # where /img/away/… redirects to
        self.lock = threading.Lock()
        platform = self

        class Handler(PlatformHandler):
            def do_GET(self) -> None:  # noqa: N802
                path, _, query = self.path.partition("?")
                if path == "/feed":
                    params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
                    page = int(params.get("page", 1))
                    with platform.lock:
                        platform.page_requests.append(page)
                        if platform.failures.get(page, 0) > 0:
                            platform.failures[page] -= 1
                            self.send_json(503, {"error": "try again"})
                            return
                        items = list(platform.products.values())
                    size = platform.page_size
                    chunk = items[(page - 1) * size : page * size]
                    more = page * size < len(items)
                    self.send_json(200, {"products": chunk, "next_page": page + 1 if more else None, "total": len(items)})
                elif path.startswith("/img/away/"):  # the image lives on another host
                    self.send(302, b"", headers={"Location": f"{platform.elsewhere}/img/{path.rsplit('/', 1)[1]}"})
                elif path.startswith("/img/"):
                    with platform.lock:
                        platform.image_headers.append({k.lower(): v for k, v in self.headers.items()})
                    if platform.image_key and self.headers.get("X-Image-Key") != platform.image_key:
                        self.send_json(401, {"error": "this image needs the store's key"})
                        return
                    seed = int(path.removeprefix("/img/").split(".")[0])
                    # a store's image host that sets a session cookie (one shop's credentials may have bought it)
                    self.send(200, photo(seed), "image/jpeg", headers={"Set-Cookie": "store_session=s3cr3t; Path=/"})
                else:
                    self.send_json(404, {"error": "not found"})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path == "/feed/webhooks":
                    with platform.lock:
                        hook_id = len(platform.webhooks) + len(platform.deleted) + 1
                        platform.webhooks[hook_id] = body["url"]
                    self.send_json(201, {"id": hook_id})
                else:
                    self.send_json(404, {})

            def do_DELETE(self) -> None:  # noqa: N802
                hook_id = int(self.path.rsplit("/", 1)[1])
                with platform.lock:
                    platform.deleted.append(hook_id)
                    platform.webhooks.pop(hook_id, None)
                self.send_json(200, {})

        super().__init__(Handler)
        self.feed_url = f"{self.base}/feed"

    def settings(self) -> dict[str, str]:
        return {"feed_url": self.feed_url, "webhook_secret": SECRET}

    def image(self, seed: int) -> dict[str, Any]:
        return {"id": f"img{seed}", "url": f"{self.base}/img/{seed}.jpg", "alt": f"photo {seed}"}

    def put(self, pid: int | str, seeds: list[int], **fields: Any) -> dict[str, Any]:
        """Create or replace a product whose images are the photos of ``seeds``."""
        product = {"id": str(pid), "title": f"Product {pid}", "description": f"About product {pid}",
                   "url": f"https://shop.example/p/{pid}", "images": [self.image(s) for s in seeds],
                   "updated_at": "2026-11-01T09:00:00", **fields}  # (the feed's times carry no offset: UTC)
        with self.lock:
            self.products[str(pid)] = product
        return product


def signed(payload: dict[str, Any] | bytes, secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    """A delivery body and its headers, signed the way the example platform signs them."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-Example-Signature": signature}
