"""Ids in request bodies: a number outside the column's range is bad input, never a database error."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from hub.db.models import MAX_ID

BodyId = Annotated[int, Field(ge=1, le=MAX_ID)]
