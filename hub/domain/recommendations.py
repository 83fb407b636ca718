"""Recommendations: text-to-image, image-to-image ("more like this"), and the prompt log."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, TypedDict

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import Image, Prompt
from hub.domain.fields import BodyId, JsonBool, JsonFloat, JsonInt, optional_id
from hub.domain.images import get_visible_image
from hub.domain.keys import Principal
from hub.domain.pagination import decode_cursor, page
from hub.domain.services import Services
from hub.errors import Conflict, Invalid


class Filters(BaseModel):
    """Only images matching every given filter are ranked."""

    model_config = ConfigDict(extra="forbid")

    category_id: BodyId | None = optional_id()
    style_id: BodyId | None = optional_id()
    age_group_id: BodyId | None = optional_id()
    product_id: BodyId | None = optional_id()
    source: str | None = Field(None, max_length=50)
    available: JsonBool | None = None
    price_min: JsonFloat | None = Field(None, ge=0, le=1e12, allow_inf_nan=False,
                                        json_schema_extra={"minimum": 0, "maximum": 1e12})
    price_max: JsonFloat | None = Field(None, ge=0, le=1e12, allow_inf_nan=False,
                                        json_schema_extra={"minimum": 0, "maximum": 1e12})


class RecommendationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=r"\S")] = Field(
        description="What the shopper asked for (at least one character that is not a space)")
    limit: JsonInt = Field(10, ge=1, le=100)
    filters: Filters = Field(default_factory=Filters)


def prompt_text(prompt: str) -> str:
    """The prompt with its whitespace folded; 400 if nothing is left."""
    text = " ".join(prompt.split())
    if not text:
        raise Invalid("prompt must not be blank")
    return text


async def recommend(session: AsyncSession, services: Services, principal: Principal, prompt: str, limit: int,
                    filters: dict[str, Any], log_prompt: bool = True,
                    ) -> tuple[list[tuple[Image, float]], dict[str, float]]:
    """Rank the shop's ready images against the prompt, log the prompt (the original Prompt_API; not for the
    console's own tries, which are not shoppers), and return the results, best first, with timings in ms."""
    assert services.pipeline is not None, "recommendations need the pipeline (its encoder and vector store)"
    start = time.perf_counter()
    ranking = await services.pipeline.rank(session, principal.shop_id, prompt, limit, filters)
    if log_prompt:
        top = float(ranking.results[0][1]) if ranking.results else None
        session.add(Prompt(shop_id=principal.shop_id, prompt=prompt, num_recommended=limit,
                           result_count=len(ranking.results), top_score=top, filters=filters,
                           api_key_id=principal.key_id))
        await session.commit()
    timings = ranking.timings_ms | {"total": round((time.perf_counter() - start) * 1000, 2)}
    return ranking.results, timings


async def similar_images(session: AsyncSession, services: Services, principal: Principal, image_id: int, limit: int,
                         filters: dict[str, Any]) -> list[tuple[Image, float]]:
    """Images that look like this one (the image itself excluded); a publishable key only starts from what it
    may be shown."""
    assert services.pipeline is not None, "similar images need the pipeline (its vector store)"
    img = await get_visible_image(session, principal, image_id)
    if img.status != "ready":
        raise Conflict(f"image {image_id} is {img.status}, not ready; similar images need its embedding")
    results = await services.pipeline.similar(session, principal.shop_id, image_id, limit, filters)
    if results is None:
        raise Conflict(f"image {image_id} has no vector yet; it is being re-embedded")
    ranked: list[tuple[Image, float]] = results
    return ranked


class PromptOut(TypedDict):
    """One prompt a shopper sent: how many results were asked for and found, with which filters."""

    id: int
    prompt: str
    num_recommended: int
    result_count: int
    filters: dict[str, Any]
    created_at: datetime


async def list_prompts(session: AsyncSession, shop_id: int, limit: int,
                       cursor: str | None) -> tuple[list[PromptOut], str | None]:
    """A page of what the shop's shoppers asked, newest first, and the cursor of the next page."""
    stmt = select(Prompt).where(Prompt.shop_id == shop_id)
    before = decode_cursor(cursor)
    if before is not None:
        stmt = stmt.where(Prompt.id < before)
    rows = list(await session.scalars(stmt.order_by(Prompt.id.desc()).limit(limit + 1)))
    items, next_cursor = page(rows, limit)
    return [{"id": p.id, "prompt": p.prompt, "num_recommended": p.num_recommended, "result_count": p.result_count,
             "filters": p.filters, "created_at": p.created_at} for p in items], next_cursor
