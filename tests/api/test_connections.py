"""Connections through HTTP, with the example third-party connector against a real local feed server."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from hub.db.engine import create_engine
from hub.db.models import Connection
from tests.feed_platform import SECRET, FeedPlatform


@pytest.fixture
def feed():
    server = FeedPlatform()
    server.put(1, [])
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
    assert resp.status_code == 422 and "private, loopback or link-local" in resp.json()["detail"]
    assert await snapshot() == before
