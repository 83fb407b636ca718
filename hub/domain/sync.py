"""A full catalog sync: read a connection's catalog page by page and apply it; resume from the stored cursor.

Each page is applied and the job's progress and cursor are committed in one transaction, so a restarted job
neither skips nor double-counts a page. When the whole catalog has been read, products the platform no longer
lists (a delete webhook that never arrived) are removed.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from hub.connectors import check_event
from hub.domain.catalog import CatalogWriter, Changes, notify
from hub.domain.connections import platform_client
from hub.domain.jobs import END, JobFailed, JobProgress
from hub.db.models import Connection, utcnow
from hub.domain.services import Services


async def _writer(services: Services, session: AsyncSession, connection_id: int) -> CatalogWriter:
    connection = await session.get(Connection, connection_id)
    if connection is None:
        raise JobFailed("the connection was deleted")
    if connection.status != "active":
        raise JobFailed(f"the connection is {connection.status}")
    return await CatalogWriter.open(session, connection, utcnow() + services.settings.lease)


async def run_sync(services: Services, progress: JobProgress) -> None:
    job = progress.job
    if job.connection_id is None:
        raise JobFailed("a sync job needs a connection")
    async with services.sessions() as session:
        connection = await session.get(Connection, job.connection_id)
        if connection is None:
            raise JobFailed("the connection was deleted")
        shop_id = connection.shop_id
    connector = services.plugins.connectors().get(connection.connector)
    if connector is None:
        raise JobFailed(f"the {connection.connector} connector is not installed")

    if job.cursor != END:
        async with platform_client(services.settings) as http:
            ctx = services.context(connection, connector, http)
            async for page in connector.catalog(ctx, job.cursor):
                problems = [(event, check_event(event)) for event in page.events]
                good = [event for event, problem in problems if problem is None]
                errors = [{"item": getattr(event, "external_id", ""), "error": problem}
                          for event, problem in problems if problem is not None]
                async with services.sessions() as session:
                    writer = await _writer(services, session, job.connection_id)
                    changes = await writer.apply(good, seen_job_id=job.id)
                    await progress.advance(session, done=len(good), failed=len(errors), errors=errors,
                                           cursor=page.cursor or END, total=page.total, result=changes.counts)
                    await session.commit()
                await notify(services.pipeline, services.media, shop_id, changes)
                if not page.cursor:
                    break

    async with services.sessions() as session:
        writer = await _writer(services, session, job.connection_id)
        removed: Changes = await writer.remove_unseen(job.id, progress.job.started_at or job.created_at)
        await progress.advance(session, cursor=END, result=removed.counts)
        await session.commit()
    await notify(services.pipeline, services.media, shop_id, removed)
