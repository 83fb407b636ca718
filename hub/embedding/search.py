"""Ranking: a prompt (or an image's own vector) against a shop's collection, keeping only ready images."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.errors import DependencyUnavailable
from hub.core.models import Image
from hub.embedding.model import Encoder, ModelUnavailable
from hub.embedding.store import VectorStore

OVERFETCH = 10  # vectors of images deleted a moment ago may still be in the store


@dataclass
class Ranking:
    results: list[tuple[Image, float]]
    timings_ms: dict[str, float] = field(default_factory=dict)


async def encode_prompt(encoder: Encoder, limiter: anyio.CapacityLimiter, prompt: str) -> np.ndarray:
    try:
        async with limiter:
            return await anyio.to_thread.run_sync(encoder.encode_prompt, prompt)
    except ModelUnavailable as exc:
        raise DependencyUnavailable("model", str(exc)) from None


async def rank_vector(
    session: AsyncSession,
    store: VectorStore,
    shop_id: int,
    vector: np.ndarray,
    limit: int,
    filters: dict[str, Any],
    exclude: int | None = None,
) -> list[tuple[Image, float]]:
    hits = await store.query(shop_id, vector, limit + OVERFETCH + (1 if exclude else 0), filters)
    ids = [h.image_id for h in hits if h.image_id != exclude]
    if not ids:
        return []
    rows = {
        img.id: img
        for img in await session.scalars(
            select(Image).where(Image.id.in_(ids), Image.shop_id == shop_id, Image.status == "ready")
        )
    }
    return [(rows[h.image_id], h.score) for h in hits if h.image_id in rows and h.image_id != exclude][:limit]


async def rank_prompt(
    session: AsyncSession,
    encoder: Encoder,
    store: VectorStore,
    limiter: anyio.CapacityLimiter,
    shop_id: int,
    prompt: str,
    limit: int,
    filters: dict[str, Any],
) -> Ranking:
    t0 = time.perf_counter()
    vector = await encode_prompt(encoder, limiter, prompt)
    t1 = time.perf_counter()
    results = await rank_vector(session, store, shop_id, vector, limit, filters)
    t2 = time.perf_counter()
    return Ranking(results, {"encode": round((t1 - t0) * 1000, 2), "search": round((t2 - t1) * 1000, 2)})
