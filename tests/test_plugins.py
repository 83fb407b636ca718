"""Plugins: entry-point discovery of a real installed package, disabling, validation, and every hook."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
from litestar import get

from hub import hookspecs
from hub.connectors import Connector, ImportOptions, ImportRow, RowError, secret_fields
from hub.hookspecs import PluginRequest, PluginResponse, PluginRoute, hookimpl
from hub.plugin_manager import PluginError, load_plugins, register
from tests.conftest import serve_app, wait_for_images
from tests.images import photo

ROOT = Path(__file__).resolve().parents[1]


def test_example_plugin_is_discovered_through_its_entry_point():
    plugins = load_plugins()
    info = next(p for p in plugins.loaded if p["name"] == "example")
    assert info["package"] == "hub-example-connector" and info["connectors"] == ["example"]
    connector = plugins.connectors()["example"]
    assert isinstance(connector, Connector)
    assert secret_fields(connector.settings_model) == {"webhook_secret"}


def test_disabled_plugins_are_not_loaded():
    plugins = load_plugins({"example"})
    assert "example" not in [p["name"] for p in plugins.loaded]
    assert plugins.disabled == ["example"] and "example" not in plugins.connectors()


def test_hub_plugins_cli(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")} | {"HUB_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "hub", "plugins", "--json"], env=env, capture_output=True,
                         text=True, check=True)
    assert "example" in [p["name"] for p in json.loads(out.stdout)["plugins"]]
    human = subprocess.run([sys.executable, "-m", "hub", "plugins"], env=env | {"HUB_DISABLED_PLUGINS": "example"},
                           capture_output=True, text=True, check=True)
    assert "example" in human.stdout and "disabled by HUB_DISABLED_PLUGINS" in human.stdout


def test_a_hook_without_a_spec_is_rejected():
    plugins = load_plugins()
    typo = types.SimpleNamespace(hub_connector=hookimpl(lambda: []))  # hub_connectors, misspelt
    typo.hub_connector.__name__ = "hub_connector"
    with pytest.raises(PluginError, match="hub_connector"):
        register(plugins, typo, "typo")
    assert not plugins.manager.has_plugin("typo")


def test_duplicate_connector_names_are_an_error():
    plugins = load_plugins()
    example = plugins.connectors()["example"]
    clone = types.ModuleType("clone")
    clone.hub_connectors = hookimpl(lambda: [example])
    clone.hub_connectors.__name__ = "hub_connectors"
    register(plugins, clone, "clone")
    with pytest.raises(PluginError, match="two plugins provide the connector name 'example'"):
        plugins.connectors()


async def test_ready_lists_plugins(client):
    body = (await client.get("/ready")).json()
    assert {"name": "example", "version": "0.1.0", "connectors": ["example"], "importers": []} in body["plugins"]


async def test_hub_routes_and_hub_image_indexed(settings, make_shop_for):
    indexed: list[tuple[int, int, str]] = []

    seen: list[PluginRequest] = []

    async def hello(request: PluginRequest) -> PluginResponse:
        seen.append(request)
        return PluginResponse(body={"hello": request.path_params["who"], "q": request.query.get("q")})

    async def echo(request: PluginRequest) -> PluginResponse:
        return PluginResponse(status=201, body=request.body[::-1], content_type="application/octet-stream",
                              headers={"x-plugin": "test"})

    async def text(request: PluginRequest) -> PluginResponse:
        return PluginResponse(body="plain")

    async def broken(request: PluginRequest) -> PluginResponse:
        raise ConnectionError("the plugin's own upstream is down")

    async def injecting(request: PluginRequest) -> PluginResponse:
        return PluginResponse(body="x", headers={"X-Evil": "a\r\nSet-Cookie: session=stolen"})

    async def no_content_with_body(request: PluginRequest) -> PluginResponse:
        return PluginResponse(status=204, body="surprise")

    plugin = types.ModuleType("test_plugin")
    plugin.hub_routes = hookimpl(lambda: [PluginRoute("hello/{who}", hello),
                                          PluginRoute("/echo", echo, methods=("POST",)),
                                          PluginRoute("text", text), PluginRoute("broken", broken),
                                          PluginRoute("injecting", injecting),
                                          PluginRoute("no-content", no_content_with_body)])
    plugin.hub_routes.__name__ = "hub_routes"

    def hub_image_indexed(shop_id: int, image_id: int, source: str) -> None:
        indexed.append((shop_id, image_id, source))

    plugin.hub_image_indexed = hookimpl(hub_image_indexed)
    plugins = load_plugins()
    register(plugins, plugin, "test-plugin")
    async with serve_app(settings, plugins=plugins) as client:
        hi = await client.get("/plugins/test-plugin/hello/world?q=dress", headers={"X-Trace": "1"})
        assert hi.status_code == 200 and hi.json() == {"hello": "world", "q": "dress"}
        assert seen[0].method == "GET" and seen[0].headers["x-trace"] == "1"
        assert seen[0].path == "/plugins/test-plugin/hello/world"
        echoed = await client.post("/plugins/test-plugin/echo", content=b"abc")
        assert (echoed.status_code, echoed.content, echoed.headers["x-plugin"]) == (201, b"cba", "test")
        assert (await client.get("/plugins/test-plugin/echo")).status_code == 405
        plain = await client.get("/plugins/test-plugin/text")
        assert plain.text == "plain" and plain.headers["content-type"] == "text/plain; charset=utf-8"
        # a plugin's failure is a plain 500 problem (logged), never a stack trace, a 503 or a forged header
        for path in ("broken", "injecting", "no-content"):
            failed = await client.get(f"/plugins/test-plugin/{path}")
            assert failed.status_code == 500 and failed.json()["detail"] == "internal error; it has been logged"
            assert "set-cookie" not in failed.headers and "Traceback" not in failed.text
        # a plugin's routes are its own: never in the hub's typed API document
        assert not [p for p in (await client.get("/schema/openapi.json")).json()["paths"] if "plugins" in p]
        shop = await make_shop_for(client)
        up = await client.post("/api/v1/images", files={"file": ("a.jpg", photo(3), "image/jpeg")},
                               headers=shop.secret)
        await wait_for_images(client, shop.secret, [up.json()["id"]], {"ready"})
    assert indexed == [(shop["id"], up.json()["id"], "manual")]


@pytest.mark.parametrize("returned, message", [
    ("litestar", "not litestar.handlers.http_handlers.decorators.get (framework handlers are not accepted)"),
    (PluginRoute("../api/v1/shop", None), "route path '../api/v1/shop'"),
    (PluginRoute("a/./b", None), "route path 'a/./b'"),
    (PluginRoute("a//b", None), "route path 'a//b'"),
    (PluginRoute("ok", None, methods=()), "at least one method"),
])
def test_plugin_routes_are_sdk_objects_under_the_plugins_own_prefix(returned, message):
    """A framework handler, a path that climbs out of /plugins/{name}/, or a route with no method stops the
    start-up with the plugin's name (a plugin can never shadow the hub's API)."""
    if returned == "litestar":
        @get("/api/v1/shop")
        async def shadow() -> None:
            return None
        returned = shadow
    plugin = types.ModuleType("routes_plugin")
    plugin.hub_routes = hookimpl(lambda: [returned])
    plugin.hub_routes.__name__ = "hub_routes"
    plugins = load_plugins()
    register(plugins, plugin, "routes-plugin")
    with pytest.raises(PluginError, match=f"plugin 'routes-plugin'.*{re.escape(message)}"):
        plugins.routes()


def test_every_hook_is_documented_and_tested():
    docs = (ROOT / "docs" / "plugins.md").read_text()
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    specs = [name for name in dir(hookspecs) if name.startswith("hub_")]
    assert specs == ["hub_connectors", "hub_image_indexed", "hub_importers", "hub_routes"]
    for name in specs:
        assert getattr(hookspecs, name).__doc__, f"{name} has no docstring"
        assert f"`{name}" in docs, f"{name} is not documented in docs/plugins.md"
        assert tests.count(name) >= 2, f"{name} has no test"


class LinesImporter:
    """A third-party importer: a ``.lst`` file with one image URL per line."""

    name = "lines"

    def accepts(self, path: Path) -> bool:
        return path.suffix == ".lst"

    def count(self, path: Path) -> int:
        return len(path.read_text().splitlines())

    def read(self, path: Path, options: ImportOptions):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.startswith("http"):
                yield ImportRow(line=number, image_url=line.strip(), name=f"line {number}")
            else:
                yield RowError(number, f"not a URL: {line[:50]}")


async def test_hub_importers_adds_a_bulk_format(settings, make_shop_for):
    plugin = types.ModuleType("lines_plugin")
    plugin.hub_importers = hookimpl(lambda: [LinesImporter()])
    plugin.hub_importers.__name__ = "hub_importers"
    plugins = load_plugins()
    assert list(plugins.importers()) == ["zip", "folder", "manifest"]  # the built-in manual plugin's
    register(plugins, plugin, "lines-plugin")
    assert "lines" in plugins.importers()
    async with serve_app(settings, plugins=plugins) as client:
        shop = await make_shop_for(client)
        body = b"https://img.example/a.jpg\nnope\nhttps://img.example/b.jpg\n"
        resp = await client.post("/api/v1/imports", params={"filename": "urls.lst"}, content=body,
                                 headers={**shop.secret, "Content-Type": "text/plain"})
        assert resp.status_code == 202, resp.text
        for _ in range(200):
            job = (await client.get(f"/api/v1/jobs/{resp.json()['id']}", headers=shop.secret)).json()
            if job["status"] == "succeeded":
                break
            await asyncio.sleep(0.05)
        assert (job["total"], job["done"], job["failed"]) == (3, 2, 1)
        assert job["errors"] == [{"line": 2, "item": None, "error": "not a URL: nope"}]
        names = {i["name"] for i in (await client.get("/api/v1/images", headers=shop.secret)).json()["items"]}
        assert names == {"line 1", "line 3"}


def test_manual_plugin_is_registered_through_its_entry_point():
    info = next(p for p in load_plugins().loaded if p["name"] == "manual")
    assert info["module"] == "hub.plugins.manual" and info["package"] == "fashion-hub"
    assert info["importers"] == ["folder", "manifest", "zip"]
