"""``hub worker``: consume tasks from Redis (embedding, webhook deliveries, sync and import jobs) until
SIGTERM/SIGINT, then finish in-flight work."""

from __future__ import annotations

import asyncio
import logging
import signal

from hub.core.db import create_engine, dispose, session_factory
from hub.core.media import MediaStore
from hub.embedding.runtime import Runtime
from hub.plugins import load_plugins
from hub.settings import Settings

log = logging.getLogger("hub.worker")


async def run_worker(settings: Settings) -> None:
    engine = create_engine(settings.db_url)
    plugins = load_plugins(settings.disabled_plugin_names)
    runtime = Runtime(
        settings, session_factory(engine), MediaStore.for_settings(settings), role="worker", plugins=plugins
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start()
    log.info("worker started", extra={"concurrency": settings.worker_concurrency, "model": settings.model})
    try:
        await stop.wait()
    finally:
        log.info("worker stopping")
        await runtime.stop()
        await dispose(engine)
