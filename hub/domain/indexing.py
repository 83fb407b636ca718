"""The image state machine: ``pending`` → ``embedding`` → ``ready``, or back to ``pending`` to retry, or ``failed``.

Nothing accepted is lost: every pending or claimed image carries ``next_attempt_at``, and the sweep re-queues
whatever is due — a worker that died mid-batch, a broker that was down at upload time, a retry after backoff.
"""

from __future__ import annotations

import asyncio
import io
import logging
from datetime import timedelta
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np
from PIL import Image as PILImage
from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.foreground import alongside
from hub.connectors import ConnectorError
from hub.errors import HubError, Unavailable
from hub.metrics import EMBEDDED
from hub.domain.media import DECODES, MediaStore, check_image
from hub.db.engine import affected
from hub.db.models import Image, Product, Shop, utcnow
from hub.search.batching import Batcher, Coalescer
from hub.domain.fetching import FetchError, fetch_image, make_client
from hub.search.encoder import Encoder, ModelUnavailable
from hub.search.store import NONE_ID, VectorStore
from hub.settings import Settings

log = logging.getLogger("hub.embedder")
SWEEP_BATCH = 2000
REACH_BATCH = 2000  # newly embedded images whose vectors one sweep checks for reachability
# older vectors re-checked per sweep, in id order: a sweep every 30 s walks 24,000 an hour. (It was 2,000, beside
# the new ones, and every start checked every ready image again: at 10,000 images that took a third of the API
# process's samples during a query bench, and never stopped — bench.query, 2026-12-01.)
REACH_WALK = 200
REACH_LOOKBACK = timedelta(hours=1)  # at start, images embedded this long before are checked as new
CLOCK_MARGIN = timedelta(seconds=60)  # for timestamps written by other hosts


class Fail(Exception):
    """This image can't be embedded (bad URL, not an image…): mark it failed with this reason."""


@dataclass
class Outcome:
    image_id: int
    status: str
    error: str | None = None


def image_metadata(img: Image, product: Product | None) -> dict[str, Any]:
    """What the vector store keeps beside each vector, for filters."""
    meta: dict[str, Any] = {
        "category_id": img.category_id if img.category_id is not None else NONE_ID,
        "style_id": img.style_id if img.style_id is not None else NONE_ID,
        "age_group_id": img.age_group_id if img.age_group_id is not None else NONE_ID,
        "product_id": img.product_id if img.product_id is not None else NONE_ID,
        "source": img.source,
        "available": True if product is None else bool(product.available and product.status == "active"),
        "listed": product is None or product.status == "active",  # drafts and archived products are never shown
    }
    if product is not None and product.price is not None:
        meta["price"] = float(product.price)
    return meta


async def metadata_for(session: AsyncSession, images: list[Image]) -> list[dict[str, Any]]:
    """The vector-store metadata of each image, with its product's price and availability."""
    product_ids = {img.product_id for img in images if img.product_id is not None}
    products = (
        {p.id: p for p in await session.scalars(select(Product).where(Product.id.in_(product_ids)))}
        if product_ids else {}
    )
    return [image_metadata(img, products.get(img.product_id or -1)) for img in images]


async def shops_with_images(session: AsyncSession) -> list[int]:
    """The shops that have ready images, in id order."""
    return list(await session.scalars(select(Image.shop_id).where(Image.status == "ready").distinct()
                                      .order_by(Image.shop_id)))


OUTCOME_LABELS = {"pending": "retry"}  # an Outcome's status -> the metric's outcome (the others keep their name)
CHECKED = "checked"  # the checked image, passed from the batch thread to the fetch that may keep it


class Embedder:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        encoder: Encoder,
        store: VectorStore,
        media: MediaStore,
        on_indexed: Callable[[int, int, str], None] | None = None,
        image_headers: Callable[[Image], Awaitable[dict[str, str]]] | None = None,
        companions: Callable[[], Awaitable[list[VectorStore]]] | None = None,
    ) -> None:
        self.settings = settings
        # every registered model's collections (hub.domain.vector_models): an image embedded again leaves the
        # others', so they never hold a vector of its old photo (a build, or the sweep once that model is active,
        # embeds it anew)
        self.companions = companions
        # the credentials a connection's connector asks for when its images are fetched (``ImageAuth``)
        self.image_headers = image_headers
        self.on_indexed = on_indexed
        self.sessions = sessions
        self.encoder = encoder
        self.store = store
        self.media = media
        self.batcher = Batcher(
            encoder, settings.embed_batch_size, settings.embed_batch_wait_ms, self._decode_and_preprocess,
            settings.embed_nice)
        self.writer = Coalescer(self._store_and_mark_ready)
        self._http = make_client(settings.fetch_timeout, settings.allow_private_fetch,
                                 max_bytes=settings.max_upload_bytes, deadline=settings.fetch_deadline,
                                 min_rate=settings.fetch_min_rate,
                                 max_connections=max(64, settings.fetch_per_shop * 4))
        # each shop fetches at most HUB_FETCH_PER_SHOP images at once: slow hosts of one shop cannot hold the
        # connections every other shop's images need
        self._fetch_slots: dict[int, asyncio.Semaphore] = {}
        self._reach_since = utcnow() - REACH_LOOKBACK  # (older vectors: the walk)
        self._reach_cursor = 0

    async def close(self) -> None:
        await self.batcher.stop()
        await self.writer.stop()
        await self._http.aclose()

    # -- CreateEmbedding ------------------------------------------------------------------------------------

    async def claim(self, image_ids: list[int]) -> list[Image]:
        """Take the images that are pending (or whose previous claim expired) for this worker."""
        now = utcnow()
        async with self.sessions() as session:
            claimable = and_(
                Image.id.in_(image_ids),
                or_(
                    Image.status == "pending",
                    and_(Image.status == "embedding", or_(Image.next_attempt_at.is_(None), Image.next_attempt_at <= now)),
                ),
            )
            claimed = await session.scalars(
                update(Image)
                .where(claimable)
                .values(status="embedding", attempts=Image.attempts + 1, next_attempt_at=now + self.settings.lease)
                .returning(Image),
                execution_options={"synchronize_session": False},
            )
            images = list(claimed)
            await session.commit()
            return images

    async def embed_images(self, image_ids: list[int]) -> list[Outcome]:
        images = await self.claim(image_ids)
        if not images:
            return []
        results = await asyncio.gather(*(alongside(self._vector_for(img)) for img in images),
                                       return_exceptions=True)
        ready: list[Any] = []
        outcomes: list[Outcome] = []
        for img, result in zip(images, results, strict=True):
            if isinstance(result, Fail):
                outcomes.append(await self._mark_failed(img, str(result)))
            elif isinstance(result, (ModelUnavailable, Unavailable)):  # a dependency is down: not counted
                outcomes.append(await self._mark_retry(img, str(result), counts=False))
            elif isinstance(result, FetchError):
                outcomes.append(await self._mark_retry(img, result.reason, counts=result.counts))
            elif isinstance(result, BaseException):
                log.error("unexpected embedding error", exc_info=result, extra={"image_id": img.id})
                outcomes.append(await self._mark_retry(img, f"internal error ({type(result).__name__})", counts=True))
            else:
                ready.append(self.writer.submit((img, *result)))
        outcomes += await asyncio.gather(*ready)
        for outcome in outcomes:
            EMBEDDED.labels(OUTCOME_LABELS.get(outcome.status, outcome.status)).inc()
        return outcomes

    async def _drop_kept(self, details: dict[str, Any]) -> None:
        """A photo kept for a result that was not recorded goes again (no orphan files)."""
        if details.get("photo"):
            await self.media.tidy([details["photo"]])

    async def _read_photo(self, img: Image) -> bytes | None:
        """The stored photo's bytes; None for a kept photo that is gone (it is fetched again from its URL)."""
        assert img.photo is not None
        try:
            data: bytes = await self.media.read(img.photo)
            return data
        except FileNotFoundError:
            if MediaStore.is_kept(img.photo) and img.image_url:
                return None
            raise Fail("the uploaded file is missing from the media store") from None

    async def _fetch(self, img: Image, headers: dict[str, str]) -> bytes:
        if not img.image_url:
            raise Fail("the image has neither a file nor an image_url")
        slots = self._fetch_slots.setdefault(img.shop_id, asyncio.Semaphore(self.settings.fetch_per_shop))
        try:
            async with slots:
                try:
                    with anyio.fail_after(self.settings.fetch_deadline):  # all of it: lookups, every redirect
                        return await fetch_image(
                            self._http,
                            img.image_url,
                            max_bytes=self.settings.max_upload_bytes,
                            allow_private=self.settings.allow_private_fetch,
                            max_redirects=self.settings.fetch_max_redirects,
                            headers=headers,
                        )
                except TimeoutError:
                    raise FetchError(f"timeout: the fetch took more than {self.settings.fetch_deadline:g} s in all "
                                     f"({img.image_url[:200]})", permanent=False) from None
        except FetchError as exc:
            if exc.permanent:
                raise Fail(exc.reason) from None
            raise

    def _decode_and_preprocess(self, item: tuple[bytes, bool]) -> tuple[np.ndarray, dict[str, Any]]:
        """Bytes → model pixels (runs in the batch thread). Fetched bytes are checked as uploads are."""
        data, trusted = item
        details: dict[str, Any] = {}
        if not trusted:
            try:
                checked = check_image(
                    data, max_bytes=self.settings.max_upload_bytes, max_pixels=self.settings.max_image_pixels
                )
            except HubError as exc:
                raise Fail(str(exc.detail)) from None
            details = {"content_hash": checked.content_hash, "mime_type": checked.mime_type,
                       "width": checked.width, "height": checked.height, "size_bytes": len(data),
                       CHECKED: checked}
        try:
            with DECODES.slot(), PILImage.open(io.BytesIO(data)) as pil:
                return self.encoder.preprocess(pil), details
        except (OSError, SyntaxError, ValueError) as exc:
            raise Fail(f"the image cannot be decoded ({exc})") from None

    async def _photo(self, img: Image) -> tuple[bytes, bool, dict[str, str]]:
        """The image's bytes, whether they are the stored photo (checked when accepted or kept) rather than a fetch,
        and the headers a fetch was made with."""
        stored = await self._read_photo(img) if img.photo else None
        if stored is not None:
            return stored, True, {}
        try:
            headers = await self.image_headers(img) if self.image_headers else {}
        except ConnectorError as exc:
            raise Fail(str(exc)) from None
        return await self._fetch(img, headers), False, headers

    async def vector_only(self, img: Image) -> np.ndarray:
        """The image's vector from its stored photo or its URL, with nothing recorded or kept (a model being
        built beside the active one: ``hub.domain.reindex``). ``Fail`` says why an image cannot have one."""
        data, stored, _ = await self._photo(img)
        vector, _ = await self.batcher.embed((data, stored))
        return vector

    async def _vector_for(self, img: Image) -> tuple[np.ndarray, dict[str, Any]]:
        data, stored_photo, headers = await self._photo(img)
        # a stored file was fully checked when it was accepted (or kept); a fetched one is checked now
        vector, details = await self.batcher.embed((data, stored_photo))
        checked = details.pop(CHECKED, None)
        if headers and checked is not None:  # fetched with credentials browsers lack: kept and served (file_url)
            details["photo"] = await self.media.keep(img.shop_id, img.id, checked)
        elif img.photo and not stored_photo:  # the kept photo was gone and this fetch keeps none
            details["photo"] = None
        return vector, details

    async def _store_and_mark_ready(self, ready: list[tuple[Image, np.ndarray, dict[str, Any]]]) -> list[Outcome]:
        """Upsert the vectors (one call per shop) and mark the images ready (one commit); an outcome per image."""
        async with self.sessions() as session:
            metadata = dict(zip((img.id for img, _, _ in ready), await metadata_for(session, [i for i, _, _ in ready]),
                                strict=True))
        by_shop: dict[int, list[tuple[Image, np.ndarray, dict[str, Any]]]] = {}
        for item in ready:
            by_shop.setdefault(item[0].shop_id, []).append(item)
        outcomes: dict[int, Outcome] = {}
        companions = [store for store in await self.companions() if store.model_key != self.store.model_key] \
            if self.companions is not None else []
        for shop_id, items in by_shop.items():
            try:
                for companion in companions:
                    await companion.delete(shop_id, [img.id for img, _, _ in items])
                await self.store.upsert(
                    shop_id,
                    [img.id for img, _, _ in items],
                    np.stack([v for _, v, _ in items]),
                    [metadata[img.id] for img, _, _ in items],
                )
            except Unavailable as exc:
                for img, _, details in items:
                    await self._drop_kept(details)
                    outcomes[img.id] = await self._mark_retry(img, str(exc), counts=False)
                continue
            now = utcnow()
            gone: list[int] = []
            unused: list[str | None] = []  # photos kept for results that were not recorded: removed after the commit
            async with self.sessions() as session:
                for img, _, details in items:
                    values = {"status": "ready", "processor_embedded": True, "embedded_at": now, "error": None,
                              "next_attempt_at": None, **details}
                    # still this claim of this picture: not deleted, re-claimed, or given another URL meanwhile
                    same_url = Image.image_url.is_(None) if img.image_url is None else Image.image_url == img.image_url
                    result = await session.execute(
                        update(Image).where(Image.id == img.id, Image.status == "embedding",
                                            Image.attempts == img.attempts, same_url).values(**values)
                    )
                    if affected(result) == 0:
                        unused.append(details.get("photo"))
                        gone.append(img.id)
                        outcomes[img.id] = Outcome(img.id, "gone")
                    else:
                        outcomes[img.id] = Outcome(img.id, "ready")
                await session.commit()
            await self.media.tidy(unused)
            if self.on_indexed is not None:
                for img, _, _ in items:
                    if outcomes[img.id].status == "ready":
                        self.on_indexed(shop_id, img.id, img.source)
            if gone:  # deleted (or re-claimed) while we worked: don't leave an orphan vector behind
                async with self.sessions() as session:
                    still = set(await session.scalars(select(Image.id).where(Image.id.in_(gone))))
                await self.store.delete(shop_id, [i for i in gone if i not in still])
        log.info("embedded", extra={"images": sum(o.status == "ready" for o in outcomes.values())})
        return [outcomes[img.id] for img, _, _ in ready]

    async def _mark_failed(self, img: Image, reason: str) -> Outcome:
        async with self.sessions() as session:
            await session.execute(
                update(Image)
                .where(Image.id == img.id, Image.status == "embedding")
                .values(status="failed", error=reason[:2000], next_attempt_at=None)
            )
            await session.commit()
        log.info("image failed", extra={"image_id": img.id, "reason": reason[:300]})
        return Outcome(img.id, "failed", reason)

    async def _mark_retry(self, img: Image, reason: str, *, counts: bool) -> Outcome:
        attempts = img.attempts  # as the claim left it: this attempt included
        if counts and attempts >= self.settings.retry_max_attempts:
            return await self._mark_failed(img, f"gave up after {attempts} attempts: {reason}")
        values: dict[str, Any] = {
            "status": "pending",
            "error": f"will retry: {reason}"[:2000],
            "next_attempt_at": utcnow() + self.settings.retry_delay(attempts),
        }
        if not counts:
            values["attempts"] = Image.attempts - 1
        async with self.sessions() as session:
            await session.execute(
                update(Image).where(Image.id == img.id, Image.status == "embedding").values(**values)
            )
            await session.commit()
        return Outcome(img.id, "pending", reason)

    # -- Reconcile ------------------------------------------------------------------------------------------

    async def due_images(self) -> list[int]:
        """Ids of images whose next attempt is due; their lease is renewed so they are queued once."""
        now = utcnow()
        async with self.sessions() as session:
            rows = list(
                (
                    await session.execute(
                        select(Image.id)
                        .where(
                            Image.status.in_(("pending", "embedding")),
                            or_(Image.next_attempt_at.is_(None), Image.next_attempt_at <= now),
                        )
                        .order_by(Image.id)
                        .limit(SWEEP_BATCH)
                    )
                ).all()
            )
            if rows:
                # an expired claim goes back to pending: its worker is gone (or too slow; then it loses it)
                await session.execute(
                    update(Image)
                    .where(Image.id.in_([r.id for r in rows]), Image.status.in_(("pending", "embedding")))
                    .values(status="pending", next_attempt_at=now + self.settings.lease)
                )
                await session.commit()
        return [r.id for r in rows]

    async def remove_orphan_vectors(self) -> int:
        """Delete vectors whose image no longer exists (or failed), and the whole collection of a shop that no
        longer exists (deleted while the vector store was down: ``remove_shop`` could not drop it); requeue ready
        images whose vector is gone (also those of a shop this model has no collection for: ``HUB_MODEL`` switched
        to a model built before the shop had images).

        The vector ids are listed first, then the images are read. A vector is an orphan if its image is gone (or
        failed) by then. A ready image missing from the list may have become ready in between (its vector was
        written before it was marked ready): those are looked up in the store once more, and only the ones still
        missing are lost."""
        removed = 0
        with_collections = set(await self.store.shops())
        async with self.sessions() as session:  # (a shop may have no collection for this model yet: a new model)
            with_images = set(await shops_with_images(session))
            listed, existing = sorted(with_collections), set[int]()
            for start in range(0, len(listed), 1000):  # (a statement takes at most 32,767 parameters)
                existing.update(await session.scalars(select(Shop.id).where(Shop.id.in_(listed[start:start + 1000]))))
        for shop_id in sorted(with_collections - existing):  # a shop deleted while the store was down: all of it
            removed += len(await self.store.ids(shop_id))
            await self.store.drop_shop(shop_id)
            log.info("a deleted shop's vectors dropped", extra={"shop_id": shop_id})
        for shop_id in sorted((with_collections & existing) | with_images):
            vector_ids = set(await self.store.ids(shop_id))
            async with self.sessions() as session:
                rows = dict((await session.execute(
                    select(Image.id, Image.status).where(Image.shop_id == shop_id))).all())
            orphans = [i for i in vector_ids if rows.get(i) in (None, "failed")]
            missing = [i for i, status in rows.items() if status == "ready" and i not in vector_ids]
            present_now = set(await self.store.vectors(shop_id, missing)) if missing else set()
            lost = [i for i in missing if i not in present_now]
            if lost:
                async with self.sessions() as session:
                    await session.execute(
                        update(Image)
                        .where(Image.id.in_(lost), Image.status == "ready")
                        .values(status="pending", processor_embedded=False, next_attempt_at=None,
                                error="vector missing from the vector store; re-embedding")
                    )
                    await session.commit()
            if orphans:
                await self.store.delete(shop_id, orphans)
                removed += len(orphans)
        return removed

    async def repair_unreachable(self, limit: int = REACH_BATCH, walk: int = REACH_WALK) -> dict[str, int]:
        """Find ready images whose vector the index cannot reach (queried with their own vector, the index does
        not return them) and insert those vectors again. Each sweep checks (up to ``limit`` of) the images embedded
        since the last check, and walks ``walk`` more of the rest in id order, so every vector is checked again in
        time."""
        now = utcnow()
        async with self.sessions() as session:
            recent = list((await session.execute(
                select(Image.shop_id, Image.id, Image.embedded_at)
                .where(Image.status == "ready", Image.embedded_at >= self._reach_since)
                .order_by(Image.embedded_at, Image.id).limit(limit))).all())
            walked = list((await session.execute(
                select(Image.shop_id, Image.id).where(Image.status == "ready", Image.id > self._reach_cursor)
                .order_by(Image.id).limit(walk))).all())
        # the next sweep goes on after these: from the last one seen if there were more, else from now on
        self._reach_since = (recent[-1][2] or now) if len(recent) == limit else now - CLOCK_MARGIN
        self._reach_cursor = walked[-1][1] if len(walked) == walk else 0
        by_shop: dict[int, set[int]] = {}
        for shop_id, ident in [(r[0], r[1]) for r in recent] + [(w[0], w[1]) for w in walked]:
            by_shop.setdefault(shop_id, set()).add(ident)
        checked = repaired = 0
        for shop_id, ids in by_shop.items():
            lost = await self.store.unreachable(shop_id, sorted(ids))
            checked += len(ids)
            if lost:
                await self.store.reinsert(shop_id, lost)
                still = await self.store.unreachable(shop_id, lost)
                repaired += len(lost) - len(still)
                log.warning("unreachable vectors inserted again", extra={
                    "shop_id": shop_id, "image_ids": lost[:50], "still_unreachable": still[:50]})
        return {"vectors_checked": checked, "vectors_reinserted": repaired}
