"""What the query path read from the database recently, kept for a few seconds.

Each cache names the rows its values are made of (``watches``). A change to such a row made in this process (an
ORM flush that adds, updates or deletes one) empties that cache at once; another process (a second API replica) sees
the change within ``seconds``. ``seconds`` 0 keeps nothing.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import Session

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Recent(Generic[K, V]):
    def __init__(self, seconds: float, watches: tuple[type, ...], size: int = 10_000) -> None:
        self.seconds = seconds
        self.watches = watches
        self.size = size
        self.clock = time.monotonic
        self._values: OrderedDict[K, tuple[float, V]] = OrderedDict()
        _CACHES.add(self)

    def get(self, key: K) -> V | None:
        found = self._values.get(key)
        if found is None or self.clock() - found[0] > self.seconds:
            return None
        return found[1]

    def put(self, key: K, value: V, *, refreshed: bool = True) -> None:
        """Keep ``value`` (``refreshed``: just read from the database; else the time of the value it replaces
        stays, so that it is read again on time)."""
        if self.seconds <= 0:
            return
        previous = self._values.get(key)
        since = previous[0] if previous is not None and not refreshed else self.clock()
        self._values[key] = (since, value)
        self._values.move_to_end(key)
        while len(self._values) > self.size:
            self._values.popitem(last=False)

    def clear(self) -> None:
        self._values.clear()


_CACHES: weakref.WeakSet[Recent[Any, Any]] = weakref.WeakSet()


def _forget_changed(session: Session, _context: Any) -> None:
    changed = (*session.new, *session.dirty, *session.deleted)
    if not changed:
        return
    for cache in list(_CACHES):
        if any(isinstance(obj, cache.watches) for obj in changed):
            cache.clear()


def track_changes() -> None:
    """Empty the caches whose rows a flush changes (idempotent; the composition root calls it)."""
    if not event.contains(Session, "after_flush", _forget_changed):
        event.listen(Session, "after_flush", _forget_changed)
