"""Shops (tenants): creation with seeded taxonomy and first keys, the operator API and self-service signup."""

from __future__ import annotations

import logging
import re
from email.utils import getaddresses
from dataclasses import dataclass

from sqlalchemy import delete as sql_delete
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import AgeGroup, Category, Image, Shop, Style
from hub.domain.keys import create_key
from hub.domain.mail import send_mail
from hub.domain.origins import check_origins
from hub.domain.media import MediaStore
from hub.domain.pipeline import Pipeline
from hub.domain.taxonomy_defaults import AGE_GROUPS, CATEGORIES, STYLES
from hub.errors import Conflict, Invalid, NotFound, Unavailable
from hub.settings import Settings

log = logging.getLogger("hub.shops")


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# one plain address: a dot-atom local part and a domain of letters, digits and hyphens (international domains in
# their xn-- form). No quoting, comments, display names, groups or encoded words: the address stored is exactly the
# address mailed, and a mail header stays one line. The same pattern in the API schema and here.
EMAIL_PATTERN = rf"^[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~.-]+@{_LABEL}(?:\.{_LABEL})+$"


def check_email(email: str) -> str:
    """The address normalised (trimmed, lower case), or ``Invalid``."""
    email = email.strip().lower()
    if (len(email) > 254 or not re.fullmatch(EMAIL_PATTERN, email) or "=?" in email
            or getaddresses([email]) != [("", email)]):
        raise Invalid("email must be one plain address like shop@example.com")
    return email


@dataclass(frozen=True)
class CreatedShop:
    shop: Shop
    secret_key: str
    publishable_key: str


async def create_shop(session: AsyncSession, name: str, email: str) -> CreatedShop:
    """Create a shop with the default taxonomy and one secret and one publishable key (flushed, not committed)."""
    email = check_email(email)
    if await session.scalar(select(Shop.id).where(Shop.email == email)) is not None:
        raise Conflict(f"a shop with email {email} already exists")
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


async def update_shop(session: AsyncSession, shop_id: int, name: str | None,
                      allowed_origins: list[str] | None, search_mode: str | None = None,
                      lexical_weight: float | None = None) -> Shop:
    """Rename the shop, set the sites its publishable key may be used from or its default ranking (None leaves
    a field)."""
    shop = await session.get_one(Shop, shop_id)
    if search_mode is not None:
        shop.search_mode = search_mode
    if lexical_weight is not None:
        shop.lexical_weight = lexical_weight
    if allowed_origins is not None:
        shop.allowed_origins = check_origins(allowed_origins)
    if name is not None:
        shop.name = name.strip()
    await session.commit()
    await session.refresh(shop)
    return shop


async def commit_new_shop(session: AsyncSession) -> None:
    """Commit a created shop; two creations racing for one email: the second is a 409."""
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict("a shop with this email already exists") from None


async def image_counts(session: AsyncSession, shop_id: int) -> dict[str, int]:
    """The shop's images by status."""
    rows = await session.execute(select(Image.status, func.count()).where(Image.shop_id == shop_id)
                                 .group_by(Image.status))
    return {status: int(n) for status, n in rows.all()}


async def remove_shop(session: AsyncSession, media: MediaStore, pipeline: Pipeline, shop_id: int) -> None:
    """Delete a shop and everything it has: rows, uploaded files and its vector collection."""
    shop = await session.get(Shop, shop_id)
    if shop is None:
        raise NotFound(f"shop {shop_id} not found")
    await session.delete(shop)  # keys, taxonomy, images, products and prompts go with it (ON DELETE CASCADE)
    await session.commit()
    await pipeline.shop_removed(shop_id)
    try:
        await media.delete_shop(shop_id)
    except Unavailable as exc:  # (the shop is gone; its files stay until deleted by hand, which the log says)
        log.warning("a deleted shop's media left behind", extra={"shop_id": shop_id, "error": str(exc)})


SIGNUP_MAIL = """Welcome to Fashion Hub, {name}!

Your shop id is {shop_id}. Here are your API keys. They are shown only this once: keep them safe.

Secret key (server side only, full access):
    {secret}

Publishable key (safe in a browser, recommendations only):
    {publishable}

Send a key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.
API reference: {public_url}/schema
"""


async def sign_up(session: AsyncSession, settings: Settings, name: str, email: str) -> Shop:
    """A new shop whose keys are mailed to its address (never answered). Committed before the mail goes out
    (no network call inside a write); if the mail cannot be sent, the shop is removed again."""
    created = await create_shop(session, name, email)
    await commit_new_shop(session)
    try:
        await send_mail(settings.smtp_url, settings.mail_from, created.shop.email, "Your Fashion Hub API keys",
                        SIGNUP_MAIL.format(name=created.shop.name, shop_id=created.shop.id,
                                           secret=created.secret_key, publishable=created.publishable_key,
                                           public_url=settings.public_url))
    except BaseException:
        await session.execute(sql_delete(Shop).where(Shop.id == created.shop.id))  # no mail, no shop: try again
        await session.commit()
        raise
    return created.shop
