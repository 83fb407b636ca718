"""The prompt log is written in batches off the request path: queries answer without a database write, readers
see every prompt of their process, a database that cannot be written keeps the rows, a graceful stop writes
them."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from hub.db.engine import create_engine, dispose, session_factory
from hub.db.models import Prompt
from hub.domain.prompt_log import PromptLog
from tests.conftest import serve_app, until, write_lock
from tests.services import free_port

PROMPTS = [f"red floral dress {i}" for i in range(24)]


async def logged(sessions) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Prompt)) or 0)


async def ask_all(client, shop) -> None:
    answers = await asyncio.gather(*(client.post("/api/v1/recommendations", json={"prompt": p, "limit": 5},
                                                 headers=shop.publishable) for p in PROMPTS))
    assert [a.status_code for a in answers] == [200] * len(PROMPTS), answers[0].text


async def test_queries_do_not_write_and_the_reader_sees_every_prompt(client, shop):
    services = client.app.state.services
    services.prompt_log.flush_seconds = 3600  # no timed flush during this test: only the reader's
    await ask_all(client, shop)
    assert len(services.prompt_log.pending) == len(PROMPTS)
    assert await logged(services.sessions) == 0  # the requests wrote nothing
    listed = (await client.get("/api/v1/prompts?limit=100", headers=shop.secret)).json()["items"]
    assert sorted(p["prompt"] for p in listed) == sorted(PROMPTS)
    assert all(p["num_recommended"] == 5 for p in listed)
    assert not services.prompt_log.pending and await logged(services.sessions) == len(PROMPTS)


async def test_the_timer_writes_the_gathered_prompts(client, shop):
    services = client.app.state.services
    services.prompt_log.flush_seconds = 0.05
    await ask_all(client, shop)
    for _ in range(400):  # (what is awaited is the write, not an amount of time)
        if await logged(services.sessions) == len(PROMPTS):
            break
        await asyncio.sleep(0.05)
    assert await logged(services.sessions) == len(PROMPTS) and not services.prompt_log.pending



async def test_prompts_that_arrive_while_a_batch_is_written_go_in_the_next(client, shop, settings):
    """The interleaving: a batch is being written (held up by another transaction's lock) when a prompt arrives;
    once the batch is in, that prompt is written too, without waiting for another query."""
    services = client.app.state.services
    log = services.prompt_log
    log.flush_seconds = 0.01
    async with write_lock(settings.db_url, "prompts"):
        log.add(shop["id"], "first", 10, 0, None, {}, None)
        await until(lambda: log._flushing is not None and not log._flushing.done() and not log.pending,
                    "the first batch is being written")
        log.add(shop["id"], "second", 10, 0, None, {}, None)
        await until(lambda: log._scheduled is None, "the second prompt's timer fired (mid-write)")
    await until(lambda: _count_is(services.sessions, 2), "both prompts written")  # (the lock gone: one, then the other)
    listed = (await client.get("/api/v1/prompts", headers=shop.secret)).json()["items"]
    assert [p["prompt"] for p in listed] == ["second", "first"]


async def _count_is(sessions, n: int) -> bool:
    return await logged(sessions) == n


async def test_a_database_that_cannot_be_written_keeps_the_prompts(client, shop):
    services = client.app.state.services
    down = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing")
    log = PromptLog(session_factory(down))
    log.flush_seconds = 3600
    for p in PROMPTS[:3]:
        log.add(shop["id"], p, 10, 0, None, {}, None)
    with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises for a refused connection
        await log.flush()
    assert [row["prompt"] for row in log.pending] == PROMPTS[:3]  # kept, in order
    log.add(shop["id"], PROMPTS[3], 10, 0, None, {}, None)
    await dispose(down)
    log.sessions = services.sessions  # the database is back
    assert await log.flush() == 4
    listed = (await client.get("/api/v1/prompts", headers=shop.secret)).json()["items"]
    assert [p["prompt"] for p in listed] == PROMPTS[3::-1]  # newest first, none lost


async def test_a_graceful_stop_writes_what_is_gathered(settings, make_shop_for):
    async with serve_app(settings) as client:
        shop = await make_shop_for(client)
        client.app.state.services.prompt_log.flush_seconds = 3600
        await ask_all(client, shop)
        sessions = client.app.state.services.sessions
        assert await logged(sessions) == 0
    engine = create_engine(settings.db_url)
    try:
        assert await logged(session_factory(engine)) == len(PROMPTS)
    finally:
        await dispose(engine)
