"""``hub.foreground``: background work driven step by step waits while a request is in flight, and is otherwise
the same coroutine — its result, its exceptions, its cancellation and its timeouts pass through unchanged."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from hub.foreground import Foreground, alongside, in_background
from prometheus_client import REGISTRY



async def spin(times: int = 20) -> None:
    """Let the loop run ``times`` turns (whatever was ready has had its chance)."""
    for _ in range(times):
        await asyncio.sleep(0)


async def stepper(steps: list[int], n: int = 3) -> str:
    for i in range(n):
        steps.append(i)
        await asyncio.sleep(0)
    return "done"


async def test_work_waits_while_a_request_is_in_flight_and_goes_on_after():
    foreground = Foreground(max_wait=60)
    steps: list[int] = []
    deferred = REGISTRY.get_sample_value("hub_background_deferred_seconds_total")
    with foreground.serving():
        work = asyncio.create_task(in_background(stepper(steps), foreground))
        await spin()
        assert steps == [0] and not work.done()  # its first step ran; the next waits for the request
    assert await asyncio.wait_for(work, 10) == "done"
    assert steps == [0, 1, 2]
    assert REGISTRY.get_sample_value("hub_background_deferred_seconds_total") > deferred


async def test_without_a_request_nothing_waits():
    foreground = Foreground(max_wait=60)
    steps: list[int] = []
    work = asyncio.create_task(in_background(stepper(steps, 5), foreground))
    await spin(8)
    assert work.done() and steps == [0, 1, 2, 3, 4]


async def test_overlapping_requests_keep_it_waiting_until_none_is_in_flight():
    foreground = Foreground(max_wait=60)
    steps: list[int] = []
    first, second = foreground.serving(), foreground.serving()
    first.__enter__()
    work = asyncio.create_task(in_background(stepper(steps), foreground))
    await spin()
    second.__enter__()
    first.__exit__(None, None, None)
    await spin()
    assert steps == [0] and foreground.in_flight == 1  # one ended, the other is still in flight
    second.__exit__(None, None, None)
    await asyncio.wait_for(work, 10)
    assert steps == [0, 1, 2]


async def test_work_that_waited_its_budget_goes_on_however_busy_the_api():
    foreground = Foreground(max_wait=60, budget=0.5)
    steps: list[int] = []
    with foreground.serving():
        work = asyncio.create_task(in_background(stepper(steps, 5), foreground))
        await spin()
        assert steps == [0]
    with foreground.serving():  # the next request comes at once: the work has waited nearly all its time so far
        await asyncio.wait_for(work, 10)
    assert steps == [0, 1, 2, 3, 4]


async def test_a_step_waits_at_most_max_wait_so_work_always_moves_on():
    foreground = Foreground(max_wait=0.01)
    steps: list[int] = []
    with foreground.serving():  # (a request that never ends)
        assert await asyncio.wait_for(in_background(stepper(steps), foreground), 10) == "done"
        assert not foreground._quiet  # (nothing is kept of the waits that timed out)
    assert steps == [0, 1, 2]


async def test_work_that_holds_what_a_request_needs_does_not_wait():
    holder: asyncio.Task[object] | None = None
    foreground = Foreground(max_wait=60, exempt=lambda: asyncio.current_task() is holder)
    held, other = [], []
    with foreground.serving():
        holder = asyncio.create_task(in_background(stepper(held), foreground))
        waiting = asyncio.create_task(in_background(stepper(other), foreground))
        await asyncio.wait_for(holder, 10)
        await spin()
        assert held == [0, 1, 2] and other == [0] and not waiting.done()
    await asyncio.wait_for(waiting, 10)


async def test_results_exceptions_and_futures_pass_through():
    foreground = Foreground(max_wait=60)
    loop = asyncio.get_running_loop()

    async def awaits_a_failing_future() -> None:
        future: asyncio.Future[int] = loop.create_future()
        loop.call_soon(future.set_exception, KeyError("gone"))
        await future

    async def catches_and_returns() -> int:
        future: asyncio.Future[int] = loop.create_future()
        loop.call_soon(future.set_result, 41)
        value = await future
        try:
            await awaits_a_failing_future()
        except KeyError:
            return value + 1
        return 0

    assert await in_background(catches_and_returns(), foreground) == 42
    with pytest.raises(KeyError):
        await in_background(awaits_a_failing_future(), foreground)
    assert await in_background(stepper([]), None) == "done"  # (no foreground: the coroutine itself)


async def test_cancelling_the_task_cancels_the_work_where_it_waits():
    foreground = Foreground(max_wait=60)
    cleaned: list[str] = []
    forever = asyncio.Event()

    async def work() -> None:
        try:
            await forever.wait()
        finally:
            cleaned.append("waiting")

    task = asyncio.create_task(in_background(work(), foreground))
    await spin()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["waiting"]

    # cancelled while it waits for the foreground (its own wait is over): the work is told at that point
    steps: list[int] = []

    async def stepping() -> None:
        try:
            await stepper(steps)
        finally:
            cleaned.append("foreground")

    with foreground.serving():
        task = asyncio.create_task(in_background(stepping(), foreground))
        await spin()
        assert steps == [0]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert cleaned == ["waiting", "foreground"] and steps == [0]


async def test_timeouts_and_context_inside_the_work_behave_as_in_a_plain_task():
    foreground = Foreground(max_wait=60)
    name: contextvars.ContextVar[str] = contextvars.ContextVar("name", default="")

    async def times_out() -> str:
        name.set("inside")
        try:
            async with asyncio.timeout(0.01):
                await asyncio.Event().wait()
        except TimeoutError:
            return name.get()
        return "no timeout"

    assert await asyncio.wait_for(in_background(times_out(), foreground), 10) == "inside"

    async def deadline_passes_while_a_step_waits() -> str:
        try:
            async with asyncio.timeout(0.05):
                await asyncio.sleep(0.01)
        except TimeoutError:
            await asyncio.sleep(0)  # (and the work goes on as usual after its scope has handled it)
            return "timed out"
        return "in time"

    foreground.max_wait = 0.5  # (longer than the deadline; the request below never ends)
    with foreground.serving():  # as on a busy loop: the cancellation comes before the step, the scope's own
        assert await asyncio.wait_for(in_background(deadline_passes_while_a_step_waits(), foreground), 10) == \
            "timed out"


async def test_semaphores_stay_true_when_the_work_is_cancelled_while_a_step_waits():
    """Cancelled while a step waits, the work is cancelled where it waited (the slot it was just handed goes back);
    nothing it had not yet asked for is touched."""
    foreground = Foreground(max_wait=60)
    first, second = asyncio.Semaphore(1), asyncio.Semaphore(1)
    await first.acquire()
    await second.acquire()  # (the test holds both)

    async def wants_both() -> None:
        async with first:
            async with second:
                pass

    with foreground.serving():
        task = asyncio.create_task(in_background(wants_both(), foreground))
        await spin()
        first.release()  # handed to the waiting work, whose next step now waits for the foreground
        await spin()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not first.locked()  # the slot it was handed came back
    assert second.locked()  # and the one the test still holds is still held



async def test_tasks_the_work_starts_alongside_step_aside_too():
    foreground = Foreground(max_wait=60)
    steps: dict[str, list[int]] = {"a": [], "b": []}

    async def parent() -> list[str]:
        return await asyncio.gather(*(alongside(stepper(steps[name])) for name in steps))

    with foreground.serving():
        work = asyncio.create_task(in_background(parent(), foreground))
        await spin()
        assert steps == {"a": [0], "b": [0]} and not work.done()  # the gathered tasks wait as their parent does
    assert await asyncio.wait_for(work, 10) == ["done", "done"]
    plain = stepper([])
    assert alongside(plain) is plain  # (outside background work: the coroutine itself)
    await plain
