"""The original service's endpoints, exactly as its README shows them."""

from __future__ import annotations

from tests.conftest import wait_for_images
from tests.images import photo


async def test_image_collection_upload_and_get(client, shop):
    cats = (await client.get("/api/v1/categories", headers=shop.secret)).json()["items"]
    styles = (await client.get("/api/v1/styles", headers=shop.secret)).json()["items"]
    ages = (await client.get("/api/v1/age-groups", headers=shop.secret)).json()["items"]
    resp = await client.post(
        "/api/image-collection/",
        files={"Photo": ("dress.jpg", photo(60), "image/jpeg")},
        data={
            "APIKey": shop["secret_key"],
            "name": "Floral dress",
            "description": "Red with floral patterns",
            "Category": str(cats[0]["id"]),
            "Styles": styles[1]["name"],  # by name works too
            "AgeGroup": str(ages[3]["id"]),
        },
    )
    assert resp.status_code == 201, resp.text
    record = resp.json()
    assert record["name"] == "Floral dress" and record["description"] == "Red with floral patterns"
    assert (record["Category"], record["Styles"], record["AgeGroup"]) == (cats[0]["id"], styles[1]["id"], ages[3]["id"])
    assert record["Processor_embedded"] is False
    assert record["Photo"].endswith(f"/api/v1/images/{record['id']}/file")

    await wait_for_images(client, shop.secret, [record["id"]])
    got = await client.get(f"/api/image-collection/{record['id']}/", params={"APIKey": shop["secret_key"]})
    assert got.status_code == 200
    assert got.json() == record | {"status": "ready", "Processor_embedded": True}
    record = got.json()
    via_header = await client.get(f"/api/image-collection/{record['id']}/", headers=shop.secret)
    assert via_header.json() == record
    # the same image is visible in the v1 API
    v1 = (await client.get(f"/api/v1/images/{record['id']}", headers=shop.secret)).json()
    assert v1["category_id"] == cats[0]["id"] and v1["source"] == "manual"


async def test_image_collection_bad_requests(client, shop, make_shop, snapshot):
    other = await make_shop()
    theirs = await client.post(
        "/api/image-collection/",
        files={"Photo": ("a.jpg", photo(61), "image/jpeg")},
        data={"APIKey": other["secret_key"]},
    )
    assert theirs.status_code == 201
    before = await snapshot()
    cases = [
        ({"APIKey": "hub_sk_wrong"}, {"Photo": ("a.jpg", photo(62), "image/jpeg")}, 401),
        ({}, {"Photo": ("a.jpg", photo(62), "image/jpeg")}, 401),
        ({"APIKey": shop["publishable_key"]}, {"Photo": ("a.jpg", photo(62), "image/jpeg")}, 403),
        ({"APIKey": shop["secret_key"]}, {"Other": ("a.jpg", photo(62), "image/jpeg")}, 400),
        ({"APIKey": shop["secret_key"], "Category": "99999"}, {"Photo": ("a.jpg", photo(62), "image/jpeg")}, 400),
        ({"APIKey": shop["secret_key"], "Styles": "No Such Style"}, {"Photo": ("a.jpg", photo(62), "image/jpeg")}, 400),
        ({"APIKey": shop["secret_key"]}, {"Photo": ("a.txt", b"hello", "text/plain")}, 415),
    ]
    for data, files, status in cases:
        resp = await client.post("/api/image-collection/", data=data, files=files)
        assert resp.status_code == status, (data, resp.text)
    other_id = theirs.json()["id"]
    assert (await client.get(f"/api/image-collection/{other_id}/", params={"APIKey": shop["secret_key"]})).status_code == 404
    assert (await client.get(f"/api/image-collection/{other_id}/")).status_code == 401
    assert await snapshot() == before
