"""Platform deliveries: ``POST /webhooks/{connector}/{connection_id}`` and the app-wide
``POST /webhooks/{connector}``. Authenticated by the connector's signature check over the raw body, not by keys."""

from __future__ import annotations

from litestar import Controller, Request, post
from litestar.params import FromPath

from hub.connectors import Delivery
from hub.db.models import utcnow
from hub.domain.webhooks import MAX_WEBHOOK_BYTES, AppDeliveryAnswer, DeliveryAnswer, receive, receive_for_app
from hub.http.deps import Svc
from hub.http.validation import PathId


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
        async with services.inbox.sessions() as db:  # the intake's own connections (hub.domain.inbox)
            return await receive(db, services, connector_name, connection_id, await read_delivery(request))

    @post("/{connector_name:str}", status_code=200, request_max_body_size=MAX_WEBHOOK_BYTES)
    async def receive_for_app(self, request: Request, services: Svc, connector_name: FromPath[str]) -> AppDeliveryAnswer:
        """An app-wide delivery (a public app's compliance topics): verified once with the operator's app
        secret, then routed to the connections of that store installed through the app."""
        async with services.inbox.sessions() as db:
            return await receive_for_app(db, services, connector_name, await read_delivery(request, app_wide=True))
