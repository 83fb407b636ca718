"""Chroma's HNSW ``ef_search`` per collection size: query time and recall against exact ranking.

    .venv/bin/python -m bench.ef_search [--sizes 2000,10000,50000] [--ef 50,200,800]

Two synthetic catalogs of unit vectors (512 dimensions, FashionCLIP's width): "clustered" (200 centres with
spread, the shape image embeddings have: many near-duplicates around a few looks) and "uniform" (random
directions, the hardest case for a graph index). 200 queries each; recall@20 is the share of the exact top 20
(cosine by numpy over every vector) the index returns; 20 is what a limit-10 query asks the index for. The
embedded Chroma the hub uses; each ``ef_search`` gets a collection of its own, because Chroma 1.5 applies
``ef_search`` from the collection's creation (a ``modify`` of the configuration did not change an open
collection's answers here). Writes the "Vector search: ef_search" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from bench.common import machine, write_section

WANTED = 20
QUERIES = 200


def catalogs(n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(n)

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    centres = rng.standard_normal((200, 512))
    clustered = unit(centres[rng.integers(0, 200, n)] + 0.6 * rng.standard_normal((n, 512)))
    clustered_q = unit(centres[rng.integers(0, 200, QUERIES)] + 0.9 * rng.standard_normal((QUERIES, 512)))
    return {"clustered": (clustered, clustered_q),
            "uniform": (unit(rng.standard_normal((n, 512))), unit(rng.standard_normal((QUERIES, 512))))}


def measure(client, name: str, data: np.ndarray, queries: np.ndarray, ef: int) -> tuple[float, float, float]:
    """(query ms, recall@WANTED, insert s) of a fresh collection with this ef_search."""
    col = client.create_collection(name, embedding_function=None, configuration={
        "hnsw": {"space": "cosine", "ef_construction": 200, "ef_search": ef}})
    start = time.perf_counter()
    for i in range(0, len(data), 2000):
        col.add(ids=[str(j) for j in range(i, min(len(data), i + 2000))], embeddings=data[i:i + 2000])
    insert_s = time.perf_counter() - start
    truth = np.argsort(-(queries @ data.T), axis=1)[:, :WANTED]
    col.query(query_embeddings=[queries[0]], n_results=WANTED, include=["distances"])
    found = 0.0
    start = time.perf_counter()
    for q, best in zip(queries, truth, strict=True):
        ids = col.query(query_embeddings=[q], n_results=WANTED, include=["distances"])["ids"][0]
        found += len({int(i) for i in ids} & set(best.tolist())) / WANTED
    ms = (time.perf_counter() - start) / len(queries) * 1000
    client.delete_collection(name)
    return ms, found / len(queries), insert_s


def exact_ms(data: np.ndarray, queries: np.ndarray) -> float:
    start = time.perf_counter()
    for q in queries[:50]:
        scores = data @ q
        np.argpartition(-scores, WANTED)[:WANTED]
    return (time.perf_counter() - start) / 50 * 1000


def main() -> None:
    import chromadb
    from chromadb.config import Settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="2000,10000,50000")
    parser.add_argument("--ef", default="50,200,800")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    efs = [int(e) for e in args.ef.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="hub-ef-") as tmp:
        client = chromadb.PersistentClient(path=tmp, settings=Settings(anonymized_telemetry=False))
        for n in sizes:
            for kind, (data, queries) in catalogs(n).items():
                numpy_ms = exact_ms(data, queries)
                for ef in efs:
                    ms, recall, insert_s = measure(client, f"{kind}-{n}-{ef}", data, queries, ef)
                    rows.append(f"| {n:,} | {kind} | {ef} | {ms:.2f} | {recall:.3f} | {numpy_ms:.2f} |")
                    print(rows[-1], f"(inserted in {insert_s:.0f} s)", flush=True)
    body = f"""
`.venv/bin/python -m bench.ef_search --sizes {args.sizes} --ef {args.ef}` — {time.strftime('%Y-%m-%d')}

Machine: {machine()}.

The embedded Chroma, one collection per row, {QUERIES} queries each, one at a time. "recall@{WANTED}": the share
of the exact {WANTED} nearest (numpy, every vector) that the index returned. "exact": numpy's matrix product and
partition over the same vectors held in memory, for comparison.

| vectors | catalog | ef_search | Chroma query ms | recall@{WANTED} | exact ms |
| ---: | --- | ---: | ---: | ---: | ---: |
""" + "\n".join(rows) + "\n"
    write_section("Vector search: ef_search", body)
    print(body)


if __name__ == "__main__":
    main()
