"""Merchandising rules through HTTP: managed at /api/v1/rules, applied in the documented order, each checked
against an oracle computed here (the lexical score with a synonym group as one word, the ranking with a
boost as a reference reciprocal rank fusion, pins at their positions, hides gone)."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import update

from hub.db.engine import create_engine
from hub.db.models import Product
from hub.search.text import words
from tests.indexing.test_hybrid import import_catalog, rank, reference_rrf

CATALOG = [
    ("Wool jumper", "", "J1", "Tops"),
    ("Cashmere sweater", "", "S1", "Tops"),
    ("Cotton pullover", "", "P1", "Tops"),
    ("Red dress", "", "D1", "Dresses"),
    ("Red dress, back", "", "D1", "Dresses"),
    ("Blue dress", "", "D2", "Dresses"),
    ("Green skirt", "", "K1", "Skirts"),
    ("Silk scarf", "", "", "Accessories"),
]


async def rule(client, shop, status=201, **body):
    resp = await client.post("/api/v1/rules", json=body, headers=shop.secret)
    assert resp.status_code == status, (body, resp.text)
    return resp.json()


async def products(client, shop) -> dict[str, int]:
    items = (await client.get("/api/v1/images", params={"limit": 100}, headers=shop.secret)).json()["items"]
    return {i["name"]: i["product_id"] for i in items}


async def names(client, shop, prompt, **body) -> list[str]:
    return [r["name"] for r in (await rank(client, shop, prompt, **body))["results"]]


async def test_rules_are_managed_and_checked(client, shop, make_shop):
    ids = await import_catalog(client, shop, CATALOG)
    product = await products(client, shop)
    other = await make_shop("Other")
    theirs = await import_catalog(client, other, [("Their dress", "", "X1", "Dresses")])
    their_product = (await products(client, other))["Their dress"]
    made = [
        await rule(client, shop, kind="pin", query="Red dresses", product_id=product["Green skirt"], position=1),
        await rule(client, shop, kind="hide", product_id=product["Blue dress"]),
        await rule(client, shop, kind="synonyms", words=["jumper", "Sweater", "sweaters", "pullover"]),
        await rule(client, shop, kind="boost", condition="new", weight=0.2),
    ]
    assert made[0]["query"] == "Red dresses" and made[0]["position"] == 1
    assert made[2]["words"] == ["jumper", "Sweater", "pullover"]  # one spelling per word the index keeps
    assert made[3]["days"] == 30
    listed = (await client.get("/api/v1/rules", headers=shop.secret)).json()["items"]
    assert [r["id"] for r in listed] == [r["id"] for r in made]
    for body, status in [
        ({"kind": "pin", "query": "x", "product_id": product["Red dress"]}, 400),  # no position
        ({"kind": "pin", "query": "x", "position": 1}, 400),  # no target
        ({"kind": "hide", "product_id": product["Red dress"], "image_id": ids["Silk scarf"]}, 400),  # both
        ({"kind": "synonyms", "words": ["red dress", "gown"]}, 400),  # two words
        ({"kind": "synonyms", "words": ["jumper", "jumpers"]}, 400),  # one word twice
        ({"kind": "boost", "condition": "in_stock", "weight": 0}, 400),
        ({"kind": "boost", "condition": "cheap", "weight": 0.5}, 400),
        ({"kind": "pin", "query": "the", "product_id": product["Red dress"], "position": 1}, 400),  # no word kept
        ({"kind": "hide", "product_id": their_product}, 404),  # another shop's
        ({"kind": "hide", "image_id": theirs["Their dress"]}, 404),
        ({"kind": "sparkle"}, 400),
        ({"kind": "hide", "image_id": ids["Red dress"]}, 400),  # an image of a product: the product is the target
        ({"kind": "synonyms", "words": [f"word{n}" for n in range(21)]}, 400),  # more than 20
        ({"kind": "synonyms", "words": ["pullover", *[f"knit{n}" for n in range(18)]]}, 400),  # joins to 21
        ({"kind": "boost", "condition": "new", "weight": 0.5}, 409),  # one boost per condition
    ]:
        await rule(client, shop, status, **body)
    assert (await client.post("/api/v1/rules", json={"kind": "hide", "product_id": product["Red dress"]},
                              headers=shop.publishable)).status_code == 403
    assert (await client.get("/api/v1/rules", headers=other.secret)).json()["items"] == []
    assert (await client.delete(f"/api/v1/rules/{made[1]['id']}", headers=other.secret)).status_code == 404
    assert (await client.delete(f"/api/v1/rules/{made[1]['id']}", headers=shop.secret)).status_code == 204
    assert len((await client.get("/api/v1/rules", headers=shop.secret)).json()["items"]) == 3


async def test_synonyms_widen_both_sides(client, shop):
    ids = await import_catalog(client, shop, CATALOG)
    assert await names(client, shop, "sweater", mode="lexical") == ["Cashmere sweater"]
    await rule(client, shop, kind="synonyms", words=["jumper", "sweater", "pullover"])
    got = await rank(client, shop, "sweaters", mode="lexical", explain=True)
    # the group is one word: in 3 of the 8 documents, in each one's title
    idf = round(math.log(1 + (8 - 3 + 0.5) / (3 + 0.5)), 6)
    assert [(r["name"], r["score"]) for r in got["results"]] == [
        ("Wool jumper", pytest.approx(idf, abs=2e-6)), ("Cashmere sweater", pytest.approx(idf, abs=2e-6)),
        ("Cotton pullover", pytest.approx(idf, abs=2e-6))]
    assert got["results"][0]["explain"]["steps"][0] == "synonyms: the prompt also looks for jumper pullover"
    # the vector side encodes the prompt with the group's other words
    widened = await rank(client, shop, "sweaters", mode="vector", distinct="image")
    spelled_out = await rank(client, shop, "sweaters jumper pullover", mode="vector", distinct="image")
    assert [r["id"] for r in widened["results"]] == [r["id"] for r in spelled_out["results"]]
    assert [r["scores"]["vector"] for r in widened["results"]] == \
        pytest.approx([r["scores"]["vector"] for r in spelled_out["results"]], abs=1e-5)
    assert words("pullover")[0] in {w for r in got["results"] for w in words(r["name"])}
    del ids


async def test_hides_boosts_and_pins_in_their_order(client, shop, settings):
    ids = await import_catalog(client, shop, CATALOG)
    product = await products(client, shop)

    base = await rank(client, shop, "dress", mode="lexical", distinct="image")
    assert [r["name"] for r in base["results"]][:3] == ["Red dress", "Red dress, back", "Blue dress"]

    # boost what is in stock: the red dress is sold out
    engine = create_engine(settings.db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(update(Product).where(Product.id == product["Red dress"]).values(available=False))
    finally:
        await engine.dispose()
    boost = await rule(client, shop, kind="boost", condition="in_stock", weight=1.0)
    got = await rank(client, shop, "dress", mode="lexical", distinct="image", explain=True)
    order = [r["id"] for r in base["results"]]
    in_stock = [i for i in order if i not in (ids["Red dress"], ids["Red dress, back"])]
    assert [r["id"] for r in got["results"]] == reference_rrf(order, in_stock, 0.5)  # equal weights 1 and 1
    blue = next(r for r in got["results"] if r["name"] == "Blue dress")
    assert f"boost in_stock (rule {boost['id']}): +1/(60+1)" in blue["explain"]["steps"]

    # hide one product for one query, another for every query
    await rule(client, shop, kind="hide", query="dress", product_id=product["Blue dress"])
    assert "Blue dress" not in await names(client, shop, "dresses", mode="lexical")
    assert "Blue dress" in await names(client, shop, "blue", mode="lexical")
    await rule(client, shop, kind="hide", image_id=ids["Silk scarf"])
    assert "Silk scarf" not in await names(client, shop, "silk scarf", mode="hybrid")

    # pins: the skirt first and the wool jumper second for "red dress", whatever their rank; other queries
    # keep theirs; a filter that excludes the pinned product keeps it out; a hidden product is never pinned
    await rule(client, shop, kind="pin", query="red dress", product_id=product["Green skirt"], position=1)
    await rule(client, shop, kind="pin", query="Red dresses", product_id=product["Wool jumper"], position=2)
    await rule(client, shop, kind="hide", query="red dress", product_id=product["Blue dress"])
    await rule(client, shop, kind="pin", query="red dress", product_id=product["Blue dress"], position=3)
    pinned = await rank(client, shop, "red dress", mode="lexical", limit=3, explain=True)
    assert [r["name"] for r in pinned["results"]] == ["Green skirt", "Wool jumper", "Red dress"]
    assert any(s.startswith("pinned at 1 for 'red dress'") for s in pinned["results"][0]["explain"]["steps"])
    assert (await names(client, shop, "red", mode="lexical"))[0] == "Red dress"
    categories = (await client.get("/api/v1/categories", headers=shop.secret)).json()["items"]
    dresses = next(c["id"] for c in categories if c["name"] == "Dresses")
    filtered = await names(client, shop, "red dress", mode="lexical", filters={"category_id": dresses})
    assert filtered == ["Red dress"]  # the skirt and the jumper are not dresses; the blue dress is hidden here


async def test_rules_are_kept_between_queries_and_a_change_counts_at_once(client, shop, settings):
    """HUB_QUERY_CACHE_SECONDS: a shop's rules and search defaults are read once per that time; a rule added or
    removed (or a shop changed) through this process counts from the next query, one written by another process
    once that time is up."""
    from hub.db.models import MerchRule

    await import_catalog(client, shop, CATALOG)
    product = await products(client, shop)
    now = [1000.0]
    client.app.state.services.shop_search.clock = lambda: now[0]
    assert "Blue dress" in await names(client, shop, "dress", mode="lexical")  # read (no rules) and kept
    hide = await rule(client, shop, kind="hide", product_id=product["Blue dress"])
    assert "Blue dress" not in await names(client, shop, "dress", mode="lexical")  # through this process: at once
    assert (await client.delete(f"/api/v1/rules/{hide['id']}", headers=shop.secret)).status_code == 204
    assert "Blue dress" in await names(client, shop, "dress", mode="lexical")
    other = create_engine(settings.db_url)  # another process hides it
    try:
        async with other.begin() as conn:
            await conn.execute(MerchRule.__table__.insert().values(shop_id=shop["id"], kind="hide",
                                                                   product_id=product["Blue dress"], words=[]))
    finally:
        await other.dispose()
    assert "Blue dress" in await names(client, shop, "dress", mode="lexical")  # within the cache time
    now[0] += settings.query_cache_seconds + 0.01
    assert "Blue dress" not in await names(client, shop, "dress", mode="lexical")
    patched = await client.patch("/api/v1/shop", json={"search_mode": "vector"}, headers=shop.secret)
    assert patched.status_code == 200
    assert (await rank(client, shop, "dress"))["mode"] == "vector"  # the shop's new default, at once
