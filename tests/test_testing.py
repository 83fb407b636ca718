"""The plugin authors' contract suite (``hub.testing``), run for the example connector against its platform —
and shown to catch a connector that breaks the contract."""

from __future__ import annotations

import httpx
import pytest

from hub.connectors import CatalogPage, Delivery
from hub.plugin_manager import load_plugins
from hub.testing import ConnectorContract
from tests.feed_platform import FeedPlatform, signed


@pytest.fixture
def platform():
    feed = FeedPlatform(page_size=3)
    for pid in range(1, 9):
        feed.put(pid, [pid, pid + 100])
    yield feed
    feed.close()


class TestExampleConnector(ConnectorContract):
    @pytest.fixture
    def bad_connection_settings(self, platform):
        return platform.settings() | {"feed_url": f"{platform.base}/no-feed-here"}

    @pytest.fixture
    def connector(self):
        return load_plugins().connectors()["example"]  # as installed, through its entry point

    @pytest.fixture
    def connection_settings(self, platform):
        return platform.settings()

    @pytest.fixture
    def genuine_delivery(self, platform):
        body, headers = signed({"event": "product.updated", "delivery_id": "c-1", "product": platform.put(1, [5])})
        return Delivery({k.lower(): v for k, v in headers.items()}, body)

    @pytest.fixture
    def delete_delivery(self):
        body, headers = signed({"event": "product.deleted", "delivery_id": "c-2", "product": {"id": "1"}})
        return Delivery({k.lower(): v for k, v in headers.items()}, body)

    @pytest.fixture
    def same_id_delivery(self, platform):
        body, headers = signed({"event": "product.updated", "delivery_id": "c-1", "product": platform.put(2, [6])})
        return Delivery({k.lower(): v for k, v in headers.items()}, body)


class TrustingConnector:
    """Breaks the contract: accepts anything as authentic, and its catalog never says it ended."""

    def __init__(self, real):
        self.real = real
        self.name = real.name
        self.settings_model = real.settings_model

    def __getattr__(self, item):
        return getattr(self.real, item)

    def verify(self, ctx, delivery):
        return True

    async def catalog(self, ctx, cursor):
        async for page in self.real.catalog(ctx, cursor):
            yield type(page)(page.events, cursor=page.cursor or "again", total=page.total)


async def test_the_contract_catches_a_broken_connector(platform):
    contract = TestExampleConnector()
    broken = TrustingConnector(load_plugins().connectors()["example"])
    genuine = contract.genuine_delivery.__wrapped__(contract, platform)
    async for ctx in contract.ctx.__wrapped__(contract, broken, platform.settings(), "http://127.0.0.1:9/w"):
        with pytest.raises(AssertionError):
            contract.test_verify_refuses_a_tampered_body(broken, ctx, genuine)
        with pytest.raises(AssertionError):
            contract.test_verify_refuses_a_delivery_without_signature(broken, ctx, genuine)
        with pytest.raises(AssertionError, match="last page"):
            await contract.test_catalog_pages_resume_from_their_cursor(broken, ctx)


class HeaderTrustingConnector(TrustingConnector):
    """Breaks the contract differently: believes a header over the body, so any signed body can delete."""

    def parse(self, ctx, delivery):
        from hub.connectors import ParsedDelivery, ProductDeleted

        parsed = self.real.parse(ctx, delivery)
        if delivery.headers.get("x-example-event") == "product.deleted":
            return ParsedDelivery(parsed.delivery_id, (ProductDeleted("1"),), "product.deleted")
        return parsed


async def test_the_contract_catches_a_connector_that_trusts_headers(platform):
    contract = TestExampleConnector()
    broken = HeaderTrustingConnector(load_plugins().connectors()["example"])
    genuine = contract.genuine_delivery.__wrapped__(contract, platform)
    delete = contract.delete_delivery.__wrapped__(contract)
    delete = Delivery({**delete.headers, "x-example-event": "product.deleted"}, delete.body)
    async for ctx in contract.ctx.__wrapped__(contract, broken, platform.settings(), "http://127.0.0.1:9/w"):
        with pytest.raises(AssertionError, match="delete topic header"):
            contract.test_a_delete_is_a_delete_and_a_product_body_never_is(broken, ctx, genuine, delete)


class NaiveTimeConnector(TrustingConnector):
    """Breaks the contract as a first PrestaShop connector did: a feed's offset-free times used as they came."""

    def parse(self, ctx, delivery):
        from dataclasses import replace

        from hub.connectors import ParsedDelivery

        parsed = self.real.parse(ctx, delivery)
        return ParsedDelivery(parsed.delivery_id, tuple(replace(e, updated_at=e.updated_at.replace(tzinfo=None))
                                                        for e in parsed.events), parsed.topic)


async def test_the_contract_catches_naive_timestamps(platform):
    contract = TestExampleConnector()
    broken = NaiveTimeConnector(load_plugins().connectors()["example"])
    genuine = contract.genuine_delivery.__wrapped__(contract, platform)
    async for ctx in contract.ctx.__wrapped__(contract, broken, platform.settings(), "http://127.0.0.1:9/w"):
        with pytest.raises(AssertionError, match="time zone"):
            contract.test_parse_gives_typed_valid_events_and_a_delivery_id(broken, ctx, genuine)


class CarelessConnector(TrustingConnector):
    """Breaks the contract in the ways the strict suite was made for: any credentials pass, the catalog is read
    with a client of its own, image URLs carry the secret, and ProductChanged comes without a way to read it."""

    async def check(self, ctx):
        return {}

    def parse(self, ctx, delivery):
        from dataclasses import replace

        from hub.connectors import ParsedDelivery, ProductChanged

        parsed = self.real.parse(ctx, delivery)
        leaky = tuple(replace(e, images=tuple(replace(i, url=f"{i.url}?key={ctx.settings.webhook_secret}")
                                              for i in e.images)) for e in parsed.events)
        return ParsedDelivery(parsed.delivery_id, leaky + (ProductChanged("1"),), parsed.topic)


async def test_the_strict_contract_catches_a_careless_connector(platform, tmp_path):
    contract = TestExampleConnector()
    careless = CarelessConnector(load_plugins().connectors()["example"])
    genuine = contract.genuine_delivery.__wrapped__(contract, platform)
    bad = contract.bad_connection_settings.__wrapped__(contract, platform)
    with pytest.raises(pytest.fail.Exception, match="ConnectorError"):
        await contract.test_check_refuses_bad_credentials(careless, "http://127.0.0.1:9/w", bad)
    async for ctx in contract.ctx.__wrapped__(contract, careless, platform.settings(), "http://127.0.0.1:9/w"):
        with pytest.raises(AssertionError, match="carries a secret setting"):
            contract.test_parse_gives_typed_valid_events_and_a_delivery_id(careless, ctx, genuine)
        with pytest.raises(AssertionError, match="must implement product"):
            contract.test_a_connector_that_sends_product_changed_reads_products(careless, ctx, genuine, None, None)

    class OwnClient(TrustingConnector):
        async def catalog(self, ctx, cursor):
            async with httpx.AsyncClient() as own:
                resp = await own.get(ctx.settings.feed_url, params={"page": 1})
            yield CatalogPage(events=(), cursor=None, total=len(resp.json()["products"]))

    own = OwnClient(load_plugins().connectors()["example"])
    async for ctx in contract.ctx.__wrapped__(contract, own, platform.settings(), "http://127.0.0.1:9/w"):
        with pytest.raises(AssertionError, match="without ctx.http"):
            await contract.test_catalog_pages_resume_from_their_cursor(own, ctx)

    one_page = FeedPlatform(page_size=100)
    one_page.put(1, [1])
    try:
        real = load_plugins().connectors()["example"]
        async for ctx in contract.ctx.__wrapped__(contract, real, one_page.settings(), "http://127.0.0.1:9/w"):
            with pytest.raises(AssertionError, match="fits one page"):
                await contract.test_catalog_pages_resume_from_their_cursor(real, ctx)
    finally:
        one_page.close()


def test_running_hub_serves_a_plugin_end_to_end(tmp_path):
    """What docs/plugins.md tells an author to do, with hub.testing alone: a real `hub serve` (its own generated
    model), the installed example plugin, a fake platform on loopback; connect, sync, images ready, a signed
    delivery applied, the shop's publishable key ranks them."""
    import time

    from hub.testing import running_hub

    feed = FeedPlatform(page_size=2)
    for pid in range(1, 4):
        feed.put(pid, [pid])
    try:
        with running_hub(tmp_path / "hub") as hub:
            shop = hub.create_shop()
            key = {"Authorization": f"Bearer {shop['secret_key']}"}
            made = httpx.post(f"{hub.base}/api/v1/connections", headers=key, timeout=60,
                              json={"connector": "example", "settings": feed.settings()})
            assert made.status_code == 201, made.text
            connection = made.json()

            def settle(wanted: int) -> list[dict]:
                deadline = time.monotonic() + 90
                while True:
                    items = httpx.get(f"{hub.base}/api/v1/images", headers=key, params={"limit": 100}).json()["items"]
                    if len(items) == wanted and all(i["status"] == "ready" for i in items):
                        return items
                    assert time.monotonic() < deadline, items
                    time.sleep(0.2)

            assert len(settle(3)) == 3
            body, headers = signed({"event": "product.updated", "delivery_id": "e2e-1",
                                    "product": feed.put(4, [4], updated_at="2026-11-02T09:00:00")})
            hook = httpx.post(connection["webhook_url"], content=body, headers=headers, timeout=30)
            assert hook.status_code == 200, hook.text
            assert len(settle(4)) == 4
            ranked = httpx.post(f"{hub.base}/api/v1/recommendations", timeout=30,
                                headers={"Authorization": f"Bearer {shop['publishable_key']}"},
                                json={"prompt": "a dress", "limit": 10})
            assert ranked.status_code == 200 and len(ranked.json()["results"]) == 4
    finally:
        feed.close()


def test_the_contract_catches_image_credentials_given_by_prefix(platform):
    """A connector that gives its image key to every URL that merely starts like its store's."""
    contract = TestExampleConnector()
    example = load_plugins().connectors()["example"]

    class PrefixKeyed(type(example)):
        def image_headers(self, settings, url):
            return {"X-Image-Key": "k"} if url.startswith(settings.feed_url.rsplit("/feed", 1)[0]) else {}

    from hub.connectors import ConnectionContext

    connector = PrefixKeyed()
    settings = platform.settings()
    ctx = ConnectionContext(connector.settings_model.model_validate(settings), None, "http://127.0.0.1:9/w")
    with pytest.raises(AssertionError, match="not the platform's origin"):
        contract.test_image_credentials_go_only_to_the_platform(connector, ctx, settings)
