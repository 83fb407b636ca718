"""``hub eval``: how well each ranking mode and weight finds what a shop says is relevant.

A judgement file is JSON lines, one query each: ``{"query": "red linen dress", "relevant": [12, 40]}`` where
``relevant`` lists the hub's product ids (``product_id`` in API results) a shopper asking this should get, and
``relevant_images`` (optional) lists image ids for images without a product. Every configuration ranks every
query as the storefront would (one result per product, the shop's filters none, prompts not logged), and the
ranking is scored against the judgements:

- recall@k: the share of the relevant products found in the first k results;
- MRR: the mean over queries of 1 / the rank of the first relevant result (0 when none is in the first
  ``max(k, 10)``);
- nDCG@10: discounted cumulative gain of the first 10 results (a relevant result at rank r gains
  1 / log2(r + 1)), divided by the best possible for that query.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hub.domain.keys import Principal
from hub.domain.recommendations import SearchMode, recommend, stands_for
from hub.domain.services import Services
from hub.errors import Invalid

Key = tuple[str, int]  # ("product", id) or ("image", id): what one result stands for


@dataclass(frozen=True)
class Judgement:
    query: str
    relevant: frozenset[Key]


@dataclass(frozen=True)
class Scores:
    mode: str
    weight: float | None
    queries: int
    recall: float
    mrr: float
    ndcg10: float


def read_judgements(lines: Iterable[str]) -> list[Judgement]:
    """Parse a JSON-lines judgement file; a bad line is a 400 naming the line."""
    found: list[Judgement] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            query = row["query"]
            products = row.get("relevant", [])
            images = row.get("relevant_images", [])
            if not isinstance(query, str) or not query.strip():
                raise ValueError("query must be text")
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in [*products, *images]):
                raise ValueError("relevant and relevant_images must be lists of ids")
        except (ValueError, KeyError, TypeError) as exc:
            raise Invalid(f"line {number}: {exc}") from None
        relevant = frozenset([("product", p) for p in products] + [("image", i) for i in images])
        if not relevant:
            raise Invalid(f"line {number}: no relevant product or image for {query!r}")
        found.append(Judgement(" ".join(query.split()), relevant))
    if not found:
        raise Invalid("the file holds no queries")
    return found


def score(ranked: list[Key], relevant: frozenset[Key], k: int) -> tuple[float, float, float]:
    """recall@k, reciprocal rank and nDCG@10 of one ranking."""
    recall = len(relevant & set(ranked[:k])) / len(relevant)
    first = next((rank for rank, key in enumerate(ranked, start=1) if key in relevant), None)
    dcg = sum(1 / math.log2(rank + 1) for rank, key in enumerate(ranked[:10], start=1) if key in relevant)
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(relevant), 10) + 1))
    return recall, (1 / first if first else 0.0), dcg / ideal


async def evaluate(services: Services, shop_id: int, judgements: list[Judgement],
                   configurations: list[tuple[SearchMode, float | None]], k: int) -> list[Scores]:
    """Every configuration over every query, in one run."""
    storefront = Principal(shop_id=shop_id, key_id=0, kind="publishable")
    out: list[Scores] = []
    for mode, weight in configurations:
        totals = [0.0, 0.0, 0.0]
        for judged in judgements:
            async with services.sessions() as session:
                found = await recommend(session, services, storefront, judged.query, max(k, 10), {}, mode=mode,
                                        weight=weight, log_prompt=False)
            ranked: list[Key] = [stands_for(r.image) for r in found.results]
            for i, value in enumerate(score(ranked, judged.relevant, k)):
                totals[i] += value
        n = len(judgements)
        out.append(Scores(mode, weight if mode == "hybrid" else None, n, round(totals[0] / n, 4),
                          round(totals[1] / n, 4), round(totals[2] / n, 4)))
    return out


def table(results: list[Scores], k: int) -> str:
    rows = [f"| mode | weight | queries | recall@{k} | MRR | nDCG@10 |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        weight = "" if r.weight is None else f"{r.weight:g}"
        rows.append(f"| {r.mode} | {weight} | {r.queries} | {r.recall:.4f} | {r.mrr:.4f} | {r.ndcg10:.4f} |")
    return "\n".join(rows)


def as_json(results: list[Scores], k: int) -> list[dict[str, Any]]:
    return [{"mode": r.mode, "weight": r.weight, "queries": r.queries, f"recall@{k}": r.recall, "mrr": r.mrr,
             "ndcg@10": r.ndcg10} for r in results]
