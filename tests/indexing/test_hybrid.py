"""Lexical and hybrid ranking through HTTP, on SQLite and PostgreSQL, each checked against an oracle computed here:
the lexical side against the documented score (idf of each matching term within the shop, in full in the title
part, half in the descriptions), the fused ranking against a reference reciprocal rank fusion of the API's own
vector and lexical rankings (the vector ranking is itself checked against brute-force cosine in
``test_recommendations``), one-per-product against the per-image ranking. The random model's rankings mean
nothing; only their agreement with the oracles is tested.
"""

from __future__ import annotations

import asyncio
import csv
import io
import math
import zipfile
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.engine import create_engine
from hub.db.models import SearchDoc
from hub.search.text import query_terms, words
from tests.conftest import ADMIN_TOKEN, serve_app, wait_for_images, wait_job
from tests.images import photo

# name, description, product (external id or ""), category
CATALOG = [
    ("Linen shirt", "Breezy summer shirt", "P1", "Shirts & Blouses"),
    ("Linen shirt, back", "", "P1", "Shirts & Blouses"),
    ("Levi's 501 jeans", "Straight leg denim", "P2", "Jeans"),
    ("Floral dress", "Red dress with floral patterns", "P3", "Dresses"),
    ("Red gown", "Evening dress in silk", "P4", "Dresses"),
    ("Wool jumper", "Warm knit sweater", "P5", "Sweaters & Cardigans"),
    ("Cotton tee", "Basic t-shirt", "", "T-Shirts"),
    ("Summer dress", "Linen blend, red and white", "P6", "Dresses"),
    ("Summer dress, detail", "", "P6", "Dresses"),
    ("Denim jacket", "Blue denim", "P7", "Jackets & Coats"),
    ("Silk scarf", "", "", "Accessories"),
    ("Red knit jumper", "", "P8", "Sweaters & Cardigans"),
]
QUERIES = ["linen", "red dress", "levis 501", "knit jumper", "silk", "denim shirt", "nothing matches this"]


@dataclass
class Doc:
    title: set[str] = field(default_factory=set)
    body: set[str] = field(default_factory=set)


def manifest_zip(rows: list[tuple[str, str, str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["file", "name", "description", "product_id", "category"])
    files = {}
    for n, (name, description, product, category) in enumerate(rows):
        writer.writerow([f"{n}.jpg", name, description, product, category])
        files[f"{n}.jpg"] = photo(500 + n)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.csv", out.getvalue())
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


async def import_catalog(client, shop, rows=CATALOG) -> dict[str, int]:
    """The catalog imported as a shop would (ZIP with a manifest); image ids by name."""
    resp = await client.post("/api/v1/imports", content=manifest_zip(rows),
                             headers={**shop.secret, "Content-Type": "application/zip"})
    assert resp.status_code == 202, resp.text
    job = await wait_job(client, shop.secret, resp.json()["id"])
    assert job["status"] == "succeeded" and job["failed"] == 0, job
    listed, cursor = [], None
    while True:
        page = (await client.get("/api/v1/images", params={"limit": 100} | ({"cursor": cursor} if cursor else {}),
                                 headers=shop.secret)).json()
        listed += page["items"]
        if not (cursor := page["next_cursor"]):
            break
    ids = {img["name"]: img["id"] for img in listed}
    ready = await wait_for_images(client, shop.secret, list(ids.values()))
    assert {img["status"] for img in ready.values()} == {"ready"}
    return ids


def documents(rows, ids: dict[str, int]) -> dict[int, Doc]:
    """What the index should hold: the image's name and category, the product's title (its first row's name)
    in the title part; the descriptions (the image's, the product's first row's) in the body."""
    first: dict[str, tuple[str, str]] = {}
    for name, description, product, _ in rows:
        if product:
            first.setdefault(product, (name, description))
    docs = {}
    for name, description, product, category in rows:
        title = words(name) + words(category)
        body = words(description)
        if product:
            title += words(first[product][0])
            body += words(first[product][1])
        docs[ids[name]] = Doc(set(title), set(body))
    return docs


def lexical_oracle(docs: dict[int, Doc], prompt: str) -> list[tuple[int, float]]:
    scores: dict[int, float] = {}
    for term in query_terms(prompt):
        containing = sum(1 for d in docs.values() if term in d.title or term in d.body)
        if not containing:
            continue
        idf = math.log(1 + (len(docs) - containing + 0.5) / (containing + 0.5))
        for ident, doc in docs.items():
            if term in doc.title:
                scores[ident] = scores.get(ident, 0.0) + round(idf, 6)
            elif term in doc.body:
                scores[ident] = scores.get(ident, 0.0) + round(idf * 0.5, 6)
    return sorted(((i, round(s, 6)) for i, s in scores.items()), key=lambda p: (-p[1], p[0]))


def reference_rrf(vector: list[int], lexical: list[int], lexical_share: float) -> list[int]:
    """RRF written out from the paper's formula, ties by vector rank, then lexical rank, then id."""
    items = set(vector) | set(lexical)
    v_rank = {ident: n + 1 for n, ident in enumerate(vector)}
    l_rank = {ident: n + 1 for n, ident in enumerate(lexical)}

    def fused(ident: int) -> float:
        total = 0.0
        if ident in v_rank:
            total += (1 - lexical_share) / (60 + v_rank[ident])
        if ident in l_rank:
            total += lexical_share / (60 + l_rank[ident])
        return total

    return sorted(items, key=lambda i: (-round(fused(i), 12), v_rank.get(i, 10**9), l_rank.get(i, 10**9), i))


async def rank(client, shop, prompt: str, **body: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/recommendations", json={"prompt": prompt, "limit": 100, **body},
                             headers=shop.publishable)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_lexical_ranking_equals_the_documented_score(client, shop):
    ids = await import_catalog(client, shop)
    docs = documents(CATALOG, ids)
    for prompt in QUERIES:
        got = await rank(client, shop, prompt, mode="lexical", distinct="image")
        assert got["mode"] == "lexical"
        expected = lexical_oracle(docs, prompt)
        assert [(r["id"], r["score"]) for r in got["results"]] == \
            [(i, pytest.approx(s, abs=2e-6)) for i, s in expected], prompt
        assert all(r["scores"]["lexical"] == r["score"] and r["scores"]["vector"] is None for r in got["results"])
    # the precise words a shopper types find what the model would not know: a brand and a product code
    assert [r["name"] for r in (await rank(client, shop, "Levi's 501", mode="lexical"))["results"]] == \
        ["Levi's 501 jeans"]


async def test_hybrid_is_the_reciprocal_rank_fusion_of_both_sides(client, shop):
    await import_catalog(client, shop)
    for prompt in ["red linen dress", "levis 501", "knit"]:
        vector = [r["id"] for r in (await rank(client, shop, prompt, mode="vector", distinct="image"))["results"]]
        lexical = [r["id"] for r in (await rank(client, shop, prompt, mode="lexical", distinct="image"))["results"]]
        assert len(vector) == len(CATALOG) and lexical
        for share in (0.0, 0.3, 0.5, 1.0):
            got = await rank(client, shop, prompt, mode="hybrid", weight=share, distinct="image", explain=True)
            assert (got["mode"], got["weight"]) == ("hybrid", share)
            assert [r["id"] for r in got["results"]] == reference_rrf(vector, lexical, share), (prompt, share)
            for r in got["results"]:
                v_rank = vector.index(r["id"]) + 1
                l_rank = lexical.index(r["id"]) + 1 if r["id"] in lexical else None
                assert (r["explain"]["vector_rank"], r["explain"]["lexical_rank"]) == (v_rank, l_rank)
                expected = (1 - share) / (60 + v_rank) + (share / (60 + l_rank) if l_rank else 0)
                assert r["score"] == pytest.approx(expected, abs=1e-6)
                assert r["scores"]["vector"] is not None
        # weight 0 is the vector ranking; weight 1 puts every word match first, in lexical order
        assert [r["id"] for r in (await rank(client, shop, prompt, weight=0, distinct="image"))["results"]] == vector
        by_words = [r["id"] for r in (await rank(client, shop, prompt, weight=1, distinct="image"))["results"]]
        assert by_words[:len(lexical)] == lexical
        assert by_words[len(lexical):] == [i for i in vector if i not in lexical]


async def test_one_result_per_product_by_default(client, shop):
    ids = await import_catalog(client, shop)
    products = {img["id"]: img["product_id"] for img in
                (await client.get("/api/v1/images", params={"limit": 100}, headers=shop.secret)).json()["items"]}
    for mode in ("vector", "lexical", "hybrid"):
        per_image = (await rank(client, shop, "summer linen shirt", mode=mode, distinct="image"))["results"]
        per_product = await rank(client, shop, "summer linen shirt", mode=mode)
        assert per_product["distinct"] == "product"
        expected: dict[Any, list[int]] = {}
        for r in per_image:
            expected.setdefault(products[r["id"]] or ("image", r["id"]), []).append(r["id"])
        assert [r["id"] for r in per_product["results"]] == [group[0] for group in expected.values()]
        assert [r["other_image_ids"] for r in per_product["results"]] == [group[1:] for group in expected.values()]
    both_shirts = {ids["Linen shirt"], ids["Linen shirt, back"]}
    shirts = [r for r in (await rank(client, shop, "linen shirt", mode="lexical", limit=2))["results"]
              if r["id"] in both_shirts]
    assert len(shirts) == 1 and {shirts[0]["id"], *shirts[0]["other_image_ids"]} == both_shirts
    limited = await rank(client, shop, "dress", mode="hybrid", limit=2)
    assert limited["count"] == 2


async def test_the_index_follows_edits_deletions_and_taxonomy_renames(client, shop, settings):
    ids = await import_catalog(client, shop)

    async def lexical_names(prompt: str) -> list[str]:
        return [r["name"] for r in (await rank(client, shop, prompt, mode="lexical", distinct="image"))["results"]]

    assert await lexical_names("cashmere") == []
    resp = await client.patch(f"/api/v1/images/{ids['Silk scarf']}", json={"description": "Soft cashmere"},
                              headers=shop.secret)
    assert resp.status_code == 200, resp.text
    assert await lexical_names("cashmere") == ["Silk scarf"]

    assert await lexical_names("outerwear") == []
    categories = (await client.get("/api/v1/categories", headers=shop.secret)).json()
    jackets = next(c for c in categories["items"] if c["name"] == "Jackets & Coats")
    resp = await client.patch(f"/api/v1/categories/{jackets['id']}", json={"name": "Outerwear"}, headers=shop.secret)
    assert resp.status_code == 200, resp.text
    assert await lexical_names("outerwear") == ["Denim jacket"]

    assert (await client.delete(f"/api/v1/images/{ids['Denim jacket']}", headers=shop.secret)).status_code == 204
    assert await lexical_names("outerwear") == []

    # images from before the index (their documents gone) get them from the next process's sweep
    engine = create_engine(settings.db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(delete(SearchDoc))
    finally:
        await engine.dispose()
    assert await lexical_names("cashmere") == []
    async with serve_app(settings) as restarted:
        deadline = asyncio.get_running_loop().time() + 30
        while [r["name"] for r in (await rank(restarted, shop, "cashmere", mode="lexical"))["results"]] != \
                ["Silk scarf"]:
            assert asyncio.get_running_loop().time() < deadline, "the sweep did not rebuild the documents"
            await asyncio.sleep(0.2)


async def test_filters_the_shop_default_and_tenants(client, shop, make_shop):
    ids = await import_catalog(client, shop)
    categories = (await client.get("/api/v1/categories", headers=shop.secret)).json()["items"]
    dresses = next(c["id"] for c in categories if c["name"] == "Dresses")
    got = await rank(client, shop, "red", mode="lexical", distinct="image", filters={"category_id": dresses})
    assert {r["name"] for r in got["results"]} == {"Floral dress", "Red gown", "Summer dress",
                                                  "Summer dress, detail"}  # its product's description says red

    # the shop's default: hybrid until it says otherwise
    assert (await rank(client, shop, "red"))["mode"] == "hybrid"
    resp = await client.patch("/api/v1/shop", json={"search_mode": "lexical", "lexical_weight": 0.8},
                              headers=shop.secret)
    assert resp.status_code == 200 and resp.json()["search_mode"] == "lexical", resp.text
    got = await rank(client, shop, "red")
    assert (got["mode"], got["weight"]) == ("lexical", 0.8)
    assert "encode" not in got["timings_ms"] and "lexical" in got["timings_ms"]
    for bad in ({"search_mode": "fuzzy"}, {"lexical_weight": 1.5}, {"lexical_weight": "NaN"}):
        assert (await client.patch("/api/v1/shop", json=bad, headers=shop.secret)).status_code == 400, bad
    for bad in ({"mode": "fuzzy"}, {"weight": -0.1}, {"distinct": "style"}, {"explain": "maybe"}):
        resp = await client.post("/api/v1/recommendations", json={"prompt": "red", **bad}, headers=shop.publishable)
        assert resp.status_code == 400, (bad, resp.text)

    # another shop's words are not this shop's: neither its images nor its statistics
    before = await rank(client, shop, "red knit", mode="lexical", distinct="image")
    other = await make_shop("Other")
    await import_catalog(client, other, [(f"Red knit {n}", "red", "", "Tops") for n in range(6)])
    after = await rank(client, shop, "red knit", mode="lexical", distinct="image")
    assert after["results"] == before["results"] and set(ids.values()) >= {r["id"] for r in after["results"]}
    theirs = await rank(client, other, "red knit", mode="lexical", distinct="image")
    assert len(theirs["results"]) == 6 and not {r["id"] for r in theirs["results"]} & set(ids.values())


async def test_sqlite_and_postgresql_give_the_same_results(tmp_path, test_model, make_pg_database, make_shop_for):
    from hub.db.engine import migrate
    from hub.settings import load_settings

    sqlite_url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    await migrate(sqlite_url)
    outcomes = []
    for name, url in (("sqlite", sqlite_url), ("postgres", await asyncio.to_thread(make_pg_database))):
        settings = load_settings(home=tmp_path / name, model=str(test_model), database_url=url, sweep_seconds=1,
                                 admin_token=ADMIN_TOKEN, rate_limit="100000/minute",
                                 storefront_rate_limit="100000/minute", public_url="http://testserver.local",
                                 log_format="text")
        async with serve_app(settings) as client:
            shop = await make_shop_for(client)
            await import_catalog(client, shop)
            outcome = []
            for prompt in QUERIES:
                for body in ({"mode": "lexical"}, {"mode": "hybrid", "weight": 0.5}, {"mode": "vector"}):
                    got = await rank(client, shop, prompt, distinct="image", **body)
                    outcome.append([(r["name"], r["score"], r["scores"]["lexical"]) for r in got["results"]])
            outcomes.append(outcome)
    sqlite, postgres = outcomes
    assert len(sqlite) == len(postgres)
    for a, b in zip(sqlite, postgres, strict=True):
        assert [name for name, _, _ in a] == [name for name, _, _ in b]
        assert [lexical for _, _, lexical in a] == [lexical for _, _, lexical in b]
        assert [score for _, score, _ in a] == pytest.approx([score for _, score, _ in b], abs=1e-5)


def test_text_analysis():
    assert words("Levi's 501 Jeans — <b>blue</b> dresses, T-shirts &amp; jumpers; Crème brûlée") == \
        ["levi", "501", "jean", "blue", "dress", "t", "shirt", "jumper", "creme", "brule"]
    assert words("LEVIS") == words("levi’s") == ["levi"]
    assert query_terms("a red dress with a red bow") == ["red", "dress", "bow"]
    assert words("the and of with") == []
    assert words("Ünïcödé ÅSA") == ["unicod", "asa"]
    assert len(words("x " * 5000)) == 2000


async def test_products_with_many_images_do_not_leave_a_page_short(client, shop):
    """One product's 120 photos rank above every other product's: the ranking looks deeper until it has
    ``limit`` products."""
    rows = [(f"Alpha top {n}", "", "A", "Tops") for n in range(120)]
    rows += [("Beta top", "alpha", "B", "Tops"), ("Gamma top", "alpha", "C", "Tops")]
    ids = await import_catalog(client, shop, rows)
    got = await rank(client, shop, "alpha", mode="lexical", limit=3)
    assert [r["name"] for r in got["results"]] == ["Alpha top 0", "Beta top", "Gamma top"]
    assert sorted(got["results"][0]["other_image_ids"]) == sorted(ids[f"Alpha top {n}"] for n in range(1, 120))
    hybrid = await rank(client, shop, "alpha", limit=3)
    assert len(hybrid["results"]) == 3


async def test_a_deleted_category_leaves_its_images_documents(client, shop):
    ids = await import_catalog(client, shop)
    categories = (await client.get("/api/v1/categories", headers=shop.secret)).json()["items"]
    jeans = next(c["id"] for c in categories if c["name"] == "Jeans")
    names = [r["name"] for r in (await rank(client, shop, "jeans", mode="lexical"))["results"]]
    assert names == ["Levi's 501 jeans"]
    assert (await client.delete(f"/api/v1/categories/{jeans}", headers=shop.secret)).status_code == 204
    got = (await rank(client, shop, "jeans", mode="lexical", explain=True))["results"]
    # still found by its own name, no longer by the category's: the score is the name's alone
    assert [r["id"] for r in got] == [ids["Levi's 501 jeans"]]
    assert got[0]["score"] == pytest.approx(lexical_oracle(
        {**documents(CATALOG, ids), ids["Levi's 501 jeans"]: Doc(set(words("Levi's 501 jeans")) | set(
            words("Levi's 501 jeans")), set(words("Straight leg denim")))}, "jeans")[0][1], abs=2e-6)


async def test_two_transactions_rebuilding_one_document_do_not_collide(settings, client, shop):
    """Two deliveries about one product, committed at once: both rebuild its images' documents."""
    from hub.domain.lexical import refresh

    ids = await import_catalog(client, shop, CATALOG[:2])
    engine = create_engine(settings.db_url)
    try:
        async with engine.connect() as first, engine.connect() as second:
            await first.begin()
            await first.run_sync(lambda c: refresh(c, ids.values()))
            if settings.db_url.startswith("postgresql"):
                await second.begin()
                blocked = asyncio.ensure_future(second.run_sync(lambda c: refresh(c, ids.values())))
                await asyncio.sleep(0.3)  # (it waits for the first's row locks either way)
                await first.commit()
                await blocked
                await second.commit()
            else:  # SQLite has one writer at a time: the second starts when the first is done
                await first.commit()
                await second.begin()
                await second.run_sync(lambda c: refresh(c, ids.values()))
                await second.commit()
    finally:
        await engine.dispose()
    assert [r["name"] for r in (await rank(client, shop, "linen", mode="lexical", distinct="image"))["results"]] == \
        ["Linen shirt", "Linen shirt, back"]


async def test_filters_that_leave_out_the_best_words_still_find_the_rest(client, shop):
    """The best documents by words alone are looked at first; when the filters leave too few of them, the
    ranking is made again with the filters inside it."""
    rows = [(f"Alpha top {n}", "", "", "Tops") for n in range(55)]
    rows += [(f"Dress {n}", "alpha", "", "Dresses") for n in range(5)]
    ids = await import_catalog(client, shop, rows)
    categories = (await client.get("/api/v1/categories", headers=shop.secret)).json()["items"]
    dresses = next(c["id"] for c in categories if c["name"] == "Dresses")
    got = await rank(client, shop, "alpha", mode="lexical", distinct="image", limit=2,
                     filters={"category_id": dresses})
    assert [r["id"] for r in got["results"]] == [ids["Dress 0"], ids["Dress 1"]]
    assert [r["id"] for r in (await rank(client, shop, "alpha", mode="lexical", distinct="image", limit=3))
            ["results"]] == [ids["Alpha top 0"], ids["Alpha top 1"], ids["Alpha top 2"]]


async def test_facets_count_the_query_candidates(client, shop):
    ids = await import_catalog(client, shop)
    names = {v: k for k, v in ids.items()}
    category_of = {name: category for name, _, _, category in CATALOG}
    product_of = {name: product for name, _, product, _ in CATALOG}
    for distinct in ("image", "product"):
        got = await rank(client, shop, "red", mode="lexical", distinct=distinct, facets=True)
        every = await rank(client, shop, "red", mode="lexical", distinct="image")  # all candidates (< 100)
        units: dict[Any, str] = {}
        for r in every["results"]:
            name = names[r["id"]]
            key = product_of[name] or name if distinct == "product" else name
            units.setdefault(key, category_of[name])
        expected: dict[str, int] = {}
        for category in units.values():
            expected[category] = expected.get(category, 0) + 1
        assert {v["name"]: v["count"] for v in got["facets"]["category"]} == expected, distinct
        counts = [v["count"] for v in got["facets"]["category"]]
        assert counts == sorted(counts, reverse=True)
        assert got["facets"]["available"] == {"true": len(units), "false": 0}
        assert got["facets"]["style"] == [] and got["facets"]["age_group"] == []
    assert (await rank(client, shop, "red"))["facets"] is None

    # a facet whose own filter is set counts the candidates as if it were not; the other filters still apply
    for mode in ("lexical", "hybrid"):
        unfiltered = await rank(client, shop, "red", mode=mode, distinct="image", facets=True)
        dresses = next(v for v in unfiltered["facets"]["category"] if v["name"] == "Dresses")
        chosen = await rank(client, shop, "red", mode=mode, distinct="image", facets=True,
                            filters={"category_id": dresses["id"], "available": True})
        assert {category_of[names[r["id"]]] for r in chosen["results"]} == {"Dresses"}
        assert len(chosen["results"]) == dresses["count"]
        assert chosen["facets"]["category"] == unfiltered["facets"]["category"], mode
        # availability: without its own filter, with the category's
        assert chosen["facets"]["available"] == {"true": dresses["count"], "false": 0}, mode
        assert chosen["facets"]["style"] == []


@pytest.mark.parametrize("settings_overrides", [{"lexical_deadline": 0}])
async def test_a_word_search_past_its_deadline(settings, client, shop):
    """A hybrid query whose word search has no time left is ranked by looks alone and says so; a lexical one
    answers 503; nothing else in the request is disturbed (its prompt is logged). (How a running statement is
    cancelled: the next test.)"""
    await import_catalog(client, shop)
    by_looks = await rank(client, shop, "red linen dress", mode="vector", distinct="image")
    vector = [r["id"] for r in by_looks["results"]]
    hybrid = await rank(client, shop, "red linen dress", distinct="image", explain=True)
    assert hybrid["mode"] == "vector" and [r["id"] for r in hybrid["results"]] == vector
    assert {r["explain"]["steps"][0] for r in hybrid["results"]} == {
        "words: the word search took over 0 s; ranked by looks alone"}
    refused = await client.post("/api/v1/recommendations", json={"prompt": "red linen dress", "mode": "lexical"},
                                headers=shop.publishable)
    assert refused.status_code == 503, refused.text
    assert refused.json()["detail"].startswith("word search unavailable: it took over 0 s; try fewer words")
    logged = (await client.get("/api/v1/prompts", headers=shop.secret)).json()["items"]
    assert [p["prompt"] for p in logged] == ["red linen dress"] * 2  # the vector query and the hybrid one


async def test_the_deadline_cancels_a_statement_and_the_transaction_goes_on(settings, client, shop):
    """The mechanism on each engine: a statement that would take long is cancelled at the deadline; the
    transaction stays usable, and PostgreSQL's statement timeout is back to its default afterwards."""
    from hub.domain.lexical import LexicalTimeout, deadline

    postgres = settings.db_url.startswith("postgresql")
    # ≈ 30 s unless cancelled (finite, so that a broken deadline fails the test instead of running on forever)
    endless = text("SELECT pg_sleep(30)") if postgres else text(
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 300000000) SELECT count(*) FROM n")
    engine = create_engine(settings.db_url)
    try:
        async with AsyncSession(engine) as session:
            default = (await session.execute(text("SHOW statement_timeout"))).scalar() if postgres else None
            with pytest.raises(LexicalTimeout):
                async with deadline(session, 0.2):
                    await session.execute(endless)
            assert (await session.execute(text("SELECT 41 + 1"))).scalar() == 42
            async with deadline(session, 5):
                assert (await session.execute(text("SELECT 1"))).scalar() == 1
            # a statement that starts once the deadline has passed on an idle connection is cancelled too
            with pytest.raises(LexicalTimeout):
                async with deadline(session, 0.1):
                    await asyncio.sleep(0.3)  # (past the deadline; nothing running when it passed)
                    await session.execute(endless)
            # a search that ended before its deadline leaves nothing behind to cancel a later statement
            async with deadline(session, 0.1):
                assert (await session.execute(text("SELECT 2"))).scalar() == 2
            await asyncio.sleep(0.3)
            short = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 300000) SELECT count(*) FROM n"
            assert (await session.execute(text(short))).scalar() == 300000  # (≈ 0.1 s: long enough to be hit)
            if postgres:
                assert (await session.execute(text("SHOW statement_timeout"))).scalar() == default
                # the deadline is for the whole search: each statement gets only what the ones before it left
                with pytest.raises(LexicalTimeout):
                    async with deadline(session, 0.3) as clock:
                        for _ in range(2):
                            await clock.before_statement()
                            await session.execute(text("SELECT pg_sleep(0.2)"))
                assert (await session.execute(text("SHOW statement_timeout"))).scalar() == default
            await session.commit()
    finally:
        await engine.dispose()
