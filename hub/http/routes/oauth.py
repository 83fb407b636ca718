"""OAuth installs: ``POST /api/v1/connections/authorize`` (secret key) and ``GET /oauth/{connector}/callback``
(where the platform sends the merchant back)."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from litestar import Controller, Request, Response, get, post
from litestar.openapi import ResponseSpec
from litestar.response import Redirect
from litestar.params import FromPath, JSONBody, QueryParameter
from pydantic import BaseModel, Field

from hub.domain.fields import JsonBool
from hub.domain.connections import ConnectedOut
from hub.domain.oauth import STATE_SECONDS, finish_install, start_install
from hub.http.auth import Caller, SecretKeyController
from hub.http.deps import Db, Svc
from hub.http.openapi import problems


class AuthorizeRequest(BaseModel):
    connector: str = Field(min_length=1, max_length=50)
    name: str = Field("", max_length=200)
    settings: dict[str, Any] = Field(default_factory=dict, description="What the merchant told us (the store)")
    sync: JsonBool = True


class AuthorizeOut(TypedDict):
    authorize_url: str
    expires_in: int


class OAuthStartController(SecretKeyController):
    path = "/api/v1/connections/authorize"
    tags = ["connections"]

    @post("/", status_code=200, responses=problems(422))
    async def authorize(self, services: Svc, principal: Caller, data: JSONBody[AuthorizeRequest]) -> AuthorizeOut:
        """The URL to send the merchant to; the platform comes back to ``/oauth/{connector}/callback``."""
        url = start_install(services, principal.shop_id, data.connector, data.name,
                            data.settings, data.sync)
        return {"authorize_url": url, "expires_in": STATE_SECONDS}


class OAuthCallbackController(Controller):
    path = "/oauth"
    tags = ["connections"]

    @get("/{connector_name:str}/callback", status_code=201, responses={**problems(409, 422, 502), 303: ResponseSpec(
        data_container=None, description="An install started in the console: the browser goes back to the new "
                                         "connection's page there (Location)")})
    async def callback(self, request: Request, db: Db, services: Svc, connector_name: FromPath[str],
                       sealed: Annotated[str, QueryParameter(name="state", min_length=1, max_length=4096, description=(
                           "The sealed state of POST /api/v1/connections/authorize; the platform adds its own "
                           "parameters (code, signature…)"))]) -> Response[ConnectedOut]:
        """Where the platform sends the merchant back: verified, exchanged, connected."""
        query = {k: v for k, v in request.query_params.items()}
        installed = await finish_install(db, services, connector_name, query)
        if installed.from_console:
            return Redirect(f"/console/connections/{installed.connection['id']}", status_code=303)
        return Response(installed.connection, status_code=201)
