"""``/api/v1/images``: the shop's images (secret key; the file also takes a publishable key)."""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any, TypedDict

from litestar import Request, Response, delete, get, patch, post
from litestar.datastructures import UploadFile
from litestar.di import Provide
from litestar.params import FromQuery, JSONBody, QueryParameter
from pydantic import BaseModel, ValidationError

from hub.domain.images import (
    ImageByUrl,
    ImageFields,
    ImageFilters,
    ImageOut,
    ImagePatch,
    ImageStatus,
    RetryFailed,
    add_by_url,
    add_upload,
    get_shop_image,
    image_file,
    image_json,
    list_images,
    remove_image,
    retry_failed_images,
    retry_image,
    update_image,
)
from hub.domain.keys import Principal
from hub.errors import Invalid, TooLarge, Unauthenticated, UnsupportedMedia, validation_detail
from hub.http.auth import Caller, SecretKeyController, authenticate, require_any_key
from hub.http.deps import Db, Svc
from hub.http.openapi import model_schema, problems, request_body
from hub.http.validation import PathId, QueryId


class ImagePage(TypedDict):
    items: list[ImageOut]
    next_cursor: str | None


class RetryOut(TypedDict):
    """How many failed images went back to ``pending`` (``image_ids``: the first 1,000), and whether others
    are left for another call."""

    retried: int
    more: bool
    image_ids: list[int]


async def read_upload(upload: Any, max_bytes: int) -> bytes:
    if not isinstance(upload, UploadFile):
        raise Invalid("the multipart field 'file' must be a file")
    data = await upload.read(max_bytes + 1)
    await upload.close()
    if len(data) > max_bytes:
        raise TooLarge(f"file is larger than the limit of {max_bytes} bytes")
    return data


@functools.cache
def integer_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields of ``model`` whose JSON schema admits an integer (computed once per model)."""
    properties = model.model_json_schema()["properties"]
    return frozenset(name for name, schema in properties.items() if "integer" in json.dumps(schema))


def form_fields(form: Any, model: type[BaseModel], names: dict[str, str]) -> Any:
    """Validate multipart text fields (``names`` maps form field -> model field) into ``model``; 400 if bad."""
    numeric_fields = integer_fields(model)
    values: dict[str, Any] = {}
    for form_name, field in names.items():
        value = form.get(form_name)
        if isinstance(value, str) and value.strip() != "":
            text = value.strip()
            # a form's values are all text: a number field takes its digits as the number they write
            numeric = field in numeric_fields
            values[field] = int(text) if numeric and text.isascii() and text.isdigit() and len(text) < 12 else text
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise Invalid(f"invalid form field: {validation_detail(exc)}") from None


async def file_principal(request: Request, db: Db) -> Principal:
    """Header key, or a publishable key in ``?key=`` (a secret key never belongs in a URL)."""
    raw = request.query_params.get("key")
    if raw and not request.headers.get("authorization") and not request.headers.get("x-api-key"):
        if not raw.startswith("hub_pk_"):
            raise Unauthenticated("only a publishable key (hub_pk_…) may be passed as ?key=")
        return await authenticate(request, db, raw, secret_only=False)
    return await require_any_key(request, db)


class ImageController(SecretKeyController):
    path = "/api/v1/images"
    tags = ["images"]

    @post("/", status_code=202, responses=problems(409, 413, 415, 422), operation_class=request_body({
        "multipart/form-data": model_schema(ImageFields, files=("file",), title="ImageUpload")}))
    async def create(self, request: Request, db: Db, services: Svc, principal: Caller) -> Response[ImageOut]:
        """Upload an image: multipart with the file in ``file``; embedding is asynchronous (``pending`` →
        ``ready``). (JSON with ``image_url`` is taken here too, as ``POST /api/v1/images/from-url`` takes it.)"""
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = await request.form()
            if "file" not in form:
                raise Invalid("multipart upload needs a 'file' field with the image")
            fields = form_fields(form, ImageFields, {f: f for f in ImageFields.model_fields})
            data = await read_upload(form.get("file"), services.settings.max_upload_bytes)
            img = await add_upload(db, services, principal.shop_id, data, fields)
        elif content_type.startswith("application/json"):
            try:
                body = ImageByUrl.model_validate_json(await request.body())
            except ValidationError as exc:
                raise Invalid(f"invalid request: {validation_detail(exc)}") from None
            img = await add_by_url(db, services, principal.shop_id, body)
        else:
            raise UnsupportedMedia("send multipart/form-data with a 'file', or application/json with 'image_url'")
        return Response(image_json(img, services.settings.public_url), status_code=202,
                        headers={"Location": f"/api/v1/images/{img.id}"})

    @post("/from-url", status_code=202, responses=problems(409, 422))
    async def create_from_url(self, db: Db, services: Svc, principal: Caller,
                              data: JSONBody[ImageByUrl]) -> Response[ImageOut]:
        """Add an image the hub fetches from ``image_url`` (public http(s) only); embedding is asynchronous."""
        img = await add_by_url(db, services, principal.shop_id, data)
        return Response(image_json(img, services.settings.public_url), status_code=202,
                        headers={"Location": f"/api/v1/images/{img.id}"})

    @get("/")
    async def list_images(
        self,
        db: Db,
        services: Svc,
        principal: Caller,
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
        cursor: FromQuery[str | None] = None,
        status: FromQuery[ImageStatus | None] = None,
        source: FromQuery[str | None] = None,
        category_id: QueryId = None,
        style_id: QueryId = None,
        age_group_id: QueryId = None,
        product_id: QueryId = None,
        embedded: FromQuery[bool | None] = None,
        q: Annotated[str | None, QueryParameter(max_length=200)] = None,
        connection_id: QueryId = None,
    ) -> ImagePage:
        """List images, newest first, ``limit`` per page; pass ``next_cursor`` back as ``cursor``."""
        filters = ImageFilters(status=status, source=source, category_id=category_id, style_id=style_id,
                               age_group_id=age_group_id, product_id=product_id, embedded=embedded, q=q,
                               connection_id=connection_id)
        items, next_cursor = await list_images(db, principal.shop_id, limit, cursor, filters)
        public_url = services.settings.public_url
        return {"items": [image_json(i, public_url) for i in items], "next_cursor": next_cursor}

    @get("/{image_id:int}")
    async def get_image(self, db: Db, services: Svc, principal: Caller, image_id: PathId) -> ImageOut:
        img = await get_shop_image(db, principal.shop_id, image_id)
        return image_json(img, services.settings.public_url)

    @patch("/{image_id:int}", responses=problems(422))
    async def update(self, db: Db, services: Svc, principal: Caller, image_id: PathId,
                     data: JSONBody[ImagePatch]) -> ImageOut:
        """Change what the shop says about an image (only the fields sent)."""
        img = await update_image(db, services, principal.shop_id, image_id, data)
        return image_json(img, services.settings.public_url)

    @delete("/{image_id:int}", status_code=204)
    async def remove(self, db: Db, services: Svc, principal: Caller, image_id: PathId) -> None:
        """Delete the image, its file and its vector."""
        await remove_image(db, services, principal.shop_id, image_id)

    @post("/{image_id:int}/retry", status_code=202, responses=problems(409))
    async def retry(self, db: Db, services: Svc, principal: Caller, image_id: PathId) -> ImageOut:
        """Try a failed image again now (its host may be back): ``pending`` with a fresh set of attempts."""
        return await retry_image(db, services, principal.shop_id, image_id)

    @post("/retry", status_code=202)
    async def retry_failed(self, db: Db, services: Svc, principal: Caller,
                           data: JSONBody[RetryFailed]) -> RetryOut:
        """Try the failed images of the shop again — or of one connection, or one source — up to 5,000 a call
        (``more`` says whether others are left)."""
        ids, more = await retry_failed_images(db, services, principal.shop_id, data)
        return {"retried": len(ids), "more": more, "image_ids": ids[:1000]}

    @get("/{image_id:int}/file", dependencies={"principal": Provide(file_principal)}, media_type="image/*")
    async def file(self, request: Request, db: Db, services: Svc, principal: Caller, image_id: PathId) -> Response[bytes]:
        """The uploaded file. Publishable keys may fetch it too (also as ``?key=hub_pk_…`` for ``<img>`` tags)."""
        found = await image_file(db, services.media, principal, image_id,
                                 request.headers.get("if-none-match"))
        if found is None:
            return Response(b"", status_code=304, headers={"ETag": request.headers.get("if-none-match", "")})
        return Response(
            found.data,
            media_type=found.mime_type,
            headers={"ETag": found.etag, "Cache-Control": "private, max-age=86400",
                     # served as exactly what Pillow decoded it as, never sniffed into something else
                     "X-Content-Type-Options": "nosniff",
                     "Content-Disposition": f'inline; filename="{found.filename}"'},
        )
