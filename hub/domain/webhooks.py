"""Webhook deliveries: verify, record, deduplicate, answer fast; a task applies them.

The connector checks the signature over the raw body (401 and nothing stored if it fails) and parses the
delivery (400, recorded as ``rejected``, if malformed — including a body whose shape does not match the topic
its unsigned headers claim). A body seen before is answered 200 as a ``duplicate`` and not processed again,
whatever delivery id it came with (see ``content_key``). Everything else is stored as ``received`` with a lease
and handed to the ``ProcessDelivery`` task; if that task never runs (broker down, worker killed), the sweep
hands it out again. The task parses the stored delivery again, reads ``ProductChanged`` products from the
platform with no transaction open, and applies the events in one short transaction.

``POST /webhooks/{connector}`` takes a platform's app-wide deliveries (Shopify's compliance topics): verified
once with the operator's app secret, routed to that store's app-installed connections only.
"""

from __future__ import annotations

import hashlib
from contextlib import suppress
from copy import deepcopy
import logging
from datetime import datetime, timedelta
from typing import Any, Literal, TypedDict

from sqlalchemy import delete, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.connectors import (
    AccessCheck,
    AppDeliveries,
    ConnectionDisabled,
    ConnectionErased,
    Connector,
    Delivery,
    DeliveryRejected,
    ParsedDelivery,
    ProductChanged,
    ProductReader,
)
from hub.connectors import check_event
from hub.domain.catalog import CatalogWriter, Changes, notify
from hub.domain.connections import platform_client
from hub.errors import HubError, Invalid, NotFound, Unauthenticated, Unavailable, not_found
from hub.db.engine import affected
from hub.db.models import Connection, WebhookDelivery, utcnow
from hub.domain.pagination import decode_cursor, page
from hub.domain.services import Services
from hub.logs import redact

log = logging.getLogger("hub.webhooks")
MAX_WEBHOOK_BYTES = 5 * 1024 * 1024
UNSTORED_HEADERS = {"authorization", "cookie", "x-api-key"}


def parse_delivery(connector: Connector, ctx: Any, delivery: Delivery) -> ParsedDelivery:
    """The connector's parse; anything it raises besides ``DeliveryRejected`` is a rejection too (logged)."""
    try:
        return connector.parse(ctx, delivery)
    except DeliveryRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin bug must not become a 500
        log.exception("connector parse failed", extra={"connector": connector.name})
        raise DeliveryRejected(f"the {connector.name} connector could not read this delivery ({type(exc).__name__})") from None


def content_key(parsed: ParsedDelivery, body: bytes) -> str:
    """What a replay is recognised by: the body, whatever delivery id the (unsigned) headers claim. A delivery
    whose every event is re-read from the platform (``ProductChanged``) cannot do anything the platform does not
    confirm, so the same body may come again legitimately (WooCommerce's delete is ``{"id": n}`` every time):
    there the platform's delivery id is part of the key."""
    digest = hashlib.sha256()
    if parsed.events and all(isinstance(e, ProductChanged) for e in parsed.events):
        digest.update(b"re-read\0" + (parsed.delivery_id or "").encode() + b"\0")
    digest.update(body)
    return digest.hexdigest()


async def accept(services: Services, db: Any, row: Connection, connector: Connector, delivery: Delivery,
                 *, verified: bool = False) -> tuple[str, int | None]:
    """Verify (unless the caller did, with the app's secret), parse, deduplicate and record one delivery for one
    connection; (status, the recorded delivery's id). Answered once the delivery is durable, and nothing else:
    the work it asks for is queued (see ``DeliveryInbox``)."""
    ctx = services.context(row, connector, None)
    if not verified:
        try:
            authentic = bool(connector.verify(ctx, delivery))
        except Exception:  # noqa: BLE001 - a verify that blows up did not verify anything
            log.warning("connector verify raised", extra={"connector": connector.name}, exc_info=True)
            authentic = False
        if not authentic:
            log.warning("webhook signature rejected", extra={"connection_id": row.id})
            raise Unauthenticated("the webhook signature does not match this connection")

    await db.commit()  # (the connection is read: no transaction is held while the delivery waits to be stored)
    headers = {k: v for k, v in delivery.headers.items() if k not in UNSTORED_HEADERS}
    common: dict[str, Any] = {
        "connection_id": row.id, "headers": headers, "app_wide": delivery.app_wide,
        "received_at": delivery.received_at or utcnow(), "delivery_id": None, "content_key": None, "topic": "",
        "status": "received", "error": None, "body": None, "processed_at": None, "next_attempt_at": None,
        "attempts": 0, "duplicates": 0, "summary": {}}  # (every row the inbox writes has every column)
    try:
        parsed = parse_delivery(connector, ctx, delivery)
    except DeliveryRejected as exc:
        # recorded once per body: the same rejected body again (a replay under other headers) adds nothing
        with suppress(IntegrityError):  # (its connection deleted meanwhile: nothing to record it for)
            await services.inbox.record(common | {
                "status": "rejected", "error": str(exc)[:2000], "body": delivery.body[:65536],
                "content_key": "rejected:" + hashlib.sha256(delivery.body).hexdigest()[:55],
                "processed_at": utcnow()})
        raise Invalid(f"malformed delivery: {exc}") from None
    if not parsed.events and not parsed.ignored and parsed.delivery_id is None:
        return "processed", None  # a ping: nothing to apply, and (unsigned) nothing worth keeping

    key = content_key(parsed, delivery.body)
    bad = next((reason for event in parsed.events if (reason := check_event(event))), None)
    values = common | {"delivery_id": (parsed.delivery_id or None) and parsed.delivery_id[:200],
                       "content_key": key, "topic": parsed.topic[:100]}
    if bad is not None:
        values.update(status="rejected", error=bad, body=delivery.body, processed_at=utcnow())
    elif parsed.ignored:  # acknowledged, applied nowhere (and its body, maybe customer data, is not kept)
        values.update(status="ignored", error=parsed.ignored[:2000], processed_at=utcnow())
    elif not parsed.events:  # a ping or a topic with nothing to apply: done
        values.update(status="processed", processed_at=utcnow())
    else:
        values.update(body=delivery.body, next_attempt_at=utcnow() + services.settings.lease)
    try:
        delivery_pk = await services.inbox.record(values)
    except IntegrityError:  # (the only constraint left to break: the connection was deleted since it was read)
        raise NotFound(f"no {connector.name} connection {row.id}") from None
    if delivery_pk is None:  # stored before (a replay), or by a request that came at the same moment
        seen = await db.scalar(select(WebhookDelivery).where(WebhookDelivery.connection_id == row.id,
                                                             WebhookDelivery.content_key == key))
        if seen is not None and seen.status == "rejected":  # the same answer as the first time
            raise Invalid(f"malformed delivery: {seen.error}")
        if seen is not None:
            await db.execute(update(WebhookDelivery).where(WebhookDelivery.id == seen.id)
                             .values(duplicates=WebhookDelivery.duplicates + 1))
            await db.commit()
        return "duplicate", seen.id if seen is not None else None
    if bad is not None:
        raise Invalid(f"malformed delivery: {bad}")
    if values["status"] == "received" and services.pipeline is not None:
        await services.pipeline.deliveries_received([delivery_pk])
    return ("accepted" if values["status"] == "received" else values["status"]), delivery_pk


class DeliveryAnswer(TypedDict):
    """What the platform is told: ``status`` accepted (queued), duplicate (a replay, by content), processed (a
    ping, or nothing to apply), ignored (acknowledged, applied nowhere) or rejected; ``delivery`` is the recorded
    delivery's id (none for a ping)."""

    status: str
    delivery: int | None


class AppDeliveryAnswer(TypedDict):
    """What the platform is told of an app-wide delivery: ``status`` as for one connection's, and how many of
    the store's connections it reached."""

    status: str
    connections: int


async def intake_connection(db: AsyncSession, services: Services, connection_id: int) -> Connection | None:
    """The connection a delivery is for, as read within ``HUB_QUERY_CACHE_SECONDS`` (``Services.intake_connections``):
    at hundreds of deliveries a second, reading it for each one queued the requests for the intake's connections.
    A copy that belongs to no session (the intake only reads it)."""
    async def load() -> Connection | None:
        row = await db.get(Connection, connection_id)
        await db.commit()  # (the read ends here: no transaction is held while the delivery waits to be stored)
        if row is None:
            return None
        # (its own JSON values too: nothing a connector does to one delivery's context reaches the next)
        return Connection(**{column.key: deepcopy(getattr(row, column.key))
                             for column in inspect(Connection).column_attrs})

    return await services.intake_connections.read(connection_id, load)


async def receive(db: AsyncSession, services: Services, connector_name: str, connection_id: int,
                  delivery: Delivery) -> DeliveryAnswer:
    """A delivery for one connection (the URL ``register_webhooks`` gave the platform)."""
    row = await intake_connection(db, services, connection_id)
    connector = services.plugins.connectors().get(connector_name)
    if row is None or row.connector != connector_name or connector is None:
        raise NotFound(f"no {connector_name} connection {connection_id}")
    if row.status == "erased":
        # nothing is stored any more, so nothing can be verified; a platform re-sending a privacy topic
        # expects 2xx (and retries anything else): acknowledge those, refuse the rest
        if isinstance(connector, AppDeliveries) and connector.compliance_topic(delivery):
            return {"status": "ignored", "delivery": None}
        raise NotFound(f"no {connector_name} connection {connection_id}")
    status, delivery_pk = await accept(services, db, row, connector, delivery)
    return {"status": status, "delivery": delivery_pk}


async def receive_for_app(db: AsyncSession, services: Services, connector_name: str,
                          delivery: Delivery) -> AppDeliveryAnswer:
    """An app-wide delivery (a public app's compliance topics): verified once with the operator's app secret,
    then routed to the connections of that store installed through the app — each on its own, so one
    connection's trouble never changes another's outcome."""
    connector = services.plugins.connectors().get(connector_name)
    if not isinstance(connector, AppDeliveries):
        raise NotFound(f"the {connector_name} connector takes deliveries only at /webhooks/{connector_name}/"
                       "{connection_id}")
    try:
        authentic = bool(connector.verify_app(delivery))
    except Exception:  # noqa: BLE001 - a verify that blows up did not verify anything
        log.warning("connector verify_app raised", extra={"connector": connector_name}, exc_info=True)
        authentic = False
    if not authentic:
        raise Unauthenticated("the webhook signature does not match the app")
    account = connector.delivery_account(delivery)
    ids = [row.id for row in await db.scalars(select(Connection).where(
               Connection.connector == connector_name, Connection.via_app.is_(True),
               Connection.status.notin_(("erased", "connecting"))))
           if account and connector.connection_key(dict(row.settings)) == account]
    await db.commit()
    statuses: list[str] = []
    problems: list[str] = []
    for connection_id in ids:
        try:
            row = await db.get(Connection, connection_id)
            if row is None:
                continue
            statuses.append((await accept(services, db, row, connector, delivery, verified=True))[0])
        except HubError as exc:
            await db.rollback()
            statuses.append("rejected")
            problems.append(str(exc.detail))
        except Exception as exc:  # noqa: BLE001 - one connection's trouble is its own
            await db.rollback()
            log.warning("app-wide delivery not recorded", extra={"connection_id": connection_id,
                                                                 "reason": f"{type(exc).__name__}: {exc}"[:300]})
            statuses.append("failed")
    if "failed" in statuses:  # not recorded for every connection: the platform must send it again
        raise Unavailable("database", "the delivery could not be recorded for every connection")
    if statuses and all(s == "rejected" for s in statuses):
        raise Invalid(f"malformed delivery: {problems[0]}")
    if not statuses:  # nothing stored for that store: fine, the delivery is the app's own
        return {"status": "processed", "connections": 0}
    summary = statuses[0] if len(set(statuses)) == 1 else "accepted"
    return {"status": summary, "connections": len(statuses)}


async def claim_delivery(services: Services, delivery_pk: int) -> WebhookDelivery | None:
    """Take a received delivery (or one whose lease ran out) for this worker; None if someone else has it."""
    now = utcnow()
    async with services.sessions() as session:
        claimed = await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_pk,
                   (WebhookDelivery.status == "received")
                   | ((WebhookDelivery.status == "processing") & (WebhookDelivery.next_attempt_at <= now)))
            .values(status="processing", attempts=WebhookDelivery.attempts + 1,
                    next_attempt_at=now + services.settings.lease)
        )
        await session.commit()
        if affected(claimed) != 1:
            return None
        return await session.get(WebhookDelivery, delivery_pk)


async def process_delivery(services: Services, delivery_pk: int) -> str:
    """The ``ProcessDelivery`` task: apply a received delivery's events; retry with backoff, then fail."""
    record = await claim_delivery(services, delivery_pk)
    if record is None:
        return "not claimed"
    try:
        shop_id, changes = await _apply(services, record)
    except Exception as exc:  # noqa: BLE001 - every failure is retried, then recorded
        reason = redact(f"{type(exc).__name__}: {exc}")[:2000]
        failed = record.attempts >= services.settings.retry_max_attempts
        async with services.sessions() as session:
            await session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_pk).values(
                status="failed" if failed else "received", error=reason,
                next_attempt_at=None if failed else utcnow() + services.settings.retry_delay(record.attempts),
                processed_at=utcnow() if failed else None,
            ))
            await session.commit()
        log.warning("delivery not applied", extra={"delivery": delivery_pk, "reason": reason, "final": failed})
        return "failed" if failed else "retry"
    await notify(services.pipeline, services.media, shop_id, changes)
    return "processed"


async def _resolve(services: Services, connection: Connection, connector: Connector,
                   events: tuple[Any, ...]) -> tuple[Any, ...]:
    """``ProductChanged`` events become the product's current state, read from the platform by the connector
    (with no database transaction open)."""
    if not any(isinstance(e, ProductChanged) for e in events):
        return events
    if not isinstance(connector, ProductReader):
        raise TypeError(f"the {connector.name} connector sent ProductChanged but cannot read a product")
    resolved = []
    async with platform_client(services.settings) as http:
        ctx = services.context(connection, connector, http)
        for event in events:
            if isinstance(event, ProductChanged):
                # the platform's current state: an upsert with its time, or a delete (with the platform's time
                # if it has one — a trashed product — else dated on arrival by the catalog writer)
                resolved.append(await connector.product(ctx, event.external_id))
            else:
                resolved.append(event)
    return tuple(resolved)


class ConnectionBusy(Exception):
    """The connection is still being connected: its deliveries wait (retried, not failed early)."""


async def _apply(services: Services, record: WebhookDelivery) -> tuple[int, Changes]:
    async with services.sessions() as session:
        connection = await session.get(Connection, record.connection_id)
        if connection is None:
            raise LookupError("the connection is gone")
        connector = services.plugins.connectors().get(connection.connector)
        if connector is None:
            raise LookupError(f"the {connection.connector} connector is not installed")
        if connection.status == "connecting":
            raise ConnectionBusy("the connection is still being connected")
        ctx = services.context(connection, connector, None)
        delivery = Delivery(headers=record.headers, body=record.body or b"", received_at=record.received_at,
                            app_wide=record.app_wide)
        parsed = parse_delivery(connector, ctx, delivery)
    ignored: dict[str, int] = {}
    events = parsed.events
    if connection.status != "active":  # only the platform's own lifecycle events still apply
        events = tuple(e for e in events if isinstance(e, ConnectionDisabled | ConnectionErased))
    elif any(isinstance(e, ConnectionDisabled | ConnectionErased) for e in events) and isinstance(connector, AccessCheck):
        # an uninstall or erase for a store that has the app installed is a replay (or stale): ask the platform
        async with platform_client(services.settings) as http:
            revoked = await connector.access_revoked(ctx.using(http))
        if not revoked:
            kept = tuple(e for e in events if not isinstance(e, ConnectionDisabled | ConnectionErased))
            ignored["ignored: the platform says the hub still has access"] = len(events) - len(kept)
            events = kept
    events = await _resolve(services, connection, connector, events)  # network: no transaction open
    bad = next((problem for e in events if (problem := check_event(e))), None)
    if bad is not None:
        raise ValueError(f"the platform's current product is unusable: {bad}")
    async with services.sessions() as session:
        connection = await session.get(Connection, record.connection_id)
        if connection is None:
            raise LookupError("the connection is gone")
        writer = await CatalogWriter.open(session, connection, utcnow() + services.settings.lease)
        changes = await writer.apply(events, received_at=record.received_at)
        for what, n in ignored.items():
            changes.count(what, n)
        if connection.status != "active" and len(events) < len(parsed.events):
            changes.count(f"ignored: the connection is {connection.status}", len(parsed.events) - len(events))
        await session.execute(update(WebhookDelivery).where(WebhookDelivery.id == record.id).values(
            status="processed", processed_at=utcnow(), body=None, error=None, next_attempt_at=None,
            summary=changes.counts))
        await session.commit()
        return connection.shop_id, changes


async def due_deliveries(services: Services, limit: int = 500) -> list[int]:
    """Deliveries whose task never ran, whose worker died, or whose retry is due (for the sweep)."""
    now = utcnow()
    async with services.sessions() as session:
        ids = list(await session.scalars(select(WebhookDelivery.id).where(
            WebhookDelivery.status.in_(("received", "processing")), WebhookDelivery.next_attempt_at <= now,
        ).order_by(WebhookDelivery.id).limit(limit)))
        if ids:
            await session.execute(update(WebhookDelivery).where(
                WebhookDelivery.id.in_(ids), WebhookDelivery.status == "received",
            ).values(next_attempt_at=now + services.settings.lease))
            await session.commit()
        return ids


async def prune_deliveries(services: Services) -> int:
    """Forget finished deliveries older than HUB_DELIVERY_RETENTION_DAYS (platforms retry for hours, not weeks)."""
    cutoff = utcnow() - timedelta(days=services.settings.delivery_retention_days)
    async with services.sessions() as session:
        result = await session.execute(delete(WebhookDelivery).where(
            WebhookDelivery.status.in_(("processed", "rejected", "failed")), WebhookDelivery.received_at < cutoff))
        await session.commit()
        return affected(result)


class DeliveryOut(TypedDict):
    """One delivery a connection received: ``status`` received → processing → processed, or ignored (with the
    reason in ``error``), rejected (malformed) or failed (after its retries); ``duplicates`` counts how often the
    platform sent the same again (answered, not applied)."""

    id: int
    delivery_id: str | None
    topic: str
    status: str
    error: str | None
    attempts: int
    duplicates: int
    app_wide: bool
    received_at: datetime
    processed_at: datetime | None


DeliveryStatus = Literal["received", "processing", "processed", "ignored", "rejected", "failed"]


async def list_deliveries(session: AsyncSession, shop_id: int, connection_id: int, limit: int, cursor: str | None,
                          status: DeliveryStatus | None) -> tuple[list[DeliveryOut], str | None]:
    """A page of one of the shop's connections' deliveries, newest first (kept HUB_DELIVERY_RETENTION_DAYS)."""
    owner = await session.scalar(select(Connection.shop_id).where(Connection.id == connection_id))
    if owner != shop_id:
        raise not_found("connection", connection_id)
    stmt = select(WebhookDelivery).where(WebhookDelivery.connection_id == connection_id)
    before = decode_cursor(cursor)
    if before is not None:
        stmt = stmt.where(WebhookDelivery.id < before)
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    rows, next_cursor = page(list(await session.scalars(stmt.order_by(WebhookDelivery.id.desc()).limit(limit + 1))),
                             limit)
    return [{"id": r.id, "delivery_id": r.delivery_id, "topic": r.topic, "status": r.status, "error": r.error,
             "attempts": r.attempts, "duplicates": r.duplicates, "app_wide": r.app_wide,
             "received_at": r.received_at, "processed_at": r.processed_at} for r in rows], next_cursor
