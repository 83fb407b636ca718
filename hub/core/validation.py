"""Bounds for values that reach the database or the vector store: an id outside the column's range is bad
input (400), never a driver error (500) or a vector-store error (503)."""

from __future__ import annotations

from typing import Annotated

from litestar.params import PathParameter, QueryParameter
from pydantic import Field

MAX_ID = 2**31 - 1  # ids are INTEGER columns (int4 on PostgreSQL)

PathId = Annotated[int, PathParameter(ge=1, le=MAX_ID)]
QueryId = Annotated[int | None, QueryParameter(ge=1, le=MAX_ID)]
BodyId = Annotated[int, Field(ge=1, le=MAX_ID)]
