"""The plugin manager: every connector, built-in or third-party, arrives through the ``hub`` entry-point group."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from hub import hookspecs
from hub.connectors import Connector, Importer
from hub.hookspecs import PluginRoute

log = logging.getLogger("hub.plugin_manager")
ENTRY_POINT_GROUP = "hub"
_ROUTE_SEGMENT = r"(?:(?!\.\.?(?:/|$))[A-Za-z0-9._-]+|\{[a-z_][a-z0-9_]*\})"  # never "." or ".."
ROUTE_PATH = re.compile(rf"{_ROUTE_SEGMENT}(?:/{_ROUTE_SEGMENT})*|")


class PluginError(Exception):
    """A plugin that cannot be used: it failed to import, implements an unknown hook, or clashes by name."""


@dataclass
class Plugins:
    manager: pluggy.PluginManager
    loaded: list[dict[str, Any]] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    _cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    _owners: dict[str, dict[str, str]] = field(default_factory=dict)

    def connectors(self) -> dict[str, Connector]:
        """Every connector by name; asked of the plugins once (until another plugin is registered)."""
        return self._named("hub_connectors", "connector")

    def importers(self) -> dict[str, Importer]:
        """Every bulk-import reader by name, in the order plugins were registered."""
        return self._named("hub_importers", "importer")

    def _named(self, hook: str, kind: str) -> dict[str, Any]:
        return self._collected(hook, kind)[0]

    def provided_by(self, plugin: str) -> dict[str, list[str]]:
        """The connector and importer names one plugin provides (from the one call each hook gets)."""
        return {kind + "s": sorted(name for name, owner in self._collected(hook, kind)[1].items() if owner == plugin)
                for hook, kind in (("hub_connectors", "connector"), ("hub_importers", "importer"))}

    def _collected(self, hook: str, kind: str) -> tuple[dict[str, Any], dict[str, str]]:
        """Each hook is called once per registration state: objects by name and the plugin that gave each."""
        if hook not in self._cache:
            found: dict[str, Any] = {}
            owners: dict[str, str] = {}
            for impl in getattr(self.manager.hook, hook).get_hookimpls():  # earliest registered first
                for obj in impl.function() or []:
                    if obj.name in found:
                        raise PluginError(f"two plugins provide the {kind} name {obj.name!r}")
                    found[obj.name] = obj
                    owners[obj.name] = impl.plugin_name
            self._cache[hook] = found
            self._owners[hook] = owners
        return self._cache[hook], self._owners[hook]

    def routes(self) -> list[tuple[str, PluginRoute]]:
        """Every plugin route with the name of the plugin that serves it (its mount point); ``PluginError`` for
        anything that is not a ``PluginRoute`` with a plain relative path."""
        found: list[tuple[str, PluginRoute]] = []
        for impl in self.manager.hook.hub_routes.get_hookimpls():
            routes = impl.function() or []
            if routes and not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", impl.plugin_name):
                raise PluginError(f"plugin {impl.plugin_name!r} serves routes, so its name must be a URL segment")
            for route in routes:
                if not isinstance(route, PluginRoute):
                    raise PluginError(f"plugin {impl.plugin_name!r}: hub_routes must return hub.hookspecs.PluginRoute "
                                      f"objects, not {type(route).__module__}.{type(route).__qualname__} (framework handlers are not accepted)")
                if not ROUTE_PATH.fullmatch(route.path.strip("/")) or not route.methods:
                    raise PluginError(f"plugin {impl.plugin_name!r}: route path {route.path!r} must be letters, "
                                      "digits, '-', '_', '.', '/' and {name} segments, with at least one method")
                found.append((impl.plugin_name, route))
        return found

    def image_indexed(self, shop_id: int, image_id: int, source: str) -> None:
        """Tell every plugin; a plugin that raises is logged, and never undoes the indexing."""
        try:
            self.manager.hook.hub_image_indexed(shop_id=shop_id, image_id=image_id, source=source)
        except Exception:  # noqa: BLE001
            log.exception("hub_image_indexed hook failed", extra={"image_id": image_id})


def register(plugins: Plugins, module: Any, name: str) -> None:
    """Register one plugin object; ``PluginError`` if it implements a hook no spec knows."""
    plugins._cache.clear()
    plugins._owners.clear()
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
        info.update(plugins.provided_by(info["name"]))
    log.info("plugins loaded", extra={"plugins": [p["name"] for p in plugins.loaded], "disabled": plugins.disabled})
    return plugins
