"""What the core asks of the embedding side: keep vectors in step with images, and rank."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

if TYPE_CHECKING:
    from hub.domain.indexing import Embedder


class Pipeline(Protocol):
    """The embedding side of the hub as the API sees it (``hub.worker.runtime.Runtime``)."""

    async def start(self) -> None:
        """Start background work (model warm-up, in-process workers, the sweep)."""

    async def stop(self) -> None:
        """Finish in-flight work and release connections."""

    def one_model(self) -> AbstractAsyncContextManager[Any]:
        """Every call made inside uses one model, the one served when it was entered (a query's vector is
        ranked among vectors of the model that encoded it, whatever switch happens meanwhile)."""

    async def images_added(self, shop_id: int, image_ids: list[int]) -> None:
        """New ``pending`` images: queue their embedding."""

    async def images_changed(self, shop_id: int, image_ids: list[int]) -> None:
        """Images whose metadata changed: refresh what the vector store keeps for filters."""

    async def images_removed(self, shop_id: int, image_ids: list[int]) -> None:
        """Deleted images: drop their vectors."""

    async def deliveries_received(self, delivery_ids: list[int]) -> None:
        """Verified webhook deliveries: queue their processing (``ProcessDelivery``)."""

    async def job_queued(self, job_id: int) -> None:
        """A new sync or import: queue it (``RunJob``)."""

    async def shop_removed(self, shop_id: int) -> None:
        """A deleted shop: drop its whole vector collection."""

    async def rank(
        self, session: AsyncSession, shop_id: int, prompt: str, limit: int, filters: dict[str, Any]
    ) -> Any:
        """The shop's ready images ranked for a prompt (a ``Ranking``)."""

    async def encode_prompt(self, prompt: str) -> Any:
        """The prompt's text vector (a numpy array); ``Unavailable("model")`` while the model cannot load."""

    async def rank_vector(
        self, session: AsyncSession, shop_id: int, vector: Any, limit: int, filters: dict[str, Any]
    ) -> list[Any]:
        """The shop's ready images nearest to a vector, best first, as ``(Image, cosine)`` pairs."""

    async def vectors(self, shop_id: int, image_ids: list[int]) -> dict[int, Any]:
        """The stored vectors of these images (those the store has), by image id."""

    async def rank_examples(
        self, session: AsyncSession, shop_id: int, positives: list[Any], negatives: list[Any], strategy: str,
        limit: int, filters: dict[str, Any], exclude: tuple[int, ...]
    ) -> list[Any]:
        """The shop's ready images ranked by example vectors (``hub.domain.ranking.average_vector`` or
        ``best_score``), best first, as ``(Image, score)`` pairs."""

    async def photo_vector(self, data: bytes | None, url: str | None) -> Any:
        """A shopper's photo, sent (``data``) or fetched (``url``), as a vector; checked like an upload, never
        stored."""

    async def similar(
        self, session: AsyncSession, shop_id: int, image_id: int, limit: int, filters: dict[str, Any]
    ) -> Any:
        """The shop's ready images ranked by similarity to one of them; None without its vector."""

    async def readiness(self) -> dict[str, str]:
        """Component name -> "ok" or what is wrong."""

    async def queue_depth(self) -> dict[str, int]:
        """Tasks in the queue: ``waiting`` (not yet taken by a worker) and ``running`` (taken, not yet done)."""

    def model_embedder(self, name: str) -> Embedder:
        """An embedder for another model (its encoder; its store holds that model's collections), for the builds
        of ``hub reindex``. Raises ``ModelUnavailable`` if the model cannot be loaded."""

    def model_warnings(self) -> list[str]:
        """What an operator should know about the model though it serves (a fallback from ONNX Runtime)."""
