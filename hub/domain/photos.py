"""A shopper's photo as a query ("search by photo"): sent with the request or fetched from a URL, checked as an
upload is (size, pixels, formats, a bounded decode), embedded by the image tower in this process, and never
written anywhere — not to the media folder, not to the prompt log."""

from __future__ import annotations

import asyncio
import io
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
        async with self._encoding:
            try:
                vector: np.ndarray = await anyio.to_thread.run_sync(self._encode, data)
            except ModelUnavailable as exc:
                raise Unavailable("model", str(exc)) from None
        return vector

    def _encode(self, data: bytes) -> np.ndarray:
        with DECODES.slot(), PILImage.open(io.BytesIO(data)) as pil:
            vectors: Any = self.encoder.encode_images([pil.convert("RGB")])
        return np.asarray(vectors[0], dtype=np.float32)

    async def _fetch(self, url: str) -> bytes:
        settings = self.settings
        if self._http is None:
            self._http = make_client(settings.fetch_timeout, settings.allow_private_fetch,
                                     max_bytes=settings.max_upload_bytes, deadline=settings.fetch_deadline)
        try:
            async with self._fetching:
                with anyio.fail_after(settings.fetch_deadline):  # all of it: lookups, every redirect
                    return await fetch_image(self._http, url, max_bytes=settings.max_upload_bytes,
                                             allow_private=settings.allow_private_fetch,
                                             max_redirects=settings.fetch_max_redirects)
        except TimeoutError:
            raise Unprocessable(f"cannot read the photo at image_url: it took more than "
                                f"{settings.fetch_deadline:g} s") from None
        except FetchError as exc:
            raise Unprocessable(f"cannot read the photo at image_url: {exc.reason}") from None
        except (httpx.InvalidURL, ValueError) as exc:  # a host no URL parser takes ("https://[3]")
            raise Unprocessable(f"cannot read the photo at image_url: not a URL the hub can fetch ({exc})") from None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
