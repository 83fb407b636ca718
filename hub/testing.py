"""A contract test suite any connector plugin can run against its own fake platform (needs ``pytest``).

Subclass ``ConnectorContract`` in your tests and provide four fixtures::

    from hub.testing import ConnectorContract

    class TestMyConnector(ConnectorContract):
        @pytest.fixture
        def connector(self):
            return MyConnector()

        @pytest.fixture
        def connection_settings(self, my_platform):   # valid settings pointing at a running fake platform
            return {"store_url": my_platform.url, "token": "…"}

        @pytest.fixture
        def genuine_delivery(self, my_platform):      # a signed delivery carrying at least one product event
            return Delivery(headers={...}, body=b"…")

        @pytest.fixture
        def webhook_url(self):                          # optional: where your platform's webhooks should point
            return "http://127.0.0.1:9/webhooks/mine/1"

Three more optional fixtures cover what platforms really send (each test is skipped, with the reason, until
you provide it): ``delete_delivery`` (a genuine delivery deleting a product), ``child_delivery`` (a genuine
delivery about a child record — a variation — and its parent's external id, as a tuple), and
``same_id_delivery`` (a second genuine delivery with the same delivery id as ``genuine_delivery`` but another
body, as platforms that make ids per second send).

Every test here is something the hub relies on: the webhook endpoint, the sync job and the catalog ingest
assume it. Async tests are marked for pytest-asyncio.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from hub.connectors import (
    CatalogPage,
    ConnectionContext,
    ConnectionDisabled,
    ConnectionErased,
    Connector,
    Delivery,
    DeliveryRejected,
    ParsedDelivery,
    ProductChanged,
    ProductDeleted,
    ProductUpserted,
    check_event,
    secret_fields,
)

EVENT_TYPES = (ProductUpserted, ProductDeleted, ProductChanged, ConnectionDisabled, ConnectionErased)
MAX_PAGES = 10_000


class ConnectorContract:
    """The behaviour every connector owes the core. Provide ``connector``, ``connection_settings`` and
    ``genuine_delivery`` fixtures (and optionally ``webhook_url``)."""

    @pytest.fixture
    def webhook_url(self) -> str:
        return "http://127.0.0.1:9/webhooks/contract/1"

    @pytest.fixture
    def delete_delivery(self) -> Delivery | None:
        return None

    @pytest.fixture
    def child_delivery(self) -> tuple[Delivery, str] | None:
        return None

    @pytest.fixture
    def same_id_delivery(self) -> Delivery | None:
        return None

    @pytest.fixture
    async def ctx(self, connector: Connector, connection_settings: dict[str, Any],
                  webhook_url: str) -> AsyncIterator[ConnectionContext]:
        settings = connector.settings_model.model_validate(connection_settings)
        async with httpx.AsyncClient(timeout=30) as http:
            yield ConnectionContext(settings, http, webhook_url)

    # -- what it declares ------------------------------------------------------------------------------------

    def test_declares_a_name_and_a_settings_model(self, connector: Connector) -> None:
        assert isinstance(connector, Connector), "the object lacks methods of hub.connectors.Connector"
        assert re.fullmatch(r"[a-z][a-z0-9_-]{0,49}", connector.name), \
            f"name {connector.name!r}: lower case letters, digits, - and _, at most 50 (it is part of the URL)"
        assert isinstance(connector.settings_model, type) and issubclass(connector.settings_model, BaseModel)

    def test_valid_settings_round_trip_and_secrets_are_marked(self, connector: Connector,
                                                              connection_settings: dict[str, Any]) -> None:
        model = connector.settings_model
        values = model.model_validate(connection_settings).model_dump(mode="json")
        assert model.model_validate(values).model_dump(mode="json") == values, "settings must survive JSON storage"
        secrets = secret_fields(model)
        assert secrets <= set(model.model_fields)
        for name, info in model.model_fields.items():
            if re.search(r"secret|token|password|key", name) and name not in secrets:
                pytest.fail(f"setting {name!r} looks like a credential: mark it json_schema_extra={{'secret': True}}")

    # -- the platform ----------------------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_check_accepts_good_credentials(self, connector: Connector, ctx: ConnectionContext) -> None:
        info = await connector.check(ctx)
        json.dumps(info)  # stored as JSON and shown to the shop

    @pytest.mark.asyncio
    async def test_webhooks_register_and_unregister(self, connector: Connector, ctx: ConnectionContext) -> None:
        state = await connector.register_webhooks(ctx)
        assert isinstance(state, dict)
        json.dumps(state)  # kept as JSON until the connection is deleted
        await connector.unregister_webhooks(ctx, state)

    # -- deliveries ------------------------------------------------------------------------------------------

    def test_verify_accepts_a_genuine_delivery(self, connector: Connector, ctx: ConnectionContext,
                                               genuine_delivery: Delivery) -> None:
        assert connector.verify(_no_http(ctx), genuine_delivery) is True

    def test_verify_refuses_a_tampered_body(self, connector: Connector, ctx: ConnectionContext,
                                            genuine_delivery: Delivery) -> None:
        body = genuine_delivery.body
        tampered = body[:-1] + bytes([body[-1] ^ 1]) if body else b"x"
        forged = Delivery(genuine_delivery.headers, tampered, genuine_delivery.query)
        assert connector.verify(_no_http(ctx), forged) is False

    def test_verify_refuses_a_delivery_without_signature(self, connector: Connector, ctx: ConnectionContext,
                                                         genuine_delivery: Delivery) -> None:
        bare = Delivery({"content-type": genuine_delivery.headers.get("content-type", "application/json")},
                        genuine_delivery.body)
        assert connector.verify(_no_http(ctx), bare) is False

    def test_parse_gives_typed_valid_events_and_a_delivery_id(self, connector: Connector, ctx: ConnectionContext,
                                                              genuine_delivery: Delivery) -> None:
        parsed = connector.parse(_no_http(ctx), genuine_delivery)
        assert isinstance(parsed, ParsedDelivery)
        assert parsed.delivery_id, "a delivery id is what replays are recognised by"
        assert parsed.events, "the genuine delivery fixture should carry a product event"
        for event in parsed.events:
            assert isinstance(event, EVENT_TYPES), f"{type(event).__name__} is not a catalog event"
            assert check_event(event) is None, check_event(event)
        # the worker parses the stored delivery again: it must mean the same thing
        assert connector.parse(_no_http(ctx), genuine_delivery) == parsed

    def test_parse_rejects_a_malformed_body(self, connector: Connector, ctx: ConnectionContext,
                                            genuine_delivery: Delivery) -> None:
        for body in (b"{not json", b"", b"[]", b'{"unexpected": true}'):
            with pytest.raises(DeliveryRejected):
                connector.parse(_no_http(ctx), Delivery(genuine_delivery.headers, body, genuine_delivery.query))

    def test_a_delete_is_a_delete_and_a_product_body_never_is(self, connector: Connector, ctx: ConnectionContext,
                                                              genuine_delivery: Delivery,
                                                              delete_delivery: Delivery | None) -> None:
        if delete_delivery is None:
            pytest.skip("provide a delete_delivery fixture to check deletes")
        events = connector.parse(_no_http(ctx), delete_delivery).events
        assert events and all(isinstance(e, ProductDeleted | ProductChanged) for e in events), \
            "a delete delivery must give ProductDeleted (or ProductChanged: the core asks the platform)"
        # a signature covers the body only: the same signed product body under the delete's headers (its
        # topic, say) must not delete anything
        swapped = Delivery(delete_delivery.headers, genuine_delivery.body, genuine_delivery.query)
        try:
            meant = connector.parse(_no_http(ctx), swapped).events
        except DeliveryRejected:
            return
        assert not any(isinstance(e, ProductDeleted | ConnectionErased) for e in meant), \
            "a product body under a delete topic header was taken as a delete: check the body's shape"

    def test_a_child_record_is_a_change_of_its_parent(self, connector: Connector, ctx: ConnectionContext,
                                                      child_delivery: tuple[Delivery, str] | None) -> None:
        if child_delivery is None:
            pytest.skip("provide a child_delivery fixture (a variation's delivery, its parent's id) to check it")
        delivery, parent = child_delivery
        events = connector.parse(_no_http(ctx), delivery).events
        assert events, "a child record's delivery must change its parent"
        for event in events:
            assert isinstance(event, ProductUpserted | ProductChanged), type(event).__name__
            assert event.external_id == parent, \
                f"a child record became product {event.external_id!r}; it belongs to {parent!r}"

    def test_deliveries_sharing_an_id_are_each_parsed(self, connector: Connector, ctx: ConnectionContext,
                                                      genuine_delivery: Delivery,
                                                      same_id_delivery: Delivery | None) -> None:
        if same_id_delivery is None:
            pytest.skip("provide a same_id_delivery fixture to check deliveries sharing a delivery id")
        first = connector.parse(_no_http(ctx), genuine_delivery)
        second = connector.parse(_no_http(ctx), same_id_delivery)
        assert first.delivery_id == second.delivery_id, "the fixture's deliveries should share their delivery id"
        assert second.events and second.events != first.events, \
            "two different bodies under one delivery id are two changes: the core applies both"

    # -- the catalog -----------------------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_catalog_pages_resume_from_their_cursor(self, connector: Connector, ctx: ConnectionContext) -> None:
        pages = await _read(connector, ctx, None)
        assert pages, "the catalog yielded no page at all"
        assert pages[-1].cursor is None, "the last page must have no cursor"
        assert all(p.cursor for p in pages[:-1]), "every page but the last needs a cursor to resume after it"
        for page in pages:
            for event in page.events:
                assert isinstance(event, EVENT_TYPES)
                assert check_event(event) is None, check_event(event)
        if len(pages) > 1:
            resumed = await _read(connector, ctx, pages[0].cursor)
            assert [p.events for p in resumed] == [p.events for p in pages[1:]], \
                "resuming from page 1's cursor must give exactly the pages after it"


def _no_http(ctx: ConnectionContext) -> ConnectionContext:
    """``verify`` and ``parse`` run inside the webhook request: they get no HTTP client."""
    return ConnectionContext(ctx.settings, None, ctx.webhook_url)


async def _read(connector: Connector, ctx: ConnectionContext, cursor: str | None) -> list[CatalogPage]:
    pages: list[CatalogPage] = []
    async for page in connector.catalog(ctx, cursor):
        assert isinstance(page, CatalogPage), f"catalog must yield CatalogPage, not {type(page).__name__}"
        pages.append(page)
        assert len(pages) < MAX_PAGES, "the catalog does not end"
    return pages
