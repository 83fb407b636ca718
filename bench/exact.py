"""Exact ranking against the vector index, by the number of images a query matches.

    .venv/bin/python -m bench.exact [--sizes 1000,5000,10000,20000,40000] [--queries 60]

One shop per size, seeded directly (rows + random 512-d unit vectors in embedded Chroma and SQLite, as a
FashionCLIP catalog would be), queried with random unit vectors through ``hub.domain.ranking.Ranker``: once
ranking exactly (SQL decides the candidates; cosine against each cached vector), once through the HNSW index.
Sizes are measured one after the other in one run, so the ratios hold on a noisy machine. Writes the "Exact
ranking" section of docs/benchmarks.md; ``HUB_EXACT_MAX_VECTORS`` is chosen from it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from bench.common import machine, write_section

DIM = 512


async def seed(sessions, store, shop_id: int, n: int, rng: np.random.Generator) -> None:
    from sqlalchemy import insert

    from hub.db.models import Image, Shop, utcnow

    now = utcnow()
    async with sessions() as session:
        await session.execute(insert(Shop).values(id=shop_id, name=f"shop {shop_id}", email=f"{shop_id}@x",
                                                  active=True, created_at=now))
        ids = list((await session.execute(insert(Image).returning(Image.id), [
            {"shop_id": shop_id, "name": f"p{i}", "description": "", "source": "manual", "status": "ready",
             "processor_embedded": True, "embedded_at": now, "attempts": 1, "created_at": now, "updated_at": now}
            for i in range(n)])).scalars())
        await session.commit()
    for i in range(0, n, 5000):
        chunk = ids[i : i + 5000]
        vectors = rng.normal(size=(len(chunk), DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        await store.upsert(shop_id, chunk, vectors, [{"category_id": -1, "listed": True, "source": "manual",
                                                      "available": True} for _ in chunk])


async def timed(ranker, sessions, shop_id: int, queries: np.ndarray, limit: int) -> tuple[list[float], int]:
    times, shortest = [], 10**9
    for vector in queries:
        async with sessions() as session:
            start = time.perf_counter()
            results = await ranker.rank_vector(session, shop_id, vector, limit, {})
            times.append((time.perf_counter() - start) * 1000)
            shortest = min(shortest, len(results))
    return times, shortest


async def run(sizes: list[int], n_queries: int) -> str:
    from hub.db.engine import create_engine, migrate, session_factory
    from hub.domain.ranking import Ranker
    from hub.search.store import VectorStore

    home = Path(tempfile.mkdtemp(prefix="hub-bench-exact-"))
    url = f"sqlite+aiosqlite:///{home / 'hub.db'}"
    await migrate(url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    store = VectorStore(None, home, "bench")
    rng = np.random.default_rng(0)
    rows, p50s = [], []
    for shop_id, n in enumerate(sizes, start=1):
        await seed(sessions, store, shop_id, n, rng)
        queries = rng.normal(size=(n_queries, DIM)).astype(np.float32)
        exact = Ranker(store, None, exact_max=10**7, cache_bytes=2**31)
        index = Ranker(store, None, exact_max=0, cache_bytes=2**31)
        async with sessions() as session:  # the first exact query reads the vectors into the cache
            start = time.perf_counter()
            await exact.rank_vector(session, shop_id, queries[0], 10, {})
            cold = (time.perf_counter() - start) * 1000
        index_ms, index_min = await timed(index, sessions, shop_id, queries, 10)
        exact_ms, exact_min = await timed(exact, sessions, shop_id, queries, 10)
        p50e, p50i = statistics.median(exact_ms), statistics.median(index_ms)
        p50s.append((n, p50e, p50i))
        rows.append(f"| {n:,} | {p50e:.1f} | {p50i:.1f} | {p50e / p50i:.2f} | {cold:.0f} | "
                    f"{exact.cache.bytes / 2**20:.0f} | {index.shortfalls} |")
        print(rows[-1], flush=True)
    await engine.dispose()
    header = (f"`.venv/bin/python -m bench.exact --sizes {','.join(map(str, sizes))} --queries {n_queries}` — "
              f"{date.today().isoformat()}\n\nMachine: {machine()}.\n\n"
              "Per query, limit 10, no filters, one query at a time; p50 in ms. *exact*: SQL picks the candidates, "
              "cosine against each cached vector (what a query matching at most `HUB_EXACT_MAX_VECTORS` images "
              "does); *index*: Chroma's HNSW (`ef_search` 200) and the rows; *cold*: the first exact query of a "
              "shop, reading its vectors from Chroma; *cache*: the vectors kept; *shortfalls*: index answers "
              "with fewer results than the shop has, ranked exactly instead.\n\n"
              "| images matching | exact p50 | index p50 | exact / index | exact, cold | cache MB | shortfalls |\n"
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    return header + "\n".join(rows) + "\n\n" + reading(p50s) + "\n"


def reading(p50s: list[tuple[int, float, float]]) -> str:
    """What the table says about ``HUB_EXACT_MAX_VECTORS``: the cost of each matching image, and its default."""
    (n0, e0, _), (n1, e1, _) = p50s[0], p50s[-1]
    per_image_us = (e1 - e0) / max(n1 - n0, 1) * 1000
    from hub.settings import Settings

    default = Settings.model_fields["exact_max_vectors"].default
    at_default = min(p50s, key=lambda row: abs(row[0] - default))
    return (f"Exact ranking costs ≈ {per_image_us:.1f} µs per matching image (slope from {n0:,} to {n1:,}). "
            f"`HUB_EXACT_MAX_VECTORS` defaults to {default:,}: there a query takes {at_default[1]:.0f} ms against "
            f"the index's {at_default[2]:.0f} ms, and above it the index answers (with the shortfall check and the "
            "sweep's repair of unreachable vectors behind it).")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,5000,10000,20000,40000")
    parser.add_argument("--queries", type=int, default=60)
    args = parser.parse_args()
    body = asyncio.run(run([int(s) for s in args.sizes.split(",")], args.queries))
    write_section("Exact ranking", body)


if __name__ == "__main__":
    main()
