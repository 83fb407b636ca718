"""The registry of the models the vector store holds collections for (``vector_models``), and the switch between
them without a restart.

A model's row is in one of these states:

- ``active``: the model every process serves and embeds with. The first process to start registers its
  ``HUB_MODEL`` as active (and so does one with another ``HUB_MODEL`` while no image is ready yet); from then on
  the registry decides, and ``hub reindex --switch`` changes it;
- ``previous``: the model that was active before the last switch. Its collections are kept current (metadata
  changes and deletions), so ``hub reindex --rollback`` makes it active again without a rebuild; images embedded
  since the switch are embedded by it once it is active again (the sweep finds their vectors missing);
- ``building``: a model ``hub reindex --model`` builds beside the active one (``hub.domain.reindex``);
- ``forgotten``: its collections are dropped by a sweep once ``HUB_MODEL_DROP_DELAY`` has passed (a process still
  switching away from it finishes first), then the row goes.

Every process reads the registry at most ``REGISTRY_TTL`` apart (``hub.worker.runtime.Runtime``): it writes
metadata changes and deletions to every registered model's collections, and when the active model changes it
loads the new one, then serves it (an API loads its text tower first, a worker its image tower).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import Image, Job, VectorModel, utcnow
from hub.domain.services import Services
from hub.errors import Conflict, NotFound

ACTIVE, PREVIOUS, BUILDING, FORGOTTEN = "active", "previous", "building", "forgotten"
REINDEX = "reindex"  # the kind of a build's jobs
# how long a process trusts what it read of the registry: a switch reaches every process within this (and the
# new model's load); a build's first step waits twice this after its model was registered (hub.domain.reindex)
REGISTRY_TTL = timedelta(seconds=5)


@dataclass(frozen=True)
class ModelRef:
    """A registered model: its key (``hub.search.encoder.model_key``) and the name it is loaded by."""

    key: str
    name: str


@dataclass(frozen=True)
class Registry:
    """What one read of the registry says: the active model (None before any process registered one), the
    previous one, and every model whose collections are kept current (the active one included)."""

    active: ModelRef | None
    previous: ModelRef | None
    kept: tuple[str, ...]
    forgotten: tuple[str, ...] = ()  # whose collections a sweep drops


def _ref(row: VectorModel | None) -> ModelRef | None:
    return ModelRef(row.key, row.name) if row is not None else None


def of_model(key: str) -> Any:
    """The jobs of a model's build."""
    return (Job.kind == REINDEX) & (Job.params["key"].as_string() == key)


async def read_registry(services: Services) -> Registry:
    async with services.sessions() as session:
        rows = list(await session.scalars(select(VectorModel).order_by(VectorModel.updated_at, VectorModel.key)))
    # (two processes that registered different HUB_MODELs at once: the later registration counts)
    active = [row for row in rows if row.state == ACTIVE]
    previous = [row for row in rows if row.state == PREVIOUS]
    return Registry(_ref(active[-1] if active else None), _ref(previous[-1] if previous else None),
                    tuple(sorted(row.key for row in rows if row.state != FORGOTTEN)),
                    tuple(sorted(row.key for row in rows if row.state == FORGOTTEN)))


async def adopt_active(services: Services, name: str, key: str) -> ModelRef:
    """The active model. If none is registered yet, this process's ``HUB_MODEL`` becomes it; so it does if the
    active one differs, was registered by a process (never switched to) and no image is ready yet (a fresh
    install trying models, or one whose first model could not be loaded): the one it replaces becomes the
    previous one. Once a switch was made, or an image is ready, only a switch changes it."""
    found = (await read_registry(services)).active
    if found is not None and found.key == key:
        return found
    async with services.sessions() as session:
        now = utcnow()
        if found is not None:
            replaced = await session.get(VectorModel, found.key)
            if replaced is None or replaced.switched_at is not None or await session.scalar(
                    select(Image.id).where(Image.status == "ready").limit(1)) is not None:
                return found
            for earlier in await session.scalars(select(VectorModel).where(VectorModel.state == PREVIOUS)):
                earlier.state, earlier.updated_at = FORGOTTEN, now
            replaced.state, replaced.updated_at, replaced.created_at = PREVIOUS, now, now
        row = await session.get(VectorModel, key)
        if row is None:
            session.add(VectorModel(key=key, name=name, state=ACTIVE, created_at=now, updated_at=now))
        else:  # (a model built, or forgotten, before it was first served)
            row.name, row.state, row.updated_at, row.created_at = name, ACTIVE, now, now
        try:
            await session.commit()
        except IntegrityError:  # another process registered the same model meanwhile
            pass
    return (await read_registry(services)).active or ModelRef(key, name)


async def find_model(services: Services, name_or_key: str, key_of_name: str | None) -> VectorModel:
    """A registered model by its key, or by the name it was registered with (whose key is ``key_of_name``)."""
    async with services.sessions() as session:
        for key in (name_or_key, key_of_name):
            row = await session.get(VectorModel, key) if key else None
            if row is not None and row.state != FORGOTTEN:
                return row
        row = (await session.scalars(select(VectorModel).where(
            VectorModel.name == name_or_key, VectorModel.state != FORGOTTEN))).first()
        if row is None:
            raise NotFound(f"{name_or_key} is not a registered model: build it first (hub reindex --model)")
        return row


@dataclass(frozen=True)
class Switched:
    """What a switch did: the model now active, the one it replaced (now ``previous``), and the model that was
    previous before and is forgotten now (its collections are dropped), if any."""

    active: ModelRef
    previous: ModelRef | None
    forgotten: ModelRef | None


async def switch_to(services: Services, key: str) -> Switched:
    """Make a registered model the active one; the active one becomes ``previous``, and the former previous one
    (unless it is the one switched to) is forgotten. Whether the model is built enough is the caller's check."""
    async with services.sessions() as session:
        target = await session.get(VectorModel, key, with_for_update=True)
        if target is None or target.state == FORGOTTEN:
            raise NotFound(f"{key} is not a registered model")
        if target.state == ACTIVE:
            raise Conflict(f"{target.name} is already the active model")
        rows = list(await session.scalars(select(VectorModel).where(
            VectorModel.state.in_((ACTIVE, PREVIOUS))).with_for_update()))
        now = utcnow()
        replaced = forgotten = None
        for row in rows:
            if row.key == key:
                continue
            if row.state == ACTIVE:
                row.state, row.updated_at, row.created_at, replaced = PREVIOUS, now, now, _ref(row)
            else:
                row.state, row.updated_at, forgotten = FORGOTTEN, now, _ref(row)
        target.state, target.updated_at, target.created_at, target.switched_at = ACTIVE, now, now, now
        await _cancel_builds(session, key)  # (a build still queued for the model: the sweep embeds what it misses)
        await session.commit()
        return Switched(ModelRef(target.key, target.name), replaced, forgotten)


async def roll_back(services: Services) -> Switched:
    """Make the previous model active again; the active one becomes ``previous`` (rolling back twice returns)."""
    registry = await read_registry(services)
    if registry.previous is None:
        raise Conflict("there is no previous model to roll back to (none was switched from, or it was forgotten)")
    return await switch_to(services, registry.previous.key)


async def forget_model(services: Services, key: str) -> bool:
    """Stop keeping a model's collections current and have the sweep drop them (its queued builds fail); False
    if unknown. The active model cannot be forgotten."""
    async with services.sessions() as session:
        row = await session.get(VectorModel, key)
        if row is None or row.state == FORGOTTEN:
            return False
        if row.state == ACTIVE:
            raise Conflict(f"{row.name} is the active model; switch to another before forgetting it")
        row.state, row.updated_at = FORGOTTEN, utcnow()
        await _cancel_builds(session, key)
        await session.commit()
        return True


async def _cancel_builds(session: AsyncSession, key: str) -> None:
    await session.execute(update(Job).where(of_model(key), Job.status == "queued").values(
        status="failed", error="the build was cancelled", finished_at=utcnow(), next_attempt_at=None))


async def forgotten_models(services: Services, delay: timedelta) -> list[str]:
    """The models forgotten at least ``delay`` ago (``HUB_MODEL_DROP_DELAY``): every process has switched away
    from them by then, so their collections can go."""
    async with services.sessions() as session:
        return list(await session.scalars(select(VectorModel.key).where(
            VectorModel.state == FORGOTTEN, VectorModel.updated_at <= utcnow() - delay)))


async def drop_row(services: Services, key: str) -> None:
    """The forgotten model's row goes once its collections are dropped (unless it was registered again)."""
    async with services.sessions() as session:
        row = await session.get(VectorModel, key)
        if row is not None and row.state == FORGOTTEN:
            await session.delete(row)
            await session.commit()
