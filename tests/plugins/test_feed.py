"""The ``feed`` connector: a shop's Google Merchant Center product feed (RSS, Atom or tab-separated; gzipped or
not) read into its catalog, and read again on a schedule — served by a real HTTP server on loopback
(``tests.merchant_feed``), applied by the real core, checked through the HTTP API and the database."""

from __future__ import annotations

import asyncio
import gzip
import tracemalloc
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from hub.connectors import ConnectorError, ProductUpserted
from hub.db.models import Connection, Product, utcnow
from hub.plugins.feed import FeedConnector
from hub.plugins.feed.formats import FeedItem, feed_items
from hub.plugins.feed.products import OPEN_GROUPS, Products, image_id
from hub.testing import ConnectorContract
from tests.conftest import wait_job
from tests.merchant_feed import Item, MerchantFeed


async def chunked(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    """Bytes as a network gives them: in pieces that split tags, lines and characters anywhere."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


async def items_of(data: bytes, size: int = 7) -> list[FeedItem]:
    return [item async for item in feed_items(chunked(data, size))]


def dresses(feed: MerchantFeed) -> None:
    """Two products of three and two variants, one standalone, one out of stock."""
    feed.items = [
        Item("D1-S", "Floral dress S", 1, extra=[2], group="D1", price="59.90 EUR", color="red"),
        Item("D1-M", "Floral dress M", 1, extra=[3], group="D1", price="54.90 EUR", color="red"),
        Item("D1-L", "Floral dress L", 1, group="D1", price="64.90 EUR", availability="out of stock"),
        Item("C1-S", "Wool coat S", 4, group="C1", price="120.00 EUR", product_type="Clothing > Coats",
             availability="out_of_stock"),
        Item("C1-M", "Wool coat M", 4, group="C1", price="125.00 EUR", product_type="Clothing > Coats",
             availability="out_of_stock"),
        Item("T1", "Kids t-shirt", 5, price="9.99 EUR", product_type="Clothing > Shirts & Tops", age_group="kids"),
    ]


# -- reading the formats ------------------------------------------------------------------------------------


@pytest.fixture
def feed():
    platform = MerchantFeed()
    dresses(platform)
    yield platform
    platform.close()


async def test_rss_atom_and_tsv_give_the_same_items(feed):
    rss, atom, tsv = [await items_of(feed.answer(path, {})[1]) for path in ("/feed.xml", "/feed.atom", "/feed.tsv")]
    assert [i.first("id") for i in rss] == [i.first("id") for i in atom] == [i.first("id") for i in tsv] == [
        "D1-S", "D1-M", "D1-L", "C1-S", "C1-M", "T1"]
    for found in (rss, atom, tsv):
        first = found[0]
        assert first.first("title") == "Floral dress S" and first.first("item_group_id") == "D1"
        assert first.first("image_link") == feed.image(1)
        assert first.fields["additional_image_link"] == [feed.image(2)]
        assert first.first("link") == f"{feed.base}/p/D1-S" and first.first("price") == "59.90 EUR"
        assert first.first("description") == "<p>A <b>summer</b> dress &amp; more</p>"
        assert found[5].first("age_group") == "kids"
    assert rss[3].first("product_type") == "Clothing > Coats"
    assert [i.position for i in tsv] == [2, 3, 4, 5, 6, 7]  # (lines: the header is line 1)


async def test_gzip_csv_with_quoted_newlines_and_headers_named_loosely():
    text = ('"g:id","Title","Description","Image Link","additional image link","price"\n'
            '"A1","Linen shirt","Cool,\nlight ""summer"" linen","http://x.example/1.jpg",'
            '"http://x.example/2.jpg,http://x.example/3.jpg","25.00 USD"\n'
            'A2,Scarf,Warm,http://x.example/4.jpg,,5 USD\n')
    found = await items_of(gzip.compress(text.encode()), size=5)
    assert [(i.position, i.first("id")) for i in found] == [(2, "A1"), (4, "A2")]
    assert found[0].first("description") == 'Cool,\nlight "summer" linen'
    assert found[0].fields["additional_image_link"] == ["http://x.example/2.jpg", "http://x.example/3.jpg"]
    assert "additional_image_link" not in found[1].fields


LAUGHS = b'<!DOCTYPE rss [<!ENTITY a "EXPANDED">]>'


@pytest.mark.parametrize("body, reason", [
    (b"<!DOCTYPE html><html><body>Shop</body></html>", "HTML page"),
    # a DTD anywhere in the prolog: after a comment or an instruction that look like elements, in UTF-16 with or
    # without a byte-order mark: expat itself refuses it, so no entity is ever declared
    (b'<?xml version="1.0"?><!-- <a --> ' + LAUGHS + b'<rss><channel><item><title>&a;</title></item></channel></rss>',
     "DTD"),
    (b'<?x <a?>' + LAUGHS + b'<rss><channel></channel></rss>', "DTD"),
    ('<?xml version="1.0" encoding="UTF-16"?><!-- \u613c -->'
     '<!DOCTYPE rss [<!ENTITY a "x">]><rss><channel/></rss>'.encode("utf-16"), "DTD"),
    ('<!-- \u613c --><!DOCTYPE rss [<!ENTITY a "x">]><rss><channel/></rss>'.encode("utf-16-le"), "DTD|not well"),
    (b" " * 70_000 + b"<rss/>", "white space"),
    (b'<rss><item><g:id xmlns:g="http://base.google.com/ns/1.0">1</g:id></item></rss>', "has no item"),
    (b"<rss>" + b"<a>" * 100 + b"</a>" * 100 + b"</rss>", "nests elements"),
    (b"\n  <html lang='en'><head></head><body/></html>", "HTML page"),
    (b'{"products": []}', "JSON"),
    (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
     b'<rss><channel><item><g:id xmlns:g="http://base.google.com/ns/1.0">&lol2;</g:id></item></channel></rss>',
     "DTD"),
    (b'<?xml version="1.0"?><products><product/></products>', "root element"),
    (b'<rss><channel><item><title>cut</title></item><item><ti', "ends before"),
    (b"", "empty"),
    (b"title\tlink\nA\thttp://x\n", "no id column"),
])
async def test_what_is_not_a_product_feed_is_refused_with_the_reason(body, reason):
    with pytest.raises(ConnectorError, match=reason):
        await items_of(body, size=3)


async def test_white_space_before_the_declaration_zero_padding_and_a_one_byte_first_chunk_are_read():
    rss = (b'<?xml version="1.0"?><rss xmlns:g="http://base.google.com/ns/1.0"><channel><item><g:id>A</g:id>'
           b"</item></channel></rss>")
    assert [i.first("id") for i in await items_of(b"\n\n  " + rss)] == ["A"]
    assert [i.first("id") for i in await items_of(gzip.compress(rss) + b"\x00" * 512, size=1)] == ["A"]


async def test_truncated_and_multi_member_gzip_files():
    """A gzip file cut off (a feed regenerated in place) is an error, never a shorter catalog; the members of a
    multi-member file (pigz, or files concatenated) are all read."""
    feed = MerchantFeed()
    try:
        feed.items = [Item(f"P{n}", f"Product {n}", n % 9 + 1) for n in range(1000)]
        tsv = feed.answer("/feed.tsv", {})[1]
    finally:
        feed.close()
    whole = gzip.compress(tsv)
    with pytest.raises(ConnectorError, match="ends before its end"):
        await items_of(whole[: len(whole) // 2], size=4096)
    half = len(tsv) // 2
    cut = tsv.rindex(b"\n", 0, half) + 1
    members = gzip.compress(tsv[:cut]) + gzip.compress(tsv[cut:])
    assert len(await items_of(members, size=4096)) == 1000


async def test_a_gzip_bomb_stops_at_the_inflation_limit(monkeypatch):
    from hub.plugins.feed import formats

    monkeypatch.setattr(formats, "MAX_INFLATED_BYTES", 8 * 1024 * 1024)
    bomb = gzip.compress(b"<rss><channel>" + b"<item><title>x</title></item>" * 600_000)  # 17 MB in ≈ 50 KB
    assert len(bomb) < 100_000
    with pytest.raises(ConnectorError, match="inflates to more than"):
        await items_of(bomb, size=65536)


async def test_csv_quotes_count_only_at_the_start_of_a_value_and_an_unclosed_one_is_an_error():
    text = ('id,title,image_link\n'
            'B1,Bag 12" wide,http://x.example/1.jpg\n'
            'B2,"Tote, ""large""\nwith a zip",http://x.example/2.jpg\n'
            'B3,Scarf,http://x.example/3.jpg\n')
    found = await items_of(text.encode(), size=5)
    assert [(i.position, i.first("title")) for i in found] == [
        (2, 'Bag 12" wide'), (3, 'Tote, "large"\nwith a zip'), (5, "Scarf")]
    with pytest.raises(ConnectorError, match="ends inside a quoted value that starts at line 3"):
        await items_of(b'id,title,image_link\nB1,a,b\nB2,"never closed,c\nB3,d,e\n')


async def test_what_is_not_an_item_is_dropped_as_it_is_read():
    """Elements beside the items (10 KB each, 4,000 of them: 40 MB) are not kept: the read holds a few MB."""
    junk = "<g:extra xmlns:g='http://base.google.com/ns/1.0'>" + "x" * 10_000 + "</g:extra>"
    body = ('<rss xmlns:g="http://base.google.com/ns/1.0"><channel>' + "".join(
        f"<item><g:id>J{n}</g:id><g:image_link>http://x.example/{n}.jpg</g:image_link></item>{junk}"
        for n in range(4000)) + "</channel></rss>").encode()
    tracemalloc.start()
    try:
        count = 0
        async for _ in feed_items(chunked(body, 64 * 1024)):
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 4000 and peak < 8 * 1024 * 1024, f"{peak / 1e6:.1f} MB"


async def test_a_large_feed_is_read_in_bounded_memory():
    """20,000 items (≈ 30 MB of RSS) read in 64 KB pieces: what is kept at once is less than the feed."""
    feed = MerchantFeed()
    try:
        feed.items = [Item(f"P{n}", f"Product {n} " + "with a long title " * 3, n % 50 + 1, extra=[n % 7 + 1],
                           group=f"G{n // 3}", description="<p>" + "Soft cotton, regular fit. " * 40 + "</p>")
                      for n in range(20_000)]
        body = feed.answer("/feed.xml", {})[1]
    finally:
        feed.close()
    assert len(body) > 25_000_000
    products = Products()
    given = 0
    tracemalloc.start()
    try:
        async for item in feed_items(chunked(body, 64 * 1024)):
            given += len(products.add(item))
        given += len(products.finish())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert given == 6_667 and not products.errors
    # what a read keeps grows with the products (6,667 groups here, each kept to be given again whole: ≈ 3 KB),
    # never with the feed's bytes: the items themselves are dropped as they are read
    assert peak < 24 * 1024 * 1024, f"reading the feed kept {peak / 1e6:.1f} MB at once"


# -- items made products ------------------------------------------------------------------------------------


async def test_variants_are_one_product_with_every_photo_the_lowest_price_and_stock_if_any_has_it(feed):
    products = Products()
    events = [e for item in await items_of(feed.answer("/feed.xml", {})[1], 4096) for e in products.add(item)]
    events += products.finish()
    by_id = {e.external_id: e for e in events}
    assert sorted(by_id) == ["T1", "group:C1", "group:D1"]
    dress = by_id["group:D1"]
    assert [i.url for i in dress.images] == [feed.image(1), feed.image(2), feed.image(3)]
    assert [i.external_id for i in dress.images] == [image_id(feed.image(s)) for s in (1, 2, 3)]
    assert (dress.title, dress.price, dress.currency, dress.available) == ("Floral dress S", Decimal("54.90"),
                                                                           "EUR", True)
    assert dress.description == "A summer dress & more" and dress.url == f"{feed.base}/p/D1-S"
    assert dress.category_hint == "Dresses" and dress.tags[:3] == ("Dresses", "Clothing", "Apparel & Accessories")
    assert "Adults" in dress.tags and "red" in dress.tags
    coat = by_id["group:C1"]
    assert (coat.available, coat.price, coat.category_hint) == (False, Decimal("120.00"), "Coats")
    shirt = by_id["T1"]
    assert (shirt.category_hint, "Kids" in shirt.tags, len(shirt.images)) == ("Shirts & Tops", True, 1)


async def test_a_variant_that_comes_late_joins_its_product_and_bad_items_are_reported():
    products = Products()

    def item(position: int, **fields: str) -> FeedItem:
        return FeedItem(position, {k: [v] for k, v in fields.items()})

    given: list[ProductUpserted] = []
    given += products.add(item(1, id="V1", item_group_id="G", title="Shirt", image_link="http://x.example/1.jpg",
                               product_type="Clothing > Shirts", link="http://x.example/p/g", color="white",
                               description="<p>A white shirt</p>"))
    for n in range(OPEN_GROUPS + 5):  # enough other products that the group is given before its last variant
        given += products.add(item(n + 2, id=f"O{n}", title="Other", image_link=f"http://x.example/o{n}.jpg"))
    assert [e.external_id for e in given if e.external_id == "group:G"]  # (given once already)
    given += products.add(item(900, id="V2", item_group_id="G", image_link="http://x.example/2.jpg",
                               price="12 EUR"))
    given += products.add(item(901, title="no id", image_link="http://x.example/3.jpg"))
    given += products.add(item(902, id="N1", title="no photo"))
    given += products.add(item(903, id="N2", image_link="ftp://x.example/4.jpg"))
    given += products.add(item(904, id="O1", image_link="http://x.example/5.jpg"))  # (its id came before)
    given += products.add(FeedItem(905, {"id": ["W1"], "image_link": ["http://x.example/6.jpg"],
                                         "additional_image_link": ["javascript:alert(1)", "http://x.example/7.jpg"]}))
    given += products.finish()
    group = [e for e in given if e.external_id == "group:G"]
    assert [i.url for i in group[-1].images] == ["http://x.example/1.jpg", "http://x.example/2.jpg"]
    assert group[-1].price == Decimal("12")
    # given again whole: what the first variant said stays (a late variant brings only its photos and offer)
    assert (group[-1].title, group[-1].url, group[-1].category_hint) == ("Shirt", "http://x.example/p/g", "Shirts")
    assert group[-1].description == group[0].description == "A white shirt"
    assert group[-1].tags == group[0].tags == ("Shirts", "Clothing", "white")
    assert [i.url for i in next(e for e in given if e.external_id == "W1").images] == [
        "http://x.example/6.jpg", "http://x.example/7.jpg"]
    assert [(e.line, e.item) for e in products.errors] == [(901, ""), (902, "N1"), (903, "N2"), (904, "O1"),
                                                           (905, "W1")]
    assert "no id" in products.errors[0].error and "comes twice" in products.errors[3].error
    assert not {"N1", "N2"} & {e.external_id for e in given}


async def test_a_resumed_read_skips_pages_only_if_the_feed_is_the_same_version():
    """A job resumed after an error reads the feed again: it skips the pages it applied only if the feed is the
    version they came from (its ETag); a feed written anew meanwhile is read from its first page."""
    import httpx

    from hub.connectors import ConnectionContext
    from hub.plugins.feed import FeedSettings

    with MerchantFeed() as platform:
        platform.items = [Item(f"P{n:03d}", f"Product {n}", n % 9 + 1) for n in range(600)]
        connector = FeedConnector()
        async with httpx.AsyncClient() as http:
            ctx = ConnectionContext(FeedSettings(feed_url=platform.url()), http, "http://127.0.0.1:9/", bulk_http=http)
            pages = [page async for page in connector.catalog(ctx, None)]
            assert [len(p.events) for p in pages] == [250, 250, 100] and pages[0].cursor.startswith("1:")
            resumed = [page async for page in connector.catalog(ctx, pages[0].cursor)]
            assert [p.events for p in resumed] == [p.events for p in pages[1:]]
            platform.items.insert(0, Item("NEW", "New product", 3))
            with pytest.raises(ConnectorError, match="changed while its read was being resumed"):
                [page async for page in connector.catalog(ctx, pages[0].cursor)]
            again = [page async for page in connector.catalog(ctx, None)]  # (the next read starts over)
            assert again[0].events[0].external_id == "NEW" and sum(len(p.events) for p in again) == 601


# -- the contract ---------------------------------------------------------------------------------------------


class TestFeedContract(ConnectorContract):
    @pytest.fixture
    def platform(self):
        shop = MerchantFeed(username="shop", password="feed-pass-123")
        shop.items = [Item(f"P{n}", f"Product {n}", n % 9 + 1) for n in range(300)]  # more than a page
        yield shop
        shop.close()

    @pytest.fixture
    def connector(self):
        return FeedConnector()

    @pytest.fixture
    def connection_settings(self, platform):
        return {"feed_url": platform.url(), "username": "shop", "password": "feed-pass-123", "interval_minutes": 30}

    @pytest.fixture
    def bad_connection_settings(self, platform):
        return {"feed_url": platform.url(), "username": "shop", "password": "wrong-password"}


# -- through the hub ------------------------------------------------------------------------------------------


@pytest.fixture
def settings_overrides():
    return {"secret_key": "a-long-random-secret-key-for-tests", "allow_private_fetch": True}


async def connect(client, shop, settings: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/api/v1/connections", json={"connector": "feed", "settings": settings},
                             headers=shop.secret)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def sync(client, shop, connection_id: int) -> dict[str, Any]:
    resp = await client.post(f"/api/v1/connections/{connection_id}/sync", headers=shop.secret)
    assert resp.status_code == 202, resp.text
    return await wait_job(client, shop.secret, resp.json()["id"])


async def catalog(client, shop) -> dict[str, dict[str, Any]]:
    """The shop's products (from the database) with their images' URLs (from the API)."""
    services = client.app.state.services
    async with services.sessions() as session:
        rows = list(await session.scalars(select(Product).where(Product.shop_id == shop["id"],
                                                                Product.status != "deleted")))
    images: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = (await client.get("/api/v1/images", headers=shop.secret, params={
            "limit": 100, **({"cursor": cursor} if cursor else {})})).json()
        images += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    return {p.external_id: {"title": p.title, "price": p.price, "available": p.available, "category": p.category_hint,
                            "images": sorted(i["image_url"] for i in images if i["product_id"] == p.id)}
            for p in rows}


async def scheduled_sync(client, shop, connection_id: int) -> dict[str, Any]:
    """The connection's next read is due now: the running service's sweep starts it as a scheduled job."""
    async def syncs() -> list[dict[str, Any]]:
        jobs = (await client.get("/api/v1/jobs", params={"kind": "sync"}, headers=shop.secret)).json()["items"]
        return [j for j in jobs if j["connection_id"] == connection_id]

    known = {j["id"] for j in await syncs()}
    services = client.app.state.services
    async with services.sessions() as session:
        row = await session.get(Connection, connection_id)
        row.next_sync_at = utcnow() - timedelta(seconds=1)
        await session.commit()
    async with asyncio.timeout(60):
        while not (started := [j for j in await syncs() if j["id"] not in known]):
            await asyncio.sleep(0.1)
    assert [j["scheduled"] for j in started] == [True]
    return await wait_job(client, shop.secret, started[0]["id"])


async def test_a_feed_is_connected_read_again_on_changes_and_kept_when_it_fails(client, shop, feed):
    connection = await connect(client, shop, {"feed_url": feed.url(), "interval_minutes": 30})
    assert (connection["sync_interval_minutes"], connection["sync_error"]) == (30, None)
    assert connection["info"] == {"first_items": ["D1-S", "D1-M", "D1-L"]}
    job = await wait_job(client, shop.secret, connection["sync_job"]["id"])
    assert (job["status"], job["done"], job["failed"]) == ("succeeded", 3, 0), job
    found = await catalog(client, shop)
    assert found["group:D1"] == {"title": "Floral dress S", "price": Decimal("54.90"), "available": True,
                                 "category": "Dresses", "images": [feed.image(s) for s in (1, 2, 3)]}
    assert found["group:C1"]["available"] is False and found["T1"]["images"] == [feed.image(5)]
    cats = {c["name"]: c["id"] for c in (await client.get("/api/v1/categories", headers=shop.secret)).json()["items"]}
    images = (await client.get("/api/v1/images", params={"limit": 100}, headers=shop.secret)).json()["items"]
    assert {i["category_id"] for i in images if i["image_url"] == feed.image(2)} == {cats["Dresses"]}

    # a scheduled read of the unchanged feed: one conditional request, answered 304; nothing applied or removed
    before = len(feed.requests)
    job = await scheduled_sync(client, shop, connection["id"])
    assert (job["status"], job["result"], job["done"]) == ("succeeded", {"unchanged": 1}, 0), job
    assert feed.statuses()[before:] == [304]
    assert await catalog(client, shop) == found
    before = len(feed.requests)  # one asked for reads the whole feed
    job = await sync(client, shop, connection["id"])
    assert (job["status"], job["done"], feed.statuses()[before:]) == ("succeeded", 3, [200]), job

    # changed: a product goes, a price changes, a variant brings a photo, a malformed item is reported
    feed.items = [i for i in feed.items if i.group != "C1"]
    feed.items[0].price = "39.00 EUR"
    feed.items.append(Item("D1-XL", "Floral dress XL", 6, group="D1"))
    feed.raw_items = ['<item><title>No id</title><g:image_link xmlns:g="http://base.google.com/ns/1.0">'
                      f"{feed.image(7)}</g:image_link></item>"]
    feed.changed()
    job = await scheduled_sync(client, shop, connection["id"])
    assert (job["status"], job["done"], job["failed"]) == ("succeeded", 2, 1), job
    assert job["errors"][0]["line"] == 6 and "no id" in job["errors"][0]["error"]
    found = await catalog(client, shop)
    assert sorted(found) == ["T1", "group:D1"]
    assert found["group:D1"]["price"] == Decimal("39.00")
    assert found["group:D1"]["images"] == [feed.image(s) for s in (1, 2, 3, 6)]

    # the feed disappears, answers an HTML page, breaks off after its first item, or holds no item: the read
    # fails, says why, and the catalog stays as it was
    for mode, reason in (("gone", "no feed at this URL"), ("html", "HTML page"), ("cut", "ends before its XML"),
                         ("unusable", "found no product")):
        feed.mode = mode
        job = await sync(client, shop, connection["id"])
        assert job["status"] == "failed" and reason in job["error"], job
        shown = (await client.get(f"/api/v1/connections/{connection['id']}", headers=shop.secret)).json()
        assert reason in shown["sync_error"]
        assert await catalog(client, shop) == found
    feed.mode = "feed"
    job = await sync(client, shop, connection["id"])
    assert job["status"] == "succeeded" and job["done"] == 2
    shown = (await client.get(f"/api/v1/connections/{connection['id']}", headers=shop.secret)).json()
    assert shown["sync_error"] is None


@pytest.mark.parametrize("path", ["/feed.atom", "/feed.tsv.gz"])
async def test_atom_and_gzipped_tsv_feeds_make_the_same_catalog(client, shop, feed, path):
    connection = await connect(client, shop, {"feed_url": feed.url(path)})
    assert connection["sync_interval_minutes"] == 60  # the connector's default
    job = await wait_job(client, shop.secret, connection["sync_job"]["id"])
    assert (job["status"], job["done"], job["failed"]) == ("succeeded", 3, 0), job
    found = await catalog(client, shop)
    assert sorted(found) == ["T1", "group:C1", "group:D1"]
    assert found["group:D1"]["images"] == [feed.image(s) for s in (1, 2, 3)]
    assert found["group:D1"]["price"] == Decimal("54.90")


async def test_connecting_refuses_what_is_not_a_feed_and_a_wrong_password(client, shop):
    with MerchantFeed(username="shop", password="right-pass") as platform:
        dresses(platform)
        for settings, reason in (
                ({"feed_url": platform.url(), "username": "shop", "password": "wrong"}, "refused the username"),
                ({"feed_url": platform.url()}, "asks for a username"),
                ({"feed_url": platform.url("/nothing.xml"), "username": "shop", "password": "right-pass"},
                 "no feed at this URL"),
                ({"feed_url": platform.url(), "interval_minutes": 2}, "interval_minutes"),
                ({"feed_url": platform.url().replace("http://", "http://shop:right-pass@")}, "own settings")):
            resp = await client.post("/api/v1/connections", json={"connector": "feed", "settings": settings},
                                     headers=shop.secret)
            assert resp.status_code in (422, 502) and reason in resp.text, resp.text
        platform.mode = "html"
        resp = await client.post("/api/v1/connections", headers=shop.secret, json={
            "connector": "feed", "settings": {"feed_url": platform.url(), "username": "shop",
                                              "password": "right-pass"}})
        assert resp.status_code in (422, 502) and "HTML page" in resp.text, resp.text
        listed = (await client.get("/api/v1/connections", headers=shop.secret)).json()
        assert listed["items"] == []


@pytest.mark.parametrize("settings_overrides", [{"secret_key": "a-long-random-secret-key-for-tests",
                                                 "allow_private_fetch": True, "platform_max_response_bytes": 65536}])
async def test_a_feed_larger_than_an_api_answer_connects_and_imports_page_by_page(client, shop):
    """A feed is one large document: it is read through the client for large answers, never the platform API's
    (whose limit is an API call's), when connecting and in the sync; 400 products are two pages of the job."""
    with MerchantFeed() as platform:
        platform.items = [Item(f"P{n}", f"Product {n}", n % 9 + 1, description="<p>" + "Soft cotton. " * 40 + "</p>")
                          for n in range(400)]
        assert len(platform.answer("/feed.xml", {})[1]) > 4 * 65536
        connection = await connect(client, shop, {"feed_url": platform.url()})
        job = await wait_job(client, shop.secret, connection["sync_job"]["id"])
        assert (job["status"], job["done"], job["failed"]) == ("succeeded", 400, 0), job
        found = await catalog(client, shop)
        assert len(found) == 400 and found["P7"]["images"] == [platform.image(8)]


async def test_a_csv_value_larger_than_the_csv_module_reads_is_that_items_problem_only():
    """The csv module's own limit stays as it is (the process shares it); a feed record past it is reported."""
    text = "id,title,image_link\nA,Scarf,http://x.example/1.jpg\nB,\"" + "x" * 200_000 + "\",http://x.example/2.jpg\n"
    found = await items_of(text.encode(), size=65536)
    assert [(i.first("id"), bool(i.problem)) for i in found] == [("A", False), ("", True)]
    products = Products()
    for item in found:
        products.add(item)
    assert [e.line for e in products.errors] == [3] and "cannot be read" in products.errors[0].error
