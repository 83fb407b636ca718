"""OAuth installs of public platform apps (Shopify's, say), for connectors that implement them.

``POST /api/v1/connections/authorize`` (secret key) answers the platform URL to send the merchant to, with a
``state`` that is sealed under HUB_SECRET_KEY (the hub shop, the connector, the merchant's input, a nonce) and
expires after 10 minutes. The platform redirects the merchant to ``GET /oauth/{connector}/callback``: the
state is opened, the connector verifies the callback (its signature) and exchanges the code for a token, and
the connection is created — or, for the same store, reconnected — exactly as ``POST /api/v1/connections`` does.
"""

from __future__ import annotations

import secrets as random
from typing import Any, Protocol, runtime_checkable

import httpx
from cryptography.fernet import InvalidToken
from litestar import Controller, Request, get, post
from litestar.params import FromPath, JSONBody
from pydantic import BaseModel, Field
from sqlalchemy import select

from hub.connectors import ConnectorError
from hub.core.auth import Caller
from hub.core.connections import find_connector, open_connection, talk_to_platform
from hub.core.deps import Db
from hub.core.errors import ApiError
from hub.core.models import Connection

STATE_SECONDS = 600


@runtime_checkable
class OAuthConnector(Protocol):
    """What a connector adds to be installable through its platform's OAuth flow."""

    def authorize_url(self, params: dict[str, Any], redirect_uri: str, state: str) -> str:
        """The platform URL that asks the merchant to approve the app (``ConnectorError`` if not configured)."""

    async def exchange(self, http: httpx.AsyncClient, params: dict[str, Any], query: dict[str, str],
                       redirect_uri: str) -> dict[str, Any]:
        """Verify the callback and trade its code for credentials: the connection's full settings."""

    def connection_key(self, settings: dict[str, Any]) -> str:
        """What identifies the store (a re-install of the same store reconnects its connection)."""


class AuthorizeRequest(BaseModel):
    connector: str = Field(min_length=1, max_length=50)
    name: str = Field("", max_length=200)
    settings: dict[str, Any] = Field(default_factory=dict, description="What the merchant told us (the store)")
    sync: bool = True


def callback_url(state: Any, connector: str) -> str:
    return f"{state.settings.public_url}/oauth/{connector}/callback"


def oauth_connector(plugins: Any, name: str) -> Any:
    connector = find_connector(plugins, name)
    if not isinstance(connector, OAuthConnector):
        raise ApiError(422, f"the {name} connector has no OAuth install; create the connection with its credentials")
    return connector


class OAuthStartController(Controller):
    path = "/api/v1/connections/authorize"
    tags = ["connections"]

    @post("/", status_code=200)
    async def authorize(self, request: Request, principal: Caller, data: JSONBody[AuthorizeRequest]) -> dict[str, Any]:
        """The URL to send the merchant to; the platform comes back to ``/oauth/{connector}/callback``."""
        state = request.app.state
        connector = oauth_connector(state.plugins, data.connector)
        sealed = state.services.secrets.seal({
            "shop_id": principal.shop_id, "connector": connector.name, "name": data.name, "sync": data.sync,
            "params": data.settings, "nonce": random.token_urlsafe(16),
        })
        try:
            url = connector.authorize_url(data.settings, callback_url(state, connector.name), sealed)
        except ConnectorError as exc:
            raise ApiError(422, f"{connector.name}: {exc}") from None
        return {"authorize_url": url, "expires_in": STATE_SECONDS}


class OAuthCallbackController(Controller):
    path = "/oauth"
    tags = ["connections"]

    @get("/{connector_name:str}/callback", status_code=201)
    async def callback(self, request: Request, db: Db, connector_name: FromPath[str]) -> dict[str, Any]:
        """Where the platform sends the merchant back: verified, exchanged, connected."""
        state = request.app.state
        connector = oauth_connector(state.plugins, connector_name)
        query = {k: v for k, v in request.query_params.items()}
        try:
            sealed = state.services.secrets.open(query.get("state", ""), ttl=STATE_SECONDS)
        except InvalidToken:
            raise ApiError(400, "the install link expired or was not made by this hub; start again") from None
        if sealed.get("connector") != connector.name:
            raise ApiError(400, "this state belongs to another connector")

        async def exchange(http: httpx.AsyncClient) -> dict[str, Any]:
            try:
                return await connector.exchange(http, sealed["params"], query, callback_url(state, connector.name))
            except ConnectorError as exc:
                raise ApiError(400, f"{connector.name}: {exc}") from None

        values = await talk_to_platform(state.settings, connector, exchange)
        key = connector.connection_key(values)
        existing = next((row for row in await db.scalars(select(Connection).where(
            Connection.shop_id == sealed["shop_id"], Connection.connector == connector.name))
            if connector.connection_key(dict(row.settings)) == key), None)
        return await open_connection(db, state, sealed["shop_id"], connector, sealed.get("name", ""), values,
                                     bool(sealed.get("sync", True)), existing=existing, via_app=True)
