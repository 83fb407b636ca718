"""``docs/plugins.md`` documents the plugin SDK exactly: every hook, every event and delivery type's constructor,
every method of every connector protocol, each with its exact signature as the code declares it. Adding or
changing one without its doc fails here, and so does a doc entry for something the SDK no longer has."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any, Protocol

from hub import connectors, hookspecs, testing

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_HEADING = re.compile(r"^#### `([^`]+)`", re.MULTILINE)


def _annotation(value: Any) -> str:
    return value if isinstance(value, str) else getattr(value, "__name__", repr(value))


def _default(parameter: inspect.Parameter, owner: Any) -> str:
    if dataclasses.is_dataclass(owner):
        declared = {f.name: f for f in dataclasses.fields(owner)}.get(parameter.name)
        if declared is not None and declared.default_factory is not dataclasses.MISSING:
            return repr(declared.default_factory())
    return repr(parameter.default)


def signature(function: Any, owner: Any = None, skip_self: bool = False) -> str:
    """``(name: type = default, …) -> type`` as the source declares it (annotations are strings there)."""
    declared = inspect.signature(function)
    parts = []
    starred = False
    for name, parameter in declared.parameters.items():
        if skip_self and name == "self":
            continue
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and not starred:
            parts.append("*")
            starred = True
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            starred = True
            name = f"*{name}"
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            name = f"**{name}"
        text = name
        if parameter.annotation is not inspect.Parameter.empty:
            text += f": {_annotation(parameter.annotation)}"
        if parameter.default is not inspect.Parameter.empty:
            text += f" = {_default(parameter, owner)}"
        parts.append(text)
    returns = declared.return_annotation
    return f"({', '.join(parts)})" + ("" if returns is inspect.Signature.empty else f" -> {_annotation(returns)}")


def _is_protocol(cls: type) -> bool:
    return Protocol in getattr(cls, "__mro__", ()) or getattr(cls, "_is_protocol", False)


def sdk_reference() -> list[str]:
    """Every documented entry of the SDK, exactly as ``docs/plugins.md`` must show it."""
    entries = [f"{name}{signature(getattr(hookspecs, name))}" for name in dir(hookspecs) if name.startswith("hub_")]
    for module in (hookspecs, connectors, testing):
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if name.endswith("Contract"):  # a test suite: its fixtures are documented in prose
                entries.append(name)
                continue
            if inspect.isclass(obj) and issubclass(obj, Exception):
                entries.append(f"{name}")
            elif inspect.isclass(obj) and _is_protocol(obj):
                for method_name, method in vars(obj).items():
                    if not method_name.startswith("_") and inspect.isfunction(method):
                        prefix = "async " if inspect.iscoroutinefunction(method) else ""
                        entries.append(f"{prefix}{name}.{method_name}{signature(method, skip_self=True)}")
            elif inspect.isclass(obj):
                if dataclasses.is_dataclass(obj) or "__init__" in vars(obj):
                    entries.append(f"{name}{signature(obj, owner=obj).split(' -> ')[0]}")
                else:
                    entries.append(name)
                for method_name, method in vars(obj).items():
                    if method_name.startswith("_"):
                        continue
                    if isinstance(method, property):
                        entries.append(f"{name}.{method_name}")
                    elif inspect.isfunction(method):
                        entries.append(f"{name}.{method_name}{signature(method, skip_self=True)}")
            elif inspect.isfunction(obj) and not name.startswith("hub_"):
                entries.append(f"{name}{signature(obj)}")
    return entries


def documented() -> list[str]:
    return REFERENCE_HEADING.findall((ROOT / "docs" / "plugins.md").read_text())


def test_every_sdk_entry_is_documented_with_its_exact_signature():
    missing = [entry for entry in sdk_reference() if entry not in documented()]
    assert not missing, "document these in docs/plugins.md's reference as '#### `…`' headings:\n" + "\n".join(missing)


def test_the_reference_documents_nothing_the_sdk_does_not_have():
    stale = [entry for entry in documented() if entry not in sdk_reference()]
    assert not stale, "docs/plugins.md documents what the SDK no longer has (or with another signature):\n" + \
        "\n".join(stale)


def test_every_documented_entry_says_something():
    text = (ROOT / "docs" / "plugins.md").read_text()
    sections = REFERENCE_HEADING.split(text)[1:]
    for heading, body in zip(sections[::2], sections[1::2]):
        assert len(body.split("####")[0].strip()) > 20, f"{heading} has a heading and no explanation"


def test_the_checker_would_see_a_changed_hook(monkeypatch):
    """The test above can fail: a hook with one more argument is not what the docs say."""

    def hub_image_indexed(shop_id: int, image_id: int, source: str, extra: str) -> None:
        """A changed hook."""

    monkeypatch.setattr(hookspecs, "hub_image_indexed", hub_image_indexed)
    assert "hub_image_indexed(shop_id: int, image_id: int, source: str, extra: str) -> None" in sdk_reference()
    assert "hub_image_indexed(shop_id: int, image_id: int, source: str, extra: str) -> None" not in documented()
