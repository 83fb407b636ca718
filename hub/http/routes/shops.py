"""Shops: ``GET /api/v1/shop`` (the caller's own), the operator's ``/api/v1/shops`` and ``/api/v1/signup``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from hub.db.models import Shop
from hub.domain.fields import JsonFloat
from hub.domain.origins import ORIGIN_PATTERN
from hub.domain.recommendations import SearchMode
from hub.domain.shops import (
    EMAIL_PATTERN,
    commit_new_shop,
    create_shop,
    image_counts,
    remove_shop,
    sign_up,
    update_shop,
)
from hub.http.auth import Caller, SecretKeyController, client_address, require_operator
from hub.http.deps import Db, Svc
from hub.http.openapi import model_schema, problems, request_body
from hub.http.validation import PathId


@dataclass(frozen=True)
class ImageCounts:
    """The shop's images: ``total`` and one count per status present (``pending``, ``ready``, ``failed``…)."""

    total: int
    pending: int = 0
    embedding: int = 0
    ready: int = 0
    failed: int = 0


@dataclass(frozen=True)
class ShopOut:
    id: int
    name: str
    email: str
    allowed_origins: list[str]
    search_mode: str
    lexical_weight: float
    created_at: datetime

    @staticmethod
    def fields(shop: Shop) -> dict[str, Any]:
        """The row's public fields, for this class and the responses that extend it."""
        return {"id": shop.id, "name": shop.name, "email": shop.email,
                "allowed_origins": list(shop.allowed_origins or []), "search_mode": shop.search_mode,
                "lexical_weight": shop.lexical_weight, "created_at": shop.created_at}


@dataclass(frozen=True)
class ShopWithCounts(ShopOut):
    images: ImageCounts


@dataclass(frozen=True)
class CreatedShopOut(ShopOut):
    """A new shop and its first two keys, shown this once."""

    secret_key: str
    publishable_key: str


@dataclass(frozen=True)
class SignupAccepted:
    shop_id: int
    detail: str




class ShopCreate(BaseModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S")]
    email: Annotated[str, StringConstraints(max_length=254, pattern=EMAIL_PATTERN)] = Field(
        description="Where the shop's keys go (signup) and how the operator reaches it")


class ShopUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S")] | None = None
    allowed_origins: list[Annotated[str, StringConstraints(max_length=300, pattern=ORIGIN_PATTERN)]] | None = Field(
        None, max_length=50, description="Sites whose pages may use the publishable key, as origins "
                                         "(scheme://host[:port]); empty: any site")
    search_mode: SearchMode | None = Field(None, description="How recommendations rank when a request does not "
                                                             "say: vector, lexical or hybrid")
    lexical_weight: JsonFloat | None = Field(None, ge=0, le=1, allow_inf_nan=False,
                                             description="The lexical side's share of a hybrid ranking (0..1)",
                                             json_schema_extra={"minimum": 0, "maximum": 1})


class ShopController(SecretKeyController):
    path = "/api/v1/shop"
    tags = ["shops"]

    @get("/")
    async def get_shop(self, db: Db, principal: Caller) -> ShopWithCounts:
        """The calling shop, with its images counted by status."""
        shop = await db.get_one(Shop, principal.shop_id)
        counts = await image_counts(db, shop.id)
        return ShopWithCounts(**ShopOut.fields(shop), images=ImageCounts(total=sum(counts.values()), **counts))

    # pydantic's own schema for the body: Litestar drops the item pattern of a list of constrained strings
    @patch("/", responses=problems(400), operation_class=request_body({"application/json": model_schema(ShopUpdate)}))
    async def update(self, db: Db, principal: Caller, data: JSONBody[ShopUpdate]) -> ShopOut:
        """Rename the shop, set how its recommendations rank by default (``search_mode``, ``lexical_weight``),
        or list the sites (origins, like ``https://shop.example``) whose pages may use its
        publishable key — the storefront widget; an empty list lets any site use it."""
        shop = await update_shop(db, principal.shop_id, data.name, data.allowed_origins, data.search_mode,
                                 data.lexical_weight)
        return ShopOut(**ShopOut.fields(shop))


class OperatorController(Controller):
    """The operator's shop management (``Authorization: Bearer $HUB_ADMIN_TOKEN``)."""

    path = "/api/v1/shops"
    tags = ["operator"]
    dependencies = {"operator": Provide(require_operator)}

    @post("/", status_code=201, responses=problems(409))
    async def create(self, db: Db, operator: NamedDependency[None], data: JSONBody[ShopCreate]) -> CreatedShopOut:
        """A new shop with the default taxonomy, one secret and one publishable key."""
        created = await create_shop(db, data.name, str(data.email))
        await commit_new_shop(db)
        return CreatedShopOut(**ShopOut.fields(created.shop), secret_key=created.secret_key,
                              publishable_key=created.publishable_key)

    @delete("/{shop_id:int}", status_code=204)
    async def remove(self, db: Db, services: Svc, operator: NamedDependency[None], shop_id: PathId) -> None:
        """Delete a shop and everything it has: rows, uploaded files and its vector collection."""
        await remove_shop(db, services.media, services.pipeline, shop_id)


class SignupController(Controller):
    path = "/api/v1/signup"
    tags = ["shops"]

    @post("/", status_code=202, responses=problems(409, 429))
    async def signup(self, request: Request, db: Db, services: Svc, data: JSONBody[ShopCreate]) -> SignupAccepted:
        """Self-service shop creation: the keys go to the shop's email, never into the response."""
        state = request.app.state
        await state.limiter.hit(state.signup_limits, "signup", client_address(request))
        shop = await sign_up(db, services.settings, data.name, str(data.email))
        return SignupAccepted(shop_id=shop.id, detail=f"API keys sent to {shop.email}")
