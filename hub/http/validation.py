"""Bounds for values that reach the database or the vector store: an id outside the column's range is bad
input (400), never a driver error (500) or a vector-store error (503)."""

from __future__ import annotations

from typing import Annotated

from litestar.params import PathParameter, QueryParameter
from hub.db.models import MAX_ID
from hub.domain.fields import BodyId

__all__ = ["MAX_ID", "BodyId", "PathId", "QueryId"]


PathId = Annotated[int, PathParameter(ge=1, le=MAX_ID)]
QueryId = Annotated[int | None, QueryParameter(ge=1, le=MAX_ID)]
