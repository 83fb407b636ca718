"""One model as a process serves it: its encoder, the collections it ranks and writes, the prompt batcher, the
ranker, shoppers' photos and (in a process that embeds) the embedder. A model switch replaces the whole slot at
once; the slot it replaced is closed once the last call that was using it has returned."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hub.domain.indexing import Embedder
from hub.domain.photos import PhotoQueries
from hub.domain.ranking import Ranker
from hub.search.batching import PromptBatcher
from hub.search.encoder import Encoder
from hub.search.store import VectorStore
from hub.settings import Settings


@dataclass(eq=False)
class ModelSlot:
    encoder: Encoder
    store: VectorStore
    prompts: PromptBatcher
    ranker: Ranker
    photos: PhotoQueries
    embedder: Embedder | None = None
    users: int = 0  # calls using the slot now (``Runtime.one_model``)
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def of(cls, settings: Settings, encoder: Encoder, store: VectorStore) -> ModelSlot:
        prompts = PromptBatcher(encoder)
        ranker = Ranker(store, prompts, settings.exact_max_vectors, settings.exact_cache_mb * 1024 * 1024,
                        settings.query_cache_seconds)
        slot = cls(encoder, store, prompts, ranker, PhotoQueries(settings, encoder))
        slot.idle.set()
        return slot

    @property
    def key(self) -> str:
        return self.encoder.key

    def enter(self) -> None:
        self.users += 1
        self.idle.clear()

    def leave(self) -> None:
        self.users -= 1
        if self.users == 0:
            self.idle.set()

    async def close(self) -> None:
        await self.photos.close()
        await self.prompts.stop()
        if self.embedder is not None:
            await self.embedder.close()
