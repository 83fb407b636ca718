"""Images through HTTP: upload, URL intake, list/filter/paginate, get, patch, delete, file; and bad input."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for_images
from tests.images import photo, png_bomb, truncated_jpeg


async def upload(client, headers, data: bytes, filename: str = "dress.jpg", **fields):
    return await client.post(
        "/api/v1/images",
        files={"file": (filename, data, "image/jpeg")},
        data={k: str(v) for k, v in fields.items()},
        headers=headers,
    )


async def category_id(client, shop, name: str = "Dresses") -> int:
    items = (await client.get("/api/v1/categories", headers=shop.secret)).json()["items"]
    return next(c["id"] for c in items if c["name"] == name)


async def test_upload_list_get_file_delete(client, shop):
    cat = await category_id(client, shop)
    resp = await upload(client, shop.secret, photo(1), name="Red floral dress", description="Summer", category_id=cat)
    assert resp.status_code == 202, resp.text
    img = resp.json()
    assert resp.headers["location"] == f"/api/v1/images/{img['id']}"
    assert img["status"] == "pending" and img["embedded"] is False
    assert img["category"] == {"id": cat, "name": "Dresses"}
    assert img["mime_type"] == "image/jpeg" and (img["width"], img["height"]) == (96, 128)
    assert img["source"] == "manual"

    listed = (await client.get("/api/v1/images", headers=shop.secret)).json()
    assert [i["id"] for i in listed["items"]] == [img["id"]]
    assert listed["next_cursor"] is None

    got = await client.get(f"/api/v1/images/{img['id']}", headers=shop.secret)
    assert got.json()["name"] == "Red floral dress"

    file = await client.get(f"/api/v1/images/{img['id']}/file", headers=shop.secret)
    assert file.status_code == 200
    assert file.content == photo(1)
    assert file.headers["content-type"] == "image/jpeg"
    not_modified = await client.get(
        f"/api/v1/images/{img['id']}/file", headers=shop.secret | {"If-None-Match": file.headers["etag"]}
    )
    assert not_modified.status_code == 304

    assert (await client.delete(f"/api/v1/images/{img['id']}", headers=shop.secret)).status_code == 204
    assert (await client.get(f"/api/v1/images/{img['id']}", headers=shop.secret)).status_code == 404
    assert (await client.get("/api/v1/images", headers=shop.secret)).json()["items"] == []


async def test_file_with_publishable_key_in_header_or_query(client, shop):
    img = (await upload(client, shop.secret, photo(2))).json()
    # a publishable key sees only what recommendations may show: not a pending image
    assert (await client.get(f"/api/v1/images/{img['id']}/file", headers=shop.publishable)).status_code == 404
    await wait_for_images(client, shop.secret, [img["id"]])
    assert (await client.get(f"/api/v1/images/{img['id']}/file", headers=shop.publishable)).status_code == 200
    by_query = await client.get(f"/api/v1/images/{img['id']}/file?key={shop['publishable_key']}")
    assert by_query.status_code == 200
    secret_in_url = await client.get(f"/api/v1/images/{img['id']}/file?key={shop['secret_key']}")
    assert secret_in_url.status_code == 401
    # publishable keys can't manage images
    assert (await client.get(f"/api/v1/images/{img['id']}", headers=shop.publishable)).status_code == 403


async def test_image_by_url(client, shop):
    resp = await client.post(
        "/api/v1/images",
        json={"image_url": "https://cdn.example.com/p/1.jpg", "name": "Blue jeans", "product_url": "https://s.example.com/p/1"},
        headers=shop.secret,
    )
    assert resp.status_code == 202, resp.text
    img = resp.json()
    assert img["image_url"] == "https://cdn.example.com/p/1.jpg" and img["file_url"] is None
    assert img["status"] == "pending"
    again = await client.post("/api/v1/images", json={"image_url": "https://cdn.example.com/p/1.jpg"}, headers=shop.secret)
    assert again.status_code == 409 and again.json()["extra"]["image_id"] == img["id"]
    no_file = await client.get(f"/api/v1/images/{img['id']}/file", headers=shop.secret)
    assert no_file.status_code == 404


async def test_pagination_and_filters(client, shop):
    cat = await category_id(client, shop, "Jeans")
    ids = []
    for i in range(7):
        fields = {"name": f"item {i}"} | ({"category_id": cat} if i % 2 else {})
        ids.append((await upload(client, shop.secret, photo(10 + i), **fields)).json()["id"])
    seen, cursor = [], None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/images", params=params, headers=shop.secret)).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(ids, reverse=True)
    in_cat = (await client.get("/api/v1/images", params={"category_id": cat}, headers=shop.secret)).json()
    assert sorted(i["id"] for i in in_cat["items"]) == ids[1::2]
    named = (await client.get("/api/v1/images", params={"q": "item 4"}, headers=shop.secret)).json()
    assert [i["id"] for i in named["items"]] == [ids[4]]
    await wait_for_images(client, shop.secret, ids)
    ready = (await client.get("/api/v1/images", params={"status": "ready", "embedded": True}, headers=shop.secret))
    assert len(ready.json()["items"]) == 7
    pending = (await client.get("/api/v1/images", params={"status": "pending"}, headers=shop.secret)).json()
    assert pending["items"] == []
    for bad in ({"status": "done"}, {"limit": 0}, {"limit": 101}, {"cursor": "garbage!"}):
        resp = await client.get("/api/v1/images", params=bad, headers=shop.secret)
        assert resp.status_code == 400, (bad, resp.text)
        assert resp.json()["status"] == 400


async def test_patch(client, shop):
    img = (await upload(client, shop.secret, photo(3))).json()
    style = (await client.get("/api/v1/styles", headers=shop.secret)).json()["items"][0]["id"]
    resp = await client.patch(
        f"/api/v1/images/{img['id']}", json={"name": "Linen shirt", "style_id": style}, headers=shop.secret
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == "Linen shirt" and resp.json()["style_id"] == style
    cleared = await client.patch(f"/api/v1/images/{img['id']}", json={"style_id": None}, headers=shop.secret)
    assert cleared.json()["style_id"] is None and cleared.json()["name"] == "Linen shirt"


async def test_duplicate_upload_is_409_and_changes_nothing(client, shop, snapshot):
    first = (await upload(client, shop.secret, photo(4))).json()
    before = await snapshot()
    resp = await upload(client, shop.secret, photo(4), filename="copy.jpg", name="copy")
    assert resp.status_code == 409
    assert resp.json()["extra"]["image_id"] == first["id"]
    assert await snapshot() == before


async def test_same_image_in_two_shops_is_fine(client, make_shop):
    a, b = await make_shop(), await make_shop()
    assert (await upload(client, a.secret, photo(5))).status_code == 202
    assert (await upload(client, b.secret, photo(5))).status_code == 202


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"not an image at all, just text", 415),
        (b"", 415),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj", 415),
        (truncated_jpeg(), 415),
        (png_bomb(), 413),
        (png_bomb(9000, 9000), 413),
    ],
    ids=["text", "empty", "pdf", "truncated", "bomb-huge", "bomb-81Mpx"],
)
async def test_bad_uploads_are_refused_and_change_nothing(client, shop, snapshot, data, status):
    before = await snapshot()
    resp = await upload(client, shop.secret, data)
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == status and body["detail"]
    assert await snapshot() == before


@pytest.mark.parametrize("settings_overrides", [{"max_upload_bytes": 4096}])
async def test_oversized_upload_is_413_and_changes_nothing(client, shop, snapshot):
    big = photo(6, size=(400, 400))
    assert len(big) > 4096
    before = await snapshot()
    resp = await upload(client, shop.secret, big)
    assert resp.status_code == 413
    assert "limit" in resp.json()["detail"]
    assert await snapshot() == before


@pytest.mark.parametrize("settings_overrides", [{"max_upload_bytes": 4096}])
async def test_body_far_over_the_limit_is_413(client, shop):
    resp = await upload(client, shop.secret, b"\xff" * (3 * 1024 * 1024))
    assert resp.status_code == 413
    assert resp.json()["status"] == 413


async def test_bad_requests_change_nothing(client, shop, make_shop, snapshot):
    other = await make_shop()
    others_img = (await upload(client, other.secret, photo(7))).json()["id"]
    others_cat = (await client.get("/api/v1/categories", headers=other.secret)).json()["items"][0]["id"]
    mine = (await upload(client, shop.secret, photo(8))).json()["id"]
    before = await snapshot()
    cases = [
        ("post", "/api/v1/images", {"files": {"file": ("a.jpg", photo(9), "image/jpeg")}, "data": {"category_id": "999999"}}, 422),
        ("post", "/api/v1/images", {"files": {"file": ("a.jpg", photo(9), "image/jpeg")}, "data": {"category_id": str(others_cat)}}, 422),
        ("post", "/api/v1/images", {"files": {"file": ("a.jpg", photo(9), "image/jpeg")}, "data": {"style_id": "x"}}, 400),
        ("post", "/api/v1/images", {"files": {"photo": ("a.jpg", photo(9), "image/jpeg")}}, 400),
        ("post", "/api/v1/images", {"json": {"image_url": "ftp://example.com/x.jpg"}}, 400),
        ("post", "/api/v1/images", {"json": {"name": "no url"}}, 400),
        ("post", "/api/v1/images", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400),
        ("post", "/api/v1/images", {"content": b"raw", "headers": {"content-type": "text/plain"}}, 415),
        ("patch", f"/api/v1/images/{mine}", {"json": {"category_id": others_cat}}, 422),
        ("patch", f"/api/v1/images/{mine}", {"json": {"age_group_id": 123456}}, 422),
        ("patch", f"/api/v1/images/{mine}", {"json": {"name": None}}, 400),
        ("patch", f"/api/v1/images/{mine}", {"json": {"product_url": "javascript:alert(1)"}}, 400),
        ("get", f"/api/v1/images/{others_img}", {}, 404),
        ("get", f"/api/v1/images/{others_img}/file", {}, 404),
        ("patch", f"/api/v1/images/{others_img}", {"json": {"name": "mine now"}}, 404),
        ("delete", f"/api/v1/images/{others_img}", {}, 404),
        ("delete", "/api/v1/images/987654", {}, 404),
    ]
    for method, path, kwargs, status in cases:
        headers = kwargs.pop("headers", {}) | shop.secret
        resp = await getattr(client, method)(path, headers=headers, **kwargs)
        assert resp.status_code == status, (method, path, resp.status_code, resp.text)
        body = resp.json()
        assert body["status"] == status and isinstance(body["detail"], str), body
    assert await snapshot() == before
