"""The Shopify connector against the Shopify emulator on loopback, all through the hub's HTTP API: connect,
import over GraphQL with throttling, recommend, then webhooks (update, delete, forgeries, replays, order,
compliance topics). Plus the plugin-author contract suite."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from hub.connectors import Delivery, html_to_text
from hub.db.engine import create_engine
from hub.db.models import WebhookDelivery
from hub.plugin_manager import load_plugins
from hub.plugins.shopify import signature
from hub.testing import ConnectorContract
from tests.conftest import images_by_external_id, settle_deliveries, wait_catalog, wait_job
from tests.shopify_platform import (
    APP_CLIENT_ID,
    APP_CLIENT_SECRET,
    BIG_ID,
    CLIENT_SECRET,
    DOMAIN,
    delivery,
    running_emulator,
    shop_payload,
)


@pytest.fixture
def emulator(monkeypatch):
    yield from running_emulator(monkeypatch)


class TestShopifyContract(ConnectorContract):
    @pytest.fixture
    def bad_connection_settings(self, emulator):
        return emulator.settings(access_token="shpat_revoked-or-mistyped")

    @pytest.fixture
    def existing_product_id(self, connection_settings):
        return "7"

    @pytest.fixture
    def stale_delivery(self, emulator):
        """Genuinely signed, triggered two days ago: a captured delivery replayed later."""
        from datetime import UTC, datetime, timedelta

        emulator.put(5, [5, 6])
        old = (datetime.now(UTC) - timedelta(days=2)).isoformat()
        body, headers = delivery("products/update", emulator.rest(5), triggered_at=old)
        return Delivery({k.lower(): v for k, v in headers.items()}, body, received_at=datetime.now(UTC))

    @pytest.fixture
    def connector(self):
        return load_plugins().connectors()["shopify"]

    @pytest.fixture
    def connection_settings(self, emulator):
        for pid in range(1, 300):
            emulator.put(pid, [pid])
        return emulator.settings()

    @pytest.fixture
    def genuine_delivery(self, emulator):
        emulator.put(5, [5, 6])
        body, headers = delivery("products/update", emulator.rest(5), webhook_id="wh-shared")
        return Delivery({k.lower(): v for k, v in headers.items()}, body)

    @pytest.fixture
    def delete_delivery(self):
        body, headers = delivery("products/delete", {"id": 5})
        return Delivery({k.lower(): v for k, v in headers.items()}, body)

    @pytest.fixture
    def same_id_delivery(self, emulator):
        emulator.put(6, [7])
        body, headers = delivery("products/update", emulator.rest(6), webhook_id="wh-shared")
        return Delivery({k.lower(): v for k, v in headers.items()}, body)


@pytest.fixture
def settings_overrides():
    return {"secret_key": "a-long-random-secret-key-for-tests", "allow_private_fetch": True}










async def recommended(client, shop, **filters: Any) -> set[int]:
    resp = await client.post("/api/v1/recommendations", json={"prompt": "a summer dress", "limit": 100,
                                                              "filters": filters, "distinct": "image"}, headers=shop.publishable)
    assert resp.status_code == 200, resp.text
    return {r["id"] for r in resp.json()["results"]}


class Store:
    """Sends the emulator's webhooks to the hub for one connection, waiting until each is applied."""

    def __init__(self, client, settings, connection_id: int) -> None:
        self.client, self.settings = client, settings
        self.path = f"/webhooks/shopify/{connection_id}"

    async def send(self, topic: str, payload: dict[str, Any], **kw: Any):
        body, headers = delivery(topic, payload, **kw)
        resp = await self.client.post(self.path, content=body, headers=headers)
        await settle_deliveries(self.settings)
        return resp


async def connect(client, shop, emulator, **settings: Any):
    return await client.post("/api/v1/connections", json={"connector": "shopify", "name": "My Shopify",
                                                          "settings": emulator.settings(**settings)},
                             headers=shop.secret)


async def test_connect_import_recommend_then_webhooks_keep_it_in_step(client, shop, emulator, settings):
    for pid in range(1, 261):
        emulator.put(pid, [pid])
    emulator.put(BIG_ID, [900, 901], title="Floral maxi dress", tags=["casual", "kids"])
    emulator.drain_before_products = 1  # the bucket is empty when the import starts: it must wait for it
    emulator.rate_limit_next = 1  # and one HTTP 429 with Retry-After

    resp = await connect(client, shop, emulator)
    assert resp.status_code == 201, resp.text
    conn = resp.json()
    assert conn["info"]["shop_name"] == "Fashion Test" and conn["secret_settings"] == ["access_token", "client_secret"]
    assert "shpat_" not in resp.text
    assert sorted(t for t, _ in emulator.subscriptions.values()) == sorted(
        ["APP_UNINSTALLED", "PRODUCTS_CREATE", "PRODUCTS_DELETE", "PRODUCTS_UPDATE"])
    assert {u for _, u in emulator.subscriptions.values()} == {conn["webhook_url"]}

    job = await wait_job(client, shop.secret, conn["sync_job"]["id"])
    assert (job["status"], job["total"], job["done"], job["failed"], job["attempts"]) == ("succeeded", 261, 261, 0, 1)
    assert emulator.throttled >= 1  # it was throttled, waited, and went on
    assert emulator.queries.count("query Products") == 3  # 250 per page: two pages, the first asked again once

    found = await wait_catalog(client, shop.secret, 262)
    assert {i["status"] for i in found.values()} == {"ready"}
    big = found["30000000900"]
    assert big["name"] == "Floral maxi dress" and big["product_url"] == f"https://{DOMAIN}/products/product-{BIG_ID}"
    assert big["description"] == "About product 9007199254740993 & more"
    assert big["category"]["name"] == "Dresses" and big["age_group"]["name"] == "Kids (3-12)"
    top = await recommended(client, shop)
    assert len(top) == 100 and top <= {i["id"] for i in found.values()}
    assert await recommended(client, shop, product_id=big["product_id"]) == {
        found["30000000900"]["id"], found["30000000901"]["id"]}

    store = Store(client, settings, conn["id"])
    emulator.put(1, [1001], updated_at="2026-11-02T10:00:00-05:00")  # product 1's photo was replaced
    assert (await store.send("products/update", emulator.rest(1))).json()["status"] == "accepted"
    after = await wait_catalog(client, shop.secret, 262)
    assert "30000000001" not in after and after["30000001001"]["status"] == "ready"
    assert after["30000001001"]["image_url"].endswith("/cdn/shop/files/1001.jpg?v=1")

    await store.send("products/delete", {"id": BIG_ID})
    assert await recommended(client, shop, product_id=big["product_id"]) == set()
    assert {"30000000900", "30000000901"}.isdisjoint(await images_by_external_id(client, shop.secret))
    similar = await client.get(f"/api/v1/images/{big['id']}/similar", headers=shop.secret)
    assert similar.status_code == 404

    # and a re-sync agrees with what the webhooks did: nothing changes
    emulator.products.pop(BIG_ID)
    again = await client.post(f"/api/v1/connections/{conn['id']}/sync", headers=shop.secret)
    resynced = await wait_job(client, shop.secret, again.json()["id"])
    assert resynced["status"] == "succeeded"
    assert not {k: v for k, v in resynced["result"].items() if k.startswith("images")}, resynced["result"]

    assert (await client.delete(f"/api/v1/connections/{conn['id']}", headers=shop.secret)).status_code == 204
    assert emulator.subscriptions == {} and len(emulator.deleted_subscriptions) == 4


async def test_bad_connections_are_explained_and_store_nothing(client, shop, emulator, snapshot):
    before = await snapshot()
    wrong_token = await connect(client, shop, emulator, access_token="shpat_wrong_token")
    assert wrong_token.status_code == 422 and "access token" in wrong_token.json()["detail"]
    bad_domain = await connect(client, shop, emulator, shop_domain="fashion-test.com")
    assert bad_domain.status_code == 422 and "myshopify.com" in bad_domain.json()["detail"]
    emulator.scopes = ["read_orders"]
    no_scope = await connect(client, shop, emulator)
    assert no_scope.status_code == 422 and "read_products" in no_scope.json()["detail"]
    assert await snapshot() == before
    assert emulator.subscriptions == {}


async def test_webhook_forgeries_replays_order_and_malformed(client, shop, emulator, settings, snapshot):
    emulator.put(7, [70])
    conn = (await connect(client, shop, emulator)).json()
    await wait_job(client, shop.secret, conn["sync_job"]["id"])
    await wait_catalog(client, shop.secret, 1)
    store = Store(client, settings, conn["id"])

    emulator.put(7, [71], title="Renamed", updated_at="2026-11-05T10:00:00-05:00")
    payload = emulator.rest(7)
    before = await snapshot()
    for kw in ({"secret": "not-the-client-secret"}, {"domain": "someone-else.myshopify.com"}):
        resp = await store.send("products/update", payload, **kw)
        assert resp.status_code == 401, resp.text
    body, headers = delivery("products/update", payload)
    del headers["X-Shopify-Hmac-Sha256"]
    assert (await client.post(store.path, content=body, headers=headers)).status_code == 401
    assert await snapshot() == before

    first = await store.send("products/update", payload, webhook_id="wh-1")
    replay = await store.send("products/update", payload, webhook_id="wh-1")
    assert first.json()["status"] == "accepted" and replay.json()["status"] == "duplicate"
    assert set(await wait_catalog(client, shop.secret, 1)) == {"30000000071"}

    older = dict(payload, title="Stale", updated_at="2026-11-04T10:00:00-05:00")  # arrives late
    assert (await store.send("products/update", older)).status_code == 200
    assert (await images_by_external_id(client, shop.secret))["30000000071"]["name"] == "Renamed"

    truncated = b'{"id": 7, "title": '
    _, headers = delivery("products/update", {})
    headers["X-Shopify-Hmac-Sha256"] = signature(CLIENT_SECRET, truncated)
    bad = await client.post(store.path, content=truncated, headers=headers)
    assert bad.status_code == 400 and "malformed" in bad.json()["detail"]
    rows = await settle_deliveries(settings)
    assert [r.status for r in rows].count("rejected") == 1


async def test_compliance_topics_and_uninstall(client, shop, emulator, settings):
    emulator.put(1, [11])
    conn = (await connect(client, shop, emulator)).json()
    await wait_job(client, shop.secret, conn["sync_job"]["id"])
    await wait_catalog(client, shop.secret, 1)
    store = Store(client, settings, conn["id"])

    # compliance topics reach a custom app's own URL only if someone sends them there (Shopify sends them
    # app-wide): acknowledged, never applied — a connection's URL erases nothing
    for topic, payload in (
        ("customers/data_request", {"shop_id": 1, "shop_domain": DOMAIN, "orders_requested": [299938],
                                    "customer": {"id": 191167, "email": "john@example.com", "phone": "555-625-1199"},
                                    "data_request": {"id": 9999}}),
        ("customers/redact", {"shop_id": 1, "shop_domain": DOMAIN, "customer": {"id": 191167,
                              "email": "john@example.com", "phone": "555-625-1199"}, "orders_to_redact": [299938]}),
        ("shop/redact", {"shop_id": 1, "shop_domain": DOMAIN}),
    ):
        resp = await store.send(topic, payload)
        assert resp.status_code == 200 and resp.json()["status"] == "ignored", resp.text
    engine = create_engine(settings.db_url)
    async with engine.connect() as db:
        stored = (await db.execute(select(WebhookDelivery.body, WebhookDelivery.headers))).all()
    await engine.dispose()
    assert all(body is None for body, _ in stored)  # no customer data is kept
    assert "john@example.com" not in repr(stored)
    assert len(await images_by_external_id(client, shop.secret)) == 1

    emulator.uninstalled = True  # (an uninstall is checked with Shopify: a replayed one changes nothing)
    await store.send("app/uninstalled", shop_payload())
    assert (await client.get(f"/api/v1/connections/{conn['id']}", headers=shop.secret)).json()["status"] == "disabled"
    assert len(await images_by_external_id(client, shop.secret)) == 1  # what was indexed stays until the shop asks otherwise
    emulator.put(1, [12], updated_at="2026-11-09T00:00:00Z")
    await store.send("products/update", emulator.rest(1))
    assert set(await images_by_external_id(client, shop.secret)) == {"30000000011"}  # a disabled connection takes no catalog changes
    assert (await client.post(f"/api/v1/connections/{conn['id']}/sync", headers=shop.secret)).status_code == 409


def test_body_html_becomes_plain_text():
    assert html_to_text("<p>Soft <b>linen</b>&nbsp;dress</p><ul><li>Midi</li><li>Floral</li></ul>"
                        "<script>alert(1)</script>") == "Soft linen dress\nMidi\nFloral"


async def test_public_app_oauth_install(client, shop, emulator, settings, monkeypatch, snapshot):
    emulator.put(3, [33])
    start = {"connector": "shopify", "settings": {"shop_domain": DOMAIN}}
    unconfigured = await client.post("/api/v1/connections/authorize", json=start, headers=shop.secret)
    assert unconfigured.status_code == 422 and "HUB_SHOPIFY_CLIENT_ID" in unconfigured.json()["detail"]
    monkeypatch.setenv("HUB_SHOPIFY_CLIENT_ID", APP_CLIENT_ID)
    monkeypatch.setenv("HUB_SHOPIFY_CLIENT_SECRET", APP_CLIENT_SECRET)

    resp = await client.post("/api/v1/connections/authorize", json=start, headers=shop.secret)
    assert resp.status_code == 200, resp.text
    url = resp.json()["authorize_url"]
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(f"{emulator.base}/admin/oauth/authorize?")
    assert query["client_id"] == [APP_CLIENT_ID] and query["scope"] == ["read_products"]
    assert query["redirect_uri"] == ["http://testserver.local/oauth/shopify/callback"]

    before = await snapshot()
    forged = emulator.approve(url, secret="not-the-app-secret")
    assert (await client.get(forged.removeprefix("http://testserver.local"))).status_code == 400
    tampered_state = emulator.approve(url).replace("state=", "state=x")
    assert (await client.get(tampered_state.removeprefix("http://testserver.local"))).status_code == 400
    assert await snapshot() == before

    callback = emulator.approve(url).removeprefix("http://testserver.local")
    done = await client.get(callback)
    assert done.status_code == 201, done.text
    conn = done.json()
    assert conn["connector"] == "shopify" and conn["settings"]["shop_domain"] == DOMAIN
    assert len(emulator.subscriptions) == 4
    assert (await wait_job(client, shop.secret, conn["sync_job"]["id"]))["status"] == "succeeded"
    assert set(await wait_catalog(client, shop.secret, 1)) == {"30000000033"}
    assert (await client.get(callback)).status_code == 400  # the code was used: a replay connects nothing

    # installing again (after an uninstall, say) reconnects the same connection instead of adding one
    again = await client.get(emulator.approve(
        (await client.post("/api/v1/connections/authorize", json=start, headers=shop.secret)).json()["authorize_url"]
    ).removeprefix("http://testserver.local"))
    assert again.status_code == 201 and again.json()["id"] == conn["id"]
    assert len(emulator.subscriptions) == 4  # the old subscriptions were replaced, not doubled
    listed = (await client.get("/api/v1/connections", headers=shop.secret)).json()["items"]
    assert [c["id"] for c in listed] == [conn["id"]]


async def test_app_wide_compliance_webhooks_reach_the_store_connection(client, shop, emulator, settings, monkeypatch):
    monkeypatch.setenv("HUB_SHOPIFY_CLIENT_ID", APP_CLIENT_ID)
    monkeypatch.setenv("HUB_SHOPIFY_CLIENT_SECRET", APP_CLIENT_SECRET)
    emulator.put(4, [44])
    start = {"connector": "shopify", "settings": {"shop_domain": DOMAIN}}
    url = (await client.post("/api/v1/connections/authorize", json=start, headers=shop.secret)).json()["authorize_url"]
    conn = (await client.get(emulator.approve(url).removeprefix("http://testserver.local"))).json()
    await wait_job(client, shop.secret, conn["sync_job"]["id"])
    await wait_catalog(client, shop.secret, 1)

    # a public app declares its compliance webhooks once, for every store: one address, routed by shop domain
    other_store = {"shop_id": 2, "shop_domain": "someone-else.myshopify.com", "customer": {"id": 1}}
    body, headers = delivery("customers/redact", other_store, secret=APP_CLIENT_SECRET,
                             domain="someone-else.myshopify.com")
    resp = await client.post("/webhooks/shopify", content=body, headers=headers)
    assert resp.status_code == 200 and resp.json() == {"status": "processed", "connections": 0}
    forged = delivery("customers/redact", other_store, secret="wrong", domain="someone-else.myshopify.com")
    assert (await client.post("/webhooks/shopify", content=forged[0], headers=forged[1])).status_code == 401
    forged_known = delivery("shop/redact", {"shop_domain": DOMAIN}, secret="wrong")
    assert (await client.post("/webhooks/shopify", content=forged_known[0], headers=forged_known[1])).status_code == 401
    assert len(await images_by_external_id(client, shop.secret)) == 1

    emulator.uninstalled = True  # shop/redact comes 48 hours after the store uninstalled the app
    body, headers = delivery("shop/redact", {"shop_id": 1, "shop_domain": DOMAIN}, secret=APP_CLIENT_SECRET)
    resp = await client.post("/webhooks/shopify", content=body, headers=headers)
    assert resp.status_code == 200 and resp.json() == {"status": "accepted", "connections": 1}
    await settle_deliveries(settings)
    assert await images_by_external_id(client, shop.secret) == {}
    assert (await client.get(f"/api/v1/connections/{conn['id']}", headers=shop.secret)).json()["status"] == "erased"
    again = await client.post("/webhooks/shopify", content=body, headers=headers)  # Shopify retries: still fine
    assert again.status_code == 200 and again.json() == {"status": "processed", "connections": 0}
    assert await recommended(client, shop) == set()
    # Shopify expects 2xx for compliance topics and retries anything else: an erased connection acknowledges
    # them (there is nothing left to verify them with, nor anything to apply them to) and takes nothing else
    direct = await client.post(f"/webhooks/shopify/{conn['id']}", content=body, headers=headers)
    assert direct.status_code == 200 and direct.json()["status"] == "ignored"
    update = delivery("products/update", emulator.rest(4))
    assert (await client.post(f"/webhooks/shopify/{conn['id']}", content=update[0],
                              headers=update[1])).status_code == 404
    assert (await client.post("/webhooks/example", content=b"{}")).status_code == 404
