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


def _answer(result: PluginResponse) -> Response[Any]:
    if not isinstance(result, PluginResponse):
        raise TypeError(f"a plugin route answered {type(result).__name__}, not a PluginResponse")
    body = result.body
    if isinstance(body, (dict, list)):
        return Response(body, status_code=result.status, headers=dict(result.headers),
                        media_type=result.content_type or "application/json")
    return Response(body.encode() if isinstance(body, str) else body, status_code=result.status,
                    headers=dict(result.headers), media_type=result.content_type or "text/plain; charset=utf-8")


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
        return _answer(await plugin_route.handler(call))

    return route(f"/plugins/{plugin}/{relative}".rstrip("/") or "/", http_method=list(plugin_route.methods),
                 include_in_schema=False, name=f"plugin:{plugin}:{plugin_route.path}",
                 summary=plugin_route.summary or None)(serve)
