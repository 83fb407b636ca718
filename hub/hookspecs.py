"""Fashion Hub's plugin hooks (pluggy project ``hub``). Plugins register through the ``hub`` entry-point group.

Hooks are synchronous and declare things; async work lives on the objects they return. The full contract for
plugin authors is in ``docs/plugins.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from hub.connectors import Connector, Importer

hookspec = pluggy.HookspecMarker("hub")
hookimpl = pluggy.HookimplMarker("hub")


@hookspec
def hub_connectors() -> list[Connector]:
    """Connectors this plugin provides (each with a unique ``name``)."""
    raise NotImplementedError  # a specification: plugins implement it


@hookspec
def hub_importers() -> list[Importer]:
    """Bulk-import readers this plugin provides (``hub import`` and ``POST /api/v1/imports``)."""
    raise NotImplementedError  # a specification: plugins implement it


@hookspec
def hub_routes() -> list[Any]:
    """Extra Litestar route handlers or controllers to mount (a connector's OAuth callback, say)."""
    raise NotImplementedError  # a specification: plugins implement it


@hookspec
def hub_image_indexed(shop_id: int, image_id: int, source: str) -> None:
    """Called after an image's vector was written and the image became ``ready``."""
