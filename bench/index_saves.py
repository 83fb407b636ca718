"""What saving a shop's index at every write costs: the hub's ``sync_threshold`` 1 against 100, one run.

    .venv/bin/python -m bench.index_saves [--sizes 1000,20000,100000] [--writes 20]

For each size, an embedded Chroma (the hub's default) holds two collections of that many random unit vectors
(512 dimensions), made with the hub's HNSW settings but for ``sync_threshold`` (1, the hub's; 100). Then
``--writes`` writes of 32 vectors (what the embedder writes after a forward pass) go to each, alternating, and
each write is timed. A save writes the vectors changed since the last one and the index's metadata, so its cost
grows with the index. Writes the section "Saving indexes at every write" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from bench.common import machine, write_section
from hub.search.store import HNSW

DIM = 512
WRITE = 32
FILL_BATCH = 2000
THRESHOLDS = (1, 100)


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    raw = rng.standard_normal((n, DIM))
    return (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32)


def measure(size: int, writes: int, rng: np.random.Generator) -> dict[int, list[float]]:
    import chromadb
    from chromadb.config import Settings

    with tempfile.TemporaryDirectory(prefix="hub-saves-") as tmp:
        client = chromadb.PersistentClient(path=tmp, settings=Settings(anonymized_telemetry=False))
        collections = {}
        for threshold in THRESHOLDS:
            col = client.create_collection(f"threshold{threshold}", embedding_function=None,
                                           configuration={"hnsw": HNSW | {"sync_threshold": threshold}})
            for start in range(0, size, FILL_BATCH):
                end = min(start + FILL_BATCH, size)
                col.add(ids=[str(i) for i in range(start, end)], embeddings=unit(rng, end - start))
            collections[threshold] = col
        took: dict[int, list[float]] = {threshold: [] for threshold in THRESHOLDS}
        for n in range(writes):
            for threshold, col in collections.items():
                ids = [str(size + n * WRITE + i) for i in range(WRITE)]
                vectors = unit(rng, WRITE)
                started = time.perf_counter()
                col.add(ids=ids, embeddings=vectors)
                took[threshold].append((time.perf_counter() - started) * 1000)
        return took


def main() -> None:
    import chromadb

    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,20000,100000")
    parser.add_argument("--writes", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for size in map(int, args.sizes.split(",")):
        took = measure(size, args.writes, rng)
        p50 = {t: float(np.percentile(took[t], 50)) for t in THRESHOLDS}
        p95 = {t: float(np.percentile(took[t], 95)) for t in THRESHOLDS}
        rows.append(f"| {size:,} | {p50[1]:.1f} / {p95[1]:.1f} | {p50[100]:.1f} / {p95[100]:.1f} | "
                    f"{p50[1] / p50[100]:.2f} |")
        print(rows[-1], flush=True)
    body = f"""
`.venv/bin/python -m bench.index_saves --sizes {args.sizes} --writes {args.writes}` — {time.strftime('%Y-%m-%d')}

Machine: {machine()}. Embedded Chroma {chromadb.__version__}. A write of {WRITE} vectors (one forward pass of the
embedder) into a shop's collection that already holds "vectors", {args.writes} writes to each collection,
alternating; ms.

| vectors | `sync_threshold` 1 (the hub's) p50 / p95 | 100 p50 / p95 | p50 ratio |
| --- | ---: | ---: | ---: |
{chr(10).join(rows)}
"""
    write_section("Saving indexes at every write", body)
    print(body)


if __name__ == "__main__":
    main()
