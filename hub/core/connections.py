"""Connections: a shop links a platform through a connector plugin (``/api/v1/connections``)."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import anyio
import httpx
from litestar import Controller, Request, delete, get, post
from litestar.params import FromPath, JSONBody
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select

from hub.connectors import Connector, ConnectorError, secret_fields
from hub.core.auth import Caller
from hub.core.deps import Db
from hub.core.errors import ApiError, not_found, validation_detail
from hub.core.jobs import create_job, job_json
from hub.core.models import Connection, Image, Job
from hub.core.services import Services
from hub.net import guarded_transport

log = logging.getLogger("hub.connections")
PLATFORM_TIMEOUT = 30.0


class ConnectionCreate(BaseModel):
    connector: str = Field(min_length=1, max_length=50)
    name: str = Field("", max_length=200)
    settings: dict[str, Any] = Field(default_factory=dict)
    sync: bool = Field(True, description="Start a full import of the catalog right away")


def platform_client(allow_private: bool) -> httpx.AsyncClient:
    """The HTTP client connectors get: timeouts, and no connections to private addresses unless allowed
    (checked when connecting, so redirects and changing DNS answers are covered too)."""
    return httpx.AsyncClient(timeout=PLATFORM_TIMEOUT, follow_redirects=True,
                             transport=guarded_transport(allow_private))


def connection_json(row: Connection, connector: Connector | None, services: Services) -> dict[str, Any]:
    secrets = sorted(secret_fields(connector.settings_model)) if connector else []
    return {
        "id": row.id,
        "connector": row.connector,
        "name": row.name,
        "settings": row.settings,
        "secret_settings": secrets,  # set, write-only: their values are never returned
        "status": row.status,
        "info": row.info,
        "webhook_url": services.webhook_url(row),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def find_connector(plugins: Any, name: str) -> Connector:
    connectors = plugins.connectors()
    if name not in connectors:
        known = ", ".join(sorted(connectors)) or "none installed"
        raise ApiError(422, f"unknown connector {name!r} (available: {known})")
    return connectors[name]


async def start_sync(pipeline: Any, db: Any, row: Connection) -> Any:
    job = await create_job(db, row.shop_id, "sync", {}, connection_id=row.id)
    await pipeline.job_queued(job.id)
    return job


async def open_connection(
    db: Any, state: Any, shop_id: int, connector: Connector, name: str, values: dict[str, Any], sync: bool,
    existing: Connection | None = None,
) -> dict[str, Any]:
    """Validate the settings, check them and register webhooks with the platform, then commit (nothing is
    stored if the platform disagrees) and start the first sync. ``existing`` is reconnected in place."""
    services: Services = state.services
    try:
        validated = connector.settings_model.model_validate(values)
    except ValidationError as exc:
        raise ApiError(422, f"invalid settings for {connector.name}: {validation_detail(exc)}") from None
    values = validated.model_dump(mode="json")
    secret = secret_fields(connector.settings_model)
    row = existing or Connection(shop_id=shop_id, connector=connector.name)
    old_webhooks = dict(row.webhook_state or {}) if existing is not None else {}
    row.name = name or row.name or connector.name
    row.settings = {k: v for k, v in values.items() if k not in secret}
    row.secrets = services.secrets.seal({k: v for k, v in values.items() if k in secret}) if secret else None
    row.status = "active"
    if existing is None:
        db.add(row)
    await db.flush()  # the id goes into the webhook URL; nothing is committed until the platform agrees
    async with platform_client(state.settings.allow_private_fetch) as http:
        ctx = services.context(row, connector, http)
        try:
            row.info = await connector.check(ctx) or {}
            if old_webhooks:
                with contextlib.suppress(ConnectorError, httpx.HTTPError):
                    await connector.unregister_webhooks(ctx, old_webhooks)
            row.webhook_state = await connector.register_webhooks(ctx) or {}
        except ConnectorError as exc:
            await db.rollback()
            raise ApiError(422, f"{connector.name}: {exc}") from None
        except httpx.HTTPError as exc:
            await db.rollback()
            raise ApiError(422, f"{connector.name}: the platform could not be reached ({exc})") from None
    await db.commit()
    body = connection_json(row, connector, services)
    if sync:
        running = await db.scalar(select(Job).where(Job.connection_id == row.id, Job.status.in_(("queued", "running"))))
        body["sync_job"] = job_json(running or await start_sync(state.pipeline, db, row))
    return body


class ConnectionController(Controller):
    """Create (credentials checked, webhooks registered), list, get and delete connections (secret key)."""

    path = "/api/v1/connections"
    tags = ["connections"]

    @post("/", status_code=201)
    async def create(
        self, request: Request, db: Db, principal: Caller, data: JSONBody[ConnectionCreate]
    ) -> dict[str, Any]:
        """Check the credentials, register the webhooks, and (unless ``sync`` is false) start a full import."""
        state = request.app.state
        connector = find_connector(state.plugins, data.connector)
        return await open_connection(db, state, principal.shop_id, connector, data.name, data.settings, data.sync)

    @post("/{connection_id:int}/sync", status_code=202)
    async def sync(self, request: Request, db: Db, principal: Caller, connection_id: FromPath[int]) -> dict[str, Any]:
        """Re-read the whole catalog (a job; 409 while one runs). Products gone from the platform are removed."""
        row = await self._row(db, principal.shop_id, connection_id)
        if row.status != "active":
            raise ApiError(409, f"connection {connection_id} is {row.status}; reconnect it to sync")
        if row.connector not in request.app.state.plugins.connectors():
            raise ApiError(409, f"the {row.connector} connector is not installed")
        return job_json(await start_sync(request.app.state.pipeline, db, row))

    @get("/")
    async def list_connections(self, request: Request, db: Db, principal: Caller) -> dict[str, Any]:
        rows = await db.scalars(select(Connection).where(Connection.shop_id == principal.shop_id).order_by(Connection.id))
        connectors = request.app.state.plugins.connectors()
        services = request.app.state.services
        return {"items": [connection_json(r, connectors.get(r.connector), services) for r in rows]}

    @get("/{connection_id:int}")
    async def get_connection(self, request: Request, db: Db, principal: Caller, connection_id: FromPath[int]) -> dict[str, Any]:
        row = await self._row(db, principal.shop_id, connection_id)
        state = request.app.state
        return connection_json(row, state.plugins.connectors().get(row.connector), state.services)

    async def _row(self, db: Any, shop_id: int, connection_id: int) -> Connection:
        row = await db.scalar(select(Connection).where(Connection.id == connection_id, Connection.shop_id == shop_id))
        if row is None:
            raise not_found("connection", connection_id)
        return row

    @delete("/{connection_id:int}", status_code=204)
    async def remove(self, request: Request, db: Db, principal: Caller, connection_id: FromPath[int]) -> None:
        """Unregister the webhooks (best effort), then delete the connection with its products, images, vectors."""
        state = request.app.state
        row = await self._row(db, principal.shop_id, connection_id)
        connector = state.plugins.connectors().get(row.connector)
        if connector is not None and row.webhook_state:
            async with platform_client(state.settings.allow_private_fetch) as http:
                try:
                    await connector.unregister_webhooks(state.services.context(row, connector, http),
                                                        row.webhook_state)
                except (ConnectorError, httpx.HTTPError) as exc:
                    log.warning("webhooks not removed", extra={"connection_id": row.id, "reason": str(exc)[:200]})
        images = list((await db.execute(
            select(Image.id, Image.photo).where(Image.connection_id == row.id)
        )).all())
        await db.delete(row)  # products and images go with it (ON DELETE CASCADE)
        await db.commit()
        for _, photo in images:
            await anyio.to_thread.run_sync(state.media.delete, photo)
        if images:
            await state.pipeline.images_removed(principal.shop_id, [i for i, _ in images])
