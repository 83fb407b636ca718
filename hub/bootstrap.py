"""The one composition root: every process (``hub serve``, ``hub worker``, ``hub import``…) is wired here, once.

``build(settings, role)`` makes the process's single ``Services`` — database sessions, media, plugins, the
secret box and the pipeline — and, except for a command-line job, the ``Runtime`` that is that pipeline:

- ``embedded``: ``hub serve`` with the in-memory broker: API, workers and the sweep in one process;
- ``api``: ``hub serve`` with Redis: the API sends tasks and loads only the text tower;
- ``worker``: ``hub worker``: consumes tasks, loads the image tower, runs the sweep schedule;
- ``cli``: a command that does its work in-process with no pipeline (``hub import``: a running service's sweep
  embeds what it adds).

``web_app`` builds the Litestar app on top of that; ``Hub.start``/``Hub.stop`` run and release it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from hub import heap
from hub.db.engine import create_engine, dispose, session_factory
from hub.db.sqlite_writes import holds_turn
from hub.domain.media import MediaStore
from hub.domain.pipeline import Pipeline
from hub.domain.secrets import SecretBox
from hub.domain import lexical, recent
from hub.domain.services import Services
from hub.foreground import Foreground
from hub.plugin_manager import Plugins, load_plugins
from hub.settings import Settings, old_names_in_use

if TYPE_CHECKING:  # (imported where used: a command-line job needs neither the web app nor the workers)
    from litestar import Litestar

    from hub.worker.runtime import Runtime

log = logging.getLogger("hub.bootstrap")

Role = Literal["embedded", "api", "worker", "cli"]


@dataclass
class Hub:
    """One process's wiring: its services, and the runtime behind its pipeline (None for ``cli``)."""

    settings: Settings
    engine: AsyncEngine
    services: Services
    runtime: Runtime | None
    intake_engine: AsyncEngine  # the webhook intake's own connections (``DeliveryInbox``)

    async def start(self) -> None:
        if self.services.pipeline is not None:
            await self.services.pipeline.start()
        heap.settle("started")  # (what a process keeps: its imports, app, pools; the model settles when loaded)

    async def stop(self) -> None:
        try:
            if self.services.pipeline is not None:
                await self.services.pipeline.stop()
        finally:
            await self.services.prompt_log.close()
            await dispose(self.engine)
            await dispose(self.intake_engine)


def serve_role(settings: Settings) -> Role:
    return "api" if settings.broker_is_redis else "embedded"


def build(settings: Settings, role: Role, *, plugins: Plugins | None = None,
          pipeline: Pipeline | None = None) -> Hub:
    """Wire one process. ``pipeline`` replaces the runtime (tests that watch what the API queues)."""
    for renamed in old_names_in_use():
        log.warning("a setting is set under its old name; it still works, rename it", extra={"setting": renamed})
    plugins = plugins if plugins is not None else load_plugins(settings.disabled_plugin_names)
    lexical.track_changes()
    recent.track_changes()
    engine = create_engine(settings.db_url)
    # webhooks are stored through connections of their own (never queued behind the pool's other users) whose
    # SQLite writes go before the others waiting (hub.db.sqlite_writes)
    intake_engine = create_engine(settings.db_url, urgent_writes=True, pool_size=2)
    services = Services(settings, session_factory(engine), MediaStore.for_settings(settings), plugins,
                        SecretBox(settings.secret_key), pipeline=None, intake=session_factory(intake_engine),
                        # the in-process workers (embedded) step aside while a webhook waits for its answer, unless
                        # they hold the turn to write SQLite that the webhook may be waiting for
                        foreground=Foreground(exempt=holds_turn))
    runtime = None
    if role != "cli" and pipeline is None:
        from hub.worker.runtime import Runtime

        runtime = Runtime(services, role)
    services.pipeline = pipeline if pipeline is not None else runtime
    return Hub(settings, engine, services, runtime, intake_engine)


def web_app(settings: Settings, *, plugins: Plugins | None = None, pipeline: Pipeline | None = None,
            auto_migrate: bool = False) -> Litestar:
    """``hub serve``'s application: the API over this process's services, started and stopped with it."""
    from hub.http.app import create_app

    hub = build(settings, serve_role(settings), plugins=plugins, pipeline=pipeline)
    return create_app(hub.services, start=hub.start, stop=hub.stop, auto_migrate=auto_migrate)
