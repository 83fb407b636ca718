"""The WooCommerce connector against the WooCommerce emulator on loopback, all through the hub's HTTP API:
connect (OAuth 1.0a over HTTP; Basic or query-string keys over HTTPS), import with variations and retries,
recommend, then webhooks (ping, update, variable products, delete-only payloads, forgeries, replays)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hub.connectors import Delivery
from hub.plugin_manager import load_plugins
from hub.testing import ConnectorContract
from tests.conftest import app_sender, images_by_external_id, settle_deliveries, wait_catalog, wait_job
from tests.woo_platform import KEY, WooEmulator


@pytest.fixture
def woo():
    emulator = WooEmulator()
    yield emulator
    emulator.close()


class TestWooCommerceContract(ConnectorContract):
    @pytest.fixture
    def bad_connection_settings(self, woo):
        return woo.settings(consumer_secret="cs_" + "0" * 40)

    @pytest.fixture
    def existing_product_id(self, connection_settings):
        return "7"

    @pytest.fixture
    def connector(self):
        return load_plugins().connectors()["woocommerce"]

    @pytest.fixture
    def connection_settings(self, woo):
        for pid in range(1, 230):
            woo.put(pid, [pid], variation_seeds=[pid + 500] if pid % 50 == 0 else [])
        return woo.settings()

    @pytest.fixture
    def genuine_delivery(self, woo, connector, connection_settings, webhook_url):
        from hub.connectors import ConnectionContext
        from hub.plugins.woocommerce import webhook_secret

        ctx = ConnectionContext(connector.settings_model.model_validate(connection_settings), None, webhook_url)
        body, headers = woo.delivery("product.updated", woo.put(3, [3, 4]), secret=webhook_secret(ctx),
                                     delivery_id="same-second")
        return Delivery({k.lower(): v for k, v in headers.items()}, body)

    @staticmethod
    def _signed(woo, topic, payload, delivery_id=None):
        body, headers = woo.delivery(topic, payload, secret="unused-by-parse", delivery_id=delivery_id)
        return Delivery({k.lower(): v for k, v in headers.items()}, body)

    @pytest.fixture
    def delete_delivery(self, woo, connection_settings):
        return self._signed(woo, "product.deleted", {"id": 3})

    @pytest.fixture
    def child_delivery(self, woo, connection_settings):
        return self._signed(woo, "product.updated", woo.variation_payload(50, 0)), "50"

    @pytest.fixture
    def same_id_delivery(self, woo, connection_settings):
        return self._signed(woo, "product.updated", woo.put(4, [4]), delivery_id="same-second")


@pytest.fixture
def settings_overrides():
    return {"secret_key": "a-long-random-secret-key-for-tests", "allow_private_fetch": True}






def utc_now_naive(delta_seconds: float = 0) -> str:
    """A date_modified_gmt as WooCommerce writes it (UTC, no offset)."""
    return (datetime.now(UTC) + timedelta(seconds=delta_seconds)).strftime("%Y-%m-%dT%H:%M:%S")


async def connect(client, shop, woo, **settings: Any):
    woo.sender = app_sender(client)  # the store pings the delivery URL while the hub creates the webhook
    return await client.post("/api/v1/connections", json={"connector": "woocommerce", "name": "My Woo",
                                                          "settings": woo.settings(**settings)}, headers=shop.secret)


class Store:
    def __init__(self, client, settings, woo, connection_id: int) -> None:
        self.client, self.settings, self.woo = client, settings, woo
        self.path = f"/webhooks/woocommerce/{connection_id}"

    async def send(self, topic: str, payload: dict[str, Any], **kw: Any):
        body, headers = self.woo.delivery(topic, payload, **kw)
        resp = await self.client.post(self.path, content=body, headers=headers)
        await settle_deliveries(self.settings)
        return resp


async def test_connect_import_recommend_then_webhooks_keep_it_in_step(client, shop, woo, settings):
    for pid in range(1, 231):
        woo.put(pid, [pid], variation_seeds=[pid + 1000, pid + 2000] if pid % 25 == 0 else [])
    woo.put(231, [231], status="draft")
    resp = await connect(client, shop, woo)
    assert resp.status_code == 201, resp.text
    conn = resp.json()
    assert conn["info"] == {"products": 231, "auth": "oauth1"}
    assert conn["secret_settings"] == ["consumer_key", "consumer_secret"] and KEY not in resp.text
    assert sorted(h["topic"] for h in woo.webhooks.values()) == sorted(
        ["product.created", "product.updated", "product.deleted", "product.restored"])
    assert {h["delivery_url"] for h in woo.webhooks.values()} == {conn["webhook_url"]}
    assert all(h["secret"] and h["secret"] not in conn["webhook_url"] for h in woo.webhooks.values())

    job = await wait_job(client, shop.secret, conn["sync_job"]["id"])
    assert (job["status"], job["total"], job["done"], job["failed"]) == ("succeeded", 231, 231, 0)
    assert woo.requests.count("GET /wp-json/wc/v3/products") == 1 + 3  # the check, then 3 pages of 100
    assert woo.requests.count("GET /wp-json/wc/v3/products/25/variations") == 1
    found = await wait_catalog(client, shop.secret, 231 + 2 * 9)  # 9 variable products with 2 variation photos each
    assert {i["status"] for i in found.values()} == {"ready"}
    assert found["5001"]["name"] == "Product 1" and found["5001"]["description"] == "About product 1"
    assert found["5001"]["product_url"] == "https://shop.example/product/product-1/"
    assert found["5001"]["category"]["name"] == "Dresses" and found["5001"]["style"]["name"] == "Casual"
    assert {"5025", "8025", "9025"} <= set(found)  # product 25's gallery photo and its two variations' photos
    top = await client.post("/api/v1/recommendations", json={"prompt": "linen dress", "limit": 100},
                            headers=shop.publishable)
    assert len(top.json()["results"]) == 100
    assert {r["id"] for r in top.json()["results"]} <= {i["id"] for i in found.values()} - {found["5231"]["id"]}
    variable = await client.post("/api/v1/recommendations", json={"prompt": "linen dress", "distinct": "image",
                                                                  "filters": {"product_id": found["5025"]["product_id"]}},
                                 headers=shop.publishable)
    assert {r["id"] for r in variable.json()["results"]} == {found[k]["id"] for k in ("5025", "8025", "9025")}
    one = await client.post("/api/v1/recommendations", json={"prompt": "linen dress", "filters": {
        "product_id": found["5025"]["product_id"]}}, headers=shop.publishable)  # one result per product
    assert [{r["id"], *r["other_image_ids"]} for r in one.json()["results"]] == \
        [{found[k]["id"] for k in ("5025", "8025", "9025")}]
    draft = await client.post("/api/v1/recommendations", json={"prompt": "linen dress", "filters": {
        "product_id": found["5231"]["product_id"]}}, headers=shop.publishable)
    assert draft.json()["results"] == []  # drafts are indexed, never recommended

    store = Store(client, settings, woo, conn["id"])
    # WooCommerce pinged each webhook's URL while the hub was creating it: each ping got 2xx, none failing
    assert sorted(woo.pings) == [(1, 200), (2, 200), (3, 200), (4, 200)]
    assert all(h["failure_count"] == 0 for h in woo.webhooks.values())
    ping = await client.post(store.path, content=b"webhook_id=3",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert ping.status_code == 200 and ping.json() == {"status": "processed", "delivery": None}  # (not kept)

    woo.put(2, [9002], date_modified_gmt="2026-11-02T08:00:00")  # product 2's photo replaced
    assert (await store.send("product.updated", woo.products[2])).json()["status"] == "accepted"
    after = await wait_catalog(client, shop.secret, 249)
    assert "5002" not in after and after["14002"]["status"] == "ready"

    async def by_words(prompt: str) -> list[str]:
        resp = await client.post("/api/v1/recommendations", json={"prompt": prompt, "mode": "lexical"},
                                 headers=shop.publishable)
        return [r["name"] for r in resp.json()["results"]]

    assert await by_words("tweed blazer") == []
    woo.put(7, [7], name="Tweed blazer", date_modified_gmt="2026-11-02T08:00:00")  # renamed, same photo
    assert (await store.send("product.updated", woo.products[7])).json()["status"] == "accepted"
    deadline = asyncio.get_running_loop().time() + 30
    while await by_words("tweed blazer") != ["Tweed blazer"]:  # the image's and the product's new title
        assert asyncio.get_running_loop().time() < deadline, "the lexical index did not follow the rename"
        await asyncio.sleep(0.1)

    woo.put(50, [50], variation_seeds=[3050], date_modified_gmt="2026-11-02T08:00:00")  # a variation photo changed
    await store.send("product.updated", woo.products[50])  # the payload lists variation ids, not their images
    after = await wait_catalog(client, shop.secret, 248)
    assert {"5050", "10050"} <= set(after) and not {"8050", "9050"} & set(after)

    gone = after["5003"]["product_id"]
    woo.trash(3)
    await store.send("product.deleted", {"id": 3})  # WooCommerce sends only the id
    after = await images_by_external_id(client, shop.secret)
    assert "5003" not in after
    resp = await client.post("/api/v1/recommendations", json={"prompt": "x", "filters": {"product_id": gone}},
                             headers=shop.publishable)
    assert resp.json()["results"] == []

    woo.put(3, [3], date_modified_gmt=utc_now_naive())  # restored from the trash, after the delete arrived
    await store.send("product.restored", woo.products[3])
    assert "5003" in await images_by_external_id(client, shop.secret)

    assert (await client.delete(f"/api/v1/connections/{conn['id']}", headers=shop.secret)).status_code == 204
    assert woo.webhooks == {} and len(woo.deleted_webhooks) == 4


async def test_forged_replayed_and_malformed_deliveries(client, shop, woo, settings, snapshot):
    woo.put(1, [1])
    conn = (await connect(client, shop, woo)).json()
    await wait_job(client, shop.secret, conn["sync_job"]["id"])
    await wait_catalog(client, shop.secret, 1)
    store = Store(client, settings, woo, conn["id"])
    payload = woo.put(1, [2], date_modified_gmt="2026-11-05T08:00:00")

    before = await snapshot()
    assert (await store.send("product.updated", payload, secret="not-the-secret")).status_code == 401
    body, headers = woo.delivery("product.updated", payload)
    del headers["X-WC-Webhook-Signature"]
    assert (await client.post(store.path, content=body, headers=headers)).status_code == 401
    assert await snapshot() == before

    first = await store.send("product.updated", payload, delivery_id="dlv-1")
    again = await store.send("product.updated", payload, delivery_id="dlv-1")
    assert (first.json()["status"], again.json()["status"]) == ("accepted", "duplicate")
    assert set(await images_by_external_id(client, shop.secret)) == {"5002"}

    secret = next(h["secret"] for h in woo.webhooks.values() if h["topic"] == "product.updated")
    for raw in (b"{broken", b"[1, 2]", b'{"name": "no id"}'):
        _, headers = woo.delivery("product.updated", {})
        headers["X-WC-Webhook-Signature"] = base64.b64encode(hmac.new(secret.encode(), raw, hashlib.sha256).digest()).decode()
        resp = await client.post(store.path, content=raw, headers=headers)
        assert resp.status_code == 400 and "malformed delivery" in resp.json()["detail"]
    rows = await settle_deliveries(settings)
    assert [r.status for r in rows].count("rejected") == 3


@pytest.fixture(params=[(False, "basic"), (True, "query")], ids=["basic", "stripped-header"])
def tls_woo(request, tmp_path, monkeypatch):
    """An HTTPS store (trusted through SSL_CERT_FILE before the app and its HTTP clients start)."""
    strip, expected = request.param
    emulator = WooEmulator(tls_folder=tmp_path, strip_authorization=strip)
    monkeypatch.setenv("SSL_CERT_FILE", str(emulator.cert))
    emulator.expected_auth = expected
    yield emulator
    emulator.close()


async def test_https_stores_use_basic_auth_or_query_keys(tls_woo, client, shop):
    woo, expected = tls_woo, tls_woo.expected_auth
    woo.put(1, [1])
    resp = await connect(client, shop, woo)
    assert resp.status_code == 201, resp.text
    assert resp.json()["info"]["auth"] == expected
    job = await wait_job(client, shop.secret, resp.json()["sync_job"]["id"])
    assert job["status"] == "succeeded" and job["done"] == 1
    assert set(woo.auth_seen) == {expected}
    ready = await wait_catalog(client, shop.secret, 1)
    assert ready["5001"]["status"] == "ready", ready["5001"]["error"]
    plain = await connect(client, shop, woo, store_url=woo.base.replace("https", "http"), auth="basic")
    assert plain.status_code == 422 and "in clear" in plain.json()["detail"]


async def test_retries_on_429_and_5xx_during_import(client, shop, woo):
    for pid in range(1, 4):
        woo.put(pid, [pid])
    conn = (await connect(client, shop, woo)).json()
    await wait_job(client, shop.secret, conn["sync_job"]["id"])
    woo.fail_next, woo.rate_limit_next = 2, 1
    again = await client.post(f"/api/v1/connections/{conn['id']}/sync", headers=shop.secret)
    job = await wait_job(client, shop.secret, again.json()["id"])
    assert (job["status"], job["done"], job["attempts"]) == ("succeeded", 3, 1)  # waited, never failed
    assert woo.fail_next == woo.rate_limit_next == 0


async def test_bad_connections_are_explained_and_store_nothing(client, shop, woo, snapshot):
    before = await snapshot()
    bad_keys = await connect(client, shop, woo, consumer_secret="cs_" + "0" * 40)
    assert bad_keys.status_code == 422 and "refused the consumer key" in bad_keys.json()["detail"]
    woo.pretty_permalinks = False
    not_wp = await connect(client, shop, woo)
    assert not_wp.status_code == 422 and "pretty permalinks" in not_wp.json()["detail"]
    woo.pretty_permalinks = True
    woo.permission = "read"
    read_only = await connect(client, shop, woo)
    assert read_only.status_code == 422 and "Read/Write" in read_only.json()["detail"]
    not_keys = await connect(client, shop, woo, consumer_key="hello")
    assert not_keys.status_code == 422 and "consumer_key" in not_keys.json()["detail"]
    assert await snapshot() == before
    assert woo.webhooks == {}


# -- WooCommerce as it really behaves -------------------------------------------------------------------------


async def connected(client, shop, woo, settings, **extra: Any):
    resp = await connect(client, shop, woo, **extra)
    assert resp.status_code == 201, resp.text
    conn = resp.json()
    await wait_job(client, shop.secret, conn["sync_job"]["id"])
    return conn, Store(client, settings, woo, conn["id"])


async def test_deliveries_sharing_one_delivery_id_are_all_applied(client, shop, woo, settings):
    woo.put(1, [1])
    woo.put(2, [2, 3])
    _, store = await connected(client, shop, woo, settings)
    await wait_catalog(client, shop.secret, 3)
    hook = next(h for h in woo.webhooks.values() if h["topic"] == "product.updated")
    same_second = woo.delivery_id(hook["id"])  # wp_hash(webhook_id . strtotime('now')): one per webhook per second
    renamed = woo.put(1, [1], name="Linen shirt", date_modified_gmt=utc_now_naive())
    fewer = woo.put(2, [2], date_modified_gmt=utc_now_naive())  # a bulk edit removed product 2's second photo
    first = await store.send("product.updated", renamed, delivery_id=same_second)
    second = await store.send("product.updated", fewer, delivery_id=same_second)
    assert (first.json()["status"], second.json()["status"]) == ("accepted", "accepted")
    images = await wait_catalog(client, shop.secret, 2)
    assert images["5001"]["name"] == "Linen shirt" and set(images) == {"5001", "5002"}


async def test_a_variation_delivery_is_a_change_of_its_parent(client, shop, woo, settings):
    woo.put(25, [25], variation_seeds=[1025, 2025])
    _, store = await connected(client, shop, woo, settings)
    before = await wait_catalog(client, shop.secret, 3)
    woo.variations[25][0]["image"] = {"id": 7777, "src": woo.upload(4025), "alt": "new colour"}
    woo.variations[25][0]["date_modified_gmt"] = utc_now_naive()
    resp = await store.send("product.updated", woo.variation_payload(25, 0))  # the body is the variation itself
    assert resp.json()["status"] == "accepted"
    after = await wait_catalog(client, shop.secret, 3)
    assert set(after) == {"5025", "7777", "9025"} and set(before) == {"5025", "8025", "9025"}
    assert len({i["product_id"] for i in after.values()}) == 1  # no "Product 25 - XL" product beside it
    assert not any(i["name"].endswith("- XL") for i in after.values())
    found = await client.post("/api/v1/recommendations", json={"prompt": "shirt", "limit": 10,
                                                                  "distinct": "image"},
                              headers=shop.publishable)
    ids = [r["id"] for r in found.json()["results"]]
    assert len(ids) == len(set(ids)) == 3


async def test_a_deleted_product_does_not_come_back_from_a_late_update(client, shop, woo, settings):
    woo.put(3, [3], date_modified_gmt=utc_now_naive(-120))
    _, store = await connected(client, shop, woo, settings)
    await wait_catalog(client, shop.secret, 1)
    late = dict(woo.products[3], name="Edited before the delete", date_modified_gmt=utc_now_naive(-60))
    woo.erase(3)  # deleted for good: the store answers 404 for it now
    await store.send("product.deleted", {"id": 3})  # no time of its own: the hub dates the tombstone on arrival
    assert await images_by_external_id(client, shop.secret) == {}
    await store.send("product.updated", late)  # made before the delete, delivered after it
    assert await images_by_external_id(client, shop.secret) == {}
    woo.put(3, [3], date_modified_gmt=utc_now_naive(+60))  # really recreated later: it comes back
    await store.send("product.created", woo.products[3])
    assert set(await images_by_external_id(client, shop.secret)) == {"5003"}


@pytest.mark.parametrize("settings_overrides", [{"secret_key": "a-long-random-secret-key-for-tests",
                                                 "allow_private_fetch": True, "retry_max_attempts": 2}])
async def test_images_failed_by_a_host_outage_come_back(client, shop, woo, settings):
    woo.put(1, [1])
    woo.put(2, [2])
    woo.put(3, [3])
    woo.uploads_down = True  # the shop's hosting is down while the catalog is imported
    conn, store = await connected(client, shop, woo, settings)
    failed = await wait_catalog(client, shop.secret, 3)
    assert {i["status"] for i in failed.values()} == {"failed"}
    assert all("gave up after 2 attempts: HTTP 503" in i["error"] and i["attempts"] == 2 for i in failed.values())
    woo.uploads_down = False

    # the platform names an image again (a webhook): it is tried again
    await store.send("product.updated", woo.put(1, [1], date_modified_gmt=utc_now_naive()))
    assert (await wait_catalog(client, shop.secret, 3))["5001"]["status"] == "ready"
    # one image by hand
    retried = await client.post(f"/api/v1/images/{failed['5002']['id']}/retry", headers=shop.secret)
    assert retried.status_code == 202 and retried.json()["status"] == "pending" and retried.json()["error"] is None
    assert (await client.post(f"/api/v1/images/{failed['5002']['id']}/retry", headers=shop.secret)).status_code == 409
    assert (await wait_catalog(client, shop.secret, 3))["5002"]["status"] == "ready"
    # a sync names every image again
    sync = await client.post(f"/api/v1/connections/{conn['id']}/sync", headers=shop.secret)
    await wait_job(client, shop.secret, sync.json()["id"])
    images = await wait_catalog(client, shop.secret, 3)
    assert {i["status"] for i in images.values()} == {"ready"}

    # and all failed images of a connection at once
    woo.uploads_down = True
    woo.put(4, [4])
    await store.send("product.created", woo.products[4])
    assert (await wait_catalog(client, shop.secret, 4))["5004"]["status"] == "failed"
    woo.uploads_down = False
    bulk = await client.post("/api/v1/images/retry", json={"connection_id": conn["id"]}, headers=shop.secret)
    assert bulk.status_code == 202 and bulk.json()["retried"] == 1
    assert (await wait_catalog(client, shop.secret, 4))["5004"]["status"] == "ready"


async def test_a_new_public_url_moves_the_webhooks_and_keeps_their_secret(settings, woo, make_shop_for):
    from tests.conftest import serve_app

    woo.put(1, [1])
    async with serve_app(settings) as old:  # the hub as it ran until now
        shop = await make_shop_for(old)
        conn, _ = await connected(old, shop, woo, settings)
        await wait_catalog(old, shop.secret, 1)
    secrets_before = {h["secret"] for h in woo.webhooks.values()}
    moved = settings.model_copy(update={"public_url": "https://hub.new.example"})
    woo.permission = "read"  # the keys cannot create webhooks for now: moving fails, and says so
    async with serve_app(moved) as new:  # restarted with another HUB_PUBLIC_URL
        woo.sender = app_sender(new, public_url="https://hub.new.example")
        ready = (await new.get("/ready")).json()
        assert any(f"connections {conn['id']}" in w for w in ready["warnings"]), ready
        seen = await wait_connection(new, shop, conn["id"], lambda c: c["webhooks"]["problem"])
        assert seen["webhooks"]["current"] is False and "failed" in seen["webhooks"]["problem"]
        woo.permission = "read_write"  # the merchant fixes the keys: the next attempt moves them
        seen = await wait_connection(new, shop, conn["id"], lambda c: c["webhooks"]["current"])
        assert seen["webhooks"] == {"url": f"https://hub.new.example/webhooks/woocommerce/{conn['id']}",
                                    "current": True, "problem": None}, seen
        assert {h["delivery_url"] for h in woo.webhooks.values()} == {seen["webhooks"]["url"]}
        assert {h["secret"] for h in woo.webhooks.values()} == secrets_before  # the stored secret, not a derived one
        body, headers = woo.delivery("product.updated", woo.put(1, [1], name="Moved", date_modified_gmt=utc_now_naive()))
        resp = await new.post(f"/webhooks/woocommerce/{conn['id']}", content=body, headers=headers)
        assert resp.status_code == 200 and resp.json()["status"] == "accepted"
        assert (await new.get("/ready")).json()["warnings"] == []


async def wait_connection(client, shop, connection_id: int, until, timeout: float = 30) -> dict[str, Any]:
    """Poll a connection until ``until(connection)`` holds; fail loudly at the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        seen = (await client.get(f"/api/v1/connections/{connection_id}", headers=shop.secret)).json()
        if until(seen):
            return seen
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"connection {connection_id} never got there: {seen}")
        await asyncio.sleep(0.1)
