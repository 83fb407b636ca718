"""The storefront widget in a real browser, on a page served from another origin than the hub — exactly the
embed the README and the console give shops: results for a prompt, links to products, keyboard navigation, a
secret key refused before anything is sent, a shop's ``allowed_origins`` enforced, and a search by the shopper's
photo."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.testing import FakePlatform, PlatformHandler
from tests.browser.conftest import readme_screenshot
from tests.images import photo
from tests.live import live_hub

NAMES = ["Red floral dress", "Blue denim jacket", "Black leather boots", "White linen shirt", "Green wool scarf",
         "Yellow summer skirt"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, test_model: Path) -> Iterator[Any]:
    with live_hub(tmp_path_factory.mktemp("widget"), test_model) as running:
        yield running


@pytest.fixture(scope="module")
def shop(hub: Any) -> dict[str, Any]:
    """A shop with six photographed products, all ready."""
    shop = hub.create_shop("Widget Boutique", "widget@shop.example")
    secret = {"Authorization": f"Bearer {shop['secret_key']}"}
    ids = []
    for n, name in enumerate(NAMES):
        resp = httpx.post(f"{hub.base}/api/v1/images", headers=secret, timeout=30,
                          files={"file": (f"{n}.jpg", photo(n, size=(240, 320)), "image/jpeg")},
                          data={"name": name, "product_url": f"https://widget-boutique.example/p/{n}"})
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])
    for _ in range(600):
        items = httpx.get(f"{hub.base}/api/v1/images", headers=secret, params={"limit": 100}).json()["items"]
        if len(items) == len(ids) and all(i["status"] == "ready" for i in items):
            return shop
        time.sleep(0.1)
    raise AssertionError(f"images not ready: {items}")


@pytest.fixture(scope="module")
def storefront(hub: Any, shop: dict[str, Any]) -> Iterator[FakePlatform]:
    """The shop's own site, on another origin: a page with the embed, and one with a secret key by mistake."""

    def page_with(key: str) -> bytes:
        return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Widget Boutique</title>"
                f"<style>body{{font-family:sans-serif;margin:24px;--fh-accent:#be123c}}</style></head><body>"
                f"<h1>Widget Boutique</h1><fashion-hub-search limit=\"6\"></fashion-hub-search>"
                f"<script src=\"{hub.base}/widget.js\" data-key=\"{key}\" async></script></body></html>").encode()

    class Site(PlatformHandler):
        def do_GET(self) -> None:  # noqa: N802
            pages = {"/": shop["publishable_key"], "/secret": shop["secret_key"]}
            if self.route in pages:
                self.send(200, page_with(pages[self.route]), "text/html; charset=utf-8")
            else:
                self.send_json(404, {"error": "not found"})

    with FakePlatform(Site) as site:
        yield site


async def search(page: Any, text: str) -> Any:
    box = page.locator("fashion-hub-search input[type=search]")
    await box.fill(text)
    return box


async def test_the_widget_shows_ranked_products_from_another_origin(page, hub, shop, storefront):
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    await page.goto(storefront.base + "/")
    assert storefront.base.split(":")[2] != hub.base.split(":")[2]  # another origin (port)
    await search(page, "red dress with floral patterns")
    links = page.locator("fashion-hub-search a[role=option]")
    await links.first.wait_for()
    assert await links.count() == 6
    hrefs = {await links.nth(n).get_attribute("href") for n in range(6)}
    assert hrefs == {f"https://widget-boutique.example/p/{n}" for n in range(6)}
    names = {await links.nth(n).inner_text() for n in range(6)}
    assert names == set(NAMES)
    # every picture loaded (served by the hub to the publishable key)
    await page.wait_for_function("""() => [...document.querySelector('fashion-hub-search').shadowRoot
        .querySelectorAll('ul img')].every(img => img.complete && img.naturalWidth > 0)""")
    status = page.locator("fashion-hub-search [role=status]")
    assert await status.inner_text() == "6 products"
    assert any(url.startswith(hub.base + "/api/v1/recommendations") for url in seen)
    assert not any(shop["secret_key"] in url for url in seen)
    await readme_screenshot(page, "widget.png")

    # keyboard: down from the box into the grid, along it, back up to the box
    box = page.locator("fashion-hub-search input[type=search]")
    await box.focus()
    await page.keyboard.press("ArrowDown")
    focused = "document.querySelector('fashion-hub-search').shadowRoot.activeElement"
    assert await page.evaluate(f"{focused}.getAttribute('role')") == "option"
    first = await page.evaluate(f"{focused}.id")
    await page.keyboard.press("ArrowRight")
    assert await page.evaluate(f"{focused}.id") != first
    await page.keyboard.press("Escape")
    assert await page.evaluate(f"{focused}.tagName") == "INPUT"

    # too short: nothing asked, the grid empties
    await search(page, "r")
    await links.first.wait_for(state="detached")


async def test_a_secret_key_in_a_page_is_refused_before_anything_is_sent(page, hub, shop, storefront):
    sent: list[Any] = []
    page.on("request", lambda request: sent.append(request))
    await page.goto(storefront.base + "/secret")
    status = page.locator("fashion-hub-search [role=status]")
    await status.wait_for()
    await page.wait_for_function("document.querySelector('fashion-hub-search').dataset.state === 'error'")
    assert "publishable key" in await status.inner_text()
    assert await page.locator("fashion-hub-search input[type=search]").is_disabled()
    assert await page.locator("fashion-hub-search button[aria-label='Search by photo']").is_disabled()
    assert not [r for r in sent if "/api/v1/" in r.url]

    # and the hub refuses a secret key that a page sends anyway (from another origin)
    answer = await page.evaluate("""async ([hub, key]) => {
        const r = await fetch(hub + '/api/v1/recommendations', {method: 'POST', headers: {
            'Authorization': 'Bearer ' + key, 'Content-Type': 'application/json'},
            body: JSON.stringify({prompt: 'dress'})});
        return [r.status, (await r.json()).detail];
    }""", [hub.base, shop["secret_key"]])
    assert answer[0] == 403 and "publishable key" in answer[1]


async def test_a_shop_that_lists_its_sites_keeps_others_out(page, hub, shop, storefront):
    secret = {"Authorization": f"Bearer {shop['secret_key']}"}
    async with httpx.AsyncClient(base_url=hub.base, headers=secret) as api:
        elsewhere = await api.patch("/api/v1/shop", json={"allowed_origins": ["https://widget-boutique.example"]})
        assert elsewhere.status_code == 200 and elsewhere.json()["allowed_origins"] == [
            "https://widget-boutique.example"]
        try:
            await page.goto(storefront.base + "/")
            await search(page, "blue jacket")
            await page.wait_for_function("document.querySelector('fashion-hub-search').dataset.state === 'error'")
            text = await page.locator("fashion-hub-search [role=status]").inner_text()
            assert "not allowed" in text and storefront.base in text
            # listed: it works again
            listed = await api.patch("/api/v1/shop", json={"allowed_origins": [
                "https://widget-boutique.example", storefront.base + "/"]})
            assert listed.json()["allowed_origins"] == ["https://widget-boutique.example", storefront.base]
            await page.reload()
            await search(page, "blue jacket")
            await page.locator("fashion-hub-search a[role=option]").first.wait_for()
        finally:
            await api.patch("/api/v1/shop", json={"allowed_origins": []})


async def test_a_shopper_searches_by_photo_alone_and_with_words(page, hub, shop, storefront):
    """The camera button sends the shopper's photo to the by-photo endpoint (cross-origin, publishable key): the
    grid is the API's own ranking for those bytes; words typed next to it narrow it ("this, but in red"); a big
    photo is shrunk in the browser before it is sent; a file the hub cannot read is said to be the photo's
    fault; removing the photo goes back to words."""
    public = {"Authorization": f"Bearer {shop['publishable_key']}"}

    def ranked_by_api(picture: bytes, query: dict[str, Any]) -> list[str]:
        resp = httpx.post(f"{hub.base}/api/v1/recommendations/by-photo", headers=public, timeout=30,
                          files={"file": ("photo.jpg", picture, "image/jpeg")}, data={"query": json.dumps(query)})
        assert resp.status_code == 200, resp.text
        return [item["product_url"] for item in resp.json()["results"]]

    async def shown() -> list[str]:
        links = page.locator("fashion-hub-search a[role=option]")
        return [await links.nth(n).get_attribute("href") for n in range(await links.count())]

    async def answered(after: int) -> dict[str, Any]:
        await page.wait_for_function(f"window.answers.length > {after}")
        await page.wait_for_function("document.querySelector('fashion-hub-search').dataset.state !== 'loading'")
        return await page.evaluate("window.answers[window.answers.length - 1]")

    sent: list[str] = []
    page.on("request", lambda request: sent.append(f"{request.method} {request.url}"))
    await page.goto(storefront.base + "/")
    await page.evaluate("""window.answers = [];
        document.addEventListener('fashion-hub-results', e => window.answers.push(e.detail))""")
    status = page.locator("fashion-hub-search [role=status]")
    chooser = page.locator("fashion-hub-search input[type=file]")
    camera = page.locator("fashion-hub-search button[aria-label='Search by photo']")
    assert await camera.is_visible()

    picture = photo(2, size=(240, 320))  # small: sent as it is
    async with page.expect_file_chooser() as choosing:
        await camera.click()
    await (await choosing.value).set_files(files=[{"name": "me.jpg", "mimeType": "image/jpeg", "buffer": picture}])
    body = await answered(0)
    assert body["prompt"] is None and body["limit"] == 6
    assert await shown() == ranked_by_api(picture, {"limit": 6})
    assert await status.inner_text() == "6 products like your photo"
    assert f"POST {hub.base}/api/v1/recommendations/by-photo" in sent
    assert await page.locator("fashion-hub-search img[alt='Your photo']").is_visible()

    await search(page, "red dress")
    body = await answered(1)
    assert body["prompt"] == "red dress" and body["mode"] == "hybrid"
    assert await shown() == ranked_by_api(picture, {"limit": 6, "prompt": "red dress"})

    # a camera photo (2000 × 1500): shrunk to 512 px on its longer side before it is sent
    await chooser.set_input_files(files=[{"name": "big.jpg", "mimeType": "image/jpeg",
                                          "buffer": photo(3, size=(2000, 1500))}])
    await answered(2)
    size = await page.evaluate("""(() => { const img = document.querySelector('fashion-hub-search').shadowRoot
        .querySelector('img[alt="Your photo"]'); return [img.naturalWidth, img.naturalHeight]; })()""")
    assert size == [512, 384]

    # not a picture the browser or the hub can read: the photo is refused, with the hub's reason
    await chooser.set_input_files(files=[{"name": "odd.png", "mimeType": "image/png", "buffer": b"not a png" * 40}])
    await page.wait_for_function("document.querySelector('fashion-hub-search').dataset.state === 'error'")
    assert (await status.inner_text()).startswith("This photo cannot be searched (")

    # the photo removed: words alone again, through the plain endpoint
    before = len(sent)
    await page.locator("fashion-hub-search button[aria-label='Remove the photo']").click()
    body = await answered(3)
    assert body["prompt"] == "red dress" and await status.inner_text() == "6 products"
    assert f"POST {hub.base}/api/v1/recommendations" in sent[before:]
    assert not any(url.endswith("/by-photo") for url in sent[before:])


async def test_photo_off_hides_the_camera(page, hub, shop, storefront):
    await page.goto(storefront.base + "/")
    widget = page.locator("fashion-hub-search")
    await page.evaluate("""(() => { const old = document.querySelector('fashion-hub-search');
        const again = document.createElement('fashion-hub-search'); again.setAttribute('photo', 'off');
        old.replaceWith(again); })()""")
    await widget.locator("input[type=search]").wait_for()
    assert not await widget.locator("button[aria-label='Search by photo']").is_visible()
