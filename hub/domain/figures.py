"""The figures every process shares, for ``GET /metrics``: counts by status from the database (a few grouped
counts, each over an indexed column or a table that is pruned) and the task queue's depth from the pipeline."""

from __future__ import annotations

import logging

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import Connection, Image, Job, Shop, WebhookDelivery, utcnow
from hub.domain.pipeline import Pipeline
from hub.errors import Unavailable
from hub.metrics import SharedState

log = logging.getLogger("hub.figures")
WAITING = ("pending", "embedding")  # an image not yet embedded, or being embedded


async def shared_state(session: AsyncSession, pipeline: Pipeline | None) -> SharedState:
    state = SharedState()
    state.images = {(status,): n for status, n in await session.execute(
        select(Image.status, func.count()).group_by(Image.status))}
    state.jobs = {(kind, status): n for kind, status, n in await session.execute(
        select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status))}
    state.deliveries = {(connector, status): n for connector, status, n in await session.execute(
        select(Connection.connector, WebhookDelivery.status, func.count())
        .join(Connection, Connection.id == WebhookDelivery.connection_id)
        .group_by(Connection.connector, WebhookDelivery.status))}
    state.connections = {(connector, status): n for connector, status, n in await session.execute(
        select(Connection.connector, Connection.status, func.count())
        .group_by(Connection.connector, Connection.status))}
    state.shops = int(await session.scalar(select(func.count()).select_from(Shop)) or 0)
    oldest = await session.scalar(select(func.min(Image.created_at)).where(Image.status.in_(WAITING)))
    if oldest is not None:  # (aware: the column's type makes every timestamp UTC, on SQLite as on PostgreSQL)
        state.oldest_pending_seconds = max(0.0, (utcnow() - oldest).total_seconds())
    if pipeline is not None:
        try:
            state.queue = {(name,): n for name, n in (await pipeline.queue_depth()).items()}
        except Unavailable as exc:  # the rest is still worth reporting; the queue's figures are left out
            log.warning("queue depth unavailable", extra={"error": str(exc)})
    return state

