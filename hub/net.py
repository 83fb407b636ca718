"""Outbound HTTP to addresses the hub does not control (image URLs, shop platforms): only public addresses.

``check_url`` answers early with a clear reason. ``guarded_transport`` closes the gap a DNS answer that changes
between that check and the connection (DNS rebinding) would leave: it resolves the host itself at connect time,
refuses a non-public answer, and connects to the address it checked (TLS still verifies the host name).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
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


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _refusal(host: str, address: str) -> str:
    return (f"{REFUSED} {host} resolves to the non-public address {address} "
            "(set HUB_ALLOW_PRIVATE_FETCH=true to allow it)")


async def public_addresses(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to; ``Refused`` if any of them is not public."""
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Unresolvable(f"cannot resolve host {host} ({exc.strerror or exc})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        if not is_public(address):
            raise Refused(_refusal(host, address))
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


def guarded_transport(allow_private: bool, limits: httpx.Limits | None = None) -> httpx.AsyncHTTPTransport:
    """An httpx transport that connects only to public addresses (unless private ones are allowed)."""
    limits = limits or httpx.Limits()
    transport = httpx.AsyncHTTPTransport(limits=limits)
    if not allow_private:
        # httpx 0.28 builds its httpcore pool without a way to pass a network backend: build the same pool with one
        transport._pool = httpcore.AsyncConnectionPool(  # noqa: SLF001
            ssl_context=httpx.create_ssl_context(), max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            network_backend=PublicOnlyBackend(),
        )
    return transport


def is_refusal(exc: BaseException) -> bool:
    return str(exc).startswith(REFUSED)
