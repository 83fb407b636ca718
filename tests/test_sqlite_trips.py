"""A statement on the embedded SQLite database is one trip to aiosqlite's thread (``hub.db.sqlite_trips``), and
every result SQLAlchemy reads from it is what SQLite said: rows, row counts, generated ids, RETURNING, errors."""

from __future__ import annotations

from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from hub.db import sqlite_trips
from hub.db.engine import create_engine, dispose


@pytest.fixture
async def engine(tmp_path: Path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'trips.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"))
    yield engine
    await dispose(engine)


@pytest.fixture
def trips(monkeypatch) -> list[str]:
    """The calls aiosqlite ran in its thread, by name."""
    calls: list[str] = []
    original = aiosqlite.Connection._execute

    async def counted(self, fn, *args, **kwargs):
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return calls


def test_this_aiosqlite_has_what_one_trip_needs():
    assert sqlite_trips.ONE_TRIP  # (else every statement silently takes four trips again)


async def test_each_statement_is_one_trip_and_gives_what_sqlite_said(engine, trips):
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))  # (the pool's first use of the connection: not counted)
        trips.clear()
        inserted = await conn.execute(text("INSERT INTO t (name) VALUES ('a')"))
        assert inserted.rowcount == 1 and inserted.lastrowid == 1
        many = await conn.execute(text("INSERT INTO t (name) VALUES (:name)"), [{"name": "b"}, {"name": "c"}])
        assert many.rowcount == 2
        returned = await conn.execute(text("INSERT INTO t (name) VALUES ('d') RETURNING id, name"))
        assert returned.all() == [(4, "d")]
        updated = await conn.execute(text("UPDATE t SET name = name || '!' WHERE id > 2"))
        assert updated.rowcount == 2
        rows = await conn.execute(text("SELECT id, name FROM t ORDER BY id"))
        assert list(rows.keys()) == ["id", "name"]
        assert rows.all() == [(1, "a"), (2, "b"), (3, "c!"), (4, "d!")]
        empty = await conn.execute(text("SELECT id FROM t WHERE id > 100"))
        assert empty.all() == [] and list(empty.keys()) == ["id"]
        assert trips == ["_statement"] * 6
        await conn.commit()


async def test_a_session_that_only_read_ends_without_a_trip_and_one_that_wrote_commits_or_rolls_back(engine, trips):
    from sqlalchemy.ext.asyncio import async_sessionmaker

    sessions = async_sessionmaker(engine)
    async with sessions() as session:
        await session.execute(text("SELECT 1"))  # (the pool's first use of the connection: not counted)
    trips.clear()
    async with sessions() as session:  # a request that reads: the statement, and no commit or rollback trip
        assert (await session.execute(text("SELECT count(*) FROM t"))).scalar() == 0
        await session.commit()
    assert trips == ["_statement"]
    trips.clear()
    async with sessions() as session:
        await session.execute(text("INSERT INTO t (name) VALUES ('kept')"))
        await session.commit()
    assert trips == ["_statement", "commit"]
    trips.clear()
    async with sessions() as session:  # (closed without a commit: rolled back)
        await session.execute(text("INSERT INTO t (name) VALUES ('dropped')"))
    assert trips == ["_statement", "rollback"]
    async with sessions() as session:
        assert list((await session.execute(text("SELECT name FROM t"))).scalars()) == ["kept"]


async def test_errors_are_the_databases_and_leave_the_connection_usable(engine):
    async with engine.connect() as conn:
        await conn.execute(text("INSERT INTO t (name) VALUES ('a')"))
        with pytest.raises(IntegrityError):
            await conn.execute(text("INSERT INTO t (name) VALUES ('a')"))
        await conn.rollback()
        with pytest.raises(OperationalError, match="no such table"):
            await conn.execute(text("SELECT * FROM nowhere"))
        await conn.rollback()
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar() == 0


async def test_results_fetched_in_parts(engine):
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO t (name) VALUES (:name)"), [{"name": str(i)} for i in range(50)])
    async with engine.connect() as conn:
        result = await conn.stream(text("SELECT name FROM t ORDER BY id"))
        parts = [len(part) async for part in result.partitions(20)]
        assert parts == [20, 20, 10]
        buffered = await conn.execute(text("SELECT name FROM t ORDER BY id"))
        assert [len(part) for part in buffered.partitions()] == [1] * 50  # (the cursor's arraysize: sqlite3's 1)
        assert (await conn.execute(text("SELECT name FROM t ORDER BY id"))).fetchmany() == [("0",)]
