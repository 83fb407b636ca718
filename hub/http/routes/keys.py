"""``/api/v1/keys``: a shop lists, creates and revokes its own keys (secret key required)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from litestar import delete, get, post
from litestar.params import JSONBody
from pydantic import BaseModel, Field

from hub.db.models import ApiKey
from hub.domain.keys import KeyKind, NewKey, add_key, list_keys, revoke_key
from hub.http.auth import Caller, SecretKeyController
from hub.http.deps import Db, Svc
from hub.http.openapi import problems
from hub.http.validation import PathId


@dataclass(frozen=True)
class KeyOut:
    """A key as listed: never the key itself, only its first characters (``prefix``)."""

    id: int
    name: str
    kind: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    active: bool

    @classmethod
    def of(cls, row: ApiKey) -> KeyOut:
        return cls(id=row.id, name=row.name, kind=row.kind, prefix=row.prefix, created_at=row.created_at,
                   last_used_at=row.last_used_at, revoked_at=row.revoked_at, active=row.revoked_at is None)


@dataclass(frozen=True)
class CreatedKey(KeyOut):
    """A new key: ``key`` is shown this once and never again."""

    key: str

    @classmethod
    def made(cls, new: NewKey) -> CreatedKey:
        listed = KeyOut.of(new.row)
        return cls(**{name: getattr(listed, name) for name in KeyOut.__dataclass_fields__}, key=new.raw)


@dataclass(frozen=True)
class KeyList:
    items: list[KeyOut]


class KeyCreate(BaseModel):
    kind: KeyKind = "secret"
    name: str = Field("", max_length=100)


class KeyController(SecretKeyController):
    path = "/api/v1/keys"
    tags = ["keys"]

    @get("/")
    async def list_keys(self, db: Db, principal: Caller) -> KeyList:
        """The shop's keys, revoked ones included."""
        return KeyList([KeyOut.of(row) for row in await list_keys(db, principal.shop_id)])

    @post("/", status_code=201, responses=problems(409))
    async def create(self, db: Db, services: Svc, principal: Caller, data: JSONBody[KeyCreate]) -> CreatedKey:
        """A new key, shown once. A shop has at most HUB_MAX_KEYS_PER_SHOP active keys (409 beyond)."""
        limit = services.settings.max_keys_per_shop
        return CreatedKey.made(await add_key(db, principal.shop_id, data.kind, data.name, limit))

    @delete("/{key_id:int}", status_code=204, responses=problems(409))
    async def revoke(self, db: Db, principal: Caller, key_id: PathId) -> None:
        """Revoke a key at once; the shop's last active secret key cannot be revoked (409)."""
        await revoke_key(db, principal.shop_id, key_id)
