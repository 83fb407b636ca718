"""Query latency: POST /api/v1/recommendations with 10,000 images in a shop and 4 concurrent clients, ranked by
looks alone (``mode: vector``; ``bench.modes`` compares the modes).

    .venv/bin/python -m bench.query [--images 10000] [--queries 400]

The shop is seeded directly (rows + random unit vectors): embedding 10,000 photos would take this CPU a
quarter of an hour and does not change what a query costs. Writes the "Queries" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import itertools
import json
import random
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

from bench.common import (RawClient, cpu_seconds_of, full_size_model, hub_server, machine, profiled, rss_of, shop_home,
                          write_section)

COLOURS = ["red", "blue", "black", "white", "green", "pink", "beige", "navy", "yellow", "grey"]
PATTERNS = ["floral", "striped", "plain", "dotted", "plaid", "leather", "denim", "lace", "silk", "knit"]
ITEMS = ["dress", "jacket", "shirt", "skirt", "sweater", "coat", "jeans", "blouse", "hoodie", "shorts"]
STYLES = ["", " for summer", " for a wedding", " casual", " vintage", " with pockets", " oversized", " slim fit"]


def prompts() -> list[str]:
    combos = [f"{c} {p} {i}{s}" for c, p, i, s in itertools.product(COLOURS, PATTERNS, ITEMS, STYLES)]
    random.Random(0).shuffle(combos)
    return combos


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
    now = utcnow() - timedelta(hours=2)  # a catalog that was there before the start (the sweep walks it slowly)
    async with engine.begin() as conn:
        result = await conn.execute(
            insert(Image).returning(Image.id),
            [{"shop_id": shop_id, "name": f"product {i}", "description": "", "source": "manual",
              "image_url": f"https://cdn.example.com/p/{i}.jpg", "status": "ready", "processor_embedded": True,
              "embedded_at": now, "attempts": 1, "created_at": now, "updated_at": now} for i in range(n)],
        )
        ids = list(result.scalars())
        await conn.run_sync(lambda sync: refresh(sync, ids))  # their lexical documents (rows written without the ORM)
    await engine.dispose()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = VectorStore(None, home, model_key(str(model)))
    for i in range(0, n, 1000):
        await store.upsert(shop_id, ids[i:i + 1000], vectors[i:i + 1000],
                           [{"category_id": -1, "style_id": -1, "age_group_id": -1, "product_id": -1,
                             "source": "manual", "available": True, "listed": True}] * len(ids[i:i + 1000]))


def run_clients(base: str, key: str, texts: list[str], clients: int,
                filters: dict | None = None) -> list[tuple[float, dict]]:
    """``clients`` concurrent clients, each sending its share of ``texts`` one after the other (a lean HTTP
    client: its own cost stays out of "the rest")."""
    async def run() -> list[tuple[float, dict]]:
        sender = RawClient(f"{base}/api/v1/recommendations", clients)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

        async def worker(chunk: list[str]) -> list[tuple[float, dict]]:
            out = []
            for text in chunk:
                body = json.dumps({"prompt": text, "limit": 10, "mode": "vector", "distinct": "image",
                                   "filters": filters or {}}).encode()
                start = time.perf_counter()
                status, answer = await sender.request("POST", body, headers)
                elapsed = (time.perf_counter() - start) * 1000
                found = json.loads(answer) if status == 200 else {}
                assert status == 200 and found["count"] == 10, (status, answer[:300])
                out.append((elapsed, found["timings_ms"]))
            return out

        try:
            parts = await asyncio.gather(*(worker(texts[i::clients]) for i in range(clients)))
        finally:
            await sender.close()
        return [item for part in parts for item in part]

    return asyncio.run(run())


def text_tower(model: Path, texts: list[str], rounds: int = 25) -> dict[str, float]:
    """Prompts/s of the text tower alone, in this run: one at a time, two threads at a time (how queries ran
    before prompt batching), and 4 prompts per forward pass (what the prompt batcher does under 4 clients)."""
    from hub.search.encoder import Encoder

    encoder = Encoder(str(model))
    encoder.encode_text(["warm up"])
    ways = {
        "one at a time": lambda batch: [encoder.encode_text([p]) for p in batch],
        "two threads": lambda batch: list(concurrent.futures.ThreadPoolExecutor(2).map(
            lambda p: encoder.encode_text([p]), batch)),
        "4 per pass": lambda batch: encoder.encode_text(batch),
    }
    rates: dict[str, list[float]] = {name: [] for name in ways}
    source = itertools.cycle(texts)
    for _ in range(2):  # interleaved, twice: the machine's speed drifts
        for name, run in ways.items():
            start = time.perf_counter()
            for _ in range(rounds):
                run([next(source) for _ in range(4)])
            rates[name].append(rounds * 4 / (time.perf_counter() - start))
    return {name: sum(r) / len(r) for name, r in rates.items()}


def percentiles(values: list[float]) -> str:
    p = np.percentile(values, [50, 95, 99])
    return " | ".join(f"{v:.1f}" for v in p)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    model = full_size_model()
    with shop_home(model) as (home, shop):
        seed_start = time.perf_counter()
        asyncio.run(seed(home, model, shop["id"], args.images))
        seed_s = time.perf_counter() - seed_start
        texts = prompts()[: args.queries]
        tower = text_tower(model, prompts()[args.queries:])
        with hub_server(home, model) as (base, environ):
            run_clients(base, shop["publishable_key"], texts[:8], 1)  # warm-up
            pid = environ["BENCH_SERVE_PID"]
            cpu = {}  # hub serve's CPU ms per query: (the process, its main thread: the event loop)
            with profiled(pid, f"query-fresh-{args.images}", 600):
                before = cpu_seconds_of(pid), cpu_seconds_of(pid, pid)
                fresh = run_clients(base, shop["publishable_key"], texts, args.clients)
                cpu["fresh"] = tuple((b - a) * 1000 / len(texts) for a, b in
                                     zip(before, (cpu_seconds_of(pid), cpu_seconds_of(pid, pid)), strict=True))
            with profiled(pid, f"query-repeated-{args.images}", 600):
                before = cpu_seconds_of(pid), cpu_seconds_of(pid, pid)
                repeated = run_clients(base, shop["publishable_key"], texts, args.clients)
                cpu["repeated"] = tuple((b - a) * 1000 / len(texts) for a, b in
                                        zip(before, (cpu_seconds_of(pid), cpu_seconds_of(pid, pid)), strict=True))
            # a filter every image matches (more than HUB_EXACT_MAX_VECTORS do: the index answers), fresh prompts
            filtered = run_clients(base, shop["publishable_key"], prompts()[-args.queries:], args.clients,
                                   {"available": True})
            rss_mb = rss_of(environ["BENCH_SERVE_PID"])

    def rows(results: list[tuple[float, dict]], label: str) -> str:
        total = [r[0] for r in results]
        encode = [r[1]["encode"] for r in results]
        search = [r[1]["search"] for r in results]
        rest = [t - e - s for t, e, s in zip(total, encode, search, strict=True)]
        return "\n".join([
            f"| {label}: end to end (client) | {percentiles(total)} |",
            f"| {label}: text encoding | {percentiles(encode)} |",
            f"| {label}: vector search + image rows | {percentiles(search)} |",
            f"| {label}: the rest (HTTP, auth, prompt log) | {percentiles(rest)} |",
        ])

    fresh_rate = len(fresh) / (sum(r[0] for r in fresh) / 1000 / args.clients)
    repeated_rate = len(repeated) / (sum(r[0] for r in repeated) / 1000 / args.clients)
    body = f"""
`.venv/bin/python -m bench.query --images {args.images} --queries {args.queries} --clients {args.clients}` — {time.strftime('%Y-%m-%d')}

Machine: {machine()}.

One shop with {args.images:,} ready images (rows in SQLite, random unit vectors in the embedded Chroma; seeding
took {seed_s:.0f} s), `hub serve` on the embedded default, {args.clients} concurrent HTTP clients (raw HTTP/1.1, kept alive), limit 10.
"fresh" prompts are all different (every query runs the text tower); "repeated" sends the same prompts again
(the text-embedding cache answers); "fresh, filtered" sends other new prompts with `{{"available": true}}` (a filter
every image matches). Latencies in ms; the split comes from the `timings_ms` of each response.

| part | p50 | p95 | p99 |
| --- | ---: | ---: | ---: |
{rows(fresh, "fresh")}
{rows(repeated, "repeated")}
{rows(filtered, "fresh, filtered")}

`hub serve`'s resident memory after the queries: {rss_mb:.0f} MB.

`hub serve`'s CPU time per query (the process; its main thread, the event loop): fresh {cpu["fresh"][0]:.1f} ms,
{cpu["fresh"][1]:.1f} ms; repeated {cpu["repeated"][0]:.1f} ms, {cpu["repeated"][1]:.1f} ms.

Throughput: fresh {fresh_rate:.1f} queries/s, repeated {repeated_rate:.1f} queries/s. Fresh queries/s ÷ the text
tower's prompts/s at 4 per pass: **{fresh_rate / tower['4 per pass']:.2f}** (issue 16 asks ≥ 0.8); fresh p50 ÷ one
text forward pass ({1000 / tower['one at a time']:.1f} ms): **{np.percentile([r[0] for r in fresh], 50) / (1000 / tower['one at a time']):.2f}**
(asks ≤ 2).

The text tower alone, in the same run (prompts/s; concurrent queries' prompts share one forward pass):

| how | prompts/s | vs two threads |
| --- | ---: | ---: |
""" + "\n".join(f"| {name} | {rate:.1f} | {rate / tower['two threads']:.2f} |" for name, rate in tower.items()) + "\n"
    if not args.no_write:
        write_section("Queries" if args.images == 10_000 else f"Queries, {args.images:,} images", body)
    print(body)


if __name__ == "__main__":
    main()
