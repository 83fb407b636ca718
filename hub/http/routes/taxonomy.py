"""Per-shop taxonomy CRUD: ``/api/v1/categories``, ``/api/v1/styles``, ``/api/v1/age-groups``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from litestar import delete, get, patch, post
from litestar.params import JSONBody

from hub.domain.taxonomy import Taxon, TaxonCreate, Taxonomy, TaxonUpdate, age_groups, categories, styles
from hub.http.auth import Caller, SecretKeyController
from hub.http.deps import Db, Svc
from hub.http.openapi import problems
from hub.http.validation import PathId


@dataclass(frozen=True)
class TaxonOut:
    id: int
    name: str
    description: str
    created_at: datetime

    @classmethod
    def of(cls, row: Taxon) -> TaxonOut:
        return cls(id=row.id, name=row.name, description=row.description, created_at=row.created_at)


@dataclass(frozen=True)
class TaxonList:
    items: list[TaxonOut]


def taxonomy_controller(taxonomy: Taxonomy, path: str) -> type[SecretKeyController]:
    """One CRUD controller per taxonomy; all three behave the same."""

    class TaxonomyController(SecretKeyController):
        tags = ["taxonomy"]

        @get("/")
        async def list_items(self, db: Db, principal: Caller) -> TaxonList:
            """The shop's groups, oldest first."""
            return TaxonList([TaxonOut.of(row) for row in await taxonomy.list(db, principal.shop_id)])

        @post("/", status_code=201, responses=problems(409))
        async def create(self, db: Db, principal: Caller, data: JSONBody[TaxonCreate]) -> TaxonOut:
            """A new group; names are unique per shop, ignoring case (409)."""
            return TaxonOut.of(await taxonomy.add(db, principal.shop_id, data))

        @get("/{item_id:int}")
        async def get_item(self, db: Db, principal: Caller, item_id: PathId) -> TaxonOut:
            return TaxonOut.of(await taxonomy.get(db, principal.shop_id, item_id))

        @patch("/{item_id:int}", responses=problems(409))
        async def update(self, db: Db, principal: Caller, item_id: PathId, data: JSONBody[TaxonUpdate]) -> TaxonOut:
            return TaxonOut.of(await taxonomy.update(db, principal.shop_id, item_id, data))

        @delete("/{item_id:int}", status_code=204)
        async def remove(self, db: Db, services: Svc, principal: Caller, item_id: PathId) -> None:
            """Images in this group keep existing; their reference is cleared (in the vector store too)."""
            await taxonomy.remove(db, services.pipeline, principal.shop_id, item_id)

    TaxonomyController.path = path
    TaxonomyController.__name__ = f"{taxonomy.model.__name__}Controller"
    return TaxonomyController


CategoryController = taxonomy_controller(categories, "/api/v1/categories")
StyleController = taxonomy_controller(styles, "/api/v1/styles")
AgeGroupController = taxonomy_controller(age_groups, "/api/v1/age-groups")
