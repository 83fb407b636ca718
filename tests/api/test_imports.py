"""Bulk imports through HTTP with the built-in manual plugin: ZIPs with and without a manifest, URL lists,
bad rows reported by line with the good ones still imported, and a 10,000-row manifest with live progress."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile

import pytest

from tests.conftest import wait_for_images, wait_job
from tests.feed_platform import FeedPlatform
from tests.images import photo


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()




async def start(client, shop, body: bytes, content_type: str, **params: str):
    return await client.post("/api/v1/imports", content=body, params=params,
                             headers={**shop.secret, "Content-Type": content_type})


async def test_zip_with_manifest_reports_bad_rows_and_imports_the_rest(client, shop):
    manifest = (
        "file,name,description,category,style,age_group,product_id,product_url\n"
        "a.jpg,Red dress,Floral,Dresses,Romantic,Adults (18+),SKU-1,https://shop.example/p/1\n"
        "b.png,Blue jeans,,jeans,,,SKU-2,\n"
        "c.jpg,Gown,,Gowns,,,,\n"
        "missing.jpg,Nothing,,,,,,\n"
        '"a2.jpg","Second photo\nof the dress",,,,,SKU-1,\n'
        "broken.jpg,Broken,,,,,,\n"
    )
    archive = make_zip({"manifest.csv": manifest.encode(), "a.jpg": photo(1), "b.png": photo(2, fmt="PNG"),
                        "c.jpg": photo(3), "a2.jpg": photo(4), "broken.jpg": b"not an image",
                        "__MACOSX/._a.jpg": b"junk"})
    resp = await start(client, shop, archive, "application/zip")
    assert resp.status_code == 202, resp.text
    assert resp.headers["location"] == f"/api/v1/jobs/{resp.json()['id']}"
    assert resp.json()["kind"] == "import" and resp.json()["total"] == 6
    job = await wait_job(client, shop.secret, resp.json()["id"])
    assert (job["status"], job["total"], job["done"], job["failed"]) == ("succeeded", 6, 3, 3)
    errors = {e["line"]: e["error"] for e in job["errors"]}
    assert set(errors) == {4, 5, 8}
    assert "unknown category 'Gowns'" in errors[4]
    assert "'missing.jpg' is not in the import" in errors[5]
    assert "image" in errors[8].lower()
    assert job["result"] == {"created": 3}

    listed = (await client.get("/api/v1/images", params={"limit": 100}, headers=shop.secret)).json()["items"]
    by_name = {i["name"]: i for i in listed}
    assert set(by_name) == {"Red dress", "Blue jeans", "Second photo\nof the dress"}
    red = by_name["Red dress"]
    assert (red["category"]["name"], red["style"]["name"], red["age_group"]["name"]) == \
           ("Dresses", "Romantic", "Adults (18+)")
    assert red["product_url"] == "https://shop.example/p/1" and red["source"] == "manual"
    assert red["product_id"] == by_name["Second photo\nof the dress"]["product_id"] is not None
    ready = await wait_for_images(client, shop.secret, [i["id"] for i in listed])
    assert {i["status"] for i in ready.values()} == {"ready"}

    # the same archive again: nothing doubles, every image is recognised
    again = await wait_job(client, shop.secret, (await start(client, shop, archive, "application/zip")).json()["id"])
    assert again["result"] == {"skipped: already imported": 3} and again["failed"] == 3
    assert len((await client.get("/api/v1/images", params={"limit": 100}, headers=shop.secret)).json()["items"]) == 3


async def test_zip_without_manifest_and_multipart_upload(client, shop):
    archive = make_zip({"dresses/summer.jpg": photo(10), "coat.jpg": photo(11), "notes.txt": b"ignored"})
    resp = await client.post("/api/v1/imports", files={"file": ("catalog.zip", archive, "application/zip")},
                             headers=shop.secret)
    assert resp.status_code == 202, resp.text
    job = await wait_job(client, shop.secret, resp.json()["id"])
    assert (job["status"], job["done"], job["failed"]) == ("succeeded", 2, 0)
    names = {i["name"] for i in (await client.get("/api/v1/images", headers=shop.secret)).json()["items"]}
    assert names == {"summer", "coat"}


@pytest.fixture
def settings_overrides():
    return {"allow_private_fetch": True}


@pytest.fixture
def photo_server():
    platform = FeedPlatform()  # serves /img/<seed>.jpg
    yield platform.base
    platform.close()


async def test_json_list_of_urls(client, shop, photo_server):
    items = [
        {"image_url": f"{photo_server}/img/20.jpg", "title": "From a URL", "sku": "P-20"},
        "not an object",
        {"image_url": "ftp://example.com/x.jpg", "name": "Bad scheme"},
        {"name": "No image"},
        {"file": "x.jpg"},
        {"url": f"{photo_server}/img/21.jpg"},
    ]
    body = ("[\n" + ",\n".join(json.dumps(i) for i in items) + "\n]").encode()
    resp = await start(client, shop, body, "application/json")
    job = await wait_job(client, shop.secret, resp.json()["id"])
    assert (job["done"], job["failed"]) == (2, 4)
    errors = {e["line"]: e["error"] for e in job["errors"]}
    assert set(errors) == {3, 4, 5, 6}
    assert "object" in errors[3] and "http" in errors[4] and "neither" in errors[5] and "ZIP" in errors[6]
    listed = (await client.get("/api/v1/images", headers=shop.secret)).json()["items"]
    ready = await wait_for_images(client, shop.secret, [i["id"] for i in listed])
    assert {i["status"] for i in ready.values()} == {"ready"} and len(ready) == 2


async def test_bad_import_files_are_refused_and_change_nothing(client, shop, snapshot):
    before = await snapshot()
    cases = [
        (b"PK\x03\x04 truncated zip", "application/zip", {}, 400, "ZIP"),
        (b"just some text", "text/plain", {"filename": "notes.txt"}, 415, "no importer"),
        (b"colour,size\nred,M\n", "text/csv", {}, 400, "no known column"),
        (b'[{"image_url": "https://x.example/a.jpg"}', "application/json", {}, 400, "not closed"),
    ]
    for body, ctype, params, status, words in cases:
        resp = await start(client, shop, body, ctype, **params)
        assert resp.status_code == status, resp.text
        assert words in resp.json()["detail"]
    assert (await client.post("/api/v1/imports", content=b"x", headers=shop.publishable)).status_code == 403
    assert await snapshot() == before


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("settings_overrides", [{"allow_private_fetch": False, "stop_grace": 0.5}])
async def test_ten_thousand_row_manifest_with_progress(client, shop):
    # private URLs are refused by the fetcher, so the images fail fast instead of loading the test machine
    lines = ["image_url,name,category"]
    bad = set(range(7, 10_000, 1000))
    for n in range(10_000):
        if n in bad:
            lines.append(f"not-a-url-{n},Row {n},")
        else:
            lines.append(f"http://127.0.0.1:9/img/{n}.jpg,Row {n},Dresses")
    resp = await start(client, shop, "\n".join(lines).encode(), "text/csv")
    assert resp.status_code == 202 and resp.json()["total"] == 10_000
    seen: list[int] = []
    deadline = asyncio.get_running_loop().time() + 300
    while True:
        job = (await client.get(f"/api/v1/jobs/{resp.json()['id']}", headers=shop.secret)).json()
        seen.append(job["done"] + job["failed"])
        if job["status"] in ("succeeded", "failed"):
            break
        assert asyncio.get_running_loop().time() < deadline, f"the import did not finish: {job}"
        await asyncio.sleep(0.05)
    assert job["status"] == "succeeded" and (job["done"], job["failed"]) == (9_990, 10)
    assert any(0 < n < 10_000 for n in seen), seen  # progress was visible while it ran
    assert sorted(e["line"] for e in job["errors"]) == [n + 2 for n in sorted(bad)]  # header is line 1
    assert all("URL" in e["error"] for e in job["errors"])
