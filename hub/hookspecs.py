"""Fashion Hub's plugin hooks (pluggy project ``hub``). Plugins register through the ``hub`` entry-point group.

Hooks are synchronous and declare things; async work lives on the objects they return. The full contract for
plugin authors is in ``docs/plugins.md``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from hub.connectors import Connector, Importer

hookspec = pluggy.HookspecMarker("hub")
hookimpl = pluggy.HookimplMarker("hub")


@dataclass(frozen=True)
class PluginRequest:
    """One request to a plugin's route, read whole by the core (within the hub's request body limit).

    ``headers`` have lower-case names; ``query`` holds the first value of each parameter; ``path_params`` the
    values of the route's ``{name}`` segments. The request has passed no authentication: a route is public.
    """

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    path_params: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class PluginResponse:
    """What a plugin's route answers. ``body`` as ``bytes`` or ``str`` is sent as it is (``content_type``
    defaults to ``text/plain; charset=utf-8``); a ``dict`` or ``list`` is sent as JSON."""

    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b""
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


PluginHandler = Callable[[PluginRequest], Awaitable[PluginResponse]]


@dataclass(frozen=True)
class PluginRoute:
    """A route a plugin serves at ``/plugins/{plugin}/{path}`` (``plugin`` is its entry-point name, so a plugin
    can never shadow the hub's own API). ``path`` may hold ``{name}`` segments; ``methods`` are HTTP methods."""

    path: str
    handler: PluginHandler
    methods: tuple[str, ...] = ("GET",)
    summary: str = ""


@hookspec
def hub_connectors() -> list[Connector]:
    """Connectors this plugin provides (each with a unique ``name``)."""
    raise NotImplementedError  # a specification: plugins implement it


@hookspec
def hub_importers() -> list[Importer]:
    """Bulk-import readers this plugin provides (``hub import`` and ``POST /api/v1/imports``)."""
    raise NotImplementedError  # a specification: plugins implement it


@hookspec
def hub_routes() -> list[PluginRoute]:
    """Routes this plugin serves under ``/plugins/{plugin}/`` (a status page, a platform's extra callback).

    The core serves what every connector needs (webhooks, OAuth callbacks); this is for anything else. Handlers
    get a ``PluginRequest`` with no authentication and no database, and answer a ``PluginResponse``.

    .. versionchanged:: 0.2.0 returns ``PluginRoute`` objects (Litestar handlers are refused at start-up).
    """
    raise NotImplementedError  # a specification: plugins implement it


@hookspec
def hub_image_indexed(shop_id: int, image_id: int, source: str) -> None:
    """Called after an image's vector was written and the image became ``ready``."""
