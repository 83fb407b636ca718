"""``POST /api/v1/recommendations``, ``GET /api/v1/images/{id}/similar`` (any key: what a storefront calls) and
``GET /api/v1/prompts`` (secret key)."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from litestar import Controller, Request, Response, get, post
from litestar.di import Provide
from litestar.params import FromQuery, JSONBody, QueryParameter
from pydantic import BaseModel, Field, ValidationError

from hub.domain.images import RankedImageOut, ranked_json
from hub.domain.recommendations import (
    Examples,
    Facets,
    PromptOut,
    RecommendationRequest,
    Recommended,
    list_prompts,
    prompt_text,
    recommend,
    similar_images,
)
from hub.http.auth import Caller, SecretKeyController, require_any_key
from hub.http.deps import Db, Svc
from hub.errors import Invalid, UnsupportedMedia, validation_detail
from hub.http.openapi import model_schema, problems, request_body
from hub.http.routes.images import read_upload
from hub.http.validation import PathId, QueryId


class ScoresOut(TypedDict):
    """Each side's score: ``vector`` the cosine similarity to the prompt, ``lexical`` the words score (null:
    the prompt's words are not in this image's text, or that side was not asked)."""

    vector: float | None
    lexical: float | None


class ExplainOut(TypedDict):
    """Where each side placed the result (1 is first; null: not among that side's candidates) and the steps
    that decided its place, in the order they were applied."""

    vector_rank: int | None
    lexical_rank: int | None
    steps: list[str]


class RecommendedImageOut(RankedImageOut):
    """A result: ``score`` is what it was ranked by (cosine in ``vector`` mode, the words score in ``lexical``,
    the fused reciprocal-rank score in ``hybrid``); ``other_image_ids``: the product's other images among the
    candidates, best first (with ``distinct: "product"``); ``explain`` only when asked."""

    scores: ScoresOut
    other_image_ids: list[int]
    explain: ExplainOut | None


class PhotoForm(BaseModel):
    """A search by photo: the photo in ``file``; the other fields of a recommendation request as JSON text in
    ``query`` (optional)."""

    query: str | None = Field(None, description="The JSON of a recommendation request (``prompt``, ``limit``, "
                                                "``filters``, ``mode``…), without ``image_url``")


class RecommendationsOut(TypedDict):
    """``results``: best first; ``mode``, ``weight`` and ``distinct`` as applied (the request's or the shop's
    defaults); ``timings_ms``: where the time went (also in the ``Server-Timing`` header)."""

    prompt: str | None
    limit: int
    filters: dict[str, Any]
    mode: str
    weight: float
    distinct: str
    count: int
    results: list[RecommendedImageOut]
    facets: Facets | None
    timings_ms: dict[str, float]


class SimilarOut(TypedDict):
    image_id: int
    count: int
    results: list[RankedImageOut]


class PromptPage(TypedDict):
    items: list[PromptOut]
    next_cursor: str | None


def _server_timing(timings: dict[str, float]) -> str:
    return ", ".join(f"{name};dur={ms}" for name, ms in timings.items())


def _result_json(found: Recommended, public_url: str, explain: bool) -> RecommendedImageOut:
    return {**ranked_json(found.image, found.score, public_url),
            "scores": {"vector": found.vector_score, "lexical": found.lexical_score},
            "other_image_ids": found.other_image_ids,
            "explain": {"vector_rank": found.vector_rank, "lexical_rank": found.lexical_rank,
                        "steps": found.steps} if explain else None}


class RecommendationController(Controller):
    path = "/api/v1"
    tags = ["recommendations"]
    dependencies = {"principal": Provide(require_any_key)}

    @post("/recommendations", status_code=200, responses=problems(404, 409, 413, 415, 422),
          operation_class=request_body({"application/json": model_schema(RecommendationRequest)}))
    async def recommendations(self, db: Db, services: Svc, principal: Caller,
                              data: JSONBody[RecommendationRequest]) -> Response[RecommendationsOut]:
        """The shop's ready images of listed products ranked for ``prompt``, best first: by FashionCLIP similarity,
        by the catalog's words, or both (``mode``); or by example images (``positive``, ``negative``), or like a
        shopper's photo on the web (``image_url``: fetched, never stored)."""
        return await self._recommend(db, services, principal, data, None)

    @post("/recommendations/by-photo", status_code=200, responses=problems(404, 409, 413, 415, 422),
          operation_class=request_body({
              "multipart/form-data": model_schema(PhotoForm, files=("file",), title="RecommendationByPhoto")}))
    async def by_photo(self, request: Request[Any, Any, Any], db: Db, services: Svc,
                       principal: Caller) -> Response[RecommendationsOut]:
        """The shop's images ranked like a shopper's photo (multipart ``file``; never stored), alone or with the
        other fields of a recommendation request as JSON text in ``query`` ("this, but in red")."""
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise UnsupportedMedia("send multipart/form-data with the photo in 'file'")
        form = await request.form()
        if "file" not in form:
            raise Invalid("a search by photo needs the photo in the multipart field 'file'")
        photo = await read_upload(form.get("file"), services.settings.max_upload_bytes)
        query = form.get("query")
        if query is not None and not isinstance(query, str):
            raise Invalid("the multipart field 'query' must be JSON text")
        try:
            data = RecommendationRequest.model_validate_json(query or "{}", context={"photo": True})
        except ValidationError as exc:
            raise Invalid(f"invalid query: {validation_detail(exc)}") from None
        return await self._recommend(db, services, principal, data, photo)

    async def _recommend(self, db: Db, services: Svc, principal: Caller, data: RecommendationRequest,
                         photo: bytes | None) -> Response[RecommendationsOut]:
        prompt = prompt_text(data.prompt) if data.prompt else None
        filters = data.filters.model_dump(exclude_none=True)
        examples = Examples(tuple(data.positive), tuple(data.negative), data.strategy, photo, data.image_url)
        found = await recommend(db, services, principal, prompt, data.limit, filters, mode=data.mode,
                                weight=data.weight, distinct=data.distinct, examples=examples, facets=data.facets)
        public_url = services.settings.public_url
        body: RecommendationsOut = {
            "prompt": prompt, "limit": data.limit, "filters": filters, "mode": found.mode, "weight": found.weight,
            "distinct": found.distinct, "count": len(found.results),
            "results": [_result_json(r, public_url, data.explain) for r in found.results], "facets": found.facets,
            "timings_ms": found.timings_ms,
        }
        return Response(body, headers={"Server-Timing": _server_timing(found.timings_ms)})

    @get("/images/{image_id:int}/similar", responses=problems(409))
    async def similar(
        self,
        db: Db,
        services: Svc,
        principal: Caller,
        image_id: PathId,
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 10,
        category_id: QueryId = None,
        style_id: QueryId = None,
        age_group_id: QueryId = None,
        available: FromQuery[bool | None] = None,
    ) -> SimilarOut:
        """Images that look like this one (the image itself excluded)."""
        filters = {k: v for k, v in {"category_id": category_id, "style_id": style_id,
                                     "age_group_id": age_group_id, "available": available}.items() if v is not None}
        results = await similar_images(db, services, principal, image_id, limit, filters)
        public_url = services.settings.public_url
        return {"image_id": image_id, "count": len(results),
                "results": [ranked_json(i, s, public_url) for i, s in results]}


class PromptController(SecretKeyController):
    path = "/api/v1/prompts"
    tags = ["recommendations"]

    @get("/")
    async def list_prompts(
        self,
        db: Db,
        services: Svc,
        principal: Caller,
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 50,
        cursor: FromQuery[str | None] = None,
    ) -> PromptPage:
        """What shoppers asked, newest first."""
        await services.prompt_log.flush()  # (this process's newest prompts are still being gathered)
        items, next_cursor = await list_prompts(db, principal.shop_id, limit, cursor)
        return {"items": items, "next_cursor": next_cursor}
