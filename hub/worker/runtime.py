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
from datetime import timedelta
from typing import Any, Literal

import anyio
import numpy as np
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

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
from hub.domain.reindex import COMPANIONS_TTL, registered_keys
from hub.domain.work import RUNNERS
from hub.search.batching import PromptBatcher
from hub.domain.indexing import Embedder, metadata_for
from hub.search.encoder import Encoder, ModelUnavailable
from hub.domain import lexical
from hub.domain.photos import PhotoQueries
from hub.domain.ranking import Ranker, Ranking, encode_prompt
from hub.search.store import VectorStore
from hub.worker.tasks import CONSUMER_GROUP, BoundedInMemoryBroker, Tasks, make_broker, register_tasks, safe_kiq

log = logging.getLogger("hub.runtime")
Role = Literal["embedded", "api", "worker", "cli"]


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
        self.encoder = Encoder(settings.model, settings.device, settings.inference, settings.inference_threads,
                               settings.home, settings.inference_int8, settings.embed_nice)
        self.store = VectorStore(settings.chroma_url, settings.home, self.encoder.key, settings.chroma_open_indexes)
        self.broker = make_broker(settings)
        self.broker.is_worker_process = role == "worker"
        self.tasks: Tasks = register_tasks(self.broker, self)
        self.prompts = PromptBatcher(self.encoder)
        self.ranker = Ranker(self.store, self.prompts, settings.exact_max_vectors,
                             settings.exact_cache_mb * 1024 * 1024, settings.query_cache_seconds)
        self._embedder: Embedder | None = None
        self._builds: dict[str, Embedder] = {}  # a model being built (hub reindex) -> its embedder, by name
        self._companions: tuple[float, list[VectorStore]] | None = None
        self._companion_stores: dict[str, VectorStore] = {}
        self._background: list[asyncio.Task[Any]] = []
        self._redis: Any = None
        self._app_installs_recognised = False
        self.photos = PhotoQueries(settings, self.encoder)
        self._backfill_after = 0  # where the sweep's lexical backfill goes on

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.startup()
        if self.role in ("embedded", "api"):
            self._spawn(self._warm_text(), "hub-warm-text")
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
        await self.photos.close()
        if hasattr(self.broker, "wait_all"):
            with contextlib.suppress(Exception), anyio.move_on_after(10):
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
        await self.prompts.stop()
        for embedder in (self._embedder, *self._builds.values()):
            if embedder is not None:
                await embedder.close()
        if self._redis is not None:
            await self._redis.aclose()

    def _spawn(self, coro: Any, name: str) -> None:
        self._background.append(asyncio.create_task(coro, name=name))

    async def _warm_text(self) -> None:
        with contextlib.suppress(ModelUnavailable):
            await anyio.to_thread.run_sync(self.encoder.text.get)

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
        if self.role == "api":
            raise RuntimeError("the API process does not embed images; run `hub worker`")
        if self._embedder is None:
            self._embedder = Embedder(
                self.settings, self.sessions, self.encoder, self.store, self.media, on_indexed=self._indexed,
                image_headers=lambda img: image_fetch_headers(self.services, img),
                companions=self.companion_stores,
            )
        return self._embedder

    def model_embedder(self, name: str) -> Embedder:
        """An embedder for a model being built (``hub reindex``): its own encoder and collections, made once."""
        if self.role == "api":
            raise RuntimeError("the API process does not embed images; run `hub worker`")
        embedder = self._builds.get(name)
        if embedder is None:
            settings = self.settings
            encoder = Encoder(name, settings.device, settings.inference, settings.inference_threads, settings.home,
                              settings.inference_int8, settings.embed_nice)
            embedder = Embedder(settings, self.sessions, encoder, self._store_for(encoder.key), self.media,
                                image_headers=lambda img: image_fetch_headers(self.services, img))
            self._builds[name] = embedder
        return embedder

    def _store_for(self, key: str) -> VectorStore:
        if key not in self._companion_stores:
            self._companion_stores[key] = VectorStore(self.settings.chroma_url, self.settings.home, key,
                                                      self.settings.chroma_open_indexes)
        return self._companion_stores[key]

    async def companion_stores(self) -> list[VectorStore]:
        """The collections of the models registered beside the active one (``hub reindex``): this process writes
        metadata changes and deletions to them too. The list is read again after ``COMPANIONS_TTL``."""
        now = time.monotonic()
        if self._companions is None or now - self._companions[0] > COMPANIONS_TTL.total_seconds():
            keys = [key for key in await registered_keys(self.services) if key != self.encoder.key]
            self._companions = (now, [self._store_for(key) for key in keys])
        return self._companions[1]

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
            for store in [self.store, *await self.companion_stores()]:
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
        for store in [self.store, *await self.companion_stores()]:
            with contextlib.suppress(Unavailable):
                await store.delete(shop_id, image_ids)

    async def deliveries_received(self, delivery_ids: list[int]) -> None:
        for delivery_id in delivery_ids:  # if the broker is down, the sweep sends them once their lease ends
            await safe_kiq(self.tasks.process_delivery, delivery_id)

    async def job_queued(self, job_id: int) -> None:
        await safe_kiq(self.tasks.run_job, job_id)

    async def shop_removed(self, shop_id: int) -> None:
        for store in [self.store, *await self.companion_stores()]:
            with contextlib.suppress(Unavailable):
                await store.drop_shop(shop_id)

    async def recommend(self, shop_id: int, prompt: str, limit: int, filters: dict[str, Any]) -> Ranking:
        """``rank`` with a session of its own (the ``FashionClipRecommender`` task)."""
        async with self.sessions() as session:
            return await self.rank(session, shop_id, prompt, limit, filters)

    async def rank(
        self, session: AsyncSession, shop_id: int, prompt: str, limit: int, filters: dict[str, Any]
    ) -> Ranking:
        return await self.ranker.rank_prompt(session, shop_id, prompt, limit, filters)

    async def encode_prompt(self, prompt: str) -> np.ndarray:
        return await encode_prompt(self.prompts, prompt)

    async def rank_vector(
        self, session: AsyncSession, shop_id: int, vector: np.ndarray, limit: int, filters: dict[str, Any]
    ) -> list[tuple[Image, float]]:
        return await self.ranker.rank_vector(session, shop_id, vector, limit, filters)

    async def vectors(self, shop_id: int, image_ids: list[int]) -> dict[int, np.ndarray]:
        return await self.store.vectors(shop_id, image_ids)

    async def rank_examples(self, session: AsyncSession, shop_id: int, positives: list[np.ndarray],
                            negatives: list[np.ndarray], strategy: str, limit: int, filters: dict[str, Any],
                            exclude: tuple[int, ...]) -> list[tuple[Image, float]]:
        return await self.ranker.rank_examples(session, shop_id, positives, negatives, strategy, limit, filters,
                                               exclude)

    async def photo_vector(self, data: bytes | None, url: str | None) -> np.ndarray:
        return await self.photos.vector(data, url)

    async def similar(
        self, session: AsyncSession, shop_id: int, image_id: int, limit: int, filters: dict[str, Any]
    ) -> list[tuple[Image, float]] | None:
        vector: np.ndarray | None = await self.store.vector(shop_id, image_id)
        if vector is None:
            return None
        return await self.ranker.rank_vector(session, shop_id, vector, limit, filters, exclude=(image_id,))

    async def readiness(self) -> dict[str, str]:
        checks = {"vector_store": await self.store.ping(), "broker": await self._broker_check()}
        tower = self.encoder.text
        if tower.loaded:
            checks["model"] = "ok"
        elif tower.error:
            checks["model"] = f"cannot load: {tower.error}"
        else:
            checks["model"] = "loading"
        return checks

    def model_warnings(self) -> list[str]:
        """A tower that runs on torch though ONNX Runtime was asked for (the export or its session failed)."""
        return [f"the {tower} model runs on {runtime}" for tower, runtime in sorted(self.encoder.runtimes.items())
                if "(" in runtime]

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

    async def sweep(self) -> dict[str, Any]:
        """One ``ReconcileImages`` run; with Redis, one worker at a time does it."""
        if self.settings.broker_is_redis:
            lock = await self._redis_client().set(
                f"{self.settings.queue_name}:sweep-lock", "1", nx=True, ex=max(1, self.settings.sweep_seconds - 1)
            )
            if not lock:
                return {"skipped": "another worker is sweeping"}
        embedder = self.worker()
        queued = await self._queue(await embedder.due_images())
        deliveries = await due_deliveries(self.services)
        await self.deliveries_received(deliveries)
        jobs = await due_jobs(self.services)
        scheduled = await start_due_syncs(self.services)
        for job_id in [*jobs, *scheduled]:
            await self.job_queued(job_id)
        removed = 0
        reach: dict[str, int] = {}
        with contextlib.suppress(Unavailable):
            removed = await embedder.remove_orphan_vectors()
            reach = await embedder.repair_unreachable()
        pruned = await prune_deliveries(self.services)
        async with self.sessions() as session:  # documents the lexical index misses, a slice per sweep
            indexed, self._backfill_after = await lexical.backfill(session, self._backfill_after)
        abandoned = await drop_abandoned_connections(self.services)
        if not self._app_installs_recognised:
            await recognise_app_installs(self.services)
            self._app_installs_recognised = True
        report = {"queued": queued, "deliveries": len(deliveries), "jobs": len(jobs), "scheduled_syncs": len(scheduled), "orphan_vectors_removed": removed,
                  "search_docs_built": indexed,
                  "deliveries_forgotten": pruned, "abandoned_connections_dropped": abandoned,
                  **reach, **await move_webhooks(self.services)}
        if any(value for key, value in report.items() if key != "vectors_checked"):
            log.info("sweep", extra=report)
        return report
