"""``GET /metrics``: after a tour (uploads embedded, a query, webhook deliveries good and bad), the operator's
scrape reads each figure; without the operator token it reads nothing. Counters are this process's (so the
test compares before and after); the shared figures come from the test's own database (so they are exact)."""

from __future__ import annotations

from collections import defaultdict

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api import test_webhooks
from tests.api.test_webhooks import connect
from tests.conftest import ADMIN_TOKEN, serve_app, until, upload_photos, wait_for_images
from tests.feed_platform import signed

feed, settings_overrides = test_webhooks.feed, test_webhooks.settings_overrides
OPERATOR = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Scrape:
    """A parsed exposition: ``value(name, **labels)`` sums the samples of ``name`` whose labels include
    ``labels``."""

    def __init__(self, text: str) -> None:
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[sample.name].append((sample.labels, sample.value))

    def value(self, name: str, **labels: str) -> float:
        return sum(v for have, v in self.samples.get(name, []) if labels.items() <= have.items())

    def labels(self, name: str, label: str) -> set[str]:
        return {have[label] for have, _ in self.samples.get(name, []) if label in have}


async def scrape(client: httpx.AsyncClient) -> Scrape:
    resp = await client.get("/metrics", headers=OPERATOR)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return Scrape(resp.text)


async def test_a_tour_shows_in_the_metrics(client, shop, feed, settings):
    before = await scrape(client)
    ids = await upload_photos(client, shop, range(700, 703))
    assert {i["status"] for i in (await wait_for_images(client, shop.secret, ids)).values()} == {"ready"}
    found = await client.post("/api/v1/recommendations", json={"prompt": "a red dress", "limit": 5},
                              headers=shop.publishable)
    assert found.status_code == 200
    assert (await client.get(f"/api/v1/images/{ids[0]}", headers=shop.secret)).status_code == 200
    conn = await connect(client, shop, feed)
    body, headers = signed({"event": "product.updated", "delivery_id": "m1", "product": feed.put(1, [1])})
    assert (await client.post(f"/webhooks/example/{conn['id']}", content=body, headers=headers)).json()[
        "status"] == "accepted"
    assert (await client.post(f"/webhooks/example/{conn['id']}", content=body, headers=headers)).json()[
        "status"] == "duplicate"
    forged = headers | {"x-example-signature": "0" * 64}
    assert (await client.post(f"/webhooks/example/{conn['id']}", content=body + b" ", headers=forged)).status_code == 401
    assert (await client.post("/webhooks/made-up-name/1", content=body, headers=headers)).status_code == 404

    async def embedded_counted() -> bool:  # (the counter moves just after the images are marked ready)
        return (await scrape(client)).value("hub_embed_images_total", outcome="ready") - before.value(
            "hub_embed_images_total", outcome="ready") >= 3

    await until(embedded_counted, "the embedded images counted")
    after = await scrape(client)

    def grew(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    # HTTP latency per route, labelled by the route's template (never the raw path, whose ids are unbounded)
    assert grew("hub_http_request_duration_seconds_count", method="POST", path="/api/v1/recommendations",
                status_code="200") == 1
    paths = after.labels("hub_http_request_duration_seconds_count", "path")
    assert "/api/v1/images/{image_id}" in paths
    assert not any(segment.isdigit() for p in paths for segment in p.split("/"))
    assert "/metrics" not in paths
    # this process's work
    assert grew("hub_embed_images_total", outcome="ready") == 3
    assert grew("hub_model_items_total", tower="image") >= 3
    assert grew("hub_model_forward_seconds_count", tower="text") >= 1
    assert grew("hub_vector_store_seconds_count", operation="upsert", outcome="ok") >= 1
    assert grew("hub_webhook_deliveries_received_total", connector="example", outcome="accepted") == 1
    assert grew("hub_webhook_deliveries_received_total", connector="example", outcome="duplicate") == 1
    assert grew("hub_webhook_deliveries_received_total", connector="example", outcome="unauthenticated") == 1
    # a connector name nobody installed is the sender's choice: counted under one label, not its own
    assert grew("hub_webhook_deliveries_received_total", connector="unknown", outcome="not_found") == 1
    assert "made-up-name" not in after.labels("hub_webhook_deliveries_received_total", "connector")
    # what every process shares, from this test's database
    assert after.value("hub_images", status="ready") == 3
    assert after.value("hub_shops") == 1
    assert after.value("hub_connections", connector="example", state="active") == 1
    assert after.value("hub_webhook_deliveries", connector="example") == 1
    assert after.labels("hub_queue_tasks", "state") == {"waiting", "running"}

    # an image waiting for a minute (not due yet: the sweep leaves it) is what the figure shows
    from datetime import timedelta

    from hub.db.models import Image, utcnow

    async with client.app.state.services.sessions() as session:
        session.add(Image(shop_id=shop["id"], name="waiting", image_url="https://cdn.example.com/w.jpg",
                          status="pending", created_at=utcnow() - timedelta(minutes=1),
                          next_attempt_at=utcnow() + timedelta(hours=1)))
        await session.commit()
    assert 60 <= (await scrape(client)).value("hub_images_oldest_pending_seconds") < 3600


async def test_metrics_are_the_operators(client, shop):
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/metrics", headers=shop.secret)).status_code == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 40})).status_code == 401


@pytest.mark.parametrize("settings_overrides", [{"admin_token": None}])
async def test_metrics_are_off_without_an_operator_token(settings):
    async with serve_app(settings) as client:
        resp = await client.get("/metrics", headers=OPERATOR)
        assert resp.status_code == 403
        assert "HUB_ADMIN_TOKEN" in resp.json()["detail"]


def test_a_served_process_settles_its_heap_and_times_its_collections(tmp_path, test_model):
    """``hub serve`` moves what it loaded once (imports, the app, the text model) out of the garbage collector's
    sight before it says it is ready, so a full collection no longer walks half a million objects while a
    webhook waits; the scrape times every collection by generation."""
    import json

    from tests.live import ADMIN, live_hub

    with live_hub(tmp_path / "hub", test_model) as hub:
        settled = [json.loads(line) for line in hub.log.read_text().splitlines()
                   if line.startswith("{") and '"heap settled"' in line]
        reasons = [entry.get("reason") for entry in settled]
        assert "started" in reasons and "text model loaded" in reasons, settled
        assert all(entry["frozen"] > 10_000 for entry in settled), settled  # torch, transformers, Litestar…
        resp = httpx.get(f"{hub.base}/metrics", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
        assert resp.status_code == 200, resp.text
        figures = Scrape(resp.text)
        assert figures.value("hub_gc_pause_seconds_count", generation="2") >= 2  # (each settle collects fully)
        assert figures.value("hub_gc_pause_seconds_count", generation="0") >= 1
