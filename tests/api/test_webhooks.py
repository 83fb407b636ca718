"""Webhooks and catalog ingest through HTTP: the example plugin (installed as a package) against its platform
running on loopback. Signatures, deduplication, rejection, the image diff, ordering, drafts and deletes."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from hub.db.engine import create_engine
from hub.db.models import WebhookDelivery, utcnow
from tests.conftest import settle_deliveries
from tests.feed_platform import FeedPlatform, signed


@pytest.fixture
def settings_overrides():
    return {"secret_key": "a-long-random-secret-key-for-tests", "allow_private_fetch": True}


@pytest.fixture
def feed():
    platform = FeedPlatform()
    yield platform
    platform.close()


async def connect(client, shop, feed) -> dict[str, Any]:
    resp = await client.post("/api/v1/connections", json={"connector": "example", "settings": feed.settings(),
                                                          "sync": False}, headers=shop.secret)
    assert resp.status_code == 201, resp.text
    return resp.json()


class Hook:
    """Sends the platform's deliveries for one connection and waits until the hub has applied them."""

    def __init__(self, client, conn: dict[str, Any], settings) -> None:
        self.client = client
        self.settings = settings
        self.path = f"/webhooks/example/{conn['id']}"
        self.count = 0

    async def send(self, event: str, product: dict[str, Any], delivery_id: str | None = None):
        self.count += 1
        body, headers = signed({"event": event, "delivery_id": delivery_id or f"d{self.count}", "product": product})
        resp = await self.client.post(self.path, content=body, headers=headers)
        await settle_deliveries(self.settings)
        return resp


async def images_of(client, shop) -> dict[str, dict[str, Any]]:
    resp = await client.get("/api/v1/images", params={"source": "example", "limit": 100}, headers=shop.secret)
    return {img["external_id"]: img for img in resp.json()["items"]}


async def wait_all_ready(client, shop) -> dict[str, dict[str, Any]]:
    for _ in range(300):
        images = await images_of(client, shop)
        if images and all(i["status"] in ("ready", "failed") for i in images.values()):
            return images
        await asyncio.sleep(0.1)
    raise AssertionError(f"not ready: {await images_of(client, shop)}")




async def recommended(client, shop, **filters: Any) -> set[int]:
    resp = await client.post("/api/v1/recommendations", json={"prompt": "a dress", "limit": 100, "filters": filters,
                                                              "distinct": "image"},
                             headers=shop.publishable)
    assert resp.status_code == 200, resp.text
    return {r["id"] for r in resp.json()["results"]}


async def test_signed_webhook_images_end_ready_and_recommended(client, shop, feed, settings):
    conn = await connect(client, shop, feed)
    hook = Hook(client, conn, settings)
    product = feed.put(7, [1, 2], category="Dresses", tags=["casual", "kids"], price=19.9)
    resp = await hook.send("product.created", product)
    assert resp.status_code == 200 and resp.json()["status"] == "accepted", resp.text

    images = await wait_all_ready(client, shop)
    assert set(images) == {"img1", "img2"} and {i["status"] for i in images.values()} == {"ready"}
    img = images["img1"]
    assert img["name"] == "Product 7" and img["product_url"] == "https://shop.example/p/7"
    assert img["category"]["name"] == "Dresses" and img["style"]["name"] == "Casual"
    assert img["age_group"]["name"] == "Kids (3-12)"
    assert await recommended(client, shop) == {i["id"] for i in images.values()}
    assert await recommended(client, shop, price_max=10) == set()

    [row] = await settle_deliveries(settings)
    assert (row.status, row.topic, row.delivery_id, row.body) == ("processed", "product.created", "d1", None)
    assert row.summary["images_added"] == 2


async def test_forged_or_missing_signatures_change_nothing(client, shop, feed, settings, snapshot):
    conn = await connect(client, shop, feed)
    path = f"/webhooks/example/{conn['id']}"
    body, headers = signed({"event": "product.created", "delivery_id": "x1", "product": feed.put(1, [1])})
    before = await snapshot()
    forged = {**headers, "X-Example-Signature": "0" * 64}
    wrong_key = signed(body, secret="not-the-secret")[1]
    tampered = body.replace(b"Product 1", b"Product 2")
    for content, hdrs in ((body, forged), (body, {"Content-Type": "application/json"}), (body, wrong_key),
                          (tampered, headers), (b"", headers)):
        resp = await client.post(path, content=content, headers=hdrs)
        assert resp.status_code == 401, resp.text
        assert "signature" in resp.json()["detail"]
    assert (await client.post(f"/webhooks/example/{conn['id'] + 1000}", content=body, headers=headers)).status_code == 404
    assert (await client.post(f"/webhooks/shopify/{conn['id']}", content=body, headers=headers)).status_code == 404
    assert await snapshot() == before


async def test_a_delivery_is_recognised_by_its_content_not_its_id(client, shop, feed, settings):
    conn = await connect(client, shop, feed)
    hook = Hook(client, conn, settings)
    body, headers = signed({"event": "product.created", "delivery_id": "same", "product": feed.put(3, [5])})
    first = await client.post(hook.path, content=body, headers=headers)
    replay = await client.post(hook.path, content=body, headers=headers)
    assert first.json()["status"] == "accepted"
    assert replay.status_code == 200 and replay.json() == {"status": "duplicate", "delivery": first.json()["delivery"]}
    await settle_deliveries(settings)
    # a platform may reuse an id for different content (WooCommerce: one id per webhook per second): applied
    again = await hook.send("product.updated", feed.put(3, [6]), delivery_id="same")
    assert again.json()["status"] == "accepted"
    images = await wait_all_ready(client, shop)
    assert set(images) == {"img6"}
    assert len(await settle_deliveries(settings)) == 2


async def test_malformed_delivery_is_400_and_recorded_rejected(client, shop, feed, settings):
    conn = await connect(client, shop, feed)
    path = f"/webhooks/example/{conn['id']}"
    for payload in (b"{not json", json.dumps({"event": "product.created"}).encode(),
                    json.dumps({"event": "product.exploded", "delivery_id": "z", "product": {}}).encode(),
                    json.dumps({"event": "product.created", "delivery_id": "u",
                                "product": {"id": 1, "images": [{"id": "i", "url": "ftp://x/y.jpg"}]}}).encode()):
        body, headers = signed(payload)
        resp = await client.post(path, content=body, headers=headers)
        assert resp.status_code == 400, resp.text
        assert "malformed" in resp.json()["detail"]
    rows = await settle_deliveries(settings)
    assert [r.status for r in rows] == ["rejected"] * 4 and all(r.error for r in rows)
    assert await images_of(client, shop) == {}


async def test_ping_is_answered_and_recorded(client, shop, feed, settings):
    conn = await connect(client, shop, feed)
    body, headers = signed({"event": "ping", "delivery_id": "p1"})
    resp = await client.post(f"/webhooks/example/{conn['id']}", content=body, headers=headers)
    assert resp.status_code == 200 and resp.json()["status"] == "processed"
    [row] = await settle_deliveries(settings)
    assert row.topic == "ping" and row.status == "processed"


async def test_image_diff_is_idempotent(client, shop, feed, settings, snapshot):
    conn = await connect(client, shop, feed)
    hook = Hook(client, conn, settings)
    await hook.send("product.created", feed.put(1, [1, 2, 3]))
    first = await wait_all_ready(client, shop)
    assert set(first) == {"img1", "img2", "img3"}

    product = feed.put(1, [2, 3, 5], title="Renamed")
    product["images"][0]["url"] = feed.image(4)["url"]  # img2 now shows another photo
    await hook.send("product.updated", product)
    second = await wait_all_ready(client, shop)
    assert set(second) == {"img2", "img3", "img5"}  # img1 removed, img5 added
    assert second["img2"]["id"] == first["img2"]["id"] and second["img2"]["image_url"].endswith("/img/4.jpg")
    assert second["img2"]["embedded_at"] > first["img2"]["embedded_at"]  # re-embedded: the picture changed
    assert second["img3"]["embedded_at"] == first["img3"]["embedded_at"]  # same picture: not re-embedded
    assert second["img3"]["name"] == "Renamed"
    assert await recommended(client, shop) == {i["id"] for i in second.values()}  # img1's vector is gone

    before = await snapshot()
    replay = await hook.send("product.updated", product)  # the same event again (a new delivery id)
    assert replay.json()["status"] == "accepted"
    after = await snapshot()
    assert {k: v for k, v in after.items() if k != "webhook_deliveries"} == \
           {k: v for k, v in before.items() if k != "webhook_deliveries"}


async def test_older_updates_never_overwrite_newer(client, shop, feed, settings):
    conn = await connect(client, shop, feed)
    hook = Hook(client, conn, settings)
    await hook.send("product.updated", feed.put(9, [1], title="New", updated_at="2026-11-20T10:00:00+00:00"))
    await wait_all_ready(client, shop)
    await hook.send("product.updated", feed.put(9, [2], title="Old", updated_at="2026-11-20T09:00:00+00:00"))
    images = await wait_all_ready(client, shop)
    assert set(images) == {"img1"} and images["img1"]["name"] == "New"

    deleted = await hook.send("product.deleted", {"id": "9", "deleted_at": "2026-11-20T11:00:00+00:00"})
    assert deleted.status_code == 200
    for _ in range(100):
        if not await images_of(client, shop):
            break
        await asyncio.sleep(0.1)
    assert await images_of(client, shop) == {}
    # an update sent before the delete but arriving after it does not bring the product back
    await hook.send("product.updated", feed.put(9, [3], updated_at="2026-11-20T10:30:00+00:00"))
    assert await images_of(client, shop) == {}
    # a delete for a product never seen leaves a tombstone against a late create
    await hook.send("product.deleted", {"id": "10", "deleted_at": "2026-11-21T00:00:00+00:00"})
    await hook.send("product.created", feed.put(10, [4], updated_at="2026-11-20T00:00:00+00:00"))
    assert await images_of(client, shop) == {}


async def test_drafts_are_not_recommended_and_deletes_remove_vectors(client, shop, feed, settings):
    conn = await connect(client, shop, feed)
    hook = Hook(client, conn, settings)
    await hook.send("product.created", feed.put(1, [1]))
    await hook.send("product.created", feed.put(2, [2], status="draft"))
    images = await wait_all_ready(client, shop)
    assert {i["status"] for i in images.values()} == {"ready"}
    assert await recommended(client, shop) == {images["img1"]["id"]}

    await hook.send("product.updated", feed.put(2, [2], status="active"))  # published: now recommended
    for _ in range(100):
        if await recommended(client, shop) == {images["img1"]["id"], images["img2"]["id"]}:
            break
        await asyncio.sleep(0.1)
    assert await recommended(client, shop) == {images["img1"]["id"], images["img2"]["id"]}

    await hook.send("product.deleted", {"id": "1"})
    for _ in range(100):
        if "img1" not in await images_of(client, shop):
            break
        await asyncio.sleep(0.1)
    assert set(await images_of(client, shop)) == {"img2"}
    assert await recommended(client, shop) == {images["img2"]["id"]}
    similar = await client.get(f"/api/v1/images/{images['img1']['id']}/similar", headers=shop.secret)
    assert similar.status_code == 404


async def test_finished_deliveries_are_forgotten_after_the_retention(client, shop, feed, settings):
    conn = await connect(client, shop, feed)
    hook = Hook(client, conn, settings)
    await hook.send("product.created", feed.put(1, [1]), delivery_id="recent")
    engine = create_engine(settings.db_url)
    try:
        async with engine.begin() as db:  # one delivery from long ago, one still in flight from long ago
            await db.execute(WebhookDelivery.__table__.insert(), [
                {"connection_id": conn["id"], "delivery_id": "old", "topic": "product.updated", "status": "processed",
                 "headers": {}, "summary": {}, "attempts": 1, "received_at": utcnow() - timedelta(days=31)},
            ])
        for _ in range(100):  # the sweep runs every second in tests
            async with engine.connect() as db:
                ids = set((await db.execute(select(WebhookDelivery.delivery_id))).scalars())
            if "old" not in ids:
                break
            await asyncio.sleep(0.1)
    finally:
        await engine.dispose()
    assert ids == {"recent"}


async def test_drafts_never_crowd_listed_images_out_of_results(client, shop, feed, settings):
    conn = await connect(client, shop, feed)
    hook = Hook(client, conn, settings)
    await hook.send("product.created", feed.put("a", [1]))
    await hook.send("product.created", feed.put("b", [2]))
    for n in range(15):  # drafts with the very photo of product a: all nearer to it than product b is
        draft = feed.put(f"d{n}", [], status="draft")
        draft["images"] = [{"id": f"draft{n}", "url": feed.image(1)["url"]}]
        await hook.send("product.created", draft)
    images = await wait_all_ready(client, shop)
    assert len(images) == 17
    similar = await client.get(f"/api/v1/images/{images['img1']['id']}/similar", params={"limit": 1},
                               headers=shop.secret)
    assert similar.status_code == 200, similar.text
    assert [r["id"] for r in similar.json()["results"]] == [images["img2"]["id"]]


async def test_a_connections_deliveries_are_listed_with_their_fate_and_duplicates(client, shop, make_shop, feed,
                                                                                   settings):
    conn = await connect(client, shop, feed)
    hook = Hook(client, conn, settings)
    product = feed.put(1, [1])
    assert (await hook.send("product.updated", product, delivery_id="same")).json()["status"] == "accepted"
    again = await hook.send("product.updated", product, delivery_id="same")  # a platform's retry
    assert again.json()["status"] == "duplicate"
    body, headers = signed({"event": "product.updated", "delivery_id": "broken", "product": {"title": "no id"}})
    assert (await client.post(hook.path, content=body, headers=headers)).status_code == 400
    listed = await client.get(f"/api/v1/connections/{conn['id']}/deliveries", headers=shop.secret)
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert [(d["status"], d["duplicates"]) for d in items] == [("rejected", 0), ("processed", 1)]
    assert items[1]["delivery_id"] == "same" and items[1]["topic"] == "product.updated" and items[0]["error"]
    only = await client.get(f"/api/v1/connections/{conn['id']}/deliveries", params={"status": "rejected", "limit": 1},
                            headers=shop.secret)
    assert [d["status"] for d in only.json()["items"]] == ["rejected"] and only.json()["next_cursor"] is None
    paged = await client.get(f"/api/v1/connections/{conn['id']}/deliveries", params={"limit": 1}, headers=shop.secret)
    rest = await client.get(f"/api/v1/connections/{conn['id']}/deliveries",
                            params={"limit": 1, "cursor": paged.json()["next_cursor"]}, headers=shop.secret)
    assert [d["id"] for d in paged.json()["items"] + rest.json()["items"]] == [d["id"] for d in items]
    # another shop sees nothing of it; a publishable key is not enough
    other = await make_shop("Other")
    assert (await client.get(f"/api/v1/connections/{conn['id']}/deliveries",
                             headers=other.secret)).status_code == 404
    assert (await client.get(f"/api/v1/connections/{conn['id']}/deliveries",
                             headers=shop.publishable)).status_code == 403


async def test_a_product_link_is_only_ever_http(client, shop, feed, settings):
    """A platform's product URL becomes the link shoppers click (the widget): a "javascript:" one is dropped."""
    conn = await connect(client, shop, feed)
    hook = Hook(client, conn, settings)
    await hook.send("product.updated", feed.put(1, [1], url="javascript:alert(document.cookie)"))
    await hook.send("product.updated", feed.put(2, [2], url="HTTPS://shop.example/p/2"))
    images = await wait_all_ready(client, shop)
    assert images["img1"]["product_url"] is None
    assert images["img2"]["product_url"] == "HTTPS://shop.example/p/2"


async def test_images_are_listed_by_the_store_they_came_from(client, shop, feed, settings):
    first, second = await connect(client, shop, feed), await connect(client, shop, feed)
    await Hook(client, first, settings).send("product.updated", feed.put(1, [1]))
    await Hook(client, second, settings).send("product.updated", feed.put(2, [2]))
    await wait_all_ready(client, shop)
    for conn, expected in ((first, {"img1"}), (second, {"img2"})):
        listed = await client.get("/api/v1/images", params={"connection_id": conn["id"]}, headers=shop.secret)
        assert {i["external_id"] for i in listed.json()["items"]} == expected
