"""Image intake checks (decoded by Pillow, never trusted by name or type) and the media folder."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from hub.errors import HubError, TooLarge, UnsupportedMedia
from hub.settings import Settings

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


class MediaStore:
    """Files under ``HUB_HOME/media/<shop>/<hash[:2]>/<hash>.<ext>``, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def for_settings(cls, settings: Settings) -> MediaStore:
        """The media folder of HUB_HOME, with this process's decodes bounded by HUB_MAX_DECODES."""
        DECODES.resize(settings.max_decodes)
        return cls(settings.media_dir)

    def relative_path(self, shop_id: int, image: CheckedImage) -> str:
        return f"{shop_id}/{image.content_hash[:2]}/{image.content_hash}.{image.extension}"

    def path(self, relative: str) -> Path:
        full = (self.root / relative).resolve()
        if self.root.resolve() not in full.parents:
            raise ValueError(f"media path escapes the media folder: {relative}")
        return full

    def save(self, shop_id: int, image: CheckedImage) -> str:
        """Store an uploaded photo under its content hash; the path relative to the media folder."""
        return self.write(self.relative_path(shop_id, image), image.data)

    @staticmethod
    def is_kept(relative: str) -> bool:
        """A photo the hub kept from a credentialed fetch (it can be fetched again), not a shop's upload."""
        return relative.split("/")[1:2] == ["kept"]

    def keep(self, shop_id: int, image_id: int, image: CheckedImage) -> str:
        """Keep a fetched photo under a name of its own (``<shop>/kept/<image id>-<random>.<ext>``): never shared
        with another image or another fetch, so deleting a replaced photo never takes the one that replaced it."""
        name = f"{int(image_id)}-{secrets.token_hex(8)}.{image.extension}"
        return self.write(f"{int(shop_id)}/kept/{name}", image.data)

    def write(self, relative: str, data: bytes) -> str:
        """Write atomically (a reader sees the old file or the whole new one)."""
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
        return relative

    def read(self, relative: str) -> bytes:
        return self.path(relative).read_bytes()

    def delete(self, relative: str | None) -> None:
        if relative:
            self.path(relative).unlink(missing_ok=True)

    def drop_thumbnails(self, shop_id: int, image_ids: list[int]) -> None:
        """The thumbnails (and failure marks) of removed or replaced images."""
        for image_id in image_ids:
            self.delete(thumbnail_path(shop_id, image_id))
            self.delete(thumbnail_path(shop_id, image_id) + ".failed")

    def delete_shop(self, shop_id: int) -> None:
        shutil.rmtree(self.root / str(int(shop_id)), ignore_errors=True)

    def writable(self) -> bool:
        self.root.mkdir(parents=True, exist_ok=True)
        return os.access(self.root, os.W_OK)
