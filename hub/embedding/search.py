"""Ranking: a prompt (or an image's own vector) against a shop's collection, keeping only ready images."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.errors import DependencyUnavailable
from hub.core.models import Image, Product
from hub.embedding.batcher import PromptBatcher
from hub.embedding.model import ModelUnavailable
from hub.embedding.store import VectorStore

OVERFETCH = 10  # vectors of images deleted a moment ago may still be in the store


@dataclass
class Ranking:
    results: list[tuple[Image, float]]
    timings_ms: dict[str, float] = field(default_factory=dict)


async def encode_prompt(prompts: PromptBatcher, prompt: str) -> np.ndarray:
    try:
        return await prompts.encode(prompt)
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
    """The nearest ready images of listed products. The store is first asked without the "listed" filter (a
    ``where`` slows Chroma down); only when drafts crowd the results out is it asked again with it."""
    wanted = limit + OVERFETCH + (1 if exclude else 0)
    hits = await store.query(shop_id, vector, wanted, filters)
    results = await _rows(session, shop_id, hits, exclude)
    if len(results) < limit and len(hits) == wanted:
        hits = await store.query(shop_id, vector, wanted, filters, listed_only=True)
        results = await _rows(session, shop_id, hits, exclude)
    return results[:limit]


async def _rows(session: AsyncSession, shop_id: int, hits: list[Any], exclude: int | None) -> list[tuple[Image, float]]:
    ids = [h.image_id for h in hits if h.image_id != exclude]
    if not ids:
        return []
    rows = {
        img.id: img
        for img in await session.scalars(
            select(Image)
            .outerjoin(Product, Product.id == Image.product_id)
            .where(Image.id.in_(ids), Image.shop_id == shop_id, Image.status == "ready",
                   or_(Product.id.is_(None), Product.status == "active"))
        )
    }
    return [(rows[h.image_id], h.score) for h in hits if h.image_id in rows]


async def rank_prompt(
    session: AsyncSession,
    prompts: PromptBatcher,
    store: VectorStore,
    shop_id: int,
    prompt: str,
    limit: int,
    filters: dict[str, Any],
) -> Ranking:
    t0 = time.perf_counter()
    vector = await encode_prompt(prompts, prompt)
    t1 = time.perf_counter()
    results = await rank_vector(session, store, shop_id, vector, limit, filters)
    t2 = time.perf_counter()
    return Ranking(results, {"encode": round((t1 - t0) * 1000, 2), "search": round((t2 - t1) * 1000, 2)})
