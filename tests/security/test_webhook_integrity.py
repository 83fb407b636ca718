"""Platform vs hub: a signature covers the body only, so the unsigned headers (topic, delivery id, time) must
not decide what a signed body does; and one shop's connection can never change another shop's outcome."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hub.plugins.shopify import signature
from tests.conftest import images_by_external_id, settle_deliveries, wait_catalog, wait_job
from tests.shopify_platform import (
    APP_CLIENT_ID,
    APP_CLIENT_SECRET,
    CLIENT_SECRET,
    DOMAIN,
    delivery,
    now_iso,
    running_emulator,
    shop_payload,
)


@pytest.fixture
def settings_overrides():
    return {"secret_key": "a-long-random-secret-key-for-tests", "allow_private_fetch": True}


@pytest.fixture
def emulator(monkeypatch):
    yield from running_emulator(monkeypatch)


@pytest.fixture
def app_secret(monkeypatch):
    """The operator's public app is configured (its deliveries are signed with APP_CLIENT_SECRET)."""
    monkeypatch.setenv("HUB_SHOPIFY_CLIENT_ID", APP_CLIENT_ID)
    monkeypatch.setenv("HUB_SHOPIFY_CLIENT_SECRET", APP_CLIENT_SECRET)


async def custom_app(client, shop, emulator, **settings: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/connections", json={"connector": "shopify", "settings": emulator.settings(
        **settings)}, headers=shop.secret)
    assert resp.status_code == 201, resp.text
    conn = resp.json()
    await wait_job(client, shop.secret, conn["sync_job"]["id"])
    return conn


async def oauth_install(client, shop, emulator) -> dict[str, Any]:
    start = {"connector": "shopify", "settings": {"shop_domain": DOMAIN}}
    url = (await client.post("/api/v1/connections/authorize", json=start, headers=shop.secret)).json()["authorize_url"]
    resp = await client.get(emulator.approve(url).removeprefix("http://testserver.local"))
    assert resp.status_code == 201, resp.text
    await wait_job(client, shop.secret, resp.json()["sync_job"]["id"])
    return resp.json()


def resigned(body: bytes, headers: dict[str, str], secret: str = CLIENT_SECRET, **changes: str) -> dict[str, str]:
    """The same (genuinely signed) body with other headers: all an attacker who captured it can do."""
    return {**headers, **changes, "X-Shopify-Hmac-Sha256": signature(secret, body)}


async def test_captured_bodies_cannot_be_replayed_or_repurposed(client, shop, emulator, settings, snapshot):
    emulator.put(7, [70])
    emulator.put(8, [80])
    conn = await custom_app(client, shop, emulator)
    await wait_catalog(client, shop.secret, 2)
    path = f"/webhooks/shopify/{conn['id']}"

    update_body, update_headers = delivery("products/update", emulator.rest(7))
    first = await client.post(path, content=update_body, headers=update_headers)
    assert first.json()["status"] == "accepted"
    await settle_deliveries(settings)
    before = await snapshot()

    # the same body with a fresh delivery id is still the same delivery
    replay = await client.post(path, content=update_body, headers={**update_headers, "X-Shopify-Webhook-Id": "new-id"})
    assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
    # a product body under a delete topic, or a delete body under the erase topic: refused, nothing changes
    as_delete = await client.post(path, content=update_body, headers={
        **update_headers, "X-Shopify-Topic": "products/delete", "X-Shopify-Webhook-Id": "x1"})
    assert as_delete.status_code == 400 and "products/delete" in as_delete.json()["detail"]
    delete_body, delete_headers = delivery("products/delete", {"id": 8})
    as_redact = await client.post(path, content=delete_body, headers={**delete_headers, "X-Shopify-Topic": "shop/redact"})
    assert as_redact.status_code == 400 and "shop/redact" in as_redact.json()["detail"]
    as_uninstall = await client.post(path, content=delete_body, headers={**delete_headers,
                                                                          "X-Shopify-Topic": "app/uninstalled"})
    assert as_uninstall.status_code == 400
    # a delivery triggered long ago (or claiming the future) is refused whatever it carries
    for when in (now_iso(-13 * 3600), now_iso(+3600)):
        old_body, old_headers = delivery("products/delete", {"id": 8}, triggered_at=when)
        assert (await client.post(path, content=old_body, headers=old_headers)).status_code == 400
    # a well-formed erase sent to a connection's own URL is acknowledged and applied nowhere
    redact_body, redact_headers = delivery("shop/redact", {"shop_id": 1, "shop_domain": DOMAIN})
    ignored = await client.post(path, content=redact_body, headers=redact_headers)
    assert ignored.status_code == 200 and ignored.json()["status"] == "ignored"
    await settle_deliveries(settings)
    after = await snapshot()
    after.pop("webhook_deliveries"), before.pop("webhook_deliveries")
    assert after == before
    assert set(await images_by_external_id(client, shop.secret)) == {"30000000070", "30000000080"}


async def test_woocommerce_bodies_must_match_their_topic(client, shop, settings):
    from tests.conftest import app_sender
    from tests.woo_platform import WooEmulator

    woo = WooEmulator()
    try:
        woo.sender = app_sender(client)
        woo.put(1, [1])
        woo.put(2, [2])
        resp = await client.post("/api/v1/connections", json={"connector": "woocommerce",
                                                              "settings": woo.settings()}, headers=shop.secret)
        assert resp.status_code == 201, resp.text
        conn = resp.json()
        await wait_job(client, shop.secret, conn["sync_job"]["id"])
        await wait_catalog(client, shop.secret, 2)
        path = f"/webhooks/woocommerce/{conn['id']}"
        body, headers = woo.delivery("product.updated", woo.products[1])
        assert (await client.post(path, content=body, headers=headers)).json()["status"] == "accepted"
        await settle_deliveries(settings)
        replay = await client.post(path, content=body, headers={**headers, "X-WC-Webhook-Delivery-ID": "other"})
        assert replay.json()["status"] == "duplicate"
        hook = next(h for h in woo.webhooks.values() if h["topic"] == "product.deleted")
        as_delete = await client.post(path, content=body, headers={**headers, "X-WC-Webhook-Topic": "product.deleted",
                                                                   "X-WC-Webhook-ID": str(hook["id"])})
        assert as_delete.status_code == 400 and "product.deleted" in as_delete.json()["detail"]
        # a delete the store does not confirm (product 2 is still there) removes nothing, however often it comes
        for n in range(3):
            gone, gone_headers = woo.delivery("product.deleted", {"id": 2}, delivery_id=f"forged-{n}")
            assert (await client.post(path, content=gone, headers=gone_headers)).status_code == 200
        await settle_deliveries(settings)
        assert set(await images_by_external_id(client, shop.secret)) == {"5001", "5002"}
    finally:
        woo.close()


async def test_one_shops_connection_never_blocks_anothers_privacy_webhooks(
        client, make_shop, emulator, settings, app_secret, monkeypatch):
    emulator.put(1, [10])
    squatter, owner = await make_shop("Squatter"), await make_shop("Owner")
    # the squatter registered the store's domain first, with a custom app secret of its own choosing
    await custom_app(client, squatter, emulator, client_secret="the-squatters-own-secret")
    await wait_catalog(client, squatter.secret, 1)
    installed = await oauth_install(client, owner, emulator)
    await wait_catalog(client, owner.secret, 1)

    emulator.uninstalled = True  # the owner uninstalled the app; 48 hours later Shopify asks to erase the store
    body = json.dumps({"shop_id": 1, "shop_domain": DOMAIN}).encode()
    _, headers = delivery("shop/redact", {}, secret=APP_CLIENT_SECRET)
    headers["X-Shopify-Hmac-Sha256"] = signature(APP_CLIENT_SECRET, body)
    resp = await client.post("/webhooks/shopify", content=body, headers=headers)
    assert resp.status_code == 200 and resp.json() == {"status": "accepted", "connections": 1}, resp.text
    await settle_deliveries(settings)
    assert await images_by_external_id(client, owner.secret) == {}  # the owner's data is erased, as asked
    assert (await client.get(f"/api/v1/connections/{installed['id']}", headers=owner.secret)).json()["status"] == \
        "erased"
    assert len(await images_by_external_id(client, squatter.secret)) == 1  # a custom app is not the app's to erase
    # a forged app-wide delivery is refused before anything is looked up
    forged = dict(headers, **{"X-Shopify-Hmac-Sha256": signature("the-squatters-own-secret", body)})
    assert (await client.post("/webhooks/shopify", content=body, headers=forged)).status_code == 401


async def test_app_signed_product_bodies_prove_the_app_not_the_store(client, shop, emulator, settings, app_secret):
    """Every store that installed the operator's app gets deliveries signed with the same app secret, and a
    product body does not name its store: one captured from another store must not reach this one's catalog."""
    emulator.put(1, [10])
    conn = await oauth_install(client, shop, emulator)
    await wait_catalog(client, shop.secret, 1)
    path = f"/webhooks/shopify/{conn['id']}"

    elsewhere = dict(emulator.rest(1), id=999, title="Injected", handle="injected")  # another store's product
    body, headers = delivery("products/update", elsewhere, secret=APP_CLIENT_SECRET)
    assert (await client.post(path, content=body, headers=headers)).json()["status"] == "accepted"
    await settle_deliveries(settings)
    images = await images_by_external_id(client, shop.secret)
    assert set(images) == {"30000000010"} and all(i["name"] != "Injected" for i in images.values())

    # this store's own change is read from its Admin API, whatever the body says
    emulator.put(1, [10, 11], title="Renamed in the store", updated_at="2026-11-20T10:00:00Z")
    body, headers = delivery("products/update", dict(emulator.rest(1), title="What the body says"),
                             secret=APP_CLIENT_SECRET)
    assert (await client.post(path, content=body, headers=headers)).json()["status"] == "accepted"
    await settle_deliveries(settings)
    images = await wait_catalog(client, shop.secret, 2)
    assert {i["name"] for i in images.values()} == {"Renamed in the store"}


async def test_a_replayed_uninstall_or_erase_cannot_take_an_installed_store(client, shop, emulator, settings,
                                                                          app_secret, monkeypatch):
    emulator.put(1, [10])
    conn = await oauth_install(client, shop, emulator)
    await wait_catalog(client, shop.secret, 1)
    uninstall = delivery("app/uninstalled", shop_payload(), secret=APP_CLIENT_SECRET)
    redact = delivery("shop/redact", {"shop_id": 1, "shop_domain": DOMAIN}, secret=APP_CLIENT_SECRET)

    # the store still has the app: a (captured, re-sent) uninstall and erase are checked with Shopify and ignored
    assert (await client.post(f"/webhooks/shopify/{conn['id']}", content=uninstall[0],
                              headers=uninstall[1])).status_code == 200
    assert (await client.post("/webhooks/shopify", content=redact[0], headers=redact[1])).status_code == 200
    rows = await settle_deliveries(settings)
    assert all("still has access" in json.dumps(r.summary) for r in rows if r.topic in ("app/uninstalled",
                                                                                        "shop/redact")), rows
    assert (await client.get(f"/api/v1/connections/{conn['id']}", headers=shop.secret)).json()["status"] == "active"
    assert len(await images_by_external_id(client, shop.secret)) == 1

    # really uninstalled: the token stops working, and the same deliveries now apply
    emulator.uninstalled = True
    again = delivery("app/uninstalled", shop_payload(), secret=APP_CLIENT_SECRET, webhook_id="later")
    again = (json.dumps(dict(json.loads(again[0]), updated_at="2026-11-25T00:00:00Z")).encode(), again[1])
    again[1]["X-Shopify-Hmac-Sha256"] = signature(APP_CLIENT_SECRET, again[0])
    await client.post(f"/webhooks/shopify/{conn['id']}", content=again[0], headers=again[1])
    await settle_deliveries(settings)
    assert (await client.get(f"/api/v1/connections/{conn['id']}", headers=shop.secret)).json()["status"] == "disabled"
    later = json.dumps({"shop_id": 1, "shop_domain": DOMAIN}, indent=1).encode()  # (Shopify's re-send)
    _, headers = delivery("shop/redact", {}, secret=APP_CLIENT_SECRET)
    headers["X-Shopify-Hmac-Sha256"] = signature(APP_CLIENT_SECRET, later)
    assert (await client.post("/webhooks/shopify", content=later, headers=headers)).status_code == 200
    await settle_deliveries(settings)
    assert (await client.get(f"/api/v1/connections/{conn['id']}", headers=shop.secret)).json()["status"] == "erased"
    assert await images_by_external_id(client, shop.secret) == {}


async def test_app_installs_made_before_the_hub_recorded_them_are_recognised(client, shop, make_shop, emulator,
                                                                           settings, app_secret, monkeypatch):
    from sqlalchemy import update

    from hub.domain.connections import recognise_app_installs
    from hub.db.engine import create_engine
    from hub.db.models import Connection

    emulator.put(1, [10])
    conn = await oauth_install(client, shop, emulator)
    custom = await custom_app(client, await make_shop("Other"), emulator)
    engine = create_engine(settings.db_url)
    async with engine.begin() as db:  # as migration 0005 left every connection
        await db.execute(update(Connection).values(via_app=False))
    await engine.dispose()
    assert await recognise_app_installs(client.app.state.services) == 1
    listed = (await client.get(f"/api/v1/connections/{conn['id']}", headers=shop.secret)).json()
    assert listed["installed_via"] == "app" and custom["installed_via"] == "credentials"


async def test_the_app_secret_can_be_rotated(client, shop, emulator, settings, app_secret,
                                             monkeypatch):
    emulator.put(1, [10])
    conn = await oauth_install(client, shop, emulator)
    path = f"/webhooks/shopify/{conn['id']}"
    new_secret = "the-rotated-app-secret-0002"
    monkeypatch.setenv("HUB_SHOPIFY_CLIENT_SECRET", new_secret)
    monkeypatch.setenv("HUB_SHOPIFY_PREVIOUS_CLIENT_SECRET", APP_CLIENT_SECRET)
    for n, secret in enumerate((APP_CLIENT_SECRET, new_secret)):  # both, while Shopify switches over
        body, headers = delivery("products/update", dict(emulator.rest(1), updated_at=f"2026-11-2{n}T00:00:00Z"),
                                 secret=secret)
        assert (await client.post(path, content=body, headers=headers)).status_code == 200, secret
    monkeypatch.delenv("HUB_SHOPIFY_PREVIOUS_CLIENT_SECRET")
    body, headers = delivery("products/update", dict(emulator.rest(1), updated_at="2026-11-23T00:00:00Z"),
                             secret=APP_CLIENT_SECRET)
    assert (await client.post(path, content=body, headers=headers)).status_code == 401  # the leaked one: gone
