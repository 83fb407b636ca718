"""Catalog ingest: a connector's events become product and image rows, and the pipeline hears what changed.

The rules: a product is keyed by (connection, platform id); its images by (product, platform image id). An
upsert diffs the images — new ones are added, removed ones deleted with their vectors, ones whose URL changed
are re-embedded, unchanged ones are left alone — so the same event twice changes nothing the second time. An
event older than what is stored (by the platform's ``updated_at``) is ignored; a deleted product leaves a
tombstone so a late, older update cannot bring it back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.connectors import (
    CatalogEvent,
    ConnectionDisabled,
    ConnectionErased,
    MAX_URL,
    ProductChanged,
    ProductDeleted,
    ProductUpserted,
)
from hub.domain.media import MediaStore
from hub.db.models import Connection, Image, Product, WebhookDelivery, utcnow
from hub.domain.pipeline import Pipeline
from hub.domain.taxonomy import taxon_names



@dataclass
class Changes:
    """What applying events did: image ids for the pipeline, and counts for reports."""

    added: list[int] = field(default_factory=list)  # new images, or images whose URL changed: embed them
    changed: list[int] = field(default_factory=list)  # same picture, new metadata: refresh filter fields
    removed: list[int] = field(default_factory=list)  # gone: drop their vectors
    removed_photos: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n


def _stem(word: str) -> str:
    word = word.strip().lower()
    if word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word.removesuffix("e")


def _parts(name: str) -> set[str]:
    """The words a taxon answers to: "Shirts & Blouses" → {"shirt", "blous", "shirts & blouses"}."""
    name = re.sub(r"\(.*?\)", "", name)
    pieces = {p for p in re.split(r"[&,/]| and ", name) if p.strip()}
    return {_stem(p) for p in pieces} | {_stem(name)}


class TaxonomyHints:
    """Maps a product type and tags onto the shop's categories, styles and age groups (by name, forgivingly)."""

    def __init__(self, tables: dict[str, list[tuple[int, str]]]) -> None:
        self._index = {kind: [(ident, _parts(name)) for ident, name in rows] for kind, rows in tables.items()}

    @classmethod
    async def load(cls, session: AsyncSession, shop_id: int) -> TaxonomyHints:
        return cls(await taxon_names(session, shop_id))

    def find(self, kind: str, words: Iterable[str | None]) -> int | None:
        for word in words:
            if not word:
                continue
            stem = _stem(word)
            for ident, parts in self._index[kind]:
                if stem in parts:
                    return ident
        return None

    def match(self, category_hint: str | None, tags: Iterable[str]) -> dict[str, int | None]:
        tags = list(tags)
        return {
            "category_id": self.find("category", [category_hint, *tags]),
            "style_id": self.find("style", tags),
            "age_group_id": self.find("age_group", tags),
        }


def _is_stale(product: Product, updated_at: datetime | None) -> bool:
    return updated_at is not None and product.remote_updated_at is not None and updated_at < product.remote_updated_at


def _assign(row: Any, values: dict[str, Any]) -> bool:
    """Set the attributes that differ; True if any did (so unchanged rows are not written at all)."""
    changed = False
    for key, value in values.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    return changed


class CatalogWriter:
    """Applies one connection's events inside the caller's transaction; the caller commits, then ``notify``."""

    def __init__(self, session: AsyncSession, connection: Connection, hints: TaxonomyHints,
                 next_attempt: datetime) -> None:
        self.session = session
        self.connection = connection
        self.hints = hints
        self.next_attempt = next_attempt

    @classmethod
    async def open(cls, session: AsyncSession, connection: Connection, next_attempt: datetime) -> CatalogWriter:
        return cls(session, connection, await TaxonomyHints.load(session, connection.shop_id), next_attempt)

    async def apply(self, events: Iterable[CatalogEvent], seen_job_id: int | None = None,
                    received_at: datetime | None = None) -> Changes:
        """``received_at``: when the platform told us (a delete without a time of its own is dated then)."""
        changes = Changes()
        for event in events:
            if isinstance(event, ProductUpserted):
                await self._upsert(event, changes, seen_job_id)
            elif isinstance(event, ProductDeleted):
                await self._delete(event, changes, received_at or utcnow())
            elif isinstance(event, ConnectionDisabled):
                self.connection.status = "disabled"
                self.connection.info = {**self.connection.info, "disabled_reason": event.reason}
                changes.count("connection_disabled")
            elif isinstance(event, ConnectionErased):
                await self.erase(changes)
            elif isinstance(event, ProductChanged):
                raise TypeError("ProductChanged must be resolved through the connector before it is applied")
        await self.session.flush()
        return changes

    async def _product(self, external_id: str) -> Product | None:
        return await self.session.scalar(
            select(Product).where(Product.connection_id == self.connection.id, Product.external_id == external_id)
        )

    async def _upsert(self, event: ProductUpserted, changes: Changes, seen_job_id: int | None) -> None:
        product = await self._product(event.external_id)
        if product is not None and _is_stale(product, event.updated_at):
            changes.count("stale")
            return
        created = product is None
        # (every read before the first write: from that write on, the transaction holds the process's turn to
        # write the SQLite file, and every statement it still runs keeps the others waiting)
        existing: dict[str | None, Image] = {} if product is None else {
            img.external_id: img for img in await self.session.scalars(select(Image).where(Image.product_id == product.id))}
        if product is None:
            product = Product(shop_id=self.connection.shop_id, source=self.connection.connector,
                              connection_id=self.connection.id, external_id=event.external_id)
            self.session.add(product)
        was_listed = (product.status, product.available, product.price)
        product_changed = _assign(product, {
            "title": event.title[:500],
            "description": event.description,
            # a link shoppers click: only http(s) (a platform's "javascript:…" is never a product page)
            "url": event.url[:MAX_URL] if event.url and event.url.lower().startswith(("http://", "https://")) else None,
            "price": Decimal(event.price) if event.price is not None else None,
            "currency": event.currency,
            "available": event.available,
            "status": event.status,
            "tags": list(event.tags),
            "category_hint": (event.category_hint or None) and event.category_hint[:200],
        })
        if event.updated_at is not None and (product.remote_updated_at is None
                                             or event.updated_at > product.remote_updated_at):
            product.remote_updated_at = event.updated_at
        if seen_job_id is not None:
            product.seen_job_id = seen_job_id
        if created:
            await self.session.flush()  # its id, for its images
        if created or product_changed:
            changes.count("products_created" if created else "products_updated")
        listing_changed = was_listed != (product.status, product.available, product.price)

        wanted = {
            "name": event.title[:500],
            "description": event.description,
            "product_url": product.url,
            **self.hints.match(event.category_hint, event.tags),
        }
        seen: set[str] = set()
        added: list[Image] = []
        for image in event.images:
            if image.external_id in seen:
                continue
            seen.add(image.external_id)
            img = existing.pop(image.external_id, None)
            if img is None:
                img = Image(shop_id=self.connection.shop_id, product_id=product.id, source=self.connection.connector,
                            connection_id=self.connection.id, external_id=image.external_id, image_url=image.url,
                            next_attempt_at=self.next_attempt, **wanted)
                self.session.add(img)
                added.append(img)
                changes.count("images_added")
            elif img.image_url != image.url:
                if img.photo:  # a photo kept from the old URL (fetched with credentials) is not this picture
                    changes.removed_photos.append(img.photo)
                _assign(img, wanted)
                _assign(img, {"image_url": image.url, "status": "pending", "processor_embedded": False,
                              "error": None, "attempts": 0, "next_attempt_at": self.next_attempt,
                              "content_hash": None, "photo": None})
                changes.removed.append(img.id)  # the old picture's vector goes now; the new one follows
                changes.added.append(img.id)
                changes.count("images_replaced")
            elif img.status == "failed":  # the platform names it again: its host may be back, try once more
                _assign(img, wanted)
                _assign(img, {"status": "pending", "error": None, "attempts": 0, "next_attempt_at": self.next_attempt})
                changes.added.append(img.id)
                changes.count("images_retried")
            elif _assign(img, wanted) or listing_changed:
                changes.changed.append(img.id)
                changes.count("images_updated")
        if added:
            await self.session.flush()  # their ids (one INSERT for them all, where the database returns ids)
            changes.added.extend(img.id for img in added)
        await self._remove_images(list(existing.values()), changes)

    async def _remove_images(self, images: list[Image], changes: Changes) -> None:
        for img in images:
            changes.removed.append(img.id)
            if img.photo:
                changes.removed_photos.append(img.photo)
            await self.session.delete(img)
        if images:
            changes.count("images_removed", len(images))

    async def _delete(self, event: ProductDeleted, changes: Changes, received_at: datetime) -> None:
        """A delete with the platform's time is ordered by it; one without (WooCommerce's ``{"id": n}``, a sync
        that no longer lists the product, a platform read that says it is gone) always applies, and its tombstone
        is dated when it was received, so an update that was made earlier but arrives later cannot revive it."""
        stamp = event.updated_at
        if stamp is None:
            stamp = received_at
        product = await self._product(event.external_id)
        if product is None:  # a tombstone: an older create arriving late must not resurrect it
            product = Product(shop_id=self.connection.shop_id, source=self.connection.connector,
                              connection_id=self.connection.id, external_id=event.external_id, status="deleted",
                              remote_updated_at=stamp)
            self.session.add(product)
            return
        if event.updated_at is not None and _is_stale(product, event.updated_at):
            changes.count("stale")
            return
        images = list(await self.session.scalars(select(Image).where(Image.product_id == product.id)))  # (reads first)
        if product.status != "deleted":
            changes.count("products_deleted")
        product.status = "deleted"
        if product.remote_updated_at is None or stamp > product.remote_updated_at:
            product.remote_updated_at = stamp
        await self._remove_images(images, changes)

    async def remove_unseen(self, job_id: int, since: datetime) -> Changes:
        """After a complete sync: products the platform no longer lists (a missed delete webhook) go."""
        changes = Changes()
        unseen = list(await self.session.scalars(select(Product).where(
            Product.connection_id == self.connection.id,
            Product.status != "deleted",
            (Product.seen_job_id.is_(None)) | (Product.seen_job_id != job_id),
            Product.updated_at < since,
        )))
        for product in unseen:
            await self._delete(ProductDeleted(external_id=product.external_id or ""), changes, utcnow())
        await self.session.flush()
        return changes

    async def erase(self, changes: Changes) -> None:
        """Everything stored for this connection goes: products, images, deliveries; credentials too."""
        images = list(await self.session.scalars(select(Image).where(Image.connection_id == self.connection.id)))
        await self._remove_images(images, changes)
        await self.session.execute(delete(Product).where(Product.connection_id == self.connection.id))
        await self.session.execute(delete(WebhookDelivery).where(WebhookDelivery.connection_id == self.connection.id))
        self.connection.status = "erased"
        self.connection.secrets = None
        self.connection.webhook_state = {}
        changes.count("connection_erased")


async def notify(pipeline: Pipeline | None, media: MediaStore, shop_id: int, changes: Changes) -> None:
    """After the commit: files and vectors of removed images go, new ones are queued, changed ones refreshed.

    Without a pipeline in this process, the running service's sweep does it: new images are due at once, and
    vectors without an image are removed as orphans.
    """
    # (removed, or replaced by another picture: their photos go, and their thumbnails are not theirs any more)
    await media.tidy(list(changes.removed_photos), shop_id, changes.removed)
    if pipeline is None:
        return
    if changes.removed:
        await pipeline.images_removed(shop_id, changes.removed)
    if changes.added:
        await pipeline.images_added(shop_id, changes.added)
    if changes.changed:
        await pipeline.images_changed(shop_id, changes.changed)

