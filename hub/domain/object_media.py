"""Media in an S3-compatible bucket (``HUB_MEDIA_URL=s3://bucket/prefix``): AWS S3, MinIO, Ceph, R2…, through
obstore (the Rust ``object_store`` crate), so that API processes and workers on different hosts share photos,
thumbnails and import files without a shared volume. The bucket is the operator's to create."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

import anyio
import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from hub.domain.media import MediaStore
from hub.errors import TooLarge, Unavailable
from hub.settings import Settings

if TYPE_CHECKING:
    from obstore.store import S3Config

log = logging.getLogger("hub.media")
T = TypeVar("T")
CALL_SECONDS = 30  # every request's own deadline, its body included (a multipart upload: each part's)
PIECE_BYTES = 8 * 1024 * 1024  # an import file is downloaded in ranges of this size, each within CALL_SECONDS
CHECK_SECONDS = 10  # /ready's write to the bucket is done at most this often
CONNECT_SECONDS = 5
RETRY_SECONDS = 20  # retries of a failed request stop after this
PROBE = ".hub-ready-probe"  # written and removed again by /ready


class ObjectMedia(MediaStore):
    kind = "s3"

    def __init__(self, store: S3Store, where: str, max_bytes: int, scratch: Path) -> None:
        super().__init__(max_bytes)
        self.store = store
        self.where = where  # s3://bucket/prefix, for the log (never the credentials; not told to API callers)
        self.scratch = scratch  # where downloads of import files go while they are read
        self._checked: tuple[float, str] | None = None  # (when, what) of the last write check

    @classmethod
    def for_settings(cls, settings: Settings) -> ObjectMedia:
        url = settings.media_url or ""
        parts = urlsplit(url)
        config: S3Config = {"region": settings.s3_region}
        if settings.s3_endpoint_url:
            config["endpoint"] = settings.s3_endpoint_url
            config["virtual_hosted_style_request"] = False  # MinIO and most others: the bucket in the path
        if settings.s3_access_key_id:
            config["access_key_id"] = settings.s3_access_key_id
        if settings.s3_secret_access_key:
            config["secret_access_key"] = settings.s3_secret_access_key
        store = S3Store(
            parts.netloc, prefix=parts.path.strip("/") or None, config=config,
            client_options={"timeout": f"{CALL_SECONDS}s", "connect_timeout": f"{CONNECT_SECONDS}s",
                            "allow_http": (settings.s3_endpoint_url or "").startswith("http://")},
            retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=RETRY_SECONDS),
                          "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=5),
                                      "base": 2}},
        )
        return cls(store, url.rstrip("/"), settings.max_upload_bytes, settings.home / "tmp")

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        """``call``; the store unreachable, refusing us, or without its bucket: ``Unavailable`` (503). A name
        that is not there stays ``FileNotFoundError``."""
        try:
            return await call
        except FileNotFoundError as exc:
            if "NoSuchBucket" in str(exc):  # (S3 answers 404 for the bucket too: that is the store missing)
                raise self._no_bucket() from None
            raise
        except (BaseError, OSError) as exc:
            first_line = (str(exc).splitlines() or [""])[0]  # (the rest is the client's debug dump)
            log.warning("media store error", extra={"where": self.where, "what": what,
                                                     "error": f"{type(exc).__name__}: {first_line}"[:300]})
            raise Unavailable("media", f"{what} failed ({type(exc).__name__}); the operator should check "
                                       "HUB_MEDIA_URL and the HUB_S3_* settings") from None

    def _no_bucket(self) -> Unavailable:
        log.warning("media bucket missing", extra={"where": self.where})
        return Unavailable("media", "the media store's bucket does not exist")

    async def _put(self, what: str, relative: str, body: bytes | Path) -> None:
        try:
            await self._call(what, obstore.put_async(self.store, self.checked_name(relative), body))
        except FileNotFoundError:  # S3's only reason to answer a write "not found": the bucket is not there
            raise self._no_bucket() from None

    async def write(self, relative: str, data: bytes) -> str:
        await self._put("a write", relative, data)
        return relative

    async def read(self, relative: str) -> bytes:
        result = await self._call("a read", obstore.get_async(self.store, self.checked_name(relative)))
        size = int(result.meta["size"])
        if size > self.max_bytes:
            raise self._too_large(relative, size)
        return bytes(await self._call("a read", result.bytes_async()))

    async def age(self, relative: str) -> float | None:
        try:
            meta = await self._call("a look-up", obstore.head_async(self.store, self.checked_name(relative)))
        except FileNotFoundError:
            return None
        return max(0.0, time.time() - meta["last_modified"].timestamp())

    async def delete(self, relative: str | None) -> None:
        if relative:
            try:
                await self._call("a delete", obstore.delete_async(self.store, self.checked_name(relative)))
            except FileNotFoundError:
                pass

    async def delete_shop(self, shop_id: int) -> None:
        async def names() -> list[str]:
            found: list[str] = []
            async for batch in obstore.list(self.store, prefix=f"{int(shop_id)}/", chunk_size=1000):
                found += [meta["path"] for meta in batch]
            return found

        found = await self._call("a listing", names())
        for start in range(0, len(found), 1000):
            await self._call("a delete", obstore.delete_async(self.store, found[start:start + 1000]))

    async def check(self) -> str:
        if self._checked is not None and time.monotonic() - self._checked[0] < CHECK_SECONDS:
            return self._checked[1]
        try:
            with anyio.fail_after(CONNECT_SECONDS + 5):
                await self.write(PROBE, b"ok")
                await self.delete(PROBE)
            outcome = "ok"
        except Unavailable as exc:
            outcome = f"unreachable ({exc.detail})"
        except TimeoutError:
            outcome = "unreachable (timed out)"
        self._checked = (time.monotonic(), outcome)
        return outcome

    async def put_file(self, relative: str, path: Path) -> None:
        await self._put("an upload", relative, path)
        await anyio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))

    @asynccontextmanager
    async def local_file(self, relative: str, max_bytes: int) -> AsyncIterator[Path]:
        """The object downloaded in ranges of ``PIECE_BYTES`` (each request within its own deadline, so a large
        import file takes as long as it needs and a stalled one fails within a piece's time)."""
        name = self.checked_name(relative)
        try:
            size = int((await self._call("a look-up", obstore.head_async(self.store, name)))["size"])
        except FileNotFoundError:  # (a HEAD's answer has no body: a GET tells a missing bucket from a missing file)
            await self._call("a look-up", obstore.get_async(self.store, name))
            raise
        if size > max_bytes:
            raise TooLarge(f"the stored import file is {size} bytes, more than {max_bytes}")
        await anyio.to_thread.run_sync(lambda: self.scratch.mkdir(parents=True, exist_ok=True))
        fd, local = tempfile.mkstemp(dir=self.scratch, prefix="import-", suffix=Path(relative).suffix)
        path = Path(local)
        try:
            with os.fdopen(fd, "wb") as out:
                for start in range(0, size, PIECE_BYTES):
                    piece = await self._call("a download", obstore.get_range_async(
                        self.store, name, start=start, end=min(size, start + PIECE_BYTES)))
                    await anyio.to_thread.run_sync(out.write, memoryview(piece))
            yield path
        finally:
            await anyio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))
