"""The plugin manager: every connector, built-in or third-party, arrives through the ``hub`` entry-point group."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from hub import hookspecs
from hub.connectors import Connector, Importer

log = logging.getLogger("hub.plugin_manager")
ENTRY_POINT_GROUP = "hub"


class PluginError(Exception):
    """A plugin that cannot be used: it failed to import, implements an unknown hook, or clashes by name."""


@dataclass
class Plugins:
    manager: pluggy.PluginManager
    loaded: list[dict[str, Any]] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    _cache: dict[str, dict[str, Any]] = field(default_factory=dict)

    def connectors(self) -> dict[str, Connector]:
        """Every connector by name; asked of the plugins once (until another plugin is registered)."""
        return self._named("hub_connectors", "connector")

    def importers(self) -> dict[str, Importer]:
        """Every bulk-import reader by name, in the order plugins were registered."""
        return self._named("hub_importers", "importer")

    def _named(self, hook: str, kind: str) -> dict[str, Any]:
        if hook not in self._cache:
            found: dict[str, Any] = {}
            for provided in reversed(getattr(self.manager.hook, hook)()):
                for obj in provided or []:
                    if obj.name in found:
                        raise PluginError(f"two plugins provide the {kind} name {obj.name!r}")
                    found[obj.name] = obj
            self._cache[hook] = found
        return self._cache[hook]

    def routes(self) -> list[Any]:
        return [route for routes in self.manager.hook.hub_routes() for route in routes or []]

    def image_indexed(self, shop_id: int, image_id: int, source: str) -> None:
        """Tell every plugin; a plugin that raises is logged, and never undoes the indexing."""
        try:
            self.manager.hook.hub_image_indexed(shop_id=shop_id, image_id=image_id, source=source)
        except Exception:  # noqa: BLE001
            log.exception("hub_image_indexed hook failed", extra={"image_id": image_id})


def register(plugins: Plugins, module: Any, name: str) -> None:
    """Register one plugin object; ``PluginError`` if it implements a hook no spec knows."""
    plugins._cache.clear()
    try:
        plugins.manager.register(module, name=name)
        plugins.manager.check_pending()
    except pluggy.PluginValidationError as exc:
        if plugins.manager.has_plugin(name):
            plugins.manager.unregister(name=name)
        raise PluginError(f"plugin {name!r} is invalid: {exc}") from exc


def load_plugins(disabled: set[str] | frozenset[str] = frozenset()) -> Plugins:
    """Register every installed plugin of the ``hub`` entry-point group, except the disabled ones."""
    manager = pluggy.PluginManager("hub")
    manager.add_hookspecs(hookspecs)
    plugins = Plugins(manager)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in disabled:
            plugins.disabled.append(ep.name)
            continue
        if manager.has_plugin(ep.name):
            continue
        try:
            module = ep.load()
        except Exception as exc:  # noqa: BLE001 - reported with the plugin's name
            raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to import: {exc}") from exc
        register(plugins, module, ep.name)
        dist = ep.dist
        plugins.loaded.append(
            {
                "name": ep.name,
                "module": ep.value,
                "package": dist.metadata["Name"] if dist else None,
                "version": dist.version if dist else None,
            }
        )
    for info in plugins.loaded:
        module = manager.get_plugin(info["name"])
        for hook, collected in (("hub_connectors", plugins.connectors()), ("hub_importers", plugins.importers())):
            impl = getattr(module, hook, None)
            info[hook.removeprefix("hub_")] = sorted(o.name for o in (impl() if impl else []) if o.name in collected)
    log.info("plugins loaded", extra={"plugins": [p["name"] for p in plugins.loaded], "disabled": plugins.disabled})
    return plugins
