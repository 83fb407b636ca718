"""The merchant console in a real browser: sign-in (a password field; a publishable key refused), CSRF refusal,
an upload that reaches ``ready`` on the overview without a reload, a prompt with ranked thumbnails, creating and
revoking keys, sign-out."""

from __future__ import annotations

import email
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from hub.testing import FakePlatform, PlatformHandler
from tests.browser.conftest import eventually, readme_screenshot
from tests.images import photo
from tests.live import live_hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, test_model: Path) -> Iterator[Any]:
    # image hosts on loopback stand in for a shop's (the "host is back" retry below)
    with live_hub(tmp_path_factory.mktemp("console"), test_model, allow_private_fetch="true") as running:
        yield running


@pytest.fixture
def shop(hub: Any, request: pytest.FixtureRequest) -> dict[str, Any]:
    return hub.create_shop("Console Boutique", f"console-{abs(hash(request.node.name))}@shop.example")


async def sign_in_as(page: Any, hub: Any, key: str) -> None:
    await page.goto(hub.base + "/console")
    field = page.get_by_label("Secret key")
    assert await field.get_attribute("type") == "password"
    await field.fill(key)
    await page.get_by_role("button", name="Sign in").click()


async def test_sign_in_upload_watch_it_become_ready_try_it_and_sign_out(page, hub, shop, tmp_path):
    await sign_in_as(page, hub, shop["secret_key"])
    await page.wait_for_url(re.compile(r"/console/overview$"))
    assert await page.get_by_text("Console Boutique").is_visible()
    assert shop["secret_key"] not in await page.content()
    cookie = next(c for c in await page.context.cookies() if c["name"] == "hub_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["value"] not in (shop["secret_key"], shop["publishable_key"])

    # upload through the overview's form; the counts update without a reload until it is ready
    upload = tmp_path / "dress.jpg"
    upload.write_bytes(photo(3, size=(240, 320)))
    await page.get_by_label("Photo", exact=True).set_input_files(str(upload))
    await page.get_by_label("Name").fill("Red floral dress")
    await page.get_by_role("button", name="Upload").click()
    await page.wait_for_url(re.compile(r"/console/overview\?uploaded=\d+$"))
    # (no wait_for_function: the console's Content-Security-Policy forbids the eval it needs)
    await expect(page.locator('[data-count="ready"]')).to_have_text("1", timeout=60_000)
    assert await page.locator('[data-count="total"]').inner_text() == "1"
    # an image added elsewhere (the API) appears on this open page, without a reload
    secret = {"Authorization": f"Bearer {shop['secret_key']}"}
    added = httpx.post(f"{hub.base}/api/v1/images", headers=secret, data={"name": "Blue denim jacket"},
                       files={"file": ("j.jpg", photo(4, size=(240, 320)), "image/jpeg")})
    assert added.status_code == 202
    await expect(page.locator('[data-count="total"]')).to_have_text("2", timeout=30_000)
    await expect(page.locator('[data-count="ready"]')).to_have_text("2", timeout=60_000)
    await readme_screenshot(page, "console-overview.png")

    # try a prompt: ranked thumbnails with scores and timings, served resized by the console
    await page.get_by_role("link", name="Try it").click()
    await page.get_by_label("Prompt").fill("red dress with floral patterns")
    await page.get_by_role("button", name="Search").click()
    results = page.get_by_role("list", name="Ranked results").locator("li")
    await results.first.wait_for()
    assert await results.count() == 2
    assert {await results.nth(n).locator(".name").inner_text() for n in range(2)} == {
        "Red floral dress", "Blue denim jacket"}
    assert re.search(r"\d\.\d{4}", await results.first.locator(".score").inner_text())
    assert "total" in await page.locator("[data-timings]").inner_text()
    # the shop trying its own search is not a shopper: the prompt log (insights) stays the shoppers' own
    assert httpx.get(f"{hub.base}/api/v1/prompts", headers=secret).json()["items"] == []
    thumb = await page.evaluate("""async () => { const img = document.querySelector('.grid img');
        await img.decode(); return [img.naturalWidth, img.naturalHeight, img.src]; }""")
    assert thumb[0] <= 320 and thumb[1] <= 320 and "/console/thumbs/" in thumb[2]
    await readme_screenshot(page, "console-try.png")

    # by words alone: only the image whose text has the word; "Why here" says how it was ranked
    await page.get_by_label("Mode").select_option("lexical")
    await page.get_by_label("Prompt").fill("floral")
    await page.get_by_role("button", name="Search").click()
    await expect(page.locator("[data-applied]")).to_have_text("lexical")
    assert await results.count() == 1 and await results.first.locator(".name").inner_text() == "Red floral dress"
    await results.first.get_by_text("Why here").click()
    assert (await results.first.locator(".steps").inner_text()).startswith("lexical: words score ")
    # both sides, all the weight on words: the word match first, then the rest by looks
    await page.get_by_label("Mode").select_option("hybrid")
    await page.get_by_label("Weight of words").fill("1")
    await page.get_by_role("button", name="Search").click()
    await expect(page.locator("[data-applied]")).to_have_text("hybrid, words 1")
    assert [await results.nth(n).locator(".name").inner_text() for n in range(2)] == [
        "Red floral dress", "Blue denim jacket"]
    # a weight out of range is refused with the reason, nothing ranked
    await page.goto(hub.base + "/console/try?prompt=floral&weight=2")
    assert "from 0 to 1" in await page.get_by_role("alert").inner_text()

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(re.compile(r"/console$"))
    assert await page.get_by_label("Secret key").is_visible()
    # the old session is over: its pages send the browser back to sign in
    await page.goto(hub.base + "/console/keys")
    assert await page.get_by_label("Secret key").is_visible()


async def test_a_publishable_or_wrong_key_cannot_sign_in(page, hub, shop):
    await sign_in_as(page, hub, shop["publishable_key"])
    assert "publishable key cannot sign in" in await page.get_by_role("alert").inner_text()
    await sign_in_as(page, hub, "hub_sk_not-a-real-key")
    assert "does not open this console" in await page.get_by_role("alert").inner_text()
    assert not [c for c in await page.context.cookies() if c["name"] == "hub_console"]


async def test_forms_without_the_csrf_token_change_nothing(page, hub, shop):
    await sign_in_as(page, hub, shop["secret_key"])
    await page.wait_for_url(re.compile(r"/console/overview$"))
    secret = {"Authorization": f"Bearer {shop['secret_key']}"}
    keys_before = httpx.get(f"{hub.base}/api/v1/keys", headers=secret).json()
    # a form posted by the signed-in browser, as another page would make it post: no token, a wrong token
    for token in (None, "forged"):
        status = await page.evaluate("""async (token) => {
            const body = new URLSearchParams({name: 'sneaky', kind: 'secret'});
            if (token) body.set('csrf', token);
            const r = await fetch('/console/keys', {method: 'POST', body, credentials: 'same-origin'});
            return [r.status, await r.text()];
        }""", token)
        assert status[0] == 403 and "nothing was changed" in status[1]
    assert httpx.get(f"{hub.base}/api/v1/keys", headers=secret).json() == keys_before
    # and the sign-in form without its token
    status = await page.evaluate("""async (key) => {
        const r = await fetch('/console/sign-in', {method: 'POST', body: new URLSearchParams({key})});
        return r.status; }""", shop["secret_key"])
    assert status == 403


async def test_create_a_key_shown_once_then_revoke_it(page, hub, shop):
    await sign_in_as(page, hub, shop["secret_key"])
    await page.get_by_role("link", name="Keys").click()
    await page.get_by_label("Name").fill("storefront 2")
    await page.get_by_role("button", name="Create key").click()
    new_key = await page.locator("[data-new-key]").input_value()
    assert new_key.startswith("hub_pk_")
    ranked = httpx.post(f"{hub.base}/api/v1/recommendations", json={"prompt": "x"},
                        headers={"Authorization": f"Bearer {new_key}"})
    assert ranked.status_code == 200
    await page.goto(hub.base + "/console/keys")
    assert new_key not in await page.content()  # shown once
    row = page.locator("tr", has_text="storefront 2")
    page.once("dialog", lambda dialog: dialog.accept())
    await row.get_by_role("button", name="Revoke").click()
    await page.wait_for_url(re.compile(r"/console/keys$"))
    assert "revoked" in await page.locator("tr", has_text="storefront 2").inner_text()
    refused = httpx.post(f"{hub.base}/api/v1/recommendations", json={"prompt": "x"},
                         headers={"Authorization": f"Bearer {new_key}"})
    assert refused.status_code == 401


async def test_catalog_filters_detail_edit_and_retry_when_the_host_is_back(page, hub, shop):
    secret = {"Authorization": f"Bearer {shop['secret_key']}"}
    host_is_up = {"up": False}

    class Host(PlatformHandler):
        def do_GET(self) -> None:  # noqa: N802
            if host_is_up["up"]:
                self.send(200, photo(9, size=(240, 320)), "image/jpeg")
            else:
                self.send_json(404, {"error": "not here (yet)"})

    with FakePlatform(Host) as host:
        for n, name in enumerate(["Green wool scarf", "Black leather boots"]):
            up = httpx.post(f"{hub.base}/api/v1/images", headers=secret, data={"name": name},
                            files={"file": (f"{n}.jpg", photo(20 + n, size=(240, 320)), "image/jpeg")})
            assert up.status_code == 202
        lost = httpx.post(f"{hub.base}/api/v1/images/from-url", headers=secret,
                          json={"image_url": f"{host.base}/coat.jpg", "name": "Camel coat"}).json()
        def settled() -> list[dict[str, Any]] | None:
            items = httpx.get(f"{hub.base}/api/v1/images", headers=secret).json()["items"]
            return items if {i["status"] for i in items} <= {"ready", "failed"} else None

        items = await eventually(settled, "the images ending ready or failed")
        assert {i["name"]: i["status"] for i in items} == {
            "Green wool scarf": "ready", "Black leather boots": "ready", "Camel coat": "failed"}

        await sign_in_as(page, hub, shop["secret_key"])
        await page.get_by_role("link", name="Catalog").click()
        tiles = page.get_by_role("list", name="Images").locator("li")
        await expect(tiles).to_have_count(3)
        await page.get_by_label("Status").select_option("failed")
        await page.get_by_role("button", name="Filter").click()
        await expect(tiles).to_have_count(1)
        assert "Camel coat" in await tiles.first.inner_text() and "failed" in await tiles.first.inner_text()
        await page.get_by_label("Status").select_option("")
        await page.get_by_label("Name").fill("boots")
        await page.get_by_role("button", name="Filter").click()
        await expect(tiles).to_have_count(1)
        assert "Black leather boots" in await tiles.first.inner_text()
        await readme_screenshot(page, "console-catalog.png")

        # the failed one says why; the host comes back; retry it from its page
        await page.goto(f"{hub.base}/console/images/{lost['id']}")
        assert "HTTP 404" in await page.locator("[data-error]").inner_text()
        host_is_up["up"] = True
        await page.get_by_role("button", name="Retry").click()
        async def shows_ready() -> bool:
            await page.goto(f"{hub.base}/console/images/{lost['id']}")
            return await page.locator("dd[data-status]").inner_text() == "ready"

        await eventually(shows_ready, "the retried image's page showing it ready", timeout=30)
        # fetched from its URL, the thumbnail is made by the console (resized, kept)
        size = await page.evaluate("""async () => { const img = document.querySelector('.detail img');
            await img.decode(); return [img.naturalWidth, img.naturalHeight]; }""")
        assert max(size) <= 320
        similar = page.get_by_role("list", name="More like this").locator("li")
        await expect(similar).to_have_count(2)

        # edit its details: the API sees them
        await page.get_by_label("Name").fill("Camel wool coat")
        await page.get_by_label("Category").select_option(label="Jackets & Coats")
        await page.get_by_role("button", name="Save").click()
        await expect(page.get_by_role("status")).to_have_text("Saved.")
        saved = httpx.get(f"{hub.base}/api/v1/images/{lost['id']}", headers=secret).json()
        assert saved["name"] == "Camel wool coat" and saved["category"]["name"] == "Jackets & Coats"


async def test_insights_plot_top_and_weak_prompts_after_some_queries(page, hub, shop):
    secret = {"Authorization": f"Bearer {shop['secret_key']}"}
    storefront = {"Authorization": f"Bearer {shop['publishable_key']}"}
    up = httpx.post(f"{hub.base}/api/v1/images", headers=secret, data={"name": "Red floral dress"},
                    files={"file": ("d.jpg", photo(7, size=(240, 320)), "image/jpeg")})
    await eventually(lambda: httpx.get(f"{hub.base}/api/v1/images/{up.json()['id']}", headers=secret)
                     .json()["status"] == "ready", "the uploaded image ready")
    asked = ["red dress"] * 3 + ["Red  Dress", "linen trousers", "=HYPERLINK(\"x\")"]
    for prompt in asked:
        assert httpx.post(f"{hub.base}/api/v1/recommendations", headers=storefront,
                          json={"prompt": prompt, "limit": 5}).status_code == 200
    # a category that has nothing yet: no result at all
    dresses = next(c for c in httpx.get(f"{hub.base}/api/v1/categories", headers=secret).json()["items"]
                   if c["name"] == "Swimwear")
    assert httpx.post(f"{hub.base}/api/v1/recommendations", headers=storefront, json={
        "prompt": "swimsuit", "filters": {"category_id": dresses["id"]}}).json()["count"] == 0

    await sign_in_as(page, hub, shop["secret_key"])
    await page.get_by_role("link", name="Insights").click()
    assert "7 prompts" in await page.locator(".meta").inner_text()
    bars = page.locator("[data-plot] rect")
    assert await bars.count() == 30
    assert await bars.last.get_attribute("data-count") == "7"  # today
    top = page.locator("[data-top] tbody tr")
    assert (await top.first.inner_text()).split("\t")[:2] == ["red dress", "4"]  # case and spaces folded
    weak = await page.locator("[data-weak] tbody").inner_text()
    assert weak.splitlines()[0].startswith("swimsuit") and "no result" in weak.splitlines()[0]
    assert "category_id: 1" in await page.get_by_role("region", name="Filters used").inner_text()
    await readme_screenshot(page, "console-insights.png")

    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download the prompt log (CSV)").click()
    download = await download_info.value
    text = Path(await download.path()).read_text()
    lines = text.splitlines()
    assert lines[0] == "created_at,prompt,num_recommended,result_count,top_score,filters" and len(lines) == 8
    assert "'=HYPERLINK" in text  # never a formula in a spreadsheet


async def test_connect_stores_with_forms_see_syncs_and_deliveries_then_disconnect(page, hub, shop):
    from tests.feed_platform import FeedPlatform, signed
    from tests.woo_platform import KEY, SECRET, WooEmulator

    secret = {"Authorization": f"Bearer {shop['secret_key']}"}
    woo, feed = WooEmulator(), FeedPlatform(page_size=2)
    for pid in (1, 2):
        woo.put(pid, [30 + pid])
    for pid in (1, 2, 3):
        feed.put(pid, [40 + pid])
    try:
        await sign_in_as(page, hub, shop["secret_key"])
        await page.get_by_role("link", name="Connections", exact=True).click()

        # WooCommerce, with the form its settings model gives (credentials as password fields)
        await page.locator("summary", has_text="woocommerce").click()
        form = page.locator('form[data-connector="woocommerce"]')
        assert await form.get_by_label("Consumer Secret").get_attribute("type") == "password"
        await form.get_by_label("Name").fill("My Woo store")
        await form.get_by_label("Store Url").fill(woo.base)
        await form.get_by_label("Consumer Key").fill(KEY)
        await form.get_by_label("Consumer Secret").fill(SECRET)
        await form.get_by_role("button", name="Connect").click()
        await page.wait_for_url(re.compile(r"/console/connections/\d+$"))
        assert "My Woo store" in await page.locator("h1").inner_text()
        assert SECRET not in await page.content()
        woo_id = int(page.url.rsplit("/", 1)[1])
        def sync_finished() -> bool:
            jobs = httpx.get(f"{hub.base}/api/v1/jobs", headers=secret, params={"connection_id": woo_id}).json()
            return bool(jobs["items"]) and jobs["items"][0]["status"] in ("succeeded", "failed")

        await eventually(sync_finished, "the WooCommerce store's first sync finishing")
        assert len(httpx.get(f"{hub.base}/api/v1/images", headers=secret).json()["items"]) == 2
        await page.reload()
        assert "succeeded" in await page.locator("[data-syncs]").inner_text()

        # the example feed connector: deliveries, a duplicate, a schedule, a re-sync, then disconnect
        await page.get_by_role("link", name="Connections", exact=True).click()
        await page.locator("summary", has_text="example").click()
        form = page.locator('form[data-connector="example"]')
        await form.get_by_label("Feed Url").fill(feed.feed_url)
        await form.get_by_label("Webhook Secret").fill(feed.settings()["webhook_secret"])
        await form.get_by_role("button", name="Connect").click()
        await page.wait_for_url(re.compile(r"/console/connections/\d+$"))
        connection_id = int(page.url.rsplit("/", 1)[1])
        body, headers = signed({"event": "product.updated", "delivery_id": "d-1",
                                "product": feed.put(4, [44], updated_at="2026-11-02T09:00:00")})
        for _ in range(2):  # the platform sends it again: answered, not applied twice
            assert httpx.post(f"{hub.base}/webhooks/example/{connection_id}", content=body,
                              headers=headers).status_code == 200
        await page.reload()
        rows = page.locator("[data-deliveries] tr")
        await expect(rows).to_have_count(1)
        cells = [await rows.first.locator("td").nth(n).inner_text() for n in range(4)]
        assert cells[1] == "product.updated" and cells[2] in ("received", "processing", "processed")
        assert cells[3] == "1"  # the second one was a duplicate
        await page.get_by_label("Scheduled sync every").fill("60")
        await page.get_by_role("button", name="Save").click()
        await page.get_by_role("button", name="Sync now").click()
        await expect(page.locator("[data-syncs] tr")).to_have_count(2)
        await page.get_by_role("link", name="Connections", exact=True).click()
        assert "every 60 min" in await page.locator("[data-connections-list]").inner_text()
        await readme_screenshot(page, "console-connections.png")
        await page.get_by_role("link", name=re.compile("example")).first.click()
        page.once("dialog", lambda dialog: dialog.accept())
        await page.get_by_role("button", name="Disconnect").click()
        await page.wait_for_url(re.compile(r"/console/connections$"))
        listed = httpx.get(f"{hub.base}/api/v1/connections", headers=secret).json()["items"]
        assert [c["connector"] for c in listed] == ["woocommerce"]
    finally:
        woo.close()
        feed.close()


async def test_manage_the_taxonomy(page, hub, shop):
    secret = {"Authorization": f"Bearer {shop['secret_key']}"}
    await sign_in_as(page, hub, shop["secret_key"])
    await page.get_by_role("link", name="Taxonomy").click()
    styles = page.get_by_role("region", name="Styles")
    await styles.get_by_label("New style").fill("Preppy")
    await styles.get_by_role("button", name="Add").click()
    await page.wait_for_url(re.compile(r"/console/taxonomy$"))
    await page.get_by_role("region", name="Styles").get_by_label("Name of Preppy").fill("Prep school")
    await page.get_by_role("region", name="Styles").locator("tr", has=page.get_by_label("Name of Preppy")) \
        .get_by_role("button", name="Rename").click()
    names = [s["name"] for s in httpx.get(f"{hub.base}/api/v1/styles", headers=secret).json()["items"]]
    assert "Prep school" in names and "Preppy" not in names
    # a name that exists already, whatever its case: refused with the reason, nothing changed
    await page.get_by_role("region", name="Styles").get_by_label("New style").fill("casual")
    await page.get_by_role("region", name="Styles").get_by_role("button", name="Add").click()
    assert "already exists" in await page.get_by_role("alert").inner_text()
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Delete Prep school").click()
    await page.wait_for_url(re.compile(r"/console/taxonomy$"))
    after = [s["name"] for s in httpx.get(f"{hub.base}/api/v1/styles", headers=secret).json()["items"]]
    assert "Prep school" not in after and len(after) == len(names) - 1


async def test_import_a_zip_and_follow_its_progress(page, hub, shop, tmp_path):
    import zipfile

    archive = tmp_path / "catalog.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for n in range(3):
            zf.writestr(f"look-{n}.jpg", photo(50 + n, size=(240, 320)))
        zf.writestr("manifest.csv", "file,name\nlook-0.jpg,Linen shirt\nlook-1.jpg,Wool coat\nlook-2.jpg,Silk scarf\n")
    await sign_in_as(page, hub, shop["secret_key"])
    await page.get_by_label("A ZIP of photos").set_input_files(str(archive))
    await page.get_by_role("button", name="Import").click()
    await page.wait_for_url(re.compile(r"/console/overview\?import=\d+$"))
    job = page.locator("[data-jobs] li").first
    assert "import #" in await job.inner_text()
    await expect(job.locator("[data-status]")).to_have_text("succeeded", timeout=60_000)
    assert "3 done, 0 failed of 3" in await job.inner_text()
    await expect(page.locator('[data-count="ready"]')).to_have_text("3", timeout=60_000)
    secret = {"Authorization": f"Bearer {shop['secret_key']}"}
    names = {i["name"] for i in httpx.get(f"{hub.base}/api/v1/images", headers=secret).json()["items"]}
    assert names == {"Linen shirt", "Wool coat", "Silk scarf"}


async def test_sign_in_with_a_link_mailed_to_the_shop(page, hub, shop):
    mailed = len(hub.outbox)
    await page.goto(hub.base + "/console")
    await page.get_by_label("Or get a sign-in link").fill("nobody@unknown.example")
    await page.get_by_role("button", name="Email me a link").click()
    notice = await page.get_by_role("status").inner_text()
    assert "If a shop uses this address" in notice and len(hub.outbox) == mailed  # no hint, no mail

    await page.get_by_label("Or get a sign-in link").fill(shop["email"].upper())
    await page.get_by_role("button", name="Email me a link").click()
    assert await page.get_by_role("status").inner_text() == notice  # the same answer
    await eventually(lambda: len(hub.outbox) > mailed, "the sign-in link mailed", timeout=10)
    recipients, raw = hub.outbox[-1]
    assert recipients == [shop["email"]]
    text = email.message_from_string(raw).get_payload(decode=True).decode()
    link = re.search(r"http://\S+/console/link\?token=[\w-]+", text).group(0)

    await page.goto(link)  # what a mail scanner sees too: a button, nothing used yet
    assert "Console Boutique" in await page.locator("h1").inner_text()
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(re.compile(r"/console/overview$"))
    assert await page.get_by_text("Console Boutique").is_visible()
    await page.get_by_role("button", name="Sign out").click()
    await page.goto(link)  # used once: never again
    assert "used already or has expired" in await page.get_by_role("alert").inner_text()


async def test_install_a_shopify_store_through_the_app_from_the_console(page, tmp_path, test_model):
    """The operator's public app configured; the merchant names the store, approves on Shopify (its emulator
    answers the approval as Shopify would) and lands back on the new connection's console page."""
    from tests.shopify_platform import APP_CLIENT_ID, APP_CLIENT_SECRET, DOMAIN, ShopifyEmulator

    shopify = ShopifyEmulator()
    shopify.put(1, [61])
    try:
        with live_hub(tmp_path / "hub", test_model, allow_private_fetch="true", shopify_api_url=shopify.base,
                      shopify_client_id=APP_CLIENT_ID, shopify_client_secret=APP_CLIENT_SECRET) as hub:
            shop = hub.create_shop("App Boutique", "app@shop.example")
            await sign_in_as(page, hub, shop["secret_key"])
            await page.get_by_role("link", name="Connections", exact=True).click()
            await page.locator("summary", has_text="shopify").click()
            install = page.locator('form[data-oauth="shopify"]')
            await install.get_by_label("Shop Domain").fill(DOMAIN)
            await install.get_by_role("button", name="Install the app").click()
            link = page.locator("[data-authorize]")
            approval = await link.get_attribute("href")
            assert approval.startswith(f"{shopify.base}/admin/oauth/authorize?")
            await page.goto(shopify.approve(approval))  # Shopify sends the merchant back with its signed code
            await page.wait_for_url(re.compile(r"/console/connections/\d+$"))
            assert "shopify" in await page.locator("h1").inner_text()
            secret = {"Authorization": f"Bearer {shop['secret_key']}"}
            [connection] = httpx.get(f"{hub.base}/api/v1/connections", headers=secret).json()["items"]
            assert connection["installed_via"] == "app" and connection["settings"]["shop_domain"] == DOMAIN
    finally:
        shopify.close()


async def test_search_settings_and_merchandising_rules(page, hub, shop):
    secret = {"Authorization": f"Bearer {shop['secret_key']}"}
    up = httpx.post(f"{hub.base}/api/v1/images", files={"file": ("a.jpg", photo(91), "image/jpeg")},
                    data={"name": "Scarf"}, headers=secret, timeout=30)
    assert up.status_code == 202, up.text
    await sign_in_as(page, hub, shop["secret_key"])
    await page.get_by_role("link", name="Search").click()
    ranking = page.get_by_role("region", name="Ranking")
    await ranking.get_by_label("Mode").select_option("lexical")
    await ranking.get_by_label("Weight of words (0 to 1)").fill("0.7")
    await ranking.get_by_role("button", name="Save").click()
    await page.wait_for_url(re.compile(r"/console/search$"))
    me = httpx.get(f"{hub.base}/api/v1/shop", headers=secret).json()
    assert (me["search_mode"], me["lexical_weight"]) == ("lexical", 0.7)

    synonyms = page.get_by_role("region", name="Synonyms")
    await synonyms.get_by_label("Words that mean the same, separated by commas").fill("jumper, sweater")
    await synonyms.get_by_role("button", name="Add synonyms").click()
    await expect(page.get_by_role("region", name="Synonyms")).to_contain_text("jumper ⇄ sweater")
    # refused with the API's reason, nothing stored
    await page.get_by_role("region", name="Synonyms").get_by_label(
        "Words that mean the same, separated by commas").fill("red dress, gown")
    await page.get_by_role("region", name="Synonyms").get_by_role("button", name="Add synonyms").click()
    assert "single words" in await page.get_by_role("alert").inner_text()

    await page.get_by_role("region", name="Boosts").get_by_role("button", name="Add boost").click()
    await page.wait_for_url(re.compile(r"/console/search$"))
    hidden = page.get_by_role("region", name="Hidden")
    await hidden.get_by_label("Hidden: product id (or “image 12”)").fill(f"image {up.json()['id']}")
    await hidden.get_by_role("button", name="Hide").click()
    await expect(page.get_by_role("region", name="Hidden")).to_contain_text("every query")
    rules = httpx.get(f"{hub.base}/api/v1/rules", headers=secret).json()["items"]
    assert [(r["kind"], r["words"], r["condition"], r["image_id"]) for r in rules] == [
        ("synonyms", ["jumper", "sweater"], None, None), ("boost", [], "in_stock", None),
        ("hide", [], None, up.json()["id"])]

    await page.get_by_role("button", name="Delete jumper ⇄ sweater").click()
    await page.wait_for_url(re.compile(r"/console/search$"))
    assert [r["kind"] for r in httpx.get(f"{hub.base}/api/v1/rules", headers=secret).json()["items"]] == \
        ["boost", "hide"]
