"""A shopper's photo as a query ("search by photo"): sent with the request or fetched from a URL, checked as an
upload is (size, pixels, formats, a bounded decode), embedded by the image tower in this process, and never
written anywhere — not to the media folder, not to the prompt log."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import numpy as np
from PIL import Image as PILImage

from hub.domain.fetching import FetchError, fetch_image, make_client
from hub.domain.media import DECODES, check_image
from hub.errors import Unavailable, Unprocessable
from hub.search.encoder import Encoder, ModelUnavailable
from hub.settings import Settings

CONCURRENT_PHOTOS = 2  # photos embedded at once in this process (each is a forward pass of the image tower)
CONCURRENT_FETCHES = 8
PHOTO_DEADLINE = 10.0  # seconds a shopper's photo URL may take in all (a shopper is waiting)
SLOT_WAIT = 2.0  # seconds a photo waits for a free slot before the answer is "busy" (503)
MIN_RATE = 32 * 1024  # bytes/s a photo host must keep up after the first 5 s


class PhotoQueries:
    def __init__(self, settings: Settings, encoder: Encoder) -> None:
        self.settings = settings
        self.encoder = encoder
        self._encoding = asyncio.Semaphore(CONCURRENT_PHOTOS)
        self._fetching = asyncio.Semaphore(CONCURRENT_FETCHES)
        self._http: httpx.AsyncClient | None = None

    async def vector(self, data: bytes | None, url: str | None) -> np.ndarray:
        if data is None:
            if not url:
                raise Unprocessable("no photo: send a file or an image_url")
            data = await self._fetch(url)
        settings = self.settings
        await anyio.to_thread.run_sync(lambda: check_image(data, max_bytes=settings.max_upload_bytes,
                                                           max_pixels=settings.max_image_pixels))
        async with _slot(self._encoding):
            try:
                vector: np.ndarray = await anyio.to_thread.run_sync(self._encode, data)
            except ModelUnavailable as exc:
                raise Unavailable("model", str(exc)) from None
        return vector

    @property
    def deadline(self) -> float:
        return min(self.settings.fetch_deadline, PHOTO_DEADLINE)

    def _encode(self, data: bytes) -> np.ndarray:
        with DECODES.slot(), PILImage.open(io.BytesIO(data)) as pil:
            vectors: Any = self.encoder.encode_images([pil.convert("RGB")])
        return np.asarray(vectors[0], dtype=np.float32)

    async def _fetch(self, url: str) -> bytes:
        settings = self.settings
        if self._http is None:
            self._http = make_client(min(settings.fetch_timeout, PHOTO_DEADLINE), settings.allow_private_fetch,
                                     max_bytes=settings.max_upload_bytes, deadline=self.deadline, min_rate=MIN_RATE)
        try:
            async with _slot(self._fetching):
                with anyio.fail_after(self.deadline):  # all of it: lookups, every redirect
                    return await fetch_image(self._http, url, max_bytes=settings.max_upload_bytes,
                                             allow_private=settings.allow_private_fetch,
                                             max_redirects=settings.fetch_max_redirects)
        except TimeoutError:
            raise Unprocessable(f"cannot read the photo at image_url: it took more than {self.deadline:g} s") from None
        except FetchError as exc:
            raise Unprocessable(f"cannot read the photo at image_url: {exc.reason}") from None
        except (httpx.InvalidURL, ValueError) as exc:  # a host no URL parser takes ("https://[3]")
            raise Unprocessable(f"cannot read the photo at image_url: not a URL the hub can fetch ({exc})") from None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


@contextlib.asynccontextmanager
async def _slot(slots: asyncio.Semaphore) -> AsyncIterator[None]:
    """One of the process's photo slots, or 503 when none frees up within ``SLOT_WAIT``: a burst of photos
    waits briefly, never long."""
    try:
        await asyncio.wait_for(slots.acquire(), SLOT_WAIT)
    except TimeoutError:
        raise Unavailable("photo search", "too many photo searches at once; try again shortly") from None
    try:
        yield
    finally:
        slots.release()
