"""Fetching product images by URL: checked addresses and redirects, a size cap, a total deadline and a minimum
rate, and failure reasons that say what went wrong (DNS, TLS, connection, timeout, HTTP status, size)."""

from __future__ import annotations

import ssl
from http.cookiejar import DefaultCookiePolicy
from collections.abc import Mapping
from urllib.parse import urljoin

import httpx

from hub import __version__
from hub.net import (
    DeadlineExceeded,
    Refused,
    ResponseTooLarge,
    Unresolvable,
    check_url,
    is_refusal,
    limited_client,
)

USER_AGENT = f"FashionHub/{__version__} (+image indexer)"
PERMANENT_STATUSES = (400, 401, 403, 404, 410, 451)


class FetchError(Exception):
    """The image could not be fetched. ``permanent`` errors fail at once; others are retried."""

    def __init__(self, reason: str, *, permanent: bool, counts: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.counts = counts  # False: the hub's own congestion, not the host's fault (not an attempt)


async def check_host(url: str, allow_private: bool) -> None:
    """Refuse URLs that are not http(s) or whose host resolves to a private, loopback or link-local address."""
    try:
        await check_url(url, allow_private)
    except Refused as exc:
        raise FetchError(str(exc), permanent=True) from None
    except Unresolvable as exc:
        raise FetchError(f"DNS: {exc}", permanent=False) from None


def _cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return exc


def describe(exc: httpx.HTTPError, url: str) -> FetchError:
    """An httpx failure as a reason a merchant can act on, and whether trying again may help."""
    where = url[:200]
    if is_refusal(exc):  # the address changed to a private one after the check (DNS rebinding)
        return FetchError(str(exc), permanent=True)
    if isinstance(exc, ResponseTooLarge):
        return FetchError(f"size: {exc} ({where})", permanent=True)
    if isinstance(exc, DeadlineExceeded):
        return FetchError(f"timeout: {exc} ({where})", permanent=False)
    if isinstance(exc, httpx.PoolTimeout):
        return FetchError("busy: no free connection to fetch with; trying again", permanent=False, counts=False)
    if isinstance(exc, httpx.ConnectTimeout):
        return FetchError(f"timeout: no connection to the host within the time limit ({where})", permanent=False)
    if isinstance(exc, httpx.TimeoutException):
        return FetchError(f"timeout: the host stopped answering ({where})", permanent=False)
    root = _cause(exc)
    if isinstance(root, ssl.SSLError) or "CERTIFICATE" in str(exc).upper() or "SSL" in type(root).__name__:
        detail = getattr(root, "verify_message", None) or getattr(root, "reason", None) or type(root).__name__
        return FetchError(f"TLS: the secure connection failed ({detail}) ({where})", permanent=False)
    if isinstance(exc, httpx.ConnectError):
        text = str(exc)
        if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text \
                or "Temporary failure in name resolution" in text or "cannot resolve" in text:
            return FetchError(f"DNS: the host name does not resolve ({where})", permanent=False)
        return FetchError(f"connection: the host refused or dropped the connection ({where})", permanent=False)
    if isinstance(exc, httpx.DecodingError):
        return FetchError(f"the answer could not be decoded ({exc}) ({where})", permanent=True)
    if isinstance(exc, httpx.RemoteProtocolError):
        return FetchError(f"connection: the host broke off the answer ({where})", permanent=False)
    return FetchError(f"cannot fetch {where} ({type(exc).__name__})", permanent=False)


async def fetch_image(
    client: httpx.AsyncClient,
    url: str,
    *,
    max_bytes: int,
    allow_private: bool,
    max_redirects: int = 5,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """The body at ``url`` (following up to ``max_redirects`` checked redirects), at most ``max_bytes``.
    ``headers`` (a connection's credentials) go only to ``url``'s own origin: a redirect elsewhere drops them."""
    origin = _origin(url)
    for _ in range(max_redirects + 1):
        await check_host(url, allow_private)
        sent = {"User-Agent": USER_AGENT} | (dict(headers or {}) if _origin(url) == origin else {})
        try:
            async with client.stream("GET", url, headers=sent) as resp:
                if resp.is_redirect:
                    location = resp.headers.get("location")
                    if not location:
                        raise FetchError(f"redirect without a Location from {url[:200]}", permanent=True)
                    url = urljoin(url, location)
                    continue
                if resp.status_code in PERMANENT_STATUSES:
                    raise FetchError(f"HTTP {resp.status_code} from {url[:200]}", permanent=True)
                if resp.status_code >= 400:
                    raise FetchError(f"HTTP {resp.status_code} from {url[:200]}", permanent=False)
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise FetchError(f"size: the image is larger than the limit of {max_bytes} bytes",
                                         permanent=True)
                return bytes(body)
        except httpx.HTTPError as exc:
            raise describe(exc, url) from None
    raise FetchError(f"more than {max_redirects} redirects", permanent=True)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = httpx.URL(url)
    return parts.scheme, parts.host, parts.port


def make_client(timeout: float, allow_private: bool, *, max_bytes: int = 64 * 1024 * 1024,
                deadline: float = 60.0, min_rate: float = 0.0, max_connections: int = 64) -> httpx.AsyncClient:
    """The image fetcher's client: every fetch bounded by ``deadline`` seconds in all (``timeout`` for connecting
    and for each read), ``max_bytes`` and, after 5 s, ``min_rate`` bytes/s."""
    client = limited_client(allow_private=allow_private, max_bytes=max_bytes, deadline=deadline,
                            read_timeout=timeout, follow_redirects=False, min_rate=min_rate,
                            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=16))
    # one client fetches every shop's images: a cookie one host sets (after a fetch with a connection's
    # credentials, say) must never ride along with another shop's fetch; it keeps none
    client.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return client
