"""Plugins' own routes (``hub_routes``), served at ``/plugins/{plugin}/{path}``: the core turns each request into
a framework-free ``PluginRequest`` and the plugin's ``PluginResponse`` back into a response, so no plugin depends
on Litestar."""

from __future__ import annotations

import re
from typing import Any

from litestar import Request, Response, route
from litestar.handlers import HTTPRouteHandler

from hub.hookspecs import PluginRequest, PluginResponse, PluginRoute

_SEGMENT = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
_NO_BODY = {204, 304}


class PluginRouteFailed(Exception):
    """A plugin's route raised or answered something a response cannot be (logged; the client gets a 500)."""


def _answer(plugin: str, result: PluginResponse) -> Response[Any]:
    """The plugin's answer as a response, after checking it is one: a status a body may have, header names and
    values a response can carry (no line breaks), a body of the documented types."""
    if not isinstance(result, PluginResponse):
        raise PluginRouteFailed(f"plugin {plugin!r}: a route answered {type(result).__name__}, not a PluginResponse")
    if not 200 <= result.status <= 599 or (result.status in _NO_BODY and result.body):
        raise PluginRouteFailed(f"plugin {plugin!r}: status {result.status} with this body is not an answer")
    headers = dict(result.headers)
    for name, value in [*headers.items(), ("content-type", result.content_type or "")]:
        if not (isinstance(name, str) and isinstance(value, str) and _HEADER_NAME.fullmatch(name)
                and value.isprintable()):
            raise PluginRouteFailed(f"plugin {plugin!r}: header {name!r} cannot be sent")
    body = result.body
    if isinstance(body, (dict, list)):
        return Response(body, status_code=result.status, headers=headers,
                        media_type=result.content_type or "application/json")
    if not isinstance(body, (bytes, str)):
        raise PluginRouteFailed(f"plugin {plugin!r}: a body must be bytes, str, dict or list")
    return Response(body.encode() if isinstance(body, str) else body, status_code=result.status, headers=headers,
                    media_type=result.content_type or "text/plain")


def plugin_handler(plugin: str, plugin_route: PluginRoute) -> HTTPRouteHandler:
    """One Litestar handler serving ``plugin_route`` of ``plugin``."""
    relative = _SEGMENT.sub(r"{\1:str}", plugin_route.path.strip("/"))

    async def serve(request: Request[Any, Any, Any]) -> Response[Any]:
        call = PluginRequest(
            method=request.method,
            path=request.url.path,
            headers={name.lower(): value for name, value in request.headers.items()},
            query={name: request.query_params[name] for name in request.query_params},
            path_params={name: str(value) for name, value in request.path_params.items()},
            body=await request.body(),
        )
        try:
            result = await plugin_route.handler(call)
        except Exception as exc:  # noqa: BLE001 - a plugin's failure is its own, never a dependency's 503
            raise PluginRouteFailed(f"plugin {plugin!r}: the route raised {type(exc).__name__}") from exc
        return _answer(plugin, result)

    return route(f"/plugins/{plugin}/{relative}".rstrip("/") or "/", http_method=list(plugin_route.methods),
                 include_in_schema=False, name=f"plugin:{plugin}:{plugin_route.path}",
                 summary=plugin_route.summary or None)(serve)
