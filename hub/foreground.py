"""Background work on the event loop steps aside while a platform waits for an answer.

In the embedded default the in-process workers run on the event loop that answers the API. asyncio runs what is
ready first come, first served, and a request needs several turns of the loop (its body, its read, its stored
delivery, its answer): with a burst of deliveries each starting a catalog write and an embedding, every one of
those turns waited behind a step of each background task that was ready, and the answers took as long as the
backlog (measured at 200 deliveries/s: p50 0.8–2.3 s while the loop was short of CPU).

Here a background task (what the in-memory broker runs: ``in_background``) is driven one step at a time. Each time
it would go on after a wait, it first lets the foreground pass: while a request counted by ``Foreground.serving``
is in flight it waits until none is — at most ``MAX_WAIT`` each time and ``BUDGET`` of its time in all (so that it
always moves on, at a tenth of its pace or better however busy the API), and not at all while it holds something a
request may be waiting for (``exempt``: a turn to write the SQLite file). A webhook is counted from its whole body
to its answer (a sender trickling a body in holds nothing up). The work is not dropped or reordered, only put
after the answers: what a request accepted is durable before it is answered, and the backlog drains once the
burst is over. Its deadlines still run while it waits: ``MAX_WAIT`` is small beside any of them.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from hub.metrics import BACKGROUND_DEFERRED

T = TypeVar("T")
MAX_WAIT = 0.1  # seconds a background step waits for the foreground at most, each time
# the share of its time background work may spend waiting for the foreground, at most (measured at 200 webhooks/s:
# with 0.5, p50 76–80 ms against 21–31 ms without a bound; with 0.9, 21 ms)
BUDGET = 0.9
_DRIVEN: ContextVar["Foreground | None"] = ContextVar("hub_background_of", default=None)  # (``alongside``)


class Foreground:
    """The requests in flight that background work steps aside for, in one event loop."""

    def __init__(self, max_wait: float = MAX_WAIT, exempt: Callable[[], bool] | None = None,
                 budget: float = BUDGET) -> None:
        self.max_wait = max_wait
        self.budget = budget
        self.exempt = exempt  # whether the calling task must not wait (it holds what a request may need)
        self.in_flight = 0
        self._quiet: list[asyncio.Future[None]] = []

    @contextmanager
    def serving(self) -> Iterator[None]:
        """A request that background work waits for while it is in flight."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._wake()

    def _wake(self) -> None:
        waiting, self._quiet = self._quiet, []
        for future in waiting:
            _resolve(future)

    def must_wait(self) -> bool:
        return bool(self.in_flight) and not (self.exempt is not None and self.exempt())

    def quiet(self) -> Generator[Any, None, None]:
        """(In a generator-based coroutine) wait until no request is in flight, at most ``max_wait``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._quiet.append(future)
        timer = loop.call_later(self.max_wait, _resolve, future)
        start = time.perf_counter()
        try:
            yield from future
        finally:
            timer.cancel()
            if future in self._quiet:  # (its time ran out, or it was cancelled: under a steady stream of
                self._quiet.remove(future)  # requests the list would otherwise only grow)
            BACKGROUND_DEFERRED.inc(time.perf_counter() - start)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def in_background(work: Coroutine[Any, Any, T], foreground: Foreground | None) -> T:
    """``await work``, letting ``foreground`` pass before each step after the first (and so do the tasks it
    starts through ``alongside``)."""
    if foreground is None:
        return await work
    token = _DRIVEN.set(foreground)
    try:
        return await _stepwise(work, foreground)
    finally:
        _DRIVEN.reset(token)


def alongside(work: Coroutine[Any, Any, T]) -> Awaitable[T]:
    """``work``, to be run as a task of its own (``asyncio.gather``) by background work: it steps aside as the
    work that starts it does (a coroutine awaited in place needs nothing: it is one of that work's steps)."""
    foreground = _DRIVEN.get()
    return work if foreground is None else in_background(work, foreground)


@types.coroutine
def _stepwise(work: Coroutine[Any, Any, T], foreground: Foreground) -> Generator[Any, Any, T]:
    """Drive ``work`` as the task running this would (what it waits on is passed up to the task unchanged, and
    what the task is told — a result, a cancellation — is passed down), waiting for the foreground in between.

    A step waits only while the work has waited for the foreground less than ``Foreground.budget`` of its time so
    far (however busy the API, background work keeps the rest of its pace). A cancellation that comes while a
    step waits is thrown in where the work waited, in place of what it had been given — as asyncio does with a
    cancellation that comes between a task's wake-up and its next step on a busy loop (a deadline of the work's
    own that passes meanwhile ends it with ``TimeoutError``, though it had what it waited for: ``MAX_WAIT`` is
    small beside every deadline the hub sets)."""
    loop = asyncio.get_running_loop()
    started, deferred = loop.time(), 0.0
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                waited_on = work.throw(error) if error is not None else work.send(value)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            value, error = None, None
            try:
                value = yield waited_on
            except GeneratorExit:
                raise
            except BaseException as exc:  # noqa: BLE001 - a cancellation, or what the awaited future raised
                error = exc
                continue
            now = loop.time()
            if deferred > foreground.budget * (now - started) or not foreground.must_wait():
                continue
            try:
                yield from foreground.quiet()
            except GeneratorExit:
                raise
            except BaseException as exc:  # noqa: BLE001 - the task was cancelled meanwhile
                value, error = None, exc
            deferred += loop.time() - now
    finally:
        work.close()  # (a no-op once it has returned or raised)
