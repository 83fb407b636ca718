"""The merchant console's sessions: a shop signs in with a secret key; the browser keeps a random token (an
``HttpOnly`` cookie), the database its hash. A session ends when it is signed out, when it expires, or when the key
that opened it is revoked. Each session has its own CSRF token for the console's forms."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import ApiKey, Connection, ConsoleSession, Image, Job, Shop, WebhookDelivery, utcnow
from hub.domain.keys import find_key
from hub.errors import Forbidden, Unauthenticated

SESSION_LIFETIME = timedelta(hours=12)
MAX_TOKEN_LENGTH = 100


@dataclass(frozen=True)
class SignedIn:
    """An open console session: whose, through which key, and the CSRF token its forms carry."""

    session_id: int
    shop_id: int
    key_id: int
    shop_name: str
    csrf_token: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def sign_in(session: AsyncSession, raw_key: str) -> tuple[str, SignedIn]:
    """A new session for a secret key: the raw token for the cookie, and the session. A publishable, revoked or
    unknown key is refused (the caller counts failures per address)."""
    key = await find_key(session, raw_key.strip()) if raw_key.strip() else None
    if key is None or key.revoked_at is not None:
        raise Unauthenticated("that key does not open this console (unknown or revoked)")
    if key.kind != "secret":
        raise Forbidden("a publishable key cannot sign in: use a secret key (hub_sk_…)")
    token = secrets.token_urlsafe(32)
    row = ConsoleSession(shop_id=key.shop_id, key_id=key.id, token_hash=_hash(token),
                         csrf_token=secrets.token_urlsafe(32), expires_at=utcnow() + SESSION_LIFETIME)
    session.add(row)
    await session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < utcnow()))  # tidy as we go
    await session.commit()
    return token, SignedIn(row.id, key.shop_id, key.id, key.shop.name, row.csrf_token)


async def find_session(session: AsyncSession, token: str | None) -> SignedIn | None:
    """The open session of a cookie's token: not expired, its key not revoked, its shop active; else None."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    found = (await session.execute(
        select(ConsoleSession, Shop.name).join(ApiKey, ApiKey.id == ConsoleSession.key_id)
        .join(Shop, Shop.id == ConsoleSession.shop_id)
        .where(ConsoleSession.token_hash == _hash(token), ConsoleSession.expires_at > utcnow(),
               ApiKey.revoked_at.is_(None), Shop.active.is_(True)))).first()
    if found is None:
        return None
    row, shop_name = found
    return SignedIn(row.id, row.shop_id, row.key_id, shop_name, row.csrf_token)


def csrf_matches(signed_in: SignedIn, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(signed_in.csrf_token.encode(), (given or "").encode())


async def sign_out(session: AsyncSession, signed_in: SignedIn) -> None:
    await session.execute(delete(ConsoleSession).where(ConsoleSession.id == signed_in.session_id))
    await session.commit()


@dataclass(frozen=True)
class ConnectionHealth:
    id: int
    name: str
    connector: str
    status: str
    last_delivery_at: str | None
    failing_deliveries: int
    last_sync_at: str | None
    last_sync_status: str | None


@dataclass(frozen=True)
class JobProgress:
    id: int
    kind: str
    status: str
    total: int | None
    done: int
    failed: int
    error: str | None


@dataclass(frozen=True)
class Overview:
    """What the console's overview shows, also as JSON for its live updates."""

    images: dict[str, int]
    connections: list[ConnectionHealth]
    jobs: list[JobProgress]


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if moment is not None else None


async def overview(session: AsyncSession, shop_id: int) -> Overview:
    """Images by status, each connection's health (last delivery, failing deliveries, last sync), and the jobs
    running or queued plus the latest finished ones."""
    counts = {status: count for status, count in await session.execute(
        select(Image.status, func.count()).where(Image.shop_id == shop_id).group_by(Image.status))}
    images = {status: int(counts.get(status, 0)) for status in ("pending", "embedding", "ready", "failed")}
    images["total"] = sum(images.values())
    connections = []
    for row in await session.scalars(select(Connection).where(Connection.shop_id == shop_id).order_by(Connection.id)):
        last_delivery = await session.scalar(select(func.max(WebhookDelivery.received_at))
                                             .where(WebhookDelivery.connection_id == row.id))
        failing = await session.scalar(select(func.count()).where(
            WebhookDelivery.connection_id == row.id, WebhookDelivery.status.in_(("failed", "rejected")))) or 0
        sync = await session.scalar(select(Job).where(Job.connection_id == row.id, Job.kind == "sync")
                                    .order_by(Job.id.desc()).limit(1))
        connections.append(ConnectionHealth(row.id, row.name, row.connector, row.status, _iso(last_delivery),
                                            int(failing), _iso(sync.finished_at or sync.started_at) if sync else None,
                                            sync.status if sync else None))
    active = list(await session.scalars(select(Job).where(Job.shop_id == shop_id,
                                                          Job.status.in_(("queued", "running")))
                                        .order_by(Job.id.desc()).limit(20)))
    finished = list(await session.scalars(select(Job).where(Job.shop_id == shop_id,
                                                            Job.status.in_(("succeeded", "failed")))
                                          .order_by(Job.id.desc()).limit(5)))
    jobs = [JobProgress(j.id, j.kind, j.status, j.total, j.done, j.failed, j.error) for j in active + finished]
    await session.commit()
    return Overview(images, connections, jobs)
