"""Query latency per ranking mode (vector, lexical, hybrid) with 10,000 or 100,000 images in one shop.

    .venv/bin/python -m bench.modes [--images 10000] [--queries 300] [--clients 4]

The shop is seeded directly: rows with product-like names and descriptions (so the lexical side has real work:
every prompt word is in thousands of documents), their lexical documents, and random unit vectors in the
embedded Chroma. The three modes run interleaved in one server, each prompt fresh in every mode (the text
encoder's cache never answers), so the ratio hybrid ÷ vector compares like with like on a noisy machine. Writes
the "Ranking modes" section of docs/benchmarks.md (one table per catalog size).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import random
import re
import time
from pathlib import Path

import httpx
import numpy as np

from bench.common import RESULTS, full_size_model, hub_server, machine, shop_home, write_section
from bench.query import COLOURS, ITEMS, PATTERNS, prompts

MODES = ("vector", "lexical", "hybrid")
MATERIALS = ["cotton", "linen", "wool", "cashmere", "polyester", "viscose", "leather", "denim", "silk", "satin"]


def catalog_text(i: int, rng: random.Random) -> tuple[str, str]:
    name = f"{rng.choice(COLOURS)} {rng.choice(PATTERNS)} {rng.choice(ITEMS)} {i}"
    description = (f"A {rng.choice(MATERIALS)} {rng.choice(ITEMS)} in {rng.choice(COLOURS)}, "
                   f"{rng.choice(PATTERNS)} pattern. Machine washable; model wears size {rng.choice('SML')}.")
    return name, description


async def seed(home: Path, model: Path, shop_id: int, n: int) -> None:
    from sqlalchemy import insert

    from hub.db.engine import create_engine
    from hub.db.models import Image, utcnow
    from hub.domain.lexical import refresh
    from hub.search.encoder import model_key
    from hub.search.store import VectorStore
    from hub.settings import load_settings

    settings = load_settings(home=home, model=str(model))
    engine = create_engine(settings.db_url)
    now = utcnow()
    rng = random.Random(0)
    ids: list[int] = []
    async with engine.begin() as conn:
        for start in range(0, n, 5000):
            rows = []
            for i in range(start, min(n, start + 5000)):
                name, description = catalog_text(i, rng)
                rows.append({"shop_id": shop_id, "name": name, "description": description, "source": "manual",
                             "image_url": f"https://cdn.example.com/p/{i}.jpg", "status": "ready",
                             "processor_embedded": True, "embedded_at": now, "attempts": 1, "created_at": now,
                             "updated_at": now})
            batch = list((await conn.execute(insert(Image).returning(Image.id), rows)).scalars())
            await conn.run_sync(lambda sync, b=batch: refresh(sync, b))  # (rows written without the ORM)
            ids += batch
    await engine.dispose()
    vectors = np.random.default_rng(0).standard_normal((n, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = VectorStore(None, home, model_key(str(model)))
    for i in range(0, n, 1000):
        await store.upsert(shop_id, ids[i:i + 1000], vectors[i:i + 1000],
                           [{"category_id": -1, "style_id": -1, "age_group_id": -1, "product_id": -1,
                             "source": "manual", "available": True, "listed": True}] * len(ids[i:i + 1000]))


def run(base: str, key: str, texts: list[str], clients: int) -> dict[str, list[tuple[float, dict]]]:
    """Each prompt once in every mode, the modes' order rotating, ``clients`` at a time."""
    jobs = [(text, MODES[(n + k) % 3]) for n, text in enumerate(texts) for k in range(3)]

    def worker(chunk: list[tuple[str, str]]) -> list[tuple[str, float, dict]]:
        out = []
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as api:
            for text, mode in chunk:
                start = time.perf_counter()
                r = api.post("/api/v1/recommendations", json={"prompt": text, "limit": 10, "mode": mode,
                                                               "distinct": "image"})
                elapsed = (time.perf_counter() - start) * 1000
                assert r.status_code == 200, r.text
                out.append((mode, elapsed, r.json()["timings_ms"]))
        return out

    chunks = [jobs[i::clients] for i in range(clients)]
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        done = [item for part in pool.map(worker, chunks) for item in part]
    return {mode: [(ms, t) for m, ms, t in done if m == mode] for mode in MODES}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    model = full_size_model()
    with shop_home(model) as (home, shop):
        seed_start = time.perf_counter()
        asyncio.run(seed(home, model, shop["id"], args.images))
        seed_s = time.perf_counter() - seed_start
        texts = prompts()[: args.queries]
        with hub_server(home, model) as (base, _):
            run(base, shop["publishable_key"], prompts()[-9:], 1)  # warm-up
            results = run(base, shop["publishable_key"], texts, args.clients)

    def p50(values: list[float]) -> float:
        return float(np.percentile(values, 50))

    lines = []
    for mode in MODES:
        total = [ms for ms, _ in results[mode]]
        lexical = [t.get("lexical", 0.0) for _, t in results[mode]]
        encode = [t.get("encode", 0.0) for _, t in results[mode]]
        p = np.percentile(total, [50, 95, 99])
        lines.append(f"| {mode} | {p[0]:.1f} | {p[1]:.1f} | {p[2]:.1f} | {p50(encode):.1f} | {p50(lexical):.1f} | "
                     f"{p[0] / p50([ms for ms, _ in results['vector']]):.2f} |")
    heading = f"{args.images:,} images"
    table = f"""
### {heading}

`.venv/bin/python -m bench.modes --images {args.images} --queries {args.queries} --clients {args.clients}` — {time.strftime('%Y-%m-%d')}

Machine: {machine()}. Seeding (rows, lexical documents, vectors) took {seed_s:.0f} s.

| mode | p50 ms | p95 ms | p99 ms | encode p50 | lexical p50 | p50 ÷ vector p50 |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
""" + "\n".join(lines) + "\n"
    intro = """
The three ranking modes in one `hub serve` (embedded default: SQLite with FTS5, embedded Chroma), a shop of
product-like names and descriptions (every prompt word is in thousands of its documents), fresh prompts (each
one runs the text tower in the modes that need it), 4 concurrent clients, limit 10, one result per image. In
`hybrid` mode the lexical search runs while the prompt is encoded. `bench/modes.py` seeds the shop directly.
"""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    match = re.search(r"\n## Ranking modes\n(.*?)(?=\n## |\Z)", text, re.S)
    tables = {m.group(1): m.group(0) for m in re.finditer(r"\n### ([^\n]+)\n.*?(?=\n### |\Z)",
                                                            match.group(1) if match else "", re.S)}
    tables[heading] = table
    ordered = [tables[k] for k in sorted(tables, key=lambda h: int(h.split()[0].replace(",", "")))]
    write_section("Ranking modes", intro + "".join(ordered))
    print(table)


if __name__ == "__main__":
    main()
