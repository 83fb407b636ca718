"""Merchandising rules: what a shop decides beside the ranking, applied to every recommendation in this order
(``explain`` names each step a result went through):

1. **synonyms** widen the prompt: on the lexical side a word of a group matches a document holding any word of
   the group (the group counts as one word, its document frequency that of any of its words); on the vector
   side the prompt is encoded with the other words of its groups after it ("jumper" → "jumper sweater");
2. the ranking (vector, lexical or hybrid);
3. **hides** remove a product (or an image) from the candidates: for one query or for every query;
4. **boosts** lift the candidates that are in stock or new (their product's ``created_at`` within ``days``):
   one more ranking fused in by reciprocal rank — those candidates in their current order, with the boost's
   weight — so ``score`` becomes the fused score;
5. one result per product (``distinct``) and the limit;
6. **pins** put a product (its best candidate image, or else its first ready image that matches the filters)
   at a position for one query, whatever its rank; a hidden product is not pinned.

A rule's query matches a prompt when their analysed words are the same (``hub.search.text``: "Summer dresses"
is "summer dress").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError, model_validator
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import Image, MerchRule, Product, Shop, utcnow
from hub.domain.fields import BodyId, JsonFloat, JsonInt, optional_id
from hub.domain.recent import Recent
from hub.errors import Conflict, Invalid, not_found, validation_detail
from hub.search.text import query_terms, words

MAX_RULES = 500
MAX_GROUP = 20  # words in one synonym group, merged with the groups it joins
MAX_SYNONYM_WORDS = 500  # synonym words of a shop, all rules together
MAX_BOOSTS = 2  # one per condition
Query = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"[^\s\x1c-\x1f]")]


class _Target(BaseModel):
    # exactly one of the two, in the schema too
    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
        {"required": ["product_id"], "properties": {"product_id": {"type": "integer"}, "image_id": {"type": "null"}}},
        {"required": ["image_id"], "properties": {"image_id": {"type": "integer"}, "product_id": {"type": "null"}}},
    ]})

    product_id: BodyId | None = optional_id("The product (one of product_id, image_id)")
    image_id: BodyId | None = optional_id("An image without a product (one of product_id, image_id)")

    @model_validator(mode="after")
    def _one_target(self) -> Any:
        if (self.product_id is None) == (self.image_id is None):
            raise ValueError("give one of product_id and image_id")
        return self


class PinRule(_Target):
    kind: Literal["pin"]
    query: Query = Field(description="The query it applies to (compared by its analysed words)")
    position: JsonInt = Field(ge=1, le=100, description="Where the product goes (1: first)")


class HideRule(_Target):
    kind: Literal["hide"]
    query: Query | None = Field(None, description="The query it applies to; none: every query")


class SynonymRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["synonyms"]
    words: list[Annotated[str, StringConstraints(min_length=1, max_length=50)]] = Field(
        min_length=2, max_length=20, description="Words that find each other, one word each (jumper, sweater)")


class BoostRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["boost"]
    condition: Literal["in_stock", "new"]
    weight: JsonFloat = Field(gt=0, le=1, allow_inf_nan=False, json_schema_extra={"exclusiveMinimum": 0,
                                                                                   "maximum": 1},
                              description="The boost's share beside the ranking's (0 to 1)")
    days: JsonInt = Field(30, ge=1, le=365, description="For new: products created within this many days")


RuleCreate = Annotated[PinRule | HideRule | SynonymRule | BoostRule, Field(discriminator="kind")]
RULE_CREATE = TypeAdapter(RuleCreate)


def parse_rule(body: bytes) -> PinRule | HideRule | SynonymRule | BoostRule:
    try:
        rule: PinRule | HideRule | SynonymRule | BoostRule = RULE_CREATE.validate_json(body)
    except ValidationError as exc:
        raise Invalid(f"invalid rule: {validation_detail(exc)}") from None
    return rule


def query_key(query: str) -> str:
    return " ".join(query_terms(query))


async def create_rule(session: AsyncSession, shop_id: int, data: PinRule | HideRule | SynonymRule | BoostRule,
                      ) -> MerchRule:
    """A new rule, committed: its product or image must be the shop's (404), a shop has at most ``MAX_RULES``."""
    count = await session.scalar(select(func.count()).where(MerchRule.shop_id == shop_id)) or 0
    if count >= MAX_RULES:
        raise Conflict(f"this shop has {count} rules, the most it may have; delete one first")
    row = MerchRule(shop_id=shop_id, kind=data.kind)
    if isinstance(data, PinRule | HideRule):
        if data.product_id is not None:
            owner = await session.scalar(select(Product.shop_id).where(Product.id == data.product_id))
            if owner != shop_id:
                raise not_found("product", data.product_id)
        else:
            owner = await session.scalar(select(Image.shop_id).where(Image.id == data.image_id))
            if owner != shop_id:
                raise not_found("image", data.image_id)
        if data.image_id is not None:
            product = await session.scalar(select(Image.product_id).where(Image.id == data.image_id))
            if product is not None:
                raise Invalid(f"image {data.image_id} belongs to product {product}: pin or hide the product")
        row.product_id, row.image_id = data.product_id, data.image_id
        if data.query is not None:
            row.query, row.query_key = data.query, query_key(data.query)
            if not row.query_key:
                raise Invalid("the query has no word the index keeps (only stop words?)")
        if isinstance(data, PinRule):
            row.position = data.position
    elif isinstance(data, SynonymRule):
        kept: dict[str, str] = {}  # analysed -> as written (the first of each)
        for word in data.words:
            terms = words(word)
            if len(terms) != 1:
                raise Invalid(f"synonyms are single words: {word!r} is {len(terms)} words to the index")
            kept.setdefault(terms[0], word.strip())
        if len(kept) < 2:
            raise Invalid("synonyms need at least two different words")
        existing = [r for r in await list_rules(session, shop_id) if r.kind == "synonyms"]
        if sum(len(r.words) for r in existing) + len(kept) > MAX_SYNONYM_WORDS:
            raise Conflict(f"a shop has at most {MAX_SYNONYM_WORDS} synonym words; delete some first")
        merged = set(kept)
        for other in existing:
            theirs = {t for w in other.words for t in words(w)[:1]}
            if theirs & set(kept):
                merged |= theirs
        if len(merged) > MAX_GROUP:
            raise Invalid(f"with the synonyms it joins, this group would have {len(merged)} words; at most {MAX_GROUP}")
        row.words = list(kept.values())
    else:
        boosts = [r for r in await list_rules(session, shop_id) if r.kind == "boost"]
        if any(r.condition == data.condition for r in boosts) or len(boosts) >= MAX_BOOSTS:
            raise Conflict(f"the shop has a {data.condition} boost already; delete it to change it")
        row.condition, row.weight, row.days = data.condition, data.weight, data.days
    session.add(row)
    await session.commit()
    return row


async def list_rules(session: AsyncSession, shop_id: int) -> list[MerchRule]:
    return list(await session.scalars(select(MerchRule).where(MerchRule.shop_id == shop_id).order_by(MerchRule.id)))


async def delete_rule(session: AsyncSession, shop_id: int, rule_id: int) -> None:
    row = await session.scalar(select(MerchRule).where(MerchRule.id == rule_id, MerchRule.shop_id == shop_id))
    if row is None:
        raise not_found("rule", rule_id)
    await session.delete(row)
    await session.commit()


@dataclass
class Rules:
    """A shop's rules, as one recommendation applies them."""

    synonyms: dict[str, list[str]] = field(default_factory=dict)  # analysed word -> its group, analysed
    written: dict[str, list[str]] = field(default_factory=dict)  # analysed word -> its group, as written
    hides: list[MerchRule] = field(default_factory=list)
    pins: list[MerchRule] = field(default_factory=list)
    boosts: list[MerchRule] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.synonyms or self.hides or self.pins or self.boosts)

    def expanded_prompt(self, prompt: str) -> tuple[str, list[str]]:
        """The prompt with the other words of its synonym groups after it, and which were added."""
        terms = query_terms(prompt)
        added = [w for t in terms for w in self.written.get(t, []) if words(w)[:1] != [t] and
                 not set(words(w)) & set(terms)]
        added = list(dict.fromkeys(added))
        return (f"{prompt} {' '.join(added)}" if added else prompt), added

    def trimmed(self) -> Rules:
        """Groups cut to ``MAX_GROUP`` words (rules made before a cap, or merged by several rules)."""
        self.synonyms = {t: g[:MAX_GROUP] for t, g in self.synonyms.items()}
        self.written = {t: g[:MAX_GROUP] for t, g in self.written.items()}
        return self

    def hidden(self, key: str) -> tuple[set[int], set[int]]:
        """Hidden product ids and image ids for a query (its analysed words)."""
        rules = [r for r in self.hides if r.query_key is None or r.query_key == key]
        return ({r.product_id for r in rules if r.product_id is not None},
                {r.image_id for r in rules if r.image_id is not None})

    def is_hidden(self, key: str) -> Callable[[Image], bool]:
        """Whether an image is hidden for a query (its analysed words): itself or its product."""
        products, images = self.hidden(key)
        return lambda image: image.id in images or image.product_id in products

    def pinned(self, key: str) -> list[MerchRule]:
        return sorted((r for r in self.pins if r.query_key == key), key=lambda r: (r.position or 0, r.id))


@dataclass(frozen=True)
class ShopSearch:
    """What a query needs of its shop: its default mode and lexical weight, and its rules."""

    mode: str
    lexical_weight: float
    rules: Rules


def shop_search_cache(seconds: float) -> Recent[int, ShopSearch]:
    """Shops' search defaults and rules as recent queries read them (``HUB_QUERY_CACHE_SECONDS``): emptied when
    this process changes a shop or a rule."""
    return Recent(seconds, (Shop, MerchRule))


async def shop_search(session: AsyncSession, cache: Recent[int, ShopSearch], shop_id: int) -> ShopSearch:
    async def load() -> ShopSearch:
        shop = await session.get(Shop, shop_id)
        if shop is None:
            raise not_found("shop", shop_id)
        rules = await load_rules(session, shop_id)
        for row in (*rules.hides, *rules.pins, *rules.boosts):
            session.expunge(row)  # kept for other requests: a rollback of this session must not expire them
        return ShopSearch(shop.search_mode, shop.lexical_weight, rules)

    found = await cache.read(shop_id, load)
    assert found is not None  # (load raises instead)
    return found


async def load_rules(session: AsyncSession, shop_id: int) -> Rules:
    rules = Rules()
    for row in await list_rules(session, shop_id):
        if row.kind == "synonyms":
            spelt = {w: terms[0] for w in row.words if len(terms := words(w)) == 1}  # (a word the analyser
            for term in set(spelt.values()):                                        # no longer keeps: skipped)
                group = rules.synonyms.setdefault(term, [term])
                group.extend(t for t in dict.fromkeys(spelt.values()) if t not in group)
                written = rules.written.setdefault(term, [])
                written.extend(w for w in spelt if w not in written)
        elif row.kind == "hide":
            rules.hides.append(row)
        elif row.kind == "pin":
            rules.pins.append(row)
        elif row.kind == "boost" and len(rules.boosts) < MAX_BOOSTS:
            rules.boosts.append(row)
    return rules.trimmed()


async def product_facts(session: AsyncSession, images: list[Image]) -> dict[int, tuple[bool, datetime]]:
    """Whether each image's product is available and when it was created, by image id (an image without a
    product: available, created when the image was)."""
    product_ids = {img.product_id for img in images if img.product_id is not None}
    products: dict[int, tuple[bool, datetime]] = {}
    if product_ids:
        rows = await session.execute(select(Product.id, Product.available, Product.created_at)
                                     .where(Product.id.in_(product_ids)))
        products = {int(i): (bool(a), c) for i, a, c in rows.all()}
    return {img.id: products.get(img.product_id, (True, img.created_at)) if img.product_id is not None
            else (True, img.created_at) for img in images}


def boosted(rule: MerchRule, ids: list[int], facts: dict[int, tuple[bool, datetime]]) -> list[int]:
    """The ids (in the order given) whose product meets the boost's condition."""
    since = utcnow() - timedelta(days=rule.days or 30)
    return [i for i in ids if (rule.condition == "in_stock" and facts[i][0])
            or (rule.condition == "new" and facts[i][1] >= since)]


def rule_json(row: MerchRule) -> dict[str, Any]:
    return {"id": row.id, "kind": row.kind, "query": row.query, "product_id": row.product_id,
            "image_id": row.image_id, "position": row.position, "words": list(row.words or []),
            "condition": row.condition, "weight": row.weight, "days": row.days, "created_at": row.created_at}
