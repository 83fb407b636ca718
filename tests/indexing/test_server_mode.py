"""Server mode end to end: PostgreSQL, Redis streams, a `chroma run` server and `hub worker` processes.

The API runs in-process (role "api": it only sends tasks); workers are real `hub worker` subprocesses.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from hub.settings import load_settings
from tests.api.test_metrics import Scrape, scrape
from tests import services
from tests.conftest import ADMIN_TOKEN, ShopKeys, serve_app, until, upload_photos, wait_for_images
from tests.feed_platform import FeedPlatform, signed

pytestmark = pytest.mark.slow


@pytest.fixture
def server_settings(tmp_path, make_pg_database, redis_service, chroma, test_model):
    return load_settings(
        home=tmp_path / "shared",  # the media folder api and workers share (a volume in compose)
        database_url=make_pg_database(),
        broker_url=redis_service.url,
        queue_name=f"hub-test-{uuid.uuid4().hex[:8]}",
        chroma_url=chroma.url,
        model=str(test_model),
        admin_token=ADMIN_TOKEN,
        public_url="http://testserver.local",
        sweep_seconds=1,
        lease_seconds=3,
        retry_first_seconds=0.5,
        rate_limit="100000/minute",
        log_format="text",
        secret_key="a-long-random-secret-key-for-tests",
        allow_private_fetch=True,
    )


class Workers:
    def __init__(self, settings, log_dir: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        for name in ("home", "database_url", "broker_url", "queue_name", "chroma_url", "model", "sweep_seconds",
                     "lease_seconds", "retry_first_seconds", "secret_key", "allow_private_fetch"):
            self.env[f"HUB_{name.upper()}"] = str(getattr(settings, name))
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, **extra: str) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"worker-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "hub", "worker"], env=self.env | extra, stdout=log,
                                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def workers(server_settings, tmp_path):
    group = Workers(server_settings, tmp_path)
    yield group
    group.stop_all()


async def new_shop(client) -> ShopKeys:
    resp = await client.post("/api/v1/shops", json={"name": "Server Shop", "email": f"{uuid.uuid4().hex[:8]}@x.example"},
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert resp.status_code == 201
    return ShopKeys(resp.json())


async def test_upload_ready_recommended(server_settings, workers):
    metrics_port = services.free_port()
    worker = workers.start(HUB_METRICS_ADDRESS=f"127.0.0.1:{metrics_port}")
    async with serve_app(server_settings) as client:
        assert client.app.state.services.pipeline.role == "api"
        shop = await new_shop(client)
        ids = await upload_photos(client, shop, range(200, 206))
        images = await wait_for_images(client, shop.secret, ids)
        assert {i["status"] for i in images.values()} == {"ready"}
        # the worker (which embedded them) runs at the background priority (HUB_WORKER_NICE, 10 unless set): on
        # a host it shares with the API, webhooks and queries are answered first
        assert int(Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()[16]) == 10
        found = await client.post("/api/v1/recommendations", json={"prompt": "red dress", "limit": 10},
                                  headers=shop.publishable)
        assert sorted(r["id"] for r in found.json()["results"]) == sorted(ids)
        ready = (await client.get("/ready")).json()
        assert ready["checks"]["broker"] == "ok" and ready["checks"]["vector_store"] == "ok"
        # the vectors live in the Chroma server, where a new client sees them
        assert await client.app.state.services.pipeline.store.ids(shop["id"]) == sorted(ids)
        # the worker's own figures on its private metrics address (no token there; the API's /metrics asks one),
        # the shared ones (the database's, the Redis queue's) from the API
        async def own() -> Scrape:
            async with httpx.AsyncClient() as http:
                return Scrape((await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text)

        async def counted() -> bool:  # (the counter moves just after the images are marked ready)
            return (await own()).value("hub_embed_images_total", outcome="ready") >= len(ids)

        await until(counted, "the worker counted what it embedded")
        assert (await own()).value("hub_embed_images_total", outcome="ready") == len(ids)
        assert (await own()).value("hub_model_items_total", tower="image") >= len(ids)
        shared = await scrape(client)
        assert shared.value("hub_images", status="ready") == len(ids)
        assert shared.labels("hub_queue_tasks", "state") == {"waiting", "running"}

        async def drained() -> bool:  # (a task is acknowledged just after its images are marked ready)
            return (await scrape(client)).value("hub_queue_tasks") == 0

        await until(drained, "every queued task taken and acknowledged")


async def test_worker_killed_mid_batch_loses_nothing(server_settings, workers):
    # the first worker waits to fill a big batch, so it is surely holding claimed images when it dies
    first = workers.start(HUB_EMBED_BATCH_SIZE="64", HUB_EMBED_BATCH_WAIT_MS="4000")
    async with serve_app(server_settings) as client:
        shop = await new_shop(client)
        ids = await upload_photos(client, shop, range(300, 320))
        for _ in range(300):
            listed = (await client.get("/api/v1/images", params={"status": "embedding", "limit": 100},
                                       headers=shop.secret)).json()["items"]
            if listed:
                break
            await asyncio.sleep(0.05)
        assert listed, "the worker never claimed an image"
        first.kill()  # SIGKILL: no cleanup, claimed images and unacknowledged messages left behind
        first.wait(10)
        stuck = (await client.get("/api/v1/images", params={"limit": 100}, headers=shop.secret)).json()["items"]
        assert any(i["status"] != "ready" for i in stuck)
        workers.start()
        images = await wait_for_images(client, shop.secret, ids, timeout=90)
        assert {i["status"] for i in images.values()} == {"ready"}, images
        assert await client.app.state.services.pipeline.store.ids(shop["id"]) == sorted(ids)


async def test_chroma_down_gives_503_and_images_wait(server_settings, workers, chroma):
    workers.start()
    async with serve_app(server_settings) as client:
        shop = await new_shop(client)
        first = await upload_photos(client, shop, [400])
        await wait_for_images(client, shop.secret, first)
        chroma.stop()
        resp = await client.post("/api/v1/recommendations", json={"prompt": "red dress"}, headers=shop.publishable)
        assert resp.status_code == 503, resp.text
        assert resp.json()["error"] == "unavailable" and "vector store" in resp.json()["detail"]
        assert resp.headers["retry-after"]
        ready = await client.get("/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["vector_store"].startswith("unreachable")
        later = await upload_photos(client, shop, [401, 402])
        # wait until the workers tried (and found the vector store down), not for a fixed time
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            waiting = await wait_for_images(client, shop.secret, later, {"pending", "embedding", "ready", "failed"})
            if any("vector store" in (i["error"] or "") for i in waiting.values()):
                break
            assert asyncio.get_running_loop().time() < deadline, f"never tried while Chroma was down: {waiting}"
            await asyncio.sleep(0.2)
        assert all(i["status"] in ("pending", "embedding") for i in waiting.values())
        chroma.start()  # same port, same data folder
        images = await wait_for_images(client, shop.secret, later, timeout=90)
        assert {i["status"] for i in images.values()} == {"ready"}
        found = await client.post("/api/v1/recommendations", json={"prompt": "red dress"}, headers=shop.publishable)
        assert found.status_code == 200
        assert sorted(r["id"] for r in found.json()["results"]) == sorted(first + later)


async def test_connector_sync_and_webhooks_run_on_redis_workers(server_settings, workers):
    feed = FeedPlatform(page_size=10)
    for pid in range(1, 26):
        feed.put(pid, [pid + 400])
    workers.start()
    try:
        async with serve_app(server_settings) as client:
            shop = await new_shop(client)
            conn = await client.post("/api/v1/connections", json={"connector": "example", "settings": feed.settings()},
                                     headers=shop.secret)
            assert conn.status_code == 201, conn.text
            job_id = conn.json()["sync_job"]["id"]
            for _ in range(600):
                job = (await client.get(f"/api/v1/jobs/{job_id}", headers=shop.secret)).json()
                if job["status"] in ("succeeded", "failed"):
                    break
                await asyncio.sleep(0.1)
            assert (job["status"], job["total"], job["done"]) == ("succeeded", 25, 25)
            assert feed.page_requests == [1, 1, 2, 3]  # the check, then the worker's three pages

            body, headers = signed({"event": "product.updated", "delivery_id": "w1",
                                    "product": feed.put(1, [401, 999])})
            hook = await client.post(f"/webhooks/example/{conn.json()['id']}", content=body, headers=headers)
            assert hook.json()["status"] == "accepted"
            for _ in range(600):
                items = (await client.get("/api/v1/images", params={"limit": 100}, headers=shop.secret)).json()["items"]
                if len(items) == 26 and all(i["status"] == "ready" for i in items):
                    break
                await asyncio.sleep(0.1)
            assert len(items) == 26 and {i["status"] for i in items} == {"ready"}
            assert sorted(await client.app.state.services.pipeline.store.ids(shop["id"])) == sorted(i["id"] for i in items)
    finally:
        feed.close()
