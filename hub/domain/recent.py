"""What the query path read from the database recently, kept for a few seconds.

Each cache names the rows its values are made of (``watches``). A change to such a row made in this process (an
ORM flush that adds, updates or deletes one) empties that cache when it is flushed and again when it is
committed; another process (a second API replica) sees the change within ``seconds``. ``seconds`` 0 keeps
nothing.

A value read while such a change was under way must not be kept: ``read`` notes the cache's ``generation``
before it reads the database, and ``put`` drops the value if the cache was emptied since.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import Session

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
_TOUCHED = "hub.recent.touched"


class Recent(Generic[K, V]):
    def __init__(self, seconds: float, watches: tuple[type, ...], size: int = 10_000) -> None:
        self.seconds = seconds
        self.watches = watches
        self.size = size
        self.clock = time.monotonic
        self.generation = 0  # how many times it was emptied
        self._values: OrderedDict[K, tuple[float, V]] = OrderedDict()
        _CACHES.add(self)

    def get(self, key: K) -> V | None:
        found = self._values.get(key)
        if found is None or self.clock() - found[0] > self.seconds:
            return None
        return found[1]

    async def read(self, key: K, load: Callable[[], Awaitable[V | None]]) -> V | None:
        """What is kept for ``key``, or else what ``load()`` reads now — kept unless the cache was emptied while it
        read (``None``, nothing found, is not kept)."""
        found = self.get(key)
        if found is None:
            generation = self.generation  # (noted before the read: a change meanwhile drops what is read)
            found = await load()
            if found is not None:
                self.put(key, found, generation)
        return found

    def put(self, key: K, value: V, generation: int) -> None:
        """Keep ``value``, read from the database just now by a reader that noted ``generation`` before it read
        (nothing is kept if the cache was emptied since: the value may predate a change)."""
        if self.seconds <= 0 or generation != self.generation:
            return
        self._values[key] = (self.clock(), value)
        self._values.move_to_end(key)
        while len(self._values) > self.size:
            self._values.popitem(last=False)

    def replace(self, key: K, old: V, new: V) -> None:
        """``new`` for ``old`` under ``key``, keeping its time — only if ``old`` is still what is kept."""
        found = self._values.get(key)
        if found is not None and found[1] is old:
            self._values[key] = (found[0], new)

    def clear(self) -> None:
        self.generation += 1
        self._values.clear()


_CACHES: weakref.WeakSet[Recent[Any, Any]] = weakref.WeakSet()


def _forget_changed(session: Session, _context: Any) -> None:
    changed = (*session.new, *session.dirty, *session.deleted)
    if not changed:
        return
    for cache in list(_CACHES):
        if any(isinstance(obj, cache.watches) for obj in changed):
            cache.clear()
            session.info.setdefault(_TOUCHED, weakref.WeakSet()).add(cache)


def _forget_committed(session: Session) -> None:
    """Again once the change is committed: a reader may have kept the old rows between the flush and the commit."""
    for cache in list(session.info.pop(_TOUCHED, ())):
        cache.clear()


def _drop_touched(session: Session, previous_transaction: Any) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_TOUCHED, None)


def track_changes() -> None:
    """Empty the caches whose rows a flush changes (idempotent; the composition root calls it)."""
    for name, listener in (("after_flush", _forget_changed), ("after_commit", _forget_committed),
                           ("after_soft_rollback", _drop_touched)):
        if not event.contains(Session, name, listener):
            event.listen(Session, name, listener)
