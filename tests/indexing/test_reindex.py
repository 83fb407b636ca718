"""``hub reindex --model M``: every shop's images embedded with M into M's own collections while the active model
serves; what changes meanwhile reaches M's collections; switching ``HUB_MODEL`` to M serves from them, and what
M missed (images embedded after its build) is embedded by M. Two generated checkpoints (different seeds): their
rankings mean nothing, their vectors differ."""

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
from hub.search.test_checkpoint import write_test_checkpoint
from tests.conftest import serve_app, wait_for_images
from tests.images import photo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_checkpoint(tmp_path_factory.mktemp("model-b") / "tiny-clip-b", seed=1)


def options(**given: Any) -> argparse.Namespace:
    return argparse.Namespace(**({"model": None, "shop": None, "no_wait": False, "forget": None, "json": True}
                                 | given))


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


async def test_a_model_is_built_beside_the_active_one_then_serves_when_switched_to(
        settings, other_model, make_shop_for, capsys):
    new_key = model_key(str(other_model))
    async with serve_app(settings) as client:
        runtime = client.app.state.services.pipeline
        assert runtime.encoder.key != new_key
        first, second = await make_shop_for(client, "First"), await make_shop_for(client, "Second")
        cats = {c["name"]: c["id"] for c in (await client.get("/api/v1/categories", headers=first.secret)).json()["items"]}
        mine = {first["id"]: [await upload(client, first, s) for s in (1, 2, 3)],
                second["id"]: [await upload(client, second, s) for s in (4, 5)]}
        for shop, ids in zip((first, second), mine.values(), strict=True):
            await wait_for_images(client, shop.secret, ids)
        before = {shop: await runtime.store.vectors(shop, ids) for shop, ids in mine.items()}

        code, status = await reindex(settings, capsys, model=str(other_model))
        assert code == 0, status
        assert (status["progress"], status["done"], status["failed"], status["total"]) == ("built", 5, 0, 5)
        built = runtime.model_embedder(str(other_model)).store
        assert built.model_key == new_key
        for (shop, ids), seeds in zip(mine.items(), ((1, 2, 3), (4, 5)), strict=True):
            vectors = await built.vectors(shop, ids)
            assert sorted(vectors) == sorted(ids)
            for image_id, seed in zip(ids, seeds, strict=True):  # the new model's own vector of the photo
                assert cosine(vectors[image_id], encoded(other_model, seed)) > 0.999
                assert cosine(vectors[image_id], before[shop][image_id]) < 0.99  # (not the old model's)
            still = await runtime.store.vectors(shop, ids)  # the active model's collections are untouched
            assert all(np.allclose(still[i], before[shop][i]) for i in ids)
        ready = (await client.get("/ready")).json()
        assert ready["builds"] == [{"state": "built", "progress": 1.0}]  # (which model, the counts: the CLI's)
        jobs = (await client.get("/api/v1/jobs", params={"kind": "reindex"}, headers=first.secret)).json()["items"]
        assert [(j["status"], j["done"], j["total"]) for j in jobs] == [("succeeded", 3, 3)]
        # the old model still serves
        answer = await client.post("/api/v1/recommendations", json={"prompt": "a red dress", "limit": 10},
                                   headers=first.publishable)
        assert answer.status_code == 200 and len(answer.json()["results"]) == 3

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

    switched = settings.model_copy(update={"model": str(other_model)})
    async with serve_app(switched) as client:
        runtime = client.app.state.services.pipeline
        assert runtime.encoder.key == new_key
        store = runtime.store
        for _ in range(300):  # the sweep finds the images the new model has no vector for and embeds them
            if late in await store.ids(first["id"]) and newcomer in await store.ids(third["id"]):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the new model did not embed the images it missed within 30 s")
        await wait_for_images(client, first.secret, [a, c, late])
        await wait_for_images(client, third.secret, [newcomer])
        assert cosine((await store.vectors(third["id"], [newcomer]))[newcomer], encoded(other_model, 7)) > 0.999
        assert sorted(await store.ids(first["id"])) == sorted([a, c, late])
        assert cosine((await store.vectors(first["id"], [late]))[late], encoded(other_model, 6)) > 0.999
        answer = await client.post("/api/v1/recommendations", json={"prompt": "a red dress", "limit": 10,
                                                                    "filters": {"category_id": cats["Dresses"]}},
                                   headers=first.publishable)
        assert answer.status_code == 200 and [r["id"] for r in answer.json()["results"]] == [a]
        # the model switched to is no longer one being built; the old one is not registered
        assert len((await client.get("/ready")).json()["builds"]) == 1
        code, _ = await reindex(switched, capsys, forget=str(other_model))
        assert code == 0
        assert (await client.get("/ready")).json()["builds"] == []


async def test_reindex_refuses_the_active_model_and_an_unknown_shop(settings, capsys):
    with pytest.raises(SystemExit, match="is the active model"):
        await reindex(settings, capsys, model=settings.model)
    with pytest.raises(SystemExit, match="no shop 999"):
        await reindex(settings, capsys, model="some/other-model", shop=999)
    code, found = await reindex(settings, capsys)
    assert (code, found) == (0, [])


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
