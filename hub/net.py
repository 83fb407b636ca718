"""Outbound HTTP to addresses the hub does not control (image URLs, shop platforms): only public addresses,
and never more than a byte limit or longer than a deadline.

``check_url`` answers early with a clear reason. ``guarded_transport`` closes the gap a DNS answer that changes
between that check and the connection (DNS rebinding) would leave: it resolves the host itself at connect time,
refuses a non-public answer, and connects to the address it checked (TLS still verifies the host name).
``LimitedTransport`` bounds every response: its bytes as they arrive (decompressed ones too), the total time of
the exchange from request to last byte, and optionally a minimum rate — so a host that streams forever or
trickles a byte at a time costs a bounded amount of memory and time.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx

REFUSED = "refused:"  # how a refusal reads in httpx.ConnectError messages


class Refused(Exception):
    """A URL the hub will not fetch: not http(s), or a host with a private, loopback or link-local address."""


class Unresolvable(Exception):
    """The host name does not resolve (maybe for now)."""


# IPv6 ranges that carry an IPv4 address a gateway may forward to (NAT64, 6to4, Teredo, the deprecated
# IPv4-compatible form): counted public by the registries, yet 64:ff9b::a00:5 reaches 10.0.0.5 behind NAT64
EMBEDDING_IPV4 = tuple(ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "2002::/16",
                                                           "2001::/32", "::/96"))


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        elif any(ip in network for network in EMBEDDING_IPV4):
            return False
    return ip.is_global and not ip.is_multicast


def _refusal(host: str) -> str:
    # the address itself is not echoed: a tenant must not learn what internal names resolve to
    return f"{REFUSED} {host} resolves to a private, loopback or link-local address, which the hub does not fetch"


async def public_addresses(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to; ``Refused`` if any of them is not public."""
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Unresolvable(f"cannot resolve host {host} ({exc.strerror or exc})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        if not is_public(address):
            raise Refused(_refusal(host))
    return addresses


async def check_url(url: str, allow_private: bool) -> None:
    """``Refused`` for a non-http(s) URL or a host with a non-public address; ``Unresolvable`` if DNS fails."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise Refused(f"not an http(s) URL: {url[:200]}")
    if not allow_private:
        await public_addresses(parts.hostname, parts.port or 0)


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """httpcore's own backend, but every TCP connection goes to a checked public address."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await public_addresses(host, port)
        except (Refused, Unresolvable) as exc:
            raise httpcore.ConnectError(str(exc)) from None
        return await self._inner.connect_tcp(addresses[0], port, timeout=timeout, local_address=local_address,
                                             socket_options=socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError(f"{REFUSED} unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every client of the process (loading the CA bundle takes ≈ 0.1 s), made
    again only if ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` (which httpx honours) change."""
    return _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _tls_context(_cert_file: str | None, _cert_dir: str | None) -> ssl.SSLContext:
    return httpx.create_ssl_context()


def guarded_transport(allow_private: bool, limits: httpx.Limits | None = None) -> httpx.AsyncHTTPTransport:
    """An httpx transport that connects only to public addresses (unless private ones are allowed)."""
    limits = limits or httpx.Limits()
    transport = httpx.AsyncHTTPTransport(limits=limits, verify=tls_context())
    if not allow_private:
        # httpx 0.28 builds its httpcore pool without a way to pass a network backend: build the same pool with one
        transport._pool = httpcore.AsyncConnectionPool(  # noqa: SLF001
            ssl_context=tls_context(), max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            network_backend=PublicOnlyBackend(),
        )
    return transport


def is_refusal(exc: BaseException) -> bool:
    return str(exc).startswith(REFUSED)


# -- limits on every response --------------------------------------------------------------------------------


class ResponseTooLarge(httpx.RequestError):
    """The answer exceeded the byte limit (not retried: it would be as large again)."""


class DeadlineExceeded(httpx.TimeoutException):
    """The exchange took longer than its total deadline, or the answer came slower than the minimum rate."""


class _BoundedDecoder:
    """gzip/deflate decompression that never produces more than ``limit`` bytes in all."""

    def __init__(self, encoding: str, limit: int) -> None:
        wbits = zlib.MAX_WBITS | 32 if encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS
        self.encoding = encoding
        self.obj = zlib.decompressobj(wbits)
        self.limit = limit
        self.produced = 0
        self.raw_fallback = encoding == "deflate"  # some servers send raw deflate under "deflate"

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        data = chunk
        while data:
            if self.obj.eof:  # bytes after the end of the compressed stream: never buffered, never read
                raise httpx.DecodingError(f"the {self.encoding} answer goes on after its end")
            try:
                piece = self.obj.decompress(data, self.limit - self.produced + 1)
            except zlib.error:
                if self.raw_fallback and self.produced == 0:
                    self.obj, self.raw_fallback = zlib.decompressobj(-zlib.MAX_WBITS), False
                    continue
                raise httpx.DecodingError(f"the {self.encoding} answer is corrupt") from None
            self.raw_fallback = False
            self.produced += len(piece)
            out += piece
            if self.produced > self.limit:
                return bytes(out)
            data = self.obj.unconsumed_tail
        if self.obj.eof and self.obj.unused_data:
            raise httpx.DecodingError(f"the {self.encoding} answer goes on after its end")
        return bytes(out)


class _LimitedStream(httpx.AsyncByteStream):
    def __init__(self, inner: Any, request: httpx.Request, max_bytes: int, deadline_at: float, started: float,
                 min_rate: float, grace: float, encoding: str | None) -> None:
        self.inner = inner
        self.request = request
        self.max_bytes = max_bytes
        self.deadline_at = deadline_at
        self.started = started
        self.min_rate = min_rate
        self.grace = grace
        self.decoder = _BoundedDecoder(encoding, max_bytes) if encoding else None

    def _too_large(self) -> ResponseTooLarge:
        return ResponseTooLarge(f"the answer is larger than the limit of {self.max_bytes} bytes", request=self.request)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        chunks = self.inner.__aiter__()
        while True:
            remaining = self.deadline_at - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded("the answer did not finish within its deadline", request=self.request)
            try:
                with anyio.fail_after(remaining):
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise DeadlineExceeded("the answer did not finish within its deadline", request=self.request) from None
            received += len(chunk)
            if received > self.max_bytes:  # the bytes on the wire, compressed or not
                raise self._too_large()
            if self.decoder is not None:
                chunk = self.decoder.feed(chunk)
                if self.decoder.produced > self.max_bytes:  # and what they decompress to
                    raise self._too_large()
            elapsed = time.monotonic() - self.started
            if self.min_rate and elapsed > self.grace and received < self.min_rate * elapsed:
                raise DeadlineExceeded(f"the answer arrives slower than {int(self.min_rate)} bytes/s",
                                       request=self.request)
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class LimitedTransport(httpx.AsyncBaseTransport):
    """Wraps a transport: each exchange ends within ``deadline`` seconds and reads at most ``max_bytes``.

    Requests ask for an uncompressed answer; a gzip/deflate one is decompressed here, within the same limit (so
    httpx gets it plain and a compression bomb stops at the limit). ``min_rate`` (bytes/s, after ``grace``
    seconds) ends answers that trickle.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, max_bytes: int, deadline: float, min_rate: float = 0.0,
                 grace: float = 5.0) -> None:
        self.inner = inner
        self.max_bytes = max_bytes
        self.deadline = deadline
        self.min_rate = min_rate
        self.grace = grace

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.monotonic()
        request.headers["Accept-Encoding"] = "gzip, deflate"
        try:
            with anyio.fail_after(self.deadline):
                response = await self.inner.handle_async_request(request)
        except TimeoutError:
            raise DeadlineExceeded(f"no answer within {self.deadline:g} s", request=request) from None
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "", "gzip", "x-gzip", "deflate"):
            await response.aclose()
            raise httpx.DecodingError(f"unsupported content encoding {encoding[:40]!r}", request=request)
        declared = response.headers.get("content-length", "")
        if encoding in ("identity", "") and declared.isdigit() and int(declared) > self.max_bytes:
            await response.aclose()
            raise ResponseTooLarge(f"the answer is {declared} bytes; the limit is {self.max_bytes}", request=request)
        headers = [(k, v) for k, v in response.headers.multi_items()
                   if k.lower() not in ("content-encoding", "content-length")] if encoding not in ("identity", "") \
            else response.headers.multi_items()
        return httpx.Response(
            status_code=response.status_code, headers=headers, request=request, extensions=response.extensions,
            stream=_LimitedStream(response.stream, request, self.max_bytes, started + self.deadline, started,
                                  self.min_rate, self.grace, encoding if encoding not in ("identity", "") else None),
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


def limited_client(*, allow_private: bool, max_bytes: int, deadline: float, read_timeout: float = 30.0,
                   follow_redirects: bool = True, min_rate: float = 0.0, limits: httpx.Limits | None = None,
                   headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    """An httpx client for hosts the hub does not control: public addresses only (unless allowed), every answer
    bounded in bytes and time. Redirects are followed through the same checks (each hop connects anew)."""
    transport = LimitedTransport(guarded_transport(allow_private, limits), max_bytes, deadline, min_rate)
    return httpx.AsyncClient(timeout=httpx.Timeout(read_timeout, connect=min(read_timeout, 10.0)),
                             follow_redirects=follow_redirects, max_redirects=5, transport=transport,
                             headers=headers)
