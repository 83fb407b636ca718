"""The merchant console's sessions: a shop signs in with a secret key; the browser keeps a random token (an
``HttpOnly`` cookie), the database its hash. A session ends when it is signed out, when it expires, or when the key
that opened it is revoked. Each session has its own CSRF token for the console's forms."""

from __future__ import annotations

import hashlib
import logging
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import (
    ApiKey,
    Connection,
    ConsoleLink,
    ConsoleSession,
    Image,
    Job,
    Shop,
    WebhookDelivery,
    utcnow,
)
from hub.domain.mail import send_mail
from hub.domain.shops import check_email
from hub.settings import Settings
from hub.domain.keys import find_key
from hub.errors import Forbidden, Invalid, Unauthenticated, Unavailable

log = logging.getLogger("hub.console")
SESSION_LIFETIME = timedelta(hours=12)
MAX_TOKEN_LENGTH = 100


@dataclass(frozen=True)
class SignedIn:
    """An open console session: whose, through which key, and the CSRF token its forms carry."""

    session_id: int
    shop_id: int
    key_id: int | None  # None: opened by a sign-in link
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
        select(ConsoleSession, Shop.name).outerjoin(ApiKey, ApiKey.id == ConsoleSession.key_id)
        .join(Shop, Shop.id == ConsoleSession.shop_id)
        .where(ConsoleSession.token_hash == _hash(token), ConsoleSession.expires_at > utcnow(),
               ConsoleSession.key_id.is_(None) | ApiKey.revoked_at.is_(None), Shop.active.is_(True)))).first()
    if found is None:
        return None
    row, shop_name = found
    return SignedIn(row.id, row.shop_id, row.key_id, shop_name, row.csrf_token)


LINK_LIFETIME = timedelta(minutes=15)


async def mail_sign_in_link(session: AsyncSession, settings: Settings, email: str) -> None:
    """Mail a one-use sign-in link to the shop with this address; nothing (and no hint) when none has it — nor
    when the mail server fails (logged): the answer must not tell which addresses belong to a shop."""
    if not settings.smtp_url:
        raise Unavailable("mail", "sign-in links need HUB_SMTP_URL; sign in with a secret key")
    try:
        address = check_email(email)
    except Invalid:
        return
    shop = await session.scalar(select(Shop).where(Shop.email == address, Shop.active.is_(True)))
    if shop is None:
        await session.commit()
        return
    token = secrets.token_urlsafe(32)
    session.add(ConsoleLink(shop_id=shop.id, token_hash=_hash(token), expires_at=utcnow() + LINK_LIFETIME))
    await session.execute(delete(ConsoleLink).where(ConsoleLink.expires_at < utcnow()))
    await session.commit()  # no transaction stays open while the mail server is called
    minutes = int(LINK_LIFETIME.total_seconds() // 60)
    try:
        await send_mail(settings.smtp_url, settings.mail_from, address, "Your Fashion Hub sign-in link",
                        f"Sign in to {shop.name}'s Fashion Hub console (the link works once, for {minutes} "
                        f"minutes):\n\n{settings.public_url}/console/link?token={token}\n\n"
                        "If you did not ask for it, ignore this mail: nobody can use it without this mailbox.")
    except Unavailable as exc:
        log.warning("sign-in link not sent", extra={"shop_id": shop.id, "reason": exc.detail})


async def link_shop(session: AsyncSession, token: str) -> str | None:
    """The shop name a sign-in link opens (to confirm), or None when it is unknown, used or expired."""
    found = await session.scalar(select(Shop.name).join(ConsoleLink, ConsoleLink.shop_id == Shop.id).where(
        ConsoleLink.token_hash == _hash(token[:MAX_TOKEN_LENGTH]), ConsoleLink.used_at.is_(None),
        ConsoleLink.expires_at > utcnow(), Shop.active.is_(True)))
    await session.commit()
    return found


async def sign_in_by_link(session: AsyncSession, token: str) -> tuple[str, SignedIn]:
    """Use a sign-in link once: a new session for its shop (ended by sign-out or expiry)."""
    now = utcnow()
    used = await session.execute(update(ConsoleLink).where(
        ConsoleLink.token_hash == _hash(token[:MAX_TOKEN_LENGTH]), ConsoleLink.used_at.is_(None),
        ConsoleLink.expires_at > now).values(used_at=now).returning(ConsoleLink.shop_id))
    shop_id = used.scalar()
    shop = await session.get(Shop, shop_id) if shop_id is not None else None
    if shop is None or not shop.active:
        await session.rollback()
        raise Unauthenticated("this sign-in link was used already or has expired; ask for a new one")
    raw = secrets.token_urlsafe(32)
    row = ConsoleSession(shop_id=shop.id, key_id=None, token_hash=_hash(raw), csrf_token=secrets.token_urlsafe(32),
                         expires_at=now + SESSION_LIFETIME)
    session.add(row)
    await session.commit()
    return raw, SignedIn(row.id, shop.id, None, shop.name, row.csrf_token)


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
    rows = list(await session.scalars(select(Connection).where(Connection.shop_id == shop_id).order_by(Connection.id)))
    ids = [row.id for row in rows]
    # three grouped queries for all of the shop's connections (the overview polls this), not three per connection
    deliveries = {cid: (last, failing) for cid, last, failing in await session.execute(
        select(WebhookDelivery.connection_id, func.max(WebhookDelivery.received_at),
               func.count().filter(WebhookDelivery.status.in_(("failed", "rejected"))))
        .where(WebhookDelivery.connection_id.in_(ids)).group_by(WebhookDelivery.connection_id))}
    latest = select(func.max(Job.id)).where(Job.connection_id.in_(ids), Job.kind == "sync").group_by(Job.connection_id)
    syncs = {job.connection_id: job for job in await session.scalars(select(Job).where(Job.id.in_(latest)))}
    connections = []
    for row in rows:
        last_delivery, failing = deliveries.get(row.id, (None, 0))
        sync = syncs.get(row.id)
        connections.append(ConnectionHealth(row.id, row.name, row.connector, row.status, _iso(last_delivery),
                                            int(failing or 0),
                                            _iso(sync.finished_at or sync.started_at) if sync else None,
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
