"""``/health`` (the process answers) and ``/ready`` (every dependency answers)."""

from __future__ import annotations

from typing import Any

import anyio
from litestar import Request, Response, get
from sqlalchemy import text

from hub import __version__
from hub.core.connections import stale_webhook_connections
from hub.core.db import current_revision, head_revision


@get("/health", tags=["ops"])
async def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


async def _database(request: Request) -> str:
    try:
        with anyio.fail_after(5):
            async with request.app.state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                revision = await conn.run_sync(current_revision)
    except Exception as exc:  # noqa: BLE001 - readiness reports, never raises
        return f"unreachable ({type(exc).__name__})"
    head = head_revision()
    return "ok" if revision == head else f"schema at {revision}, expected {head}: run 'hub migrate'"


@get("/ready", tags=["ops"])
async def ready(request: Request) -> Response[dict[str, Any]]:
    state = request.app.state
    checks: dict[str, str] = {"database": await _database(request)}
    checks["media"] = "ok" if await anyio.to_thread.run_sync(state.media.writable) else "not writable"
    checks.update(await state.pipeline.readiness())
    ok = all(v == "ok" for v in checks.values())
    plugins = [{k: p[k] for k in ("name", "version", "connectors", "importers")} for p in state.plugins.loaded]
    return Response(
        {"status": "ready" if ok else "not ready", "checks": checks, "warnings": await _warnings(request),
         "plugins": plugins},
        status_code=200 if ok else 503,
    )


async def _warnings(request: Request) -> list[str]:
    """What an operator should act on though the service can serve (it does not make /ready fail)."""
    try:
        stale = await stale_webhook_connections(request.app.state.services)
    except Exception:  # noqa: BLE001 - readiness reports, never raises
        return []
    if not stale:
        return []
    return [f"{len(stale)} connection(s) have webhooks at an old HUB_PUBLIC_URL; the workers are moving them to "
            f"{request.app.state.settings.public_url} (connections {', '.join(map(str, stale[:50]))})"]
