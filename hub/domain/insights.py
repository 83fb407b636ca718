"""What shoppers ask: prompts over time, the most asked, the ones the catalog answers worst (no results, or the
lowest best-match similarity), the filters used, and the prompt log as CSV."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import Prompt, utcnow

FILTER_SAMPLE = 5000  # the newest prompts whose filters are counted (filters are JSON: counted here, not in SQL)
CSV_CHUNK = 1000


@dataclass(frozen=True)
class AskedPrompt:
    prompt: str
    count: int
    average_results: float


@dataclass(frozen=True)
class WeakPrompt:
    prompt: str
    count: int
    best_score: float | None
    results: int


@dataclass(frozen=True)
class Insights:
    days: list[tuple[date, int]]  # every day of the period, oldest first, with its prompt count
    total: int
    top: list[AskedPrompt]
    unanswered: list[WeakPrompt]  # no result at all
    weakest: list[WeakPrompt]  # answered, with the lowest best-match similarity
    filters: list[tuple[str, int]]


async def insights(session: AsyncSession, shop_id: int, days: int = 30, top: int = 15) -> Insights:
    """The shop's prompts of the last ``days`` days, summarised by the database (grouped by day and by prompt;
    prompts are stored with their whitespace folded, and compared ignoring case)."""
    since = utcnow() - timedelta(days=days)
    recent = (Prompt.shop_id == shop_id) & (Prompt.created_at >= since)
    day = func.date(Prompt.created_at)
    per_day = {str(d)[:10]: n for d, n in await session.execute(
        select(day, func.count()).where(recent).group_by(day))}
    total = sum(per_day.values())
    text = func.lower(Prompt.prompt)
    asked, most, best, average = func.count(), func.max(Prompt.result_count), func.max(Prompt.top_score), \
        func.avg(Prompt.result_count)
    grouped = select(text, asked, most, best, average).where(recent).group_by(text)
    top_rows = list(await session.execute(grouped.order_by(asked.desc(), text).limit(top)))
    unanswered_rows = list(await session.execute(grouped.having(most == 0).order_by(asked.desc(), text).limit(top)))
    weakest_rows = list(await session.execute(grouped.having((most > 0) & best.is_not(None))
                                              .order_by(best, asked.desc(), text).limit(top)))
    sample = list(await session.scalars(select(Prompt.filters).where(recent).order_by(Prompt.id.desc())
                                        .limit(FILTER_SAMPLE)))
    await session.commit()
    used: Counter[str] = Counter(name for filters in sample for name in filters or {})
    today = utcnow().date()
    timeline = [(today - timedelta(days=n), per_day.get((today - timedelta(days=n)).isoformat(), 0))
                for n in range(days - 1, -1, -1)]
    return Insights(
        days=timeline, total=total,
        top=[AskedPrompt(p, n, round(float(avg or 0), 1)) for p, n, _, _, avg in top_rows],
        unanswered=[WeakPrompt(p, n, b, m) for p, n, m, b, _ in unanswered_rows],
        weakest=[WeakPrompt(p, n, b, m) for p, n, m, b, _ in weakest_rows],
        filters=used.most_common())


async def prompt_log_csv(session: AsyncSession, shop_id: int) -> AsyncIterator[str]:
    """The whole prompt log as CSV (a header, then one row per prompt, oldest first), streamed in chunks."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["created_at", "prompt", "num_recommended", "result_count", "top_score", "filters"])
    yield out.getvalue()
    after = 0
    while True:
        chunk = list(await session.scalars(select(Prompt).where(Prompt.shop_id == shop_id, Prompt.id > after)
                                           .order_by(Prompt.id).limit(CSV_CHUNK)))
        await session.commit()
        if not chunk:
            return
        out = io.StringIO()
        writer = csv.writer(out)
        for row in chunk:
            writer.writerow([row.created_at.isoformat(), _cell(row.prompt), row.num_recommended, row.result_count,
                             "" if row.top_score is None else f"{row.top_score:.6f}",
                             json.dumps(row.filters or {}, sort_keys=True)])
        after = chunk[-1].id
        yield out.getvalue()


def _cell(text: str) -> str:
    """A prompt as a CSV cell a spreadsheet will not run as a formula (shoppers type anything)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def svg_timeline(days: list[tuple[date, int]], width: int = 720, height: int = 160) -> dict[str, Any]:
    """Bars for a day-by-day plot, computed here so that the page needs no script to draw it."""
    peak = max((n for _, n in days), default=0) or 1
    step = width / max(len(days), 1)
    bars = [{"x": round(i * step + 1, 1), "width": round(max(step - 2, 1), 1),
             "height": round((height - 20) * n / peak, 1), "y": round(height - 16 - (height - 20) * n / peak, 1),
             "day": d.isoformat(), "count": n} for i, (d, n) in enumerate(days)]
    return {"width": width, "height": height, "bars": bars, "peak": peak,
            "first": days[0][0].isoformat() if days else "", "last": days[-1][0].isoformat() if days else ""}
