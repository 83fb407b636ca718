"""The webhook intake's durable write, shared by the deliveries that arrive together (group commit).

A platform waits for the hub's answer (Shopify gives up after 5 s and retries, adding load exactly when the hub
is behind), and the answer may only be given once the delivery is stored. Storing each delivery in its own
transaction costs every delivery a commit and a dozen database round trips; at hundreds of deliveries a second
the requests queue for the database instead. Here every delivery that comes while a write is under way waits for
the next one, and that write stores all of them with one statement (``INSERT … ON CONFLICT DO NOTHING RETURNING``)
and one commit: the batch grows with the load, each delivery still answered only after its row is durable.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.db.models import WebhookDelivery

MAX_BATCH = 500  # deliveries per statement (well under either database's bound-parameter limit)
Key = tuple[int, str]


class DeliveryInbox:
    """``sessions``: the intake's own (the webhook routes read the connection through them too, so a pool busy
    with background work never holds a platform's answer up)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self._waiting: list[tuple[dict[str, Any], asyncio.Future[int | None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0  # writes made (for tests and the curious: deliveries / batches is the sharing)

    async def record(self, row: dict[str, Any]) -> int | None:
        """Store one delivery (a ``webhook_deliveries`` row's values, ``connection_id`` and ``content_key`` among
        them); its id once committed, or None if that connection already has a delivery with that content key (a
        replay: stored before, or earlier in the same batch). Raises what the database raised, nothing stored.
        A caller that gives up waiting (cancelled) may still have its row stored: the sweep hands it out."""
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((row, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting(), name="hub-delivery-inbox")
        return await future

    async def _write_waiting(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                try:
                    ids = await self._insert_each_or_all([row for row, _ in batch])
                except Exception as exc:  # noqa: BLE001 - every caller of this batch gets the database's answer
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except BaseException:  # cancelled (the process stopping): nobody is told a lie
                    for _, future in batch:
                        if not future.done():
                            future.cancel()
                    raise
                for (_, future), outcome in zip(batch, ids, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            for _, future in self._waiting:  # only left here when this task was cancelled
                if not future.done():
                    future.cancel()

    async def _insert_each_or_all(self, rows: list[dict[str, Any]]) -> list[int | None | Exception]:
        """All rows in one write; if the database refuses one of them (its connection deleted meanwhile: a foreign
        key), each on its own, so that only that row's caller gets the refusal."""
        try:
            return list(await self._insert(rows))
        except (IntegrityError, DataError):
            if len(rows) == 1:
                raise
        outcomes: list[int | None | Exception] = []
        for row in rows:
            try:
                outcomes.extend(await self._insert([row]))
            except (IntegrityError, DataError) as exc:
                outcomes.append(exc)
        return outcomes

    async def _insert(self, rows: list[dict[str, Any]]) -> list[int | None]:
        first: dict[Key, int] = {}
        for index, row in sorted(enumerate(rows), key=lambda item: (item[1]["connection_id"], item[1]["content_key"])):
            # (in key order: two processes storing the same deliveries never wait for each other's rows)
            first.setdefault((row["connection_id"], row["content_key"]), index)
        table = WebhookDelivery.__table__
        async with self.sessions() as session:
            connection = await session.connection()
            dialect = sqlite if connection.dialect.name == "sqlite" else postgresql
            statement = (dialect.insert(table)
                         .on_conflict_do_nothing(index_elements=["connection_id", "content_key"])
                         .returning(table.c.id, table.c.connection_id, table.c.content_key))
            result = await connection.execute(statement, [rows[index] for index in first.values()])
            stored: dict[Key, int] = {(r.connection_id, r.content_key): r.id for r in result}
            await session.commit()
        self.batches += 1
        return [stored.get(key) if first[key] == index else None
                for index, key in enumerate((row["connection_id"], row["content_key"]) for row in rows)]
