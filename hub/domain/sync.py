"""A full catalog sync: read a connection's catalog page by page and apply it; resume from the stored cursor.

Each page is applied and the job's progress and cursor are committed in one transaction, so a restarted job
neither skips nor double-counts a page. When the whole catalog has been read, products the platform no longer
lists (a delete webhook that never arrived) are removed, and what the read left for the next one is kept
(``CatalogPage.state``). A platform that says nothing changed (``CatalogPage.unchanged``) changes nothing. A read
that fails keeps the catalog as it was and says why on the connection (``sync_error``).
"""

from __future__ import annotations

import contextlib
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.connectors import CatalogPage, check_event
from hub.domain.catalog import CatalogWriter, Changes, notify
from hub.domain.connections import bulk_client, platform_client, platform_problem
from hub.domain.jobs import END, JobFailed, JobProgress
from hub.db.models import Connection, Product, utcnow
from hub.domain.services import Services
from hub.logs import redact

UNCHANGED = "unchanged"  # the job's result when the platform said nothing changed


async def _writer(services: Services, session: AsyncSession, connection_id: int) -> CatalogWriter:
    connection = await session.get(Connection, connection_id)
    if connection is None:
        raise JobFailed("the connection was deleted")
    if connection.status != "active":
        raise JobFailed(f"the connection is {connection.status}")
    return await CatalogWriter.open(session, connection, utcnow() + services.settings.lease)


async def _record_failure(services: Services, connection_id: int, exc: Exception) -> None:
    """The connection says why its last read failed, in the words a failed connect uses
    (``platform_problem``: redacted, no stack)."""
    async with services.sessions() as session:
        row = await session.get(Connection, connection_id)
        if row is None:
            return
        connector = services.plugins.connectors().get(row.connector)
        reason = str(exc) if isinstance(exc, JobFailed) or connector is None else \
            platform_problem(connector, exc).detail
        row.sync_error = redact(reason)[:1000]
        await session.commit()


async def run_sync(services: Services, progress: JobProgress) -> None:
    job = progress.job
    if job.connection_id is None:
        raise JobFailed("a sync job needs a connection")
    try:
        await _run(services, progress, job.connection_id)
    except Exception as exc:
        with contextlib.suppress(Exception):  # (the database down: the job's own failure says it)
            await _record_failure(services, job.connection_id, exc)
        raise


async def _run(services: Services, progress: JobProgress, connection_id: int) -> None:
    job = progress.job
    async with services.sessions() as session:
        connection = await session.get(Connection, connection_id)
        if connection is None:
            raise JobFailed("the connection was deleted")
        shop_id = connection.shop_id
        read_with = (dict(connection.settings or {}), connection.secrets)  # (a reconnect meanwhile: another catalog)
    connector = services.plugins.connectors().get(connection.connector)
    if connector is None:
        raise JobFailed(f"the {connection.connector} connector is not installed")

    state: dict[str, Any] | None = None
    if job.cursor != END:
        async with platform_client(services.settings) as http, bulk_client(services.settings) as bulk:
            ctx = services.context(connection, connector, http, bulk_http=bulk)
            if not (job.params or {}).get("scheduled"):
                ctx.catalog_state = {}  # (asked for, or the first: the whole catalog, not "has it changed")
            async for page in connector.catalog(ctx, job.cursor):
                state = page.state if page.state is not None else state
                if page.unchanged:
                    await _unchanged(services, progress, connection_id, state, read_with)
                    return
                await _apply(services, progress, connection_id, shop_id, page)
                if not page.cursor:
                    break
    elif (job.result or {}).get(UNCHANGED):
        return  # (resumed after an unchanged read was recorded)

    async with services.sessions() as session:
        writer = await _writer(services, session, connection_id)
        if not progress.job.done and await session.scalar(select(Product.id).where(
                Product.connection_id == connection_id, Product.status != "deleted").limit(1)) is not None:
            raise JobFailed("the catalog read found no product it could apply (an empty feed, or every item "
                            "unreadable: see the job's errors); nothing was removed")
        removed: Changes = await writer.remove_unseen(job.id, progress.job.started_at or job.created_at)
        await progress.advance(session, cursor=END, result=removed.counts)
        _read_done(await session.get(Connection, connection_id), state, read_with)
        await session.commit()
    await notify(services.pipeline, services.media, shop_id, removed)


def _read_done(row: Connection | None, state: dict[str, Any] | None, read_with: tuple[Any, Any]) -> None:
    """A complete read: no error to show, and what it left kept for the next one — unless the connection was
    reconnected with other settings meanwhile (what this read saw is not that catalog's)."""
    if row is None:
        return
    row.sync_error = None
    if state is not None and (dict(row.settings or {}), row.secrets) == read_with:
        row.catalog_state = state


async def _apply(services: Services, progress: JobProgress, connection_id: int, shop_id: int,
                 page: CatalogPage) -> None:
    job = progress.job
    problems = [(event, check_event(event)) for event in page.events]
    good = [event for event, problem in problems if problem is None]
    errors = [{"item": getattr(event, "external_id", ""), "error": problem}
              for event, problem in problems if problem is not None]
    errors += [{"item": e.item or (str(e.line) if e.line is not None else ""), "error": e.error[:500],
                **({"line": e.line} if e.line is not None else {})} for e in page.errors]
    limit = services.settings.max_import_rows
    if progress.job.done + len(good) > limit:
        raise JobFailed(f"the catalog has more than {limit:,} products (HUB_MAX_IMPORT_ROWS); nothing was removed")
    async with services.sessions() as session:
        writer = await _writer(services, session, connection_id)
        changes = await writer.apply(good, seen_job_id=job.id)
        await progress.advance(session, done=len(good), failed=len(errors), errors=errors,
                               cursor=page.cursor or END, total=page.total, result=changes.counts)
        await session.commit()
    await notify(services.pipeline, services.media, shop_id, changes)


async def _unchanged(services: Services, progress: JobProgress, connection_id: int,
                     state: dict[str, Any] | None, read_with: tuple[Any, Any]) -> None:
    """Nothing changed since the last complete read: the job says so, the catalog stays, nothing is removed."""
    async with services.sessions() as session:
        await _writer(services, session, connection_id)  # (the connection is still there and active)
        await progress.advance(session, cursor=END, result={UNCHANGED: 1})
        _read_done(await session.get(Connection, connection_id), state, read_with)
        await session.commit()
