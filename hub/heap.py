"""The interpreter's heap in a long-lived process.

Python's full garbage collection walks every container object the process holds. What a hub process loads once
and keeps — torch, transformers, ONNX Runtime, Chroma, SQLAlchemy, Litestar, a tower of the model — is about
half a million of them: a full collection took 177 ms here, during which nothing else in the process runs (a
webhook waiting for its answer, a query). ``settle`` collects once and then freezes what is alive, so later
collections walk only what was made since (0.0 ms for the same heap after the freeze); it is called once a
process has started and after each tower of the model is loaded.

Settling also hands the memory the C allocator holds free back to the system (``malloc_trim``): loading a tower
frees as much as it keeps (ONNX Runtime reads the weights, packs them for its matrix products and drops the
first copy), and glibc keeps those freed pages in the process unless asked — measured with the full-size image
tower loaded after the text tower: 1,071 MB resident before, 937 MB after.

That is a decision for a whole process, so only its owner makes it: ``hub serve`` and ``hub worker`` call
``manage`` first; elsewhere (an application embedded in tests or in another program) ``settle`` does nothing.
A managed process also times every collection for ``GET /metrics`` (``hub_gc_pause_seconds``).
"""

from __future__ import annotations

import ctypes
import gc
import os
import logging
import threading
import time
from typing import Any

from hub.metrics import GC_PAUSE

log = logging.getLogger("hub.heap")
_lock = threading.Lock()
_started: dict[int, float] = {}  # generation -> perf_counter at its collection's start
_managed = False


def manage() -> None:
    """This process is a hub process that lives long (``hub serve``, ``hub worker``): its heap is settled at
    start and after each model load, and its collections are timed."""
    global _managed
    _managed = True
    watch_collections()


def settle(reason: str) -> None:
    """In a managed process: collect the garbage once, then move every object still alive out of the
    collector's sight (it lives as long as the process). Again later, it walks only what was made since."""
    if not _managed:
        return
    with _lock:
        start = time.perf_counter()
        collected = gc.collect()
        gc.freeze()
        returned = trim()
        log.info("heap settled", extra={"reason": reason, "collected": collected, "frozen": gc.get_freeze_count(),
                                        "returned_mb": returned, "ms": round((time.perf_counter() - start) * 1000, 1)})


def release(reason: str) -> None:
    """In a managed process, after dropping what was frozen (a model replaced by a switch): thaw, collect and
    freeze again. Frozen objects in reference cycles (an encoder and its towers) are never collected while
    frozen; this is one full collection over the whole heap, once per switch."""
    if not _managed:
        return
    with _lock:
        start = time.perf_counter()
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        log.info("heap released", extra={"reason": reason, "collected": collected, "frozen": gc.get_freeze_count(),
                                         "ms": round((time.perf_counter() - start) * 1000, 1)})
    # (from the event loop, while requests are served: the trim — tens of ms on a large heap — in a thread of its
    # own, which the call leaves free to run the loop)
    threading.Thread(target=trim, name="hub-heap-trim", daemon=True).start()


def _malloc_trim() -> Any:
    try:
        function = ctypes.CDLL(None).malloc_trim  # (the C library the interpreter runs on)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return None
    function.argtypes = [ctypes.c_size_t]
    return function


_MALLOC_TRIM = _malloc_trim()


def trim() -> float:
    """Return the C allocator's free memory to the system (glibc's ``malloc_trim``; nothing elsewhere): the MB the
    process's resident memory fell by."""
    if _MALLOC_TRIM is None:
        return 0.0
    before = _resident_mb()
    _MALLOC_TRIM(0)
    return round(before - _resident_mb(), 1)


def _resident_mb() -> float:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def _timed(phase: str, info: dict[str, Any]) -> None:
    generation = int(info.get("generation", 0))
    if phase == "start":
        _started[generation] = time.perf_counter()
        return
    began = _started.pop(generation, None)
    if began is not None:
        GC_PAUSE.labels(str(generation)).observe(time.perf_counter() - began)


def watch_collections() -> None:
    """Time this process's garbage collections, by generation (once per process; again does nothing)."""
    if _timed not in gc.callbacks:
        gc.callbacks.append(_timed)
