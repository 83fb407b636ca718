"""API keys: made at random, stored hashed, shown once; a shop lists, adds and revokes its own."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import ApiKey, Shop, utcnow
from hub.domain.recent import Recent
from hub.errors import Conflict, not_found

KeyKind = Literal["secret", "publishable"]
KEY_PREFIXES: dict[str, str] = {"secret": "hub_sk_", "publishable": "hub_pk_"}
SHOWN_PREFIX_LEN = 12
LAST_USED_RESOLUTION = timedelta(seconds=60)
MAX_KEY_LENGTH = 200  # a real key is ~40 characters: anything much longer is not worth hashing


def hash_key(raw: str) -> str:
    """Keys are 192-bit random strings, so a plain SHA-256 is a safe lookup hash."""
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class NewKey:
    """A freshly made key: the row and the only copy of the raw key there will ever be."""

    row: ApiKey
    raw: str


@dataclass(frozen=True)
class Principal:
    """The caller: a shop, through one of its keys."""

    shop_id: int
    key_id: int
    kind: str


async def create_key(session: AsyncSession, shop_id: int, kind: str, name: str = "") -> NewKey:
    raw = KEY_PREFIXES[kind] + secrets.token_urlsafe(24)
    row = ApiKey(shop_id=shop_id, kind=kind, name=name, prefix=raw[:SHOWN_PREFIX_LEN], key_hash=hash_key(raw))
    session.add(row)
    await session.flush()
    return NewKey(row=row, raw=raw)


async def find_key(session: AsyncSession, raw: str) -> ApiKey | None:
    """The key row for a raw key of an active shop (revoked ones too: the caller says why it fails)."""
    if len(raw) > MAX_KEY_LENGTH:
        return None
    return await session.scalar(select(ApiKey).join(Shop).where(ApiKey.key_hash == hash_key(raw),
                                                                Shop.active.is_(True)))


@dataclass(frozen=True)
class KnownKey:
    """What authenticating a request needs from a key's row and its shop's."""

    id: int
    shop_id: int
    kind: str
    revoked: bool
    allowed_origins: tuple[str, ...]
    last_used_at: datetime | None

    @classmethod
    def of(cls, row: ApiKey) -> KnownKey:
        return cls(row.id, row.shop_id, row.kind, row.revoked_at is not None, tuple(row.shop.allowed_origins or ()),
                   row.last_used_at)


def key_cache(seconds: float) -> Recent[str, KnownKey]:
    """Keys that authenticated recently, by hash (``HUB_QUERY_CACHE_SECONDS``): a query then reads neither its key
    nor its shop. A change to a key or a shop made in this process (a revocation, new ``allowed_origins``, a
    deleted shop) counts at once; one made by another process within ``seconds``. Unknown keys are never kept
    (their failures are counted)."""
    return Recent(seconds, (ApiKey, Shop))


async def mark_used(session: AsyncSession, known: KnownKey) -> KnownKey:
    """Record that a key was used, at most once a minute (a write per request would serialise them); the key as
    it now is."""
    now = utcnow()
    if known.last_used_at is not None and now - known.last_used_at <= LAST_USED_RESOLUTION:
        return known
    await session.execute(update(ApiKey).where(ApiKey.id == known.id).values(last_used_at=now))
    await session.commit()
    return replace(known, last_used_at=now)


async def list_keys(session: AsyncSession, shop_id: int) -> list[ApiKey]:
    return list(await session.scalars(select(ApiKey).where(ApiKey.shop_id == shop_id).order_by(ApiKey.id)))


async def add_key(session: AsyncSession, shop_id: int, kind: str, name: str, limit: int) -> NewKey:
    """A new key, committed. A shop has at most ``limit`` active keys (HUB_MAX_KEYS_PER_SHOP)."""
    active = await session.scalar(select(func.count()).where(ApiKey.shop_id == shop_id,
                                                             ApiKey.revoked_at.is_(None))) or 0
    if active >= limit:
        raise Conflict(f"this shop has {active} active keys, the most it may have; revoke one first")
    new = await create_key(session, shop_id, kind, name)
    await session.commit()
    return new


async def revoke_key(session: AsyncSession, shop_id: int, key_id: int) -> None:
    """Revoke one of the shop's keys at once (again: nothing); never its last active secret key."""
    row = await session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.shop_id == shop_id))
    if row is None:
        raise not_found("key", key_id)
    if row.revoked_at is not None:
        return
    if row.kind == "secret":
        active_secret = await session.scalar(select(func.count()).where(
            ApiKey.shop_id == shop_id, ApiKey.kind == "secret", ApiKey.revoked_at.is_(None)))
        if active_secret == 1:
            raise Conflict("cannot revoke the shop's last active secret key; create another first")
    row.revoked_at = utcnow()
    await session.commit()
