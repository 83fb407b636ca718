"""Whether the database answers and carries the schema this code expects."""

from __future__ import annotations

import anyio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.db.engine import current_revision, head_revision


async def database_status(sessions: async_sessionmaker[AsyncSession]) -> str:
    """"ok", or what is wrong (unreachable, or a schema that needs ``hub migrate``). Never raises."""
    try:
        with anyio.fail_after(5):
            async with sessions() as session:
                await session.execute(text("SELECT 1"))
                connection = await session.connection()
                revision = await connection.run_sync(current_revision)
    except Exception as exc:  # noqa: BLE001 - readiness reports, never raises
        return f"unreachable ({type(exc).__name__})"
    head = head_revision()
    return "ok" if revision == head else f"schema at {revision}, expected {head}: run 'hub migrate'"
