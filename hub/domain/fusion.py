"""Reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009): several rankings of the same items made
into one by ranks alone, so a cosine similarity and a lexical score never need a common scale.

An item's fused score is ``sum(weight_i / (k + rank_i))`` over the rankings it appears in (ranks from 1); an
item missing from a ranking gets nothing from it. ``k = 60`` is the paper's constant. Equal scores keep the
order of the first ranking that holds the items, then the item's key.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
RRF_K = 60


def reciprocal_rank_fusion(rankings: Sequence[tuple[float, Sequence[K]]], k: int = RRF_K) -> list[tuple[K, float]]:
    """``rankings``: (weight, items best first) pairs. Returns every item with its fused score, best first."""
    scores: dict[K, float] = {}
    first_seen: dict[K, tuple[int, int]] = {}
    for which, (weight, items) in enumerate(rankings):
        for rank, item in enumerate(items, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
            first_seen.setdefault(item, (which, rank))
    return sorted(scores.items(), key=lambda pair: (-round(pair[1], 12), first_seen[pair[0]], pair[0]))
