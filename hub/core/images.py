"""Images: upload (multipart) or by URL, list with filters and cursors, get, patch, delete, and the file."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import anyio
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import UploadFile
from litestar.di import Provide
from litestar.params import FromQuery, JSONBody, QueryParameter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.auth import Caller, Principal, authenticate, require_any_key
from hub.core.deps import Db
from hub.core.errors import ApiError, not_found, validation_detail
from hub.core.media import CheckedImage, MediaStore, check_image
from hub.core.models import Image, Product, utcnow
from hub.core.pagination import decode_cursor, page
from hub.core.taxonomy import check_taxon_ids
from hub.core.validation import BodyId, PathId, QueryId

ImageStatus = Literal["pending", "embedding", "ready", "failed"]
TAXON_FIELDS = ("category_id", "style_id", "age_group_id")


def check_url(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    return value


class ImageFields(BaseModel):
    """What a shop can say about an image, at upload or later."""

    name: str = Field("", max_length=500)
    description: str = Field("", max_length=10_000)
    category_id: BodyId | None = None
    style_id: BodyId | None = None
    age_group_id: BodyId | None = None
    product_url: str | None = Field(None, max_length=2000)
    external_id: str | None = Field(None, max_length=100)

    _urls = field_validator("product_url")(check_url)


class ImageByUrl(ImageFields):
    image_url: str = Field(max_length=2000)

    _image_url = field_validator("image_url")(check_url)


class ImagePatch(BaseModel):
    name: str | None = Field(None, max_length=500)
    description: str | None = Field(None, max_length=10_000)
    category_id: BodyId | None = None
    style_id: BodyId | None = None
    age_group_id: BodyId | None = None
    product_url: str | None = Field(None, max_length=2000)

    _urls = field_validator("product_url")(check_url)


RETRY_BATCH = 5000  # failed images one retry call puts back (call again for the rest: "more")


class RetryFailed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connection_id: BodyId | None = Field(None, description="Only this connection's failed images")
    source: str | None = Field(None, max_length=50, description="Only failed images from this source")


async def retry_images(session: AsyncSession, image_ids: list[int], next_attempt: datetime) -> None:
    """Failed images back to ``pending`` with a fresh set of attempts (the caller queues them)."""
    for i in range(0, len(image_ids), 500):
        await session.execute(update(Image).where(Image.id.in_(image_ids[i:i + 500]), Image.status == "failed")
                              .values(status="pending", error=None, attempts=0, next_attempt_at=next_attempt))
    await session.commit()


def requeue_at(state: Any) -> datetime:
    """When the sweep should queue a new image again if its first task never ran (broker down, crash)."""
    return utcnow() + timedelta(seconds=state.settings.embed_lease_seconds)


def image_json(img: Image, public_url: str) -> dict[str, Any]:
    def taxon(t: Any) -> dict[str, Any] | None:
        return {"id": t.id, "name": t.name} if t is not None else None

    return {
        "id": img.id,
        "name": img.name,
        "description": img.description,
        "category": taxon(img.category),
        "style": taxon(img.style),
        "age_group": taxon(img.age_group),
        "category_id": img.category_id,
        "style_id": img.style_id,
        "age_group_id": img.age_group_id,
        "product_id": img.product_id,
        "source": img.source,
        "external_id": img.external_id,
        "image_url": img.image_url,
        "product_url": img.product_url,
        "file_url": f"{public_url}/api/v1/images/{img.id}/file" if img.photo else None,
        "status": img.status,
        "error": img.error,
        "embedded": img.processor_embedded,
        "attempts": img.attempts,
        "next_attempt_at": img.next_attempt_at if img.status == "pending" and img.attempts else None,  # a retry
        "content_hash": img.content_hash,
        "mime_type": img.mime_type,
        "width": img.width,
        "height": img.height,
        "size_bytes": img.size_bytes,
        "created_at": img.created_at,
        "updated_at": img.updated_at,
        "embedded_at": img.embedded_at,
    }


async def get_shop_image(session: AsyncSession, shop_id: int, image_id: PathId) -> Image:
    img = await session.scalar(select(Image).where(Image.id == image_id, Image.shop_id == shop_id))
    if img is None:
        raise not_found("image", image_id)
    return img


async def get_visible_image(session: AsyncSession, principal: Principal, image_id: int) -> Image:
    """The shop's image as this key may see it: a publishable key (public, in a browser) sees only what
    recommendations may show — ready images of listed products — and gets 404 for anything else."""
    img = await get_shop_image(session, principal.shop_id, image_id)
    if principal.kind == "secret":
        return img
    listed = img.product_id is None or await session.scalar(
        select(Product.status).where(Product.id == img.product_id)) in (None, "active")
    if img.status != "ready" or not listed:
        raise not_found("image", image_id)
    return img


async def add_uploaded_image(
    session: AsyncSession,
    media: MediaStore,
    shop_id: int,
    checked: CheckedImage,
    fields: ImageFields,
    next_attempt: datetime,
) -> Image:
    """Store a checked upload and its row (``pending``); 409 if the shop already has these exact bytes."""
    existing = await session.scalar(
        select(Image.id).where(Image.shop_id == shop_id, Image.content_hash == checked.content_hash)
    )
    if existing is not None:
        raise ApiError(409, f"this image was already uploaded as image {existing}", extra={"image_id": existing})
    taxa = await check_taxon_ids(session, shop_id, fields.model_dump(include=set(TAXON_FIELDS)))
    relative = await anyio.to_thread.run_sync(media.save, shop_id, checked)
    img = Image(
        **taxa,
        shop_id=shop_id,
        next_attempt_at=next_attempt,
        photo=relative,
        content_hash=checked.content_hash,
        mime_type=checked.mime_type,
        width=checked.width,
        height=checked.height,
        size_bytes=len(checked.data),
        **fields.model_dump(),
    )
    session.add(img)
    try:
        await session.commit()
    except BaseException:
        await session.rollback()
        await anyio.to_thread.run_sync(media.delete, relative)
        raise
    return img  # every attribute is loaded already (the session does not expire on commit)


async def add_url_image(session: AsyncSession, shop_id: int, data: ImageByUrl, next_attempt: datetime) -> Image:
    """Record an image to be fetched from its URL by the pipeline; 409 if the shop already has that URL."""
    existing = await session.scalar(
        select(Image.id).where(Image.shop_id == shop_id, Image.image_url == data.image_url)
    )
    if existing is not None:
        raise ApiError(409, f"this image URL was already added as image {existing}", extra={"image_id": existing})
    taxa = await check_taxon_ids(session, shop_id, data.model_dump(include=set(TAXON_FIELDS)))
    img = Image(shop_id=shop_id, next_attempt_at=next_attempt, **data.model_dump(), **taxa)
    session.add(img)
    await session.commit()
    return img


async def read_upload(upload: Any, max_bytes: int) -> bytes:
    if not isinstance(upload, UploadFile):
        raise ApiError(400, "the multipart field 'file' must be a file")
    data = await upload.read(max_bytes + 1)
    await upload.close()
    if len(data) > max_bytes:
        raise ApiError(413, f"file is larger than the limit of {max_bytes} bytes")
    return data


def form_fields(form: Any, model: type[BaseModel], names: dict[str, str]) -> Any:
    """Validate multipart text fields (``names`` maps form field -> model field) into ``model``; 400 if bad."""
    values = {}
    for form_name, field in names.items():
        value = form.get(form_name)
        if isinstance(value, str) and value.strip() != "":
            values[field] = value.strip()
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise ApiError(400, f"invalid form field: {validation_detail(exc)}") from None


async def checked_upload(request: Request, upload: Any) -> CheckedImage:
    settings = request.app.state.settings
    data = await read_upload(upload, settings.max_upload_bytes)
    return await anyio.to_thread.run_sync(
        lambda: check_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels)
    )


async def file_principal(request: Request, db: Db) -> Principal:
    """Header key, or a publishable key in ``?key=`` (a secret key never belongs in a URL)."""
    raw = request.query_params.get("key")
    if raw and not request.headers.get("authorization") and not request.headers.get("x-api-key"):
        if not raw.startswith("hub_pk_"):
            raise ApiError(401, "only a publishable key (hub_pk_…) may be passed as ?key=")
        return await authenticate(request, db, raw, secret_only=False)
    return await require_any_key(request, db)



class ImageController(Controller):
    """``/api/v1/images``: the shop's images (secret key; the file also takes a publishable key)."""

    path = "/api/v1/images"
    tags = ["images"]

    @post("/", status_code=202)
    async def create(self, request: Request, db: Db, principal: Caller) -> Response[dict[str, Any]]:
        """Add an image: multipart with a ``file`` field, or JSON with ``image_url``. Embedding is async."""
        state = request.app.state
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = await request.form()
            if "file" not in form:
                raise ApiError(400, "multipart upload needs a 'file' field with the image")
            fields = form_fields(form, ImageFields, {f: f for f in ImageFields.model_fields})
            checked = await checked_upload(request, form.get("file"))
            img = await add_uploaded_image(db, state.media, principal.shop_id, checked, fields, requeue_at(state))
        elif content_type.startswith("application/json"):
            try:
                body = ImageByUrl.model_validate_json(await request.body())
            except ValidationError as exc:
                raise ApiError(400, f"invalid request: {validation_detail(exc)}") from None
            img = await add_url_image(db, principal.shop_id, body, requeue_at(state))
        else:
            raise ApiError(415, "send multipart/form-data with a 'file', or application/json with 'image_url'")
        await state.pipeline.images_added(principal.shop_id, [img.id])
        return Response(
            image_json(img, state.settings.public_url),
            status_code=202,
            headers={"Location": f"/api/v1/images/{img.id}"},
        )

    @get("/")
    async def list_images(
        self,
        request: Request,
        db: Db,
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
    ) -> dict[str, Any]:
        """List images, newest first, ``limit`` per page; pass ``next_cursor`` back as ``cursor``."""
        stmt = select(Image).where(Image.shop_id == principal.shop_id)
        before = decode_cursor(cursor)
        if before is not None:
            stmt = stmt.where(Image.id < before)
        for column, value in (
            (Image.status, status),
            (Image.source, source),
            (Image.category_id, category_id),
            (Image.style_id, style_id),
            (Image.age_group_id, age_group_id),
            (Image.product_id, product_id),
            (Image.processor_embedded, embedded),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if q:
            stmt = stmt.where(Image.name.ilike(f"%{q}%") | Image.description.ilike(f"%{q}%"))
        rows = list(await db.scalars(stmt.order_by(Image.id.desc()).limit(limit + 1)))
        items, next_cursor = page(rows, limit)
        public_url = request.app.state.settings.public_url
        return {"items": [image_json(i, public_url) for i in items], "next_cursor": next_cursor}

    @get("/{image_id:int}")
    async def get_image(
        self, request: Request, db: Db, principal: Caller, image_id: PathId
    ) -> dict[str, Any]:
        img = await get_shop_image(db, principal.shop_id, image_id)
        return image_json(img, request.app.state.settings.public_url)

    @patch("/{image_id:int}")
    async def update(
        self, request: Request, db: Db, principal: Caller, image_id: PathId, data: JSONBody[ImagePatch]
    ) -> dict[str, Any]:
        img = await get_shop_image(db, principal.shop_id, image_id)
        changes = data.model_dump(include=data.model_fields_set)
        await check_taxon_ids(db, principal.shop_id, {k: v for k, v in changes.items() if k in TAXON_FIELDS})
        for field, value in changes.items():
            if field in {"name", "description"} and value is None:
                raise ApiError(400, f"{field} cannot be null")
            setattr(img, field, value)
        await db.commit()
        await db.refresh(img)
        await request.app.state.pipeline.images_changed(principal.shop_id, [img.id])
        return image_json(img, request.app.state.settings.public_url)

    @delete("/{image_id:int}", status_code=204)
    async def remove(self, request: Request, db: Db, principal: Caller, image_id: PathId) -> None:
        """Delete the image, its file and its vector."""
        state = request.app.state
        img = await get_shop_image(db, principal.shop_id, image_id)
        photo = img.photo
        await db.delete(img)
        await db.commit()
        await anyio.to_thread.run_sync(state.media.delete, photo)
        await state.pipeline.images_removed(principal.shop_id, [image_id])

    @post("/{image_id:int}/retry", status_code=202)
    async def retry(self, request: Request, db: Db, principal: Caller, image_id: PathId) -> Response[dict[str, Any]]:
        """Try a failed image again now (its host may be back): ``pending`` with a fresh set of attempts."""
        state = request.app.state
        img = await get_shop_image(db, principal.shop_id, image_id)
        if img.status != "failed":
            raise ApiError(409, f"image {image_id} is {img.status}; only failed images are retried")
        await retry_images(db, [img.id], requeue_at(state))
        await db.refresh(img)  # as the retry left it: a worker may claim it as soon as it is queued
        body = image_json(img, state.settings.public_url)
        await state.pipeline.images_added(principal.shop_id, [img.id])
        return Response(body, status_code=202)

    @post("/retry", status_code=202)
    async def retry_failed(self, request: Request, db: Db, principal: Caller,
                           data: JSONBody[RetryFailed]) -> Response[dict[str, Any]]:
        """Try the failed images of the shop again — or of one connection, or one source — up to 5,000 a call
        (``more`` says whether others are left)."""
        state = request.app.state
        stmt = select(Image.id).where(Image.shop_id == principal.shop_id, Image.status == "failed")
        if data.connection_id is not None:
            stmt = stmt.where(Image.connection_id == data.connection_id)
        if data.source is not None:
            stmt = stmt.where(Image.source == data.source)
        ids = list(await db.scalars(stmt.order_by(Image.id).limit(RETRY_BATCH + 1)))
        more = len(ids) > RETRY_BATCH
        ids = ids[:RETRY_BATCH]
        await retry_images(db, ids, requeue_at(state))
        if ids:
            await state.pipeline.images_added(principal.shop_id, ids)
        return Response({"retried": len(ids), "more": more, "image_ids": ids[:1000]}, status_code=202)

    @get(
        "/{image_id:int}/file",
        dependencies={"principal": Provide(file_principal)},
        media_type="application/octet-stream",
    )
    async def file(self, request: Request, db: Db, principal: Caller, image_id: PathId) -> Response[bytes]:
        """The uploaded file. Publishable keys may fetch it too (also as ``?key=hub_pk_…`` for ``<img>`` tags)."""
        img = await get_visible_image(db, principal, image_id)
        if not img.photo:
            raise ApiError(404, f"image {image_id} has no stored file; it lives at its image_url")
        etag = f'"{img.content_hash}"'
        if request.headers.get("if-none-match") == etag:
            return Response(b"", status_code=304, headers={"ETag": etag})
        try:
            data = await anyio.to_thread.run_sync(request.app.state.media.read, img.photo)
        except FileNotFoundError:
            raise ApiError(404, f"the file of image {image_id} is missing from the media folder") from None
        return Response(
            data,
            media_type=img.mime_type or "application/octet-stream",
            headers={"ETag": etag, "Cache-Control": "private, max-age=86400",
                     # served as exactly what Pillow decoded it as, never sniffed into something else
                     "X-Content-Type-Options": "nosniff",
                     "Content-Disposition": f'inline; filename="image-{img.id}.{(img.photo or "").rsplit(".", 1)[-1]}"'},
        )

