"""Connections: a shop links a platform through a connector plugin (``/api/v1/connections``)."""

from __future__ import annotations

import contextlib
import re
import logging
import secrets as random
from datetime import datetime, timedelta
from typing import Any, TypedDict

import anyio
import httpx
from pydantic import ValidationError
from sqlalchemy import delete as sql_delete
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.connectors import (
    AppDeliveries,
    ConnectionContext,
    Connector,
    ConnectorError,
    ImageAuth,
    ScheduledSync,
    secret_fields,
)
from hub.errors import Conflict, HubError, PlatformFailed, RateLimited, Unprocessable, not_found, validation_detail
from hub.domain.jobs import JobOut, create_job, job_json
from hub.db.engine import affected
from hub.db.models import Connection, Image, Job, WebhookDelivery, utcnow
from hub.domain.services import WEBHOOK_SECRET, Services
from hub.logs import redact
from hub.net import DeadlineExceeded, ResponseTooLarge, limited_client
from hub.settings import Settings

log = logging.getLogger("hub.connections")
PLATFORM_TIMEOUT = 30.0


def platform_client(settings: Settings) -> httpx.AsyncClient:
    """The HTTP client connectors get: no connections to private addresses unless allowed (checked when
    connecting, so redirects and changing DNS answers are covered too), every answer bounded in bytes
    (HUB_PLATFORM_MAX_RESPONSE_BYTES) and time (HUB_PLATFORM_DEADLINE)."""
    return limited_client(allow_private=settings.allow_private_fetch, max_bytes=settings.platform_max_response_bytes,
                          deadline=settings.platform_deadline, read_timeout=PLATFORM_TIMEOUT)


def bulk_client(settings: Settings) -> httpx.AsyncClient:
    """The client a catalog read gets for one large document (a product feed): the platform client's address
    checks, an answer as large as a bulk import (HUB_MAX_IMPORT_BYTES) read within HUB_FEED_DEADLINE, at 8 KB/s
    at least after 5 s."""
    return limited_client(allow_private=settings.allow_private_fetch, max_bytes=settings.max_import_bytes,
                          deadline=settings.feed_deadline, read_timeout=PLATFORM_TIMEOUT, min_rate=8192)


class WebhookStatus(TypedDict):
    """Where the connection's webhooks point; ``current`` is false when HUB_PUBLIC_URL moved away from there
    (the hub moves them, and says why in ``problem`` if it cannot)."""

    url: str
    current: bool
    problem: str | None


class ConnectionOut(TypedDict):
    """A connection: ``settings`` without its secrets (``secret_settings`` names them: write-only), ``status``
    connecting → active, or disabled (uninstalled on the platform) or erased; ``sync_error`` why its last
    catalog read failed (the catalog is kept as it was; null once a read succeeds); ``sync_job`` when one
    started."""

    id: int
    connector: str
    name: str
    settings: dict[str, Any]
    secret_settings: list[str]
    status: str
    installed_via: str
    info: dict[str, Any] | None
    webhook_url: str
    webhooks: WebhookStatus
    sync_interval_minutes: int | None
    next_sync_at: datetime | None
    sync_error: str | None
    created_at: datetime
    updated_at: datetime | None


class ConnectedOut(ConnectionOut):
    """A connection just made (or remade): ``sync_job`` is the catalog import it started (null when asked not
    to sync)."""

    sync_job: JobOut | None


def connection_json(row: Connection, connector: Connector | None, services: Services) -> ConnectionOut:
    secrets = sorted(secret_fields(connector.settings_model)) if connector else []
    return {
        "id": row.id,
        "connector": row.connector,
        "name": row.name,
        "settings": row.settings,
        "secret_settings": secrets,  # set, write-only: their values are never returned
        "status": row.status,
        "installed_via": "app" if row.via_app else "credentials",
        "info": row.info,
        "webhook_url": row.webhook_url or services.webhook_url(row),
        "webhooks": webhook_status(row, services),
        "sync_interval_minutes": row.sync_interval_minutes,
        "next_sync_at": row.next_sync_at,
        "sync_error": row.sync_error,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def find_connector(plugins: Any, name: str) -> Connector:
    connectors = plugins.connectors()
    if name not in connectors:
        known = ", ".join(sorted(connectors)) or "none installed"
        raise Unprocessable(f"unknown connector {name!r} (available: {known})")
    connector: Connector = connectors[name]
    return connector


MIN_SYNC_INTERVAL = 5  # minutes
MAX_SYNC_INTERVAL = 7 * 24 * 60


def check_sync_interval(minutes: int | None) -> int | None:
    """A connection's schedule: None or 0 is none; otherwise 5 minutes to a week (``Invalid`` otherwise)."""
    if not minutes:
        return None
    if not MIN_SYNC_INTERVAL <= minutes <= MAX_SYNC_INTERVAL:
        raise Unprocessable(f"sync_interval_minutes must be 0 (off) or {MIN_SYNC_INTERVAL}-{MAX_SYNC_INTERVAL}")
    return minutes


def default_sync_interval(connector: Connector, settings: Any) -> int | None:
    """The connector's schedule for these settings (``ScheduledSync``), kept within the allowed range."""
    if not isinstance(connector, ScheduledSync):
        return None
    minutes = connector.sync_interval_minutes(settings)
    return None if not minutes else min(max(int(minutes), MIN_SYNC_INTERVAL), MAX_SYNC_INTERVAL)


def schedule_next_sync(row: Connection) -> None:
    """The next scheduled sync is one interval after the latest (any sync, asked for or scheduled)."""
    row.next_sync_at = (utcnow() + timedelta(minutes=row.sync_interval_minutes)
                        if row.sync_interval_minutes else None)


async def start_sync(pipeline: Any, db: Any, row: Connection) -> Any:
    """A full catalog read as a job (409 while one runs); the next scheduled one moves an interval on. Without a
    pipeline in this process (a command), a running service's sweep starts the queued job."""
    schedule_next_sync(row)  # committed with the job, or rolled back with it
    job = await create_job(db, row.shop_id, "sync", {}, connection_id=row.id)
    if pipeline is not None:
        await pipeline.job_queued(job.id)
    return job


HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
MAX_IMAGE_HEADERS = 20


async def image_fetch_headers(services: Services, img: Image) -> dict[str, str]:
    """The headers a connection's connector asks for when one of its images is fetched (``ImageAuth``); ``{}`` for
    every other image. What the connector returns is checked: header names and values a request can carry."""
    connectors = services.plugins.connectors()
    if img.connection_id is None or not img.image_url or not any(isinstance(c, ImageAuth)
                                                                 for c in connectors.values()):
        return {}
    async with services.sessions() as session:
        row = await session.get(Connection, img.connection_id)
        await session.commit()
    connector = connectors.get(row.connector) if row is not None else None
    if row is None or not isinstance(connector, ImageAuth) or not row.secrets:
        return {}
    settings = services.context(row, connector, None).settings
    headers = dict(connector.image_headers(settings, img.image_url) or {})
    if headers and not img.image_url.startswith("https://") and not services.settings.allow_private_fetch:
        raise ConnectorError("the image needs credentials, and the hub sends credentials only over https")
    if len(headers) > MAX_IMAGE_HEADERS or not all(
            isinstance(k, str) and isinstance(v, str) and HEADER_NAME.fullmatch(k) and v.isprintable()
            and "\r" not in v and "\n" not in v for k, v in headers.items()):
        raise ConnectorError(f"the {row.connector} connector asked for image headers a request cannot carry")
    return headers


SYNCS_PER_SHOP_PER_SWEEP = 3


async def start_due_syncs(services: Services, limit: int = 100) -> list[int]:
    """Start the scheduled syncs that are due (the sweep calls this); each connection is claimed by moving its
    ``next_sync_at`` one interval on, so two sweeps never start one sync twice. A connection whose sync is still
    running waits for the next interval; one whose shop is at its limit of jobs tries again in 5 minutes. A shop
    starts at most ``SYNCS_PER_SHOP_PER_SWEEP`` per sweep: one shop's many connections cannot hold up the others."""
    now = utcnow()
    started: list[int] = []
    per_shop: dict[int, int] = {}
    async with services.sessions() as session:
        due = list(await session.execute(
            select(Connection.id, Connection.shop_id, Connection.next_sync_at, Connection.sync_interval_minutes)
            .where(Connection.status == "active", Connection.sync_interval_minutes.is_not(None),
                   Connection.next_sync_at <= now)
            .order_by(Connection.next_sync_at).limit(limit)))
        await session.commit()
        for connection_id, shop_id, due_at, minutes in due:
            if per_shop.get(shop_id, 0) >= SYNCS_PER_SHOP_PER_SWEEP:
                continue  # still due: the next sweep
            claimed = await session.execute(
                update(Connection).where(Connection.id == connection_id, Connection.next_sync_at == due_at)
                .values(next_sync_at=now + timedelta(minutes=minutes or MIN_SYNC_INTERVAL),
                        updated_at=Connection.updated_at))  # the schedule moving is not a change of the connection
            await session.commit()
            if affected(claimed) != 1:
                continue
            per_shop[shop_id] = per_shop.get(shop_id, 0) + 1
            try:
                job = await create_job(session, shop_id, "sync", {"scheduled": True}, connection_id=connection_id)
            except Conflict:
                continue
            except RateLimited:
                await session.execute(update(Connection).where(Connection.id == connection_id).values(
                    next_sync_at=now + timedelta(minutes=MIN_SYNC_INTERVAL), updated_at=Connection.updated_at))
                await session.commit()
                continue
            started.append(job.id)
    return started


def platform_problem(connector: Connector, exc: BaseException) -> HubError:
    """What the shop is told when the platform (or the connector reading it) fails during a request."""
    if isinstance(exc, ConnectorError):
        return Unprocessable(f"{connector.name}: {redact(str(exc))}")
    if isinstance(exc, ResponseTooLarge | DeadlineExceeded | TimeoutError):
        reason = "took too long" if not isinstance(exc, ResponseTooLarge) else "answered with too much data"
        return PlatformFailed(f"{connector.name}: the platform {reason} ({redact(str(exc)) or type(exc).__name__})")
    if isinstance(exc, httpx.DecodingError):
        return PlatformFailed(f"{connector.name}: the platform's answer could not be decoded ({redact(str(exc))})")
    if isinstance(exc, httpx.HTTPError):
        return Unprocessable(f"{connector.name}: the platform could not be reached ({redact(str(exc))})")
    log.warning("connector failed on an unexpected answer", extra={"connector": connector.name,
                                                                   "reason": redact(f"{type(exc).__name__}: {exc}")})
    return PlatformFailed(f"{connector.name}: the platform's answer was not understood ({type(exc).__name__})")


async def talk_to_platform(settings: Settings, connector: Connector, call: Any) -> Any:
    """Run ``call(http)`` against the platform within HUB_CONNECT_DEADLINE; failures become the shop's 4xx/502.
    Never called with a database write transaction open."""
    async with platform_client(settings) as http:
        try:
            with anyio.fail_after(settings.connect_deadline):
                return await call(http)
        except HubError:
            raise
        except Exception as exc:  # noqa: BLE001 - a platform's or connector's failure is the shop's to see
            raise platform_problem(connector, exc) from None


async def open_connection(
    db: Any, services: Services, shop_id: int, connector: Connector, name: str, values: dict[str, Any], sync: bool,
    existing: Connection | None = None, via_app: bool = False, sync_interval: int | None = None,
) -> ConnectedOut:
    """Validate the settings, check them and register webhooks with the platform, then activate the connection
    and start the first sync. ``existing`` is reconnected in place.

    No network call happens inside a write transaction: a new connection is first committed as ``connecting``
    (its id goes into the webhook URL, and a platform that pings that URL while the webhook is being created —
    WooCommerce does — gets an answer), the platform is called with no transaction open, and the outcome is a
    second short write: ``active``, or the row removed again if the platform disagrees.

    ``sync_interval`` (minutes; 0 turns it off) schedules full re-reads; None keeps a reconnected connection's
    schedule, or takes the connector's default (``ScheduledSync``) for a new one.
    """
    interval = check_sync_interval(sync_interval) if sync_interval is not None else None
    try:
        validated = connector.settings_model.model_validate(values)
    except ValidationError as exc:
        raise Unprocessable(f"invalid settings for {connector.name}: {validation_detail(exc)}") from None
    values = validated.model_dump(mode="json")
    secret = secret_fields(connector.settings_model)
    public = {k: v for k, v in values.items() if k not in secret}
    old_webhooks: dict[str, Any] = {}
    old_context = None
    if existing is not None:
        row = existing
        old_webhooks = dict(row.webhook_state or {})
        with contextlib.suppress(Exception):  # the old credentials may not even decrypt: best effort only
            old_context = services.context(row, connector, None)
        webhook_secret = (old_context.webhook_secret if old_context else None) or random.token_urlsafe(32)
        await db.commit()  # end the read: no transaction stays open while the platform is called
    else:
        webhook_secret = random.token_urlsafe(32)
        row = Connection(shop_id=shop_id, connector=connector.name, name=name or connector.name, settings=public,
                         status="connecting", via_app=via_app,
                         secrets=services.secrets.seal({k: v for k, v in values.items() if k in secret}
                                                       | {WEBHOOK_SECRET: webhook_secret}))
        db.add(row)
        await db.commit()
    url = services.webhook_url(row)

    async def connect(http: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
        async with bulk_client(services.settings) as bulk:  # (a check may read the beginning of a large feed)
            ctx = ConnectionContext(validated, http, url, webhook_secret, installed_by_app=via_app, bulk_http=bulk)
            info = await connector.check(ctx) or {}
        if old_webhooks and old_context is not None:
            with contextlib.suppress(ConnectorError, httpx.HTTPError):
                await connector.unregister_webhooks(old_context.using(http), old_webhooks)
        return info, await connector.register_webhooks(ctx) or {}

    try:
        info, webhook_state = await talk_to_platform(services.settings, connector, connect)
    except HubError:
        if existing is None:
            await db.execute(sql_delete(Connection).where(Connection.id == row.id, Connection.status == "connecting"))
            await db.commit()
        raise
    fresh = await db.get(Connection, row.id, populate_existing=True)
    if fresh is None:  # deleted while we talked to the platform: take our webhooks back
        with contextlib.suppress(HubError):
            await talk_to_platform(services.settings, connector, lambda http: connector.unregister_webhooks(
                ConnectionContext(validated, http, url, webhook_secret, installed_by_app=via_app), webhook_state))
        raise Conflict("the connection was deleted while it was being connected")
    fresh.name = name or fresh.name or connector.name
    fresh.settings = public
    fresh.secrets = services.secrets.seal({k: v for k, v in values.items() if k in secret}
                                          | {WEBHOOK_SECRET: webhook_secret})
    fresh.info, fresh.webhook_state, fresh.webhook_url = info, webhook_state, url
    fresh.status, fresh.via_app = "active", via_app or fresh.via_app
    fresh.catalog_state, fresh.sync_error = {}, None  # (settings that may name another catalog: read it whole)
    if sync_interval is not None:
        fresh.sync_interval_minutes = interval
    elif existing is None:
        fresh.sync_interval_minutes = default_sync_interval(connector, validated)
    schedule_next_sync(fresh)
    if existing is not None:  # a new installation: what was received for the old one is no longer its history
        await db.execute(sql_delete(WebhookDelivery).where(WebhookDelivery.connection_id == fresh.id))
    await db.commit()
    body: ConnectedOut = {**connection_json(fresh, connector, services), "sync_job": None}
    if sync:
        running = await db.scalar(select(Job).where(Job.connection_id == fresh.id,
                                                    Job.status.in_(("queued", "running"))))
        body["sync_job"] = job_json(running or await start_sync(services.pipeline, db, fresh))
    return body


def webhook_status(row: Connection, services: Services) -> WebhookStatus:
    """Where the connection's webhooks point, whether that is where they should (the current HUB_PUBLIC_URL),
    and why moving them failed, if it did."""
    expected = services.webhook_url(row)
    return {"url": row.webhook_url or expected, "current": (row.webhook_url or expected) == expected,
            "problem": (row.info or {}).get("webhook_problem")}


async def stale_webhook_connections(services: Services) -> list[int]:
    """Active connections whose webhooks point at a URL that is not the current one (HUB_PUBLIC_URL changed)."""
    async with services.sessions() as session:
        rows = list(await session.scalars(select(Connection).where(Connection.status == "active",
                                                                   Connection.webhook_url.is_not(None))))
    return [row.id for row in rows if row.webhook_url != services.webhook_url(row)]


async def move_webhooks(services: Services) -> dict[str, int]:
    """For the sweep: re-register the webhooks of connections whose URL changed (HUB_PUBLIC_URL moved), one at a
    time, with no transaction open while the platform is called. A failure is kept on the connection (its
    ``webhooks.problem``) and tried again after a while; connections made before URLs were recorded adopt the
    current one."""
    now = utcnow()
    moved = failed = 0
    async with services.sessions() as session:
        legacy = list(await session.scalars(select(Connection).where(Connection.webhook_url.is_(None),
                                                                     Connection.status == "active")))
        for old in legacy:
            old.webhook_url = services.webhook_url(old)
        await session.commit()
    for connection_id in await stale_webhook_connections(services):
        async with services.sessions() as session:
            row = await session.get(Connection, connection_id)
            connector = services.plugins.connectors().get(row.connector) if row is not None else None
            if row is None or connector is None:
                continue
            retry_at = (row.info or {}).get("webhook_retry_at")
            if retry_at and datetime.fromisoformat(retry_at) > now:
                continue
            try:
                old_ctx = services.context(row, connector, None)
                opened = services.secrets.open(row.secrets)
            except Exception as exc:  # noqa: BLE001 - one unreadable connection does not stop the others
                log.warning("webhooks not moved: the connection cannot be read", extra={
                    "connection_id": connection_id, "reason": type(exc).__name__})
                continue
            new_url = services.webhook_url(row)
            opened.setdefault(WEBHOOK_SECRET, random.token_urlsafe(32))  # (legacy connections get one now)
            old_state = dict(row.webhook_state or {})
            await session.commit()

        async def move(http: httpx.AsyncClient) -> dict[str, Any]:
            with contextlib.suppress(ConnectorError, httpx.HTTPError):
                await connector.unregister_webhooks(old_ctx.using(http), old_state)  # noqa: B023 - used at once
            ctx = old_ctx.using(http, webhook_url=new_url, webhook_secret=opened[WEBHOOK_SECRET])  # noqa: B023
            return await connector.register_webhooks(ctx) or {}  # noqa: B023

        try:
            state = await talk_to_platform(services.settings, connector, move)
        except HubError as exc:
            failed += 1
            async with services.sessions() as session:
                row = await session.get(Connection, connection_id)
                if row is not None:
                    tries = int((row.info or {}).get("webhook_tries", 0)) + 1
                    row.info = {**(row.info or {}), "webhook_problem": f"moving the webhooks to {new_url} failed: "
                                                                      f"{exc.detail}", "webhook_tries": tries,
                                "webhook_retry_at": (utcnow() + services.settings.retry_delay(tries)).isoformat()}
                    await session.commit()
            log.warning("webhooks not moved to the new public URL", extra={"connection_id": connection_id,
                                                                           "reason": str(exc.detail)[:300]})
            continue
        async with services.sessions() as session:
            row = await session.get(Connection, connection_id)
            if row is None:
                continue
            row.webhook_state, row.webhook_url = state, new_url
            row.secrets = services.secrets.seal(opened)
            row.info = {k: v for k, v in (row.info or {}).items()
                        if k not in ("webhook_problem", "webhook_retry_at", "webhook_tries")}
            await session.commit()
        moved += 1
        log.info("webhooks moved to the new public URL", extra={"connection_id": connection_id})
    return {"webhooks_moved": moved, "webhooks_not_moved": failed}


async def recognise_app_installs(services: Services) -> int:
    """Connections made before the hub recorded how they were installed: mark those whose settings are an
    install of the operator's app (``AppDeliveries.installed_through_app``), so app-wide compliance deliveries
    reach them. Run once per process, by the sweep."""
    found = 0
    async with services.sessions() as session:
        rows = list(await session.scalars(select(Connection).where(Connection.via_app.is_(False),
                                                                   Connection.status.in_(("active", "disabled")))))
        for row in rows:
            connector = services.plugins.connectors().get(row.connector)
            if not isinstance(connector, AppDeliveries):
                continue
            try:
                ctx = services.context(row, connector, None)
                if connector.installed_through_app(ctx.settings):
                    row.via_app = True
                    found += 1
            except Exception as exc:  # noqa: BLE001 - one unreadable connection does not stop the others
                log.warning("connection not checked for an app install", extra={"connection_id": row.id,
                                                                               "reason": type(exc).__name__})
        await session.commit()
    return found


async def drop_abandoned_connections(services: Services) -> int:
    """Connections left ``connecting`` by a process that died mid-connect (for the sweep): they never became
    active and hold nothing but their settings."""
    cutoff = utcnow() - timedelta(seconds=2 * services.settings.connect_deadline)
    async with services.sessions() as session:
        result = await session.execute(sql_delete(Connection).where(Connection.status == "connecting",
                                                                    Connection.created_at < cutoff))
        await session.commit()
        return affected(result)


async def get_connection(session: AsyncSession, shop_id: int, connection_id: int) -> Connection:
    row = await session.scalar(select(Connection).where(Connection.id == connection_id, Connection.shop_id == shop_id))
    if row is None:
        raise not_found("connection", connection_id)
    return row


async def list_connections(session: AsyncSession, shop_id: int) -> list[Connection]:
    return list(await session.scalars(select(Connection).where(Connection.shop_id == shop_id).order_by(Connection.id)))


async def update_connection(session: AsyncSession, shop_id: int, connection_id: int, name: str | None,
                            sync_interval: int | None) -> Connection:
    """Rename a connection or change its schedule (``sync_interval`` minutes, 0 off; None leaves it)."""
    row = await get_connection(session, shop_id, connection_id)
    if sync_interval is not None:
        row.sync_interval_minutes = check_sync_interval(sync_interval)
        schedule_next_sync(row)
    if name is not None:
        row.name = name
    await session.commit()
    await session.refresh(row)
    return row


async def sync_connection(session: AsyncSession, services: Services, shop_id: int, connection_id: int) -> Job:
    """Re-read the whole catalog (a job; 409 while one runs). Products gone from the platform are removed."""
    row = await get_connection(session, shop_id, connection_id)
    if row.status != "active":
        raise Conflict(f"connection {connection_id} is {row.status}; reconnect it to sync")
    if row.connector not in services.plugins.connectors():
        raise Conflict(f"the {row.connector} connector is not installed")
    job: Job = await start_sync(services.pipeline, session, row)
    return job


async def remove_connection(session: AsyncSession, services: Services, shop_id: int, connection_id: int) -> None:
    """Unregister the webhooks (best effort), then delete the connection with its products, images, vectors."""
    row = await get_connection(session, shop_id, connection_id)
    connector = services.plugins.connectors().get(row.connector)
    if connector is not None and row.webhook_state:
        try:
            ctx = services.context(row, connector, None)
            await session.commit()  # end the read: no transaction stays open while the platform is called
            await talk_to_platform(services.settings, connector, lambda http: connector.unregister_webhooks(
                ctx.using(http), row.webhook_state))
        except Exception as exc:  # noqa: BLE001 - the shop asked to delete: do it, and say why webhooks stay
            log.warning("webhooks not removed", extra={"connection_id": row.id,
                                                       "reason": redact(str(getattr(exc, "detail", exc)))[:200]})
    images = list((await session.execute(select(Image.id, Image.photo).where(Image.connection_id == row.id))).all())
    await session.execute(sql_delete(Connection).where(Connection.id == row.id))  # products and images cascade
    await session.commit()
    services.intake_connections.clear()  # (a delete statement is no ORM change: hub.domain.recent does not see it)
    await services.media.tidy([photo for _, photo in images])
    if images and services.pipeline is not None:
        await services.pipeline.images_removed(shop_id, [i for i, _ in images])
