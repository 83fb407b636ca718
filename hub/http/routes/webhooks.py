"""Platform deliveries: ``POST /webhooks/{connector}/{connection_id}`` and the app-wide
``POST /webhooks/{connector}``. Authenticated by the connector's signature check over the raw body, not by keys."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from litestar import Controller, Request, post
from litestar.params import FromPath

from hub.connectors import Delivery
from hub.errors import HubError, Invalid, NotFound, Unauthenticated, Unavailable
from hub.metrics import WEBHOOKS
from hub.db.models import utcnow
from hub.domain.services import Services
from hub.domain.webhooks import MAX_WEBHOOK_BYTES, AppDeliveryAnswer, DeliveryAnswer, receive, receive_for_app
from hub.http.deps import Svc
from hub.http.validation import PathId

Answer = TypeVar("Answer", DeliveryAnswer, AppDeliveryAnswer)
REFUSALS: dict[type[HubError], str] = {Unauthenticated: "unauthenticated", Invalid: "rejected",
                                       NotFound: "not_found", Unavailable: "unavailable"}


async def counted(services: Services, connector_name: str, answer: Awaitable[Answer]) -> Answer:
    """The answer, counted in ``hub_webhook_deliveries_received_total`` (a connector name that is not
    installed is counted as ``unknown``: the path is the sender's to choose)."""
    label = connector_name if connector_name in services.plugins.connectors() else "unknown"
    try:
        result = await answer
    except HubError as exc:
        WEBHOOKS.labels(label, next((name for kind, name in REFUSALS.items() if isinstance(exc, kind)),
                                    "refused")).inc()
        raise
    except Exception:
        WEBHOOKS.labels(label, "error").inc()
        raise
    WEBHOOKS.labels(label, result["status"]).inc()
    return result


async def read_delivery(request: Request, app_wide: bool = False) -> Delivery:
    return Delivery(headers={k.lower(): v for k, v in request.headers.items()}, body=await request.body(),
                    query=dict(request.query_params), received_at=utcnow(), app_wide=app_wide)


class WebhookController(Controller):
    path = "/webhooks"
    tags = ["webhooks"]

    @post("/{connector_name:str}/{connection_id:int}", status_code=200, request_max_body_size=MAX_WEBHOOK_BYTES)
    async def receive(self, request: Request, services: Svc, connector_name: FromPath[str],
                      connection_id: PathId) -> DeliveryAnswer:
        """A delivery for one connection (the URL ``register_webhooks`` gave the platform)."""
        delivery = await read_delivery(request)
        # (from its whole body to its answer, the in-process workers step aside: hub.foreground — not before, so
        # that a sender trickling a body in cannot hold them up)
        with services.foreground.serving():
            async with services.inbox.sessions() as db:  # the intake's own connections (hub.domain.inbox)
                return await counted(services, connector_name, receive(
                    db, services, connector_name, connection_id, delivery))

    @post("/{connector_name:str}", status_code=200, request_max_body_size=MAX_WEBHOOK_BYTES)
    async def receive_for_app(self, request: Request, services: Svc, connector_name: FromPath[str]) -> AppDeliveryAnswer:
        """An app-wide delivery (a public app's compliance topics): verified once with the operator's app
        secret, then routed to the connections of that store installed through the app."""
        delivery = await read_delivery(request, app_wide=True)
        with services.foreground.serving():
            async with services.inbox.sessions() as db:
                return await counted(services, connector_name, receive_for_app(db, services, connector_name, delivery))
