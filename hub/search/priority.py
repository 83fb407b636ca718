"""Background compute at a lower CPU priority than the work that answers requests.

On Linux a nice value belongs to a thread, and a new thread starts with its creator's. The image tower's work
(embedding a catalog) runs in a thread whose priority is lowered, and its ONNX Runtime session is created from
such a thread so that the session's own threads start lowered too: where the API shares the cores with
embedding (the embedded default, or API and worker on one host), a webhook or a query is answered first and the
embedding takes what is left; on an idle machine a nice value changes nothing.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger("hub.model")
T = TypeVar("T")


def lower_this_thread(nice: int) -> None:
    """Give the calling thread (and the threads it creates from now on) nice value ``nice``, unless it is already
    that low or lower; nothing where the platform has no per-thread nice values."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as exc:
        log.debug("thread priority not lowered", extra={"reason": str(exc)})


def thread_nice() -> int:
    """The calling thread's nice value (0 where there is none)."""
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except (AttributeError, OSError):
        return 0


def created_at(nice: int, make: Callable[[], T]) -> T:
    """``make()`` called from a new thread of nice value ``nice``, so that threads it starts inherit it; its
    result or its exception."""
    if nice <= 0:
        return make()
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        lower_this_thread(nice)
        try:
            outcome.append(make())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            failure.append(exc)

    maker = threading.Thread(target=run, name="hub-model-load")
    maker.start()
    maker.join()
    if failure:
        raise failure[0]
    return outcome[0]
