"""API and workers on separate hosts: ``hub serve`` and ``hub worker`` as processes with different ``HUB_HOME``s,
sharing only the services (PostgreSQL, Redis, a Chroma server and an S3-protocol bucket), run the README's
tour — an upload, an image by URL, a bulk import, a query, the file, a deletion — and neither host's disk holds
a photo afterwards. Then ``hub reindex`` builds a second model on the worker, switches both processes to it with
no restart, and rolls back."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image as PILImage

from hub.search.encoder import Encoder, model_key
from hub.testing import OPERATOR_TOKEN, running_hub
from tests.api.test_imports import make_zip
from tests.api.test_metrics import Scrape
from tests.conftest import bucket_names
from tests.feed_platform import FeedPlatform
from tests.images import photo

pytestmark = pytest.mark.slow
SECRET_KEY = "hub-testing-secret-key-00000000001"  # the same on every host: connector credentials are shared


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def wait_until(check, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.2)
    return found


def expected_scores(model: Path, prompt: str, seeds: dict[int, int]) -> dict[int, float]:
    """What the model's cosine of the prompt and each image's photo is (the API must answer with these)."""
    encoder = Encoder(str(model))
    text = encoder.encode_prompt(prompt)
    photos = encoder.encode_images([PILImage.open(io.BytesIO(photo(s))).convert("RGB")
                                    for s in seeds.values()])
    return {image_id: float(np.dot(text, vector)) for image_id, vector in zip(seeds, photos, strict=True)}


def test_the_tour_through_an_api_and_a_worker_that_share_no_disk(tmp_path, make_pg_database, redis_service, chroma,
                                                                  s3_media, s3_service, test_model, other_model):
    shared = {"database_url": make_pg_database(), "broker_url": redis_service.url, "chroma_url": chroma.url,
              "queue_name": f"hub-hosts-{uuid.uuid4().hex[:8]}", "sweep_seconds": "1", "secret_key": SECRET_KEY,
              **s3_media}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")} | {
        f"HUB_{k.upper()}": str(v) for k, v in shared.items()} | {"HUB_MODEL": str(test_model)}
    subprocess.run([sys.executable, "-m", "hub", "migrate"], env=base_env | {"HUB_HOME": str(tmp_path / "migrate")},
                   check=True, capture_output=True)
    worker_home = tmp_path / "worker-host"
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "hub", "worker"], stdout=log, stderr=subprocess.STDOUT,
                              env=base_env | {"HUB_HOME": str(worker_home), "HUB_ALLOW_PRIVATE_FETCH": "true"})
    try:
        with FeedPlatform() as images_host, running_hub(tmp_path / "api-host", test_model, **shared) as hub:
            http = httpx.Client(base_url=hub.base, timeout=60)
            shop = hub.create_shop()
            secret = {"Authorization": f"Bearer {shop['secret_key']}"}
            uploaded = http.post("/api/v1/images", files={"file": ("dress.jpg", photo(1), "image/jpeg")},
                                 data={"name": "Red floral dress"}, headers=secret)
            assert uploaded.status_code == 202, uploaded.text
            by_url = http.post("/api/v1/images/from-url", json={"image_url": f"{images_host.base}/img/2.jpg"},
                               headers=secret)
            assert by_url.status_code == 202, by_url.text
            archive = make_zip({"manifest.csv": b"file,name\na.jpg,Linen shirt\nb.jpg,Wool coat\n",
                                "a.jpg": photo(3), "b.jpg": photo(4)})
            job = http.post("/api/v1/imports", content=archive, headers=secret | {"Content-Type": "application/zip"})
            assert job.status_code == 202, job.text

            def job_done():
                state = http.get(f"/api/v1/jobs/{job.json()['id']}", headers=secret).json()
                return state if state["status"] in ("succeeded", "failed") else None

            finished = wait_until(job_done, "the import finished")
            assert (finished["status"], finished["done"]) == ("succeeded", 2), finished

            def all_ready():
                items = http.get("/api/v1/images", headers=secret).json()["items"]
                return items if len(items) == 4 and all(i["status"] == "ready" for i in items) else None

            images = wait_until(all_ready, "every image embedded by the worker")
            found = http.post("/api/v1/recommendations", json={"prompt": "a red dress", "limit": 10},
                              headers={"Authorization": f"Bearer {shop['publishable_key']}"}).json()
            assert sorted(r["id"] for r in found["results"]) == sorted(i["id"] for i in images)
            file = http.get(f"/api/v1/images/{uploaded.json()['id']}/file", headers=secret)
            assert file.status_code == 200 and file.content == photo(1)
            ready = http.get("/ready").json()
            assert ready["status"] == "ready", ready
            assert {ready["checks"][c] for c in ("media", "broker", "vector_store", "database")} == {"ok"}
            figures = Scrape(http.get("/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}).text)
            assert figures.value("hub_images", status="ready") == 4

            wait_until(lambda: not [n for n in bucket_names(s3_service.url, s3_media["media_url"]) if "/imports/" in n],
                       "the import file removed once it was read")
            in_bucket = [n for n in bucket_names(s3_service.url, s3_media["media_url"])
                         if n.startswith(f"{shop['id']}/")]
            assert len(in_bucket) == 3  # the upload and the two imported photos (the URL's is fetched again)
            assert http.delete(f"/api/v1/images/{uploaded.json()['id']}", headers=secret).status_code == 204
            assert len([n for n in bucket_names(s3_service.url, s3_media["media_url"])
                        if n.startswith(f"{shop['id']}/")]) == 2

            # a second model: built by the worker, then served by both processes with no restart, then rolled back
            seeds = {i["id"]: {"Linen shirt": 3, "Wool coat": 4}.get(i["name"], 2) for i in images
                     if i["id"] != uploaded.json()["id"]}
            before, after = (expected_scores(m, "a red dress", seeds) for m in (test_model, other_model))

            def scores():
                found = http.post("/api/v1/recommendations", headers={
                    "Authorization": f"Bearer {shop['publishable_key']}"}, json={
                    "prompt": "a red dress", "limit": 10, "mode": "vector", "distinct": "image"}).json()
                return {r["id"]: r["scores"]["vector"] for r in found["results"]}

            def serves(expected):
                found = scores()
                return found.keys() == expected.keys() and all(abs(found[i] - expected[i]) < 1e-3 for i in found)

            assert serves(before) and not serves(after)

            def reindex(*args: str) -> dict:
                done = subprocess.run([sys.executable, "-m", "hub", "reindex", *args, "--json"], capture_output=True,
                                      env=base_env | {"HUB_HOME": str(tmp_path / "operator")}, timeout=300)
                assert done.returncode == 0, done.stderr.decode()[-2000:]
                return json.loads(done.stdout)

            built = reindex("--model", str(other_model))
            assert (built["progress"], built["done"]) == ("built", 3), built
            switched = reindex("--switch", str(other_model))
            assert switched["active"]["key"] == model_key(str(other_model))
            wait_until(lambda: serves(after), "the API serves the new model")
            later = http.post("/api/v1/images", files={"file": ("coat.jpg", photo(5), "image/jpeg")},
                              data={"name": "Green coat"}, headers=secret)  # embedded by the worker's new model
            assert later.status_code == 202, later.text
            seeds[later.json()["id"]] = 5
            after, before = (expected_scores(m, "a red dress", seeds) for m in (other_model, test_model))
            wait_until(lambda: serves(after), "the worker embeds with the new model")
            assert reindex("--rollback")["active"]["key"] == model_key(str(test_model))
            wait_until(lambda: serves(before), "the API serves the model before, and the worker embedded the image "
                       "it missed")
            assert http.get("/ready").json()["status"] == "ready"
        # neither host kept a photo or an import file of its own
        assert [f for f in files_under(tmp_path / "api-host" / "data" / "media")] == []
        assert files_under(worker_home / "media") == [] and files_under(worker_home / "tmp") == []
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()
