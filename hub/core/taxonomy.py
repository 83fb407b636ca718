"""Per-shop taxonomy CRUD: ``/api/v1/categories``, ``/api/v1/styles``, ``/api/v1/age-groups``."""

from __future__ import annotations

import re
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.params import JSONBody
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.auth import Caller
from hub.core.deps import Db
from hub.core.errors import ApiError, not_found
from hub.core.models import AgeGroup, Category, Image, Style
from hub.core.validation import MAX_ID
from hub.core.validation import PathId

TaxonModel = type[Category] | type[Style] | type[AgeGroup]
TAXONOMIES: dict[str, TaxonModel] = {"category": Category, "style": Style, "age_group": AgeGroup}


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class TaxonCreate(BaseModel):
    name: Name  # trimmed first, so "   " is too short rather than stored as ""
    description: str = Field("", max_length=2000)


class TaxonUpdate(BaseModel):
    name: Name | None = None
    description: str | None = Field(None, max_length=2000)


def taxon_json(row: Category | Style | AgeGroup) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "description": row.description, "created_at": row.created_at}


async def find_taxon(
    session: AsyncSession, model: TaxonModel, shop_id: int, ident: int | str
) -> Category | Style | AgeGroup | None:
    """Look a taxon up by id, or by name (case-insensitive) when ``ident`` is not a number."""
    text = str(ident).strip()
    if isinstance(ident, int) or re.fullmatch(r"[0-9]{1,12}", text):  # ASCII digits only ("²" is not a number)
        number = int(ident) if isinstance(ident, int) else int(text)
        if not 1 <= number <= MAX_ID:
            return None
        return await session.scalar(select(model).where(model.id == number, model.shop_id == shop_id))
    return await session.scalar(
        select(model).where(func.lower(model.name) == text.lower(), model.shop_id == shop_id)
    )


async def taxon_names(session: AsyncSession, shop_id: int) -> dict[str, list[tuple[int, str]]]:
    """The shop's categories, styles and age groups as ``(id, name)`` pairs, by kind."""
    return {
        kind: [(r.id, r.name) for r in await session.execute(select(model.id, model.name).where(model.shop_id == shop_id))]
        for kind, model in TAXONOMIES.items()
    }


async def check_taxon_ids(session: AsyncSession, shop_id: int, ids: dict[str, int | None]) -> dict[str, Any]:
    """422 unless every given ``category_id``/``style_id``/``age_group_id`` is one of this shop's.

    Returns the rows by relationship name (``category``, …; None where the id is None), ready to assign.
    """
    found: dict[str, Any] = {}
    for field, value in ids.items():
        name = field.removesuffix("_id")
        if value is None:
            found[name] = None
            continue
        row = await find_taxon(session, TAXONOMIES[name], shop_id, value)
        if row is None:
            raise ApiError(422, f"{field} {value} does not exist in this shop", extra={"field": field})
        found[name] = row
    return found


def taxonomy_controller(model: TaxonModel, path: str, label: str) -> type[Controller]:
    """One CRUD controller per taxonomy; all three behave the same."""
    field = next(name for name, m in TAXONOMIES.items() if m is model)

    async def _get(session: AsyncSession, shop_id: int, ident: int) -> Any:
        row = await session.scalar(select(model).where(model.id == ident, model.shop_id == shop_id))
        if row is None:
            raise not_found(label, ident)
        return row

    async def _commit(session: AsyncSession, name: str) -> None:
        try:
            await session.commit()
        except IntegrityError:  # names are unique per shop whatever their case ("Dresses" and "dresses")
            await session.rollback()
            raise ApiError(409, f"a {label} named {name!r} already exists (names are compared ignoring case)") from None

    class TaxonomyController(Controller):
        tags = ["taxonomy"]

        @get("/")
        async def list_items(self, db: Db, principal: Caller) -> dict[str, Any]:
            rows = await db.scalars(select(model).where(model.shop_id == principal.shop_id).order_by(model.id))
            return {"items": [taxon_json(r) for r in rows]}

        @post("/", status_code=201)
        async def create(self, db: Db, principal: Caller, data: JSONBody[TaxonCreate]) -> dict[str, Any]:
            row = model(shop_id=principal.shop_id, name=data.name.strip(), description=data.description)
            db.add(row)
            await _commit(db, data.name)
            return taxon_json(row)

        @get("/{item_id:int}")
        async def get_item(self, db: Db, principal: Caller, item_id: PathId) -> dict[str, Any]:
            return taxon_json(await _get(db, principal.shop_id, item_id))

        @patch("/{item_id:int}")
        async def update(
            self, db: Db, principal: Caller, item_id: PathId, data: JSONBody[TaxonUpdate]
        ) -> dict[str, Any]:
            row = await _get(db, principal.shop_id, item_id)
            if data.name is not None:
                row.name = data.name.strip()
            if data.description is not None:
                row.description = data.description
            await _commit(db, row.name)
            return taxon_json(row)

        @delete("/{item_id:int}", status_code=204)
        async def remove(self, request: Request, db: Db, principal: Caller, item_id: PathId) -> None:
            """Images in this group keep existing; their reference is cleared (in the vector store too)."""
            row = await _get(db, principal.shop_id, item_id)
            column = getattr(Image, f"{field}_id")
            affected = list(await db.scalars(select(Image.id).where(column == row.id)))
            await db.delete(row)
            await db.commit()
            if affected:
                await request.app.state.pipeline.images_changed(principal.shop_id, affected)

    TaxonomyController.path = path
    TaxonomyController.__name__ = f"{model.__name__}Controller"
    return TaxonomyController


CategoryController = taxonomy_controller(Category, "/api/v1/categories", "category")
StyleController = taxonomy_controller(Style, "/api/v1/styles", "style")
AgeGroupController = taxonomy_controller(AgeGroup, "/api/v1/age-groups", "age group")
