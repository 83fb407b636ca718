"""The ``feed`` connector: a shop's Google Merchant Center product feed (RSS, Atom or tab-separated; gzipped or
not) read into its catalog, and read again on a schedule — served by a real HTTP server on loopback
(``tests.merchant_feed``), applied by the real core, checked through the HTTP API and the database."""

from __future__ import annotations

import gzip
import tracemalloc
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from hub.connectors import ConnectorError, ProductUpserted
from hub.db.models import Product
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


@pytest.mark.parametrize("body, reason", [
    (b"<!DOCTYPE html><html><body>Shop</body></html>", "HTML page"),
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


async def test_a_large_feed_is_read_in_bounded_memory():
    """20,000 items (≈ 30 MB of RSS) read in 64 KB pieces: what is kept at once stays a few MB."""
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
    assert peak < 16 * 1024 * 1024, f"reading the feed kept {peak / 1e6:.1f} MB at once"


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
    given += products.add(item(1, id="V1", item_group_id="G", title="Shirt", image_link="http://x.example/1.jpg"))
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
    assert [i.url for i in next(e for e in given if e.external_id == "W1").images] == [
        "http://x.example/6.jpg", "http://x.example/7.jpg"]
    assert [(e.line, e.item) for e in products.errors] == [(901, ""), (902, "N1"), (903, "N2"), (904, "O1"),
                                                           (905, "W1")]
    assert "no id" in products.errors[0].error and "comes twice" in products.errors[3].error
    assert not {"N1", "N2"} & {e.external_id for e in given}


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
    images = (await client.get("/api/v1/images", params={"limit": 100}, headers=shop.secret)).json()["items"]
    return {p.external_id: {"title": p.title, "price": p.price, "available": p.available, "category": p.category_hint,
                            "images": sorted(i["image_url"] for i in images if i["product_id"] == p.id)}
            for p in rows}


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

    # unchanged: one conditional request, answered 304; nothing applied, nothing removed
    before = len(feed.requests)
    job = await sync(client, shop, connection["id"])
    assert (job["status"], job["result"], job["done"]) == ("succeeded", {"unchanged": 1}, 0)
    assert feed.statuses()[before:] == [304]
    assert await catalog(client, shop) == found

    # changed: a product goes, a price changes, a variant brings a photo, a malformed item is reported
    feed.items = [i for i in feed.items if i.group != "C1"]
    feed.items[0].price = "39.00 EUR"
    feed.items.append(Item("D1-XL", "Floral dress XL", 6, group="D1"))
    feed.raw_items = ['<item><title>No id</title><g:image_link xmlns:g="http://base.google.com/ns/1.0">'
                      f"{feed.image(7)}</g:image_link></item>"]
    feed.changed()
    job = await sync(client, shop, connection["id"])
    assert (job["status"], job["done"], job["failed"]) == ("succeeded", 2, 1), job
    assert job["errors"][0]["line"] == 6 and "no id" in job["errors"][0]["error"]
    found = await catalog(client, shop)
    assert sorted(found) == ["T1", "group:D1"]
    assert found["group:D1"]["price"] == Decimal("39.00")
    assert found["group:D1"]["images"] == [feed.image(s) for s in (1, 2, 3, 6)]

    # the feed disappears, then answers an HTML page: the read fails, says why, and the catalog stays
    for mode, reason in (("gone", "no feed at this URL"), ("html", "HTML page")):
        feed.mode = mode
        job = await sync(client, shop, connection["id"])
        assert job["status"] == "failed" and reason in job["error"], job
        shown = (await client.get(f"/api/v1/connections/{connection['id']}", headers=shop.secret)).json()
        assert reason in shown["sync_error"]
        assert await catalog(client, shop) == found
    feed.mode = "feed"
    job = await sync(client, shop, connection["id"])
    assert job["status"] == "succeeded" and job["result"] == {"unchanged": 1}  # (the same feed as before)
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
                ({"feed_url": platform.url(), "interval_minutes": 2}, "interval_minutes")):
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
