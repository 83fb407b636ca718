"""aiosqlite statements in one trip to the connection's thread, not four.

aiosqlite runs every call of the sqlite3 connection in a thread of its own, and SQLAlchemy's adapter makes four
such calls per statement: open a cursor, execute, fetch the rows, close the cursor. Each call is a round trip:
the thread wakes, runs it, and hands the result back through the event loop, which reaches it only after the
callbacks already waiting there. On a busy loop (the API and the in-process workers share one) a write
transaction held the process's turn to write (``hub.db.sqlite_writes``) for tens of milliseconds doing three
statements, most of it in those trips. Here a statement opens, executes, fetches and closes its cursor in one
function that runs in the connection's thread: one trip per statement. The rows come back whole, as they did
(SQLAlchemy's adapter fetched them all at execute); server-side cursors (``stream``) keep SQLAlchemy's own.

It uses two of aiosqlite's internals (``Connection._execute`` and ``Connection._conn``), stable since 0.17;
``ONE_TRIP`` is False on an aiosqlite without them, and statements then take SQLAlchemy's path.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)

ONE_TRIP = callable(getattr(aiosqlite.Connection, "_execute", None)) and hasattr(aiosqlite.Connection, "_conn")

# what one statement leaves: (description, rowcount, lastrowid, rows or None)
_Outcome = tuple[Any, int, int | None, list[Any] | None]


def _statement(connection: aiosqlite.Connection, operation: str, parameters: Any, many: bool) -> _Outcome:
    """Runs in the connection's thread: the whole life of one cursor."""
    raw: sqlite3.Connection = connection._conn
    cursor = raw.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """SQLAlchemy's aiosqlite cursor, without an aiosqlite cursor: what a statement left is kept here."""

    __slots__ = ("_description", "_rowcount", "_lastrowid", "_arraysize")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # (no call of the base: it opens an aiosqlite cursor, a trip of its own)
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None
        self._soft_closed_memoized = {}
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1  # (sqlite3's default: what fetchmany() without a size takes)

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    def nextset(self) -> None:
        raise sqlite3.NotSupportedError("sqlite3 has no nextset")

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None  # (sqlite3's does nothing either)

    async def _run(self, operation: str, parameters: Any, many: bool) -> None:
        async with self._adapt_connection._execute_mutex:
            outcome: _Outcome = await self._connection._execute(_statement, self._connection, operation, parameters,
                                                                many)
        self._description, self._rowcount, self._lastrowid, rows = outcome
        self._rows = collections.deque(rows or ())

    async def _execute_async(self, operation: Any, parameters: Any) -> None:
        await self._run(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> None:
        await self._run(operation, seq_of_parameters, many=True)

    async def _async_soft_close(self) -> None:
        return  # nothing open: the rows are here already

    def close(self) -> None:
        self._rows.clear()


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneTripCursor

    def _idle(self) -> bool:
        """Whether no transaction is open: sqlite3's commit and rollback then do nothing, and here they make no
        trip either (a session that only read ends with a rollback: one trip per request saved). The flag is
        read in the event loop's thread, as aiosqlite's own ``in_transaction`` does, while no statement of this
        connection runs."""
        raw = self._connection._connection
        return raw is not None and not raw.in_transaction

    def rollback(self) -> None:
        if not self._idle():
            super().rollback()

    def commit(self) -> None:
        if not self._idle():
            super().commit()


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """SQLAlchemy's aiosqlite DBAPI, whose connections run each statement in one trip."""

    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        adapted = super().connect(*arg, **kw)
        return OneTripConnection(self, adapted._connection) if ONE_TRIP else adapted


def dbapi() -> AsyncAdapt_aiosqlite_dbapi:
    return OneTripDBAPI(aiosqlite, sqlite3)
