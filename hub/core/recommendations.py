"""Recommendations: text-to-image, image-to-image ("more like this"), and the prompt log."""

from __future__ import annotations

import time
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import Provide
from litestar.params import FromQuery, JSONBody, QueryParameter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.auth import Caller, Principal, authenticate, require_any_key
from hub.core.compat import image_collection_json
from hub.core.deps import Db
from hub.core.errors import ApiError
from hub.core.images import get_visible_image, image_json
from hub.core.models import Prompt
from hub.core.pagination import decode_cursor, page
from hub.core.validation import BodyId, PathId, QueryId


class Filters(BaseModel):
    """Only images matching every given filter are ranked."""

    model_config = ConfigDict(extra="forbid")

    category_id: BodyId | None = None
    style_id: BodyId | None = None
    age_group_id: BodyId | None = None
    product_id: BodyId | None = None
    source: str | None = Field(None, max_length=50)
    available: bool | None = None
    price_min: float | None = Field(None, ge=0, le=1e12, allow_inf_nan=False)
    price_max: float | None = Field(None, ge=0, le=1e12, allow_inf_nan=False)


class RecommendationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=1000)
    limit: int = Field(10, ge=1, le=100)
    filters: Filters = Field(default_factory=Filters)


def _prompt_text(prompt: str) -> str:
    text = " ".join(prompt.split())
    if not text:
        raise ApiError(400, "prompt must not be blank")
    return text


async def recommend(
    request: Request, db: AsyncSession, principal: Principal, prompt: str, limit: int, filters: dict[str, Any]
) -> tuple[list[tuple[Any, float]], dict[str, float]]:
    """Rank, log the prompt (the original Prompt_API), and return results with timings."""
    start = time.perf_counter()
    ranking = await request.app.state.pipeline.rank(db, principal.shop_id, prompt, limit, filters)
    db.add(
        Prompt(
            shop_id=principal.shop_id,
            prompt=prompt,
            num_recommended=limit,
            result_count=len(ranking.results),
            filters=filters,
            api_key_id=principal.key_id,
        )
    )
    await db.commit()
    timings = ranking.timings_ms | {"total": round((time.perf_counter() - start) * 1000, 2)}
    return ranking.results, timings


def _server_timing(timings: dict[str, float]) -> str:
    return ", ".join(f"{name};dur={ms}" for name, ms in timings.items())


class RecommendationController(Controller):
    """Secret and publishable keys alike: this is what a storefront calls."""

    path = "/api/v1"
    tags = ["recommendations"]
    dependencies = {"principal": Provide(require_any_key)}

    @post("/recommendations", status_code=200)
    async def recommendations(
        self, request: Request, db: Db, principal: Caller, data: JSONBody[RecommendationRequest]
    ) -> Response[dict[str, Any]]:
        """The shop's ready images ranked by FashionCLIP similarity to ``prompt`` (best first)."""
        prompt = _prompt_text(data.prompt)
        filters = data.filters.model_dump(exclude_none=True)
        results, timings = await recommend(request, db, principal, prompt, data.limit, filters)
        public_url = request.app.state.settings.public_url
        return Response(
            {
                "prompt": prompt,
                "limit": data.limit,
                "filters": filters,
                "count": len(results),
                "results": [image_json(img, public_url) | {"score": score} for img, score in results],
                "timings_ms": timings,
            },
            headers={"Server-Timing": _server_timing(timings)},
        )

    @get("/images/{image_id:int}/similar")
    async def similar(
        self,
        request: Request,
        db: Db,
        principal: Caller,
        image_id: PathId,
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 10,
        category_id: QueryId = None,
        style_id: QueryId = None,
        age_group_id: QueryId = None,
        available: FromQuery[bool | None] = None,
    ) -> dict[str, Any]:
        """Images that look like this one (the image itself excluded)."""
        img = await get_visible_image(db, principal, image_id)  # (a publishable key: only what it may be shown)
        if img.status != "ready":
            raise ApiError(409, f"image {image_id} is {img.status}, not ready; similar images need its embedding")
        filters = {k: v for k, v in {"category_id": category_id, "style_id": style_id,
                                     "age_group_id": age_group_id, "available": available}.items() if v is not None}
        results = await request.app.state.pipeline.similar(db, principal.shop_id, image_id, limit, filters)
        if results is None:
            raise ApiError(409, f"image {image_id} has no vector yet; it is being re-embedded")
        public_url = request.app.state.settings.public_url
        return {
            "image_id": image_id,
            "count": len(results),
            "results": [image_json(i, public_url) | {"score": s} for i, s in results],
        }


class PromptController(Controller):
    """``GET /api/v1/prompts``: what shoppers asked, newest first (secret key)."""

    path = "/api/v1/prompts"
    tags = ["recommendations"]

    @get("/")
    async def list_prompts(
        self,
        db: Db,
        principal: Caller,
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 50,
        cursor: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        stmt = select(Prompt).where(Prompt.shop_id == principal.shop_id)
        before = decode_cursor(cursor)
        if before is not None:
            stmt = stmt.where(Prompt.id < before)
        rows = list(await db.scalars(stmt.order_by(Prompt.id.desc()).limit(limit + 1)))
        items, next_cursor = page(rows, limit)
        return {
            "items": [
                {
                    "id": p.id,
                    "prompt": p.prompt,
                    "num_recommended": p.num_recommended,
                    "result_count": p.result_count,
                    "filters": p.filters,
                    "created_at": p.created_at,
                }
                for p in items
            ],
            "next_cursor": next_cursor,
        }


class LegacyRecommendationRequest(BaseModel):
    api_key: str = Field(min_length=1)
    prompt: str = Field(min_length=1, max_length=1000)
    number_of_images: int = Field(10, ge=1, le=100)


class LegacyRecommendationController(Controller):
    """The original ``POST /api/recommendations/`` (``api_key``, ``prompt``, ``number_of_images``)."""

    path = "/api/recommendations"
    tags = ["compatibility"]

    @post("/", status_code=200)
    async def recommendations(
        self, request: Request, db: Db, data: JSONBody[LegacyRecommendationRequest]
    ) -> dict[str, Any]:
        principal = await authenticate(request, db, data.api_key, secret_only=False)
        prompt = _prompt_text(data.prompt)
        results, _ = await recommend(request, db, principal, prompt, data.number_of_images, {})
        public_url = request.app.state.settings.public_url
        return {
            "prompt": prompt,
            "number_of_images": data.number_of_images,
            "images": [image_collection_json(img, public_url) | {"score": score} for img, score in results],
        }
