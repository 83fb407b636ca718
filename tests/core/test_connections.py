"""Connections through HTTP, with the example third-party connector against a real local feed server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from hub.core.db import create_engine
from hub.core.models import Connection

SECRET = "feed-webhook-secret-123"


class FeedServer:
    """The platform side of the example connector: a paged product feed and a webhook registry."""

    def __init__(self) -> None:
        self.webhooks: dict[int, str] = {}
        self.deleted: list[int] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                if self.path.startswith("/feed"):
                    self._json(200, {"products": [{"id": 1, "title": "Dress", "images": []}], "next_page": None})
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path == "/feed/webhooks":
                    hook_id = len(server.webhooks) + 1
                    server.webhooks[hook_id] = body["url"]
                    self._json(201, {"id": hook_id})
                else:
                    self._json(404, {})

            def do_DELETE(self):  # noqa: N802
                hook_id = int(self.path.rsplit("/", 1)[1])
                server.deleted.append(hook_id)
                self._json(200, {})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def feed():
    server = FeedServer()
    yield server
    server.close()


@pytest.fixture
def settings_overrides():
    return {"secret_key": "a-long-random-secret-key-for-tests", "allow_private_fetch": True}


async def test_connect_list_get_delete(client, shop, feed, settings):
    resp = await client.post(
        "/api/v1/connections",
        json={"connector": "example", "name": "My feed",
              "settings": {"feed_url": f"{feed.base}/feed", "webhook_secret": SECRET}},
        headers=shop.secret,
    )
    assert resp.status_code == 201, resp.text
    conn = resp.json()
    assert conn["settings"] == {"feed_url": f"{feed.base}/feed"}
    assert conn["secret_settings"] == ["webhook_secret"] and SECRET not in resp.text
    assert conn["info"] == {"products_on_first_page": 1}
    assert conn["webhook_url"] == f"http://testserver.local/webhooks/example/{conn['id']}"
    assert feed.webhooks == {1: conn["webhook_url"]}

    # at rest the secret is encrypted
    engine = create_engine(settings.db_url)
    async with engine.connect() as db:
        stored = (await db.execute(select(Connection.secrets, Connection.settings))).one()
    await engine.dispose()
    assert SECRET not in stored.secrets and SECRET not in json.dumps(stored.settings)

    listed = (await client.get("/api/v1/connections", headers=shop.secret)).json()["items"]
    assert [c["id"] for c in listed] == [conn["id"]] and SECRET not in json.dumps(listed)
    assert (await client.get(f"/api/v1/connections/{conn['id']}", headers=shop.secret)).json()["name"] == "My feed"

    assert (await client.delete(f"/api/v1/connections/{conn['id']}", headers=shop.secret)).status_code == 204
    assert feed.deleted == [1]
    assert (await client.get(f"/api/v1/connections/{conn['id']}", headers=shop.secret)).status_code == 404


async def test_bad_connections_store_nothing(client, shop, make_shop, feed, snapshot):
    other = await make_shop()
    theirs = await client.post(
        "/api/v1/connections",
        json={"connector": "example", "settings": {"feed_url": f"{feed.base}/feed", "webhook_secret": SECRET}},
        headers=other.secret,
    )
    assert theirs.status_code == 201
    before = await snapshot()
    cases = [
        ({"connector": "nope", "settings": {}}, 422, "unknown connector"),
        ({"connector": "example", "settings": {"feed_url": "ftp://x"}}, 422, "invalid settings"),
        ({"connector": "example", "settings": {"feed_url": f"{feed.base}/missing", "webhook_secret": SECRET}},
         422, "HTTP 404"),
        ({"connector": "example"}, 422, "invalid settings"),
        ({"settings": {}}, 400, ""),
    ]
    for payload, status, words in cases:
        resp = await client.post("/api/v1/connections", json=payload, headers=shop.secret)
        assert resp.status_code == status, (payload, resp.text)
        assert words in resp.json()["detail"]
    assert (await client.get(f"/api/v1/connections/{theirs.json()['id']}", headers=shop.secret)).status_code == 404
    assert (await client.delete(f"/api/v1/connections/{theirs.json()['id']}", headers=shop.secret)).status_code == 404
    assert (await client.get("/api/v1/connections", headers=shop.publishable)).status_code == 403
    assert await snapshot() == before
    assert feed.webhooks == {1: theirs.json()["webhook_url"]}  # no webhook was left behind by a failed attempt


@pytest.mark.parametrize("settings_overrides", [{"secret_key": None, "allow_private_fetch": True}])
async def test_connections_need_a_secret_key(client, shop, feed, snapshot):
    before = await snapshot()
    resp = await client.post(
        "/api/v1/connections",
        json={"connector": "example", "settings": {"feed_url": f"{feed.base}/feed", "webhook_secret": SECRET}},
        headers=shop.secret,
    )
    assert resp.status_code == 503 and "HUB_SECRET_KEY" in resp.json()["detail"]
    assert await snapshot() == before


@pytest.mark.parametrize("settings_overrides", [{"secret_key": "a-long-random-secret-key-for-tests"}])
async def test_platform_on_a_private_address_is_refused(client, shop, feed, snapshot):
    before = await snapshot()
    resp = await client.post(
        "/api/v1/connections",
        json={"connector": "example", "settings": {"feed_url": f"{feed.base}/feed", "webhook_secret": SECRET}},
        headers=shop.secret,
    )
    assert resp.status_code == 422 and "non-public address" in resp.json()["detail"]
    assert await snapshot() == before
