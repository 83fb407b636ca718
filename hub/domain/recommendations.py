"""Recommendations: text-to-image, image-to-image ("more like this"), and the prompt log."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal, TypedDict, TypeVar, cast

import numpy as np

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, model_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import Image, MerchRule, Prompt
from hub.domain import lexical
from hub.domain.fusion import RRF_K, reciprocal_rank_fusion
from hub.domain.lexical import LexicalHit, LexicalTimeout
from hub.domain.merchandising import Rules, boosted, product_facts, query_key, shop_search
from hub.domain.ranking import cosine_to, matching
from hub.domain.fields import BodyId, ListedId, JsonBool, JsonFloat, JsonInt, optional_id
from hub.domain.images import URL_PATTERN, get_visible_image
from hub.domain.keys import Principal
from hub.domain.pagination import decode_cursor, page
from hub.domain.services import Services
from hub.errors import Conflict, Invalid, Unavailable

log = logging.getLogger("hub.recommendations")

T = TypeVar("T")


class Filters(BaseModel):
    """Only images matching every given filter are ranked."""

    model_config = ConfigDict(extra="forbid")

    category_id: BodyId | None = optional_id()
    style_id: BodyId | None = optional_id()
    age_group_id: BodyId | None = optional_id()
    product_id: BodyId | None = optional_id()
    source: str | None = Field(None, max_length=50)
    available: JsonBool | None = None
    price_min: JsonFloat | None = Field(None, ge=0, le=1e12, allow_inf_nan=False,
                                        json_schema_extra={"minimum": 0, "maximum": 1e12})
    price_max: JsonFloat | None = Field(None, ge=0, le=1e12, allow_inf_nan=False,
                                        json_schema_extra={"minimum": 0, "maximum": 1e12})


SearchMode = Literal["vector", "lexical", "hybrid"]
Strategy = Literal["average_vector", "best_score"]
MAX_EXAMPLES = 20
# a character that is not white space, for every engine: Python folds U+001C..U+001F as spaces, Rust's regex does not
PROMPT_PATTERN = r"[^\s\x1c-\x1f]"
Distinct = Literal["product", "image"]
MIN_DEPTH, MAX_DEPTH = 100, 400  # how deep each side of a fused or per-product ranking looks first
DEEPEST = 6400  # and at most, when products with many images leave fewer than ``limit`` products


class RecommendationRequest(BaseModel):
    # something to look for (words, examples or a photo), and words for lexical mode: said in the schema too
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "anyOf": [{"required": ["prompt"], "properties": {"prompt": {"type": "string"}}},
                  {"required": ["positive"], "properties": {"positive": {"minItems": 1}}},
                  {"required": ["image_url"], "properties": {"image_url": {"type": "string"}}}],
        "if": {"required": ["mode"], "properties": {"mode": {"const": "lexical"}}},
        "then": {"required": ["prompt"], "properties": {"prompt": {"type": "string"}, "positive": {"maxItems": 0},
                                                        "negative": {"maxItems": 0}, "image_url": {"type": "null"}}}})

    prompt: Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=PROMPT_PATTERN)] | None = Field(
        None, description="What the shopper asked for (at least one character that is not a space); optional "
                          "with positive examples or a photo")
    limit: JsonInt = Field(10, ge=1, le=100)
    filters: Filters = Field(default_factory=Filters)
    mode: SearchMode | None = Field(None, description=(
        "``vector``: FashionCLIP similarity only; ``lexical``: the catalog's words only; ``hybrid``: both, fused by "
        "reciprocal rank. Default: the shop's ``search_mode``."))
    weight: JsonFloat | None = Field(None, ge=0, le=1, allow_inf_nan=False, description=(
        "The lexical side's share of a hybrid ranking, 0 (looks only) to 1 (words first). Default: the shop's "
        "``lexical_weight``."), json_schema_extra={"minimum": 0, "maximum": 1})
    distinct: Distinct = Field("product", description=(
        "``product``: one result per product, its best image (the others in ``other_image_ids``); ``image``: "
        "every image on its own."))
    explain: JsonBool = Field(False, description="Add each result's ranks and how its place was decided.")
    facets: JsonBool = Field(False, description=(
        "Count the query's candidates by category, style, age group and availability (for filter menus)"))
    positive: list[ListedId] = Field(default_factory=list, max_length=MAX_EXAMPLES, description=(
        "Images (ids) the results should look like"))
    negative: list[ListedId] = Field(default_factory=list, max_length=MAX_EXAMPLES, description=(
        "Images (ids) the results should not look like"))
    strategy: Strategy = Field("average_vector", description=(
        "How examples combine: ``average_vector`` ranks by one vector, the positives' mean moved away from the "
        "negatives'; ``best_score`` ranks each image by its best similarity to any positive, and below all "
        "others when it is nearer to a negative"))
    image_url: str | None = Field(None, max_length=2000, pattern=URL_PATTERN, description=(
        "A shopper's photo to look for (fetched with the limits of image intake, never stored); a photo can "
        "also be sent as multipart ``file``"))

    @model_validator(mode="after")
    def _something_to_look_for(self, info: ValidationInfo) -> RecommendationRequest:
        sent_photo = bool(info.context and info.context.get("photo"))
        if sent_photo and self.image_url:
            raise ValueError("send the photo once: as the file or as image_url")
        if not (self.prompt or self.positive or self.image_url or sent_photo):
            raise ValueError("give a prompt, positive examples or a photo")
        if self.mode == "lexical" and (not self.prompt or self.positive or self.negative or self.image_url
                                       or sent_photo):
            raise ValueError("lexical mode ranks by words: it needs a prompt, and takes no examples or photo")
        return self


def prompt_text(prompt: str) -> str:
    """The prompt with its whitespace folded; 400 if nothing is left."""
    text = " ".join(prompt.split())
    if not text:
        raise Invalid("prompt must not be blank")
    return text


@dataclass
class Recommended:
    """One result: its image, the score it was ranked by, and where each side placed it."""

    image: Image
    score: float
    vector_score: float | None = None
    lexical_score: float | None = None
    vector_rank: int | None = None
    lexical_rank: int | None = None
    other_image_ids: list[int] = dataclass_field(default_factory=list)
    steps: list[str] = dataclass_field(default_factory=list)


@dataclass
class Recommendations:
    results: list[Recommended]
    mode: SearchMode
    weight: float
    distinct: Distinct
    timings_ms: dict[str, float]
    facets: Facets | None = None


class FacetValue(TypedDict):
    id: int
    name: str
    count: int


class Facets(TypedDict):
    """How many of the query's candidates (products with ``distinct: "product"``, images otherwise) fall in each
    category, style and age group (those with none are not listed), and how many are available or not."""

    category: list[FacetValue]
    style: list[FacetValue]
    age_group: list[FacetValue]
    available: dict[str, int]


def stands_for(image: Image) -> tuple[str, int]:
    """What a result stands for: its product, or the image itself when it has none."""
    return ("product", image.product_id) if image.product_id is not None else ("image", image.id)


FACET_FILTERS = {"category": "category_id", "style": "style_id", "age_group": "age_group_id",
                 "available": "available"}  # each facet and the filter that chooses one of its values


def _one_per_product(ranked: list[Recommended]) -> list[Recommended]:
    seen: dict[tuple[str, int], Recommended] = {}
    for entry in ranked:
        seen.setdefault(stands_for(entry.image), entry)
    return list(seen.values())


async def count_facets(session: AsyncSession, ranked: list[Recommended], distinct: Distinct,
                       wider: dict[str, list[Recommended]] | None = None) -> Facets:
    """Facets over every candidate of the ranking (the best 100 to 400 of each side, filters applied); a facet
    named in ``wider`` counts those candidates instead (the ranking without that facet's own filter)."""
    sources = {kind: (wider or {}).get(kind, ranked) for kind in FACET_FILTERS}
    if distinct == "product":
        sources = {kind: _one_per_product(entries) for kind, entries in sources.items()}
    facts = await product_facts(session, list({e.image.id: e.image for es in sources.values() for e in es}.values()))

    def count(kind: str) -> list[FacetValue]:
        tally: dict[int, FacetValue] = {}
        for entry in sources[kind]:
            taxon = getattr(entry.image, kind)
            if taxon is not None:
                tally.setdefault(taxon.id, {"id": taxon.id, "name": taxon.name, "count": 0})["count"] += 1
        return sorted(tally.values(), key=lambda v: (-v["count"], v["name"].casefold(), v["id"]))

    in_stock = sum(1 for e in sources["available"] if facts[e.image.id][0])
    return {"category": count("category"), "style": count("style"), "age_group": count("age_group"),
            "available": {"true": in_stock, "false": len(sources["available"]) - in_stock}}


async def _timed(timings: dict[str, float], name: str, work: Awaitable[T]) -> T:
    start = time.perf_counter()
    try:
        return await work
    finally:
        timings[name] = round((time.perf_counter() - start) * 1000, 2)


@dataclass(frozen=True)
class Examples:
    """What a query looks like besides its words: example images and a shopper's photo."""

    positive: tuple[int, ...] = ()
    negative: tuple[int, ...] = ()
    strategy: Strategy = "average_vector"
    photo: bytes | None = None
    photo_url: str | None = None

    def __bool__(self) -> bool:
        return bool(self.positive or self.negative or self.photo is not None or self.photo_url)


async def _example_vectors(session: AsyncSession, pipeline: Any, principal: Principal,
                           ids: tuple[int, ...]) -> list[np.ndarray]:
    """The stored vectors of example images the caller may see (404 otherwise; 409 while one has none)."""
    for image_id in ids:
        img = await get_visible_image(session, principal, image_id)
        if img.status != "ready":
            raise Conflict(f"image {image_id} is {img.status}, not ready; an example needs its embedding")
    found = await pipeline.vectors(principal.shop_id, list(ids))
    for image_id in ids:
        if image_id not in found:
            raise Conflict(f"image {image_id} has no vector yet; it is being re-embedded")
    return [found[i] for i in ids]


async def recommend(session: AsyncSession, services: Services, principal: Principal, prompt: str | None,
                    limit: int, filters: dict[str, Any], *, mode: SearchMode | None = None,
                    weight: float | None = None, distinct: Distinct = "product", examples: Examples = Examples(),
                    facets: bool = False, log_prompt: bool = True) -> Recommendations:
    """Rank the shop's ready images of listed products for a prompt — by looks, by words or both (the shop's
    defaults unless the request says) —, one per product unless asked otherwise; log the prompt (the original
    Prompt_API; not for the console's own tries, which are not shoppers). The prompt is encoded while the
    lexical index is searched; every vector of the query is of one model, whatever switch happens meanwhile."""
    pipeline = services.pipeline
    assert pipeline is not None, "recommendations need the pipeline (its encoder and vector store)"
    async with pipeline.one_model():
        return await _recommend(session, services, pipeline, principal, prompt, limit, filters, mode=mode,
                                weight=weight, distinct=distinct, examples=examples, facets=facets,
                                log_prompt=log_prompt)


async def _recommend(session: AsyncSession, services: Services, pipeline: Any, principal: Principal,
                     prompt: str | None, limit: int, filters: dict[str, Any], *, mode: SearchMode | None,
                     weight: float | None, distinct: Distinct, examples: Examples, facets: bool,
                     log_prompt: bool) -> Recommendations:
    start = time.perf_counter()
    if not (prompt or examples.positive or examples.photo is not None or examples.photo_url):
        raise Invalid("give a prompt, positive examples or a photo")
    if mode == "lexical" and (not prompt or examples):
        raise Invalid("lexical mode ranks by words: it needs a prompt, and takes no examples or photo")
    timings: dict[str, float] = {}
    photo = None  # read and embedded with no database connection held (a host may take its time)
    if examples.photo is not None or examples.photo_url:
        if session.in_transaction():
            await session.commit()  # (the key's look-up read; nothing is written here) the connection goes back
        photo = await _timed(timings, "photo", pipeline.photo_vector(examples.photo, examples.photo_url))
    shop = await shop_search(session, services.shop_search, principal.shop_id)
    chosen: SearchMode = mode or cast(SearchMode, shop.mode)
    if not prompt:
        chosen = "vector"  # no words: looks alone
    elif examples and chosen == "lexical":
        chosen = "hybrid"  # the shop's default is words, and the request brought looks too
    lexical_share = shop.lexical_weight if weight is None else weight
    rules = shop.rules
    key = query_key(prompt) if prompt else ""
    encoded, added = rules.expanded_prompt(prompt) if prompt else ("", [])
    depth = limit if distinct == "image" and chosen != "hybrid" and not facets and not rules \
        else min(max(limit * 4, MIN_DEPTH), MAX_DEPTH)
    exclude = (*examples.positive, *examples.negative)  # examples are never results
    narrow = partial(matching, shop_id=principal.shop_id, filters=filters, exclude=exclude)
    encoding = asyncio.ensure_future(_timed(timings, "encode", pipeline.encode_prompt(encoded))) \
        if chosen != "lexical" and prompt else None
    positives: list[np.ndarray] = []
    negatives: list[np.ndarray] = []
    if examples and chosen != "lexical":
        try:
            positives += [photo] if photo is not None else []
            positives += await _example_vectors(session, pipeline, principal, examples.positive)
            negatives += await _example_vectors(session, pipeline, principal, examples.negative)
        except BaseException:
            if encoding is not None:
                encoding.cancel()
            raise
    vector = None
    gave_up = ""  # the word search's deadline passed: a hybrid ranking goes on by looks alone
    words_end = time.monotonic() + services.settings.lexical_deadline  # one budget for every word search here
    passes = 0
    while True:  # deeper while products with many images leave fewer than ``limit`` products
        try:
            lexical_hits = []
            if chosen != "vector" and prompt:
                try:
                    lexical_hits = await _timed(timings, "lexical", lexical.search(
                        session, principal.shop_id, prompt, depth, narrow, rules.synonyms or None,
                        seconds=words_end - time.monotonic()))
                except LexicalTimeout:
                    log.warning("word search past its deadline", extra={
                        "shop_id": principal.shop_id, "seconds": services.settings.lexical_deadline, "depth": depth})
                    if passes:
                        break  # the shallower pass's ranking stands
                    budget = f"took over {services.settings.lexical_deadline:g} s"
                    if chosen == "lexical":
                        raise Unavailable("word search", f"it {budget}; try fewer words, or again shortly") from None
                    chosen, gave_up = "vector", f"the word search {budget}"
            if encoding is not None:
                vector = await encoding
        finally:
            if encoding is not None and not encoding.done():
                encoding.cancel()
        looks = Looks(vector, positives, negatives, examples.strategy, exclude)
        vector_hits = await _timed(timings, "search", _by_looks(session, pipeline, principal.shop_id, looks,
                                                                  depth, filters))
        ranked = await _fuse(session, principal.shop_id, chosen, lexical_share, vector_hits, lexical_hits)
        if added:
            for entry in ranked:
                entry.steps.insert(0, f"synonyms: the prompt also looks for {' '.join(added)}")
        if gave_up:
            for entry in ranked:
                entry.steps.insert(0, f"words: {gave_up}; ranked by looks alone")
        if rules:
            ranked = await _hide_and_boost(session, rules, key, ranked)
        results = _distinct(ranked, limit) if distinct == "product" else ranked[:limit]
        exhausted = len(vector_hits) < depth and len(lexical_hits) < depth
        if len(results) >= limit or exhausted or depth >= DEEPEST:
            break
        depth, passes = min(depth * 4, DEEPEST), passes + 1
    if rules.pins and key:
        results = await _pin(session, rules, key, ranked, results, limit, narrow)
    if vector is not None and not (positives or negatives):
        await _fill_vector_scores(pipeline, principal.shop_id, vector, results)
    if log_prompt and prompt:  # (a query by photo or examples alone is not a prompt)
        services.prompt_log.add(principal.shop_id, prompt, limit, len(results),
                                results[0].vector_score if results else None, filters, principal.key_id)
    counted = None
    if facets:  # a facet whose own filter is set counts the candidates without it (disjunctive faceting)
        counted = await _timed(timings, "facets", _facets(
            session, pipeline, principal.shop_id, ranked, distinct, filters, min(depth, MAX_DEPTH), looks,
            prompt if chosen != "vector" else None, rules, key, words_end))
    timings["total"] = round((time.perf_counter() - start) * 1000, 2)
    return Recommendations(results, chosen, lexical_share, distinct, timings, counted)


@dataclass(frozen=True)
class Looks:
    """What the vector side ranks by: the prompt's vector, example (and photo) vectors, and what to leave out."""

    vector: np.ndarray | None
    positives: list[np.ndarray]
    negatives: list[np.ndarray]
    strategy: Strategy
    exclude: tuple[int, ...]


async def _by_looks(session: AsyncSession, pipeline: Any, shop_id: int, looks: Looks, depth: int,
                    filters: dict[str, Any]) -> list[tuple[Image, float]]:
    if looks.positives or looks.negatives:
        return list(await pipeline.rank_examples(
            session, shop_id, [*([looks.vector] if looks.vector is not None else []), *looks.positives],
            looks.negatives, looks.strategy, depth, filters, looks.exclude))
    if looks.vector is not None:
        return list(await pipeline.rank_vector(session, shop_id, looks.vector, depth, filters))
    return []


async def _facets(session: AsyncSession, pipeline: Any, shop_id: int, ranked: list[Recommended],
                  distinct: Distinct, filters: dict[str, Any], depth: int, looks: Looks, prompt: str | None,
                  rules: Rules, key: str, words_end: float) -> Facets:
    """The facets of the ranking, disjunctive: when facet filters are set, both sides are searched once more
    without any of them (the same vector: nothing is encoded again; the request's word budget), the hidden
    results left out, and each such facet counts those candidates that pass the other facets' filters. Past the
    word budget, the plain counts (logged)."""
    chosen = {kind: name for kind, name in FACET_FILTERS.items() if filters.get(name) is not None}
    if not chosen:
        return await count_facets(session, ranked, distinct)
    others = {k: v for k, v in filters.items() if k not in chosen.values()}
    words: list[LexicalHit] = []
    if prompt:
        try:
            words = await lexical.search(session, shop_id, prompt, depth,
                                         partial(matching, shop_id=shop_id, filters=others, exclude=looks.exclude),
                                         rules.synonyms or None, seconds=words_end - time.monotonic())
        except LexicalTimeout:
            log.warning("word search for the facets past its deadline: facets counted without it",
                        extra={"shop_id": shop_id})
            return await count_facets(session, ranked, distinct)
    hidden = rules.is_hidden(key)
    wide = [e for e in await _fuse(session, shop_id, "hybrid", 0.5,
                                   await _by_looks(session, pipeline, shop_id, looks, depth, others), words)
            if not hidden(e.image)]
    facts = await product_facts(session, [e.image for e in wide])

    def passes(entry: Recommended, name: str) -> bool:
        if name == "available":
            return facts[entry.image.id][0] is bool(filters[name])
        return bool(getattr(entry.image, name) == int(filters[name]))

    wider = {kind: [e for e in wide if all(passes(e, other) for other in chosen.values() if other != name)]
             for kind, name in chosen.items()}
    return await count_facets(session, ranked, distinct, wider)


async def _hide_and_boost(session: AsyncSession, rules: Rules, key: str,
                          ranked: list[Recommended]) -> list[Recommended]:
    """Hidden products and images out; then each boost fused in: the ranking so far as one ranking (weight 1)
    and each boost's candidates in that order (its weight), by reciprocal rank."""
    hidden = rules.is_hidden(key)
    ranked = [e for e in ranked if not hidden(e.image)]
    if not rules.boosts or not ranked:
        return ranked
    order = [e.image.id for e in ranked]
    facts = await product_facts(session, [e.image for e in ranked])
    lists: list[tuple[float, list[int]]] = [(1.0, order)]
    lists += [(float(rule.weight or 0), boosted(rule, order, facts)) for rule in rules.boosts]
    by_id = {e.image.id: e for e in ranked}
    places = [{ident: n for n, ident in enumerate(ids, start=1)} for _, ids in lists[1:]]
    out = []
    for ident, fused in reciprocal_rank_fusion(lists):
        entry = by_id[ident]
        for rule, (share, _), place in zip(rules.boosts, lists[1:], places, strict=True):
            if ident in place:
                entry.steps.append(f"boost {rule.condition} (rule {rule.id}): +{share:g}/({RRF_K}+{place[ident]})")
        entry.score = round(fused, 6)
        out.append(entry)
    return out


async def _pin(session: AsyncSession, rules: Rules, key: str, ranked: list[Recommended],
               results: list[Recommended], limit: int, narrow: Any) -> list[Recommended]:
    """Each pin of this query puts its product (or image) at its position: its best candidate, or else its first
    ready image that the filters allow (none: not pinned). A hidden product is not pinned."""
    hidden_products, hidden_images = rules.hidden(key)
    results = list(results)
    for rule in rules.pinned(key):
        if rule.product_id in hidden_products or rule.image_id in hidden_images:
            continue  # (an image rule's image has no product: create_rule sees to it)

        def is_target(entry: Recommended, rule: MerchRule = rule) -> bool:
            if rule.product_id is not None:
                return entry.image.product_id == rule.product_id
            return entry.image.id == rule.image_id

        entry = next((e for e in ranked if is_target(e)), None)
        if entry is None:
            target = Image.product_id == rule.product_id if rule.product_id is not None else Image.id == rule.image_id
            image = await session.scalar(narrow(select(Image)).where(target, Image.id.not_in(list(hidden_images) or [0]))
                                         .order_by(Image.id).limit(1))
            if image is None:
                continue
            entry = Recommended(image, 0.0)
        others = [e for e in results if not is_target(e)]
        entry.steps.append(f"pinned at {rule.position} for {rule.query!r} (rule {rule.id})")
        others.insert(min((rule.position or 1) - 1, len(others)), entry)
        results = others[:limit]
    return results


async def _fuse(session: AsyncSession, shop_id: int, mode: SearchMode, lexical_share: float,
                vector_hits: list[tuple[Image, float]], lexical_hits: list[LexicalHit]) -> list[Recommended]:
    """Both sides' candidates in the order ``mode`` gives them."""
    images = {img.id: img for img, _ in vector_hits}
    missing = [hit.image_id for hit in lexical_hits if hit.image_id not in images]
    if missing:
        images.update({img.id: img for img in await session.scalars(
            select(Image).where(Image.id.in_(missing), Image.shop_id == shop_id))})
    by_id: dict[int, Recommended] = {}
    for rank, (img, cosine) in enumerate(vector_hits, start=1):
        by_id[img.id] = Recommended(img, cosine, vector_score=cosine, vector_rank=rank)
    for rank, hit in enumerate(lexical_hits, start=1):
        if hit.image_id not in images:
            continue
        entry = by_id.setdefault(hit.image_id, Recommended(images[hit.image_id], hit.score))
        entry.lexical_score, entry.lexical_rank = hit.score, rank
    if mode == "vector":
        order = [(img.id, cosine) for img, cosine in vector_hits]
    elif mode == "lexical":
        order = [(hit.image_id, hit.score) for hit in lexical_hits if hit.image_id in by_id]
    else:
        order = reciprocal_rank_fusion([(1 - lexical_share, [img.id for img, _ in vector_hits]),
                                        (lexical_share, [h.image_id for h in lexical_hits if h.image_id in by_id])])
    ranked = []
    for ident, score in order:
        entry = by_id[ident]
        entry.score = round(score, 6) if mode == "hybrid" else score
        entry.steps.append(_why(mode, lexical_share, entry))
        ranked.append(entry)
    return ranked


def _why(mode: SearchMode, lexical_share: float, entry: Recommended) -> str:
    if mode == "vector":
        return f"vector: cosine {entry.vector_score}"
    if mode == "lexical":
        return f"lexical: words score {entry.lexical_score}"
    parts = [f"{1 - lexical_share:g}/({RRF_K}+{entry.vector_rank}) by looks" if entry.vector_rank else "",
             f"{lexical_share:g}/({RRF_K}+{entry.lexical_rank}) by words" if entry.lexical_rank else ""]
    return "hybrid: " + " + ".join(p for p in parts if p)


def _distinct(ranked: list[Recommended], limit: int) -> list[Recommended]:
    """The best-placed image of each product (an image without a product stands for itself), the product's
    other candidates listed in its ``other_image_ids``."""
    kept: dict[tuple[str, int], Recommended] = {}
    for entry in ranked:
        key = stands_for(entry.image)
        best = kept.get(key)
        if best is None:
            if len(kept) < limit:
                kept[key] = entry
        else:
            best.other_image_ids.append(entry.image.id)
    return list(kept.values())


async def _fill_vector_scores(pipeline: Any, shop_id: int, vector: np.ndarray, results: list[Recommended]) -> None:
    """Cosine similarity for results only the lexical side found (what the prompt log and ``explain`` show)."""
    missing = [r.image.id for r in results if r.vector_score is None]
    if not missing:
        return
    found = await pipeline.vectors(shop_id, missing)
    have = [r for r in results if r.image.id in found]
    if have:
        scores = cosine_to(vector)(np.stack([found[r.image.id] for r in have]))
        for entry, score in zip(have, scores.tolist(), strict=True):
            entry.vector_score = round(float(score), 6)


async def similar_images(session: AsyncSession, services: Services, principal: Principal, image_id: int, limit: int,
                         filters: dict[str, Any]) -> list[tuple[Image, float]]:
    """Images that look like this one (the image itself excluded); a publishable key only starts from what it
    may be shown."""
    assert services.pipeline is not None, "similar images need the pipeline (its vector store)"
    img = await get_visible_image(session, principal, image_id)
    if img.status != "ready":
        raise Conflict(f"image {image_id} is {img.status}, not ready; similar images need its embedding")
    results = await services.pipeline.similar(session, principal.shop_id, image_id, limit, filters)
    if results is None:
        raise Conflict(f"image {image_id} has no vector yet; it is being re-embedded")
    ranked: list[tuple[Image, float]] = results
    return ranked


class PromptOut(TypedDict):
    """One prompt a shopper sent: how many results were asked for and found, with which filters."""

    id: int
    prompt: str
    num_recommended: int
    result_count: int
    filters: dict[str, Any]
    created_at: datetime


async def list_prompts(session: AsyncSession, shop_id: int, limit: int,
                       cursor: str | None) -> tuple[list[PromptOut], str | None]:
    """A page of what the shop's shoppers asked, newest first, and the cursor of the next page."""
    stmt = select(Prompt).where(Prompt.shop_id == shop_id)
    before = decode_cursor(cursor)
    if before is not None:
        stmt = stmt.where(Prompt.id < before)
    rows = list(await session.scalars(stmt.order_by(Prompt.id.desc()).limit(limit + 1)))
    items, next_cursor = page(rows, limit)
    return [{"id": p.id, "prompt": p.prompt, "num_recommended": p.num_recommended, "result_count": p.result_count,
             "filters": p.filters, "created_at": p.created_at} for p in items], next_cursor
