"""Database engine, sessions and migrations."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from hub.db import sqlite_writes

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def create_engine(url: str, *, urgent_writes: bool = False, pool_size: int | None = None) -> AsyncEngine:
    """An async engine; SQLite gets foreign keys, WAL and a busy timeout so workers and API can share it, and its
    writers take turns in the event loop (``hub.db.sqlite_writes``; ``urgent_writes`` go first). ``pool_size``
    (and as many more on demand): 8 for SQLite, 10 for PostgreSQL unless given."""
    if url.startswith("sqlite"):
        address = make_url(url)
        database = str(Path(address.database).resolve()) if address.database else ":memory:"
        if address.database:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        if address.drivername == "sqlite+aiosqlite":
            address = address.set(drivername=f"sqlite+{sqlite_writes.DRIVER}")
        size = pool_size or 8
        engine = create_async_engine(address, connect_args={"timeout": 30}, pool_size=size, max_overflow=size,
                                     urgent_writes=urgent_writes, database=database)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across crashes of the process
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    size = pool_size or 10
    return create_async_engine(url, pool_pre_ping=True, pool_size=size, max_overflow=size)


async def dispose(engine: AsyncEngine, timeout: float = 5.0) -> None:
    """Close the engine's connections, and wait for the ones being closed in tasks of their own: SQLAlchemy's
    aiosqlite adapter closes a connection whose user was cancelled mid-query in a separate task, and a loop
    that is closed with those still pending cancels them — which hangs the shutdown of the process."""
    await engine.dispose()
    closing = [task for task in asyncio.all_tasks() if not task.done()
               and getattr(task.get_coro(), "__qualname__", "").endswith("_terminate_graceful_close")]
    if closing:
        await asyncio.wait(closing, timeout=timeout)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def session_scope(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with factory() as session:
        yield session


def _alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _upgrade(connection: Connection, url: str) -> None:
    from alembic import command

    cfg = _alembic_config(url)
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


async def migrate(url: str) -> None:
    """Apply every migration up to head (the same migrations on SQLite and PostgreSQL).

    On SQLite, foreign keys are off while migrations run: a migration may rebuild a table (the only way to
    change some of its properties there), and dropping the old one must not cascade into its children. The
    foreign keys are checked once the migrations are done.
    """
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")  # outside a transaction, so it applies
            await conn.run_sync(_upgrade, url)
            if sqlite:
                broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                if broken:
                    raise RuntimeError(f"foreign keys broken after migrating: {broken[:5]}")
            await conn.commit()
    finally:
        await engine.dispose()


def current_revision(connection: Connection) -> str | None:
    """The schema's revision (None: never migrated). Read directly, as alembic keeps it: alembic's own reader logs
    two lines each time, and ``/ready`` asks at every probe."""
    from sqlalchemy import inspect, text

    if not inspect(connection).has_table("alembic_version"):
        return None
    revisions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(revisions) > 1:
        raise RuntimeError(f"the database is at several revisions at once: {sorted(revisions)}")
    return revisions[0] if revisions else None


@functools.cache  # (the code's migrations do not change while it runs; parsing them took 12 ms per /ready)
def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()


def affected(result: Any) -> int:
    """How many rows an UPDATE or DELETE touched (``rowcount`` lives on the cursor result only)."""
    return int(getattr(result, "rowcount", 0) or 0)
