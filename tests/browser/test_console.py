"""The merchant console in a real browser: sign-in (a password field; a publishable key refused), CSRF refusal,
an upload that reaches ``ready`` on the overview without a reload, a prompt with ranked thumbnails, creating and
revoking keys, sign-out."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from tests.browser.conftest import readme_screenshot
from tests.images import photo
from tests.live import live_hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, test_model: Path) -> Iterator[Any]:
    with live_hub(tmp_path_factory.mktemp("console"), test_model) as running:
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
    await page.locator("input[type=file]").set_input_files(str(upload))
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
