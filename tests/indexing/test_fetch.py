"""Images by URL through HTTP: fetched from a real local server, or refused/failed with a readable reason."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import wait_for_images
from tests.images import photo
from tests.services import free_port


class ImageServer:
    """A small real HTTP server on loopback: images, redirects, errors, a slow path and a huge body."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802 - http.server's name
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if self.path.startswith("/img/"):
                    body = photo(int(self.path.split("/")[2].split(".")[0]))
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif self.path.startswith("/redirect/"):
                    hops = int(self.path.split("/")[2])
                    self.send_response(302)
                    self.send_header("Location", f"/redirect/{hops - 1}" if hops > 1 else "/img/77.jpg")
                    self.end_headers()
                elif self.path == "/flaky.jpg":
                    if server.hits[self.path] < 3:
                        self.send_response(503)
                        self.end_headers()
                        return
                    body = photo(78)
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif self.path == "/text":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.end_headers()
                    self.wfile.write(b"<html>not an image</html>")
                elif self.path == "/huge.jpg":
                    self.send_response(200)
                    self.send_header("Content-Length", str(50 * 1024 * 1024))
                    self.end_headers()
                elif self.path == "/always-500.jpg":
                    self.send_response(500)
                    self.end_headers()
                else:
                    self.send_response(404)
                    self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def image_server():
    server = ImageServer()
    yield server
    server.close()


async def add_url(client, shop, url):
    resp = await client.post("/api/v1/images", json={"image_url": url}, headers=shop.secret)
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


@pytest.mark.parametrize("settings_overrides", [{"allow_private_fetch": True, "max_upload_bytes": 1024 * 1024,
                                                 "retry_max_attempts": 5}])
async def test_url_images_end_ready_or_failed_with_reason(client, shop, image_server):
    base = image_server.base
    cases = {
        f"{base}/img/5.jpg": ("ready", None),
        f"{base}/redirect/3": ("ready", None),
        f"{base}/flaky.jpg": ("ready", None),
        f"{base}/missing.jpg": ("failed", "HTTP 404"),
        f"{base}/text": ("failed", "not an image"),
        f"{base}/huge.jpg": ("failed", "limit"),
        f"{base}/redirect/9": ("failed", "redirects"),
        f"{base}/always-500.jpg": ("failed", "gave up after 5 attempts: HTTP 500"),
        f"http://127.0.0.1:{free_port()}/closed.jpg": ("failed", "gave up after 5 attempts: connection: "),
        "http://no-such-host.invalid/a.jpg": ("failed", "gave up after 5 attempts: DNS: "),
    }
    ids = {url: await add_url(client, shop, url) for url in cases}
    images = await wait_for_images(client, shop.secret, list(ids.values()), timeout=90)
    for url, (status, reason) in cases.items():
        img = images[ids[url]]
        assert img["status"] == status, (url, img["status"], img["error"])
        if "gave up after 5 attempts" in (reason or ""):
            assert img["attempts"] == 5, (url, img["attempts"])  # the count and the message agree
        if reason:
            assert reason in img["error"], (url, img["error"])
        else:
            assert img["embedded"] and img["width"] and img["content_hash"] and img["error"] is None, (url, img)
    assert image_server.hits["/flaky.jpg"] == 3
    found = await client.post("/api/v1/recommendations", json={"prompt": "shirt", "limit": 50}, headers=shop.secret)
    assert sorted(r["id"] for r in found.json()["results"]) == sorted(
        ids[u] for u, (status, _) in cases.items() if status == "ready"
    )


async def test_private_addresses_are_refused_by_default(client, shop, image_server, settings):
    assert settings.allow_private_fetch is False
    urls = [f"{image_server.base}/img/1.jpg", "http://localhost:9/x.jpg", "http://169.254.169.254/latest/meta-data",
            "http://[::1]:8080/a.jpg", "http://10.1.2.3/a.jpg"]
    ids = [await add_url(client, shop, url) for url in urls]
    images = await wait_for_images(client, shop.secret, ids)
    for img in images.values():
        assert img["status"] == "failed"
        assert "private, loopback or link-local" in img["error"]
    # the refusal names the host, never what it resolved to (internal DNS answers stay internal)
    assert "127.0.0.1" not in images[ids[1]]["error"] and "::1" not in images[ids[1]]["error"]
    assert image_server.hits == {}  # nothing was ever requested


@pytest.mark.parametrize("settings_overrides", [{"allow_private_fetch": True, "retry_max_attempts": 1}])
async def test_a_certificate_the_hub_cannot_verify_is_reported_as_tls(client, shop, tmp_path):
    from tests.woo_platform import WooEmulator

    store = WooEmulator(tls_folder=tmp_path)  # a self-signed certificate nobody told the hub to trust
    try:
        image_id = await add_url(client, shop, store.upload(1))
        image = (await wait_for_images(client, shop.secret, [image_id]))[image_id]
    finally:
        store.close()
    assert image["status"] == "failed" and "gave up after 1 attempts: TLS: " in image["error"], image["error"]
    assert "CERTIFICATE_VERIFY_FAILED" in image["error"] or "certificate" in image["error"].lower()
