"""The ``feed`` connector: a shop on any platform through the Google Merchant Center product feed it publishes
(Magento/Adobe Commerce, BigCommerce, PrestaShop, Shopware, Wix, Squarespace, custom shops…): RSS 2.0 or Atom
XML with the ``g:`` namespace, or the same attributes as tab-separated columns, gzip-compressed or not.

Written against the plugin SDK alone, as a third party would, and registered through the ``hub`` entry point.
A feed has no webhooks: connecting reads it once (a sync job), and the core reads it again every
``interval_minutes`` (``ScheduledSync``). Each read asks with the last read's ETag and Last-Modified, so an
unchanged feed costs one 304; a changed one is read whole, and the core removes the products it no longer lists.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, Field, field_validator

from hub.connectors import (
    CatalogPage,
    RowError,
    ConnectionContext,
    ConnectorError,
    Delivery,
    DeliveryRejected,
    ParsedDelivery,
)
from hub.hookspecs import hookimpl
from hub.plugins.feed.formats import feed_items
from hub.plugins.feed.products import Products

PAGE = 250  # products per catalog page: each is applied and committed with the job's cursor
MAX_ITEMS = 5_000_000  # items one read goes through (the core also bounds the products: HUB_MAX_IMPORT_ROWS)
CHECK_BYTES = 256 * 1024  # what connecting reads of the feed to know it is one
HEARTBEAT_SECONDS = 30.0  # a read that yields no page for this long yields an empty one (renewing the job's lease)


class FeedSettings(BaseModel):
    feed_url: str = Field(pattern=r"^https?://", max_length=2000,
                          description="The product feed's URL (RSS, Atom or tab-separated; may be gzipped)")
    username: str | None = Field(None, max_length=200, description="For a feed behind HTTP basic auth")
    password: str | None = Field(None, max_length=500, json_schema_extra={"secret": True},
                                 description="For a feed behind HTTP basic auth")
    interval_minutes: int = Field(60, ge=5, le=7 * 24 * 60, description="Minutes between two reads of the feed")

    @field_validator("feed_url")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as exc:
            raise ValueError(f"not a URL ({exc})") from None
        if not url.host:
            raise ValueError("the feed URL has no host")
        if url.userinfo:
            raise ValueError("put the feed's username and password in their own settings, not in the URL (the URL "
                             "is shown; the password is kept encrypted)")
        return value


def _auth(settings: FeedSettings) -> httpx.BasicAuth | None:
    return httpx.BasicAuth(settings.username or "", settings.password or "") \
        if settings.username or settings.password else None


def _refused(status: int, authenticated: bool) -> ConnectorError:
    if status in (401, 403):
        return ConnectorError("the feed refused the username and password" if authenticated else
                              f"the feed asks for a username and password (HTTP {status})")
    if status in (404, 410):
        return ConnectorError(f"there is no feed at this URL (HTTP {status}); the catalog is kept as it was")
    return ConnectorError(f"the feed answered HTTP {status}")


async def _beginning(response: httpx.Response, size: int) -> AsyncIterator[bytes]:
    read = 0
    async for chunk in response.aiter_bytes():
        yield chunk
        read += len(chunk)
        if read >= size:
            return


class FeedConnector:
    name: ClassVar[str] = "feed"
    settings_model: ClassVar[type[BaseModel]] = FeedSettings
    webhooks: ClassVar[bool] = False

    async def check(self, ctx: ConnectionContext) -> dict[str, Any]:
        """Read the feed's beginning: it must answer, and be a feed (not an HTML page) with items in it."""
        http = ctx.bulk_http or ctx.http  # (the platform client refuses an answer larger than an API call's)
        assert http is not None
        settings: FeedSettings = ctx.settings
        items: list[Any] = []
        try:
            async with http.stream("GET", settings.feed_url, auth=_auth(settings)) as response:
                if response.status_code != 200:
                    raise _refused(response.status_code, _auth(settings) is not None)
                async with contextlib.aclosing(feed_items(_beginning(response, CHECK_BYTES))) as reader:
                    async for item in reader:
                        items.append(item)
                        if len(items) == 3:
                            break
        except httpx.HTTPError as exc:
            raise ConnectorError(f"cannot read the feed ({type(exc).__name__})") from None
        except ConnectorError:
            if not items:  # (past its first items, only the beginning was read: it may end mid-way)
                raise
        if not items:
            raise ConnectorError("the feed's beginning holds no product item (an RSS <item>, an Atom <entry> or "
                                 "a line under the header)")
        return {"first_items": [item.first("id") for item in items]}

    async def register_webhooks(self, ctx: ConnectionContext) -> dict[str, Any]:
        return {}  # a feed has none: the core reads it on a schedule

    async def unregister_webhooks(self, ctx: ConnectionContext, state: dict[str, Any]) -> None:
        return None

    def verify(self, ctx: ConnectionContext, delivery: Delivery) -> bool:
        return False

    def parse(self, ctx: ConnectionContext, delivery: Delivery) -> ParsedDelivery:
        raise DeliveryRejected("the feed connector takes no webhooks")

    def sync_interval_minutes(self, settings: FeedSettings) -> int:
        return settings.interval_minutes

    async def catalog(self, ctx: ConnectionContext, cursor: str | None) -> AsyncIterator[CatalogPage]:
        """Every product of the feed, ``PAGE`` at a time. The cursor is the number of pages applied and the
        version of the feed they came from (its ETag or Last-Modified): a resumed read reads the feed again and
        skips them if it is still that version; if it is not (or cannot tell), the read fails, keeping the
        catalog, and the next one starts over (a job that went on with another version would count the removed
        products of neither). A read that yields no page for ``HEARTBEAT_SECONDS`` (skipping, or items that all
        fail) yields an empty one, which renews the job's lease."""
        http = ctx.bulk_http or ctx.http
        assert http is not None
        settings: FeedSettings = ctx.settings
        skip, _, version = (cursor or "0:").partition(":")
        applied = int(skip) if skip.isdigit() else 0
        known = ctx.catalog_state
        headers = {}
        if not applied:  # (a resumed read reads the whole feed again, whatever the last complete read saw)
            if known.get("etag"):
                headers["If-None-Match"] = str(known["etag"])
            if known.get("last_modified"):
                headers["If-Modified-Since"] = str(known["last_modified"])
        async with http.stream("GET", settings.feed_url, auth=_auth(settings), headers=headers) as response:
            if response.status_code == 304 and headers:
                yield CatalogPage((), None, unchanged=True, state=known)
                return
            if response.status_code != 200:
                raise _refused(response.status_code, _auth(settings) is not None)
            state = {k: v for k, v in (("etag", response.headers.get("etag")),
                                       ("last_modified", response.headers.get("last-modified"))) if v}
            now = str(state.get("etag") or state.get("last_modified") or "")
            if applied and (not now or now != version):
                raise ConnectorError("the feed changed while its read was being resumed (or does not say which "
                                     "version it is); the catalog is kept as it was, and the next read starts over")
            products = Products()
            events: list[Any] = []
            number = 0
            last_yield = time.monotonic()

            def page(last: bool) -> CatalogPage | None:
                nonlocal events, number
                number += 1
                taken, events = events[:PAGE], events[PAGE:]
                errors, products.errors = tuple(products.errors), []
                if last and products.more_errors:
                    errors += (RowError(None, f"{products.more_errors:,} more item(s) could not be read"),)
                if number <= applied and not last:
                    return None
                return CatalogPage(tuple(taken), None if last else f"{number}:{now}", state=state, errors=errors)

            async with contextlib.aclosing(feed_items(response.aiter_bytes())) as items:
                async for item in items:
                    if item.position > MAX_ITEMS:
                        raise ConnectorError(f"the feed has more than {MAX_ITEMS:,} items")
                    events += products.add(item)
                    found = page(last=False) if len(events) >= PAGE else None
                    if found is None and time.monotonic() - last_yield > HEARTBEAT_SECONDS:
                        found = CatalogPage((), f"{max(number, applied)}:{now}")
                    if found is not None:
                        last_yield = time.monotonic()
                        yield found
            events += products.finish()
            while len(events) > PAGE:
                found = page(last=False)
                if found is not None:
                    yield found
            found = page(last=True)
            assert found is not None
            yield found


@hookimpl
def hub_connectors() -> list[FeedConnector]:
    """The Google Merchant Center product feed connector."""
    return [FeedConnector()]
