"""The embedded Chroma with a set number of open HNSW indexes.

Chroma's embedded client keeps up to (the process's file-handle limit ÷ 5) indexes open — 4,000 under a limit of
20,000, ≈ 3 MB each for a small shop — so the hub's memory would grow with its number of shops. Chroma takes no
setting for it and accepts no API class of ours, so while the hub makes its client, Chroma's module is shown a
file-handle limit of ``HUB_CHROMA_OPEN_INDEXES`` × 5 (the process's real limit is not touched). The least
recently used index is then closed and loaded again from disk when its shop is next asked (the hub's collections
save their index as soon as it exists: ``hub.search.store.HNSW``)."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace
from typing import Any

log = logging.getLogger("hub.store")
FILES_PER_INDEX = 5  # Chroma's own divisor: 4 data files and 1 metadata file per index
_lock = threading.Lock()


def persistent_client(path: str, settings: Any, open_indexes: int) -> Any:
    """``chromadb.PersistentClient`` keeping at most ``open_indexes`` HNSW indexes open."""
    import resource

    import chromadb
    import chromadb.api.rust as rust_api

    with _lock:
        real = rust_api.resource
        # (never above what Chroma itself would allow: the real file limit)
        limit = min(open_indexes * FILES_PER_INDEX, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        rust_api.resource = SimpleNamespace(  # type: ignore[assignment]
            RLIMIT_NOFILE=resource.RLIMIT_NOFILE,
            getrlimit=lambda which: (limit, resource.getrlimit(which)[1]),
        )
        try:
            client = chromadb.PersistentClient(path=path, settings=settings)
        finally:
            rust_api.resource = real
    if open_indexes_of(client) != limit // FILES_PER_INDEX:  # (Chroma keeps one client per path, made once)
        log.warning("the embedded Chroma keeps another number of indexes open than asked",
                    extra={"asked": open_indexes, "keeps": open_indexes_of(client)})
    return client


def open_indexes_of(client: Any) -> int:
    """How many indexes the client keeps open at most."""
    return int(client._server.hnsw_cache_size)
