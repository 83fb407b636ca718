"""Webhook intake under load: deliveries that arrive while one is being stored share the next write (group
commit), each is answered only once its row is durable, a replay within the same write is still a duplicate,
and a database that cannot take them answers 503 with nothing stored. The in-process broker runs a bounded number
of tasks at once, so a burst of deliveries does not become a burst of tasks on the API's event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from hub.db.engine import create_engine, dispose, session_factory
from hub.db.models import WebhookDelivery
from hub.worker.tasks import BoundedInMemoryBroker
from tests.api import test_webhooks
from tests.api.test_webhooks import connect
from tests.conftest import until, write_lock
from tests.feed_platform import signed
from tests.services import free_port

feed, settings_overrides = test_webhooks.feed, test_webhooks.settings_overrides  # the same platform and settings


async def stored(services) -> dict[str, Any]:
    async with services.sessions() as session:
        rows = (await session.execute(select(WebhookDelivery.delivery_id, WebhookDelivery.duplicates))).all()
    return {r.delivery_id: r.duplicates for r in rows}


async def test_deliveries_that_arrive_during_a_write_share_the_next(client, shop, feed, settings):
    """The interleaving: the first delivery's write is held up by another transaction's lock; five more arrive
    (one of them twice) and wait; once the lock goes, they are stored in one more write and each is answered."""
    path = f"/webhooks/example/{(await connect(client, shop, feed))['id']}"
    services = client.app.state.services
    inbox = services.inbox
    pipeline_received = services.pipeline.deliveries_received
    queued: list[int] = []

    async def hold_processing(ids: list[int]) -> None:  # (what is queued is counted; applying it is not tested here)
        queued.extend(ids)

    services.pipeline.deliveries_received = hold_processing
    deliveries = [signed({"event": "product.updated", "delivery_id": f"d{n}", "product": feed.put(n, [n])})
                  for n in range(1, 7)]
    try:
        async with write_lock(settings.db_url, "webhook_deliveries"):
            first = asyncio.create_task(client.post(path, content=deliveries[0][0], headers=deliveries[0][1]))
            await until(lambda: inbox._writer is not None and not inbox._writer.done() and not inbox._waiting,
                        "the first delivery's write is under way")
            later = [asyncio.create_task(client.post(path, content=body, headers=headers))
                     for body, headers in [*deliveries[1:], deliveries[3]]]
            await until(lambda: len(inbox._waiting) == 6, "the later deliveries wait for the next write")
            assert not first.done() and not any(t.done() for t in later)  # nobody answered before the write
            assert inbox.batches == 0
        answers = [await first] + [await t for t in later]  # (the lock gone: the first write, then the next)
    finally:
        services.pipeline.deliveries_received = pipeline_received
    assert [a.status_code for a in answers] == [200] * 7
    statuses = [a.json()["status"] for a in answers]
    assert statuses.count("accepted") == 6 and statuses.count("duplicate") == 1
    twice = [answers[3].json(), answers[6].json()]  # d4, sent twice: stored once, answered with its id both times
    assert sorted(a["status"] for a in twice) == ["accepted", "duplicate"]
    assert twice[0]["delivery"] == twice[1]["delivery"]
    assert inbox.batches == 2
    assert await stored(services) == {"d1": 0, "d2": 0, "d3": 0, "d4": 1, "d5": 0, "d6": 0}
    assert sorted(queued) == sorted(a.json()["delivery"] for a in answers if a.json()["status"] == "accepted")


async def test_a_database_that_cannot_store_deliveries_answers_503_and_stores_nothing(client, shop, feed):
    path = f"/webhooks/example/{(await connect(client, shop, feed))['id']}"
    services = client.app.state.services
    down = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing")
    working = services.inbox.sessions
    services.inbox.sessions = session_factory(down)
    try:
        answers = await asyncio.gather(*(client.post(path, content=body, headers=headers) for body, headers in [
            signed({"event": "product.updated", "delivery_id": f"d{n}", "product": feed.put(n, [n])})
            for n in range(3)]))
    finally:
        services.inbox.sessions = working
        await dispose(down)
    assert [a.status_code for a in answers] == [503] * 3
    assert all(a.headers["content-type"].startswith("application/") and "Traceback" not in a.text for a in answers)
    async with services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
    # the platform retries; now it is stored
    body, headers = signed({"event": "product.updated", "delivery_id": "d0", "product": feed.put(0, [0])})
    again = await client.post(path, content=body, headers=headers)
    assert again.status_code == 200 and again.json()["status"] == "accepted"


async def test_the_in_process_broker_runs_at_most_its_concurrency():
    broker = BoundedInMemoryBroker(2)
    running, most, done = 0, 0, []
    release = asyncio.Event()

    @broker.task(task_name="Hold")
    async def hold(n: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        done.append(n)
        return n

    await broker.startup()
    try:
        for n in range(6):
            await hold.kiq(n)  # sending never waits for a slot
        await until(lambda: running == 2, "two tasks run")
        for _ in range(20):  # the others wait, however long the loop runs
            await asyncio.sleep(0)
        assert running == 2 and not done
        release.set()
        await broker.wait_all()
    finally:
        await broker.shutdown()
    assert most == 2 and sorted(done) == list(range(6))


def delivery_row(connection_id: int, key: str) -> dict[str, Any]:
    """A ``webhook_deliveries`` row as the intake stores it."""
    from hub.db.models import utcnow

    return {"connection_id": connection_id, "headers": {}, "app_wide": False, "received_at": utcnow(),
            "delivery_id": key, "content_key": key, "topic": "product.updated", "status": "received", "error": None,
            "body": b"{}", "processed_at": None, "next_attempt_at": utcnow(), "attempts": 0, "duplicates": 0,
            "summary": {}}


async def test_a_row_the_database_refuses_fails_only_its_own_delivery(client, shop, feed, settings):
    """A connection deleted between a delivery's check and its write: that delivery fails (a foreign key), the
    others written with it are stored and answered."""
    from sqlalchemy.exc import IntegrityError

    connection_id = (await connect(client, shop, feed))["id"]
    services = client.app.state.services
    inbox = services.inbox
    async with write_lock(settings.db_url, "webhook_deliveries"):
        first = asyncio.create_task(inbox.record(delivery_row(connection_id, "k1")))
        await until(lambda: inbox._writer is not None and not inbox._writer.done() and not inbox._waiting,
                    "the first write is under way")
        gone = asyncio.create_task(inbox.record(delivery_row(connection_id + 1000, "k2")))
        kept = asyncio.create_task(inbox.record(delivery_row(connection_id, "k3")))
        await until(lambda: len(inbox._waiting) == 2, "both wait for the next write")
    assert isinstance(await first, int) and isinstance(await kept, int)
    with pytest.raises(IntegrityError):
        await gone
    assert set(await stored(services)) == {"k1", "k3"}


def probe_task(services, name: str, body):
    """A task on the app's own in-process broker (what the runtime's tasks run on)."""
    broker = services.pipeline.broker
    return broker.task(task_name=name)(body)


async def test_the_in_process_workers_wait_while_a_webhook_is_answered(client, shop, feed, settings, monkeypatch):
    """The embedded default's workers share the event loop with the API: while a delivery waits for its answer,
    their tasks go no further than the step they were at; once it is answered they go on (``hub.foreground``)."""
    path = f"/webhooks/example/{(await connect(client, shop, feed))['id']}"
    services = client.app.state.services
    monkeypatch.setattr(services.foreground, "max_wait", 60.0)  # (a step would otherwise go on after 0.1 s)
    steps: list[int] = []

    async def stepping() -> int:
        for n in range(3):
            steps.append(n)
            await asyncio.sleep(0)
        return len(steps)

    probe = probe_task(services, "ForegroundProbe", stepping)
    body, headers = signed({"event": "product.updated", "delivery_id": "d1", "product": feed.put(1, [1])})
    async with write_lock(settings.db_url, "webhook_deliveries"):
        answer = asyncio.create_task(client.post(path, content=body, headers=headers))
        await until(lambda: services.inbox._writer is not None and not services.inbox._writer.done(),
                    "the delivery's write is under way")
        assert services.foreground.in_flight == 1
        sent = await probe.kiq()
        await until(lambda: steps == [0], "the task's first step ran")
        for _ in range(20):  # however long the loop runs meanwhile
            await asyncio.sleep(0)
        assert steps == [0] and not answer.done()
    assert (await answer).status_code == 200
    assert (await sent.wait_result(timeout=10)).return_value == 3
    assert services.foreground.in_flight == 0


async def test_a_worker_holding_the_turn_to_write_is_not_held_up_by_the_webhook_waiting_for_it(
        client, shop, feed, monkeypatch):
    """The interleaving that would deadlock: a task has begun writing (on SQLite it holds the process's turn to
    write) when a delivery comes, whose write waits for that turn; the task must finish its transaction while the
    delivery is in flight, or neither would move before ``max_wait``."""
    from sqlalchemy import update

    from hub.db.models import Shop

    path = f"/webhooks/example/{(await connect(client, shop, feed))['id']}"
    services = client.app.state.services
    monkeypatch.setattr(services.foreground, "max_wait", 60.0)
    wrote, go = asyncio.Event(), asyncio.Event()

    async def writing() -> str:
        async with services.sessions() as session:
            await session.execute(update(Shop).where(Shop.id == shop["id"]).values(name="Renamed meanwhile"))
            wrote.set()
            await go.wait()
            await session.commit()
        return "committed"

    probe = probe_task(services, "TurnHolderProbe", writing)
    sent = await probe.kiq()
    await asyncio.wait_for(wrote.wait(), 10)
    body, headers = signed({"event": "product.updated", "delivery_id": "d1", "product": feed.put(1, [1])})
    answer = asyncio.create_task(client.post(path, content=body, headers=headers))
    await until(lambda: services.inbox._writer is not None and not services.inbox._writer.done(),
                "the delivery's write is under way")
    go.set()
    assert (await asyncio.wait_for(answer, 10)).status_code == 200
    assert (await sent.wait_result(timeout=10)).return_value == "committed"


async def test_the_intake_reads_a_connection_once_and_sees_this_process_change_it_at_once(client, shop, feed):
    """Deliveries for a connection read it once within ``HUB_QUERY_CACHE_SECONDS``; a change made in this process
    (its webhook secret, its removal) counts for the next delivery."""
    from sqlalchemy import event

    from hub.db.models import Connection

    conn = await connect(client, shop, feed)
    path = f"/webhooks/example/{conn['id']}"
    services = client.app.state.services
    reads: list[str] = []

    def count(_conn, _cursor, statement: str, *_args) -> None:
        if "FROM connections" in statement:
            reads.append(statement)

    intake = services.inbox.sessions.kw["bind"].sync_engine
    event.listen(intake, "before_cursor_execute", count)
    try:
        for n in range(1, 4):
            body, headers = signed({"event": "product.updated", "delivery_id": f"d{n}", "product": feed.put(n, [n])})
            assert (await client.post(path, content=body, headers=headers)).json()["status"] == "accepted"
        assert len(reads) == 1

        async with services.sessions() as session:  # a new webhook secret, as a change through the API makes it
            row = await session.get(Connection, conn["id"])
            row.secrets = services.secrets.seal(services.secrets.open(row.secrets) | {"webhook_secret": "new-secret"})
            await session.commit()
        body, headers = signed({"event": "product.updated", "delivery_id": "d4", "product": feed.put(4, [4])})
        assert (await client.post(path, content=body, headers=headers)).status_code == 401
        body, headers = signed({"event": "product.updated", "delivery_id": "d5", "product": feed.put(5, [5])},
                               secret="new-secret")
        assert (await client.post(path, content=body, headers=headers)).status_code == 200
        assert len(reads) == 2

        assert (await client.delete(f"/api/v1/connections/{conn['id']}", headers=shop.secret)).status_code == 204
        body, headers = signed({"event": "product.updated", "delivery_id": "d6", "product": feed.put(6, [6])},
                               secret="new-secret")
        refused = await client.post(path, content=body, headers=headers)
        assert refused.status_code == 404 and refused.headers["content-type"].startswith("application/")
    finally:
        event.remove(intake, "before_cursor_execute", count)


async def test_a_body_trickling_in_holds_the_workers_up_for_nothing(client, shop, feed):
    """A webhook counts for ``hub.foreground`` from its whole body on: a sender that trickles a body in (anyone
    can: nothing is verified before the body is read) does not hold the in-process workers up meanwhile."""
    path = f"/webhooks/example/{(await connect(client, shop, feed))['id']}"
    services = client.app.state.services
    body, headers = signed({"event": "product.updated", "delivery_id": "d1", "product": feed.put(1, [1])})
    asked_for_more, rest = asyncio.Event(), asyncio.Event()

    async def trickle():
        yield body[:10]
        asked_for_more.set()
        await rest.wait()
        yield body[10:]

    answer = asyncio.create_task(client.post(path, content=trickle(), headers=headers))
    await asyncio.wait_for(asked_for_more.wait(), 10)
    assert services.foreground.in_flight == 0
    rest.set()
    assert (await answer).status_code == 200
    assert services.foreground.in_flight == 0
