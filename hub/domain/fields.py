"""Field types for request bodies that mean what the schema says: ids within the column's range, and JSON
numbers and booleans taken only as JSON numbers and booleans (never ``"3"`` for 3 or ``1`` for true — the API
validates leniently otherwise, and a client must not learn to rely on that)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from hub.db.models import MAX_ID


def _number(value: Any) -> Any:
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON number")
    return value


def _boolean(value: Any) -> Any:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


BodyId = Annotated[int, BeforeValidator(_number), Field(ge=1, le=MAX_ID)]
# an id inside a list (the JSON schema of a list item needs its bounds spelt out)
ListedId = Annotated[int, BeforeValidator(_number), Field(ge=1, le=MAX_ID, json_schema_extra={"minimum": 1,
                                                                                              "maximum": MAX_ID})]
JsonFloat = Annotated[float, BeforeValidator(_number)]
JsonInt = Annotated[int, BeforeValidator(_number)]
JsonBool = Annotated[bool, BeforeValidator(_boolean)]


def optional_id(description: str | None = None) -> Any:
    """The default of an optional ``BodyId`` field, with its range where the API schema shows it (the schema
    generator drops constraints inside an optional type)."""
    return Field(None, description=description, json_schema_extra={"minimum": 1, "maximum": MAX_ID})
