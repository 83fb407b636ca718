"""Images that need the store's credentials (``ImageAuth``), through HTTP: the connector's headers reach only the
image's own origin, the photo is kept and served at ``file_url`` (browsers lack the credentials), nothing of the
credentials reaches a shopper, and a changed URL drops the kept photo."""

from __future__ import annotations

import asyncio
import types
from typing import Any

import pytest

from hub.connectors import ImageAuth, same_origin
from hub.hookspecs import hookimpl
from hub.plugin_manager import load_plugins, register
from tests.conftest import serve_app, wait_for_images, wait_job
from tests.feed_platform import FeedPlatform, signed
from tests.images import photo

KEY = "image-key-7f3a9c2e51"


@pytest.fixture
def settings_overrides():
    return {"secret_key": "a-long-random-secret-key-for-tests", "allow_private_fetch": True}


@pytest.fixture
def stores():
    keyed, other = FeedPlatform(page_size=25), FeedPlatform()
    keyed.image_key, keyed.elsewhere = KEY, other.base
    for pid in (1, 2):
        keyed.put(pid, [pid])
    keyed.put(3, [], images=[{"id": "away", "url": f"{keyed.base}/img/away/33.jpg", "alt": ""}])
    yield keyed, other
    keyed.close()
    other.close()


def keyed_plugins():
    """The example connector plus a third-party-style one whose store wants a key for its images."""
    plugins = load_plugins()
    example = type(plugins.connectors()["example"])

    class Keyed(example):
        name = "keyed"

        def image_headers(self, settings: Any, url: str) -> dict[str, str]:
            return {"X-Image-Key": KEY} if same_origin(url, settings.feed_url) else {}

    assert isinstance(Keyed(), ImageAuth)
    module = types.ModuleType("keyed_plugin")
    module.hub_connectors = hookimpl(lambda: [Keyed()])
    module.hub_connectors.__name__ = "hub_connectors"
    register(plugins, module, "keyed")
    return plugins


async def images_of(client, headers) -> dict[str, dict[str, Any]]:
    items = (await client.get("/api/v1/images", params={"limit": 100}, headers=headers)).json()["items"]
    return {i["image_url"].rsplit("/", 1)[1]: i for i in items}


async def test_credentialed_images_are_fetched_kept_and_served_without_the_credentials(settings, make_shop_for,
                                                                                       stores):
    keyed, other = stores
    async with serve_app(settings, plugins=keyed_plugins()) as client:
        shop = await make_shop_for(client)
        conn = (await client.post("/api/v1/connections", headers=shop.secret, json={
            "connector": "keyed", "settings": keyed.settings()})).json()
        assert (await wait_job(client, shop.secret, conn["sync_job"]["id"]))["status"] == "succeeded"
        images = await images_of(client, shop.secret)
        await wait_for_images(client, shop.secret, [i["id"] for i in images.values()], {"ready"})
        images = await images_of(client, shop.secret)

        # the key went to the store's own image host, never to the host a redirect led to
        assert all(h.get("x-image-key") == KEY for h in keyed.image_headers)
        assert other.image_headers and not any("x-image-key" in h for h in other.image_headers)
        # the image fetcher keeps no cookies: one host's session never rides along with another fetch
        assert not any("cookie" in h for h in keyed.image_headers + other.image_headers)

        # a keyed photo is kept by the hub and served at file_url to a publishable key (a browser)
        kept = images["1.jpg"]
        assert kept["file_url"], kept
        served = await client.get(kept["file_url"], params={"key": shop["publishable_key"]})
        assert served.status_code == 200 and served.content == photo(1)
        # the redirected one was asked for with credentials too (the store's own URL): kept as well
        assert images["33.jpg"]["file_url"]

        # nothing a shopper gets carries the key
        ranked = await client.post("/api/v1/recommendations", json={"prompt": "a dress", "limit": 10},
                                   headers=shop.publishable)
        assert ranked.status_code == 200 and len(ranked.json()["results"]) == 3
        assert KEY not in ranked.text and KEY not in (await client.get("/api/v1/images", headers=shop.secret)).text

        # a new picture at a new URL: the photo kept from the old one goes, the new one is kept
        kept_dir = settings.media_dir / str(shop["id"]) / "kept"
        before = {p.name for p in kept_dir.iterdir()}
        assert sorted(name.split("-")[0] for name in before) == sorted(str(i["id"]) for i in images.values())
        body, headers = signed({"event": "product.updated", "delivery_id": "new-photo",
                                "product": keyed.put(1, [], updated_at="2026-11-02T09:00:00", images=[
                                    {"id": "img1", "url": f"{keyed.base}/img/41.jpg", "alt": ""}])})
        assert (await client.post(f"/webhooks/keyed/{conn['id']}", content=body, headers=headers)).status_code == 200
        for _ in range(600):
            now = await images_of(client, shop.secret)
            if now.get("41.jpg", {}).get("status") == "ready":
                break
            await asyncio.sleep(0.1)
        replaced = now["41.jpg"]
        assert replaced["id"] == kept["id"]  # the same image of the product, re-embedded
        assert (await client.get(replaced["file_url"], params={"key": shop["publishable_key"]})).content == photo(41)
        for _ in range(100):  # the old file is removed after the change commits
            after = {p.name for p in kept_dir.iterdir()}
            if len(after) == 3:
                break
            await asyncio.sleep(0.05)
        assert len(after) == 3 and len(after - before) == 1 and (before - after) == {
            n for n in before if n.startswith(f"{kept['id']}-")}


async def test_without_the_capability_the_same_store_fails_with_its_reason(client, shop, stores):
    keyed, _ = stores
    conn = (await client.post("/api/v1/connections", headers=shop.secret, json={
        "connector": "example", "settings": keyed.settings()})).json()
    assert (await wait_job(client, shop.secret, conn["sync_job"]["id"]))["status"] == "succeeded"
    images = await images_of(client, shop.secret)
    done = await wait_for_images(client, shop.secret, [i["id"] for i in images.values()])
    failed = [i for i in done.values() if i["status"] == "failed"]
    assert len(failed) == 2 and all("HTTP 401" in i["error"] for i in failed)
