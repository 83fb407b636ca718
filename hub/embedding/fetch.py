"""Fetching product images by URL: timeouts, a size cap, checked redirects, no private addresses."""

from __future__ import annotations

from urllib.parse import urljoin

import httpx

from hub import __version__
from hub.net import Refused, Unresolvable, check_url, guarded_transport, is_refusal

USER_AGENT = f"FashionHub/{__version__} (+image indexer)"


class FetchError(Exception):
    """The image could not be fetched. ``permanent`` errors fail at once; others are retried."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


async def check_host(url: str, allow_private: bool) -> None:
    """Refuse URLs that are not http(s) or whose host resolves to a private, loopback or link-local address."""
    try:
        await check_url(url, allow_private)
    except Refused as exc:
        raise FetchError(str(exc), permanent=True) from None
    except Unresolvable as exc:
        raise FetchError(str(exc), permanent=False) from None


async def fetch_image(
    client: httpx.AsyncClient,
    url: str,
    *,
    max_bytes: int,
    allow_private: bool,
    max_redirects: int = 5,
) -> bytes:
    """The body at ``url`` (following up to ``max_redirects`` checked redirects), at most ``max_bytes``."""
    for _ in range(max_redirects + 1):
        await check_host(url, allow_private)
        try:
            async with client.stream("GET", url, headers={"User-Agent": USER_AGENT}) as resp:
                if resp.is_redirect:
                    location = resp.headers.get("location")
                    if not location:
                        raise FetchError(f"redirect without a Location from {url[:200]}", permanent=True)
                    url = urljoin(url, location)
                    continue
                if resp.status_code in (404, 410, 401, 403, 400, 451):
                    raise FetchError(f"HTTP {resp.status_code} from {url[:200]}", permanent=True)
                if resp.status_code >= 400:
                    raise FetchError(f"HTTP {resp.status_code} from {url[:200]}", permanent=False)
                declared = resp.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise FetchError(f"image is {declared} bytes; the limit is {max_bytes}", permanent=True)
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise FetchError(f"image is larger than the limit of {max_bytes} bytes", permanent=True)
                return bytes(body)
        except httpx.TimeoutException:
            raise FetchError(f"timed out fetching {url[:200]}", permanent=False) from None
        except httpx.HTTPError as exc:
            if is_refusal(exc):  # the address changed to a private one after the check (DNS rebinding)
                raise FetchError(str(exc), permanent=True) from None
            raise FetchError(f"cannot fetch {url[:200]} ({type(exc).__name__})", permanent=False) from None
    raise FetchError(f"more than {max_redirects} redirects", permanent=True)


def make_client(timeout: float, allow_private: bool) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        follow_redirects=False,
        transport=guarded_transport(allow_private, httpx.Limits(max_connections=32, max_keepalive_connections=16)),
    )
