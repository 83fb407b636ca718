"""The original service's endpoints, kept working as its README documents them.

- ``POST /api/image-collection/``: multipart ``APIKey``, ``Photo``, ``name``, ``description``, ``Category``,
  ``Styles``, ``AgeGroup`` (taxonomy by id or by name) → 201 with the ImageCollection record;
- ``GET /api/image-collection/<image_id>/`` → that record (key as ``APIKey`` query/header, Bearer or X-API-Key);
- ``POST /api/recommendations/`` (``api_key``, ``prompt``, ``number_of_images``).
"""

from __future__ import annotations

from typing import TypedDict

from litestar import Controller, Request, get, post
from litestar.openapi.spec import Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import JSONBody
from pydantic import BaseModel, Field

from hub.db.models import Image
from hub.domain.fields import JsonInt
from hub.domain.images import ImageFields, add_upload, get_visible_image
from hub.domain.recommendations import prompt_text, recommend
from hub.domain.taxonomy import TAXONOMIES, find_taxon
from hub.errors import Invalid
from hub.http.auth import authenticate, key_from_headers
from hub.http.deps import Db, Svc
from hub.http.openapi import BINARY, problems, request_body
from hub.http.routes.images import form_fields, read_upload
from hub.http.validation import PathId

ORIGINAL_TAXON_FIELDS = {"Category": "category", "Styles": "style", "AgeGroup": "age_group"}


class ImageCollectionOut(TypedDict):
    """The original ImageCollection record, field for field, plus the pipeline status."""

    id: int
    name: str
    description: str
    Category: int | None
    Styles: int | None
    AgeGroup: int | None
    Photo: str | None
    Processor_embedded: bool
    status: str


class RankedImageCollectionOut(ImageCollectionOut):
    score: float


class LegacyRecommendationsOut(TypedDict):
    prompt: str
    number_of_images: int
    images: list[RankedImageCollectionOut]


def image_collection_json(img: Image, public_url: str) -> ImageCollectionOut:
    return {
        "id": img.id,
        "name": img.name,
        "description": img.description,
        "Category": img.category_id,
        "Styles": img.style_id,
        "AgeGroup": img.age_group_id,
        "Photo": f"{public_url}/api/v1/images/{img.id}/file" if img.photo else img.image_url,
        "Processor_embedded": img.processor_embedded,
        "status": img.status,
    }


class ImageCollectionController(Controller):
    path = "/api/image-collection"
    tags = ["compatibility"]

    @post("/", status_code=201, responses=problems(409, 413, 415), operation_class=request_body({
        "multipart/form-data": Schema(type=OpenAPIType.OBJECT, required=["Photo"], properties={
            "Photo": BINARY, "APIKey": Schema(type=OpenAPIType.STRING), "name": Schema(type=OpenAPIType.STRING),
            "description": Schema(type=OpenAPIType.STRING),
            **{name: Schema(type=OpenAPIType.STRING, description="id or name")
               for name in ORIGINAL_TAXON_FIELDS}})}))
    async def create(self, services: Svc, request: Request, db: Db) -> ImageCollectionOut:
        """Upload an image the original way (multipart, the key in ``APIKey``)."""
        form = await request.form()
        raw_key = form.get("APIKey") if isinstance(form.get("APIKey"), str) else None
        principal = await authenticate(request, db, raw_key or key_from_headers(request), secret_only=True)
        if "Photo" not in form:
            raise Invalid("the multipart field 'Photo' with the image is required")
        fields = form_fields(form, ImageFields, {"name": "name", "description": "description"})
        for form_name, kind in ORIGINAL_TAXON_FIELDS.items():
            value = form.get(form_name)
            if isinstance(value, str) and value.strip():
                taxon = await find_taxon(db, TAXONOMIES[kind], principal.shop_id, value)
                if taxon is None:
                    raise Invalid(f'{form_name}: invalid pk or name "{value}" - object does not exist')
                setattr(fields, f"{kind}_id", taxon.id)
        data = await read_upload(form.get("Photo"), services.settings.max_upload_bytes)
        img = await add_upload(db, services, principal.shop_id, data, fields)
        return image_collection_json(img, services.settings.public_url)

    @get("/{image_id:int}")
    async def retrieve(self, request: Request, db: Db, services: Svc, image_id: PathId) -> ImageCollectionOut:
        raw_key = request.query_params.get("APIKey") or request.headers.get("apikey") or key_from_headers(request)
        principal = await authenticate(request, db, raw_key, secret_only=False)
        img = await get_visible_image(db, principal, image_id)
        return image_collection_json(img, services.settings.public_url)


class LegacyRecommendationRequest(BaseModel):
    api_key: str = Field(min_length=1)
    prompt: str = Field(min_length=1, max_length=1000)
    number_of_images: JsonInt = Field(10, ge=1, le=100)


class LegacyRecommendationController(Controller):
    """The original ``POST /api/recommendations/`` (``api_key``, ``prompt``, ``number_of_images``)."""

    path = "/api/recommendations"
    tags = ["compatibility"]

    @post("/", status_code=200)
    async def recommendations(self, request: Request, db: Db, services: Svc,
                              data: JSONBody[LegacyRecommendationRequest]) -> LegacyRecommendationsOut:
        principal = await authenticate(request, db, data.api_key, secret_only=False)
        prompt = prompt_text(data.prompt)
        # the original ranked every image by FashionCLIP similarity alone; so does this endpoint
        found = await recommend(db, services, principal, prompt, data.number_of_images, {}, mode="vector",
                                distinct="image")
        public_url = services.settings.public_url
        return {"prompt": prompt, "number_of_images": data.number_of_images,
                "images": [{**image_collection_json(r.image, public_url), "score": r.score}  # type: ignore[typeddict-item]
                           for r in found.results]}
