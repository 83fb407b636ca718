"""Many small shops in one vector store: the Chroma server's memory and a query to a shop not asked lately.

    .venv/bin/python -m bench.shops [--shops 1000] [--images 200] [--layout collections|shared] [--open-indexes N]

A `chroma run` server of its own (the Chroma the hub runs in server mode), filled with ``--shops`` shops of
``--images`` random clustered unit vectors each (512 dimensions, FashionCLIP's width), in one of two layouts:

- ``collections``: a collection per shop, with the hub's HNSW settings (what ``hub.search.store`` does;
  ``--sync-threshold 1000`` gives Chroma's default, what the hub used before 0.4.0);
- ``shared``: one collection for every shop, each vector tagged with its shop, a query filtered to its shop.

Then every shop is queried once in a random order (each "not queried recently": the others came between), then
once more. Reports the server's resident memory after filling and after each pass, and the query latencies.
``--open-indexes N`` starts the server with a config file that keeps at most N HNSW indexes open
(``segment_manager.hnsw_index_pool_cache_config.memory.capacity``, as ``deploy/chroma-lru.yaml`` does; Chroma's
default is 65,536). Writes the section "Many shops, one vector store: …" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import free_port, machine, rss_of, wait_for_http, write_section
from hub.search.store import HNSW

DIM = 512


def vectors(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    picked = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, DIM))
    return (picked / np.linalg.norm(picked, axis=1, keepdims=True)).astype(np.float32)


def start_server(path: Path, open_indexes: int | None) -> tuple[subprocess.Popen[bytes], int]:
    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent)) or "chroma"
    port = free_port()
    args = [chroma, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)]
    if open_indexes is not None:  # (a config file excludes --path, --host and --port: they go in the file)
        import yaml

        settings = yaml.safe_load((Path(__file__).parents[1] / "deploy" / "chroma-lru.yaml").read_text())
        settings |= {"persist_path": str(path), "port": port, "listen_address": "127.0.0.1"}
        settings["segment_manager"]["hnsw_index_pool_cache_config"]["memory"]["capacity"] = open_indexes
        config = path.parent / "chroma.yaml"
        config.write_text(yaml.safe_dump(settings))
        args = [chroma, "run", str(config)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=os.environ | {"ANONYMIZED_TELEMETRY": "False"})
    wait_for_http(f"http://127.0.0.1:{port}/api/v2/heartbeat", [proc], "chroma run", timeout=60)
    return proc, port


def main() -> None:
    import chromadb
    from chromadb.config import Settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--shops", type=int, default=1000)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--layout", choices=["collections", "shared"], default="collections")
    parser.add_argument("--open-indexes", type=int, default=None)
    parser.add_argument("--embedded", action="store_true", help="Chroma in this process (the embedded default)")
    parser.add_argument("--sync-threshold", type=int, default=None,
                        help="the collections' HNSW sync_threshold (and batch_size, at most 100)")
    args = parser.parse_args()
    hnsw = dict(HNSW) | ({"sync_threshold": args.sync_threshold, "batch_size": min(args.sync_threshold, 100)}
                         if args.sync_threshold else {})
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, DIM))
    with tempfile.TemporaryDirectory(prefix="hub-shops-") as tmp:
        proc = None
        if args.embedded:  # (this process's memory: the numbers include this bench's own, measured empty first)
            from hub.search.chroma_embedded import persistent_client

            pid, settings = os.getpid(), Settings(anonymized_telemetry=False)
            client = (persistent_client(str(Path(tmp) / "chroma"), settings, args.open_indexes) if args.open_indexes
                      else chromadb.PersistentClient(path=str(Path(tmp) / "chroma"), settings=settings))
        else:
            proc, port = start_server(Path(tmp) / "chroma", args.open_indexes)
            pid = proc.pid
            client = chromadb.HttpClient(host="127.0.0.1", port=port, settings=Settings(anonymized_telemetry=False))
        try:
            empty_mb = rss_of(pid)
            start = time.perf_counter()
            shared = None
            if args.layout == "shared":
                shared = client.create_collection("shops", configuration={"hnsw": hnsw}, embedding_function=None)
            for shop in range(args.shops):
                data = vectors(rng, centres, args.images)
                ids = [f"{shop}:{i}" for i in range(args.images)]
                if shared is not None:
                    shared.add(ids=ids, embeddings=data, metadatas=[{"shop": shop}] * args.images)
                else:
                    col = client.create_collection(f"shop{shop}", configuration={"hnsw": hnsw},
                                                   embedding_function=None)
                    col.add(ids=ids, embeddings=data)
            fill_s = time.perf_counter() - start
            time.sleep(2)  # (the server's own background work after the last write)
            filled_mb = rss_of(pid)
            passes: list[tuple[list[float], float]] = []
            for _ in range(2):
                order = list(range(args.shops))
                random.Random(len(passes)).shuffle(order)
                took = []
                for shop in order:
                    query = vectors(rng, centres, 1)[0]
                    started = time.perf_counter()
                    if shared is not None:
                        shared.query(query_embeddings=[query], n_results=20, where={"shop": shop},
                                     include=["distances"])
                    else:
                        client.get_collection(f"shop{shop}", embedding_function=None).query(
                            query_embeddings=[query], n_results=20, include=["distances"])
                    took.append((time.perf_counter() - started) * 1000)
                passes.append((took, rss_of(pid)))
            # nothing lost on the way (an index closed and loaded again): every shop still finds each of its own
            # vectors as its own nearest, and only its own
            lost = 0
            for shop in random.Random(7).sample(range(args.shops), min(50, args.shops)):
                if shared is not None:
                    got = shared.get(where={"shop": shop}, include=["embeddings"])
                else:
                    col = client.get_collection(f"shop{shop}", embedding_function=None)
                    got = col.get(include=["embeddings"])
                mine = set(got["ids"])
                assert len(mine) == args.images, (shop, len(mine))
                for ident, emb in list(zip(got["ids"], got["embeddings"], strict=True))[:: max(1, args.images // 10)]:
                    found = (shared.query(query_embeddings=[emb], n_results=1, where={"shop": shop}) if shared is not None
                             else col.query(query_embeddings=[emb], n_results=1))["ids"][0]
                    lost += found != [ident] or not set(found) <= mine
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)

    def row(name: str, took: list[float], mb: float) -> str:
        p50, p95 = np.percentile(took, [50, 95])
        return f"| {name} | {p50:.1f} | {p95:.1f} | {mb:,.0f} |"

    per_shop_mb = (passes[0][1] - empty_mb) / args.shops
    label = ("embedded, " if args.embedded else "") + args.layout + (f", at most {args.open_indexes} indexes open" if args.open_indexes else "") + (
        f", sync_threshold {hnsw.get('sync_threshold', 1000)}" if args.layout == "collections" else "")
    body = f"""
`.venv/bin/python -m bench.shops --shops {args.shops} --images {args.images} --layout {args.layout}{' --embedded' if args.embedded else ''}{f' --open-indexes {args.open_indexes}' if args.open_indexes else ''}{f' --sync-threshold {args.sync_threshold}' if args.sync_threshold else ''}` — {time.strftime('%Y-%m-%d')}

Machine: {machine()}. Chroma {"embedded" if args.embedded else "server (`chroma run`)"} {chromadb.__version__}, layout **{label}**. Filled in
{fill_s:.0f} s. Server memory: {empty_mb:,.0f} MB empty, {filled_mb:,.0f} MB filled, {passes[0][1]:,.0f} MB after
querying every shop once: **{per_shop_mb:.2f} MB per shop** (the vectors themselves:
{args.images * DIM * 4 / 1e6:.2f} MB). At that rate 10,000 such shops would take
{empty_mb + per_shop_mb * 10_000:,.0f} MB. Checked after the passes, 50 shops: every vector still there and found
as its own nearest within its shop ({lost} not).

| pass (each shop once, random order) | query p50 ms | p95 ms | server RSS after, MB |
| --- | ---: | ---: | ---: |
{row("first (every shop cold)", *passes[0])}
{row("second", *passes[1])}
"""
    write_section(f"Many shops, one vector store: {label}", body)
    print(body)


if __name__ == "__main__":
    main()
