"""What the storefront widget relies on, through HTTP: ``/widget.js``, CORS on the storefront endpoints only, a
shop's ``allowed_origins`` (``PATCH /api/v1/shop``), secret keys refused from other sites' pages, and a limit per
publishable key and client address. The widget itself runs in a real browser in ``tests/browser``."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for_images
from tests.images import photo

SITE = "https://widget-boutique.example"


async def test_the_widget_script_is_served_small_cacheable_and_revalidated(client):
    resp = await client.get("/widget.js")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/javascript")
    assert len(resp.content) < 20_000 and b"fashion-hub-search" in resp.content
    assert resp.headers["cache-control"] == "public, max-age=300" and resp.headers["etag"]
    again = await client.get("/widget.js", headers={"If-None-Match": resp.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


async def test_storefront_endpoints_answer_other_origins_and_others_do_not(client, shop):
    preflight = await client.options("/api/v1/recommendations", headers={
        "Origin": SITE, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == SITE
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    assert "POST" in preflight.headers["access-control-allow-methods"]
    asked = await client.post("/api/v1/recommendations", json={"prompt": "dress"},
                              headers={**shop.publishable, "Origin": SITE})
    assert asked.status_code == 200 and asked.headers["access-control-allow-origin"] == SITE
    assert "server-timing" in asked.headers["access-control-expose-headers"].lower()
    # the shop's own API is not for other sites' pages: no CORS there
    for path in ("/api/v1/shop", "/api/v1/images", "/api/v1/keys"):
        other = await client.options(path, headers={"Origin": SITE, "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in other.headers, path


async def test_a_secret_key_from_another_sites_page_is_refused(client, shop, settings):
    resp = await client.post("/api/v1/recommendations", json={"prompt": "dress"},
                             headers={**shop.secret, "Origin": SITE})
    assert resp.status_code == 403 and "publishable key" in resp.json()["detail"]
    assert resp.headers["access-control-allow-origin"] == SITE  # so the page can read why
    # the hub's own pages (same origin) and servers (no Origin) may use it
    own = await client.post("/api/v1/recommendations", json={"prompt": "dress"},
                            headers={**shop.secret, "Origin": settings.public_url})
    assert own.status_code == 200
    assert (await client.post("/api/v1/recommendations", json={"prompt": "dress"},
                              headers=shop.secret)).status_code == 200


async def test_allowed_origins_keep_other_sites_out(client, shop, make_shop):
    listed = await client.patch("/api/v1/shop", json={"allowed_origins": [f"{SITE}/", "HTTPS://Other.Example:443"]},
                                headers=shop.secret)
    assert listed.status_code == 200, listed.text
    assert listed.json()["allowed_origins"] == [SITE, "https://other.example"]
    assert (await client.get("/api/v1/shop", headers=shop.secret)).json()["allowed_origins"] == [
        SITE, "https://other.example"]
    for origin, status in ((SITE, 200), ("https://other.example", 200), ("https://copycat.example", 403),
                           ("http://widget-boutique.example", 403)):
        resp = await client.post("/api/v1/recommendations", json={"prompt": "dress"},
                                 headers={**shop.publishable, "Origin": origin})
        assert resp.status_code == status, (origin, resp.text)
        if status == 403:
            assert "not allowed on" in resp.json()["detail"] and origin in resp.json()["detail"]
    # without an Origin (a server, a script) the key works as before; another shop is not affected
    assert (await client.post("/api/v1/recommendations", json={"prompt": "x"},
                              headers=shop.publishable)).status_code == 200
    other = await make_shop("Another")
    assert (await client.post("/api/v1/recommendations", json={"prompt": "x"},
                              headers={**other.publishable, "Origin": "https://copycat.example"})).status_code == 200
    cleared = await client.patch("/api/v1/shop", json={"allowed_origins": []}, headers=shop.secret)
    assert cleared.json()["allowed_origins"] == []
    assert (await client.post("/api/v1/recommendations", json={"prompt": "x"},
                              headers={**shop.publishable, "Origin": "https://copycat.example"})).status_code == 200


@pytest.mark.parametrize("body", [
    {"allowed_origins": ["https://shop.example/search"]},  # a page, not an origin
    {"allowed_origins": ["*"]},
    {"allowed_origins": ["ftp://shop.example"]},
    {"allowed_origins": ["https://user@shop.example"]},
    {"allowed_origins": ["https://shop.example?x=1"]},
    {"allowed_origins": [f"https://s{n}.example" for n in range(51)]},
    {"allowed_origins": "https://shop.example"},
    {"allowed_origins": [], "theme": "dark"},  # an unknown field is an error, not ignored
    {"name": " "},
])
async def test_a_bad_shop_update_is_400_and_changes_nothing(client, shop, snapshot, body):
    before = await snapshot()
    resp = await client.patch("/api/v1/shop", json=body, headers=shop.secret)
    assert resp.status_code == 400, resp.text
    assert await snapshot() == before


async def test_only_a_secret_key_updates_the_shop(client, shop):
    resp = await client.patch("/api/v1/shop", json={"allowed_origins": []}, headers=shop.publishable)
    assert resp.status_code == 403


@pytest.mark.parametrize("settings_overrides", [{"storefront_rate_limit": "3/minute"}])
async def test_one_address_cannot_use_up_a_publishable_key(client, shop):
    for _ in range(3):
        ok = await client.post("/api/v1/recommendations", json={"prompt": "x"}, headers=shop.publishable)
        assert ok.status_code == 200
    limited = await client.post("/api/v1/recommendations", json={"prompt": "x"}, headers=shop.publishable)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    # the shop's own server, with its secret key, is not a storefront visitor
    assert (await client.post("/api/v1/recommendations", json={"prompt": "x"}, headers=shop.secret)).status_code == 200


async def test_an_image_file_is_served_to_the_widget_with_a_publishable_key(client, shop):
    up = await client.post("/api/v1/images", files={"file": ("a.jpg", photo(5), "image/jpeg")}, headers=shop.secret)
    image = up.json()
    await wait_for_images(client, shop.secret, [image["id"]], {"ready"})  # a storefront sees ready images only
    served = await client.get(f"/api/v1/images/{image['id']}/file", params={"key": shop["publishable_key"]},
                              headers={"Origin": SITE})
    assert served.status_code == 200 and served.content == photo(5)
    assert served.headers["access-control-allow-origin"] == SITE
