"""The HNSW graph can lose a vector: stored, its image ready, and no query returns it. Chroma 1.5's local
writer inserts a batch in parallel; a batch going into an already built small graph (a read between batches is
enough) can prune every incoming link to a node. These tests build collections exactly that way, many times,
with real Chroma, and hold the product's promise whether or not a given collection lost a vector: a query never
returns fewer than the shop has, and the sweep finds and repairs what the index cannot reach."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from hub.search.store import VectorStore
from tests.conftest import upload_photos, wait_for_images
from tests.images import photo

TRIALS = 120


def clustered_vectors(seed: int, n: int = 60, dim: int = 512) -> np.ndarray:
    """Near-duplicate product photos: a few looks, many shots of each."""
    rng = np.random.default_rng(seed)
    looks = rng.normal(size=(6, dim))
    vectors = looks[rng.integers(0, 6, size=n)] + 0.05 * rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def self_misses(store: VectorStore, shop_id: int, vectors: np.ndarray) -> set[int]:
    col = store._collection(shop_id, create=False)
    found = col.query(query_embeddings=vectors, n_results=10, include=[])
    return {n for n, hits in enumerate(found["ids"]) if str(n) not in hits}


async def test_the_sweep_check_finds_exactly_the_unreachable_vectors_and_repairs_them(tmp_path):
    store = VectorStore(None, tmp_path, "test-model")
    lost_somewhere = 0
    for trial in range(TRIALS):
        shop_id = trial + 1
        vectors = clustered_vectors(trial)
        for start, end in ((0, 25), (25, 50), (50, 60)):  # three batches, a read between each
            await store.upsert(shop_id, list(range(start, end)), vectors[start:end], [{"x": 1}] * (end - start))
            await store.ids(shop_id)
        missed = self_misses(store, shop_id, vectors)
        found = set(await store.unreachable(shop_id, list(range(60))))
        assert found == missed, (trial, found, missed)
        if found:
            lost_somewhere += 1
            await store.reinsert(shop_id, sorted(found))
            assert self_misses(store, shop_id, vectors) == set(), trial
            assert await store.unreachable(shop_id, list(range(60))) == []
            assert len(await store.ids(shop_id)) == 60
    print(f"{lost_somewhere} of {TRIALS} collections had lost a vector")


async def test_a_vector_tied_with_many_equal_ones_is_not_lost(tmp_path):
    """Sixteen products with the very same photo: a query by it returns ten of the sixteen, and which ten is a
    matter of ties. None of them is lost (an earlier check took the six left out for lost, and every sweep
    deleted and added them again, during which a request for one's vector found none)."""
    store = VectorStore(None, tmp_path, "test-model")
    same = clustered_vectors(7, n=1)
    others = clustered_vectors(8, n=4)
    await store.upsert(1, list(range(16)), np.repeat(same, 16, axis=0), [{"x": 1}] * 16)
    await store.upsert(1, list(range(16, 20)), others, [{"x": 1}] * 4)
    assert self_misses(store, 1, np.repeat(same, 16, axis=0))  # (ties do leave some out)
    assert await store.unreachable(1, list(range(20))) == []


@pytest.mark.parametrize("settings_overrides", [{"exact_max_vectors": 0, "embed_batch_size": 25}])
async def test_queries_answered_by_the_index_never_miss_a_ready_image(client, make_shop, settings):
    """Every query here goes through the index (no exact ranking for small shops); the answer must still hold
    every ready image — through the exact fallback when the index falls short."""
    for n in range(6):
        shop = await make_shop(f"Batches {n}")
        ids: list[int] = []
        for start, end in ((0, 25), (25, 50), (50, 60)):
            for i in range(start, end):
                resp = await client.post("/api/v1/images", files={"file": (f"{i}.jpg", photo(n * 1000 + i // 3),
                                                                           "image/jpeg")}, headers=shop.secret)
                assert resp.status_code in (202, 409), resp.text
                if resp.status_code == 202:
                    ids.append(resp.json()["id"])
            await wait_for_images(client, shop.secret, ids)  # a read between batches
        found = await client.post("/api/v1/recommendations", json={"prompt": "a dress", "limit": 100},
                                  headers=shop.publishable)
        assert sorted(r["id"] for r in found.json()["results"]) == sorted(ids)
        for image_id in ids[:5]:
            similar = await client.get(f"/api/v1/images/{image_id}/similar", params={"limit": 100},
                                       headers=shop.secret)
            assert sorted(r["id"] for r in similar.json()["results"]) == sorted(set(ids) - {image_id})


@pytest.mark.parametrize("settings_overrides", [{"exact_max_vectors": 3}])
async def test_a_shops_size_is_remembered_and_its_growth_noticed(client, shop, settings):
    """Whether a shop has more images than HUB_EXACT_MAX_VECTORS is remembered for HUB_QUERY_CACHE_SECONDS (a
    large shop's query then counts nothing; a small one's reads its candidates once); a small shop that grows
    past the bound is noticed by its next query, and a large one that shrinks once that time is up. Every answer
    holds every ready image either way."""
    ranker = client.app.state.services.pipeline.ranker
    now = [1000.0]
    ranker._large.clock = lambda: now[0]

    async def upload(seeds: range) -> list[int]:
        made = await upload_photos(client, shop, seeds)
        await wait_for_images(client, shop.secret, made)
        return made

    async def found() -> list[int]:
        resp = await client.post("/api/v1/recommendations", json={"prompt": "a dress", "limit": 100,
                                                                   "mode": "vector", "distinct": "image"},
                                 headers=shop.publishable)
        assert resp.status_code == 200, resp.text
        return sorted(r["id"] for r in resp.json()["results"])

    def remembered() -> list[bool]:
        return [large for _, large in ranker._large._values.values()]

    ids = await upload(range(2))
    assert await found() == sorted(ids) and remembered() == [False]  # counted: small
    ids += await upload(range(2, 5))
    assert await found() == sorted(ids) and remembered() == [True]  # its candidates were too many: large now
    for image_id in ids[2:]:
        assert (await client.delete(f"/api/v1/images/{image_id}", headers=shop.secret)).status_code == 204
    assert await found() == sorted(ids[:2]) and remembered() == [True]  # (the index answers, rightly)
    now[0] += settings.query_cache_seconds + 0.01
    assert await found() == sorted(ids[:2]) and remembered() == [False]  # counted again: small


@pytest.mark.parametrize("settings_overrides", [{"exact_max_vectors": 0}])
async def test_filtered_queries_through_the_index_keep_the_nearest_matching_images(client, shop):
    """With filters, the index is first asked for more neighbours without a ``where`` (which makes Chroma filter
    before it searches) and the database keeps those that match; when too few do, Chroma filters. Both give the
    nearest matching images, in the same order."""
    from tests.indexing.test_hybrid import import_catalog

    rows = [(f"{colour} {kind}", "", f"P{n}", category) for n, (colour, kind, category) in enumerate(
        [(c, k, cat) for c in ("Red", "Blue", "Green", "Black") for k, cat in (("dress", "Dresses"),
                                                                          ("jumper", "Tops"), ("skirt", "Skirts"))])]
    ids = await import_catalog(client, shop, rows)
    listed = (await client.get("/api/v1/images", params={"limit": 100}, headers=shop.secret)).json()["items"]
    dresses = next(i["category_id"] for i in listed if i["name"] == "Red dress")
    tops = next(i["category_id"] for i in listed if i["name"] == "Red jumper")
    expected = {i["id"] for i in listed if i["category_id"] == dresses}
    assert len(expected) == 4 and len(ids) == 12

    async def ranked(limit: int, category_id: int = dresses, **more: object) -> list[int]:
        resp = await client.post("/api/v1/recommendations", json={
            "prompt": "a dress", "limit": limit, "mode": "vector", "distinct": "image",
            "filters": {"category_id": category_id}, **more}, headers=shop.publishable)
        assert resp.status_code == 200, resp.text
        return [r["id"] for r in resp.json()["results"]]

    everything = await ranked(100)  # fewer match than asked for: Chroma filters
    assert set(everything) == expected
    assert await ranked(2) == everything[:2]  # enough among the nearest: the database filters them
    # the same filters with other values (one statement per shape of the filters, the values its parameters)
    assert set(await ranked(100, tops)) == {i["id"] for i in listed if i["category_id"] == tops}
    assert await ranked(2) == everything[:2]
    assert set(await ranked(100, positive=everything[:1])) == expected - set(everything[:1])  # (examples left out)
    assert set(await ranked(100, positive=everything[1:2])) == expected - set(everything[1:2])
    assert client.app.state.services.pipeline.ranker.shortfalls == 0  # (the index's answers, not the exact fallback)


async def test_a_start_checks_the_last_hours_vectors_and_walks_the_older_ones_a_few_at_a_time(client, shop,
                                                                                             settings):
    """The sweep's reachability check (``Embedder.repair_unreachable``): after a start, the images embedded in
    the last hour count as new and are all checked; older ones are walked, ``walk`` per sweep — a start no longer
    re-checks a whole catalog, which at 10,000 images took a third of the API's time while it answered queries."""
    from sqlalchemy import update

    from hub.db.engine import create_engine, dispose
    from hub.db.models import Image, utcnow
    from hub.domain.indexing import Embedder

    ids = await upload_photos(client, shop, range(4))
    await wait_for_images(client, shop.secret, ids)
    engine = create_engine(settings.db_url)
    try:
        async with engine.begin() as conn:  # two were embedded long before this start
            await conn.execute(update(Image).where(Image.id.in_(ids[:2])).values(embedded_at=utcnow() - timedelta(hours=3)))
    finally:
        await dispose(engine)
    runtime = client.app.state.services.pipeline
    started = Embedder(settings, runtime.sessions, runtime.encoder, runtime.store, runtime.media)  # a new process's
    assert (await started.repair_unreachable(walk=1))["vectors_checked"] == 3  # the 2 recent, and ids[0]
    # then: what was embedded within the clock margin again, and the walk goes on (ids[1])
    assert (await started.repair_unreachable(walk=1))["vectors_checked"] == 3
    assert (await started.repair_unreachable(walk=1))["vectors_checked"] == 2  # (ids[2] is among the recent)
    await started.batcher.stop()
