"""Each shop's taxonomy: categories, styles and age groups (seeded with defaults), found by id or by name."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import MAX_ID, AgeGroup, Category, Image, Style
from hub.domain import lexical
from hub.domain.pipeline import Pipeline
from hub.errors import Conflict, Unprocessable, not_found

TaxonModel = type[Category] | type[Style] | type[AgeGroup]
Taxon = Category | Style | AgeGroup
TAXONOMIES: dict[str, TaxonModel] = {"category": Category, "style": Style, "age_group": AgeGroup}


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class TaxonCreate(BaseModel):
    name: Name  # trimmed first, so "   " is too short rather than stored as ""
    description: str = Field("", max_length=2000)


class TaxonUpdate(BaseModel):
    name: Name | None = None
    description: str | None = Field(None, max_length=2000)


async def find_taxon(
    session: AsyncSession, model: TaxonModel, shop_id: int, ident: int | str
) -> Category | Style | AgeGroup | None:
    """Look a taxon up by id, or by name (case-insensitive) when ``ident`` is not a number."""
    text = str(ident).strip()
    if isinstance(ident, int) or re.fullmatch(r"[0-9]{1,12}", text):  # ASCII digits only ("²" is not a number)
        number = int(ident) if isinstance(ident, int) else int(text)
        if not 1 <= number <= MAX_ID:
            return None
        found: Taxon | None = await session.scalar(select(model).where(model.id == number, model.shop_id == shop_id))
        return found
    named: Taxon | None = await session.scalar(
        select(model).where(func.lower(model.name) == text.lower(), model.shop_id == shop_id)
    )
    return named


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
            raise Unprocessable(f"{field} {value} does not exist in this shop", extra={"field": field})
        found[name] = row
    return found


class Taxonomy:
    """One of the three taxonomies of a shop: list, add, rename, describe and remove its groups."""

    def __init__(self, model: TaxonModel, label: str) -> None:
        self.model = model
        self.label = label
        self.field = next(name for name, m in TAXONOMIES.items() if m is model)

    async def list(self, session: AsyncSession, shop_id: int) -> list[Taxon]:
        model = self.model
        return list(await session.scalars(select(model).where(model.shop_id == shop_id).order_by(model.id)))

    async def get(self, session: AsyncSession, shop_id: int, ident: int) -> Taxon:
        model = self.model
        row: Taxon | None = await session.scalar(select(model).where(model.id == ident, model.shop_id == shop_id))
        if row is None:
            raise not_found(self.label, ident)
        return row

    async def add(self, session: AsyncSession, shop_id: int, data: TaxonCreate) -> Taxon:
        row = self.model(shop_id=shop_id, name=data.name.strip(), description=data.description)
        session.add(row)
        await self._commit(session, data.name)
        return row

    async def update(self, session: AsyncSession, shop_id: int, ident: int, data: TaxonUpdate) -> Taxon:
        row = await self.get(session, shop_id, ident)
        if data.name is not None:
            row.name = data.name.strip()
        if data.description is not None:
            row.description = data.description
        await self._commit(session, row.name)
        return row

    async def remove(self, session: AsyncSession, pipeline: Pipeline, shop_id: int, ident: int) -> None:
        """Images in this group keep existing; their reference is cleared (in the vector store too)."""
        row = await self.get(session, shop_id, ident)
        column = getattr(Image, f"{self.field}_id")
        affected = list(await session.scalars(select(Image.id).where(column == row.id)))
        lexical.mark_changed(session, affected)  # the database clears their reference: no flush shows it
        await session.delete(row)
        await session.commit()
        if affected:
            await pipeline.images_changed(shop_id, affected)

    async def _commit(self, session: AsyncSession, name: str) -> None:
        try:
            await session.commit()
        except IntegrityError:  # names are unique per shop whatever their case ("Dresses" and "dresses")
            await session.rollback()
            raise Conflict(f"a {self.label} named {name!r} already exists (names are compared ignoring case)") from None


categories = Taxonomy(Category, "category")
styles = Taxonomy(Style, "style")
age_groups = Taxonomy(AgeGroup, "age group")
