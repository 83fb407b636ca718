"""What a connector and an importer are, and the catalog events they turn platform data and files into.

Connectors never touch the database, the queue or the vector store: they check credentials, manage their
webhooks on the platform, verify and parse deliveries, and iterate the catalog — all as catalog events that
the core applies (``hub.domain.catalog``). Importers read a file (ZIP, CSV, JSON…) into import rows the same way
(``hub.domain.imports``).
"""

from __future__ import annotations

import html
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any, ClassVar, Protocol, runtime_checkable

import httpx
from pydantic import BaseModel


@dataclass(frozen=True)
class CatalogImage:
    """One image of a product on the platform."""

    external_id: str
    url: str
    alt: str = ""
    position: int = 0


@dataclass(frozen=True)
class ProductUpserted:
    """A product was created or changed; ``images`` is its complete current list."""

    external_id: str
    title: str
    images: tuple[CatalogImage, ...]
    description: str = ""
    url: str | None = None
    category_hint: str | None = None
    tags: tuple[str, ...] = ()
    price: Decimal | None = None
    currency: str | None = None
    available: bool = True
    status: str = "active"  # "active" products are recommended; "draft"/"archived" are not
    updated_at: datetime | None = None


@dataclass(frozen=True)
class ProductDeleted:
    """A product is gone from the platform, with all its images."""

    external_id: str
    updated_at: datetime | None = None


@dataclass(frozen=True)
class ProductChanged:
    """The platform says a product changed without sending all of it (a variable product's variations):
    the core asks the connector for its current state (``Connector.product``) before applying it."""

    external_id: str


@dataclass(frozen=True)
class ConnectionDisabled:
    """The shop removed the hub on the platform (an app uninstalled): stop syncing, keep what is indexed."""

    reason: str = ""


@dataclass(frozen=True)
class ConnectionErased:
    """The platform asks to erase everything stored for this connection (Shopify's ``shop/redact``)."""

    reason: str = ""


CatalogEvent = ProductUpserted | ProductDeleted | ProductChanged | ConnectionDisabled | ConnectionErased

MAX_EXTERNAL_ID = 100  # characters of a product's or an image's platform id
MAX_URL = 2000  # characters of an image URL


def check_event(event: CatalogEvent) -> str | None:
    """Why the core cannot apply an event (it reports this for the one item and goes on with the rest), or None.

    Ids are 1-100 characters, image URLs absolute http(s) of at most 2,000 characters without credentials, and ``updated_at`` carries
    a time zone: the core orders a product's events by it, and a naive time cannot be compared with an aware one
    (a platform that sends times without an offset usually means UTC: say so with ``tzinfo=UTC``).
    """
    if isinstance(event, ProductUpserted | ProductDeleted | ProductChanged):
        if not event.external_id or len(event.external_id) > MAX_EXTERNAL_ID:
            return f"product id must be 1-{MAX_EXTERNAL_ID} characters"
    if isinstance(event, ProductUpserted | ProductDeleted):
        if event.updated_at is not None and event.updated_at.utcoffset() is None:
            return f"product {event.external_id}: updated_at must carry a time zone (got {event.updated_at})"
    if isinstance(event, ProductUpserted):
        for image in event.images:
            if not image.external_id or len(image.external_id) > MAX_EXTERNAL_ID:
                return f"image id must be 1-{MAX_EXTERNAL_ID} characters"
            if not image.url.startswith(("http://", "https://")) or len(image.url) > MAX_URL:
                return f"image {image.external_id}: URL must be an absolute http(s) URL of at most {MAX_URL} characters"
            if "@" in urlsplit(image.url).netloc:
                return f"image {image.external_id}: URL must not carry credentials (user:password@); the core " \
                       "fetches it as it is and shows it to browsers"
    return None


@dataclass(frozen=True)
class CatalogPage:
    """One page of a full catalog read: its events, the cursor to resume after it, the total if known.

    ``errors``: items of the platform's catalog that could not be read (reported in the sync job; the read goes
    on). ``state``: what the core keeps once the whole read is done, given to the next read as
    ``ConnectionContext.catalog_state`` (a feed's ETag and Last-Modified, say). ``unchanged``: the platform says
    nothing changed since the read that left ``catalog_state`` (an HTTP 304): the core applies nothing and removes
    nothing, and the page must be the last one. A page without events (with the cursor to resume from) is how a
    read that goes on long without one renews its job's lease.
    """

    events: tuple[CatalogEvent, ...]
    cursor: str | None = None  # None: this was the last page
    total: int | None = None  # number of products on the platform, for progress
    errors: tuple[RowError, ...] = ()
    state: dict[str, Any] | None = None
    unchanged: bool = False


@dataclass(frozen=True)
class Delivery:
    """One webhook request as the platform sent it: the raw body is what signatures are computed over.

    A signature covers the body only: headers (topic, delivery id, timestamps) are whatever the sender chose, so
    ``parse`` must check that the body has the shape its topic's header claims. ``received_at`` is when the hub
    received it (the same when the worker parses the stored delivery again); ``app_wide`` is true for a delivery
    that came to ``POST /webhooks/{connector}`` and was verified with the operator's app secret
    (``AppDeliveries.verify_app``) rather than with one connection's secret.
    """

    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)
    received_at: datetime | None = None
    app_wide: bool = False


@dataclass(frozen=True)
class ParsedDelivery:
    """What a verified delivery means: the platform's delivery id (recorded), the events (none for a ping).

    The core recognises replays by content — the same body twice is a duplicate whatever its delivery id — except
    when every event is ``ProductChanged`` (re-read from the platform, so a replay cannot do anything the
    platform does not confirm): then a body may legitimately come again under another delivery id. ``ignored``
    is a reason to acknowledge the delivery (2xx) without applying anything.
    """

    delivery_id: str | None
    events: tuple[CatalogEvent, ...] = ()
    topic: str = ""
    ignored: str = ""


class ConnectionContext:
    """What a connector gets for one connection: its validated settings and an HTTP client from the core.

    ``verify`` and ``parse`` run inside the webhook request and get no client (``http`` is None): no I/O there.
    ``webhook_secret`` is a random secret the core made for this connection and keeps encrypted: give it to a
    platform that signs its deliveries with a secret of our choosing (None for connections made before it existed).
    ``installed_by_app`` says the connection was installed through the operator's app (OAuth).

    In a scheduled catalog read, ``catalog_state`` is what the last complete read left (``CatalogPage.state``;
    ``{}`` at first, and in a read the shop asked for or after reconnecting: those read everything). In a catalog read and in ``check``, ``bulk_http`` is a client for reading one large document as a
    stream (a product feed): its answers may be as large as a bulk import (``HUB_MAX_IMPORT_BYTES``) and take
    ``HUB_FEED_DEADLINE`` seconds in all, with the same address checks as ``http`` (None elsewhere).
    """

    def __init__(self, settings: Any, http: httpx.AsyncClient | None, webhook_url: str,
                 webhook_secret: str | None = None, installed_by_app: bool = False, *,
                 catalog_state: dict[str, Any] | None = None, bulk_http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.http = http
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        # installed through the operator's app (an OAuth install): its deliveries are signed with the app's
        # secret, which every store installed that way shares — a signed body proves the app, not the store
        self.installed_by_app = installed_by_app
        self.catalog_state = dict(catalog_state or {})
        self.bulk_http = bulk_http

    def using(self, http: httpx.AsyncClient | None, *, webhook_url: str | None = None,
              webhook_secret: str | None = None) -> ConnectionContext:
        """The same connection with another HTTP client (and, when moving webhooks, another URL or secret)."""
        return ConnectionContext(self.settings, http, webhook_url or self.webhook_url,
                                 webhook_secret or self.webhook_secret, self.installed_by_app,
                                 catalog_state=self.catalog_state, bulk_http=self.bulk_http)


class ConnectorError(Exception):
    """A problem the shop can fix (bad token, wrong domain, missing scope); the message says which."""


class ImportFileError(Exception):
    """A bulk-import file that cannot be read at all (a corrupt ZIP, a CSV without a header…)."""


class ImportTooLarge(ImportFileError):
    """A bulk-import file over one of the limits in ``ImportOptions`` (manifest bytes, rows): 413 in the request,
    a failed job with this reason if only found while the job reads it."""


class DeliveryRejected(Exception):
    """A webhook delivery that is malformed (400) — as opposed to unauthentic (verify returns False)."""


@runtime_checkable
class Connector(Protocol):
    """A platform connector. ``settings_model`` marks secret fields with ``json_schema_extra={"secret": True}``.

    A platform that sends no webhooks (a product feed) sets ``webhooks = False`` on the class: ``verify``
    refuses every delivery, ``register_webhooks`` makes nothing, and the connector implements ``ScheduledSync``
    (its catalog is kept current by scheduled reads alone)."""

    name: ClassVar[str]
    settings_model: ClassVar[type[BaseModel]]

    async def check(self, ctx: ConnectionContext) -> dict[str, Any]:
        """Verify the credentials against the platform; return facts worth showing (shop name…)."""

    async def register_webhooks(self, ctx: ConnectionContext) -> dict[str, Any]:
        """Create the platform's webhooks pointing at ``ctx.webhook_url``; return state to keep."""

    async def unregister_webhooks(self, ctx: ConnectionContext, state: dict[str, Any]) -> None:
        """Remove what ``register_webhooks`` created."""

    def verify(self, ctx: ConnectionContext, delivery: Delivery) -> bool:
        """True if the delivery is authentic (signature over the raw body, constant-time compare)."""

    def parse(self, ctx: ConnectionContext, delivery: Delivery) -> ParsedDelivery:
        """The events of an authentic delivery; raise ``DeliveryRejected`` for a malformed one."""

    def catalog(self, ctx: ConnectionContext, cursor: str | None) -> AsyncIterator[CatalogPage]:
        """Every product, page by page from ``cursor`` (None: the start); each page says where to resume."""


@runtime_checkable
class ProductReader(Protocol):
    """Optional: a connector whose deliveries carry ``ProductChanged`` reads one product on demand."""

    async def product(self, ctx: ConnectionContext, external_id: str) -> ProductUpserted | ProductDeleted:
        """The product's current state on the platform (``ProductDeleted`` if it is gone)."""


@runtime_checkable
class OAuthConnector(Protocol):
    """What a connector adds to be installable through its platform's OAuth flow (a public app).

    The core serves the flow: ``POST /api/v1/connections/authorize`` answers ``authorize_url`` with a sealed,
    expiring ``state``; the platform sends the merchant back to ``GET /oauth/{connector}/callback``, where the
    core opens the state and calls ``exchange``, then connects exactly as ``POST /api/v1/connections`` does.
    """

    def authorize_url(self, params: dict[str, Any], redirect_uri: str, state: str) -> str:
        """The platform URL that asks the merchant to approve the app (``ConnectorError`` if not configured)."""

    async def exchange(self, http: httpx.AsyncClient, params: dict[str, Any], query: dict[str, str],
                       redirect_uri: str) -> dict[str, Any]:
        """Verify the callback (its signature) and trade its code for credentials: the connection's settings.
        ``http`` is the core's guarded client (byte limit, deadline, no private addresses)."""

    def connection_key(self, settings: dict[str, Any]) -> str:
        """What identifies the store (a re-install of the same store reconnects its connection)."""


@runtime_checkable
class AppDeliveries(Protocol):
    """Optional: a platform that sends some deliveries app-wide (Shopify's compliance topics for a public app)
    to ``POST /webhooks/{connector}``. The core verifies them once with ``verify_app`` and routes them only to the
    connections of that store that were installed through the operator's app (OAuth); each is parsed with
    ``Delivery.app_wide`` set."""

    def delivery_account(self, delivery: Delivery) -> str | None:
        """Which store the delivery is about, as ``connection_key`` would name it (from a header, say)."""

    def connection_key(self, settings: dict[str, Any]) -> str:
        """What identifies the store in a connection's (non-secret) settings."""

    def verify_app(self, delivery: Delivery) -> bool:
        """True if the delivery is authentic for the operator's app: checked once, before any routing."""

    def compliance_topic(self, delivery: Delivery) -> bool:
        """True for a privacy/compliance topic: answered 2xx even for a connection that was erased already."""

    def installed_through_app(self, settings: Any) -> bool:
        """For connections made before the hub recorded how: True if these (validated, decrypted) settings are
        an install of the operator's app."""


@runtime_checkable
class ImageAuth(Protocol):
    """Optional: the platform's image URLs need credentials (PrestaShop's image API wants the webservice key).

    The core adds the headers this returns when it fetches one of the connection's images — only to that URL's
    origin, never after a redirect to another — and keeps the fetched photo itself, serving it at the image's
    ``file_url``, since browsers (shoppers, publishable keys) do not have the credentials. Image URLs never carry
    credentials themselves (``check_event`` refuses ``user:password@``, the contract suite secret settings)."""

    def image_headers(self, settings: Any, url: str) -> Mapping[str, str]:
        """Headers for fetching ``url`` with these (validated, decrypted) settings; ``{}`` for a URL that needs
        none (one that is not the platform's own)."""


@runtime_checkable
class ScheduledSync(Protocol):
    """Optional: the connector says how often the core should re-read a connection's catalog when the shop does
    not say (``sync_interval_minutes`` on the connection). A platform without webhooks needs it: its catalog is
    kept current by these syncs alone."""

    def sync_interval_minutes(self, settings: Any) -> int | None:
        """Minutes between two full reads for these (validated) settings, at least 5; None: only on request."""


@runtime_checkable
class AccessCheck(Protocol):
    """Optional: the connector can ask the platform whether the hub's access to a store was revoked. The core
    asks before it applies ``ConnectionDisabled`` or ``ConnectionErased`` from a delivery to an active connection
    (a replayed uninstall or erase must not take a store that has the app installed)."""

    async def access_revoked(self, ctx: ConnectionContext) -> bool:
        """True if the platform no longer lets the hub in (the app was uninstalled, the token revoked)."""


def same_origin(url: str, base: str) -> bool:
    """True if ``url`` is on exactly ``base``'s scheme, host and port (what ``ImageAuth.image_headers`` should
    check before giving credentials: a prefix test lets ``https://store.example.com.evil.example`` through)."""
    try:
        first, second = urlsplit(url), urlsplit(base)
        return (first.scheme.lower(), (first.hostname or "").lower(), first.port or _DEFAULT_PORTS.get(first.scheme)) \
            == (second.scheme.lower(), (second.hostname or "").lower(),
                second.port or _DEFAULT_PORTS.get(second.scheme)) and first.username is None and bool(first.hostname)
    except ValueError:  # a port that is not a number
        return False


_DEFAULT_PORTS = {"http": 80, "https": 443}


def secret_fields(model: type[BaseModel]) -> set[str]:
    """The settings a connector marks secret: stored encrypted, never returned by the API."""
    return {
        name
        for name, info in model.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("secret")
    }


@dataclass(frozen=True)
class ImportRow:
    """One image of a bulk import: a file's bytes (``data``) or an ``image_url``, and what the shop says of it."""

    line: int | None  # where it is in the manifest (1-based), for error reports
    item: str = ""  # a name for it when there is no line (a file in a ZIP without a manifest)
    data: bytes | None = None
    image_url: str | None = None
    name: str = ""
    description: str = ""
    category: str | None = None
    style: str | None = None
    age_group: str | None = None
    product_id: str | None = None
    product_url: str | None = None


@dataclass(frozen=True)
class RowError:
    """A row the importer could not read; the import goes on and reports it."""

    line: int | None
    error: str
    item: str = ""


@dataclass(frozen=True)
class ImportOptions:
    """What the core allows an import: files beside a local manifest (the CLI only), the size of a file, the size
    of a manifest (read as a stream, never whole) and the number of rows (``HUB_MAX_MANIFEST_BYTES``,
    ``HUB_MAX_IMPORT_ROWS``). Past a limit an importer raises ``ImportTooLarge``."""

    local_files: bool = False
    max_file_bytes: int = 20 * 1024 * 1024
    max_manifest_bytes: int = 64 * 1024 * 1024
    max_rows: int = 1_000_000


@runtime_checkable
class Importer(Protocol):
    """Reads one kind of bulk-import file (a ZIP, a CSV, a JSON list…) into import rows."""

    name: ClassVar[str]

    def accepts(self, path: Path) -> bool:
        """True if this importer reads this file or folder."""

    def count(self, path: Path, options: ImportOptions) -> int | None:
        """How many rows ``read`` will yield (for progress), or None. It runs inside the upload request: stream,
        stay within ``options`` (raise ``ImportTooLarge`` past them) and refuse an unreadable file with
        ``ImportFileError``. An older ``count(path)`` without options still works."""

    def read(self, path: Path, options: ImportOptions) -> Iterator[ImportRow | RowError]:
        """Every row in order; a bad row is a ``RowError`` and the rest still come."""


# -- helpers for connector authors -------------------------------------------------------------------------

_BLOCK_TAGS = {"p", "br", "div", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "table", "section"}
_SKIPPED_TAGS = {"script", "style"}
MAX_HTML = 256 * 1024  # characters of product HTML read; a description is never this long


def _tag_name(inside: str) -> tuple[str, bool]:
    """``/p class="x"`` → ("p", True): a tag's name (lower case) and whether it closes."""
    closing = inside.startswith("/")
    name = inside.lstrip("/").split(None, 1)[0] if inside.strip("/ \t\n") else ""
    return name.rstrip("/").lower(), closing


def _end_of_tag(value: str, start: int) -> int:
    """Where the tag opened at ``start`` ends (its ``>``), quotes respected; -1 if it never does. One pass."""
    quote = ""
    for n in range(start + 1, len(value)):
        ch = value[n]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == ">":
            return n
    return -1


def html_to_text(value: str | None) -> str:
    """Product HTML as the plain text a shopper reads: tags dropped, entities decoded, whitespace tidied.

    A single linear pass over at most ``MAX_HTML`` characters: deliveries are parsed inside the webhook request,
    and the standard library's parser takes quadratic time on crafted input (unclosed tags and attributes).
    """
    if not value:
        return ""
    value = value[:MAX_HTML]
    parts: list[str] = []
    position, skipping = 0, ""
    while position < len(value):
        opening = value.find("<", position)
        if opening == -1:
            if not skipping:
                parts.append(value[position:])
            break
        if not skipping:
            parts.append(value[position:opening])
        after = value[opening + 1 : opening + 2]
        if not (after.isascii() and after.isalpha()) and after not in ("/", "!"):  # "size < 10": text, not a tag
            if not skipping:
                parts.append("<")
            position = opening + 1
            continue
        if value.startswith("<!--", opening):
            end = value.find("-->", opening + 4)
            position = len(value) if end == -1 else end + 3
            continue
        end = _end_of_tag(value, opening)
        if end == -1:
            break  # an unclosed tag: the rest is not text
        name, closing = _tag_name(value[opening + 1 : end])
        if name in _SKIPPED_TAGS:
            skipping = "" if closing else name
        elif not skipping and name in _BLOCK_TAGS:
            parts.append("\n")
        position = end + 1
    lines = (" ".join(line.split()) for line in html.unescape("".join(parts)).splitlines())
    return "\n".join(line for line in lines if line)
