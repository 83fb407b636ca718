"""Image intake checks (decoded by Pillow, never trusted by name or type) and the media store."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
from PIL import Image, UnidentifiedImageError

from hub.errors import HubError, TooLarge, Unavailable, UnsupportedMedia
from hub.settings import Settings

log = logging.getLogger("hub.media")
FORMATS: dict[str, tuple[str, str]] = {  # Pillow format -> (mime type, file extension)
    "JPEG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "WEBP": ("image/webp", "webp"),
    "GIF": ("image/gif", "gif"),
    "BMP": ("image/bmp", "bmp"),
    "TIFF": ("image/tiff", "tiff"),
    "MPO": ("image/jpeg", "jpg"),
}


class DecodeSlots:
    """At most N image decodes at once in this process, whoever asks (uploads, imports, fetched images):
    a decoded photo near the pixel limit takes ~100 MB, so concurrency, not file size, decides peak memory."""

    def __init__(self, n: int = 2) -> None:
        self._semaphore = threading.BoundedSemaphore(n)
        self.size = n

    def resize(self, n: int) -> None:
        if n != self.size:
            self._semaphore, self.size = threading.BoundedSemaphore(n), n

    @contextmanager
    def slot(self) -> Iterator[None]:
        semaphore = self._semaphore
        with semaphore:
            yield


DECODES = DecodeSlots()  # sized from HUB_MAX_DECODES when the app or a worker starts


@dataclass(frozen=True)
class CheckedImage:
    """An image that decoded completely, with what the hub stores about it."""

    data: bytes
    content_hash: str
    mime_type: str
    extension: str
    width: int
    height: int


def check_image(data: bytes, *, max_bytes: int, max_pixels: int) -> CheckedImage:
    """Decode ``data`` fully or raise 413 (too large, too many pixels) / 415 (not a supported image)."""
    if len(data) > max_bytes:
        raise TooLarge(f"file is {len(data)} bytes; the limit is {max_bytes} bytes")
    if not data:
        raise UnsupportedMedia("the file is empty, not an image")
    with DECODES.slot(), warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format or ""
                width, height = img.size
                if width * height > max_pixels:
                    raise TooLarge(
                        f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
                    )
                if fmt not in FORMATS:
                    raise UnsupportedMedia(f"{fmt or 'this'} images are not accepted; send JPEG, PNG, WebP or GIF")
                img.load()  # full decode: catches truncated and corrupt files
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise TooLarge(f"image has more pixels than the limit of {max_pixels}") from None
        except UnidentifiedImageError:
            raise UnsupportedMedia("the file is not an image Pillow can decode") from None
        except HubError:
            raise
        except (OSError, SyntaxError, ValueError) as exc:
            raise UnsupportedMedia(f"the image is corrupt or truncated ({exc})") from None
    mime, ext = FORMATS[fmt]
    return CheckedImage(
        data=data,
        content_hash=hashlib.sha256(data).hexdigest(),
        mime_type=mime,
        extension=ext,
        width=width,
        height=height,
    )


def thumbnail_path(shop_id: int, image_id: int) -> str:
    """Where the console keeps an image's thumbnail (made on first view; removed with the image)."""
    return f"{int(shop_id)}/thumbs/{int(image_id)}-320.jpg"


class MediaStore(ABC):
    """Where photos, thumbnails and uploaded import files live: a folder (``FolderMedia``, the embedded default)
    or an S3-compatible bucket (``hub.domain.object_media.ObjectMedia``, ``HUB_MEDIA_URL=s3://…``), under the
    same relative names: ``<shop>/<hash[:2]>/<hash>-<random>.<ext>`` for uploads, ``<shop>/kept/…`` for kept
    fetches, ``<shop>/thumbs/…`` for thumbnails, ``<shop>/imports/…`` for import files. No two images share an
    object (the random part): deleting one image's photo never takes another's, whatever the timing. Every call
    is a coroutine; a store that cannot be reached raises ``Unavailable``; a name that is not there raises
    ``FileNotFoundError``."""

    kind: str

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes  # the largest object read back (an upload, a kept fetch, a thumbnail)

    @staticmethod
    def for_settings(settings: Settings) -> MediaStore:
        """The media store ``HUB_MEDIA_URL`` names (the media folder of HUB_HOME when unset), with this process's
        decodes bounded by HUB_MAX_DECODES."""
        DECODES.resize(settings.max_decodes)
        if settings.media_url:
            from hub.domain.object_media import ObjectMedia

            return ObjectMedia.for_settings(settings)
        return FolderMedia(settings.media_dir, settings.max_upload_bytes)


    @staticmethod
    def checked_name(relative: str) -> str:
        """``relative`` if it stays inside the store: no absolute names, no ``..``, no empty segments."""
        parts = relative.split("/")
        if relative.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in relative:
            raise ValueError(f"media path escapes the media store: {relative}")
        return relative

    async def save(self, shop_id: int, image: CheckedImage) -> str:
        """Store an uploaded photo under a name of its own (its content hash and a random part); the name."""
        name = f"{image.content_hash}-{secrets.token_hex(6)}.{image.extension}"
        return await self.write(f"{int(shop_id)}/{image.content_hash[:2]}/{name}", image.data)

    @staticmethod
    def is_kept(relative: str) -> bool:
        """A photo the hub kept from a credentialed fetch (it can be fetched again), not a shop's upload."""
        return relative.split("/")[1:2] == ["kept"]

    async def keep(self, shop_id: int, image_id: int, image: CheckedImage) -> str:
        """Keep a fetched photo under a name of its own (``<shop>/kept/<image id>-<random>.<ext>``): never shared
        with another image or another fetch, so deleting a replaced photo never takes the one that replaced it."""
        name = f"{int(image_id)}-{secrets.token_hex(8)}.{image.extension}"
        return await self.write(f"{int(shop_id)}/kept/{name}", image.data)

    async def drop_thumbnails(self, shop_id: int, image_ids: list[int]) -> None:
        """The thumbnails (and failure marks) of removed or replaced images."""
        for image_id in image_ids:
            await self.delete(thumbnail_path(shop_id, image_id))
            await self.delete(thumbnail_path(shop_id, image_id) + ".failed")

    async def tidy(self, photos: Sequence[str | None], shop_id: int | None = None,
                   thumbnails_of: list[int] | None = None) -> None:
        """After a commit: remove what the committed change left unused (photos, and the thumbnails of
        ``thumbnails_of``). Best effort: a store that cannot be reached now leaves them behind, with a warning,
        and the change stands (it must not be answered as failed, nor stop what comes after it)."""
        try:
            for photo in photos:
                await self.delete(photo)
            if shop_id is not None and thumbnails_of:
                await self.drop_thumbnails(shop_id, thumbnails_of)
        except (Unavailable, OSError, ValueError) as exc:
            log.warning("media left behind", extra={"error": f"{type(exc).__name__}: {exc}"[:300],
                                                    "photos": [p for p in photos if p][:50]})

    @abstractmethod
    async def write(self, relative: str, data: bytes) -> str:
        """Write ``data`` whole (a reader sees the old object or the new one); its name."""

    @abstractmethod
    async def read(self, relative: str) -> bytes:
        """The object, at most ``max_bytes`` of it (``TooLarge`` past that)."""

    @abstractmethod
    async def age(self, relative: str) -> float | None:
        """Seconds since the object was written; None when there is none."""

    @abstractmethod
    async def delete(self, relative: str | None) -> None:
        """Remove the object if it is there."""

    @abstractmethod
    async def delete_shop(self, shop_id: int) -> None:
        """Remove every object of the shop."""

    @abstractmethod
    async def check(self) -> str:
        """``ok`` when the store can be written, else what is wrong (for ``/ready``)."""

    @abstractmethod
    async def put_file(self, relative: str, path: Path) -> None:
        """Store a local file (an import upload, up to HUB_MAX_IMPORT_BYTES) without reading it into memory."""

    @abstractmethod
    def local_file(self, relative: str, max_bytes: int) -> AbstractAsyncContextManager[Path]:
        """A local path with the object's content for the block's duration (a folder's own file, or a
        download of at most ``max_bytes`` removed afterwards)."""

    def _too_large(self, relative: str, size: int) -> TooLarge:
        return TooLarge(f"the stored object {relative} is {size} bytes, more than the {self.max_bytes} allowed")


class FolderMedia(MediaStore):
    """Files under a folder (``HUB_HOME/media``), written atomically; file work runs in worker threads."""

    kind = "folder"

    def __init__(self, root: Path, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self.root = root

    def path(self, relative: str) -> Path:
        full = (self.root / self.checked_name(relative)).resolve()
        if self.root.resolve() not in full.parents:
            raise ValueError(f"media path escapes the media folder: {relative}")
        return full

    async def write(self, relative: str, data: bytes) -> str:
        await anyio.to_thread.run_sync(self._write, relative, data)
        return relative

    def _write(self, relative: str, data: bytes) -> None:
        target = self.path(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def read(self, relative: str) -> bytes:
        def run() -> bytes:
            path = self.path(relative)
            size = path.stat().st_size
            if size > self.max_bytes:
                raise self._too_large(relative, size)
            return path.read_bytes()

        return await anyio.to_thread.run_sync(run)

    async def age(self, relative: str) -> float | None:
        def run() -> float | None:
            try:
                return time.time() - self.path(relative).stat().st_mtime
            except FileNotFoundError:
                return None

        return await anyio.to_thread.run_sync(run)

    async def delete(self, relative: str | None) -> None:
        if relative:
            await anyio.to_thread.run_sync(lambda: self.path(relative).unlink(missing_ok=True))

    async def delete_shop(self, shop_id: int) -> None:
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(self.root / str(int(shop_id)), ignore_errors=True))

    async def check(self) -> str:
        def run() -> bool:
            self.root.mkdir(parents=True, exist_ok=True)
            return os.access(self.root, os.W_OK)

        return "ok" if await anyio.to_thread.run_sync(run) else "not writable"

    async def put_file(self, relative: str, path: Path) -> None:
        target = self.path(relative)
        if path.resolve() == target:
            return

        def move() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, target)

        await anyio.to_thread.run_sync(move)

    @asynccontextmanager
    async def local_file(self, relative: str, max_bytes: int) -> AsyncIterator[Path]:
        path = self.path(relative)
        if not await anyio.to_thread.run_sync(path.exists):
            raise FileNotFoundError(relative)
        yield path
