"""The original service's endpoints, kept working as its README documents them.

- ``POST /api/image-collection/``: multipart ``APIKey``, ``Photo``, ``name``, ``description``, ``Category``,
  ``Styles``, ``AgeGroup`` (taxonomy by id or by name) → 201 with the ImageCollection record;
- ``GET /api/image-collection/<image_id>/`` → that record (key as ``APIKey`` query/header, Bearer or X-API-Key).
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post

from hub.core.auth import authenticate, key_from_headers
from hub.core.deps import Db
from hub.core.errors import ApiError
from hub.core.images import (
    ImageFields,
    add_uploaded_image,
    checked_upload,
    form_fields,
    get_visible_image,
    requeue_at,
)
from hub.core.models import Image
from hub.core.taxonomy import TAXONOMIES, find_taxon
from hub.core.validation import PathId

ORIGINAL_TAXON_FIELDS = {"Category": "category", "Styles": "style", "AgeGroup": "age_group"}


def image_collection_json(img: Image, public_url: str) -> dict[str, Any]:
    """The original ImageCollection record, field for field, plus the pipeline status."""
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

    @post("/", status_code=201)
    async def create(self, request: Request, db: Db) -> Response[dict[str, Any]]:
        state = request.app.state
        form = await request.form()
        raw_key = form.get("APIKey") if isinstance(form.get("APIKey"), str) else None
        principal = await authenticate(request, db, raw_key or key_from_headers(request), secret_only=True)
        if "Photo" not in form:
            raise ApiError(400, "the multipart field 'Photo' with the image is required")
        fields = form_fields(form, ImageFields, {"name": "name", "description": "description"})
        for form_name, kind in ORIGINAL_TAXON_FIELDS.items():
            value = form.get(form_name)
            if isinstance(value, str) and value.strip():
                taxon = await find_taxon(db, TAXONOMIES[kind], principal.shop_id, value)
                if taxon is None:
                    raise ApiError(400, f'{form_name}: invalid pk or name "{value}" - object does not exist')
                setattr(fields, f"{kind}_id", taxon.id)
        checked = await checked_upload(request, form.get("Photo"))
        img = await add_uploaded_image(db, state.media, principal.shop_id, checked, fields, requeue_at(state))
        await state.pipeline.images_added(principal.shop_id, [img.id])
        return Response(image_collection_json(img, state.settings.public_url), status_code=201)

    @get("/{image_id:int}")
    async def retrieve(self, request: Request, db: Db, image_id: PathId) -> dict[str, Any]:
        raw_key = request.query_params.get("APIKey") or request.headers.get("apikey") or key_from_headers(request)
        principal = await authenticate(request, db, raw_key, secret_only=False)
        img = await get_visible_image(db, principal, image_id)
        return image_collection_json(img, request.app.state.settings.public_url)
