"""``POST /webhooks/{connector}/{connection_id}``: verify, record, deduplicate, answer fast; a task applies it.

The connector checks the signature over the raw body (401 and nothing stored if it fails) and parses the
delivery (400, recorded as ``rejected``, if malformed). A delivery id seen before is answered 200 and not
processed again. Everything else is stored as ``received`` with a lease and handed to the ``ProcessDelivery``
task; if that task never runs (broker down, worker killed), the sweep hands it out again.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.params import FromPath
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from hub.connectors import (
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
from hub.core.catalog import CatalogWriter, Changes, check_event, notify
from hub.core.connections import platform_client
from hub.core.deps import Db
from hub.core.errors import ApiError
from hub.core.models import Connection, WebhookDelivery, utcnow
from hub.core.services import Services

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


async def accept(request: Request, db: Any, row: Connection, connector: Connector,
                 delivery: Delivery) -> tuple[str, WebhookDelivery | None]:
    """Verify, parse, deduplicate and record one delivery for one connection; (status, the recorded row)."""
    services: Services = request.app.state.services
    ctx = services.context(row, connector, None)
    try:
        authentic = bool(connector.verify(ctx, delivery))
    except Exception:  # noqa: BLE001 - a verify that blows up did not verify anything
        log.warning("connector verify raised", extra={"connector": connector.name}, exc_info=True)
        authentic = False
    if not authentic:
        log.warning("webhook signature rejected", extra={"connection_id": row.id})
        raise ApiError(401, "the webhook signature does not match this connection")

    headers = {k: v for k, v in delivery.headers.items() if k not in UNSTORED_HEADERS}
    try:
        parsed = parse_delivery(connector, ctx, delivery)
    except DeliveryRejected as exc:
        db.add(WebhookDelivery(connection_id=row.id, status="rejected", error=str(exc)[:2000],
                               headers=headers, body=delivery.body, processed_at=utcnow()))
        await db.commit()
        raise ApiError(400, f"malformed delivery: {exc}") from None

    if parsed.delivery_id is not None:
        seen = await db.scalar(select(WebhookDelivery).where(
            WebhookDelivery.connection_id == row.id, WebhookDelivery.delivery_id == parsed.delivery_id[:200]))
        if seen is not None:
            return "duplicate", seen
    bad = next((reason for event in parsed.events if (reason := check_event(event))), None)
    record = WebhookDelivery(connection_id=row.id, delivery_id=(parsed.delivery_id or None) and parsed.delivery_id[:200],
                             topic=parsed.topic[:100], headers=headers)
    if bad is not None:
        record.status, record.error, record.body, record.processed_at = "rejected", bad, delivery.body, utcnow()
    elif not parsed.events:  # a ping or a topic with nothing to apply: done
        record.status, record.processed_at = "processed", utcnow()
    else:
        record.body = delivery.body
        record.next_attempt_at = utcnow() + services.settings.lease
    db.add(record)
    try:
        await db.commit()
    except IntegrityError:  # the same delivery, concurrently: the other request has it
        await db.rollback()
        return "duplicate", None
    if bad is not None:
        raise ApiError(400, f"malformed delivery: {bad}")
    if record.status == "received":
        await request.app.state.pipeline.deliveries_received([record.id])
    return ("accepted" if record.status == "received" else record.status), record


async def read_delivery(request: Request) -> Delivery:
    return Delivery(headers={k.lower(): v for k, v in request.headers.items()}, body=await request.body(),
                    query=dict(request.query_params))


class WebhookController(Controller):
    """Platform deliveries; authenticated by the connector's signature check, not by API keys."""

    path = "/webhooks"
    tags = ["webhooks"]

    @post("/{connector_name:str}/{connection_id:int}", status_code=200, request_max_body_size=MAX_WEBHOOK_BYTES)
    async def receive(
        self, request: Request, db: Db, connector_name: FromPath[str], connection_id: FromPath[int]
    ) -> Response[dict[str, Any]]:
        """A delivery for one connection (the URL ``register_webhooks`` gives the platform)."""
        row = await db.get(Connection, connection_id)
        connector = request.app.state.plugins.connectors().get(connector_name)
        if row is None or row.connector != connector_name or connector is None or row.status == "erased":
            raise ApiError(404, f"no {connector_name} connection {connection_id}")
        status, record = await accept(request, db, row, connector, await read_delivery(request))
        return Response({"status": status, "delivery": record.id if record else None}, status_code=200)

    @post("/{connector_name:str}", status_code=200, request_max_body_size=MAX_WEBHOOK_BYTES)
    async def receive_for_app(self, request: Request, db: Db, connector_name: FromPath[str]) -> Response[dict[str, Any]]:
        """An app-wide delivery (a public app's compliance topics): routed to the store's connections."""
        connector = request.app.state.plugins.connectors().get(connector_name)
        if not isinstance(connector, AppDeliveries):
            raise ApiError(404, f"the {connector_name} connector takes deliveries only at /webhooks/{connector_name}/"
                                "{connection_id}")
        delivery = await read_delivery(request)
        account = connector.delivery_account(delivery)
        rows = [row for row in await db.scalars(select(Connection).where(
                    Connection.connector == connector.name, Connection.status != "erased"))
                if account and connector.connection_key(dict(row.settings)) == account]
        if not rows:  # nothing stored for that store: fine, if the delivery is the app's own
            if not connector.verify_app(delivery):
                raise ApiError(401, "the webhook signature does not match the app")
            return Response({"status": "processed", "connections": 0}, status_code=200)
        statuses = [(await accept(request, db, row, connector, delivery))[0] for row in rows]
        return Response({"status": statuses[0] if len(set(statuses)) == 1 else "accepted", "connections": len(rows)},
                        status_code=200)


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
        if claimed.rowcount != 1:
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
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        failed = record.attempts >= services.settings.embed_max_attempts
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
    """``ProductChanged`` events become the product's current state, read from the platform by the connector."""
    if not any(isinstance(e, ProductChanged) for e in events):
        return events
    if not isinstance(connector, ProductReader):
        raise TypeError(f"the {connector.name} connector sent ProductChanged but cannot read a product")
    resolved = []
    async with platform_client(services.settings.allow_private_fetch) as http:
        ctx = services.context(connection, connector, http)
        for event in events:
            resolved.append(await connector.product(ctx, event.external_id)
                            if isinstance(event, ProductChanged) else event)
    return tuple(resolved)


async def _apply(services: Services, record: WebhookDelivery) -> tuple[int, Changes]:
    async with services.sessions() as session:
        connection = await session.get(Connection, record.connection_id)
        if connection is None:
            raise LookupError("the connection is gone")
        connector = services.plugins.connectors().get(connection.connector)
        if connector is None:
            raise LookupError(f"the {connection.connector} connector is not installed")
        ctx = services.context(connection, connector, None)
        parsed = parse_delivery(connector, ctx, Delivery(headers=record.headers, body=record.body or b""))
        events = parsed.events
        if connection.status != "active":  # only the platform's own lifecycle events still apply
            events = tuple(e for e in events if isinstance(e, ConnectionDisabled | ConnectionErased))
        events = await _resolve(services, connection, connector, events)
        bad = next((problem for e in events if (problem := check_event(e))), None)
        if bad is not None:
            raise ValueError(f"the platform's current product is unusable: {bad}")
        writer = await CatalogWriter.open(session, connection, utcnow() + services.settings.lease)
        changes = await writer.apply(events)
        if len(events) < len(parsed.events):
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
        return int(result.rowcount or 0)
