"""Gathers images from many concurrent tasks into one forward pass.

Decoding and preprocessing run in the same thread as the forward pass, just before it: Python work on other
threads would hold the GIL between the model's operations and slow every batch down (measured: the batch of
16 took 1.9 s instead of 1.1 s with preprocessing running beside it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
import numpy as np

from hub.embedding.model import Encoder

log = logging.getLogger("hub.batcher")

Prepare = Callable[[Any], tuple[np.ndarray, Any]]


class Batcher:
    """``await embed(item)`` from anywhere → ``(vector, info)``; one loop runs the model on up to ``size`` items.

    ``prepare(item)`` turns an item into ``(pixels, info)``; an exception it raises goes to that item's caller
    only.
    """

    def __init__(self, encoder: Encoder, size: int, wait_ms: int, prepare: Prepare) -> None:
        self.encoder = encoder
        self.size = size
        self.wait = wait_ms / 1000
        self.prepare = prepare
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future[tuple[np.ndarray, Any]]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.images = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="hub-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.cancel()

    async def embed(self, item: Any) -> tuple[np.ndarray, Any]:
        self.start()
        fut: asyncio.Future[tuple[np.ndarray, Any]] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return await fut

    async def _collect(self) -> list[tuple[Any, asyncio.Future[tuple[np.ndarray, Any]]]]:
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
                results = await anyio.to_thread.run_sync(self._process, [item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - the model failed: every waiting task gets it
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.batches += 1
            self.images += len(batch)
            log.debug("batch", extra={"size": len(batch), "ms": round((time.perf_counter() - started) * 1000),
                                      "queued": self._queue.qsize()})
            for (_, fut), result in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)


class Coalescer:
    """``await submit(item)`` from many tasks; whatever is waiting is handled by one ``process(items)`` call.

    The results of one forward pass reach their tasks together: this turns their sixteen vector-store writes
    and database commits into one of each.
    """

    def __init__(self, process: Callable[[list[Any]], Any]) -> None:
        self.process = process
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: Any) -> Any:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="hub-coalescer")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return await fut

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            await asyncio.sleep(0)  # let the other tasks of the same forward pass submit too
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                results = await self.process([item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting task
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
