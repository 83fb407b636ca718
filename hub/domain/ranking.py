"""Ranking: a prompt (or an image's own vector) against a shop's images, keeping only ready images of listed
products, and never silently fewer than the shop has.

An HNSW index is approximate, and Chroma's can lose a node's every incoming link when a batch is inserted in
parallel into a small built graph (the hnswlib limitation: "the graph sometimes loses some of the elements"):
the vector is stored, the image is ``ready``, and no query returns it. So:

- when the images matching a query number at most ``HUB_EXACT_MAX_VECTORS``, they are ranked exactly — cosine
  against each one's vector, the candidates and filters decided by the database, the vectors cached per image
  and re-read when the image was embedded again (``embedded_at``);
- above that the index answers, and when it returns fewer than ``min(limit, matching)`` the query is ranked
  exactly after all, and the shortfall is logged and counted;
- the sweep finds vectors the index cannot reach and inserts them again (``Embedder.repair_unreachable``).
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import Select, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.errors import Unavailable
from hub.db.models import Image, Product
from hub.domain.recent import Recent
from hub.search.batching import PromptBatcher
from hub.search.encoder import ModelUnavailable
from hub.search.store import VectorStore

log = logging.getLogger("hub.search")
SelectT = TypeVar("SelectT", bound="Select[*tuple[Any, ...]]")
BEST_SCORE_EACH = 1000  # the index's nearest to each positive that best_score scores, at most
OVERFETCH = 10  # vectors of images deleted a moment ago may still be in the store
FILTERED_OVERFETCH = 10  # with filters: neighbours asked for per one wanted, before Chroma is made to filter


@dataclass
class Ranking:
    results: list[tuple[Image, float]]
    timings_ms: dict[str, float] = field(default_factory=dict)


async def encode_prompt(prompts: PromptBatcher, prompt: str) -> np.ndarray:
    try:
        return await prompts.encode(prompt)
    except ModelUnavailable as exc:
        raise Unavailable("model", str(exc)) from None


def matching(stmt: SelectT, shop_id: int, filters: dict[str, Any], exclude: Collection[int] = ()) -> SelectT:
    """The shop's ready images of listed products that match every filter: the same rules as the vector
    store's metadata (``hub.search.store.where_clause`` with ``listed``), decided by the database."""
    values = _compared(shop_id, filters, exclude)
    return _narrowed(stmt, values, filters.get("available"), lambda name: values[name])


def _compared(shop_id: int, filters: dict[str, Any], exclude: Collection[int]) -> dict[str, Any]:
    """What ``matching`` compares the rows with, by name: the shop, each filter that is set (but ``available``,
    which decides the statement's shape), the images left out."""
    values: dict[str, Any] = {"shop_id": shop_id}
    for name in ("category_id", "style_id", "age_group_id", "product_id"):
        if filters.get(name) is not None:
            values[name] = int(filters[name])
    if filters.get("source") is not None:
        values["source"] = str(filters["source"])
    for name in ("price_min", "price_max"):
        if filters.get(name) is not None:
            values[name] = filters[name]
    if exclude:
        values["exclude"] = list(exclude)
    return values


def _narrowed(stmt: SelectT, values: dict[str, Any], available: Any, value: Callable[[str], Any]) -> SelectT:
    """``matching``'s conditions on ``stmt``; ``value(name)`` is what each is compared with (the value itself,
    or a parameter that stands for it)."""
    stmt = stmt.outerjoin(Product, Product.id == Image.product_id).where(
        Image.shop_id == value("shop_id"), Image.status == "ready",
        or_(Product.id.is_(None), Product.status == "active"))
    for name in ("category_id", "style_id", "age_group_id", "product_id"):
        if name in values:
            stmt = stmt.where(getattr(Image, name) == value(name))
    if "source" in values:
        stmt = stmt.where(Image.source == value("source"))
    if available is True:
        stmt = stmt.where(or_(Product.id.is_(None), Product.available.is_(True)))
    elif available is False:
        stmt = stmt.where(Product.available.is_(False))
    if "price_min" in values:
        stmt = stmt.where(Product.price >= value("price_min"))
    if "price_max" in values:
        stmt = stmt.where(Product.price <= value("price_max"))
    if "exclude" in values:
        stmt = stmt.where(Image.id.not_in(value("exclude")))
    return stmt


_ROWS_STATEMENTS: dict[tuple[Any, ...], Select[Image]] = {}  # by the shape of the filters (at most 768)


def _rows_statement(shop_id: int, filters: dict[str, Any], exclude: Collection[int]
                    ) -> tuple[Select[Image], dict[str, Any]]:
    """``matching``'s images among the ids given as ``ids``: one statement per shape of the filters, built once,
    with parameters for every value (a statement built anew for each query cost ≈ 0.2 ms of the event loop's
    time, and its cache key more), and the values of this query."""
    values = _compared(shop_id, filters, exclude)
    given = filters.get("available")
    available = given if given is True or given is False else None  # (what ``_narrowed`` tells apart)
    stmt = _ROWS_STATEMENTS.get(shape := (*values, available))
    if stmt is None:
        def parameter(name: str) -> Any:  # (no value: it takes its column's type, not the first value's)
            return bindparam(name, expanding=name == "exclude")

        stmt = _narrowed(select(Image), values, available, parameter).where(
            Image.id.in_(bindparam("ids", expanding=True)))
        _ROWS_STATEMENTS[shape] = stmt
    return stmt, values


class VectorCache:
    """Vectors of recently ranked shops, least recently used first out, within ``max_bytes``. An entry holds
    while its image's ``embedded_at`` is the one it was read for."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._shops: OrderedDict[int, dict[int, tuple[datetime | None, np.ndarray]]] = OrderedDict()

    def lookup(self, shop_id: int, wanted: list[tuple[int, datetime | None]]) -> tuple[dict[int, np.ndarray], list[int]]:
        entries = self._shops.get(shop_id, {})
        if entries:
            self._shops.move_to_end(shop_id)
        have: dict[int, np.ndarray] = {}
        missing: list[int] = []
        for ident, embedded_at in wanted:
            entry = entries.get(ident)
            if entry is not None and entry[0] == embedded_at:
                have[ident] = entry[1]
            else:
                missing.append(ident)
        return have, missing

    def store(self, shop_id: int, found: dict[int, tuple[datetime | None, np.ndarray]]) -> None:
        entries = self._shops.setdefault(shop_id, {})
        self._shops.move_to_end(shop_id)
        for ident, entry in found.items():
            old = entries.get(ident)
            self.bytes += entry[1].nbytes - (old[1].nbytes if old is not None else 0)
            entries[ident] = entry
        while self.bytes > self.max_bytes and len(self._shops) > 1:
            _, evicted = self._shops.popitem(last=False)
            self.bytes -= sum(v.nbytes for _, v in evicted.values())


class Ranker:
    """Ranks against a shop's images: exactly when they are few enough, through the index otherwise."""

    def __init__(self, store: VectorStore, prompts: PromptBatcher, exact_max: int, cache_bytes: int,
                 size_seconds: float = 0.0) -> None:
        self.store = store
        self.prompts = prompts
        self.exact_max = exact_max
        self.cache = VectorCache(cache_bytes)
        self.shortfalls = 0  # queries the index answered with fewer results than the shop has
        # whether more than exact_max images matched a shop (and filters) lately: (shop, filters, exclude) -> large
        self._large: Recent[tuple[int, str, tuple[int, ...]], bool] = Recent(size_seconds, ())

    async def rank_prompt(self, session: AsyncSession, shop_id: int, prompt: str, limit: int,
                          filters: dict[str, Any]) -> Ranking:
        t0 = time.perf_counter()
        vector = await encode_prompt(self.prompts, prompt)
        t1 = time.perf_counter()
        results = await self.rank_vector(session, shop_id, vector, limit, filters)
        t2 = time.perf_counter()
        return Ranking(results, {"encode": round((t1 - t0) * 1000, 2), "search": round((t2 - t1) * 1000, 2)})

    async def rank_vector(self, session: AsyncSession, shop_id: int, vector: np.ndarray, limit: int,
                          filters: dict[str, Any], exclude: Collection[int] = ()) -> list[tuple[Image, float]]:
        """The ``limit`` nearest ready images of listed products that match ``filters``, best first."""
        candidates = await self._exact_candidates(session, shop_id, filters, exclude)
        if candidates is not None:
            return await self._exact(session, shop_id, cosine_to(vector), limit, candidates)
        results = await self._indexed(session, shop_id, vector, limit, filters, exclude)
        if len(results) < limit:
            count = await session.scalar(matching(select(func.count(Image.id)), shop_id, filters, exclude)) or 0
            if len(results) < min(limit, count):
                self.shortfalls += 1
                log.warning("vector index returned too few results; ranking exactly",
                            extra={"shop_id": shop_id, "returned": len(results), "expected": min(limit, count)})
                everything = list((await session.execute(
                    matching(select(Image.id, Image.embedded_at), shop_id, filters, exclude))).all())
                return await self._exact(session, shop_id, cosine_to(vector), limit, everything)
        return results

    async def rank_examples(self, session: AsyncSession, shop_id: int, positives: list[np.ndarray],
                            negatives: list[np.ndarray], strategy: str, limit: int, filters: dict[str, Any],
                            exclude: Collection[int] = ()) -> list[tuple[Image, float]]:
        """Images like the positive vectors and unlike the negative ones (``hub.domain.examples``)."""
        if strategy == "average_vector":
            return await self.rank_vector(session, shop_id, average_vector(positives, negatives), limit, filters,
                                          exclude)
        scorer = best_score(positives, negatives)
        candidates = await self._exact_candidates(session, shop_id, filters, exclude)
        if candidates is None:  # the index's nearest to each positive, scored exactly
            near: set[int] = set()
            each = min(max(limit * 2, 100), BEST_SCORE_EACH)
            for vector in positives:
                near.update(img.id for img, _ in await self._indexed(session, shop_id, vector, each, filters, exclude))
            ids = sorted(near)
            candidates = []
            for start in range(0, len(ids), 1000):  # (a query takes at most 32,767 parameters on PostgreSQL)
                candidates += list((await session.execute(select(Image.id, Image.embedded_at).where(
                    Image.id.in_(ids[start:start + 1000])))).all())
        return await self._exact(session, shop_id, scorer, limit, candidates)

    async def _exact_candidates(self, session: AsyncSession, shop_id: int, filters: dict[str, Any],
                                exclude: Collection[int]) -> list[Any] | None:
        """The images to rank exactly, or None when more than ``exact_max`` match (the index answers). What the
        last query of the same shop and filters found is remembered for ``size_seconds``: a large shop then costs
        no statement at all, a small one a single statement (its candidates, at most ``exact_max + 1`` of them)."""
        if self.exact_max <= 0:
            return None
        key = (shop_id, json.dumps(filters, sort_keys=True, default=str), tuple(sorted(exclude)))
        large = self._large.get(key)
        if large is None:
            generation = self._large.generation
            large = not await self._few(session, shop_id, filters, exclude)
            self._large.put(key, large, generation)
            return None if large else await self._candidates(session, shop_id, filters, exclude)
        if large:
            return None
        candidates = await self._candidates(session, shop_id, filters, exclude, self.exact_max + 1)
        if len(candidates) > self.exact_max:  # grown past it since
            self._large.put(key, True, self._large.generation)
            return None
        return candidates

    async def _few(self, session: AsyncSession, shop_id: int, filters: dict[str, Any],
                   exclude: Collection[int]) -> bool:
        """Whether at most ``exact_max`` images match: counted by the database, at most ``exact_max + 1`` of them
        (a large shop's candidates are never brought over to be counted: at 10,000 images that cost 5,001 rows
        decoded per query, ≈ 20 ms of the event loop's time)."""
        if self.exact_max <= 0:
            return False
        bounded = matching(select(Image.id), shop_id, filters, exclude).limit(self.exact_max + 1).subquery()
        return int(await session.scalar(select(func.count()).select_from(bounded)) or 0) <= self.exact_max

    @staticmethod
    async def _candidates(session: AsyncSession, shop_id: int, filters: dict[str, Any],
                          exclude: Collection[int], at_most: int | None = None) -> list[Any]:
        return list((await session.execute(
            matching(select(Image.id, Image.embedded_at), shop_id, filters, exclude).order_by(Image.id)
            .limit(at_most))).all())

    async def _exact(self, session: AsyncSession, shop_id: int, scorer: Scorer, limit: int,
                     candidates: list[Any]) -> list[tuple[Image, float]]:
        if not candidates:
            return []
        wanted = [(int(ident), embedded_at) for ident, embedded_at in candidates]
        have, missing = self.cache.lookup(shop_id, wanted)
        if missing:
            fetched = await self.store.vectors(shop_id, missing)
            stamps = dict(wanted)
            self.cache.store(shop_id, {i: (stamps[i], v) for i, v in fetched.items()})
            have.update(fetched)
        ids = [ident for ident, _ in wanted if ident in have]  # (a ready image without a vector: the sweep re-embeds it)
        if not ids:
            return []
        scores = scorer(np.stack([have[i] for i in ids]))
        top = min(limit, len(ids))
        best = np.argpartition(-scores, top - 1)[:top] if top < len(ids) else np.arange(len(ids))
        best = best[np.argsort(-scores[best], kind="stable")]
        ranked = [(ids[n], round(float(scores[n]), 6)) for n in best]
        rows = {img.id: img for img in await session.scalars(
            select(Image).where(Image.id.in_([i for i, _ in ranked]), Image.shop_id == shop_id))}
        return [(rows[i], score) for i, score in ranked if i in rows]

    async def _indexed(self, session: AsyncSession, shop_id: int, vector: np.ndarray, limit: int,
                       filters: dict[str, Any], exclude: Collection[int]) -> list[tuple[Image, float]]:
        """The index's answer. Any ``where`` makes Chroma filter before it searches (≈ 15 ms at 10,000 vectors,
        57 ms on a busy machine), so it is asked without one first: with filters, for more neighbours than
        wanted, kept by the database when they match (when at least ``limit`` do, they are the nearest matching
        ones); without, it is asked again with the "listed" filter only when drafts crowd the results out."""
        wanted = limit + OVERFETCH + len(exclude)
        more = min(max(wanted * FILTERED_OVERFETCH, 200), 1000)
        if more > wanted and any(value is not None for value in filters.values()):
            hits = await self.store.query(shop_id, vector, more)
            results = await _rows(session, shop_id, hits, exclude, filters)
            if len(results) >= limit:
                return results[:limit]
        hits = await self.store.query(shop_id, vector, wanted, filters)
        results = await _rows(session, shop_id, hits, exclude, filters)
        if len(results) < limit and len(hits) == wanted:
            hits = await self.store.query(shop_id, vector, wanted, filters, listed_only=True)
            results = await _rows(session, shop_id, hits, exclude, filters)
        return results[:limit]


async def _rows(session: AsyncSession, shop_id: int, hits: list[Any], exclude: Collection[int],
                filters: dict[str, Any]) -> list[tuple[Image, float]]:
    """The hits that are ready images of listed products matching ``filters`` (``matching``), in order."""
    ids = [h.image_id for h in hits if h.image_id not in exclude]
    if not ids:
        return []
    stmt, values = _rows_statement(shop_id, filters, exclude)
    rows = {img.id: img for img in await session.scalars(stmt, {**values, "ids": ids})}
    return [(rows[h.image_id], h.score) for h in hits if h.image_id in rows]


Scorer = Callable[[np.ndarray], np.ndarray]  # a matrix of vectors (one per row) -> one score per row


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.asarray(vectors / np.where(norms == 0, 1.0, norms), dtype=np.float32)


def cosine_to(vector: np.ndarray) -> Scorer:
    query = _unit(np.asarray(vector, dtype=np.float32).reshape(-1))
    return lambda matrix: np.asarray(_unit(matrix) @ query)


def average_vector(positives: list[np.ndarray], negatives: list[np.ndarray]) -> np.ndarray:
    """Qdrant's ``average_vector``: the mean of the (unit) positives, moved away from the mean of the negatives
    by as much again: ``p + (p - n)``."""
    mean = _unit(np.stack(positives)).mean(axis=0)
    if negatives:
        mean = mean + (mean - _unit(np.stack(negatives)).mean(axis=0))
    return np.asarray(mean, dtype=np.float32)


def best_score(positives: list[np.ndarray], negatives: list[np.ndarray]) -> Scorer:
    """Qdrant's ``best_score``: an image's best cosine to any positive; an image nearer to a negative than to
    every positive scores minus its best cosine to a negative, below every other."""
    pos = _unit(np.stack(positives))
    neg = _unit(np.stack(negatives)) if negatives else None

    def score(matrix: np.ndarray) -> np.ndarray:
        unit = _unit(matrix)
        best_pos = (unit @ pos.T).max(axis=1)
        if neg is None:
            return np.asarray(best_pos)
        best_neg = (unit @ neg.T).max(axis=1)
        return np.asarray(np.where(best_pos > best_neg, best_pos, -best_neg))

    return score
