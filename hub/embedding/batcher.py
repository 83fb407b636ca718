"""Gathers preprocessed images from many concurrent tasks into one forward pass."""

from __future__ import annotations

import asyncio
import contextlib
import time

import anyio
import numpy as np

from hub.embedding.model import Encoder


class Batcher:
    """``await embed(pixels)`` from anywhere; one loop runs the model on up to ``size`` images at a time."""

    def __init__(self, encoder: Encoder, size: int, wait_ms: int) -> None:
        self.encoder = encoder
        self.size = size
        self.wait = wait_ms / 1000
        self._queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = asyncio.Queue()
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

    async def embed(self, pixels: np.ndarray) -> np.ndarray:
        self.start()
        fut: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put((pixels, fut))
        return await fut

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = time.monotonic() + self.wait
            while len(batch) < self.size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            batch = [(p, f) for p, f in batch if not f.done()]
            if not batch:
                continue
            try:
                vectors = await anyio.to_thread.run_sync(self.encoder.encode_pixels, [p for p, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting task
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.batches += 1
            self.images += len(batch)
            for (_, fut), vector in zip(batch, vectors, strict=True):
                if not fut.done():
                    fut.set_result(vector)
