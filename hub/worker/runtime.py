"""The pipeline behind one process (``hub.bootstrap`` builds it): encoder, vector store, broker, tasks and the
sweep, in one of three roles.

- ``embedded``: ``hub serve`` with the in-memory broker: API, workers and the sweep in one process;
- ``api``: ``hub serve`` with Redis: the API sends tasks and loads only the text tower;
- ``worker``: ``hub worker``: consumes tasks, loads the image tower, runs the sweep schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from datetime import timedelta
from typing import Any, Literal

import anyio
import numpy as np
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub import heap
from hub.domain.connections import (
    drop_abandoned_connections,
    image_fetch_headers,
    move_webhooks,
    recognise_app_installs,
    start_due_syncs,
)
from hub.errors import Unavailable
from hub.domain.jobs import due_jobs, run_job
from hub.db.models import Image
from hub.domain.services import Services
from hub.domain.webhooks import due_deliveries, process_delivery, prune_deliveries
from hub.domain.vector_models import (
    REGISTRY_TTL,
    ModelRef,
    Registry,
    adopt_active,
    drop_row,
    forgotten_models,
    read_registry,
)
from hub.domain.work import RUNNERS
from hub.domain.indexing import Embedder, metadata_for
from hub.search.encoder import RETRY_FAILED_LOAD_AFTER, Encoder, ModelUnavailable
from hub.domain import lexical
from hub.domain.ranking import Ranker, Ranking, encode_prompt
from hub.search.store import VectorStore
from hub.worker.slot import ModelSlot
from hub.worker.tasks import CONSUMER_GROUP, BoundedInMemoryBroker, Tasks, make_broker, register_tasks, safe_kiq

log = logging.getLogger("hub.runtime")
Role = Literal["embedded", "api", "worker", "cli"]
# the slot a call chain uses (``Runtime.one_model``): every step of a query ranks with the model it encoded with
_PINNED: ContextVar[tuple["Runtime", ModelSlot] | None] = ContextVar("hub_model_slot", default=None)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Runtime:
    """The pipeline of one process: encoder, vector store, broker and tasks, in one of three roles."""

    def __init__(self, services: Services, role: Role) -> None:
        settings = services.settings
        self.settings = settings
        self.services = services
        self.plugins = services.plugins
        self.sessions = services.sessions
        self.media = services.media
        self.role = role
        self._stores: dict[str, VectorStore] = {}  # every model's collections this process uses, by model key
        self._builds: dict[str, Embedder] = {}  # a model being built (hub reindex) -> its embedder, by name
        self.slot = self._new_slot(settings.model)  # the model served (replaced whole by a switch: ``follow``)
        self._retiring: list[ModelSlot] = []  # slots switched from, closed once no call uses them
        self._registry: tuple[float, Registry] | None = None
        self._switching = asyncio.Lock()
        self._loading: str | None = None  # the key of the active model this process is loading to switch to
        self._switch_problem: str | None = None  # why this process could not switch to the active model
        self.broker = make_broker(settings, services.foreground)
        self.broker.is_worker_process = role == "worker"
        self.tasks: Tasks = register_tasks(self.broker, self)
        self._background: list[asyncio.Task[Any]] = []
        self._redis: Any = None
        self._app_installs_recognised = False
        self._backfill_after = 0  # where the sweep's lexical backfill goes on

    # -- the model served ---------------------------------------------------------------------------------------

    def _new_slot(self, name: str) -> ModelSlot:
        """A slot for a model (nothing loaded yet); a model this process builds lends its encoder."""
        build = self._builds.get(name)
        encoder = build.encoder if build is not None else self._encoder(name)
        return ModelSlot.of(self.settings, encoder, self._store_for(encoder.key))

    def _encoder(self, name: str) -> Encoder:
        settings = self.settings
        return Encoder(name, settings.device, settings.inference, settings.inference_threads, settings.home,
                       settings.inference_int8, settings.embed_nice)

    def _slot(self) -> ModelSlot:
        pinned = _PINNED.get()
        return pinned[1] if pinned is not None and pinned[0] is self else self.slot

    @property
    def encoder(self) -> Encoder:
        return self._slot().encoder

    @property
    def store(self) -> VectorStore:
        return self._slot().store

    @property
    def ranker(self) -> Ranker:
        return self._slot().ranker

    @contextlib.asynccontextmanager
    async def one_model(self) -> AsyncIterator[ModelSlot]:
        """Every call made inside uses the model served when it was entered, which a switch does not close
        before it has returned. (Inside another ``one_model``, the same slot, counted again: a task started from
        a pinned call and outliving it keeps its slot open too. A slot already closed is never handed out.)"""
        slot = self._slot()
        if slot is not self.slot and slot not in self._retiring:
            slot = self.slot  # (closed: a task that outlived its slot starts on the current one)
        slot.enter()
        token = _PINNED.set((self, slot))
        try:
            yield slot
        finally:
            _PINNED.reset(token)
            slot.leave()

    async def registry(self, fresh: bool = False) -> Registry:
        """The registry of models, read again after ``REGISTRY_TTL`` (or now)."""
        now = time.monotonic()
        if fresh or self._registry is None or now - self._registry[0] > REGISTRY_TTL.total_seconds():
            self._registry = (now, await read_registry(self.services))
        return self._registry[1]

    async def _adopt(self) -> None:
        """At start: serve the registry's active model (registering ``HUB_MODEL`` if there is none yet)."""
        try:
            active = await adopt_active(self.services, self.settings.model, self.slot.key)
        except Exception as exc:  # noqa: BLE001 - the database is down: HUB_MODEL until ``follow`` can read it
            log.warning("the registry of models cannot be read; serving HUB_MODEL until it can",
                        extra={"reason": f"{type(exc).__name__}: {exc}"[:300]})
            return
        if active.key == self.slot.key:
            return
        log.warning("HUB_MODEL is not the active model (hub reindex --switch chose another): serving the active one",
                    extra={"hub_model": self.settings.model, "active": active.name})
        slot = self._new_slot(active.name)
        if slot.key != active.key:
            self._files_differ(active, slot)
            await slot.close()
            return
        self.slot = slot

    def _files_differ(self, active: ModelRef, slot: ModelSlot) -> None:
        self._switch_problem = ("the active model's files differ in this process (the log says which); it serves "
                                "the model before")
        log.error("the active model's files here are not those it was built from: not switching to it",
                  extra={"model": active.name, "registered_key": active.key, "key_here": slot.key})

    async def follow(self) -> bool:
        """Serve the registry's active model: if it changed, load the new one (an API its text tower, a worker
        its image tower, ``embedded`` both), then switch every call that starts from now on to it. The previous
        slot is closed once the calls using it have returned. True if this process switched."""
        target = (await self.registry(fresh=True)).active
        if target is None or target.key == self.slot.key:
            self._switch_problem = None
            return False
        async with self._switching:
            if target.key == self.slot.key:
                return False
            slot = self._new_slot(target.name)
            if slot.key != target.key:
                self._files_differ(target, slot)
                await slot.close()
                return False
            self._loading = target.key
            try:
                await anyio.to_thread.run_sync(self._load, slot)
            except ModelUnavailable as exc:
                self._switch_problem = ("the active model cannot be loaded in this process (the log says why); it "
                                        "serves the model before")
                log.error("cannot load the active model: not switching to it",
                          extra={"model": target.name, "reason": str(exc)[:500]})
                await slot.close()
                self._release_later("a model that could not load closed")
                return False
            finally:
                self._loading = None
            now = (await self.registry(fresh=True)).active
            if now is not None and now.key != target.key:  # (switched again, or rolled back, while it loaded)
                await slot.close()
                self._release_later("a model loaded for nothing closed")
                return False
            old, self.slot = self.slot, slot
            self._switch_problem = None
            self._retiring.append(old)
            self._spawn(self._retire(old), "hub-retire-model")
            log.info("switched to the active model", extra={"model": target.name, "key": target.key,
                                                            "from": old.encoder.name})
            return True

    def _release_later(self, reason: str) -> None:
        """``heap.release`` once the caller has returned (and dropped the slot it closed)."""
        async def release() -> None:
            heap.release(reason)

        self._spawn(release(), "hub-release-heap")

    def _towers(self, slot: ModelSlot) -> list[Any]:
        """The towers this process's role runs: the text tower for queries, the image tower for embedding."""
        return [*([slot.encoder.text] if self.role in ("embedded", "api") else []),
                *([slot.encoder.vision] if self.role in ("embedded", "worker") else [])]

    def _load(self, slot: ModelSlot) -> None:
        for tower in self._towers(slot):
            tower.get()

    async def _retire(self, slot: ModelSlot) -> None:
        while True:
            await slot.idle.wait()
            if slot.users == 0:  # (not entered again between the wake-up and now)
                break
        self._retiring.remove(slot)  # from here on, no call is handed it
        await slot.close()
        del slot  # (the last reference: what the model held is garbage now, some of it frozen in cycles)
        heap.release("a replaced model closed")

    async def _follow_loop(self) -> None:
        while True:
            await asyncio.sleep(REGISTRY_TTL.total_seconds())
            try:
                await self.follow()
            except Exception as exc:  # noqa: BLE001 - the database is down: the next round reads it again
                log.warning("the registry of models cannot be read", extra={
                    "reason": f"{type(exc).__name__}: {exc}"[:300]})

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.startup()
        await self._adopt()
        self._spawn(self._follow_loop(), "hub-follow-model")
        self._spawn(self._warm(), "hub-warm-model")
        if self.role in ("embedded", "worker"):
            self._spawn(self._sweep_loop(), "hub-sweep")
        if self.role == "worker":
            from taskiq.api import run_receiver_task

            self._spawn(
                run_receiver_task(self.broker, max_async_tasks=self.settings.worker_concurrency,
                                  propagate_exceptions=False),
                "hub-receiver",
            )

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._background.clear()
        if hasattr(self.broker, "wait_all"):
            with contextlib.suppress(Exception), anyio.move_on_after(self.settings.stop_grace):
                await self.broker.wait_all()
            # what is still running after the grace period (a fetch from a slow host, say) is cancelled and
            # awaited here, while the database is still open; its images stay claimed and the sweep of the next
            # start re-queues them once their lease ends
            running = [t for t in getattr(self.broker, "_running_tasks", ()) if not t.done()]
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(running, timeout=10)
        with contextlib.suppress(Exception):
            await self.broker.shutdown()
        for slot in (self.slot, *self._retiring):
            await slot.close()
        for embedder in self._builds.values():
            await embedder.close()
        if self._redis is not None:
            await self._redis.aclose()

    def _spawn(self, coro: Any, name: str) -> None:
        self._background.append(asyncio.create_task(coro, name=name))

    async def _warm(self) -> None:
        """The towers this process runs, loaded at start instead of by the first request or delivery that needs
        one (a load holds the interpreter for seconds: deliveries arriving meanwhile waited for it). Each is
        tried on its own, and one that failed again after ``RETRY_FAILED_LOAD_AFTER``, until all are loaded
        (``/ready`` waits for them)."""
        while True:
            for tower in self._towers(self.slot):
                if not tower.loaded:
                    with contextlib.suppress(ModelUnavailable):
                        await anyio.to_thread.run_sync(tower.get)
            if all(tower.loaded for tower in self._towers(self.slot)):
                return
            await asyncio.sleep(RETRY_FAILED_LOAD_AFTER)

    async def _sweep_loop(self) -> None:
        """The schedule of ``ReconcileImages`` (taskiq's interval schedule, run in this process)."""
        from taskiq import TaskiqScheduler
        from taskiq.api import run_scheduler_task
        from taskiq.schedule_sources import LabelScheduleSource

        await self._sweep_now()  # recover at start-up: whatever a previous process left behind
        scheduler = TaskiqScheduler(self.broker, sources=[LabelScheduleSource(self.broker)])
        await run_scheduler_task(scheduler, loop_interval=timedelta(seconds=1))

    async def _sweep_now(self) -> None:
        try:
            await self.sweep()
        except Exception as exc:  # noqa: BLE001 - the next scheduled sweep tries again
            log.warning("sweep failed", extra={"reason": f"{type(exc).__name__}: {exc}"[:300]})

    def worker(self) -> Embedder:
        """The embedder of the model served (of the slot ``one_model`` pinned)."""
        if self.role == "api":
            raise RuntimeError("the API process does not embed images; run `hub worker`")
        slot = self._slot()
        if slot.embedder is None:
            slot.embedder = Embedder(
                self.settings, self.sessions, slot.encoder, slot.store, self.media, on_indexed=self._indexed,
                image_headers=lambda img: image_fetch_headers(self.services, img),
                companions=self.companion_stores,
            )
        return slot.embedder

    def model_embedder(self, name: str) -> Embedder:
        """An embedder for a model being built (``hub reindex``): its own encoder and collections, made once."""
        if self.role == "api":
            raise RuntimeError("the API process does not embed images; run `hub worker`")
        embedder = self._builds.get(name)
        if embedder is None:
            served = self.slot
            encoder = served.encoder if served.encoder.name == name else self._encoder(name)
            embedder = Embedder(self.settings, self.sessions, encoder, self._store_for(encoder.key), self.media,
                                image_headers=lambda img: image_fetch_headers(self.services, img))
            self._builds[name] = embedder
        return embedder

    def _store_for(self, key: str) -> VectorStore:
        if key not in self._stores:
            self._stores[key] = VectorStore(self.settings.chroma_url, self.settings.home, key,
                                            self.settings.chroma_open_indexes)
        return self._stores[key]

    async def companion_stores(self) -> list[VectorStore]:
        """The collections of every registered model but forgotten ones (the active one, the previous one, those
        being built): an embedder deletes an image it embeds again from the others', and metadata changes and
        deletions are written to all of them. The registry is read again after ``REGISTRY_TTL``."""
        return [self._store_for(key) for key in (await self.registry()).kept]

    async def _every_store(self) -> list[VectorStore]:
        """The served model's collections and every registered model's."""
        return [self.slot.store, *(store for store in await self.companion_stores() if store is not self.slot.store)]

    def _indexed(self, shop_id: int, image_id: int, source: str) -> None:
        self.plugins.image_indexed(shop_id, image_id, source)

    async def process_delivery(self, delivery_id: int) -> str:
        return await process_delivery(self.services, delivery_id)

    async def run_job(self, job_id: int, on_progress: Any = None) -> str | None:
        job = await run_job(self.services, job_id, RUNNERS, on_progress)
        return job.status if job is not None else None

    # -- the Pipeline the API talks to -----------------------------------------------------------------------

    async def _queue(self, image_ids: list[int]) -> int:
        """Send ``CreateEmbedding`` tasks of a batch each; how many images went out (the rest: broker down)."""
        size = self.settings.embed_batch_size
        sent = 0
        for i in range(0, len(image_ids), size):
            chunk = image_ids[i : i + size]
            if await safe_kiq(self.tasks.create_embedding, chunk):
                sent += len(chunk)
        return sent

    async def images_added(self, shop_id: int, image_ids: list[int]) -> None:
        """Queue new images (their ``next_attempt_at`` was set at intake, so the sweep won't queue them twice)."""
        await self._queue(image_ids)

    async def images_changed(self, shop_id: int, image_ids: list[int]) -> None:
        """Refresh filter metadata, in the collections of a model being built too; if the store is down, re-embed
        later (which rewrites it, and takes the images out of a build's collections)."""
        async with self.sessions() as session:
            images = list(await session.scalars(
                select(Image).where(Image.id.in_(image_ids), Image.status == "ready")
            ))
            metadata = await metadata_for(session, images)
        if not images:
            return
        try:
            for store in await self._every_store():
                await store.update_metadata(shop_id, [i.id for i in images], metadata)
        except Unavailable:
            async with self.sessions() as session:
                await session.execute(
                    update(Image).where(Image.id.in_([i.id for i in images]))
                    .values(status="pending", next_attempt_at=None, error="metadata refresh pending")
                )
                await session.commit()

    async def images_removed(self, shop_id: int, image_ids: list[int]) -> None:
        """Drop vectors now; if the store is down, the sweep removes the orphans later (a build's catch-up, those
        of a model being built)."""
        for store in await self._every_store():
            with contextlib.suppress(Unavailable):
                await store.delete(shop_id, image_ids)

    async def deliveries_received(self, delivery_ids: list[int]) -> None:
        for delivery_id in delivery_ids:  # if the broker is down, the sweep sends them once their lease ends
            await safe_kiq(self.tasks.process_delivery, delivery_id)

    async def job_queued(self, job_id: int) -> None:
        await safe_kiq(self.tasks.run_job, job_id)

    async def shop_removed(self, shop_id: int) -> None:
        for store in await self._every_store():
            with contextlib.suppress(Unavailable):
                await store.drop_shop(shop_id)

    async def recommend(self, shop_id: int, prompt: str, limit: int, filters: dict[str, Any]) -> Ranking:
        """``rank`` with a session of its own (the ``FashionClipRecommender`` task)."""
        async with self.sessions() as session:
            return await self.rank(session, shop_id, prompt, limit, filters)

    async def rank(
        self, session: AsyncSession, shop_id: int, prompt: str, limit: int, filters: dict[str, Any]
    ) -> Ranking:
        async with self.one_model() as slot:
            return await slot.ranker.rank_prompt(session, shop_id, prompt, limit, filters)

    async def encode_prompt(self, prompt: str) -> np.ndarray:
        async with self.one_model() as slot:
            return await encode_prompt(slot.prompts, prompt)

    async def rank_vector(
        self, session: AsyncSession, shop_id: int, vector: np.ndarray, limit: int, filters: dict[str, Any]
    ) -> list[tuple[Image, float]]:
        async with self.one_model() as slot:
            return await slot.ranker.rank_vector(session, shop_id, vector, limit, filters)

    async def vectors(self, shop_id: int, image_ids: list[int]) -> dict[int, np.ndarray]:
        async with self.one_model() as slot:
            return await slot.store.vectors(shop_id, image_ids)

    async def rank_examples(self, session: AsyncSession, shop_id: int, positives: list[np.ndarray],
                            negatives: list[np.ndarray], strategy: str, limit: int, filters: dict[str, Any],
                            exclude: tuple[int, ...]) -> list[tuple[Image, float]]:
        async with self.one_model() as slot:
            return await slot.ranker.rank_examples(session, shop_id, positives, negatives, strategy, limit,
                                                   filters, exclude)

    async def photo_vector(self, data: bytes | None, url: str | None) -> np.ndarray:
        async with self.one_model() as slot:
            return await slot.photos.vector(data, url)

    async def similar(
        self, session: AsyncSession, shop_id: int, image_id: int, limit: int, filters: dict[str, Any]
    ) -> list[tuple[Image, float]] | None:
        async with self.one_model() as slot:
            vector: np.ndarray | None = await slot.store.vector(shop_id, image_id)
            if vector is None:
                return None
            return await slot.ranker.rank_vector(session, shop_id, vector, limit, filters, exclude=(image_id,))

    async def readiness(self) -> dict[str, str]:
        slot = self.slot
        checks = {"vector_store": await slot.store.ping(), "broker": await self._broker_check()}
        towers = self._towers(slot)
        failed = next((tower.error for tower in towers if not tower.loaded and tower.error), None)
        if all(tower.loaded for tower in towers):
            checks["model"] = "ok"
        elif failed:
            checks["model"] = f"cannot load: {failed}"
        else:
            checks["model"] = "loading"
        return checks

    def model_warnings(self) -> list[str]:
        """A tower that runs on torch though ONNX Runtime was asked for (the export or its session failed); a
        switch to the newly active model under way, or not possible in this process. (No model's name: /ready
        is public.)"""
        found = [f"the {tower} model runs on {runtime}"
                 for tower, runtime in sorted(self.slot.encoder.runtimes.items()) if "(" in runtime]
        if self._loading is not None:
            found.append("this process is loading the newly active model; it serves the model before until then")
        if self._switch_problem is not None:
            found.append(self._switch_problem)
        return found

    async def queue_depth(self) -> dict[str, int]:
        """The embedded broker's own count; with Redis, the consumer group's: ``lag`` (entries not yet read by
        a worker) and ``pending`` (read, not yet acknowledged)."""
        if isinstance(self.broker, BoundedInMemoryBroker):
            return self.broker.depth()
        from redis.exceptions import ResponseError

        try:
            with anyio.fail_after(3):
                groups = await self._redis_client().xinfo_groups(self.settings.queue_name)
        except ResponseError:  # no such stream yet: nothing was ever queued
            return {"waiting": 0, "running": 0}
        except Exception as exc:  # noqa: BLE001 - unreachable, timed out
            raise Unavailable("broker", f"{type(exc).__name__}; check HUB_BROKER_URL") from None
        group = next((g for g in groups if _text(g.get("name")) == CONSUMER_GROUP), None)
        if group is None:
            return {"waiting": 0, "running": 0}
        return {"waiting": int(group.get("lag") or 0), "running": int(group.get("pending") or 0)}

    async def _broker_check(self) -> str:
        if not self.settings.broker_is_redis:
            return "ok"
        try:
            with anyio.fail_after(3):
                await self._redis_client().ping()
            return "ok"
        except Exception as exc:  # noqa: BLE001
            return f"unreachable ({type(exc).__name__})"

    def _redis_client(self) -> Any:
        if self._redis is None:
            from redis.asyncio import Redis

            self._redis = Redis.from_url(self.settings.broker_url, socket_timeout=5, socket_connect_timeout=3)
        return self._redis

    # -- the sweep --------------------------------------------------------------------------------------------

    async def _drop_forgotten(self) -> int:
        """Drop every collection of the models ``hub reindex --forget`` (or a switch) forgot; then their rows."""
        dropped = 0
        delay = timedelta(seconds=self.settings.model_drop_delay)
        for key in await forgotten_models(self.services, delay):
            if key == self.slot.key:
                continue  # (never what this process serves: it follows the registry first)
            store = self._store_for(key)
            dropped += await store.drop_all()
            if not await store.shops():  # (a late write made one again: the next sweep drops it, then the row)
                await drop_row(self.services, key)
                log.info("a forgotten model's collections dropped", extra={"key": key})
        return dropped

    async def sweep(self) -> dict[str, Any]:
        """One ``ReconcileImages`` run; with Redis, one worker at a time does it."""
        if self.settings.broker_is_redis:
            lock = await self._redis_client().set(
                f"{self.settings.queue_name}:sweep-lock", "1", nx=True, ex=max(1, self.settings.sweep_seconds - 1)
            )
            if not lock:
                return {"skipped": "another worker is sweeping"}
        async with self.one_model() as slot:
            return await self._sweep(slot)

    async def _sweep(self, slot: ModelSlot) -> dict[str, Any]:
        embedder = self.worker()
        queued = await self._queue(await embedder.due_images())
        deliveries = await due_deliveries(self.services)
        await self.deliveries_received(deliveries)
        jobs = await due_jobs(self.services)
        scheduled = await start_due_syncs(self.services)
        for job_id in [*jobs, *scheduled]:
            await self.job_queued(job_id)
        removed = dropped = 0
        reach: dict[str, int] = {}
        active = (await self.registry(fresh=True)).active
        with contextlib.suppress(Unavailable):
            # (a process still switching to the active model leaves its collections to the processes serving it)
            if active is None or active.key == slot.key:
                removed = await embedder.remove_orphan_vectors()
                reach = await embedder.repair_unreachable()
            dropped = await self._drop_forgotten()
        pruned = await prune_deliveries(self.services)
        async with self.sessions() as session:  # documents the lexical index misses, a slice per sweep
            indexed, self._backfill_after = await lexical.backfill(session, self._backfill_after)
        abandoned = await drop_abandoned_connections(self.services)
        if not self._app_installs_recognised:
            await recognise_app_installs(self.services)
            self._app_installs_recognised = True
        report = {"queued": queued, "deliveries": len(deliveries), "jobs": len(jobs), "scheduled_syncs": len(scheduled), "orphan_vectors_removed": removed,
                  "forgotten_collections_dropped": dropped,
                  "search_docs_built": indexed,
                  "deliveries_forgotten": pruned, "abandoned_connections_dropped": abandoned,
                  **reach, **await move_webhooks(self.services)}
        if any(value for key, value in report.items() if key != "vectors_checked"):
            log.info("sweep", extra=report)
        return report
