"""Tenant vs everyone's availability: what a shop points the hub at cannot exhaust the process's memory, hold
its database, or starve other shops' fetches. Memory is measured on this process — the app runs in it."""

from __future__ import annotations

import asyncio
import io
import logging
import time

import pytest
from PIL import Image as PILImage

from hub.logs import JsonFormatter
from tests.conftest import app_sender, wait_for_images, wait_job
from tests.images import photo
from tests.security.hostile import HostileServer, peak_rss_bytes, reset_peak_rss, rss_bytes
from tests.woo_platform import WooEmulator

MB = 1024 * 1024


@pytest.fixture
def hostile():
    server = HostileServer(trickle_seconds=1.0)
    yield server
    server.close()


def woo_settings(base: str) -> dict[str, str]:
    return {"store_url": base, "consumer_key": "ck_" + "1a2b3c4d5e" * 4, "consumer_secret": "cs_" + "9f8e7d6c5b" * 4}


@pytest.mark.parametrize("settings_overrides", [{
    "secret_key": "a-long-random-secret-key-for-tests", "allow_private_fetch": True,
    "platform_max_response_bytes": 4 * MB, "platform_deadline": 20}])
async def test_an_endless_answer_from_a_store_is_cut_off_and_memory_stays_bounded(client, shop, hostile, snapshot):
    before = await snapshot()
    reset_peak_rss()
    baseline = rss_bytes()
    resp = await client.post("/api/v1/connections", json={
        "connector": "woocommerce", "settings": woo_settings(f"{hostile.base}/endless")}, headers=shop.secret)
    assert resp.status_code == 502, resp.text
    assert "too much data" in resp.json()["detail"] and "cs_" not in resp.text
    grown = peak_rss_bytes() - baseline
    assert grown < 150 * MB, f"the process grew by {grown // MB} MB reading an endless answer"
    assert hostile.sent_endless < 64 * MB  # it stopped reading early, not at the server's cap
    assert await snapshot() == before  # and nothing of the failed connection remains
    assert (await client.get("/health")).status_code == 200


@pytest.mark.parametrize("settings_overrides", [{
    "secret_key": "a-long-random-secret-key-for-tests", "allow_private_fetch": True,
    "platform_max_response_bytes": 4 * MB, "platform_deadline": 30}])
@pytest.mark.parametrize("path", ["/gzip-bomb", "/gzip-tail"])
async def test_compressed_answers_are_bounded_too(client, shop, snapshot, path):
    server = HostileServer(endless_cap=300 * MB)
    try:
        before = await snapshot()
        reset_peak_rss()
        baseline = rss_bytes()
        started = time.monotonic()
        resp = await client.post("/api/v1/connections", json={
            "connector": "woocommerce", "settings": woo_settings(f"{server.base}{path}")}, headers=shop.secret)
        assert resp.status_code == 502, resp.text
        assert time.monotonic() - started < 25  # stopped by the limit, not by the deadline
        assert peak_rss_bytes() - baseline < 150 * MB
        assert server.sent_endless < 64 * MB
        assert await snapshot() == before
    finally:
        server.close()


@pytest.mark.parametrize("settings_overrides", [{
    "secret_key": "a-long-random-secret-key-for-tests", "allow_private_fetch": True, "platform_deadline": 3,
    "connect_deadline": 60}])
async def test_a_store_that_trickles_is_given_up_after_the_deadline(client, shop, hostile):
    started = time.monotonic()
    resp = await client.post("/api/v1/connections", json={
        "connector": "example", "settings": {"feed_url": f"{hostile.base}/trickle", "webhook_secret": "x" * 16}},
        headers=shop.secret)
    assert resp.status_code in (422, 502), resp.text
    assert time.monotonic() - started < 45  # a deadline per call, not a read timeout per byte


@pytest.mark.parametrize("settings_overrides", [{
    "secret_key": "a-long-random-secret-key-for-tests", "allow_private_fetch": True}])
async def test_a_slow_store_holds_no_database_lock(client, make_shop, hostile):
    slow, other = await make_shop("Slow"), await make_shop("Other")
    connecting = asyncio.create_task(client.post("/api/v1/connections", json={
        "connector": "woocommerce", "settings": woo_settings(f"{hostile.base}/hold")}, headers=slow.secret))
    try:
        assert await asyncio.to_thread(hostile.held.wait, 30), "the store was never called"
        # while the store keeps the hub waiting, another shop writes: no lock is held meanwhile
        created = await asyncio.wait_for(client.post("/api/v1/categories", json={"name": "Capes"},
                                                     headers=other.secret), timeout=20)
        assert created.status_code == 201, created.text
        upload = await asyncio.wait_for(client.post("/api/v1/images", files={"file": ("a.jpg", photo(1), "image/jpeg")},
                                                    headers=other.secret), timeout=20)
        assert upload.status_code == 202, upload.text
        # the connection being made is visible as such
        listed = (await client.get("/api/v1/connections", headers=slow.secret)).json()["items"]
        assert [c["status"] for c in listed] == ["connecting"]
    finally:
        hostile.release.set()
        resp = await connecting
    assert resp.status_code in (422, 502)  # "[]" is not a WooCommerce store's answer to every call
    assert (await client.get("/api/v1/connections", headers=slow.secret)).json()["items"] == []


@pytest.mark.parametrize("settings_overrides", [{
    "allow_private_fetch": True, "fetch_per_shop": 4, "fetch_deadline": 120, "fetch_min_rate": 0,
    "fetch_timeout": 30, "retry_max_attempts": 1, "stop_grace": 0.5}])  # (the trickles are cancelled at the end)
async def test_one_shops_slow_image_host_does_not_starve_another_shops_fetches(client, make_shop, hostile):
    from tests.indexing.test_fetch import ImageServer

    slow, other = await make_shop("Slow"), await make_shop("Other")
    fast = ImageServer()
    try:
        slow_ids = []
        for n in range(40):
            resp = await client.post("/api/v1/images", json={"image_url": f"{hostile.base}/trickle/{n}.jpg"},
                                     headers=slow.secret)
            slow_ids.append(resp.json()["id"])
        resp = await client.post("/api/v1/images", json={"image_url": f"{fast.base}/img/7.jpg"}, headers=other.secret)
        ready = await wait_for_images(client, other.secret, [resp.json()["id"]], timeout=60)
        assert ready[resp.json()["id"]]["status"] == "ready", ready
        busy = (await client.get("/api/v1/images", params={"status": "embedding", "limit": 100},
                                 headers=slow.secret)).json()["items"]
        assert busy, "the slow shop's images should still be trickling in"
        in_flight = {r["path"] for r in hostile.requests}
        assert len(in_flight) <= 4  # at most HUB_FETCH_PER_SHOP of them held a connection at once
    finally:
        fast.close()


@pytest.mark.parametrize("settings_overrides", [{
    "allow_private_fetch": True, "fetch_deadline": 3, "fetch_min_rate": 0, "retry_max_attempts": 1}])
async def test_an_image_that_trickles_fails_at_the_deadline_with_the_reason(client, shop, hostile):
    resp = await client.post("/api/v1/images", json={"image_url": f"{hostile.base}/trickle/a.jpg"}, headers=shop.secret)
    started = time.monotonic()
    done = await wait_for_images(client, shop.secret, [resp.json()["id"]], timeout=60)
    image = done[resp.json()["id"]]
    assert image["status"] == "failed" and "timeout:" in image["error"], image
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("settings_overrides", [{"allow_private_fetch": True, "fetch_min_rate": 50_000,
                                                 "retry_max_attempts": 1}])
async def test_an_image_slower_than_the_minimum_rate_fails(client, shop, hostile):
    resp = await client.post("/api/v1/images", json={"image_url": f"{hostile.base}/trickle/b.jpg"}, headers=shop.secret)
    done = await wait_for_images(client, shop.secret, [resp.json()["id"]], timeout=60)
    image = done[resp.json()["id"]]
    assert image["status"] == "failed" and "slower than" in image["error"], image


def big_png(seed: int, side: int = 4900) -> bytes:
    """A 24-megapixel RGBA PNG (just under the default pixel limit) that compresses to a few hundred KB."""
    img = PILImage.new("RGBA", (side, side), (seed * 40 % 256, 120, 200, 255))
    img.putpixel((seed, seed), (0, 0, 0, 255))  # distinct bytes per seed
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("settings_overrides", [{"max_upload_bytes": 20 * MB, "max_decodes": 2}])
async def test_concurrent_decodes_are_bounded(client, shop):
    files = [big_png(n) for n in range(6)]
    reset_peak_rss()
    baseline = rss_bytes()
    answers = await asyncio.gather(*(client.post("/api/v1/images", files={"file": (f"{n}.png", data, "image/png")},
                                                 headers=shop.secret) for n, data in enumerate(files)))
    assert [a.status_code for a in answers] == [202] * 6, [a.text for a in answers]
    grown = peak_rss_bytes() - baseline
    # each decode is ~96 MB (24 MP x 4 bytes); six at once would be ~600 MB, two at a time stays near 200 MB
    assert grown < 420 * MB, f"peak grew by {grown // MB} MB"


async def test_the_default_pixel_limit_is_sized_for_product_photos(client, shop):
    img = PILImage.new("L", (7000, 7000), 128)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    resp = await client.post("/api/v1/images", files={"file": ("big.png", buf.getvalue(), "image/png")},
                             headers=shop.secret)
    assert resp.status_code == 413 and "pixels" in resp.json()["detail"]


@pytest.mark.parametrize("settings_overrides", [{
    "secret_key": "a-long-random-secret-key-for-tests", "allow_private_fetch": True, "retry_max_attempts": 2}])
async def test_woocommerce_query_keys_never_reach_logs_or_stored_errors(client, shop, caplog, tmp_path, monkeypatch):
    woo = WooEmulator(tls_folder=tmp_path, strip_authorization=True)  # keys go in the query string there
    monkeypatch.setenv("SSL_CERT_FILE", str(woo.cert))
    key, secret = "ck_" + "1a2b3c4d5e" * 4, "cs_" + "9f8e7d6c5b" * 4
    lines: list[str] = []  # every record as the service writes it (its formatter), at every level

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    collect = Collect(level=logging.DEBUG)
    collect.setFormatter(JsonFormatter())
    caplog.set_level("DEBUG")
    logging.getLogger().addHandler(collect)
    try:
        woo.sender = app_sender(client)
        woo.put(1, [1])
        resp = await client.post("/api/v1/connections", json={
            "connector": "woocommerce", "settings": dict(woo.settings(), auth="query"), "sync": False},
            headers=shop.secret)
        assert resp.status_code == 201, resp.text
        woo.fail_next = 10_000  # the store breaks down: every call answers 503 now
        job = await client.post(f"/api/v1/connections/{resp.json()['id']}/sync", headers=shop.secret)
        done = await wait_job(client, shop.secret, job.json()["id"], timeout=120)
    finally:
        logging.getLogger().removeHandler(collect)
        woo.close()
    assert done["status"] == "failed" and "503" in done["error"], done
    assert "consumer_secret=***" in done["error"]  # the URL is kept, its credentials are not
    logged = "\n".join(lines)
    assert "consumer_secret=***" in logged  # (the request was logged, and masked)
    for text in (repr(done), logged):
        assert secret not in text and key not in text and "consumer_secret=cs_" not in text
