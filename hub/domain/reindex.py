"""``hub reindex --model``: every shop's images embedded with another model into that model's own collections,
while the active model (``hub.domain.vector_models``) goes on serving from its own.

A build is one job per shop (kind ``reindex``), resumable from the last image it wrote, its progress in the
shop's jobs; an image whose photo cannot be read is reported in the job and never stops it. While a model is
registered (``vector_models``), every process keeps its collections from going stale: metadata changes and
deletions are written to them too, and an image embedded again by the active model (a new photo) loses its
vector there (``Embedder.companions``). Each shop's job ends with a catch-up: images missing from the model's
collection are embedded, vectors of images gone are deleted, and every vector's metadata is written again. So a
finished build holds no stale vector, only possibly missing ones, which the sweep embeds once the model is
active (``Embedder.remove_orphan_vectors``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select

from hub.foreground import alongside
from hub.db.models import Image, Job, Shop, VectorModel, utcnow
from hub.domain.fetching import FetchError
from hub.domain.indexing import Embedder, Fail, metadata_for, shops_with_images
from hub.domain.jobs import JobFailed, JobProgress
from hub.domain.services import Services
from hub.domain.vector_models import BUILDING, FORGOTTEN, REGISTRY_TTL, REINDEX, of_model, read_registry
from hub.errors import Conflict, NotFound
from hub.search.encoder import ModelUnavailable
from hub.search.store import VectorStore

log = logging.getLogger("hub.reindex")
BATCH = 64  # images per step: their vectors are written together, then the job's cursor moves past them
METADATA_BATCH = 500


@dataclass(frozen=True)
class BuildStatus:
    """A registered model's build: ``shops`` that have images now, the latest job of each shop by status, and
    images done and failed of the total. Shops with images that no job of the build covers are ``missing`` if
    only single shops were built (``--shop``), ``added`` after a build of every shop (their first images came
    later: the sweep embeds them once the model is active)."""

    key: str
    name: str
    shops: int
    jobs: dict[str, int]
    missing: int
    done: int
    failed: int
    total: int
    added: int = 0

    @property
    def finished(self) -> bool:
        return self.jobs.get("queued", 0) + self.jobs.get("running", 0) == 0

    @property
    def progress(self) -> str:
        """building; built (every shop with images built, no job failed: ``hub reindex --switch`` may make it
        active; images that could not be read are listed in their shop's job and stay without a vector); or
        incomplete (a shop's build failed, or a shop has images but no build: ``hub reindex --model`` again)."""
        if not self.finished:
            return "building"
        return "built" if self.jobs.get("failed", 0) == 0 and self.missing == 0 else "incomplete"


async def start_build(services: Services, name: str, key: str, hub_model_key: str,
                      shop_id: int | None = None) -> list[int]:
    """Register the model and queue a build job for each shop that has images (or the one shop); a shop whose
    build is already queued or running keeps it. The active model is the registry's (``hub_model_key`` before
    any process registered one). Returns the ids of this build's jobs, oldest first."""
    active = (await read_registry(services)).active
    if key == (active.key if active is not None else hub_model_key):
        raise Conflict(f"{name} is the active model: there is nothing to build")
    async with services.sessions() as session:
        if shop_id is not None and await session.get(Shop, shop_id) is None:
            raise NotFound(f"no shop {shop_id}")
        row = await session.get(VectorModel, key)
        if row is None:
            session.add(VectorModel(key=key, name=name, state=BUILDING))
        elif row.state == FORGOTTEN:
            raise Conflict(f"{name} was forgotten and its collections are being dropped; build it again once a "
                           "sweep has dropped them (HUB_MODEL_DROP_DELAY after it was forgotten)")
        elif row.state != BUILDING:  # (the previous model rebuilt: no longer what a rollback returns to)
            row.name, row.state, row.updated_at, row.created_at = name, BUILDING, utcnow(), utcnow()
        else:
            row.name, row.updated_at = name, utcnow()
        shops = [shop_id] if shop_id is not None else await shops_with_images(session)
        running = dict((await session.execute(select(Job.shop_id, Job.id).where(
            of_model(key), Job.status.in_(("queued", "running"))))).all())
        params = {"model": name, "key": key, "every_shop": shop_id is None}
        created = [Job(shop_id=shop, kind=REINDEX, params=params, next_attempt_at=utcnow())
                   for shop in shops if shop not in running]
        session.add_all(created)
        await session.commit()
        return sorted([*(running[shop] for shop in shops if shop in running), *(job.id for job in created)])


async def jobs_progress(services: Services, job_ids: list[int]) -> tuple[int, int, int, dict[str, int]]:
    """Images done, failed and in total over these jobs, and the jobs by status."""
    async with services.sessions() as session:
        rows = (await session.execute(select(Job.status, Job.done, Job.failed, Job.total)
                                      .where(Job.id.in_(job_ids)))).all()
    statuses: dict[str, int] = {}
    for status, *_ in rows:
        statuses[status] = statuses.get(status, 0) + 1
    return (sum(r.done for r in rows), sum(r.failed for r in rows), sum(r.total or 0 for r in rows), statuses)


async def build_statuses(services: Services, key: str | None = None) -> list[BuildStatus]:
    """The build of every model being built (or of the model ``key``, whatever its state): the latest job of
    each shop counts."""
    async with services.sessions() as session:
        chosen = VectorModel.key == key if key is not None else VectorModel.state == BUILDING
        models = list(await session.scalars(select(VectorModel).where(chosen).order_by(VectorModel.created_at)))
        with_images = set(await shops_with_images(session)) if models else set()
        found = []
        for model in models:
            latest: dict[int, Any] = {}
            every_shop = False
            # (this registration's jobs: a model forgotten and built again starts afresh)
            for row in (await session.execute(select(Job.shop_id, Job.status, Job.done, Job.failed, Job.total,
                                                     Job.params).where(of_model(model.key),
                                                                       Job.created_at >= model.created_at)
                                              .order_by(Job.id))).all():
                latest[row.shop_id] = row
                every_shop = every_shop or bool(row.params.get("every_shop"))
            jobs: dict[str, int] = {}
            for row in latest.values():
                jobs[row.status] = jobs.get(row.status, 0) + 1
            uncovered = len(with_images - set(latest))
            found.append(BuildStatus(
                key=model.key, name=model.name, shops=len(with_images), jobs=jobs,
                missing=0 if every_shop else uncovered, added=uncovered if every_shop else 0,
                done=sum(r.done for r in latest.values()), failed=sum(r.failed for r in latest.values()),
                total=sum(r.total or 0 for r in latest.values())))
        return found


async def recent_build_statuses(services: Services) -> list[BuildStatus]:
    """``build_statuses`` read at most every ``BUILDS_SECONDS`` (``/ready`` is polled; a registration or a
    forgotten model counts at once in this process)."""
    found: list[BuildStatus] | None = await services.builds.read("all", lambda: build_statuses(services))
    assert found is not None  # (build_statuses always gives a list)
    return found


# -- the job ------------------------------------------------------------------------------------------------------


_FIRST_SEEN: dict[tuple[str, datetime], float] = {}  # (model, its registration) -> when this process first built it


async def run_reindex(services: Services, progress: JobProgress) -> None:
    """One shop's build: every ready image (from the cursor on), then the catch-up."""
    if services.pipeline is None:
        raise JobFailed("this process has no embedding pipeline")
    job = progress.job
    name, key, shop_id = str(job.params["model"]), str(job.params["key"]), job.shop_id
    async with services.sessions() as session:
        model = await session.get(VectorModel, key)
        if model is None or model.state == FORGOTTEN:
            raise JobFailed("the build was cancelled (the model was forgotten)")
        registered = model.updated_at
        total = None
        if job.total is None:
            total = int(await session.scalar(select(func.count(Image.id)).where(
                Image.shop_id == shop_id, Image.status == "ready")) or 0)
        await progress.advance(session, total=total)  # (renews the lease before the wait and the model's load)
        await session.commit()
    # nothing is read for the build before every process re-read its list of registered models (REGISTRY_TTL):
    # timed from when this process first saw this registration (after it, whatever another host's clock says)
    first = _FIRST_SEEN.setdefault((key, registered), time.monotonic())
    await asyncio.sleep(max(0.0, first + 2 * REGISTRY_TTL.total_seconds() - time.monotonic()))
    try:
        embedder = services.pipeline.model_embedder(name)
        await asyncio.to_thread(embedder.encoder.vision.get)
    except ModelUnavailable as exc:
        raise _unloadable(name, exc) from None
    if embedder.encoder.key != key:
        log.warning("a model's files changed since its build was started", extra={"model": name})
        raise JobFailed("the model's files changed since the build was started; the operator starts it again")
    step = _Step(services, embedder, shop_id, progress)
    after = int(job.cursor or 0)
    while True:
        async with services.sessions() as session:
            images = list(await session.scalars(select(Image).where(
                Image.shop_id == shop_id, Image.status == "ready", Image.id > after).order_by(Image.id).limit(BATCH)))
        if not images:
            break
        await step.run(images, cursor=str(images[-1].id))
        after = images[-1].id
    await _catch_up(services, embedder, shop_id, step)


def _unloadable(name: str, exc: Exception) -> JobFailed:
    """The job's reason without the model's name or folders (the shop sees its jobs); the log has them."""
    log.warning("a model being built cannot be loaded", extra={"model": name, "reason": str(exc)[:500]})
    return JobFailed("the model being built cannot be loaded; the operator's log says why")


class _Step:
    """Embeds a batch with the model being built and writes the vectors, then moves the job on. Every image is
    embedded again, even one the model's collection holds: a vector written while the model was not registered
    (an earlier build, before a switch back) may be of an old photo."""

    def __init__(self, services: Services, embedder: Embedder, shop_id: int, progress: JobProgress) -> None:
        self.services = services
        self.embedder = embedder
        self.shop_id = shop_id
        self.progress = progress
        self.failed: set[int] = set()  # images that cannot have a vector (this run): the catch-up leaves them

    async def run(self, images: list[Image], cursor: str | None = None, extra_total: int = 0) -> None:
        await self.still_building()
        outcomes = await asyncio.gather(*(alongside(self.embedder.vector_only(img)) for img in images),
                                        return_exceptions=True)
        vectors: dict[int, np.ndarray] = {}
        errors: list[dict[str, Any]] = []
        for img, outcome in zip(images, outcomes, strict=True):
            if isinstance(outcome, Fail | FetchError):  # (a host that is down now: the sweep tries after a switch)
                errors.append({"item": str(img.id), "error": str(outcome)[:500]})
                if isinstance(outcome, Fail):
                    self.failed.add(img.id)
            elif isinstance(outcome, ModelUnavailable):
                raise _unloadable(self.embedder.encoder.name, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome  # the store, the database: the job resumes from its cursor
            else:
                vectors[img.id] = outcome
        store = self.embedder.store
        if errors:  # no older vector of theirs stays
            await store.delete(self.shop_id, [int(e["item"]) for e in errors])
        if vectors:
            written = [img for img in images if img.id in vectors]
            async with self.services.sessions() as session:
                metadata = await metadata_for(session, written)
            ids = [img.id for img in written]
            await store.upsert(self.shop_id, ids, np.stack([vectors[i] for i in ids]), metadata)
            # an image embedded again by the active model meanwhile (a new photo) may have left this collection
            # before these vectors arrived: it leaves again, and the catch-up embeds its new photo
            async with self.services.sessions() as session:
                now = dict((await session.execute(select(Image.id, Image.embedded_at).where(
                    Image.id.in_(ids), Image.status == "ready"))).all())
            changed = [img.id for img in written if img.id not in now or now[img.id] != img.embedded_at]
            if changed:
                await store.delete(self.shop_id, changed)
        async with self.services.sessions() as session:
            await self.progress.advance(
                session, done=len(vectors), failed=len(errors), errors=errors, cursor=cursor,
                total=(self.progress.job.total or 0) + extra_total if extra_total else None)
            await session.commit()

    async def still_building(self) -> None:
        """A build stops when its model is forgotten (its collections are to be dropped) or was switched to
        before it ended (the sweep embeds what the model misses: its vectors must not be deleted as a build's)."""
        async with self.services.sessions() as session:
            row = await session.get(VectorModel, self.embedder.store.model_key)
        if row is None or row.state == FORGOTTEN:
            raise JobFailed("the build was cancelled (the model was forgotten)")
        if row.state != BUILDING:
            raise JobFailed(f"the build stopped: the model is {row.state} now; the sweep embeds what it misses")


async def _catch_up(services: Services, embedder: Embedder, shop_id: int, step: _Step) -> None:
    """What changed while the shop was built: vectors of images gone go, images missing (ready meanwhile, or
    embedded again by the active model) are embedded, and the metadata is made the database's."""
    store = embedder.store
    await step.still_building()
    stored = set(await store.ids(shop_id))
    async with services.sessions() as session:
        ready = set(await session.scalars(select(Image.id).where(Image.shop_id == shop_id, Image.status == "ready")))
    gone = sorted(stored - ready)
    if gone:
        await store.delete(shop_id, gone)
    missing = sorted(ready - stored - step.failed)
    for start in range(0, len(missing), BATCH):
        async with services.sessions() as session:
            images = list(await session.scalars(select(Image).where(
                Image.id.in_(missing[start:start + BATCH]), Image.status == "ready").order_by(Image.id)))
        await step.run(images, extra_total=len(images))
    rewritten = await _settle_metadata(services, store, shop_id)
    log.info("shop built for a model", extra={"shop_id": shop_id, "model": embedder.encoder.name,
                                              "removed": len(gone), "caught_up": len(missing),
                                              "metadata_rewritten": rewritten})


async def _settle_metadata(services: Services, store: VectorStore, shop_id: int, rounds: int = 3) -> int:
    """Rewrite each vector's metadata that differs from the database's, until none differs (at most ``rounds``).
    The collection is read before the database: a change committed in between is read from the database and
    written, and one mirrored by its process after this write is newer anyway. How many were rewritten."""
    rewritten = 0
    for _ in range(rounds):
        ids = await store.ids(shop_id)
        differing = 0
        for start in range(0, len(ids), METADATA_BATCH):
            chunk = ids[start:start + METADATA_BATCH]
            held = await store.metadatas(shop_id, chunk)
            async with services.sessions() as session:
                images = list(await session.scalars(select(Image).where(
                    Image.id.in_(chunk), Image.status == "ready").order_by(Image.id)))
                wanted = dict(zip((img.id for img in images), await metadata_for(session, images), strict=True))
            stale = [i for i in chunk if i in wanted and held.get(i) != wanted[i]]
            if stale:
                await store.update_metadata(shop_id, stale, [wanted[i] for i in stale])
                differing += len(stale)
        rewritten += differing
        if not differing:
            break
    return rewritten
