"""Images: added as uploads or by URL, listed with filters and cursors, changed, removed, retried; their files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypedDict

import anyio
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import Image, Product, utcnow
from hub.domain.fields import BodyId, optional_id
from hub.domain.keys import Principal
from hub.domain.media import CheckedImage, MediaStore, check_image
from hub.domain.pagination import decode_cursor, page
from hub.domain.services import Services
from hub.domain.taxonomy import check_taxon_ids
from hub.errors import Conflict, Invalid, NotFound, not_found
from hub.settings import Settings

ImageStatus = Literal["pending", "embedding", "ready", "failed"]
TAXON_FIELDS = ("category_id", "style_id", "age_group_id")


# what the API schema says, exactly: http(s), a host name or an IP address (IPv6 in brackets), no user info
URL_PATTERN = r"^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?([/?#]\S*)?$"


def check_url(value: str | None) -> str | None:
    """An absolute http(s) URL with a host name or address (``""`` is no URL); ValueError otherwise."""
    if value is None or value == "":
        return None
    if not re.fullmatch(URL_PATTERN, value):
        raise ValueError("must be an absolute http(s) URL (http://host/path)")
    return value


class ImageFields(BaseModel):
    """What a shop can say about an image, at upload or later."""

    name: str = Field("", max_length=500)
    description: str = Field("", max_length=10_000)
    category_id: BodyId | None = optional_id()
    style_id: BodyId | None = optional_id()
    age_group_id: BodyId | None = optional_id()
    product_url: str | None = Field(None, max_length=2000, json_schema_extra={"pattern": f"^$|{URL_PATTERN}"})
    external_id: str | None = Field(None, max_length=100)

    _urls = field_validator("product_url")(check_url)


class ImageByUrl(ImageFields):
    image_url: str = Field(max_length=2000, pattern=URL_PATTERN, json_schema_extra={"pattern": URL_PATTERN})

    _image_url = field_validator("image_url")(check_url)


class ImagePatch(BaseModel):
    name: str | None = Field(None, max_length=500)
    description: str | None = Field(None, max_length=10_000)
    category_id: BodyId | None = optional_id()
    style_id: BodyId | None = optional_id()
    age_group_id: BodyId | None = optional_id()
    product_url: str | None = Field(None, max_length=2000, json_schema_extra={"pattern": f"^$|{URL_PATTERN}"})

    _urls = field_validator("product_url")(check_url)


RETRY_BATCH = 5000  # failed images one retry call puts back (call again for the rest: "more")


class RetryFailed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connection_id: BodyId | None = optional_id("Only this connection's failed images")
    source: str | None = Field(None, max_length=50, description="Only failed images from this source")


async def retry_images(session: AsyncSession, image_ids: list[int], next_attempt: datetime) -> None:
    """Failed images back to ``pending`` with a fresh set of attempts (the caller queues them)."""
    for i in range(0, len(image_ids), 500):
        await session.execute(update(Image).where(Image.id.in_(image_ids[i:i + 500]), Image.status == "failed")
                              .values(status="pending", error=None, attempts=0, next_attempt_at=next_attempt))
    await session.commit()


def requeue_at(settings: Settings) -> datetime:
    """When the sweep should queue a new image again if its first task never ran (broker down, crash)."""
    return utcnow() + timedelta(seconds=settings.lease_seconds)


class TaxonRef(TypedDict):
    id: int
    name: str


class ImageOut(TypedDict):
    """An image: ``status`` pending → embedding → ready, or failed with ``error`` (retried until
    HUB_RETRY_MAX_ATTEMPTS; ``next_attempt_at`` is when a retry is due); ``file_url`` for an uploaded file,
    ``image_url`` for one fetched from the web."""

    id: int
    name: str
    description: str
    category: TaxonRef | None
    style: TaxonRef | None
    age_group: TaxonRef | None
    category_id: int | None
    style_id: int | None
    age_group_id: int | None
    product_id: int | None
    source: str
    external_id: str | None
    image_url: str | None
    product_url: str | None
    file_url: str | None
    status: str
    error: str | None
    embedded: bool
    attempts: int
    next_attempt_at: datetime | None
    content_hash: str | None
    mime_type: str | None
    width: int | None
    height: int | None
    size_bytes: int | None
    created_at: datetime
    updated_at: datetime | None
    embedded_at: datetime | None


class RankedImageOut(ImageOut):
    """An image in recommendations: ``score`` is its cosine similarity to the prompt (or image)."""

    score: float


def ranked_json(img: Image, score: float, public_url: str) -> RankedImageOut:
    return {**image_json(img, public_url), "score": score}


def image_json(img: Image, public_url: str) -> ImageOut:
    def taxon(t: Any) -> TaxonRef | None:
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


async def get_shop_image(session: AsyncSession, shop_id: int, image_id: int) -> Image:
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
        raise Conflict(f"this image was already uploaded as image {existing}", extra={"image_id": existing})
    taxa = await check_taxon_ids(session, shop_id, fields.model_dump(include=set(TAXON_FIELDS)))
    relative = await media.save(shop_id, checked)
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
        await media.delete(relative)
        raise
    return img  # every attribute is loaded already (the session does not expire on commit)


async def add_url_image(session: AsyncSession, shop_id: int, data: ImageByUrl, next_attempt: datetime) -> Image:
    """Record an image to be fetched from its URL by the pipeline; 409 if the shop already has that URL."""
    existing = await session.scalar(
        select(Image.id).where(Image.shop_id == shop_id, Image.image_url == data.image_url)
    )
    if existing is not None:
        raise Conflict(f"this image URL was already added as image {existing}", extra={"image_id": existing})
    taxa = await check_taxon_ids(session, shop_id, data.model_dump(include=set(TAXON_FIELDS)))
    img = Image(shop_id=shop_id, next_attempt_at=next_attempt, **data.model_dump(), **taxa)
    session.add(img)
    await session.commit()
    return img


async def add_upload(session: AsyncSession, services: Services, shop_id: int, data: bytes,
                     fields: ImageFields) -> Image:
    """An uploaded file, checked (format, size, pixels, a full decode), stored and queued for embedding."""
    settings = services.settings
    checked = await anyio.to_thread.run_sync(
        lambda: check_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels))
    img = await add_uploaded_image(session, services.media, shop_id, checked, fields, requeue_at(settings))
    await _queue(services, shop_id, [img.id])
    return img


async def add_by_url(session: AsyncSession, services: Services, shop_id: int, data: ImageByUrl) -> Image:
    """An image the pipeline fetches from its URL, recorded and queued."""
    img = await add_url_image(session, shop_id, data, requeue_at(services.settings))
    await _queue(services, shop_id, [img.id])
    return img


async def _queue(services: Services, shop_id: int, ids: list[int]) -> None:
    if services.pipeline is not None and ids:
        await services.pipeline.images_added(shop_id, ids)


@dataclass(frozen=True)
class ImageFilters:
    status: str | None = None
    source: str | None = None
    category_id: int | None = None
    style_id: int | None = None
    age_group_id: int | None = None
    product_id: int | None = None
    embedded: bool | None = None
    q: str | None = None  # in the name or the description
    connection_id: int | None = None


async def list_images(session: AsyncSession, shop_id: int, limit: int, cursor: str | None,
                      filters: ImageFilters) -> tuple[list[Image], str | None]:
    """A page of the shop's images, newest first, and the cursor of the next page."""
    stmt = select(Image).where(Image.shop_id == shop_id)
    before = decode_cursor(cursor)
    if before is not None:
        stmt = stmt.where(Image.id < before)
    for column, value in (
        (Image.status, filters.status),
        (Image.source, filters.source),
        (Image.category_id, filters.category_id),
        (Image.style_id, filters.style_id),
        (Image.age_group_id, filters.age_group_id),
        (Image.product_id, filters.product_id),
        (Image.processor_embedded, filters.embedded),
        (Image.connection_id, filters.connection_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if filters.q:
        stmt = stmt.where(Image.name.ilike(f"%{filters.q}%") | Image.description.ilike(f"%{filters.q}%"))
    rows = list(await session.scalars(stmt.order_by(Image.id.desc()).limit(limit + 1)))
    return page(rows, limit)


async def update_image(session: AsyncSession, services: Services, shop_id: int, image_id: int,
                       data: ImagePatch) -> Image:
    """Change what the shop says about an image (the fields sent); its vector's filter fields follow."""
    img = await get_shop_image(session, shop_id, image_id)
    changes = data.model_dump(include=data.model_fields_set)
    await check_taxon_ids(session, shop_id, {k: v for k, v in changes.items() if k in TAXON_FIELDS})
    for field, value in changes.items():
        if field in {"name", "description"} and value is None:
            raise Invalid(f"{field} cannot be null")
        setattr(img, field, value)
    await session.commit()
    await session.refresh(img)
    if services.pipeline is not None:
        await services.pipeline.images_changed(shop_id, [img.id])
    return img


async def remove_image(session: AsyncSession, services: Services, shop_id: int, image_id: int) -> None:
    """Delete the image, its file and its vector."""
    img = await get_shop_image(session, shop_id, image_id)
    photo = img.photo
    await session.delete(img)
    await session.commit()
    await services.media.tidy([photo], shop_id, [image_id])
    if services.pipeline is not None:
        await services.pipeline.images_removed(shop_id, [image_id])


async def retry_image(session: AsyncSession, services: Services, shop_id: int, image_id: int) -> ImageOut:
    """Try a failed image again now (its host may be back): ``pending`` with a fresh set of attempts. The
    answer is the image as the retry left it (a worker may claim it as soon as it is queued)."""
    img = await get_shop_image(session, shop_id, image_id)
    if img.status != "failed":
        raise Conflict(f"image {image_id} is {img.status}; only failed images are retried")
    await retry_images(session, [img.id], requeue_at(services.settings))
    await session.refresh(img)
    body = image_json(img, services.settings.public_url)
    await _queue(services, shop_id, [img.id])
    return body


async def retry_failed_images(session: AsyncSession, services: Services, shop_id: int,
                              data: RetryFailed) -> tuple[list[int], bool]:
    """The failed images of the shop — or of one connection, or one source — back to ``pending``, up to
    RETRY_BATCH a call: (their ids, whether others are left)."""
    stmt = select(Image.id).where(Image.shop_id == shop_id, Image.status == "failed")
    if data.connection_id is not None:
        stmt = stmt.where(Image.connection_id == data.connection_id)
    if data.source is not None:
        stmt = stmt.where(Image.source == data.source)
    ids = list(await session.scalars(stmt.order_by(Image.id).limit(RETRY_BATCH + 1)))
    more = len(ids) > RETRY_BATCH
    ids = ids[:RETRY_BATCH]
    await retry_images(session, ids, requeue_at(services.settings))
    await _queue(services, shop_id, ids)
    return ids, more


@dataclass(frozen=True)
class ImageFile:
    data: bytes
    mime_type: str
    etag: str
    filename: str


async def image_file(session: AsyncSession, media: MediaStore, principal: Principal, image_id: int,
                     if_none_match: str | None = None) -> ImageFile | None:
    """An uploaded image's file as this key may see it; None when ``if_none_match`` is its current ETag."""
    img = await get_visible_image(session, principal, image_id)
    if not img.photo:
        raise NotFound(f"image {image_id} has no stored file; it lives at its image_url")
    etag = f'"{img.content_hash}"'
    if if_none_match == etag:
        return None
    try:
        data = await media.read(img.photo)
    except FileNotFoundError:
        raise NotFound(f"the file of image {image_id} is missing from the media store") from None
    return ImageFile(data, img.mime_type or "application/octet-stream", etag,
                     f"image-{img.id}.{img.photo.rsplit('.', 1)[-1]}")


async def image_sources(session: AsyncSession, shop_id: int) -> list[str]:
    """Where the shop's images came from (``manual``, ``import``, a connector's name), for filters."""
    return sorted(await session.scalars(select(Image.source).where(Image.shop_id == shop_id).distinct()))
