"""Shops (tenants): creation with seeded taxonomy and first keys, the operator API and self-service signup."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody
from pydantic import BaseModel, EmailStr, Field
from sqlalchemy import delete as sql_delete
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.auth import Caller, create_key, require_operator
from hub.core.deps import Db
from hub.core.errors import ApiError
from hub.core.mail import send_mail
from hub.core.models import AgeGroup, Category, Image, Shop, Style
from hub.core.taxonomy_defaults import AGE_GROUPS, CATEGORIES, STYLES
from hub.core.validation import PathId


@dataclass(frozen=True)
class CreatedShop:
    shop: Shop
    secret_key: str
    publishable_key: str


async def create_shop(session: AsyncSession, name: str, email: str) -> CreatedShop:
    """Create a shop with the default taxonomy and one secret and one publishable key (flushed, not committed)."""
    email = email.strip().lower()
    if await session.scalar(select(Shop.id).where(Shop.email == email)) is not None:
        raise ApiError(409, f"a shop with email {email} already exists")
    shop = Shop(name=name.strip(), email=email)
    session.add(shop)
    await session.flush()
    session.add_all(
        [Category(shop_id=shop.id, name=n) for n in CATEGORIES]
        + [Style(shop_id=shop.id, name=n) for n in STYLES]
        + [AgeGroup(shop_id=shop.id, name=n) for n in AGE_GROUPS]
    )
    secret = await create_key(session, shop.id, "secret", "default secret key")
    publishable = await create_key(session, shop.id, "publishable", "default publishable key")
    return CreatedShop(shop=shop, secret_key=secret.raw, publishable_key=publishable.raw)


def shop_json(shop: Shop) -> dict[str, Any]:
    return {"id": shop.id, "name": shop.name, "email": shop.email, "created_at": shop.created_at}


class ShopCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr


async def _commit_new_shop(session: AsyncSession) -> None:
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise ApiError(409, "a shop with this email already exists") from None


class ShopController(Controller):
    """``GET /api/v1/shop``: the calling shop and its counts."""

    path = "/api/v1/shop"
    tags = ["shops"]

    @get("/")
    async def get_shop(self, db: Db, principal: Caller) -> dict[str, Any]:
        shop = await db.get_one(Shop, principal.shop_id)
        counts = dict(
            (
                await db.execute(
                    select(Image.status, func.count()).where(Image.shop_id == shop.id).group_by(Image.status)
                )
            ).all()
        )
        return shop_json(shop) | {"images": {"total": sum(counts.values()), **counts}}


class OperatorController(Controller):
    """``POST /api/v1/shops``, ``DELETE /api/v1/shops/{id}``: the operator's shop management (``HUB_ADMIN_TOKEN``)."""

    path = "/api/v1/shops"
    tags = ["operator"]
    dependencies = {"operator": Provide(require_operator)}

    @post("/", status_code=201)
    async def create(self, db: Db, operator: NamedDependency[None], data: JSONBody[ShopCreate]) -> dict[str, Any]:
        created = await create_shop(db, data.name, str(data.email))
        await _commit_new_shop(db)
        return shop_json(created.shop) | {
            "secret_key": created.secret_key,
            "publishable_key": created.publishable_key,
        }

    @delete("/{shop_id:int}", status_code=204)
    async def remove(self, request: Request, db: Db, operator: NamedDependency[None], shop_id: PathId) -> None:
        """Delete a shop and everything it has: rows, uploaded files and its vector collection."""
        shop = await db.get(Shop, shop_id)
        if shop is None:
            raise ApiError(404, f"shop {shop_id} not found")
        await db.delete(shop)  # keys, taxonomy, images, products and prompts go with it (ON DELETE CASCADE)
        await db.commit()
        state = request.app.state
        await anyio.to_thread.run_sync(state.media.delete_shop, shop_id)
        await state.pipeline.shop_removed(shop_id)


SIGNUP_MAIL = """Welcome to Fashion Hub, {name}!

Your shop id is {shop_id}. Here are your API keys. They are shown only this once: keep them safe.

Secret key (server side only, full access):
    {secret}

Publishable key (safe in a browser, recommendations only):
    {publishable}

Send a key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.
API reference: {public_url}/schema
"""


class SignupController(Controller):
    """``POST /api/v1/signup``: self-service shop creation; the keys go to the shop's email, not the response."""

    path = "/api/v1/signup"
    tags = ["shops"]

    @post("/", status_code=202)
    async def signup(self, request: Request, db: Db, data: JSONBody[ShopCreate]) -> dict[str, Any]:
        state = request.app.state
        client = request.client.host if request.client else "unknown"
        await state.limiter.hit(state.signup_limits, "signup", client)
        created = await create_shop(db, data.name, str(data.email))
        await _commit_new_shop(db)  # committed before the mail goes out: no network call inside a write
        settings = state.settings
        try:
            await send_mail(
                settings.smtp_url,
                settings.mail_from,
                created.shop.email,
                "Your Fashion Hub API keys",
                SIGNUP_MAIL.format(
                    name=created.shop.name,
                    shop_id=created.shop.id,
                    secret=created.secret_key,
                    publishable=created.publishable_key,
                    public_url=settings.public_url,
                ),
            )
        except BaseException:
            await db.execute(sql_delete(Shop).where(Shop.id == created.shop.id))  # no mail, no shop: try again
            await db.commit()
            raise
        return {"shop_id": created.shop.id, "detail": f"API keys sent to {created.shop.email}"}
