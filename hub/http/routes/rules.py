"""``/api/v1/rules``: a shop's merchandising rules — pins, hides, synonyms, boosts (secret key required);
``hub.domain.merchandising`` says what each does and in which order they apply."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from typing import Any

from litestar import Request, delete, get, post

from hub.domain.merchandising import RULE_CREATE, create_rule, delete_rule, list_rules, parse_rule, rule_json
from hub.errors import UnsupportedMedia
from hub.http.auth import Caller, SecretKeyController
from hub.http.deps import Db
from hub.http.openapi import json_schema, problems, request_body
from hub.http.validation import PathId


@dataclass(frozen=True)
class RuleOut:
    """A rule: ``kind`` says which fields it uses (pin: query, product_id or image_id, position; hide: query or
    none, product_id or image_id; synonyms: words, as the index keeps them; boost: condition, weight, days)."""

    id: int
    kind: str
    query: str | None
    product_id: int | None
    image_id: int | None
    position: int | None
    words: list[str]
    condition: str | None
    weight: float | None
    days: int | None
    created_at: datetime


@dataclass(frozen=True)
class RuleList:
    items: list[RuleOut]


class RuleController(SecretKeyController):
    path = "/api/v1/rules"
    tags = ["merchandising"]

    @get("/")
    async def list_rules(self, db: Db, principal: Caller) -> RuleList:
        """The shop's rules, oldest first."""
        return RuleList([RuleOut(**rule_json(row)) for row in await list_rules(db, principal.shop_id)])

    @post("/", status_code=201, responses=problems(404, 409),
          operation_class=request_body({"application/json": json_schema(RULE_CREATE.json_schema())}))
    async def create(self, request: Request[Any, Any, Any], db: Db, principal: Caller) -> RuleOut:
        """A new rule (``kind``: pin, hide, synonyms, boost), applied to the next recommendation. 400 also when a
        synonym is more than one word to the index, or a query has no word it keeps; 404: the product or image
        is not the shop's; 409: the shop has 500 rules."""
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise UnsupportedMedia("send the rule as application/json")
        data = parse_rule(await request.body())
        return RuleOut(**rule_json(await create_rule(db, principal.shop_id, data)))

    @delete("/{rule_id:int}", status_code=204)
    async def remove(self, db: Db, principal: Caller, rule_id: PathId) -> None:
        """Delete a rule."""
        await delete_rule(db, principal.shop_id, rule_id)
