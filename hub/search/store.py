"""The vector store: ChromaDB embedded (under HUB_HOME) or a server, one cosine collection per shop and model."""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import numpy as np

from hub.errors import Unavailable
from hub.metrics import vector_store_call

log = logging.getLogger("hub.store")

NONE_ID = -1  # Chroma metadata has no null: "no category" is stored as -1
# sync_threshold 1: Chroma saves a shop's index (its files and the sequence number the log is replayed from) only
# once sync_threshold vectors were written since the last save; an index closed before that (a cap on open indexes:
# deploy/chroma-lru.yaml, HUB_CHROMA_OPEN_INDEXES) could not be loaded again ("Nothing found on disk"). Chroma's
# default (1,000) lost small shops written in one go; 100 still lost a shop whose last writes came to fewer than
# 100 (1 in 20 runs of test_many_shops). Measured (docs/benchmarks.md, "Many shops"): no cost to writes.
HNSW = {"space": "cosine", "ef_construction": 200, "ef_search": 200, "sync_threshold": 1, "batch_size": 100}
GET_BATCH = 2000  # ids per Chroma get
QUERY_BATCH = 500  # query vectors per Chroma query
SAME_VECTOR = 1e-5  # a cosine distance this small is the same vector (float error)


@dataclass(frozen=True)
class Hit:
    image_id: int
    score: float  # cosine similarity, 1.0 = same direction


def collection_name(shop_id: int, model_key: str) -> str:
    return f"shop{shop_id}--{model_key}"[:512]


def _is_missing(exc: Exception) -> bool:
    """Chroma's "no such collection" (a NotFoundError on a server, a ValueError embedded)."""
    return "does not exist" in str(exc) or type(exc).__name__ == "NotFoundError"


def _bring_up_to_date(col: Any) -> None:
    """A collection made with another ``sync_threshold`` (before 0.4.0, Chroma's 1,000: Chroma keeps the
    configuration a collection was made with, whatever ``get_or_create_collection`` is given) is changed to save
    its index at every write from its next one. Until then its last writes may exist in memory only: closing
    it (a cap on open indexes) would lose them, so the log says to reindex the shop."""
    with warnings.catch_warnings():  # (Chroma warns about the embedding-function part, which the hub leaves unset)
        warnings.simplefilter("ignore", DeprecationWarning)
        hnsw = (getattr(col, "configuration", None) or {}).get("hnsw") or {}
    if hnsw.get("sync_threshold", HNSW["sync_threshold"]) == HNSW["sync_threshold"]:
        return
    col.modify(configuration={"hnsw": {"sync_threshold": HNSW["sync_threshold"], "batch_size": HNSW["batch_size"]}})
    log.warning("a collection made by an older hub: its index is saved at every write from its next one; reindex "
                "the shop before capping open indexes", extra={"collection": col.name})


def where_clause(filters: dict[str, Any], listed_only: bool = False) -> dict[str, Any] | None:
    """Chroma ``where`` from recommendation filters (all must hold). Any ``where`` makes Chroma filter before it
    searches (≈ 15 ms more per query at 10,000 vectors), so ``listed_only`` is asked for only when needed."""
    clauses: list[dict[str, Any]] = [{"listed": {"$ne": False}}] if listed_only else []  # older vectors: listed
    for field in ("category_id", "style_id", "age_group_id", "product_id"):
        if filters.get(field) is not None:
            clauses.append({field: int(filters[field])})
    if filters.get("source") is not None:
        clauses.append({"source": str(filters["source"])})
    if filters.get("available") is not None:
        clauses.append({"available": bool(filters["available"])})
    if filters.get("price_min") is not None:
        clauses.append({"price": {"$gte": float(filters["price_min"])}})
    if filters.get("price_max") is not None:
        clauses.append({"price": {"$lte": float(filters["price_max"])}})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


class VectorStore:
    """Every call runs Chroma's client in a worker thread; any failure to reach it is a 503-style error."""

    def __init__(self, chroma_url: str | None, home: Path, model_key: str, open_indexes: int = 0) -> None:
        self.chroma_url = chroma_url
        self.path = home / "chroma"
        self.model_key = model_key
        self.open_indexes = open_indexes  # embedded: shops' indexes kept open at once (0: Chroma's own number)
        self._client: Any = None
        self._collections: dict[int, Any] = {}
        self._lock = threading.Lock()

    @property
    def kind(self) -> str:
        return "server" if self.chroma_url else "embedded"

    def _connect(self) -> Any:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        settings = ChromaSettings(anonymized_telemetry=False)
        if self.chroma_url:
            parts = urlsplit(self.chroma_url)
            return chromadb.HttpClient(
                host=parts.hostname or "localhost",
                port=parts.port or (443 if parts.scheme == "https" else 8000),
                ssl=parts.scheme == "https",
                settings=settings,
            )
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.open_indexes:
            return chromadb.PersistentClient(path=str(self.path), settings=settings)
        from hub.search.chroma_embedded import persistent_client

        return persistent_client(str(self.path), settings, self.open_indexes)

    def _ensure_client(self) -> Any:
        """The Chroma client, connected on first use (call with ``self._lock`` held)."""
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _collection(self, shop_id: int, create: bool = True) -> Any:
        with self._lock:
            self._ensure_client()
            col = self._collections.get(shop_id)
            if col is None:
                name = collection_name(shop_id, self.model_key)
                if create:
                    col = self._client.get_or_create_collection(
                        name, configuration={"hnsw": HNSW}, embedding_function=None
                    )
                else:
                    try:
                        col = self._client.get_collection(name, embedding_function=None)
                    except Exception as exc:  # noqa: BLE001 - Chroma raises NotFoundError/ValueError
                        if _is_missing(exc):
                            return None
                        raise
                _bring_up_to_date(col)
                self._collections[shop_id] = col
            return col

    async def _run(self, operation: str, func: Any, *args: Any) -> Any:
        try:
            with vector_store_call(operation):
                return await anyio.to_thread.run_sync(func, *args)
        except Unavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - Chroma's errors have no common base class
            with self._lock:
                self._collections.clear()
                if self.chroma_url:
                    self._client = None
            log.warning("vector store error", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
            raise Unavailable("vector store", f"{type(exc).__name__}; check HUB_CHROMA_URL") from None

    async def upsert(self, shop_id: int, ids: list[int], vectors: np.ndarray, metadatas: list[dict[str, Any]]) -> None:
        def run() -> None:
            self._collection(shop_id).upsert(
                ids=[str(i) for i in ids], embeddings=np.asarray(vectors, dtype=np.float32), metadatas=metadatas
            )

        await self._run("upsert", run)

    async def update_metadata(self, shop_id: int, ids: list[int], metadatas: list[dict[str, Any]]) -> None:
        def run() -> None:
            col = self._collection(shop_id, create=False)
            if col is None:
                return
            present = set(col.get(ids=[str(i) for i in ids], include=[])["ids"])
            pairs = [(str(i), m) for i, m in zip(ids, metadatas, strict=True) if str(i) in present]
            if pairs:
                col.update(ids=[p[0] for p in pairs], metadatas=[p[1] for p in pairs])

        await self._run("update_metadata", run)

    async def delete(self, shop_id: int, ids: list[int]) -> None:
        def run() -> None:
            col = self._collection(shop_id, create=False)
            if col is not None and ids:
                col.delete(ids=[str(i) for i in ids])

        await self._run("delete", run)

    async def drop_shop(self, shop_id: int) -> None:
        def run() -> None:
            with self._lock:
                self._collections.pop(shop_id, None)
                try:
                    self._ensure_client().delete_collection(collection_name(shop_id, self.model_key))
                except Exception as exc:  # noqa: BLE001 - see _is_missing
                    if not _is_missing(exc):
                        raise

        await self._run("drop_shop", run)

    async def drop_all(self) -> int:
        """Drop every shop's collection of this model; how many there were."""
        shops = await self.shops()
        for shop_id in shops:
            await self.drop_shop(shop_id)
        return len(shops)

    async def shops(self) -> list[int]:
        """Shops that have a collection for this model."""

        def run() -> list[int]:
            with self._lock:
                listed = self._ensure_client().list_collections()
            suffix = f"--{self.model_key}"
            names = [getattr(c, "name", c) for c in listed]
            return sorted(
                int(n[4 : -len(suffix)]) for n in names if n.startswith("shop") and n.endswith(suffix)
                and n[4 : -len(suffix)].isdigit()
            )

        return await self._run("shops", run)

    async def ids(self, shop_id: int) -> list[int]:
        def run() -> list[int]:
            col = self._collection(shop_id, create=False)
            if col is None:
                return []
            return sorted(int(i) for i in col.get(include=[])["ids"])

        return await self._run("ids", run)

    async def vector(self, shop_id: int, image_id: int) -> np.ndarray | None:
        def run() -> np.ndarray | None:
            col = self._collection(shop_id, create=False)
            if col is None:
                return None
            got = col.get(ids=[str(image_id)], include=["embeddings"])
            if not got["ids"]:
                return None
            return np.asarray(got["embeddings"][0], dtype=np.float32)

        return await self._run("vector", run)

    async def metadatas(self, shop_id: int, ids: list[int]) -> dict[int, dict[str, Any]]:
        """The metadata of those of ``ids`` the shop's collection holds."""
        def run() -> dict[int, dict[str, Any]]:
            col = self._collection(shop_id, create=False)
            if col is None or not ids:
                return {}
            got = col.get(ids=[str(i) for i in ids], include=["metadatas"])
            return {int(i): dict(m or {}) for i, m in zip(got["ids"], got["metadatas"], strict=True)}

        return await self._run("metadatas", run)

    async def vectors(self, shop_id: int, ids: list[int]) -> dict[int, np.ndarray]:
        """The stored vectors of these images (those the store has), by image id."""

        def run() -> dict[int, np.ndarray]:
            col = self._collection(shop_id, create=False)
            found: dict[int, np.ndarray] = {}
            if col is None:
                return found
            for i in range(0, len(ids), GET_BATCH):
                got = col.get(ids=[str(n) for n in ids[i : i + GET_BATCH]], include=["embeddings"])
                for ident, vector in zip(got["ids"], got["embeddings"], strict=True):
                    found[int(ident)] = np.asarray(vector, dtype=np.float32)
            return found

        return await self._run("vectors", run)

    async def unreachable(self, shop_id: int, ids: list[int], probe: int = 10) -> list[int]:
        """Vectors the index cannot find with their own vector as the query (an HNSW graph can lose a node's
        every incoming link when a batch is inserted into a small built graph in parallel): these are stored but
        no query would ever return them. A vector that ``probe`` others equal (the same photo on many products)
        may be left out of its own top ``probe`` by a tie: it is asked for once more among ten times as many, and
        only past that many equal ones is it taken as reachable without proof."""

        def run() -> list[int]:
            col = self._collection(shop_id, create=False)
            if col is None or not ids:
                return []
            count = col.count()
            lost: list[int] = []
            for i in range(0, len(ids), QUERY_BATCH):
                got = col.get(ids=[str(n) for n in ids[i : i + QUERY_BATCH]], include=["embeddings"])
                if not got["ids"]:
                    continue
                vectors = dict(zip(got["ids"], np.asarray(got["embeddings"], dtype=np.float32), strict=True))
                missing = list(vectors)
                for n_results in (min(probe, count), min(probe * 10, count)):  # ties: asked once more, deeper
                    found = col.query(query_embeddings=np.stack([vectors[i] for i in missing]),
                                      n_results=n_results, include=["distances"])
                    tied = []
                    for ident, hits, distances in zip(missing, found["ids"], found["distances"], strict=True):
                        if ident in hits:
                            continue
                        if distances and distances[-1] <= SAME_VECTOR:
                            tied.append(ident)
                        else:
                            lost.append(int(ident))
                    missing = tied
                    if not missing:
                        break
            return lost

        return await self._run("unreachable", run)

    async def reinsert(self, shop_id: int, ids: list[int]) -> None:
        """Delete and add these vectors again (same vectors, same metadata): fresh links into the graph."""

        def run() -> None:
            col = self._collection(shop_id, create=False)
            if col is None or not ids:
                return
            got = col.get(ids=[str(n) for n in ids], include=["embeddings", "metadatas"])
            if got["ids"]:
                col.delete(ids=got["ids"])
                col.add(ids=got["ids"], embeddings=np.asarray(got["embeddings"], dtype=np.float32),
                        metadatas=got["metadatas"])

        await self._run("reinsert", run)

    async def query(
        self, shop_id: int, vector: np.ndarray, limit: int, filters: dict[str, Any] | None = None,
        listed_only: bool = False,
    ) -> list[Hit]:
        def run() -> list[Hit]:
            col = self._collection(shop_id, create=False)
            if col is None:
                return []
            # (no count() first to cap n_results: Chroma returns what it has, an empty collection nothing, and
            # the count cost 1.7 ms of every query at 10,000 vectors)
            result = col.query(
                query_embeddings=[np.asarray(vector, dtype=np.float32)],
                n_results=limit,
                where=where_clause(filters or {}, listed_only),
                include=["distances"],
            )
            return [
                Hit(image_id=int(i), score=round(1.0 - float(d), 6))
                for i, d in zip(result["ids"][0], result["distances"][0], strict=True)
            ]

        return await self._run("query", run)

    async def ping(self) -> str:
        def run() -> str:
            with self._lock:
                self._ensure_client().heartbeat()
            return "ok"

        try:
            with anyio.fail_after(5):
                return await self._run("ping", run)
        except (Unavailable, TimeoutError) as exc:
            return f"unreachable ({exc})"
