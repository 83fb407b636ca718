"""Bulk imports within bounds, through the real HTTP interface: a manifest that inflates to 512 MB is refused
in seconds without the memory it would take, manifest size and row limits (HUB_MAX_MANIFEST_BYTES,
HUB_MAX_IMPORT_ROWS) hold in the request and in the job, an upload over HUB_MAX_IMPORT_BYTES stops being read
at the limit (multipart included), and odd manifests (huge CSV fields, deeply nested JSON, bad UTF-8, an
importer that crashes) are a row error or a 4xx — never a 500."""

from __future__ import annotations

import io
import json
import threading
import time
import types
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Self

import pytest

from hub.connectors import ImportOptions, ImportRow
from hub.hookspecs import hookimpl
from hub.plugin_manager import load_plugins, register
from tests.api.test_imports import make_zip
from tests.conftest import serve_app, wait_job

MiB = 1024 * 1024
URL = "http://127.0.0.1:9/img/{}.jpg"  # refused by the fetcher (private): the images fail fast, no network




async def start(client, shop, body, content_type: str, **params: str):
    return await client.post("/api/v1/imports", content=body, params=params,
                             headers={**shop.secret, "Content-Type": content_type})


def rss() -> int:
    """This process's resident memory now, in bytes (the app runs in it, over httpx.ASGITransport)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class PeakRss:
    """The highest RSS seen while the block runs, sampled by a background thread."""

    def __enter__(self) -> Self:
        self.base = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def growth(self) -> int:
        return self.peak - self.base


@pytest.fixture(scope="module")
def manifest_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ZIP of about 1.5 MB whose manifest.csv inflates to 512 MB (10 million rows), written in 1 MiB pieces."""
    path = tmp_path_factory.mktemp("bomb") / "catalog.zip"
    line = b"http://127.0.0.1:9/img/1.jpg,A dress\n"
    block = line * (MiB // len(line))
    with (zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf,
          zf.open("manifest.csv", "w", force_zip64=True) as member):
        member.write(b"image_url,name\n")
        for _ in range(512 * MiB // len(block) + 1):
            member.write(block)
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("manifest.csv").file_size > 512 * MiB
    assert path.stat().st_size < 4 * MiB
    return path


@pytest.mark.parametrize("settings_overrides", [
    {},  # the declared size is over HUB_MAX_MANIFEST_BYTES: refused before reading
    {"max_manifest_bytes": 2 * 1024 * MiB},  # read as a stream until the row limit (1,000,000) stops it
], ids=["manifest-limit", "row-limit"])
async def test_a_manifest_bomb_is_refused_in_seconds_without_the_memory(client, shop, manifest_bomb, snapshot):
    before = await snapshot()
    body = manifest_bomb.read_bytes()
    with PeakRss() as memory:
        began = time.monotonic()
        resp = await start(client, shop, body, "application/zip")
        took = time.monotonic() - began
    # the original read the whole manifest in the request (2-4 minutes, 4-8 GB)
    assert resp.status_code == 413, resp.text
    assert "manifest.csv" in resp.json()["detail"]
    assert "manifest limit" in resp.json()["detail"] or "1000000 rows" in resp.json()["detail"]
    assert took < 30, f"the request took {took:.1f} s"
    assert memory.growth < 200 * MiB, f"memory grew by {memory.growth / MiB:.0f} MiB"
    assert await snapshot() == before  # no job, no file left in media/imports


@pytest.mark.parametrize("settings_overrides", [{"max_import_rows": 5, "max_manifest_bytes": 4096}])
async def test_row_and_manifest_limits_are_413_in_the_request(client, shop, snapshot):
    before = await snapshot()
    header = "image_url,name\n"
    five = header + "".join(f"{URL.format(n)},Row {n}\n" for n in range(5))
    six = header + "".join(f"{URL.format(n)},Row {n}\n" for n in range(6))
    items = [{"image_url": URL.format(n)} for n in range(6)]
    cases = [
        (six.encode(), "text/csv", "6 rows"),
        (json.dumps(items).encode(), "application/json", "a JSON array of 6"),
        ("\n".join(json.dumps(i) for i in items).encode(), "application/x-ndjson", "6 JSON lines"),
        (make_zip({"manifest.csv": six.encode()}), "application/zip", "a ZIP manifest of 6 rows"),
        (make_zip({f"{n}.jpg": b"x" for n in range(6)}), "application/zip", "a ZIP of 6 images"),
        (header.encode() + b"\n" * 20, "text/csv", "blank lines beyond the row limit"),
        ((header + f"{URL.format(1)},{'x' * 5000}\n").encode(), "text/csv", "a manifest over 4096 bytes"),
    ]
    for body, ctype, what in cases:
        resp = await start(client, shop, body, ctype)
        assert resp.status_code == 413, (what, resp.text)
        assert resp.json()["detail"].startswith("cannot import"), (what, resp.text)
    assert await snapshot() == before
    resp = await start(client, shop, five.encode(), "text/csv")  # at the limit is fine
    assert resp.status_code == 202, resp.text
    assert resp.json()["total"] == 5


class EndlessImporter:
    """A third-party importer that cannot count its rows (``count(path)``, the old signature) and has many."""

    name = "endless"

    def accepts(self, path: Path) -> bool:
        return path.suffix == ".endless"

    def count(self, path: Path) -> None:
        return None

    def read(self, path: Path, options: ImportOptions):
        for n in range(1_000):
            yield ImportRow(line=n + 1, image_url=URL.format(n), name=f"row {n}")


class CrashingImporter:
    """A third-party importer that trips over a file while counting it (in the request)."""

    name = "crashing"

    def accepts(self, path: Path) -> bool:
        return path.suffix == ".crash"

    def count(self, path: Path, options: ImportOptions) -> int:
        raise RuntimeError("something unexpected in /srv/secret/path")

    def read(self, path: Path, options: ImportOptions):
        yield from ()


@pytest.fixture
def plugins():
    module = types.ModuleType("limits_plugin")
    module.hub_importers = hookimpl(lambda: [EndlessImporter(), CrashingImporter()])
    module.hub_importers.__name__ = "hub_importers"
    loaded = load_plugins()
    register(loaded, module, "limits-plugin")
    return loaded


@pytest.mark.parametrize("settings_overrides", [{"max_import_rows": 250}])
async def test_the_row_limit_holds_in_the_job(settings, plugins, make_shop_for):
    async with serve_app(settings, plugins=plugins) as client:
        shop = await make_shop_for(client)
        resp = await start(client, shop, b"anything", "text/plain", filename="feed.endless")
        assert resp.status_code == 202, resp.text
        job = await wait_job(client, shop.secret, resp.json()["id"])
        # the original read all 1,000 rows
        assert job["status"] == "failed" and "more than 250 rows" in job["error"], job
        assert job["done"] + job["failed"] == 250


async def test_an_importer_that_crashes_while_counting_is_a_400(settings, plugins, make_shop_for, snapshot):
    async with serve_app(settings, plugins=plugins) as client:
        shop = await make_shop_for(client)
        before = await snapshot()
        resp = await start(client, shop, b"anything", "text/plain", filename="feed.crash")
        assert resp.status_code == 400, resp.text  # the original answered 500
        assert "crashing importer cannot read it" in resp.json()["detail"]
        assert "/srv/secret" not in resp.text
        assert await snapshot() == before


async def test_huge_csv_fields_and_deep_json_are_row_errors(client, shop):
    # a field over the csv module's 131,072-character limit: the original answered 500
    body = (f"image_url,name\n{URL.format(1)},First\n{URL.format(2)},{'x' * 200_000}\n{URL.format(3)},Third\n"
            f"{URL.format(4)},\"{'y' * 140_000}\"\n{URL.format(5)},Fifth\n")
    resp = await start(client, shop, body.encode(), "text/csv")
    assert resp.status_code == 202, resp.text
    assert resp.json()["total"] == 5
    job = await wait_job(client, shop.secret, resp.json()["id"])
    assert (job["status"], job["done"], job["failed"]) == ("succeeded", 3, 2), job
    assert {e["line"]: "field larger than field limit" in e["error"] for e in job["errors"]} == {3: True, 5: True}
    names = {i["name"] for i in (await client.get("/api/v1/images", headers=shop.secret)).json()["items"]}
    assert names == {"First", "Third", "Fifth"}

    # JSON Lines nested deeper than Python recurses (RecursionError: the original answered 500)
    deep = '{"image_url": ' + "[" * 100_000 + "]" * 100_000 + "}"
    lines = [json.dumps({"image_url": URL.format(10), "name": "Ten"}), deep,
             json.dumps({"image_url": URL.format(11), "name": "Eleven"})]
    resp = await start(client, shop, "\n".join(lines).encode(), "application/x-ndjson")
    assert resp.status_code == 202, resp.text
    job = await wait_job(client, shop.secret, resp.json()["id"])
    assert (job["status"], job["done"], job["failed"]) == ("succeeded", 2, 1), job
    assert job["errors"][0]["line"] == 2 and "nested too deeply" in job["errors"][0]["error"]


def damaged_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.csv", "image_url,name\n" + f"{URL.format(1)},A\n" * 2000)
    data = bytearray(buf.getvalue())
    data[60:70] = b"\xff" * 10  # inside the manifest's compressed data
    return bytes(data)


async def test_unreadable_manifests_are_400(client, shop, snapshot):
    before = await snapshot()
    ok = json.dumps({"image_url": URL.format(1)})
    cases = [
        # a JSON array nested too deeply, or with a number Python will not convert: the original answered 500
        (f"[{ok}, {'[' * 100_000}]".encode(), "application/json", "nested too deeply"),
        (f"[{ok}, {'7' * 5000}]".encode(), "application/json", "invalid JSON at line 1"),
        # invalid UTF-8, alone and in a ZIP, also past the first read of the stream
        (f"image_url,name\n{URL.format(1)},Caf".encode() + b"\xe9\n", "text/csv", "not UTF-8"),
        (make_zip({"manifest.csv": f"image_url,name\n{URL.format(1)},A\n".encode() * 20_000 + b"\xff\n"}),
         "application/zip", "not UTF-8"),
        (make_zip({"manifest.jsonl": b"\xfe" + ok.encode()}), "application/zip", "not UTF-8"),
        (damaged_zip(), "application/zip", "cannot read manifest.csv"),  # zlib.error: the original answered 500
    ]
    for body, ctype, words in cases:
        resp = await start(client, shop, body, ctype)
        assert resp.status_code == 400, (words, resp.text)
        assert words in resp.json()["detail"], (words, resp.text)
    assert await snapshot() == before


def multipart_head(boundary: str, filename: str = "catalog.zip", field: str = "file") -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/zip\r\n\r\n").encode()


class Body:
    """A request body sent in 64 KiB chunks, recording how much the app asked for and how big the import
    folder got while it was being sent."""

    def __init__(self, folder: Path, head: bytes, size: int, tail: bytes) -> None:
        self.folder, self.head, self.size, self.tail = folder, head, size, tail
        self.sent = 0
        self.finished = False
        self.folder_peak = 0

    def _folder_size(self) -> int:
        total = 0
        for path in self.folder.glob("*") if self.folder.exists() else ():
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                pass
        return total

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunk = b"\0" * (64 * 1024)
        for piece in (self.head, *[chunk] * (self.size // len(chunk)), self.tail):
            self.folder_peak = max(self.folder_peak, self._folder_size())
            self.sent += len(piece)
            yield piece
        self.finished = True


@pytest.mark.parametrize("settings_overrides", [{"max_import_bytes": MiB}])
async def test_an_upload_over_the_limit_stops_being_read_at_the_limit(client, shop, settings, snapshot):
    before = await snapshot()
    folder = settings.media_dir / str(shop["id"]) / "imports"
    boundary = "limitboundary0123"
    ctype = f"multipart/form-data; boundary={boundary}"

    # multipart, chunked (no Content-Length): the original read all 32 MiB (Litestar's form parser) first
    body = Body(folder, multipart_head(boundary), 32 * MiB, f"\r\n--{boundary}--\r\n".encode())
    resp = await client.post("/api/v1/imports", content=body.__aiter__(), headers={**shop.secret, "Content-Type": ctype})
    assert resp.status_code == 413, resp.text
    assert "HUB_MAX_IMPORT_BYTES" in resp.json()["detail"]
    assert not body.finished and body.sent <= MiB + 3 * 64 * 1024, body.sent
    assert body.folder_peak <= MiB, body.folder_peak

    # a Content-Length over the limit: refused before any of the body is read (multipart or raw)
    for content_type in (ctype, "application/zip"):
        body = Body(folder, multipart_head(boundary), 32 * MiB, f"\r\n--{boundary}--\r\n".encode())
        length = len(body.head) + 32 * MiB + len(body.tail)
        resp = await client.post("/api/v1/imports", content=body.__aiter__(),
                                 headers={**shop.secret, "Content-Type": content_type, "Content-Length": str(length)})
        assert resp.status_code == 413, resp.text
        assert body.sent == 0, body.sent

    # a raw body without Content-Length still stops at the limit
    body = Body(folder, b"PK", 32 * MiB, b"")
    resp = await client.post("/api/v1/imports", content=body.__aiter__(),
                             headers={**shop.secret, "Content-Type": "application/zip"})
    assert resp.status_code == 413 and not body.finished and body.sent <= MiB + 2 * 64 * 1024
    assert await snapshot() == before


async def test_multipart_needs_a_whole_file_part(client, shop, snapshot):
    before = await snapshot()
    boundary = "b0undary"
    headers = {**shop.secret, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    archive = make_zip({"a.jpg": b"x"})
    without = multipart_head(boundary, field="photo") + archive + f"\r\n--{boundary}--\r\n".encode()
    resp = await client.post("/api/v1/imports", content=without, headers=headers)
    assert resp.status_code == 400 and "'file' field" in resp.json()["detail"], resp.text
    cut = multipart_head(boundary) + archive  # the body ends before the part does
    resp = await client.post("/api/v1/imports", content=cut, headers=headers)
    assert resp.status_code == 400 and "ends inside" in resp.json()["detail"], resp.text
    resp = await client.post("/api/v1/imports", content=archive,
                             headers={**shop.secret, "Content-Type": "multipart/form-data"})
    assert resp.status_code == 400 and "boundary" in resp.json()["detail"], resp.text
    assert await snapshot() == before


async def test_a_zip_with_too_many_entries_is_refused_before_its_directory_is_read(client, shop, snapshot, monkeypatch):
    import struct

    from hub.plugins.manual import files

    # (the real bounds, 200,000 entries and 8 MiB of directory, would cost a 19 MB test archive)
    monkeypatch.setattr(files, "MAX_ZIP_ENTRIES", 50)
    monkeypatch.setattr(files, "MAX_ZIP_DIRECTORY_BYTES", 2000)
    before = await snapshot()
    archive = make_zip({f"{n}.jpg": b"" for n in range(60)})
    resp = await start(client, shop, archive, "application/zip")
    assert resp.status_code == 413 and "60 entries" in resp.json()["detail"], resp.text
    # an end record that lies about the count is caught by the directory's size (what zipfile reads by)
    lying = bytearray(archive)
    end = lying.rfind(b"PK\x05\x06")
    lying[end + 8 : end + 12] = struct.pack("<HH", 1, 1)
    resp = await start(client, shop, bytes(lying), "application/zip")
    assert resp.status_code == 413 and "directory" in resp.json()["detail"], resp.text
    assert await snapshot() == before
