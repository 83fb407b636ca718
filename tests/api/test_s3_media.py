"""The hub with its media in an S3-compatible bucket (``HUB_MEDIA_URL``; moto's server, started by the test
run): uploads, bulk imports, thumbnails and ``GET /images/{id}/file`` work as they do on the media folder,
nothing is written to the local folder, what is deleted leaves the bucket, and a bucket that cannot be reached
is a 503 that changes nothing."""

from __future__ import annotations

import pytest

from tests.api.test_console import signed_in
from tests.api.test_imports import make_zip, start
from tests.conftest import bucket_names, serve_app, until, upload_photos, wait_for_images, wait_job
from tests.images import photo
from tests.services import free_port


@pytest.fixture
def settings_overrides(s3_media):
    return s3_media


def local_files(settings) -> list[str]:
    folder = settings.media_dir
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


async def test_uploads_imports_thumbnails_and_files_live_in_the_bucket(client, shop, settings, s3_service):
    ids = await upload_photos(client, shop, [31, 32])
    assert {i["status"] for i in (await wait_for_images(client, shop.secret, ids)).values()} == {"ready"}
    file = await client.get(f"/api/v1/images/{ids[0]}/file", headers=shop.publishable)
    assert file.status_code == 200 and file.content == photo(31)
    found = await client.post("/api/v1/recommendations", json={"prompt": "a coat", "limit": 5},
                              headers=shop.publishable)
    assert sorted(r["id"] for r in found.json()["results"]) == sorted(ids)

    archive = make_zip({"manifest.csv": b"file,name\na.jpg,Linen shirt\nb.jpg,Wool coat\n", "a.jpg": photo(33),
                        "b.jpg": photo(34)})
    resp = await start(client, shop, archive, "application/zip")
    assert resp.status_code == 202, resp.text
    job = await wait_job(client, shop.secret, resp.json()["id"])
    assert (job["status"], job["done"], job["failed"]) == ("succeeded", 2, 0)
    listed = (await client.get("/api/v1/images", headers=shop.secret)).json()["items"]
    imported = [i["id"] for i in listed if i["name"] in ("Linen shirt", "Wool coat")]
    assert {i["status"] for i in (await wait_for_images(client, shop.secret, imported)).values()} == {"ready"}

    await signed_in(client, shop["secret_key"])
    thumb = await client.get(f"/console/thumbs/{ids[1]}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"

    shop_id = shop["id"]
    await until(lambda: not [n for n in bucket_names(s3_service.url, settings.media_url) if "/imports/" in n],
                "the import file removed once it was read")
    names = bucket_names(s3_service.url, settings.media_url)
    assert len([n for n in names if n.startswith(f"{shop_id}/") and "/thumbs/" not in n]) == 4  # 2 uploads, 2 imported
    assert f"{shop_id}/thumbs/{ids[1]}-320.jpg" in names
    assert local_files(settings) == []  # nothing on this host's disk

    assert (await client.delete(f"/api/v1/images/{ids[1]}", headers=shop.secret)).status_code == 204
    names = bucket_names(s3_service.url, settings.media_url)
    assert not [n for n in names if n.startswith(f"{shop_id}/thumbs/{ids[1]}-")]
    assert len([n for n in names if n.startswith(f"{shop_id}/") and "/thumbs/" not in n]) == 3
    resp = await client.delete(f"/api/v1/shops/{shop_id}", headers={"Authorization": f"Bearer {settings.admin_token}"})
    assert resp.status_code == 204
    assert not [n for n in bucket_names(s3_service.url, settings.media_url) if n.startswith(f"{shop_id}/")]


async def test_a_bucket_that_cannot_be_reached_is_a_503_that_changes_nothing(settings, make_shop_for, snapshot,
                                                                              s3_service):
    down = settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"})
    async with serve_app(down) as client:
        shop = await make_shop_for(client)
        before = await snapshot()
        resp = await client.post("/api/v1/images", files={"file": ("a.jpg", photo(40), "image/jpeg")},
                                 headers=shop.secret)
        assert resp.status_code == 503, resp.text
        assert "media" in resp.json()["detail"] and "Traceback" not in resp.text
        resp = await start(client, shop, make_zip({"a.jpg": photo(41)}), "application/zip")
        assert resp.status_code == 503, resp.text
        assert await snapshot() == before
        assert local_files(settings) == [] and bucket_names(s3_service.url, settings.media_url) == []
        ready = await client.get("/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["media"].startswith("unreachable")


async def test_an_import_over_the_job_limit_is_refused_before_its_file_is_stored(settings, make_shop_for):
    """The shop's job limit is checked before the file goes to the bucket: with the bucket down, a full shop
    hears 429 (wait for a job), not 503, and no upload is tried."""
    from datetime import timedelta

    from hub.db.models import Job, utcnow
    from hub.domain.jobs import MAX_ACTIVE_JOBS_PER_SHOP

    down = settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"})
    async with serve_app(down) as client:
        shop = await make_shop_for(client)
        async with client.app.state.services.sessions() as session:  # (queued, not due: they stay queued)
            session.add_all([Job(shop_id=shop["id"], kind="import", status="queued", params={},
                                 next_attempt_at=utcnow() + timedelta(hours=1))
                             for _ in range(MAX_ACTIVE_JOBS_PER_SHOP)])
            await session.commit()
        resp = await start(client, shop, make_zip({"a.jpg": photo(50)}), "application/zip")
        assert resp.status_code == 429, resp.text
        assert local_files(settings) == []
