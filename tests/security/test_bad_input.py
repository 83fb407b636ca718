"""Bad input is a clear 4xx and changes nothing — never a 500, never a 503 blaming a dependency — and the
smaller tenant-safety items: failed-authentication throttling, key caps, what publishable keys may read,
safe file answers, taxonomy names, and ids that are never reused."""

from __future__ import annotations

import base64
import json

import pytest

from hub.settings import SettingsError, load_settings
from tests.conftest import ADMIN_TOKEN, wait_for_images
from tests.images import photo
from tests.security.hostile import HostileServer


def cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": value}).encode()).decode().rstrip("=")


async def test_out_of_range_numbers_are_400_not_500(client, shop, snapshot):
    before = await snapshot()
    for bad in (True, 2**70, -1, "7", None):
        resp = await client.get("/api/v1/images", params={"cursor": cursor(bad)}, headers=shop.secret)
        assert resp.status_code == 400 and "cursor" in resp.json()["detail"], (bad, resp.text)
    for path in (f"/api/v1/images/{2**63}", f"/api/v1/images/{2**70}", f"/api/v1/categories/{2**63}",
                 f"/api/v1/jobs/{2**31}", f"/api/v1/images/{2**64}/similar", f"/api/image-collection/{2**63}/"):
        resp = await client.get(path, headers=shop.secret)
        assert resp.status_code == 400, (path, resp.status_code, resp.text)
    resp = await client.get("/api/v1/images", params={"category_id": 2**63}, headers=shop.secret)
    assert resp.status_code == 400, resp.text
    for filters in ({"category_id": 2**63}, {"product_id": 2**70}, {"price_min": 1e308}, {"style_id": 0}):
        resp = await client.post("/api/v1/recommendations", json={"prompt": "a dress", "filters": filters},
                                 headers=shop.secret)
        assert resp.status_code == 400, (filters, resp.status_code, resp.text)
    resp = await client.patch("/api/v1/images/1", json={"category_id": 2**63}, headers=shop.secret)
    assert resp.status_code in (400, 404), resp.text
    assert await snapshot() == before


async def test_malformed_bodies_are_4xx(client, shop, snapshot):
    before = await snapshot()
    deep = b"[" * 100_000 + b"]" * 100_000
    deep_object = b'{"prompt": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}"
    for path in ("/api/v1/recommendations", "/api/v1/categories", "/api/v1/keys", "/api/v1/images",
                 "/api/v1/connections", "/api/v1/connections/authorize", "/api/recommendations/"):
        for body in (b"\xff\xfe{\x80 not utf-8", b'{"prompt": "\xc3\x28"}', deep, deep_object, b"{", b"null"):
            resp = await client.post(path, content=body, headers={**shop.secret, "Content-Type": "application/json"})
            assert 400 <= resp.status_code < 500, (path, body[:20], resp.status_code, resp.text[:200])
            assert resp.json()["status"] == resp.status_code
    assert await snapshot() == before


async def test_compat_taxonomy_values_that_are_not_numbers(client, shop, snapshot):
    before = await snapshot()
    for value in ("²", "٣", "1e3", str(2**70), "-1"):
        resp = await client.post("/api/image-collection/", data={"APIKey": shop["secret_key"], "Category": value},
                                 files={"Photo": ("a.jpg", photo(1), "image/jpeg")})
        assert resp.status_code == 400 and "Category" in resp.json()["detail"], (value, resp.text)
    assert await snapshot() == before


@pytest.fixture
def hostile():
    server = HostileServer()
    yield server
    server.close()


@pytest.mark.parametrize("settings_overrides", [{"secret_key": "a-long-random-secret-key-for-tests",
                                                 "allow_private_fetch": True}])
async def test_unexpected_platform_json_is_502_not_500(client, shop, hostile, snapshot):
    before = await snapshot()
    resp = await client.post("/api/v1/connections", json={"connector": "woocommerce", "settings": {
        "store_url": f"{hostile.base}/weird", "consumer_key": "ck_" + "1a" * 10, "consumer_secret": "cs_" + "2b" * 10}},
        headers=shop.secret)
    assert resp.status_code == 502 and "not understood" in resp.json()["detail"], resp.text
    assert await snapshot() == before


@pytest.mark.parametrize("settings_overrides", [{"auth_failure_limit": "5/minute"}])
async def test_failed_authentication_is_throttled_per_address(client, shop):
    for n in range(5):
        resp = await client.get("/api/v1/shop", headers={"Authorization": f"Bearer hub_sk_guess{n:040d}"})
        assert resp.status_code == 401
    blocked = await client.get("/api/v1/shop", headers={"Authorization": "Bearer hub_sk_guess-again"})
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1
    bad_operator = await client.post("/api/v1/shops", json={"name": "x", "email": "x@example.com"},
                                     headers={"Authorization": "Bearer not-the-operator-token-0123456789abcdef"})
    assert bad_operator.status_code == 429
    # valid credentials still work from that address: a page elsewhere that makes shoppers' browsers send bad
    # keys cannot lock them out of a storefront
    assert (await client.get("/api/v1/shop", headers=shop.secret)).status_code == 200
    operator = await client.post("/api/v1/shops", json={"name": "x", "email": "x@example.com"},
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert operator.status_code == 201


@pytest.mark.parametrize("settings_overrides", [{"auth_failure_limit": "3/minute"}])
async def test_failed_operator_tokens_are_throttled(client):
    for _ in range(3):
        resp = await client.post("/api/v1/shops", json={"name": "x", "email": "x@example.com"},
                                 headers={"Authorization": "Bearer not-the-operator-token-0123456789abcdef"})
        assert resp.status_code == 401
    resp = await client.post("/api/v1/shops", json={"name": "x", "email": "x@example.com"},
                             headers={"Authorization": "Bearer still-not-the-operator-token-0123456789"})
    assert resp.status_code == 429


def test_operator_token_must_be_long(tmp_path):
    with pytest.raises(SettingsError, match="HUB_ADMIN_TOKEN: must be at least 32 characters"):
        load_settings(home=tmp_path, admin_token="short-token")
    assert load_settings(home=tmp_path, admin_token="x" * 32).admin_token == "x" * 32


@pytest.mark.parametrize("settings_overrides", [{"max_keys_per_shop": 3}])
async def test_keys_per_shop_are_capped(client, shop):
    assert (await client.post("/api/v1/keys", json={"kind": "publishable"}, headers=shop.secret)).status_code == 201
    over = await client.post("/api/v1/keys", json={"kind": "publishable"}, headers=shop.secret)
    assert over.status_code == 409 and "revoke one" in over.json()["detail"]
    listed = (await client.get("/api/v1/keys", headers=shop.secret)).json()["items"]
    newest = max(k["id"] for k in listed)
    assert (await client.delete(f"/api/v1/keys/{newest}", headers=shop.secret)).status_code == 204
    assert (await client.post("/api/v1/keys", json={"kind": "secret"}, headers=shop.secret)).status_code == 201


@pytest.mark.parametrize("settings_overrides", [{"allow_private_fetch": False}])
async def test_publishable_keys_see_only_what_recommendations_may_show(client, shop):
    ready = (await client.post("/api/v1/images", files={"file": ("a.jpg", photo(3), "image/jpeg")},
                               headers=shop.secret)).json()["id"]
    failed = (await client.post("/api/v1/images", json={"image_url": "http://10.0.0.1/private.jpg"},
                                headers=shop.secret)).json()["id"]
    await wait_for_images(client, shop.secret, [ready, failed])
    for image_id, publishable_status in ((ready, 200), (failed, 404)):
        for path in (f"/api/image-collection/{image_id}/", f"/api/v1/images/{image_id}/file"):
            secret = await client.get(path, headers=shop.secret)
            public = await client.get(path, headers=shop.publishable)
            assert secret.status_code == (404 if path.endswith("/file") and image_id == failed else 200), path
            assert public.status_code == publishable_status, (path, public.status_code)
            assert "10.0.0.1" not in public.text
    file = await client.get(f"/api/v1/images/{ready}/file", headers=shop.publishable)
    assert file.headers["x-content-type-options"] == "nosniff"
    assert file.headers["content-disposition"] == f'inline; filename="image-{ready}.jpg"'
    assert file.headers["content-type"] == "image/jpeg"


async def test_taxonomy_names_are_trimmed_and_unique_whatever_their_case(client, shop, snapshot):
    before = await snapshot()
    blank = await client.post("/api/v1/categories", json={"name": "   "}, headers=shop.secret)
    assert blank.status_code == 400, blank.text
    twin = await client.post("/api/v1/categories", json={"name": "  dresses "}, headers=shop.secret)
    assert twin.status_code == 409 and "ignoring case" in twin.json()["detail"]
    assert await snapshot() == before
    made = await client.post("/api/v1/categories", json={"name": "  Capes  "}, headers=shop.secret)
    assert made.status_code == 201 and made.json()["name"] == "Capes"
    renamed = await client.patch(f"/api/v1/categories/{made.json()['id']}", json={"name": "DRESSES"},
                                 headers=shop.secret)
    assert renamed.status_code == 409


@pytest.mark.parametrize("settings_overrides", [{"secret_key": "a-long-random-secret-key-for-tests",
                                                 "allow_private_fetch": True}])
async def test_ids_in_urls_are_never_reused(client, make_shop):
    from tests.feed_platform import SECRET, FeedPlatform

    feed = FeedPlatform()
    try:
        first, second = await make_shop("First"), await make_shop("Second")
        body = {"connector": "example", "settings": {"feed_url": f"{feed.base}/feed", "webhook_secret": SECRET},
                "sync": False}
        old = (await client.post("/api/v1/connections", json=body, headers=first.secret)).json()
        assert (await client.delete(f"/api/v1/connections/{old['id']}", headers=first.secret)).status_code == 204
        new = (await client.post("/api/v1/connections", json=body, headers=second.secret)).json()
        assert new["id"] > old["id"] and new["webhook_url"] != old["webhook_url"]
        image = (await client.post("/api/v1/images", files={"file": ("a.jpg", photo(5), "image/jpeg")},
                                   headers=first.secret)).json()["id"]
        assert (await client.delete(f"/api/v1/images/{image}", headers=first.secret)).status_code == 204
        again = (await client.post("/api/v1/images", files={"file": ("b.jpg", photo(6), "image/jpeg")},
                                   headers=second.secret)).json()["id"]
        assert again > image
    finally:
        feed.close()
