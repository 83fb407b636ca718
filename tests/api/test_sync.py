"""Full syncs as jobs, through HTTP: progress, resume from the cursor, one per connection, removal of products
the platform no longer lists; and a job a dead worker left behind is picked up by the sweep."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from hub.db.engine import create_engine
from hub.db.models import Job, utcnow
from tests.conftest import wait_job
from tests.feed_platform import FeedPlatform


@pytest.fixture
def settings_overrides():
    return {"secret_key": "a-long-random-secret-key-for-tests", "allow_private_fetch": True}


@pytest.fixture
def feed():
    platform = FeedPlatform(page_size=25)
    for pid in range(1, 61):
        platform.put(pid, [pid])
    yield platform
    platform.close()




async def connect(client, shop, feed, sync: bool = True) -> dict[str, Any]:
    resp = await client.post("/api/v1/connections", json={"connector": "example", "settings": feed.settings(),
                                                          "sync": sync}, headers=shop.secret)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def all_images(client, shop) -> list[dict[str, Any]]:
    images, cursor = [], None
    while True:
        page = (await client.get("/api/v1/images", params={"limit": 100, **({"cursor": cursor} if cursor else {})},
                                 headers=shop.secret)).json()
        images += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return images


async def test_connecting_imports_the_catalog_then_recommends_it(client, shop, feed):
    conn = await connect(client, shop, feed)
    job = conn["sync_job"]
    assert job["kind"] == "sync" and job["status"] in ("queued", "running") and job["connection_id"] == conn["id"]
    done = await wait_job(client, shop.secret, job["id"])
    assert (done["status"], done["total"], done["done"], done["failed"], done["errors"]) == ("succeeded", 60, 60, 0, [])
    assert done["started_at"] and done["finished_at"] >= done["started_at"]
    assert done["result"]["products_created"] == 60 and done["result"]["images_added"] == 60
    images = await all_images(client, shop)
    assert len(images) == 60 and {i["source"] for i in images} == {"example"}
    for _ in range(600):
        images = await all_images(client, shop)
        if all(i["status"] == "ready" for i in images):
            break
        await asyncio.sleep(0.1)
    assert {i["status"] for i in images} == {"ready"}
    resp = await client.post("/api/v1/recommendations", json={"prompt": "blue jacket", "limit": 100},
                             headers=shop.publishable)
    assert {r["id"] for r in resp.json()["results"]} == {i["id"] for i in images}
    listed = (await client.get("/api/v1/jobs", params={"kind": "sync"}, headers=shop.secret)).json()["items"]
    assert [j["id"] for j in listed] == [job["id"]]


async def test_a_failing_page_is_retried_and_the_sync_resumes_from_its_cursor(client, shop, feed):
    feed.failures[2] = 2  # page 2 answers 503 twice: the job goes back to the queue and resumes
    conn = await connect(client, shop, feed)
    done = await wait_job(client, shop.secret, conn["sync_job"]["id"])
    assert done["status"] == "succeeded" and done["done"] == 60 and done["attempts"] == 3
    assert feed.page_requests == [1, 1, 2, 2, 2, 3]  # check, page 1 once, page 2 until it answers, page 3
    assert len(await all_images(client, shop)) == 60


async def test_one_sync_per_connection_and_removal_of_vanished_products(client, shop, feed, make_shop):
    conn = await connect(client, shop, feed, sync=False)
    feed.failures[1] = 1  # keeps the first sync busy for a retry
    first = await client.post(f"/api/v1/connections/{conn['id']}/sync", headers=shop.secret)
    assert first.status_code == 202, first.text
    second = await client.post(f"/api/v1/connections/{conn['id']}/sync", headers=shop.secret)
    assert second.status_code == 409 and second.json()["extra"]["job_id"] == first.json()["id"]
    assert (await wait_job(client, shop.secret, first.json()["id"]))["status"] == "succeeded"

    for pid in range(50, 61):
        del feed.products[str(pid)]  # gone from the platform, and no delete webhook came
    again = await client.post(f"/api/v1/connections/{conn['id']}/sync", headers=shop.secret)
    done = await wait_job(client, shop.secret, again.json()["id"])
    assert done["status"] == "succeeded" and done["result"]["products_deleted"] == 11
    assert done["result"].get("images_added", 0) == 0  # the rest was already there: nothing re-added
    assert {i["external_id"] for i in await all_images(client, shop)} == {f"img{p}" for p in range(1, 50)}

    other = await make_shop()
    assert (await client.get(f"/api/v1/jobs/{done['id']}", headers=other.secret)).status_code == 404
    assert (await client.post(f"/api/v1/connections/{conn['id']}/sync", headers=other.secret)).status_code == 404


async def test_the_sweep_resumes_a_job_whose_worker_died(client, shop, feed, settings):
    conn = await connect(client, shop, feed, sync=False)
    engine = create_engine(settings.db_url)
    try:
        async with engine.begin() as db:  # what a worker killed after committing page 1 leaves behind
            result = await db.execute(Job.__table__.insert().values(
                shop_id=shop["id"], connection_id=conn["id"], kind="sync", status="running", done=25, failed=0,
                total=60, errors=[], cursor="2", params={}, result={}, attempts=1, created_at=utcnow(),
                started_at=utcnow(), updated_at=utcnow(), next_attempt_at=utcnow() - timedelta(seconds=1)))
            job_id = result.inserted_primary_key[0]
    finally:
        await engine.dispose()
    done = await wait_job(client, shop.secret, job_id)
    assert done["status"] == "succeeded" and done["done"] == 60 and done["attempts"] == 2
    assert feed.page_requests[-2:] == [2, 3]  # resumed at page 2, never re-read page 1
    assert 1 not in feed.page_requests[1:]


async def test_deleting_a_connection_mid_sync_removes_it_and_its_job(client, shop, feed):
    conn = await connect(client, shop, feed, sync=False)
    feed.failures[1] = 100  # the sync keeps retrying page 1
    job_id = (await client.post(f"/api/v1/connections/{conn['id']}/sync", headers=shop.secret)).json()["id"]
    assert (await client.delete(f"/api/v1/connections/{conn['id']}", headers=shop.secret)).status_code == 204
    assert (await client.get(f"/api/v1/jobs/{job_id}", headers=shop.secret)).status_code == 404
    assert await all_images(client, shop) == []


async def make_due(settings, connection_id: int) -> None:
    """Time passes: the connection's next scheduled sync is due now (what the clock would do in 5 minutes)."""
    from hub.db.models import Connection

    engine = create_engine(settings.db_url)
    try:
        async with engine.begin() as db:
            await db.execute(Connection.__table__.update().where(Connection.__table__.c.id == connection_id)
                             .values(next_sync_at=utcnow() - timedelta(seconds=1)))
    finally:
        await engine.dispose()


async def sync_jobs(client, shop, connection_id: int) -> list[dict[str, Any]]:
    return (await client.get("/api/v1/jobs", params={"kind": "sync", "connection_id": connection_id},
                             headers=shop.secret)).json()["items"]


async def test_a_scheduled_sync_keeps_the_catalog_current_without_webhooks(client, shop, feed, settings):
    resp = await client.post("/api/v1/connections", headers=shop.secret, json={
        "connector": "example", "settings": feed.settings(), "sync_interval_minutes": 5})
    assert resp.status_code == 201, resp.text
    conn = resp.json()
    assert conn["sync_interval_minutes"] == 5 and conn["sync_job"]["scheduled"] is False
    first = await wait_job(client, shop.secret, conn["sync_job"]["id"])
    assert first["status"] == "succeeded"
    planned = (await client.get(f"/api/v1/connections/{conn['id']}", headers=shop.secret)).json()["next_sync_at"]
    assert timedelta(minutes=4) < _parse(planned) - utcnow() <= timedelta(minutes=5)

    # the platform changes and sends nothing: a product added, one removed
    feed.put(61, [61])
    with feed.lock:
        del feed.products["1"]
    await make_due(settings, conn["id"])
    for _ in range(300):  # the sweep runs every second in tests
        jobs = await sync_jobs(client, shop, conn["id"])
        if len(jobs) == 2:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"the sweep started no scheduled sync in 30 s: {jobs}")
    scheduled = jobs[0]
    assert scheduled["scheduled"] is True and scheduled["id"] != first["id"]
    done = await wait_job(client, shop.secret, scheduled["id"])
    assert done["status"] == "succeeded" and done["result"]["products_created"] == 1
    assert done["result"]["products_deleted"] == 1
    names = {i["name"] for i in await all_images(client, shop)}
    assert "Product 61" in names and "Product 1" not in names
    moved = (await client.get(f"/api/v1/connections/{conn['id']}", headers=shop.secret)).json()["next_sync_at"]
    assert timedelta(minutes=4) < _parse(moved) - utcnow() <= timedelta(minutes=5)

    # one sync per due time: the scheduling step (what each sweep runs) starts nothing more until the next interval
    from hub.domain.connections import start_due_syncs

    assert await start_due_syncs(client.app.state.services) == []
    assert len(await sync_jobs(client, shop, conn["id"])) == 2

    # turned off: nothing is planned, and a due time left in the past starts nothing
    off = await client.patch(f"/api/v1/connections/{conn['id']}", json={"sync_interval_minutes": 0},
                             headers=shop.secret)
    assert off.status_code == 200 and off.json()["sync_interval_minutes"] is None and off.json()["next_sync_at"] is None
    await make_due(settings, conn["id"])
    assert await start_due_syncs(client.app.state.services) == []
    assert len(await sync_jobs(client, shop, conn["id"])) == 2


def _parse(value: str):
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.parametrize("body, status", [
    ({"sync_interval_minutes": 3}, 422),  # more often than every 5 minutes
    ({"sync_interval_minutes": 10081}, 400),  # more than a week
    ({"sync_interval_minutes": "60"}, 400),  # a JSON number, not text
    ({"sync_interval": 60}, 400),  # a misspelt field is an error, not ignored
])
async def test_a_bad_schedule_is_refused_and_changes_nothing(client, shop, feed, snapshot, body, status):
    conn = await connect(client, shop, feed, sync=False)
    before = await snapshot()
    resp = await client.patch(f"/api/v1/connections/{conn['id']}", json=body, headers=shop.secret)
    assert resp.status_code == status, resp.text
    assert await snapshot() == before
    made = await client.post("/api/v1/connections", headers=shop.secret, json={
        "connector": "example", "settings": feed.settings(), "sync": False, **body})
    assert made.status_code in (400, 422) and await snapshot() == before


async def test_a_connector_without_webhooks_sets_the_default_schedule(settings, make_shop_for, feed):
    """A connector that implements ScheduledSync gives new connections its interval; the shop can override it."""
    import types

    from hub.connectors import ScheduledSync
    from hub.hookspecs import hookimpl
    from hub.plugin_manager import load_plugins, register
    from tests.conftest import serve_app

    plugins = load_plugins()
    example = plugins.connectors()["example"]

    class Polled(type(example)):
        name = "polled"

        def sync_interval_minutes(self, settings):
            return 30

    assert isinstance(Polled(), ScheduledSync)
    module = types.ModuleType("polled_plugin")
    module.hub_connectors = hookimpl(lambda: [Polled()])
    module.hub_connectors.__name__ = "hub_connectors"
    register(plugins, module, "polled")
    async with serve_app(settings, plugins=plugins) as client:
        shop = await make_shop_for(client)
        default = await client.post("/api/v1/connections", headers=shop.secret, json={
            "connector": "polled", "settings": feed.settings(), "sync": False})
        assert default.status_code == 201 and default.json()["sync_interval_minutes"] == 30
        chosen = await client.post("/api/v1/connections", headers=shop.secret, json={
            "connector": "polled", "settings": feed.settings(), "sync": False, "sync_interval_minutes": 0,
            "name": "no schedule"})
        assert chosen.status_code == 201 and chosen.json()["sync_interval_minutes"] is None
        plain = await client.post("/api/v1/connections", headers=shop.secret, json={
            "connector": "example", "settings": feed.settings(), "sync": False})
        assert plain.json()["sync_interval_minutes"] is None and plain.json()["next_sync_at"] is None


class NothingRuns:
    """A pipeline that queues nothing and never sweeps: here the test is the only scheduler, so what each call of
    the scheduling step starts is exactly what the test sees."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def images_added(self, shop_id, image_ids) -> None: ...
    async def images_changed(self, shop_id, image_ids) -> None: ...
    async def images_removed(self, shop_id, image_ids) -> None: ...
    async def deliveries_received(self, delivery_ids) -> None: ...
    async def job_queued(self, job_id) -> None: ...
    async def shop_removed(self, shop_id) -> None: ...


async def test_due_syncs_are_shared_fairly_and_a_busy_shop_tries_again_soon(settings, feed):
    """The sweep's scheduling step, called directly: at most three syncs per shop per sweep, every shop served;
    a shop at its job limit is asked again in 5 minutes, not an hour."""
    from hub.domain.connections import start_due_syncs
    from tests.conftest import ADMIN_TOKEN, ShopKeys, serve_app

    async with serve_app(settings, pipeline=NothingRuns()) as client:
        async def make_shop(name: str) -> ShopKeys:
            made = await client.post("/api/v1/shops", json={"name": name, "email": f"{name.lower()}@shop.example"},
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            assert made.status_code == 201, made.text
            return ShopKeys(made.json())

        busy, quiet = await make_shop("Busy"), await make_shop("Quiet")
        ids = []
        for n, owner in enumerate([busy] * 6 + [quiet]):
            resp = await client.post("/api/v1/connections", headers=owner.secret, json={
                "connector": "example", "settings": feed.settings(), "sync": False, "sync_interval_minutes": 60,
                "name": f"store {n}"})
            assert resp.status_code == 201, resp.text
            ids.append(resp.json()["id"])
        for connection_id in ids:
            await make_due(settings, connection_id)
        services = client.app.state.services

        async def jobs_of(owner) -> int:
            return len((await client.get("/api/v1/jobs", params={"kind": "sync"}, headers=owner.secret)).json()["items"])

        first = await start_due_syncs(services)
        assert len(first) == 4 and (await jobs_of(busy), await jobs_of(quiet)) == (3, 1)
        second = await start_due_syncs(services)  # three more of the busy shop: two reach its limit of five
        assert len(second) == 2 and await jobs_of(busy) == 5
        third = await start_due_syncs(services)
        assert third == [] and await jobs_of(busy) == 5
        # the sixth connection met the limit: it is due again in 5 minutes, the others in an hour
        planned = {c["id"]: _parse(c["next_sync_at"]) - utcnow()
                   for c in (await client.get("/api/v1/connections", headers=busy.secret)).json()["items"]}
        limited = [cid for cid, left in planned.items() if left <= timedelta(minutes=5)]
        assert len(limited) == 1 and all(left > timedelta(minutes=55) for cid, left in planned.items()
                                         if cid not in limited)
