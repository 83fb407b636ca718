"""Recommendations by example images and by a shopper's photo, through HTTP, checked against oracles computed
here with the same encoder: Qdrant's average-vector and best-score strategies written out over brute-force
cosine, the photo's own vector, the photo and the prompt averaged. The random model's rankings mean nothing;
only their agreement with the oracles is tested.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from hub.search.encoder import Encoder
from tests.conftest import wait_for_images
from tests.images import photo
from tests.indexing.test_fetch import image_server  # noqa: F401 - the fixture
from tests.indexing.test_recommendations import assert_same_ranking

SEEDS = list(range(300, 316))


@pytest.fixture(scope="module")
def encoder(test_model) -> Encoder:
    return Encoder(str(test_model))


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def image_vectors(encoder: Encoder, seeds: list[int]) -> np.ndarray:
    return unit(encoder.encode_images([Image.open(io.BytesIO(photo(s))).convert("RGB") for s in seeds]))


async def stored_vectors(client, shop, ids: list[int]) -> np.ndarray:
    """The vectors the hub stored for these images (the oracle ranks what the hub ranks)."""
    found = await client.app.state.services.pipeline.store.vectors(shop["id"], ids)
    return unit(np.stack([found[i] for i in ids]))


def text_vector(encoder: Encoder, prompt: str) -> np.ndarray:
    return unit(encoder.encode_text([encoder.normalise_prompt(prompt)])[0])


def ranked(ids: list[int], scores: np.ndarray) -> list[tuple[int, float]]:
    return sorted(zip(ids, scores.tolist(), strict=True), key=lambda p: -p[1])


async def upload(client, shop, seeds=SEEDS) -> list[int]:
    ids = []
    for seed in seeds:
        resp = await client.post("/api/v1/images", files={"file": (f"{seed}.jpg", photo(seed), "image/jpeg")},
                                 data={"name": f"item {seed}"}, headers=shop.secret)
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])
    images = await wait_for_images(client, shop.secret, ids)
    assert {i["status"] for i in images.values()} == {"ready"}
    return ids


async def search(client, shop, **body):
    resp = await client.post("/api/v1/recommendations", json={"limit": 100, "mode": "vector", "distinct": "image",
                                                              **body}, headers=shop.publishable)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_examples_rank_as_the_strategies_say(client, shop, encoder):
    ids = await upload(client, shop)
    vectors = await stored_vectors(client, shop, ids)
    pos, neg = [0, 3], [7]
    rest = [i for i in range(len(ids)) if i not in pos + neg]
    rest_ids = [ids[i] for i in rest]

    got = await search(client, shop, positive=[ids[i] for i in pos])
    mean = vectors[pos].mean(axis=0)
    assert_same_ranking(got["results"], ranked([ids[i] for i in range(len(ids)) if i not in pos],
                                               unit(vectors[[i for i in range(len(ids)) if i not in pos]]) @ unit(mean)))
    assert got["prompt"] is None and got["mode"] == "vector"

    got = await search(client, shop, positive=[ids[i] for i in pos], negative=[ids[i] for i in neg])
    moved = mean + (mean - vectors[neg].mean(axis=0))
    assert_same_ranking(got["results"], ranked(rest_ids, vectors[rest] @ unit(moved)))
    assert not {ids[i] for i in pos + neg} & {r["id"] for r in got["results"]}  # examples are not results

    got = await search(client, shop, positive=[ids[i] for i in pos], negative=[ids[i] for i in neg],
                       strategy="best_score")
    best_pos = (vectors[rest] @ vectors[pos].T).max(axis=1)
    best_neg = (vectors[rest] @ vectors[neg].T).max(axis=1)
    assert_same_ranking(got["results"], ranked(rest_ids, np.where(best_pos > best_neg, best_pos, -best_neg)))

    # a prompt with examples: the prompt's vector is one more positive
    got = await search(client, shop, prompt="a linen shirt", positive=[ids[0]])
    both = unit(np.stack([text_vector(encoder, "a linen shirt"), vectors[0]])).mean(axis=0)
    assert_same_ranking(got["results"], ranked(ids[1:], vectors[1:] @ unit(both)))


async def test_bad_examples_are_refused(client, shop, make_shop):
    ids = await upload(client, shop, SEEDS[:3])
    other = await make_shop("Other")
    theirs = await upload(client, other, [399])
    cases = [
        ({"negative": [ids[0]]}, 400),  # nothing to look for
        ({"positive": [ids[0]], "mode": "lexical"}, 400),
        ({"positive": [ids[0]], "prompt": "red", "mode": "lexical"}, 400),  # words only: no examples
        ({"positive": ids * 7}, 400),  # more than 20
        ({"positive": [ids[0]], "strategy": "median"}, 400),
        ({"positive": [theirs[0]]}, 404),  # another shop's image is not found
        ({"positive": [10**9]}, 404),
    ]
    for body, status in cases:
        resp = await client.post("/api/v1/recommendations", json=body, headers=shop.publishable)
        assert resp.status_code == status, (body, resp.text)
        assert "Traceback" not in resp.text
    # a shop whose default is words: a query by examples alone ranks by looks, with a prompt by both
    assert (await client.patch("/api/v1/shop", json={"search_mode": "lexical"}, headers=shop.secret)).status_code == 200
    alone = await client.post("/api/v1/recommendations", json={"positive": [ids[0]]}, headers=shop.publishable)
    assert alone.status_code == 200 and alone.json()["mode"] == "vector", alone.text
    both = await client.post("/api/v1/recommendations", json={"positive": [ids[0]], "prompt": "item"},
                             headers=shop.publishable)
    assert both.status_code == 200 and both.json()["mode"] == "hybrid", both.text


@pytest.mark.parametrize("settings_overrides", [{"allow_private_fetch": True}])
async def test_search_by_photo_sent_or_by_url_is_never_stored(client, shop, encoder, image_server, settings,  # noqa: F811
                                                              snapshot):
    ids = await upload(client, shop)
    vectors = await stored_vectors(client, shop, ids)
    queries = image_vectors(encoder, SEEDS)  # a query photo is embedded as the test does it
    before = await snapshot()

    query = photo(SEEDS[5])  # the very photo of one product: it comes first, at cosine 1
    resp = await client.post("/api/v1/recommendations/by-photo", files={"file": ("me.jpg", query, "image/jpeg")},
                             data={"query": json.dumps({"limit": 100, "distinct": "image"})}, headers=shop.publishable)
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert got["results"][0]["id"] == ids[5] and got["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert_same_ranking(got["results"], ranked(ids, vectors @ queries[5]))

    by_url = await search(client, shop, image_url=f"{image_server.base}/img/{SEEDS[9]}.jpg")
    assert_same_ranking(by_url["results"], ranked(ids, vectors @ queries[9]))
    assert "photo" in by_url["timings_ms"]

    # "this, but in red": the photo and the prompt, averaged
    resp = await client.post("/api/v1/recommendations/by-photo", files={"file": ("me.jpg", query, "image/jpeg")},
                             data={"query": json.dumps({"prompt": "in red", "limit": 100, "mode": "vector",
                                                        "distinct": "image"})}, headers=shop.publishable)
    both = unit(np.stack([text_vector(encoder, "in red"), queries[5]])).mean(axis=0)
    assert_same_ranking(resp.json()["results"], ranked(ids, vectors @ unit(both)))

    after = await snapshot()
    prompts = [row for row in after["prompts"] if row not in before["prompts"]]
    assert [row[2] for row in prompts] == ["in red"]  # the prompt is logged; the photos are not kept anywhere
    assert after["media"] == before["media"]
    assert {k: v for k, v in after.items() if k != "prompts"} == {k: v for k, v in before.items() if k != "prompts"}


async def test_bad_photos_are_refused(client, shop, image_server):  # noqa: F811
    await upload(client, shop, SEEDS[:2])

    async def send(content: bytes, **extra):
        return await client.post("/api/v1/recommendations/by-photo", files={"file": ("x.jpg", content, "image/jpeg")},
                                 headers=shop.publishable, **extra)

    assert (await send(b"not an image")).status_code == 415
    assert (await send(photo(1), data={"query": "{not json"})).status_code == 400
    assert (await send(photo(1), data={"query": json.dumps({"image_url": "https://x.example/a.jpg"})})).status_code == 400
    assert (await send(photo(1), data={"query": json.dumps({"mode": "lexical"})})).status_code == 400
    no_file = await client.post("/api/v1/recommendations/by-photo", files={"other": ("x", b"x", "text/plain")},
                                headers=shop.publishable)
    assert no_file.status_code == 400
    # a private address is refused unless the operator allows it (the default does not)
    resp = await client.post("/api/v1/recommendations", json={"image_url": f"{image_server.base}/img/1.jpg"},
                             headers=shop.publishable)
    assert resp.status_code == 422 and "private" in resp.json()["detail"], resp.text
    resp = await client.post("/api/v1/recommendations", json={"image_url": "ftp://x.example/a.jpg"},
                             headers=shop.publishable)
    assert resp.status_code == 400
