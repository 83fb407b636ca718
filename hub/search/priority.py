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
from concurrent.futures import ThreadPoolExecutor
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


def created_at(nice: int, make: Callable[[], T]) -> T:
    """``make()`` called from a new thread of nice value ``nice``, so that threads it starts inherit it; its
    result or its exception."""
    if nice <= 0:
        return make()
    with ThreadPoolExecutor(1, "hub-model-load", lower_this_thread, (nice,)) as maker:
        return maker.submit(make).result()
