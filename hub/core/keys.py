"""The shop's key list/create/revoke endpoints (``/api/v1/keys``)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.params import JSONBody
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from hub.core.auth import Caller, KeyKind, create_key
from hub.core.deps import Db
from hub.core.errors import ApiError, not_found
from hub.core.models import ApiKey, utcnow
from hub.core.validation import PathId


def key_json(row: ApiKey, raw: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "kind": row.kind,
        "prefix": row.prefix,
        "created_at": row.created_at,
        "last_used_at": row.last_used_at,
        "revoked_at": row.revoked_at,
        "active": row.revoked_at is None,
    }
    if raw is not None:
        body["key"] = raw
    return body


class KeyCreate(BaseModel):
    kind: KeyKind = "secret"
    name: str = Field("", max_length=100)


class KeyController(Controller):
    """``/api/v1/keys``: a shop lists, creates and revokes its own keys (secret key required)."""

    path = "/api/v1/keys"
    tags = ["keys"]

    @get("/")
    async def list_keys(self, db: Db, principal: Caller) -> dict[str, Any]:
        rows = await db.scalars(select(ApiKey).where(ApiKey.shop_id == principal.shop_id).order_by(ApiKey.id))
        return {"items": [key_json(r) for r in rows]}

    @post("/", status_code=201)
    async def create(self, request: Request, db: Db, principal: Caller, data: JSONBody[KeyCreate]) -> dict[str, Any]:
        """A new key, shown once. A shop has at most HUB_MAX_KEYS_PER_SHOP active keys (409 beyond)."""
        limit = request.app.state.settings.max_keys_per_shop
        active = await db.scalar(select(func.count()).where(ApiKey.shop_id == principal.shop_id,
                                                            ApiKey.revoked_at.is_(None)))
        if active >= limit:
            raise ApiError(409, f"this shop has {active} active keys, the most it may have; revoke one first")
        new = await create_key(db, principal.shop_id, data.kind, data.name)
        await db.commit()
        return key_json(new.row, new.raw)

    @delete("/{key_id:int}", status_code=204)
    async def revoke(self, db: Db, principal: Caller, key_id: PathId) -> None:
        row = await db.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.shop_id == principal.shop_id))
        if row is None:
            raise not_found("key", key_id)
        if row.revoked_at is not None:
            return
        if row.kind == "secret":
            active_secret = await db.scalar(
                select(func.count()).where(
                    ApiKey.shop_id == principal.shop_id, ApiKey.kind == "secret", ApiKey.revoked_at.is_(None)
                )
            )
            if active_secret == 1:
                raise ApiError(409, "cannot revoke the shop's last active secret key; create another first")
        row.revoked_at = utcnow()
        await db.commit()


