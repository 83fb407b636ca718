"""The console's security through HTTP (its pages are driven in a real browser in ``tests/browser``): cookie
flags, CSRF tokens, sessions that end with their key, another shop's thumbnails, the page headers."""

from __future__ import annotations

import re

import pytest

from tests.conftest import wait_for_images
from tests.images import photo


async def signed_in(client, key: str):
    """Sign in as a browser does: the form's CSRF token and its cookie, then the key."""
    form = await client.get("/console")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    return await client.post("/console/sign-in", data={"csrf": token, "key": key})


async def test_signed_out_pages_send_the_browser_to_sign_in(client):
    for path in ("/console/overview", "/console/try", "/console/keys"):
        resp = await client.get(path)
        assert resp.status_code == 303 and resp.headers["location"] == "/console", path
    assert (await client.get("/console/overview.json")).status_code == 401


async def test_the_session_cookie_and_the_page_headers(client, shop):
    resp = await signed_in(client, shop["secret_key"])
    assert resp.status_code == 303 and resp.headers["location"] == "/console/overview"
    cookie = next(c for c in resp.headers.get_list("set-cookie") if c.startswith("hub_console="))
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Path=/console" in cookie
    assert "Secure" not in cookie  # http here (HUB_PUBLIC_URL); https below
    page = await client.get("/console/overview")
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert shop["secret_key"] not in page.text


@pytest.mark.parametrize("settings_overrides", [{"public_url": "https://hub.example"}])
async def test_over_https_the_cookies_are_secure(client, shop):
    form = await client.get("/console")
    assert "Secure" in form.headers["set-cookie"]
    token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    # (the test client speaks http, so it would not send a Secure cookie back: hand it over as a browser on https)
    client.cookies.set("hub_console_signin", token, path="/console")
    resp = await client.post("/console/sign-in", data={"csrf": token, "key": shop["secret_key"]})
    assert resp.status_code == 303
    assert "Secure" in next(c for c in resp.headers.get_list("set-cookie") if c.startswith("hub_console="))


async def test_revoking_the_key_ends_its_sessions(client, shop):
    another = await client.post("/api/v1/keys", json={"kind": "secret", "name": "laptop"}, headers=shop.secret)
    await signed_in(client, another.json()["key"])
    assert (await client.get("/console/overview")).status_code == 200
    revoked = await client.delete(f"/api/v1/keys/{another.json()['id']}", headers=shop.secret)
    assert revoked.status_code == 204
    assert (await client.get("/console/overview")).status_code == 303


async def test_a_form_without_the_token_changes_nothing(client, shop, snapshot):
    await signed_in(client, shop["secret_key"])
    before = await snapshot()
    for data in ({"name": "x", "kind": "secret"}, {"name": "x", "kind": "secret", "csrf": "forged"}):
        resp = await client.post("/console/keys", data=data)
        assert resp.status_code == 403 and "nothing was changed" in resp.text
    assert (await client.post("/console/sign-out", data={})).status_code == 403
    assert await snapshot() == before
    assert (await client.get("/console/overview")).status_code == 200  # still signed in


async def test_thumbnails_are_the_shops_own_resized_and_kept(client, shop, make_shop, settings):
    up = await client.post("/api/v1/images", files={"file": ("a.jpg", photo(2, size=(900, 1200)), "image/jpeg")},
                           headers=shop.secret)
    image_id = up.json()["id"]
    await wait_for_images(client, shop.secret, [image_id], {"ready"})
    other = await make_shop("Other")
    await signed_in(client, other["secret_key"])
    assert (await client.get(f"/console/thumbs/{image_id}")).status_code == 404  # not theirs
    client.cookies.clear()
    await signed_in(client, shop["secret_key"])
    thumb = await client.get(f"/console/thumbs/{image_id}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert len(thumb.content) < len(photo(2, size=(900, 1200)))
    from PIL import Image
    import io

    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 320
    kept = list((settings.media_dir / str(shop["id"]) / "thumbs").iterdir())
    assert [p.name for p in kept] == [f"{image_id}-320.jpg"]


async def test_a_publishable_key_cannot_sign_in(client, shop):
    resp = await signed_in(client, shop["publishable_key"])
    assert resp.status_code == 403 and "publishable key cannot sign in" in resp.text
    assert not [c for c in resp.headers.get_list("set-cookie") if c.startswith("hub_console=")]


async def test_insights_are_counted_by_the_database_on_both_backends(client, shop):
    for prompt in ["red dress", "Red   DRESS", "red dress", "linen trousers"]:
        assert (await client.post("/api/v1/recommendations", json={"prompt": prompt},
                                  headers=shop.publishable)).status_code == 200
    await signed_in(client, shop["secret_key"])
    page = await client.get("/console/insights")
    assert page.status_code == 200 and "4 prompts in the last 30 days" in page.text
    top = re.search(r"<table data-top>.*?</table>", page.text, re.S).group(0)
    rows = re.findall(r"<tr><td>([^<]+)</td><td>(\d+)</td>", top)
    assert rows == [("red dress", "3"), ("linen trousers", "1")]
    # nothing is ready here, so every prompt went unanswered: listed, the most asked first
    weak = re.search(r"<table data-weak>.*?</table>", page.text, re.S).group(0)
    assert re.findall(r"<tr><td>([^<]+)</td><td>(\d+)</td><td>no result</td>", weak) == rows
    bars = re.findall(r'data-count="(\d+)"', page.text)
    assert len(bars) == 30 and bars[-1] == "4"
    csv_text = (await client.get("/console/insights.csv")).text
    assert csv_text.splitlines()[0].startswith("created_at,prompt") and len(csv_text.splitlines()) == 5


async def test_console_errors_are_console_pages(client, shop, make_shop):
    other = await make_shop("Other")
    up = await client.post("/api/v1/images", files={"file": ("a.jpg", photo(1), "image/jpeg")}, headers=other.secret)
    await signed_in(client, shop["secret_key"])
    for path in (f"/console/images/{up.json()['id']}", "/console/connections/999999", "/console/catalog?cursor=x"):
        resp = await client.get(path)
        assert resp.status_code in (400, 404) and resp.headers["content-type"].startswith("text/html"), path
        assert "frame-ancestors" in resp.headers["content-security-policy"]
    assert (await client.get("/console/try", params={"prompt": "dress", "limit": "²"})).status_code == 200


async def test_sign_in_links_need_mail_and_tell_nothing(client, shop, snapshot):
    form = await client.get("/console")
    assert "Email me a link" not in form.text  # no HUB_SMTP_URL here
    token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    before = await snapshot()
    resp = await client.post("/console/sign-in-link", data={"csrf": token, "email": shop["email"]})
    assert resp.status_code == 503 and "HUB_SMTP_URL" in resp.text
    assert (await client.get("/console/link", params={"token": "made-up"})).status_code == 401
    assert await snapshot() == before


async def test_try_it_takes_the_storefronts_filters(client, shop):
    categories = (await client.get("/api/v1/categories", headers=shop.secret)).json()["items"]
    dresses = next(c for c in categories if c["name"] == "Dresses")
    ids = []
    for n, (name, category) in enumerate([("Red dress", dresses["id"]), ("Blue jeans", None)]):
        up = await client.post("/api/v1/images", headers=shop.secret, files={"file": (f"{n}.jpg", photo(n), "image/jpeg")},
                               data={"name": name, **({"category_id": str(category)} if category else {})})
        ids.append(up.json()["id"])
    await wait_for_images(client, shop.secret, ids, {"ready"})
    await signed_in(client, shop["secret_key"])
    every = await client.get("/console/try", params={"prompt": "clothes"})
    assert "Red dress" in every.text and "Blue jeans" in every.text
    only = await client.get("/console/try", params={"prompt": "clothes", "category": dresses["id"]})
    assert "Red dress" in only.text and "Blue jeans" not in only.text
    assert f'<option value="{dresses["id"]}" selected>' in only.text
