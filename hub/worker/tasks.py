"""The taskiq broker and the tasks, under the original service's names.

- ``CreateEmbedding(image_ids)``: embed images (fetch/read, decode, batch, upsert, mark ready);
- ``DeleteEmbedding(shop_id, image_ids)``: drop vectors;
- ``RetrieveImageIds(shop_id)``: ids in a shop's collection;
- ``FashionClipRecommender(shop_id, prompt, number_of_images, filters)``: ranked ids and scores;
- ``ReconcileImages()``: on a schedule, re-queue due images, deliveries and jobs, and remove orphan vectors;
- ``ProcessDelivery(delivery_id)``: apply a verified webhook delivery's catalog events;
- ``RunJob(job_id)``: run (or resume) a full sync or a bulk import.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from taskiq import AsyncBroker, AsyncTaskiqDecoratedTask, BrokerMessage, InMemoryBroker
from taskiq.exceptions import UnknownTaskError

from hub.errors import Unavailable
from hub.foreground import Foreground, in_background
from hub.settings import Settings

if TYPE_CHECKING:
    from hub.worker.runtime import Runtime

log = logging.getLogger("hub.tasks")
CONSUMER_GROUP = "hub-workers"


def make_broker(settings: Settings, foreground: Foreground | None = None) -> AsyncBroker:
    """In-process for the embedded default; Redis streams (acknowledged delivery) for ``redis://``."""
    if settings.broker_is_redis:
        from taskiq_redis import RedisStreamBroker

        return RedisStreamBroker(
            settings.broker_url,
            queue_name=settings.queue_name,
            consumer_group_name=CONSUMER_GROUP,
            idle_timeout=int(settings.lease_seconds * 1000),
            socket_timeout=None,
        )
    return BoundedInMemoryBroker(settings.worker_concurrency, foreground)


class BoundedInMemoryBroker(InMemoryBroker):
    """The in-process broker of the embedded default, running at most ``concurrency`` tasks at once.

    taskiq's ``InMemoryBroker`` starts every task the moment it is sent (its ``max_async_tasks`` only bounds a
    listening receiver, which an in-memory broker never has): a burst of 1,000 webhook deliveries became 1,000
    tasks at once on the event loop that answers the HTTP requests, all queued for the same database
    connections. Here the tasks wait their turn (first come, first run) and the API keeps its share; with a
    ``foreground``, every step of a task waits while a webhook request is being answered (``hub.foreground``)."""

    def __init__(self, concurrency: int, foreground: Foreground | None = None) -> None:
        super().__init__(max_async_tasks=concurrency)
        self._slots = asyncio.Semaphore(concurrency)
        self.foreground = foreground
        self.running = 0  # tasks holding a slot (the others in ``_running_tasks`` wait for one)

    async def kick(self, message: BrokerMessage) -> None:
        if self.find_task(message.task_name) is None:
            raise UnknownTaskError(task_name=message.task_name)
        # a fresh context, as a task on another worker would have: nothing of the sender's carries over (the model
        # slot a sweep or a query pinned: ``Runtime.one_model``)
        task = asyncio.create_task(self._run(message), context=contextvars.Context())
        self._running_tasks.add(task)
        task.add_done_callback(self._running_tasks.discard)

    async def _run(self, message: BrokerMessage) -> None:
        async with self._slots:
            self.running += 1
            try:
                await in_background(self.receiver.callback(message=message.message), self.foreground)
            finally:
                self.running -= 1

    def depth(self) -> dict[str, int]:
        return {"waiting": len(self._running_tasks) - self.running, "running": self.running}


@dataclass
class Tasks:
    create_embedding: AsyncTaskiqDecoratedTask[Any, Any]
    delete_embedding: AsyncTaskiqDecoratedTask[Any, Any]
    retrieve_image_ids: AsyncTaskiqDecoratedTask[Any, Any]
    recommender: AsyncTaskiqDecoratedTask[Any, Any]
    reconcile: AsyncTaskiqDecoratedTask[Any, Any]
    process_delivery: AsyncTaskiqDecoratedTask[Any, Any]
    run_job: AsyncTaskiqDecoratedTask[Any, Any]


def register_tasks(broker: AsyncBroker, runtime: "Runtime") -> Tasks:
    settings = runtime.settings

    @broker.task(task_name="CreateEmbedding")
    async def create_embedding(image_ids: list[int]) -> list[dict[str, Any]]:
        """Embed these images and mark each ready, pending (to retry) or failed."""
        async with runtime.one_model():  # (a model switch meanwhile: the sweep embeds them with the new one)
            return [asdict(o) for o in await runtime.worker().embed_images(image_ids)]

    @broker.task(task_name="DeleteEmbedding")
    async def delete_embedding(shop_id: int, image_ids: list[int]) -> int:
        """Remove these images' vectors from the shop's collections (every registered model's)."""
        await runtime.images_removed(shop_id, image_ids)
        return len(image_ids)

    @broker.task(task_name="RetrieveImageIds")
    async def retrieve_image_ids(shop_id: int) -> list[int]:
        """The image ids that have a vector in the shop's collection."""
        async with runtime.one_model() as slot:
            return await slot.store.ids(shop_id)

    @broker.task(task_name="FashionClipRecommender")
    async def recommender(
        shop_id: int, prompt: str, number_of_images: int = 10, filters: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The shop's images ranked for a prompt, as ``[{"id", "score"}]``."""
        ranking = await runtime.recommend(shop_id, prompt, number_of_images, filters or {})
        return [{"id": img.id, "score": score} for img, score in ranking.results]

    @broker.task(task_name="ReconcileImages", schedule=[{"interval": settings.sweep_seconds}])
    async def reconcile() -> dict[str, Any]:
        """Re-queue images whose next attempt is due; delete vectors whose image is gone."""
        return await runtime.sweep()

    @broker.task(task_name="ProcessDelivery")
    async def process_delivery(delivery_id: int) -> str:
        """Apply one verified webhook delivery (retried with backoff, then marked failed)."""
        return await runtime.process_delivery(delivery_id)

    @broker.task(task_name="RunJob")
    async def run_job(job_id: int) -> str | None:
        """Run or resume a sync or import job; its progress is in the jobs table."""
        return await runtime.run_job(job_id)

    return Tasks(create_embedding, delete_embedding, retrieve_image_ids, recommender, reconcile, process_delivery,
                 run_job)


async def safe_kiq(task: AsyncTaskiqDecoratedTask[Any, Any], *args: Any) -> bool:
    """Send a task; False (logged) when the broker is down — the sweep sends it later."""
    try:
        await task.kiq(*args)
        return True
    except (OSError, ConnectionError, Unavailable) as exc:
        log.warning("broker unavailable; the sweep will queue it", extra={"task": task.task_name,
                                                                          "reason": type(exc).__name__})
        return False
    except Exception as exc:  # noqa: BLE001 - redis-py raises its own ConnectionError hierarchy
        if "Connection" in type(exc).__name__ or "Timeout" in type(exc).__name__:
            log.warning("broker unavailable; the sweep will queue it", extra={"task": task.task_name})
            return False
        raise
