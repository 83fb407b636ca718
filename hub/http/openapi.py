"""The OpenAPI document tells the truth about errors: one error body (``Problem``) for every status an operation
can answer besides its success, documented once here rather than on each handler.

Every operation gets the statuses any request can meet (400 bad input, 503 a dependency down); operations behind
a key or token also get 401, 403 and 429; operations on ``/{id}`` paths get 404. A handler adds what only it can
answer with ``responses=problems(409, 413, …)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar._openapi.schema_generation import SchemaCreator
from litestar.plugins import ReceiveRoutePlugin
from litestar.plugins.pydantic import PydanticSchemaPlugin
from litestar.typing import FieldDefinition
from litestar.routes import BaseRoute, HTTPRoute
from pydantic import BaseModel

WHY = {
    400: "Bad input: the request is malformed or a value is out of range; nothing changed",
    401: "No key or token, or a wrong or revoked one",
    403: "The key is of a kind that may not do this (a publishable key where a secret key is needed)",
    404: "Not found (or another shop's, which looks the same)",
    409: "Conflict with the object's current state",
    413: "Too large: more bytes, pixels, rows or objects than a limit allows",
    415: "Not a kind of file or body the hub reads",
    422: "Well-formed but not acceptable (settings a platform rejects, a reference to nothing)",
    429: "Rate limited; Retry-After says when to try again",
    502: "The store's platform answered too slowly, with too much, or with something unreadable",
    503: "A dependency (database, broker, vector store, model, mail) is down; Retry-After says when to retry",
}
PUBLIC_PATHS = ("/health", "/ready", "/schema")
UNAUTHENTICATED_PATHS = ("/api/v1/signup", "/oauth/")


@dataclass
class Problem:
    """Every error: the HTTP status, a machine-readable code (``not_found``, ``conflict``…), a sentence for
    people, and sometimes details (``extra``: the existing image's id, the invalid fields)."""

    status: int
    error: str
    detail: str
    extra: dict[str, Any] | list[Any] | None = None


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    return {status: ResponseSpec(data_container=Problem, description=WHY[status], generate_examples=False)
            for status in statuses}


def default_statuses(path: str) -> tuple[int, ...]:
    if path.startswith(PUBLIC_PATHS):
        return ()
    statuses = [400, 503]
    if not path.startswith(UNAUTHENTICATED_PATHS):
        statuses += [401, 403, 429]
    if "{" in path:
        statuses.append(404)
    return tuple(statuses)


class ErrorResponses(ReceiveRoutePlugin):
    """Adds the default error statuses of each route to its handlers (a handler's own entries win)."""

    def receive_route(self, route: BaseRoute) -> None:
        if not isinstance(route, HTTPRoute):
            return
        defaults = problems(*default_statuses(route.path))
        for handler in route.route_handlers:
            assert isinstance(handler, HTTPRouteHandler)
            handler.responses = {**defaults, **(handler.responses or {})}


# -- request bodies a handler reads itself (streamed uploads, one endpoint taking multipart or JSON) -----------

BINARY = Schema(type=OpenAPIType.STRING, format="binary")
_KEYS = {"maxLength": "max_length", "minLength": "min_length", "exclusiveMinimum": "exclusive_minimum",
         "exclusiveMaximum": "exclusive_maximum", "maxItems": "max_items", "minItems": "min_items"}
_PLAIN = {"minimum", "maximum", "format", "pattern", "description", "default", "enum", "title", "required", "const"}


def _schema(data: dict[str, Any], defs: dict[str, Any] | None = None) -> Schema:
    """A pydantic JSON schema as Litestar's OpenAPI ``Schema`` (``$ref``s to its ``$defs`` inlined)."""
    defs = {**(defs or {}), **data.get("$defs", {})}
    if "$ref" in data:
        return _schema(defs[data["$ref"].rsplit("/", 1)[-1]] | {k: v for k, v in data.items() if k != "$ref"}, defs)
    fields: dict[str, Any] = {}
    for key, value in data.items():
        if key == "type":
            fields["type"] = OpenAPIType(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            fields[_snake(key)] = [_schema(part, defs) for part in value]
        elif key == "properties":
            fields["properties"] = {name: _schema(part, defs) for name, part in value.items()}
        elif key in ("items", "then"):
            fields[key] = _schema(value, defs)
        elif key == "if":
            fields["schema_if"] = _schema(value, defs)
        elif key in _KEYS:
            fields[_KEYS[key]] = value
        elif key in _PLAIN:
            fields[key] = value
        elif key == "additionalProperties" and value is False:
            fields["additional_properties"] = False
    return Schema(**fields)


def _snake(key: str) -> str:
    return {"anyOf": "any_of", "allOf": "all_of", "oneOf": "one_of"}[key]


def json_schema(schema: dict[str, Any]) -> Schema:
    """A JSON schema pydantic made (of a model or a ``TypeAdapter``) as an OpenAPI ``Schema``."""
    return _schema(schema)


def model_schema(model: type[BaseModel], *, files: tuple[str, ...] = (), text: tuple[str, ...] = (),
                 title: str | None = None) -> Schema:
    """The object a pydantic model accepts — plus binary ``files`` (required) and optional ``text`` fields, for a
    multipart form."""
    schema = _schema(model.model_json_schema())
    properties = dict(schema.properties or {})
    properties.update({name: BINARY for name in files})
    properties.update({name: Schema(type=OpenAPIType.STRING) for name in text})
    schema.properties = properties
    schema.required = sorted({*(schema.required or []), *files}) or None
    schema.title = title or schema.title
    return schema


def request_body(content: dict[str, Schema]) -> type[Operation]:
    """An ``operation_class`` documenting a body the handler reads itself (one schema per media type)."""

    @dataclass
    class WithBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(required=True, content={
                media_type: OpenAPIMediaType(schema=schema) for media_type, schema in content.items()})

    return WithBody


class ForbidExtraFields(PydanticSchemaPlugin):
    """Pydantic models as Litestar documents them, plus ``additionalProperties: false`` for the request models that
    refuse unknown fields (Litestar leaves it out, and a client should learn from the schema that a misspelt field
    is an error, not ignored). Runs when the document is first built, not at app creation."""

    @classmethod
    def for_pydantic_model(cls, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().for_pydantic_model(field_definition, schema_creator)
        model = field_definition.annotation
        if isinstance(model, type) and issubclass(model, BaseModel) and model.model_config.get("extra") == "forbid":
            schema.additional_properties = False
        return schema
