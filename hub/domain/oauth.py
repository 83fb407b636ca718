"""OAuth installs of public platform apps (Shopify's, say), for connectors that implement ``OAuthConnector``.

The install starts with a ``state`` sealed under HUB_SECRET_KEY (the hub shop, the connector, the merchant's
input, a nonce) that expires after 10 minutes. When the platform sends the merchant back, the state is opened,
the connector verifies the callback and exchanges the code for a token, and the connection is created — or, for
the same store, reconnected — exactly as a connection made with credentials.
"""

from __future__ import annotations

import secrets as random
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from cryptography.fernet import InvalidToken
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.connectors import Connector, ConnectorError, OAuthConnector
from hub.db.models import Connection
from hub.domain.connections import ConnectedOut, find_connector, open_connection, talk_to_platform
from hub.domain.services import Services
from hub.errors import Invalid, Unprocessable

STATE_SECONDS = 600


def callback_url(services: Services, connector: str) -> str:
    return f"{services.settings.public_url}/oauth/{connector}/callback"


class OAuthInstall(Connector, OAuthConnector, Protocol):
    """A connector that installs through its platform's OAuth flow."""


def oauth_connector(services: Services, name: str) -> OAuthInstall:
    connector = find_connector(services.plugins, name)
    if not isinstance(connector, OAuthConnector):
        raise Unprocessable(f"the {name} connector has no OAuth install; create the connection with its credentials")
    return connector


def start_install(services: Services, shop_id: int, connector_name: str, name: str, params: dict[str, Any],
                  sync: bool, from_console: bool = False) -> str:
    """The platform URL to send the merchant to (valid for STATE_SECONDS); ``from_console``: the callback sends
    the browser back to the console rather than answering JSON."""
    connector = oauth_connector(services, connector_name)
    sealed = services.secrets.seal({"shop_id": shop_id, "connector": connector_name, "name": name, "sync": sync,
                                    "params": params, "nonce": random.token_urlsafe(16),
                                    "console": from_console})
    try:
        return connector.authorize_url(params, callback_url(services, connector_name), sealed)
    except ConnectorError as exc:
        raise Unprocessable(f"{connector_name}: {exc}") from None


@dataclass(frozen=True)
class Installed:
    connection: ConnectedOut
    from_console: bool  # started in the console: the browser goes back there


async def finish_install(session: AsyncSession, services: Services, connector_name: str,
                         query: dict[str, str]) -> Installed:
    """Where the platform sends the merchant back: the state opened, the callback verified and exchanged, the
    store connected (its earlier connection in this shop reconnected)."""
    connector = oauth_connector(services, connector_name)
    try:
        sealed = services.secrets.open(query.get("state", ""), ttl=STATE_SECONDS)
    except InvalidToken:
        raise Invalid("the install link expired or was not made by this hub; start again") from None
    if sealed.get("connector") != connector_name:
        raise Invalid("this state belongs to another connector")

    async def exchange(http: httpx.AsyncClient) -> dict[str, Any]:
        try:
            return await connector.exchange(http, sealed["params"], query, callback_url(services, connector_name))
        except ConnectorError as exc:
            raise Invalid(f"{connector_name}: {exc}") from None

    values = await talk_to_platform(services.settings, connector, exchange)
    key = connector.connection_key(values)
    existing = next((row for row in await session.scalars(select(Connection).where(
        Connection.shop_id == sealed["shop_id"], Connection.connector == connector_name))
        if connector.connection_key(dict(row.settings)) == key), None)
    connected = await open_connection(session, services, sealed["shop_id"], connector, sealed.get("name", ""), values,
                                      bool(sealed.get("sync", True)), existing=existing, via_app=True)
    return Installed(connected, bool(sealed.get("console")))
