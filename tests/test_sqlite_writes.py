"""SQLite writers of one process take turns in the event loop (``hub.db.sqlite_writes``): a write waits for the
holder's commit, not in SQLite's sleeping busy handler; urgent engines (the webhook intake) go first; a turn
whose end went unseen is given back; a turn never given is ``database is locked``, as before."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from hub.db import sqlite_writes
from hub.db.engine import create_engine, dispose
from hub.db.sqlite_writes import turns_for


@pytest.fixture
async def engines(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'turns.db'}"
    normal, urgent = create_engine(url), create_engine(url, urgent_writes=True)
    async with normal.begin() as conn:
        await conn.execute(text("CREATE TABLE t (who TEXT)"))
    yield normal, urgent
    await dispose(normal)
    await dispose(urgent)


async def queued(turns, urgent: bool, n: int) -> None:
    for _ in range(1000):
        if len(turns._waiting[urgent]) == n:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never {n} {'urgent ' if urgent else ''}writers waiting")


async def test_writers_wait_for_the_holders_commit_and_urgent_ones_go_first(engines):
    normal, urgent = engines
    turns = turns_for(normal.sync_engine.dialect.database)
    order: list[str] = []

    async def write(engine, who: str) -> None:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t VALUES (:who)"), {"who": who})
            order.append(who)  # it has the turn

    async with normal.connect() as holder:
        await holder.execute(text("INSERT INTO t VALUES ('holder')"))
        assert turns.holder is not None
        background = asyncio.create_task(write(normal, "background"))
        await queued(turns, False, 1)
        intake = asyncio.create_task(write(urgent, "intake"))  # came later, goes first
        await queued(turns, True, 1)
        assert order == [] and not background.done() and not intake.done()
        await holder.commit()
    await asyncio.wait_for(asyncio.gather(background, intake), 10)
    assert order == ["intake", "background"]
    assert turns.holder is None
    async with normal.connect() as conn:
        assert sorted((await conn.execute(text("SELECT who FROM t"))).scalars()) == ["background", "holder", "intake"]


async def test_a_write_after_common_table_expressions_takes_a_turn_and_a_read_does_not(engines):
    normal, _ = engines
    turns = turns_for(normal.sync_engine.dialect.database)
    async with normal.connect() as conn:
        await conn.execute(text("WITH names(who) AS (SELECT 'a') SELECT who FROM names"))
        assert turns.holder is None
        await conn.execute(text("WITH names(who) AS (SELECT 'cte') INSERT INTO t SELECT who FROM names"))
        assert turns.holder is not None  # (before: it held SQLite's lock without the process's turn)
        await conn.commit()
    assert turns.holder is None


async def test_a_rolled_back_or_failed_write_gives_the_turn_back(engines):
    normal, urgent = engines
    turns = turns_for(normal.sync_engine.dialect.database)
    async with normal.connect() as conn:
        await conn.execute(text("INSERT INTO t VALUES ('x')"))
        await conn.rollback()
    assert turns.holder is None
    with pytest.raises(OperationalError):
        async with normal.begin() as conn:
            await conn.execute(text("INSERT INTO nowhere VALUES (1)"))
    assert turns.holder is None
    async with urgent.begin() as conn:  # and the next writer is not held up
        await asyncio.wait_for(conn.execute(text("INSERT INTO t VALUES ('y')")), 5)


async def test_a_turn_whose_end_went_unseen_is_given_back(engines, monkeypatch):
    normal, _ = engines
    monkeypatch.setattr(sqlite_writes, "CHECK_EVERY", 0.05)
    turns = turns_for(normal.sync_engine.dialect.database)
    await turns.take(object(), urgent=False)  # a holder that is not writing anything (closed, say)
    async with normal.begin() as conn:
        await asyncio.wait_for(conn.execute(text("INSERT INTO t VALUES ('after')")), 5)


async def test_a_turn_never_given_is_database_is_locked(engines, monkeypatch):
    normal, urgent = engines
    monkeypatch.setattr(sqlite_writes, "TURN_TIMEOUT", 0.3)
    monkeypatch.setattr(sqlite_writes, "CHECK_EVERY", 0.05)
    async with normal.connect() as holder:
        await holder.execute(text("INSERT INTO t VALUES ('holder')"))
        with pytest.raises(OperationalError, match="database is locked"):
            async with urgent.begin() as conn:
                await conn.execute(text("INSERT INTO t VALUES ('waited')"))
        await holder.commit()
    async with normal.connect() as conn:
        assert list((await conn.execute(text("SELECT who FROM t"))).scalars()) == ["holder"]


async def test_many_writers_with_a_watchful_waiter_never_lock_each_other_out(engines, monkeypatch):
    """A holder that was just given the turn shows no transaction until its first write runs: a waiter that
    checks the holder in that moment must not take the turn from it (that deadlocked two writers: one holding
    SQLite's lock and waiting for the turn, the other holding the turn and waiting for SQLite's lock)."""
    normal, _ = engines
    monkeypatch.setattr(sqlite_writes, "CHECK_EVERY", 0.001)  # a waiter checks the holder all the time
    monkeypatch.setattr(sqlite_writes, "TURN_TIMEOUT", 3.0)

    async def writer(n: int) -> None:
        for _ in range(10):
            async with normal.begin() as conn:
                await conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": str(n)})
                await asyncio.sleep(0)
                await conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": str(n)})

    await asyncio.wait_for(asyncio.gather(*(writer(n) for n in range(6))), 30)
    async with normal.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar() == 120


async def test_how_long_writers_wait_and_hold_their_turn_is_measured(engines):
    """``hub_sqlite_write_wait_seconds`` and ``hub_sqlite_write_held_seconds`` (on ``/metrics``): a writer that
    waited for a holder's commit counts at least the time the holder kept the turn, in both."""
    normal, urgent = engines
    turns = turns_for(normal.sync_engine.dialect.database)

    def sample(name: str, urgent: str) -> tuple[float, float]:
        def value(suffix: str) -> float:
            return REGISTRY.get_sample_value(f"{name}_{suffix}", {"urgent": urgent}) or 0.0
        return value("count"), value("sum")

    held_before = sample("hub_sqlite_write_held_seconds", "false")
    waited_before = sample("hub_sqlite_write_wait_seconds", "true")
    async with normal.connect() as holder:
        await holder.execute(text("INSERT INTO t VALUES ('holder')"))
        taken = time.perf_counter()

        async def write() -> None:
            async with urgent.begin() as conn:
                await conn.execute(text("INSERT INTO t VALUES ('intake')"))

        intake = asyncio.create_task(write())
        await queued(turns, True, 1)
        await asyncio.sleep(0.05)
        kept = time.perf_counter() - taken  # (at least: the turn was taken before, and is given back after)
        await holder.commit()
    await asyncio.wait_for(intake, 10)
    held_after = sample("hub_sqlite_write_held_seconds", "false")
    waited_after = sample("hub_sqlite_write_wait_seconds", "true")
    assert held_after[0] == held_before[0] + 1 and held_after[1] - held_before[1] >= kept
    assert waited_after[0] == waited_before[0] + 1 and waited_after[1] - waited_before[1] >= 0.05
