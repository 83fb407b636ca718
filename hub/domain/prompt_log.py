"""Shoppers' prompts, written in batches off the request path.

A query adds its row here and answers without a database write; the rows gathered meanwhile are inserted in
one statement ``FLUSH_SECONDS`` after the first of them (at once past ``FLUSH_ROWS``). Whoever reads the log in
this process flushes it first (``flush``), so it always sees its own prompts; another process's are at most
``FLUSH_SECONDS`` behind. A database that cannot be written keeps the rows in memory (at most ``MAX_PENDING``;
the oldest go first, counted in the log) and the next flush tries again; a graceful stop flushes what is left.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.db.models import Prompt, utcnow

log = logging.getLogger("hub.prompts")

FLUSH_SECONDS = 0.5
FLUSH_ROWS = 500
MAX_PENDING = 50_000
RETRY_SECONDS = 5.0


class PromptLog:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.pending: deque[dict[str, Any]] = deque()
        self.dropped = 0
        self.flush_seconds = FLUSH_SECONDS
        self._lock = asyncio.Lock()
        self._scheduled: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None

    def add(self, shop_id: int, prompt: str, limit: int, result_count: int, top_score: float | None,
            filters: dict[str, Any], api_key_id: int | None) -> None:
        """Log one prompt (its time is now); written by the next flush."""
        if len(self.pending) >= MAX_PENDING:
            self.pending.popleft()
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("prompt log full: the database has not been writable; oldest prompts dropped",
                            extra={"dropped": self.dropped})
        self.pending.append({"shop_id": shop_id, "prompt": prompt, "num_recommended": limit,
                             "result_count": result_count, "top_score": top_score, "filters": filters,
                             "api_key_id": api_key_id, "created_at": utcnow()})
        self._schedule(0 if len(self.pending) >= FLUSH_ROWS else self.flush_seconds)

    def _schedule(self, delay: float) -> None:
        if self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_later(delay, self._start_flush)

    def _start_flush(self) -> None:
        self._scheduled = None
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush_in_background(), name="hub-prompt-log")
        # (else the running flush, once done, schedules the next for the rows that came meanwhile)

    async def _flush_in_background(self) -> None:
        try:
            await self.flush()
        except Exception as exc:  # noqa: BLE001 - the rows stay; the next flush tries again
            log.warning("prompt log not written; retrying", extra={"reason": f"{type(exc).__name__}: {exc}"[:300],
                                                                   "pending": len(self.pending)})
            self._schedule(RETRY_SECONDS)
            return
        if self.pending:  # added while this flush was writing
            self._schedule(self.flush_seconds)

    async def flush(self) -> int:
        """Write every row gathered so far, in one statement; how many. Raises (the rows kept) if the database
        cannot take them."""
        async with self._lock:
            rows, self.pending = self.pending, deque()  # (rows added while these are written wait for the next)
            if not rows:
                return 0
            try:
                async with self.sessions() as session:
                    await session.execute(insert(Prompt), list(rows))
                    await session.commit()
            except BaseException:
                rows.extend(self.pending)
                self.pending = rows
                while len(self.pending) > MAX_PENDING:
                    self.pending.popleft()
                    self.dropped += 1
                raise
            return len(rows)

    async def close(self) -> None:
        """Flush what is left (a graceful stop); pending rows are lost only if the database is down."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
        try:
            await self.flush()
        except Exception as exc:  # noqa: BLE001 - reported, not raised: the process is stopping
            log.warning("prompt log not written at stop", extra={"reason": f"{type(exc).__name__}: {exc}"[:300],
                                                                  "lost": len(self.pending)})
