"""``hub worker``: consume tasks from Redis (embedding, webhook deliveries, sync and import jobs) until
SIGTERM/SIGINT, then finish in-flight work."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

from hub.settings import Settings

log = logging.getLogger("hub.worker")


class Process(Protocol):
    """A wired process (``hub.bootstrap.Hub``): started, then stopped."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def run_worker(settings: Settings, process: Process) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await process.start()
    log.info("worker started", extra={"concurrency": settings.worker_concurrency, "model": settings.model})
    try:
        await stop.wait()
    finally:
        log.info("worker stopping")
        await process.stop()
