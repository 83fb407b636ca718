"""``hub reindex --model M``: every shop's images embedded with M into M's own collections while the active model
serves; what changes meanwhile reaches M's collections; ``--switch M`` serves from them with no restart, and what
M missed (images embedded after its build) is embedded by M; ``--rollback`` returns, ``--forget`` drops a model's
collections. Two generated checkpoints (different seeds): their rankings mean nothing, their vectors differ."""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from hub.cli import _reindex
from hub.search.encoder import Encoder, model_key
from tests.conftest import serve_app, wait_for_images
from tests.images import photo

pytestmark = pytest.mark.slow


def options(**given: Any) -> argparse.Namespace:
    return argparse.Namespace(**({"model": None, "shop": None, "no_wait": False, "forget": None, "switch": None,
                                  "rollback": False, "force": False, "json": True} | given))


async def reindex(settings, capsys, **given: Any) -> tuple[int, Any]:
    capsys.readouterr()
    async with asyncio.timeout(180):  # (a build that no worker runs fails here instead of hanging)
        code = await _reindex(settings, options(**given))
    out = capsys.readouterr().out.strip()
    return code, json.loads(out) if out else None


async def upload(client, shop, seed: int, **fields: Any) -> int:
    resp = await client.post("/api/v1/images", files={"file": (f"p{seed}.jpg", photo(seed), "image/jpeg")},
                             data={k: str(v) for k, v in fields.items()}, headers=shop.secret)
    assert resp.status_code == 202, resp.text
    return int(resp.json()["id"])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@functools.cache
def encoder_of(model: Path) -> Encoder:
    return Encoder(str(model))


def encoded(model: Path, seed: int) -> np.ndarray:
    encoder = encoder_of(model)
    return np.asarray(encoder.encode_images([PILImage.open(io.BytesIO(photo(seed))).convert("RGB")])[0])


async def wait_until_stored(store, shop_id: int, ids: list[int]) -> None:
    """Until the model's collection of the shop holds these images (the sweep embeds what a model misses)."""
    async with asyncio.timeout(60):
        while not set(ids) <= set(await store.ids(shop_id)):
            await asyncio.sleep(0.1)


async def vector_scores(client, shop, prompt: str, **filters: Any) -> dict[int, float]:
    answer = await client.post("/api/v1/recommendations", headers=shop.publishable, json={
        "prompt": prompt, "limit": 10, "mode": "vector", "distinct": "image", "filters": filters})
    assert answer.status_code == 200, answer.text
    return {r["id"]: r["scores"]["vector"] for r in answer.json()["results"]}


def expected_scores(model: Path, prompt: str, seeds: dict[int, int]) -> dict[int, float]:
    text = encoder_of(model).encode_prompt(prompt)
    return {image_id: cosine(text, encoded(model, seed)) for image_id, seed in seeds.items()}


def same_scores(found: dict[int, float], expected: dict[int, float]) -> bool:
    return found.keys() == expected.keys() and all(abs(found[i] - expected[i]) < 1e-3 for i in found)


@pytest.mark.parametrize("settings_overrides", [{"model_drop_delay": 0}])
async def test_a_model_is_built_beside_the_active_one_switched_to_and_back_without_a_restart(
        settings, other_model, make_shop_for, capsys):
    new_key = model_key(str(other_model))
    old_model = Path(settings.model)
    old_key = model_key(settings.model)
    async with serve_app(settings) as client:
        runtime = client.app.state.services.pipeline
        assert runtime.encoder.key == old_key != new_key
        first, second = await make_shop_for(client, "First"), await make_shop_for(client, "Second")
        cats = {c["name"]: c["id"] for c in (await client.get("/api/v1/categories", headers=first.secret)).json()["items"]}
        seeds = {1: first, 2: first, 3: first, 4: second, 5: second}
        ids = {seed: await upload(client, shop, seed) for seed, shop in seeds.items()}
        mine = {first["id"]: [ids[1], ids[2], ids[3]], second["id"]: [ids[4], ids[5]]}
        for shop, shop_ids in zip((first, second), mine.values(), strict=True):
            await wait_for_images(client, shop.secret, shop_ids)
        before = {shop: await runtime.store.vectors(shop, shop_ids) for shop, shop_ids in mine.items()}
        code, status = await reindex(settings, capsys)  # the first process registered HUB_MODEL as active
        assert status == {"active": {"key": old_key, "name": settings.model}, "previous": None, "builds": [],
                          "forgotten": []}

        # one shop built: the model is not built, and a switch to it is refused
        code, status = await reindex(settings, capsys, model=str(other_model), shop=first["id"])
        assert code == 0 and (status["progress"], status["missing"]) == ("incomplete", 1)
        with pytest.raises(SystemExit, match="is not built"):
            await reindex(settings, capsys, switch=str(other_model))

        code, status = await reindex(settings, capsys, model=str(other_model))
        assert code == 0, status
        assert (status["progress"], status["done"], status["failed"], status["total"]) == ("built", 5, 0, 5)
        built = runtime.model_embedder(str(other_model)).store
        assert built.model_key == new_key
        for shop, shop_ids in mine.items():
            vectors = await built.vectors(shop, shop_ids)
            assert sorted(vectors) == sorted(shop_ids)
            for seed in [seed for seed in seeds if ids[seed] in shop_ids]:  # the new model's own vector of the photo
                assert cosine(vectors[ids[seed]], encoded(other_model, seed)) > 0.999
                assert cosine(vectors[ids[seed]], before[shop][ids[seed]]) < 0.99  # (not the old model's)
            still = await runtime.store.vectors(shop, shop_ids)  # the active model's collections are untouched
            assert all(np.allclose(still[i], before[shop][i]) for i in shop_ids)
        ready = (await client.get("/ready")).json()
        assert ready["builds"] == [{"state": "built", "progress": 1.0}]  # (which model, the counts: the CLI's)
        jobs = (await client.get("/api/v1/jobs", params={"kind": "reindex"}, headers=first.secret)).json()["items"]
        assert [(j["status"], j["done"], j["total"]) for j in jobs] == [("succeeded", 3, 3), ("succeeded", 3, 3)]
        # the old model still serves
        first_seeds = {ids[s]: s for s in (1, 2, 3)}
        assert same_scores(await vector_scores(client, first, "a red dress"),
                           expected_scores(old_model, "a red dress", first_seeds))

        # changes while the model waits to be switched to reach its collections
        a, b, c = mine[first["id"]]
        patched = await client.patch(f"/api/v1/images/{a}", json={"category_id": cats["Dresses"]},
                                     headers=first.secret)
        assert patched.status_code == 200, patched.text
        hits = await built.query(first["id"], encoded(other_model, 1), 10, {"category_id": cats["Dresses"]})
        assert [h.image_id for h in hits] == [a]
        assert (await client.delete(f"/api/v1/images/{b}", headers=first.secret)).status_code == 204
        assert b not in await built.ids(first["id"])
        late = await upload(client, first, 6)  # embedded by the old model only
        await wait_for_images(client, first.secret, [late])
        assert late not in await built.ids(first["id"])
        third = await make_shop_for(client, "Third")  # a shop whose first image came after the build
        newcomer = await upload(client, third, 7)
        await wait_for_images(client, third.secret, [newcomer])
        assert await built.ids(third["id"]) == []
        code, status = await reindex(settings, capsys)  # (a shop with images only since the build is no failure)
        assert [(b["progress"], b["missing"], b["added"]) for b in status["builds"]] == [("built", 0, 1)]

        # the switch, with no restart: this process serves the new model once it has loaded it
        old_store = runtime.store
        code, done = await reindex(settings, capsys, switch=str(other_model))
        assert code == 0 and (done["active"]["key"], done["previous"]["key"], done["forgotten"]) == (
            new_key, old_key, None)
        with pytest.raises(SystemExit, match="is the active model"):
            await reindex(settings, capsys, forget=str(other_model))
        await runtime.follow()  # (what the process does every few seconds; the test need not wait for it)
        assert runtime.encoder.key == new_key and runtime.store is built
        await wait_until_stored(built, first["id"], [late])  # the sweep embeds what the new model missed
        await wait_until_stored(built, third["id"], [newcomer])
        await wait_for_images(client, first.secret, [a, c, late])
        await wait_for_images(client, third.secret, [newcomer])
        assert cosine((await built.vectors(third["id"], [newcomer]))[newcomer], encoded(other_model, 7)) > 0.999
        assert sorted(await built.ids(first["id"])) == sorted([a, c, late])
        assert cosine((await built.vectors(first["id"], [late]))[late], encoded(other_model, 6)) > 0.999
        now_seeds = {a: 1, c: 3, late: 6}
        assert same_scores(await vector_scores(client, first, "a red dress"),
                           expected_scores(other_model, "a red dress", now_seeds))
        assert list(await vector_scores(client, first, "a red dress", category_id=cats["Dresses"])) == [a]
        assert (await client.get("/ready")).json()["builds"] == []  # (the active model is not a build)
        # the previous model's collections stay current: a change reaches them; what the new model embedded
        # (a photo it read anew) left them
        patched = await client.patch(f"/api/v1/images/{c}", json={"category_id": cats["Dresses"]},
                                     headers=first.secret)
        assert patched.status_code == 200, patched.text
        assert (await old_store.metadatas(first["id"], [c]))[c]["category_id"] == cats["Dresses"]
        assert late not in await old_store.ids(first["id"])

        # the rollback: a query under way keeps the model it started with until it returns
        async with runtime.one_model() as pinned:
            code, done = await reindex(settings, capsys, rollback=True)
            assert code == 0 and (done["active"]["key"], done["previous"]["key"]) == (old_key, new_key)
            await runtime.follow()  # (or the process's own round did it first)
            assert runtime.slot.key == old_key and runtime.encoder.key == new_key  # (this call chain: pinned)
            found = await runtime.encode_prompt("a red dress")
            assert cosine(found, encoder_of(other_model).encode_prompt("a red dress")) > 0.999
            assert pinned in runtime._retiring  # not closed while in use

            @runtime.broker.task(task_name="hub-test-which-model")
            async def which_model() -> str:
                async with runtime.one_model() as slot:
                    return slot.key

            queued = await which_model.kiq()  # work sent from a pinned call starts afresh, on the current model
            assert (await queued.wait_result(timeout=30)).return_value == old_key
        assert runtime.encoder.key == old_key
        async with asyncio.timeout(10):
            while pinned in runtime._retiring:
                await asyncio.sleep(0.05)
        await wait_until_stored(old_store, first["id"], [late])
        await wait_until_stored(old_store, third["id"], [newcomer])
        await wait_for_images(client, first.secret, [a, c, late])
        assert same_scores(await vector_scores(client, first, "a red dress"),
                           expected_scores(old_model, "a red dress", now_seeds))
        assert sorted(await vector_scores(client, first, "a red dress", category_id=cats["Dresses"])) == sorted([a, c])

        # forgetting the model switched from drops its collections
        code, _ = await reindex(settings, capsys, forget=str(other_model))
        assert code == 0
        code, status = await reindex(settings, capsys)
        assert status["active"] == {"key": old_key, "name": settings.model} and status["previous"] is None
        assert status["forgotten"] in ([new_key], [])  # (until a sweep dropped its collections)
        async with asyncio.timeout(60):
            while await built.shops() or (await runtime.registry(fresh=True)).forgotten:
                await asyncio.sleep(0.1)
        assert (await runtime.registry(fresh=True)).kept == (old_key,)

    # a restart with another HUB_MODEL serves the active model all the same (the registry decides)
    async with serve_app(settings.model_copy(update={"model": str(other_model)})) as client:
        assert client.app.state.services.pipeline.encoder.key == old_key
        assert same_scores(await vector_scores(client, first, "a red dress"),
                           expected_scores(old_model, "a red dress", now_seeds))


async def test_reindex_refuses_the_active_model_and_an_unknown_shop(settings, capsys):
    with pytest.raises(SystemExit, match="is the active model"):
        await reindex(settings, capsys, model=settings.model)
    with pytest.raises(SystemExit, match="no shop 999"):
        await reindex(settings, capsys, model="some/other-model", shop=999)
    code, found = await reindex(settings, capsys)
    assert (code, found) == (0, {"active": None, "previous": None, "builds": [], "forgotten": []})  # (none started)
    with pytest.raises(SystemExit, match="not a registered model"):
        await reindex(settings, capsys, switch="some/other-model")
    with pytest.raises(SystemExit, match="no previous model"):
        await reindex(settings, capsys, rollback=True)


@pytest.mark.parametrize("settings_overrides", [{"allow_private_fetch": True}])
async def test_an_unreadable_photo_is_reported_and_a_replaced_one_leaves_no_stale_vector(
        settings, other_model, make_shop_for, capsys):
    from sqlalchemy import update

    from hub.db.models import Image
    from tests.indexing.test_fetch import ImageServer

    images = ImageServer()
    try:
        async with serve_app(settings) as client:
            services = client.app.state.services
            shop = await make_shop_for(client, "Photos")
            resp = await client.post("/api/v1/images", json={"image_url": f"{images.base}/img/11.jpg"},
                                     headers=shop.secret)
            by_url = int(resp.json()["id"])
            uploaded = await upload(client, shop, 12)
            await wait_for_images(client, shop.secret, [by_url, uploaded])
            async with services.sessions() as session:
                services.media.path((await session.get(Image, uploaded)).photo).unlink()  # the file is lost

            code, status = await reindex(settings, capsys, model=str(other_model))
            assert code == 1  # (the command says an image failed; the shop is built without it)
            assert (status["progress"], status["done"], status["failed"]) == ("built", 1, 1)
            built = services.pipeline.model_embedder(str(other_model)).store
            assert await built.ids(shop["id"]) == [by_url]
            job = (await client.get("/api/v1/jobs", params={"kind": "reindex"}, headers=shop.secret)).json()["items"][0]
            assert job["status"] == "succeeded" and job["failed"] == 1
            assert job["errors"][0]["item"] == str(uploaded) and "missing" in job["errors"][0]["error"]
            assert (await client.get("/ready")).json()["builds"] == [{"state": "built", "progress": 1.0}]

            # the platform gives the image a new photo: the active model embeds it again, and it leaves the build
            async with services.sessions() as session:
                await session.execute(update(Image).where(Image.id == by_url).values(
                    image_url=f"{images.base}/img/13.jpg", status="pending", next_attempt_at=None))
                await session.commit()
            await wait_for_images(client, shop.secret, [by_url], statuses={"ready"})
            assert await built.ids(shop["id"]) == []
            code, status = await reindex(settings, capsys, model=str(other_model), shop=shop["id"])
            assert code == 1 and status["these_jobs"]["done"] == 1  # (the lost file still fails)
            vector = (await built.vectors(shop["id"], [by_url]))[by_url]
            assert cosine(vector, encoded(other_model, 13)) > 0.999 and cosine(vector, encoded(other_model, 11)) < 0.99
    finally:
        images.close()
