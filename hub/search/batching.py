"""Gathers images from many concurrent tasks into one forward pass.

Decoding and preprocessing run in the same thread as the forward pass, just before it: Python work on other
threads would hold the GIL between the model's operations and slow every batch down (measured: the batch of
16 took 1.9 s instead of 1.1 s with preprocessing running beside it). That thread is the batcher's own, at the
priority of background work (``hub.search.priority``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import numpy as np

from hub.search.encoder import Encoder
from hub.search.priority import lower_this_thread

log = logging.getLogger("hub.batcher")

Prepare = Callable[[Any], tuple[np.ndarray, Any]]


class _QueueLoop:
    """A queue of items with a future each, drained by one background task (``_run``)."""

    task_name = "hub-queue"

    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        """Stop the loop; callers still waiting get ``CancelledError``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.cancel()

    async def submit(self, item: Any) -> Any:
        self.start()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return await fut

    async def _run(self) -> None:
        raise NotImplementedError

    @staticmethod
    def _settle(batch: list[tuple[Any, asyncio.Future[Any]]], results: list[Any] | BaseException) -> None:
        """Hand each caller its result (or exception); one exception for all when the whole batch failed."""
        for i, (_, fut) in enumerate(batch):
            if fut.done():
                continue
            result = results if isinstance(results, BaseException) else results[i]
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)


class Batcher(_QueueLoop):
    """``await embed(item)`` from anywhere → ``(vector, info)``; one loop runs the model on up to ``size`` items.

    ``prepare(item)`` turns an item into ``(pixels, info)``; an exception it raises goes to that item's caller
    only.
    """

    task_name = "hub-batcher"

    def __init__(self, encoder: Encoder, size: int, wait_ms: int, prepare: Prepare, nice: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.size = size
        self.wait = wait_ms / 1000
        self.prepare = prepare
        self.nice = nice
        self.batches = 0
        self.images = 0
        self._thread: ThreadPoolExecutor | None = None

    async def stop(self) -> None:
        await super().stop()
        if self._thread is not None:
            self._thread.shutdown(wait=False)
            self._thread = None

    async def embed(self, item: Any) -> tuple[np.ndarray, Any]:
        return await self.submit(item)

    async def _collect(self) -> list[tuple[Any, asyncio.Future[Any]]]:
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.wait
        while len(batch) < self.size:
            if not self._queue.empty():  # what is already waiting goes in without delay
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [(item, fut) for item, fut in batch if not fut.done()]

    def _process(self, items: list[Any]) -> list[tuple[np.ndarray, Any] | BaseException]:
        """In one worker thread: prepare every item, then one forward pass over those that prepared."""
        prepared: list[tuple[np.ndarray, Any] | BaseException] = []
        for item in items:
            try:
                prepared.append(self.prepare(item))
            except Exception as exc:  # noqa: BLE001 - belongs to this item's caller
                prepared.append(exc)
        good = [p for p in prepared if not isinstance(p, BaseException)]
        if not good:
            return prepared
        vectors = iter(self.encoder.encode_pixels([pixels for pixels, _ in good]))
        return [p if isinstance(p, BaseException) else (next(vectors), p[1]) for p in prepared]

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            if not batch:
                continue
            started = time.perf_counter()
            try:
                if self._thread is None:  # one thread of its own, at the priority of background work
                    self._thread = ThreadPoolExecutor(1, "hub-embed", lower_this_thread, (self.nice,))
                results = await asyncio.get_running_loop().run_in_executor(
                    self._thread, self._process, [item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - the model failed: every waiting task gets it
                self._settle(batch, exc)
                continue
            self.batches += 1
            self.images += len(batch)
            log.debug("batch", extra={"size": len(batch), "ms": round((time.perf_counter() - started) * 1000),
                                      "queued": self._queue.qsize()})
            self._settle(batch, results)


class PromptBatcher(_QueueLoop):
    """Prompts of concurrent queries go through the text tower together: whatever is waiting when the previous
    pass ends makes the next one (no added delay). On two cores, 4 prompts in one pass take about as long as one
    (bench: ``docs/benchmarks.md``), so under load this halves query latency instead of queueing passes."""

    task_name = "hub-prompts"

    def __init__(self, encoder: Encoder, size: int = 32) -> None:
        super().__init__()
        self.encoder = encoder
        self.size = size
        self.passes = 0
        self.prompts = 0

    async def encode(self, prompt: str) -> np.ndarray:
        hit = self.encoder.cached_prompt(prompt)
        return hit if hit is not None else await self.submit(prompt)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < self.size:
                batch.append(self._queue.get_nowait())
            batch = [(item, fut) for item, fut in batch if not fut.done()]
            if not batch:
                continue
            try:
                results = await anyio.to_thread.run_sync(self.encoder.encode_prompts, [item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - the model failed (or is not loadable): every caller gets it
                self._settle(batch, exc)
                continue
            self.passes += 1
            self.prompts += len(batch)
            self._settle(batch, results)


class Coalescer(_QueueLoop):
    """``await submit(item)`` from many tasks; whatever is waiting is handled by one ``process(items)`` call.

    The results of one forward pass reach their tasks together: this turns their vector-store writes and
    database commits into one of each.
    """

    task_name = "hub-coalescer"

    def __init__(self, process: Callable[[list[Any]], Any]) -> None:
        super().__init__()
        self.process = process

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            await asyncio.sleep(0)  # let the other tasks of the same forward pass submit too
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                results = await self.process([item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting task
                self._settle(batch, exc)
                continue
            self._settle(batch, results)
