"""``/api/v1/connections``: a shop links a platform through a connector plugin (secret key)."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from litestar import delete, get, patch, post
from litestar.params import FromQuery, JSONBody, QueryParameter
from pydantic import BaseModel, ConfigDict, Field

from hub.domain.fields import JsonBool, JsonInt
from hub.domain.connections import (
    MAX_SYNC_INTERVAL,
    ConnectedOut,
    ConnectionOut,
    connection_json,
    find_connector,
    get_connection,
    list_connections,
    open_connection,
    remove_connection,
    sync_connection,
    update_connection,
)
from hub.domain.jobs import JobOut, job_json
from hub.domain.webhooks import DeliveryOut, DeliveryStatus, list_deliveries
from hub.http.auth import Caller, SecretKeyController
from hub.http.deps import Db, Svc
from hub.http.openapi import problems
from hub.http.validation import PathId


class ConnectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connector: str = Field(min_length=1, max_length=50)
    name: str = Field("", max_length=200)
    settings: dict[str, Any] = Field(default_factory=dict)
    sync: JsonBool = Field(True, description="Start a full import of the catalog right away")
    sync_interval_minutes: JsonInt | None = Field(
        None, ge=0, le=MAX_SYNC_INTERVAL,
        description="Re-read the whole catalog every this many minutes (5 to 10080; 0: never). Omitted: the "
                    "connector's default (none for connectors with webhooks)")


class ConnectionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    sync_interval_minutes: JsonInt | None = Field(
        None, ge=0, le=MAX_SYNC_INTERVAL, description="Minutes between scheduled full re-reads (5 to 10080; 0: off)")


class DeliveryPage(TypedDict):
    items: list[DeliveryOut]
    next_cursor: str | None


class ConnectionList(TypedDict):
    items: list[ConnectionOut]


class ConnectionController(SecretKeyController):
    path = "/api/v1/connections"
    tags = ["connections"]

    @post("/", status_code=201, responses=problems(409, 422, 502))
    async def create(self, db: Db, services: Svc, principal: Caller,
                     data: JSONBody[ConnectionCreate]) -> ConnectedOut:
        """Check the credentials, register the webhooks, and (unless ``sync`` is false) start a full import."""
        connector = find_connector(services.plugins, data.connector)
        return await open_connection(db, services, principal.shop_id, connector, data.name, data.settings,
                                     data.sync, sync_interval=data.sync_interval_minutes)

    @patch("/{connection_id:int}", responses=problems(422))
    async def update(self, db: Db, services: Svc, principal: Caller, connection_id: PathId,
                     data: JSONBody[ConnectionUpdate]) -> ConnectionOut:
        """Rename the connection or change how often its catalog is re-read on a schedule."""
        row = await update_connection(db, principal.shop_id, connection_id, data.name, data.sync_interval_minutes)
        return connection_json(row, services.plugins.connectors().get(row.connector), services)

    @post("/{connection_id:int}/sync", status_code=202, responses=problems(409))
    async def sync(self, db: Db, services: Svc, principal: Caller, connection_id: PathId) -> JobOut:
        """Re-read the whole catalog (a job; 409 while one runs). Products gone from the platform are removed."""
        return job_json(await sync_connection(db, services, principal.shop_id, connection_id))

    @get("/")
    async def list_connections(self, db: Db, services: Svc, principal: Caller) -> ConnectionList:
        connectors = services.plugins.connectors()
        return {"items": [connection_json(row, connectors.get(row.connector), services)
                          for row in await list_connections(db, principal.shop_id)]}

    @get("/{connection_id:int}")
    async def get_connection(self, db: Db, services: Svc, principal: Caller, connection_id: PathId) -> ConnectionOut:
        row = await get_connection(db, principal.shop_id, connection_id)
        return connection_json(row, services.plugins.connectors().get(row.connector), services)

    @get("/{connection_id:int}/deliveries")
    async def deliveries(
        self, db: Db, principal: Caller, connection_id: PathId,
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
        cursor: FromQuery[str | None] = None,
        status: FromQuery[DeliveryStatus | None] = None,
    ) -> DeliveryPage:
        """The webhook deliveries this connection received, newest first, with what became of each and how often
        the platform sent it again (pass ``next_cursor`` back as ``cursor``)."""
        items, next_cursor = await list_deliveries(db, principal.shop_id, connection_id, limit, cursor, status)
        return {"items": items, "next_cursor": next_cursor}

    @delete("/{connection_id:int}", status_code=204)
    async def remove(self, db: Db, services: Svc, principal: Caller, connection_id: PathId) -> None:
        """Unregister the webhooks (best effort), then delete the connection with its products, images, vectors."""
        await remove_connection(db, services, principal.shop_id, connection_id)
