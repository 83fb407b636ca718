"""Per-shop taxonomy CRUD through HTTP."""

from __future__ import annotations

import pytest

from hub.domain.taxonomy_defaults import AGE_GROUPS, CATEGORIES, STYLES
from tests.images import photo

KINDS = [("categories", CATEGORIES), ("styles", STYLES), ("age-groups", AGE_GROUPS)]


@pytest.mark.parametrize(("kind", "defaults"), KINDS)
async def test_seeded_defaults_and_crud(client, shop, snapshot, kind, defaults):
    base = f"/api/v1/{kind}"
    items = (await client.get(base, headers=shop.secret)).json()["items"]
    assert [i["name"] for i in items] == list(defaults)

    created = await client.post(base, json={"name": "Festival", "description": "for summer"}, headers=shop.secret)
    assert created.status_code == 201
    item = created.json()
    assert (await client.get(f"{base}/{item['id']}", headers=shop.secret)).json()["name"] == "Festival"
    renamed = await client.patch(f"{base}/{item['id']}", json={"name": "Festivals"}, headers=shop.secret)
    assert renamed.status_code == 200 and renamed.json()["name"] == "Festivals"
    assert renamed.json()["description"] == "for summer"

    before = await snapshot()
    dup = await client.post(base, json={"name": defaults[0]}, headers=shop.secret)
    assert dup.status_code == 409
    dup_rename = await client.patch(f"{base}/{item['id']}", json={"name": defaults[0]}, headers=shop.secret)
    assert dup_rename.status_code == 409
    assert (await client.post(base, json={"name": ""}, headers=shop.secret)).status_code == 400
    assert (await client.post(base, json={}, headers=shop.secret)).status_code == 400
    assert (await client.patch(f"{base}/999999", json={"name": "x"}, headers=shop.secret)).status_code == 404
    assert await snapshot() == before

    assert (await client.delete(f"{base}/{item['id']}", headers=shop.secret)).status_code == 204
    assert (await client.get(f"{base}/{item['id']}", headers=shop.secret)).status_code == 404


async def test_taxonomy_is_per_shop(client, shop, make_shop, snapshot):
    other = await make_shop()
    theirs = (await client.get("/api/v1/categories", headers=other.secret)).json()["items"][0]["id"]
    mine = (await client.get("/api/v1/categories", headers=shop.secret)).json()["items"]
    assert theirs not in {c["id"] for c in mine}
    before = await snapshot()
    assert (await client.get(f"/api/v1/categories/{theirs}", headers=shop.secret)).status_code == 404
    assert (await client.patch(f"/api/v1/categories/{theirs}", json={"name": "x"}, headers=shop.secret)).status_code == 404
    assert (await client.delete(f"/api/v1/categories/{theirs}", headers=shop.secret)).status_code == 404
    assert await snapshot() == before
    # the same name may exist in two shops
    assert (await client.post("/api/v1/styles", json={"name": "Gothic"}, headers=shop.secret)).status_code == 201
    assert (await client.post("/api/v1/styles", json={"name": "Gothic"}, headers=other.secret)).status_code == 201


async def test_deleting_a_category_keeps_its_images(client, shop):
    cat = (await client.post("/api/v1/categories", json={"name": "Capes"}, headers=shop.secret)).json()["id"]
    img = await client.post(
        "/api/v1/images",
        files={"file": ("cape.jpg", photo(40), "image/jpeg")},
        data={"category_id": str(cat)},
        headers=shop.secret,
    )
    assert img.json()["category_id"] == cat
    assert (await client.delete(f"/api/v1/categories/{cat}", headers=shop.secret)).status_code == 204
    after = (await client.get(f"/api/v1/images/{img.json()['id']}", headers=shop.secret)).json()
    assert after["category_id"] is None and after["category"] is None
