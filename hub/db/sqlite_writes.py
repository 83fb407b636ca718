"""SQLite writes of one process take turns in the event loop, not in SQLite's busy handler.

SQLite has one writer at a time. A connection that finds the write lock taken waits in SQLite's busy handler,
which sleeps 1, 2, 5, 10 … then 100 ms at a time before it looks again: with an API answering webhooks and the
in-process workers writing at once, a write that lost a few times waited hundreds of milliseconds while the lock
had been free most of that time (measured: a webhook's write waited 45 ms at the median, 244 ms at p90, at 100
deliveries/s). Here a transaction's first write waits for this process's turn (``WriteTurns``), and the turn
passes on the moment the holder commits or rolls back; an engine made with ``urgent_writes`` (the webhook
intake's) goes before the others waiting. Other processes (``hub`` commands) still meet SQLite's busy handler.

A turn not given within ``TURN_TIMEOUT`` raises ``database is locked``, as SQLite's busy timeout would. A holder
whose connection was closed, or whose transaction ended by a path that did not give the turn back, loses it
to the waiters within ``CHECK_EVERY`` (never before its first write has run: until then it shows no transaction).
"""

from __future__ import annotations

import asyncio
import re
import time
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.util.concurrency import await_

from hub.db import sqlite_trips
from hub.metrics import SQLITE_WRITE_HELD, SQLITE_WRITE_WAIT

DRIVER = "hub_aiosqlite"
TURN_TIMEOUT = 30.0  # seconds, as the connections' busy_timeout
CHECK_EVERY = 1.0  # a waiter checks this often that the holder is still writing
WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")
_CTE_WRITES = re.compile(r"\b(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)


class WriteTurns:
    """Whose turn it is to write one database file in one event loop: first come, first served, urgent first."""

    def __init__(self) -> None:
        self.holder: object | None = None
        self.task: asyncio.Task[Any] | None = None  # the task the holder writes from (``holds_turn``)
        self.started = False  # whether the holder's first write has run (before that it is not "in a transaction")
        self._since = 0.0  # when the holder got its turn (time.perf_counter), and whether it is urgent: the metrics
        self._urgent = False
        self._waiting: dict[bool, deque[tuple[object, asyncio.Future[None], asyncio.Task[Any] | None]]] = {
            True: deque(), False: deque()}

    async def take(self, owner: object, urgent: bool) -> None:
        if self.holder is owner or _writing(owner):  # (a transaction that already writes holds SQLite's lock:
            return                                   # making it wait for a turn could only deadlock)
        asked = time.perf_counter()
        task = asyncio.current_task()
        if self.holder is None and not self._waiting[True] and not self._waiting[False]:
            self._hand(owner, urgent, asked, task)
            SQLITE_WRITE_WAIT.labels(urgent=_label(urgent)).observe(0.0)
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting[urgent]
        queue.append((owner, turn, task))
        deadline = asyncio.get_running_loop().time() + TURN_TIMEOUT
        try:
            while True:
                try:
                    await asyncio.wait_for(asyncio.shield(turn), min(CHECK_EVERY, TURN_TIMEOUT))
                    SQLITE_WRITE_WAIT.labels(urgent=_label(urgent)).observe(time.perf_counter() - asked)
                    return
                except TimeoutError:
                    if asyncio.get_running_loop().time() >= deadline:
                        raise
                    holder = self.holder
                    if holder is not None and (_closed(holder) or (self.started and not _writing(holder))):
                        self.give_back(holder)  # its end went unseen: the turn is free
        except BaseException:
            if turn.done() and not turn.cancelled():  # given at the last moment: pass it on
                self.give_back(owner)
            else:
                turn.cancel()
                try:
                    queue.remove((owner, turn, task))
                except ValueError:
                    pass
            raise

    def wrote(self, owner: object) -> None:
        """The holder's write ran: from now on its transaction shows (``in_transaction``) until it ends."""
        if self.holder is owner:
            self.started = True

    def give_back(self, owner: object) -> None:
        if self.holder is not owner:
            return
        now = time.perf_counter()
        SQLITE_WRITE_HELD.labels(urgent=_label(self._urgent)).observe(now - self._since)
        self.holder, self.task = None, None
        for urgent in (True, False):
            queue = self._waiting[urgent]
            while queue:
                waiter, turn, task = queue.popleft()
                if not turn.done():
                    self._hand(waiter, urgent, now, task)
                    turn.set_result(None)
                    return

    def _hand(self, owner: object, urgent: bool, now: float, task: asyncio.Task[Any] | None) -> None:
        self.holder, self.task, self.started, self._since, self._urgent = owner, task, False, now, urgent


def _label(urgent: bool) -> str:
    return "true" if urgent else "false"


def _sqlite(connection: object) -> Any:
    """The sqlite3 connection under SQLAlchemy's adapter of an aiosqlite connection (None once closed)."""
    return getattr(getattr(connection, "_connection", None), "_connection", None)


def _writing(connection: object) -> bool:
    """Whether an aiosqlite connection is open and inside a transaction (pysqlite begins one at a write)."""
    try:
        raw = _sqlite(connection)
        return raw is not None and bool(raw.in_transaction)
    except Exception:  # noqa: BLE001 - closed meanwhile, or not inspectable
        return False


def _closed(connection: object) -> bool:
    return _sqlite(connection) is None


_TURNS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, WriteTurns]] = weakref.WeakKeyDictionary()


def turns_for(database: str) -> WriteTurns:
    return _TURNS.setdefault(asyncio.get_running_loop(), {}).setdefault(database, WriteTurns())


def holds_turn() -> bool:
    """Whether the running task holds a turn to write (in this event loop): work that must not be held up while
    others wait for it (``hub.foreground``)."""
    task = asyncio.current_task()
    turns = _TURNS.get(asyncio.get_running_loop())
    return task is not None and turns is not None and any(t.task is task for t in turns.values())


def _is_write(statement: str) -> bool:
    """Whether a statement writes: by its first word, and a ``WITH …`` by the write that follows its common
    table expressions (a word such as ``DELETE`` only inside a read makes it take a turn it did not need)."""
    head = statement.lstrip()[:8].upper()
    if head.startswith("WITH"):
        return _CTE_WRITES.search(statement) is not None
    return head.startswith(WRITES)


class TurnTakingSQLiteDialect(SQLiteDialect_aiosqlite):
    """aiosqlite, with each transaction's writes waiting for the process's turn (``WriteTurns``)."""

    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> Any:
        return sqlite_trips.dbapi()  # a statement in one trip to aiosqlite's thread

    def __init__(self, urgent_writes: bool = False, database: str = ":memory:", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.urgent_writes = urgent_writes
        self.database = database  # the file the turns are for (hub.db.engine.create_engine gives it)

    @contextmanager
    def _turn(self, cursor: Any, statement: str) -> Iterator[None]:
        """A write waits for the process's turn first; once it has run, its transaction shows."""
        if not _is_write(statement):
            yield
            return
        turns, connection = turns_for(self.database), cursor._adapt_connection
        try:
            await_(turns.take(connection, self.urgent_writes))
        except TimeoutError:
            raise self.loaded_dbapi.OperationalError("database is locked (waited for this process's "
                                                     "other writers)") from None
        try:
            yield
        finally:
            turns.wrote(connection)

    def _give_back(self, dbapi_connection: Any) -> None:
        # (commit and rollback get the pool's proxy of the connection a cursor belongs to)
        connection = getattr(dbapi_connection, "dbapi_connection", dbapi_connection)
        try:
            turns_for(self.database).give_back(connection)
        except RuntimeError:  # no running loop (a connection closed by the garbage collector)
            pass

    def do_execute(self, cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        with self._turn(cursor, statement):
            super().do_execute(cursor, statement, parameters, context)

    def do_executemany(self, cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        with self._turn(cursor, statement):
            super().do_executemany(cursor, statement, parameters, context)

    def do_execute_no_params(self, cursor: Any, statement: str, context: Any = None) -> None:
        with self._turn(cursor, statement):
            super().do_execute_no_params(cursor, statement, context)

    def do_commit(self, dbapi_connection: Any) -> None:
        try:
            super().do_commit(dbapi_connection)
        finally:
            self._give_back(dbapi_connection)

    def do_rollback(self, dbapi_connection: Any) -> None:
        try:
            super().do_rollback(dbapi_connection)
        finally:
            self._give_back(dbapi_connection)

    def do_close(self, dbapi_connection: Any) -> None:
        self._give_back(dbapi_connection)
        super().do_close(dbapi_connection)

    def do_terminate(self, dbapi_connection: Any) -> None:
        self._give_back(dbapi_connection)
        super().do_terminate(dbapi_connection)


registry.register(f"sqlite.{DRIVER}", __name__, "TurnTakingSQLiteDialect")
