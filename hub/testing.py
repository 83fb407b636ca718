"""A contract test suite any connector plugin can run against its own fake platform (needs ``pytest``).

Subclass ``ConnectorContract`` in your tests and provide these fixtures::

    from hub.testing import ConnectorContract

    class TestMyConnector(ConnectorContract):
        @pytest.fixture
        def connector(self):
            return MyConnector()

        @pytest.fixture
        def connection_settings(self, my_platform):   # valid settings pointing at a running fake platform
            return {"store_url": my_platform.url, "token": "…"}

        @pytest.fixture
        def bad_connection_settings(self, my_platform):   # the same with wrong credentials
            return {"store_url": my_platform.url, "token": "wrong"}

        @pytest.fixture
        def genuine_delivery(self, my_platform):      # a signed delivery carrying at least one product event
            return Delivery(headers={...}, body=b"…")

        @pytest.fixture
        def webhook_url(self):                          # optional: where your platform's webhooks should point
            return "http://127.0.0.1:9/webhooks/mine/1"

A connector for a platform without webhooks (a product feed) sets ``webhooks = False`` on its class and provides
no ``genuine_delivery``: the suite then checks that it refuses every delivery and syncs on a schedule
(``ScheduledSync``) instead.

Two more are required, because a contract that never sees them catches nothing: ``bad_connection_settings``
(settings with wrong credentials for the same platform: ``check`` must raise ``ConnectorError``; return None only
if the platform takes no credentials at all) and a catalog of **more than one page** (give the fake platform a
small page size), so that resuming from a cursor is checked. A connector that emits ``ProductChanged`` must read
products (``ProductReader``): ``existing_product_id`` names a product of the fake platform's catalog and
``missing_product_id`` one it does not have (its 404 must become ``ProductDeleted``).

The optional fixtures cover what platforms really send (each test is skipped, with the reason, until
you provide it): ``delete_delivery`` (a genuine delivery deleting a product), ``child_delivery`` (a genuine
delivery about a child record — a variation — and its parent's external id, as a tuple), and
``same_id_delivery`` (a second genuine delivery with the same delivery id as ``genuine_delivery`` but another
body, as platforms that make ids per second send), and ``stale_delivery`` (a correctly signed delivery whose
platform timestamp is too old to accept: ``verify`` or ``parse`` must refuse it).

Every test reads the platform through ``ctx.http``, a client that records its requests: a connector that makes
its own client (escaping the core's byte limits, deadlines and address checks) fails.

Every test here is something the hub relies on: the webhook endpoint, the sync job and the catalog ingest
assume it. Async tests are marked for pytest-asyncio.

Two helpers make the rest of a plugin's tests real without importing anything else of ``hub``:
``FakePlatform``/``PlatformHandler`` serve an emulation of your platform on loopback (the hub's own emulators of
Shopify and WooCommerce are built on them), and ``running_hub`` starts a real ``hub serve`` (embedded default, its
own home folder) for end-to-end tests through HTTP.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

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
    ConnectorError,
    ImageAuth,
    ProductChanged,
    ProductDeleted,
    ProductReader,
    ProductUpserted,
    ScheduledSync,
    check_event,
    secret_fields,
)

EVENT_TYPES = (ProductUpserted, ProductDeleted, ProductChanged, ConnectionDisabled, ConnectionErased)


def takes_webhooks(connector: Connector) -> bool:
    """False for a connector whose platform sends no webhooks (``webhooks = False`` on its class)."""
    return bool(getattr(connector, "webhooks", True))
MAX_PAGES = 10_000


class ConnectorContract:
    """The behaviour every connector owes the core. Provide ``connector``, ``connection_settings`` and
    ``genuine_delivery`` fixtures (and optionally ``webhook_url``)."""

    @pytest.fixture
    def webhook_url(self) -> str:
        return "http://127.0.0.1:9/webhooks/contract/1"

    @pytest.fixture
    def genuine_delivery(self, connector: Connector) -> Delivery | None:
        if takes_webhooks(connector):
            pytest.fail("provide a genuine_delivery fixture: a signed delivery carrying at least one product event "
                        "(or set webhooks = False on a connector whose platform sends none)")
        return None

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
    def stale_delivery(self) -> Delivery | None:
        return None

    @pytest.fixture
    def bad_connection_settings(self) -> dict[str, Any] | None:
        pytest.fail("provide a bad_connection_settings fixture: settings with wrong credentials for your fake "
                    "platform (return None only if the platform takes no credentials)")

    @pytest.fixture
    def existing_product_id(self) -> str | None:
        return None

    @pytest.fixture
    def missing_product_id(self) -> str:
        return "999999999"  # numeric: most platforms number their products

    @pytest.fixture
    async def ctx(self, connector: Connector, connection_settings: dict[str, Any],
                  webhook_url: str) -> AsyncIterator[ConnectionContext]:
        settings = connector.settings_model.model_validate(connection_settings)
        async with _recording_client() as http:
            yield ConnectionContext(settings, http, webhook_url, bulk_http=http)

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
        _assert_used_the_core_client(ctx, "check")

    @pytest.mark.asyncio
    async def test_check_refuses_bad_credentials(self, connector: Connector, webhook_url: str,
                                                 bad_connection_settings: dict[str, Any] | None) -> None:
        if bad_connection_settings is None:
            assert not secret_fields(connector.settings_model), \
                "the settings have credentials: provide bad_connection_settings to check they are refused"
            return
        settings = connector.settings_model.model_validate(bad_connection_settings)
        async with _recording_client() as http:
            with pytest.raises(ConnectorError):
                await connector.check(ConnectionContext(settings, http, webhook_url))

    @pytest.mark.asyncio
    async def test_webhooks_register_and_unregister(self, connector: Connector, ctx: ConnectionContext) -> None:
        state = await connector.register_webhooks(ctx)
        assert isinstance(state, dict)
        json.dumps(state)  # kept as JSON until the connection is deleted
        await connector.unregister_webhooks(ctx, state)

    # -- deliveries ------------------------------------------------------------------------------------------

    def test_verify_accepts_a_genuine_delivery(self, connector: Connector, ctx: ConnectionContext,
                                               genuine_delivery: Delivery | None) -> None:
        if genuine_delivery is None:
            return  # no webhooks: test_without_webhooks_every_delivery_is_refused
        assert connector.verify(_no_http(ctx), genuine_delivery) is True

    def test_verify_refuses_a_tampered_body(self, connector: Connector, ctx: ConnectionContext,
                                            genuine_delivery: Delivery | None) -> None:
        if genuine_delivery is None:
            return  # no webhooks: test_without_webhooks_every_delivery_is_refused
        body = genuine_delivery.body
        tampered = body[:-1] + bytes([body[-1] ^ 1]) if body else b"x"
        forged = Delivery(genuine_delivery.headers, tampered, genuine_delivery.query)
        assert connector.verify(_no_http(ctx), forged) is False

    def test_verify_refuses_a_delivery_without_signature(self, connector: Connector, ctx: ConnectionContext,
                                                         genuine_delivery: Delivery | None) -> None:
        if genuine_delivery is None:
            return  # no webhooks: test_without_webhooks_every_delivery_is_refused
        bare = Delivery({"content-type": genuine_delivery.headers.get("content-type", "application/json")},
                        genuine_delivery.body)
        assert connector.verify(_no_http(ctx), bare) is False

    def test_parse_gives_typed_valid_events_and_a_delivery_id(self, connector: Connector, ctx: ConnectionContext,
                                                              genuine_delivery: Delivery | None) -> None:
        if genuine_delivery is None:
            return  # no webhooks: test_without_webhooks_every_delivery_is_refused
        parsed = connector.parse(_no_http(ctx), genuine_delivery)
        assert isinstance(parsed, ParsedDelivery)
        assert parsed.delivery_id, "a delivery id is what replays are recognised by"
        assert parsed.events, "the genuine delivery fixture should carry a product event"
        for event in parsed.events:
            assert isinstance(event, EVENT_TYPES), f"{type(event).__name__} is not a catalog event"
            assert check_event(event) is None, check_event(event)
        # the worker parses the stored delivery again: it must mean the same thing
        assert connector.parse(_no_http(ctx), genuine_delivery) == parsed
        _assert_credential_free(parsed.events, ctx)

    def test_a_connector_that_sends_product_changed_reads_products(
            self, connector: Connector, ctx: ConnectionContext, genuine_delivery: Delivery | None,
            delete_delivery: Delivery | None, child_delivery: tuple[Delivery, str] | None) -> None:
        deliveries = [genuine_delivery, delete_delivery, child_delivery[0] if child_delivery else None]
        if genuine_delivery is None:
            return
        changed = [e for d in deliveries if d is not None for e in connector.parse(_no_http(ctx), d).events
                   if isinstance(e, ProductChanged)]
        if changed:
            assert isinstance(connector, ProductReader), \
                "parse gives ProductChanged, so the connector must implement product(ctx, external_id)"

    @pytest.mark.asyncio
    async def test_product_reads_the_current_state_and_a_404_is_a_delete(
            self, connector: Connector, ctx: ConnectionContext, existing_product_id: str | None,
            missing_product_id: str) -> None:
        if not isinstance(connector, ProductReader):
            return  # nothing to read: the test above makes sure it is not needed
        assert existing_product_id, "the connector reads products: provide existing_product_id (a product of " \
                                    "the fake platform's catalog)"
        sent = _sent(ctx)
        current = await connector.product(ctx, existing_product_id)
        _assert_used_the_core_client(ctx, "product", since=sent)
        assert isinstance(current, ProductUpserted) and current.external_id == existing_product_id
        assert check_event(current) is None, check_event(current)
        _assert_credential_free((current,), ctx)
        sent = _sent(ctx)
        gone = await connector.product(ctx, missing_product_id)
        assert isinstance(gone, ProductDeleted) and gone.external_id == missing_product_id, \
            "a product the platform does not have (404) must be ProductDeleted, not an error"
        _assert_used_the_core_client(ctx, "product", since=sent)

    def test_image_credentials_go_only_to_the_platform(self, connector: Connector, ctx: ConnectionContext,
                                                       connection_settings: dict[str, Any]) -> None:
        if not isinstance(connector, ImageAuth):
            return
        foreign = ["https://images.elsewhere.invalid/a.jpg"]
        for value in connection_settings.values():  # look-alikes of every URL the settings hold
            if isinstance(value, str) and value.startswith(("http://", "https://")):
                parts = httpx.URL(value)
                foreign += [f"{parts.scheme}://{parts.host}.elsewhere.invalid/a.jpg",
                            f"{parts.scheme}://{parts.netloc.decode()}@elsewhere.invalid/a.jpg",
                            f"{parts.scheme}://{parts.host}:1/a.jpg",
                            f"{'http' if parts.scheme == 'https' else 'https'}://{parts.host}/a.jpg"]
        for url in foreign:
            assert not connector.image_headers(ctx.settings, url), \
                f"image_headers gave credentials for {url}, which is not the platform's origin (an image URL in a " \
                "product can point anywhere: compare origins with hub.connectors.same_origin)"

    def test_a_stale_delivery_is_refused(self, connector: Connector, ctx: ConnectionContext,
                                         stale_delivery: Delivery | None) -> None:
        if not takes_webhooks(connector):
            return
        if stale_delivery is None:
            pytest.skip("provide a stale_delivery fixture (genuinely signed, too old) to check replays of old "
                        "deliveries are refused")
        if not connector.verify(_no_http(ctx), stale_delivery):
            return
        with pytest.raises(DeliveryRejected):
            connector.parse(_no_http(ctx), stale_delivery)

    def test_parse_rejects_a_malformed_body(self, connector: Connector, ctx: ConnectionContext,
                                            genuine_delivery: Delivery | None) -> None:
        if genuine_delivery is None:
            return  # no webhooks: test_without_webhooks_every_delivery_is_refused
        for body in (b"{not json", b"", b"[]", b'{"unexpected": true}'):
            with pytest.raises(DeliveryRejected):
                connector.parse(_no_http(ctx), Delivery(genuine_delivery.headers, body, genuine_delivery.query))

    def test_a_delete_is_a_delete_and_a_product_body_never_is(self, connector: Connector, ctx: ConnectionContext,
                                                              genuine_delivery: Delivery | None,
                                                              delete_delivery: Delivery | None) -> None:
        if genuine_delivery is None:
            return
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
        if not takes_webhooks(connector):
            return
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
                                                      genuine_delivery: Delivery | None,
                                                      same_id_delivery: Delivery | None) -> None:
        if genuine_delivery is None:
            return
        if same_id_delivery is None:
            pytest.skip("provide a same_id_delivery fixture to check deliveries sharing a delivery id")
        first = connector.parse(_no_http(ctx), genuine_delivery)
        second = connector.parse(_no_http(ctx), same_id_delivery)
        assert first.delivery_id == second.delivery_id, "the fixture's deliveries should share their delivery id"
        assert second.events and second.events != first.events, \
            "two different bodies under one delivery id are two changes: the core applies both"

    @pytest.mark.asyncio
    async def test_without_webhooks_every_delivery_is_refused_and_the_catalog_is_read_on_a_schedule(
            self, connector: Connector, ctx: ConnectionContext, connection_settings: dict[str, Any]) -> None:
        if takes_webhooks(connector):
            return
        for body in (b"", b"{}", b'{"event": "product.created", "product": {"id": 1}}', b"<rss/>"):
            delivery = Delivery({"content-type": "application/json"}, body)
            assert connector.verify(_no_http(ctx), delivery) is False, "a connector without webhooks verifies none"
            with pytest.raises(DeliveryRejected):
                connector.parse(_no_http(ctx), delivery)
        sent = _sent(ctx)
        state = await connector.register_webhooks(ctx)
        assert state == {} and _sent(ctx) == sent, "a connector without webhooks registers none on the platform"
        assert isinstance(connector, ScheduledSync), \
            "a platform without webhooks is kept current by scheduled reads: implement sync_interval_minutes"
        minutes = connector.sync_interval_minutes(connector.settings_model.model_validate(connection_settings))
        assert minutes is not None and minutes >= 5, "a connector without webhooks must sync on a schedule (>= 5)"

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
            _assert_credential_free(page.events, ctx)
        _assert_used_the_core_client(ctx, "catalog")
        assert len(pages) > 1, "the fake platform's catalog fits one page: give it more products than a page " \
                               "holds (or a smaller page size) so that resuming from a cursor is checked"
        sent = _sent(ctx)
        resumed = await _read(connector, ctx, pages[0].cursor)
        _assert_used_the_core_client(ctx, "catalog (resumed)", since=sent)
        assert [p.events for p in resumed] == [p.events for p in pages[1:]], \
            "resuming from page 1's cursor must give exactly the pages after it"


def _recording_client() -> httpx.AsyncClient:
    """What the core gives a connector, as far as the suite can tell: a client whose requests are recorded."""
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    client = httpx.AsyncClient(timeout=30, event_hooks={"request": [record]})
    client.sent = sent  # type: ignore[attr-defined]
    return client


def _sent(ctx: ConnectionContext) -> int:
    return len(getattr(ctx.http, "sent", []))


def _assert_used_the_core_client(ctx: ConnectionContext, what: str, since: int = 0) -> None:
    """The call being checked sent at least one request through ``ctx.http`` (counted from ``since``)."""
    assert _sent(ctx) > since, f"{what} read the platform without ctx.http: use the core's client (its byte " \
                               "limits, deadlines and address checks apply only there)"


def _assert_credential_free(events: tuple[Any, ...], ctx: ConnectionContext) -> None:
    """Image URLs are fetched by the core and shown to browsers (publishable keys): never credentials in them."""
    secrets = [str(getattr(ctx.settings, name)) for name in secret_fields(type(ctx.settings))
               if getattr(ctx.settings, name, None) and len(str(getattr(ctx.settings, name))) >= 4]
    for event in events:
        for image in getattr(event, "images", ()):
            parts = httpx.URL(image.url)
            assert not parts.userinfo, f"image URL {image.url} carries credentials (user:password@)"
            for secret in secrets:
                assert secret not in image.url, f"image {image.external_id}'s URL carries a secret setting"


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


# -- a fake platform on loopback ------------------------------------------------------------------------------


class PlatformHandler(BaseHTTPRequestHandler):
    """The request handler of a fake platform: subclass it with ``do_GET``/``do_POST``… and answer with
    ``send``/``send_json``. ``route`` is the path without the query, ``query`` its parameters (first value each)."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the standard library's name
        """Quiet: a test's output is its own."""

    @property
    def route(self) -> str:
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, str]:
        return dict(reversed(parse_qsl(urlsplit(self.path).query, keep_blank_values=True)))

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def read_json(self) -> Any:
        return json.loads(self.read_body() or b"null")

    def send(self, status: int, body: bytes = b"", content_type: str = "application/json",
             headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, value: Any, headers: Mapping[str, str] | None = None) -> None:
        self.send(status, json.dumps(value).encode(), headers=headers)


class FakePlatform:
    """A real HTTP server on ``127.0.0.1`` (a free port), one thread per request, serving ``handler`` — not a
    mock: the connector talks to it through the same HTTP client the hub gives it. ``base`` is its URL; use it as
    a context manager or call ``close()``. Pass ``tls`` (an ``ssl.SSLContext``) to serve https."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], tls: Any = None) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.base = f"{'https' if tls is not None else 'http'}://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FakePlatform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- a real hub for end-to-end tests ---------------------------------------------------------------------------

OPERATOR_TOKEN = "hub-testing-operator-token-0000000001"


@dataclass
class RunningHub:
    """A ``hub serve`` started by ``running_hub``: its URL, home folder and log, and the operator's calls."""

    base: str
    home: Path
    log: Path

    def create_shop(self, name: str = "Test shop", email: str = "shop@example.com") -> dict[str, Any]:
        """A new shop (``POST /api/v1/shops`` with the operator token): its id and both keys."""
        import httpx

        resp = httpx.post(f"{self.base}/api/v1/shops", json={"name": name, "email": email},
                          headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}, timeout=30)
        if resp.status_code != 201:
            raise AssertionError(f"creating a shop failed: {resp.status_code} {resp.text}")
        return dict(resp.json())


def _wait_until_ready(server: subprocess.Popen[bytes], base: str, log: Path, timeout: float) -> None:
    """Until ``/ready`` answers 200: the port opens before the model is loaded, and a test that starts at once
    would meet a 503 ("model": "loading") on a busy machine."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"hub serve exited ({server.returncode}); its log: {log}\n{log.read_text()[-4000:]}")
        try:
            answer = httpx.get(f"{base}/ready", timeout=10)
            if answer.status_code == 200:
                return
            last = f"{answer.status_code} {answer.text[:1000]}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise TimeoutError(f"hub serve was not ready within {timeout} s (/ready: {last}); its log: {log}")
        time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_hub(home: Path, model: str | Path | None = None, *, timeout: float = 120,
                **settings: str) -> Iterator[RunningHub]:
    """Run ``hub serve`` (the embedded default: SQLite, in-process workers and vector store) from this Python on a
    free port, with its data in ``home``, from when ``/ready`` answers 200 until the block ends (SIGTERM). Installed plugins load as in
    production, so yours is there. ``model`` is a CLIP checkpoint (hub id or folder); without one, a small random
    checkpoint is written with ``hub model init-test`` (its rankings mean nothing). ``settings`` become
    ``HUB_<NAME>`` variables; private addresses may be fetched (your fake platform is on loopback), rate limits
    are high, and ``OPERATOR_TOKEN`` is the operator's token."""
    home.mkdir(parents=True, exist_ok=True)
    env = {name: value for name, value in os.environ.items() if not name.startswith("HUB_")}
    if model is None:
        model = home / "test-checkpoint"
        if not (model / "config.json").exists():
            subprocess.run([sys.executable, "-m", "hub", "model", "init-test", str(model)],
                           env=env | {"HUB_HOME": str(home / "data")}, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = _free_port()
    env.update(HUB_HOME=str(home / "data"), HUB_MODEL=str(model), HUB_ADMIN_TOKEN=OPERATOR_TOKEN,
               HUB_SECRET_KEY="hub-testing-secret-key-00000000001", HUB_PUBLIC_URL=f"http://127.0.0.1:{port}",
               HUB_ALLOW_PRIVATE_FETCH="true", HUB_RATE_LIMIT="1000000/minute",
               HUB_AUTH_FAILURE_LIMIT="1000000/minute", HUB_SIGNUP_RATE_LIMIT="1000000/minute",
               HUB_STOREFRONT_RATE_LIMIT="1000000/minute")
    env.update({f"HUB_{name.upper()}": value for name, value in settings.items()})
    log = home / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "hub", "serve", "--port", str(port)], env=env, cwd=home,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_ready(server, base, log, timeout)
        yield RunningHub(base, home, log)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
