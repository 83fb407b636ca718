"""Outbound connections go only to public addresses: checked up front, and again when connecting (so a DNS
answer that changes in between — rebinding — cannot reach a private address)."""

from __future__ import annotations

import socket

import httpx
import pytest

from hub import net
from hub.domain.fetching import FetchError, fetch_image, make_client
from tests.feed_platform import FeedPlatform


@pytest.fixture
def local():
    platform = FeedPlatform()
    yield platform
    platform.close()


async def test_a_host_that_resolves_to_loopback_is_refused_when_connecting(local):
    port = local.base.rsplit(":", 1)[1]
    async with httpx.AsyncClient(transport=net.guarded_transport(allow_private=False)) as http:
        with pytest.raises(httpx.ConnectError, match="private, loopback or link-local address"):
            await http.get(f"http://localhost:{port}/img/1.jpg")
    async with httpx.AsyncClient(transport=net.guarded_transport(allow_private=True)) as http:
        assert (await http.get(f"http://localhost:{port}/img/1.jpg")).status_code == 200


async def test_dns_rebinding_between_check_and_connect_is_refused(local, monkeypatch):
    port = int(local.base.rsplit(":", 1)[1])
    answers = iter(["93.184.216.34", "127.0.0.1"])  # public when checked, loopback when connecting

    async def rebinding_resolver(host, port_, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port_))]

    monkeypatch.setattr(net.anyio, "getaddrinfo", rebinding_resolver)
    async with make_client(5, allow_private=False) as http:
        with pytest.raises(FetchError) as caught:
            await fetch_image(http, f"http://images.rebind.example:{port}/img/1.jpg", max_bytes=10**6,
                              allow_private=False)
    assert caught.value.permanent and "private, loopback or link-local" in caught.value.reason and "127.0.0.1" not in caught.value.reason


@pytest.mark.parametrize("address, public", [("8.8.8.8", True), ("10.0.0.1", False), ("169.254.169.254", False),
                                             ("::1", False), ("::ffff:127.0.0.1", False), ("2606:4700::1111", True),
                                             ("64:ff9b::a00:5", False), ("64:ff9b:1::a00:5", False),
                                             ("2002:a00:5::1", False), ("2001:0:4136:e378::1", False),
                                             ("::7f00:1", False)])
def test_public_addresses(address, public):
    assert net.is_public(address) is public
