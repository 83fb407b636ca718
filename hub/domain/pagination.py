"""Opaque cursors for keyset pagination (newest first, by id)."""

from __future__ import annotations

import base64
import json

from typing import TypeVar

from hub.errors import Invalid
from hub.db.models import MAX_ID


RowT = TypeVar("RowT")


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": last_id}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The id to continue below, or None for the first page; 400 for a cursor the hub did not make."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)["before"]
        if type(value) is not int or not 1 <= value <= MAX_ID + 1:  # (a bool is an int to Python: not here)
            raise ValueError
        return value
    except (ValueError, KeyError, TypeError, RecursionError):
        raise Invalid("invalid cursor: pass back the next_cursor of a previous page") from None


def page(rows: list[RowT], limit: int) -> tuple[list[RowT], str | None]:
    """Split a ``limit + 1`` fetch into the page and the cursor of the next one."""
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(int(getattr(rows[-1], "id")))
    return rows, None
