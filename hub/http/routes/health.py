"""``/health`` (the process answers) and ``/ready`` (every dependency answers)."""

from __future__ import annotations

from typing import Any, TypedDict

from litestar import Response, get
from litestar.openapi import ResponseSpec

from hub import __version__
from hub.domain.connections import stale_webhook_connections
from hub.domain.health import database_status
from hub.domain.reindex import recent_build_statuses
from hub.domain.services import Services
from hub.http.deps import Svc


class HealthOut(TypedDict):
    status: str
    version: str


class PluginOut(TypedDict):
    name: str
    version: str | None
    connectors: list[str]
    importers: list[str]


class BuildOut(TypedDict):
    """A model ``hub reindex`` builds beside the active one: ``state`` is building, built (every shop with images
    built; ``hub reindex --switch`` may make it active) or incomplete (a shop's build failed: ``hub reindex --model`` again);
    ``progress`` the share of images done. Which model, and the counts, are the operator's: ``hub reindex``
    (this document is public)."""

    state: str
    progress: float


class ReadyOut(TypedDict):
    """``checks``: each dependency, "ok" or what is wrong (503 unless all are ok); ``warnings``: what an
    operator should act on though the service can serve; ``builds``: models being built (``hub reindex``)."""

    status: str
    checks: dict[str, str]
    warnings: list[str]
    plugins: list[PluginOut]
    builds: list[BuildOut]


@get("/health", tags=["ops"])
async def health() -> HealthOut:
    return {"status": "ok", "version": __version__}


@get("/ready", tags=["ops"], responses={503: ResponseSpec(
    data_container=ReadyOut, generate_examples=False,
    description="Not ready: a check is not \"ok\" (a dependency down, the model still loading); the body says which")})
async def ready(services: Svc) -> Response[ReadyOut]:
    checks: dict[str, str] = {"database": await database_status(services.sessions)}
    checks["media"] = await services.media.check()
    if services.pipeline is not None:
        checks.update(await services.pipeline.readiness())
    ok = all(v == "ok" for v in checks.values())
    plugins: list[Any] = [{k: p[k] for k in ("name", "version", "connectors", "importers")}
                          for p in services.plugins.loaded]
    body: ReadyOut = {"status": "ready" if ok else "not ready", "checks": checks,
                      "warnings": await _warnings(services), "plugins": plugins, "builds": await _builds(services)}
    return Response(body, status_code=200 if ok else 503)


async def _builds(services: Services) -> list[BuildOut]:
    try:
        found = await recent_build_statuses(services)
    except Exception:  # noqa: BLE001 - readiness reports, never raises (the database check says what is wrong)
        return []
    return [{"state": b.progress,
             "progress": round((b.done + b.failed) / b.total, 4) if b.total else (1.0 if b.finished else 0.0)}
            for b in found]


async def _warnings(services: Services) -> list[str]:
    """What an operator should act on though the service can serve (it does not make /ready fail)."""
    found = services.pipeline.model_warnings() if services.pipeline is not None else []
    try:
        stale = await stale_webhook_connections(services)
    except Exception:  # noqa: BLE001 - readiness reports, never raises
        return found
    if not stale:
        return found
    return [*found, f"{len(stale)} connection(s) have webhooks at an old HUB_PUBLIC_URL; the workers are moving them to "
            f"{services.settings.public_url} (connections {', '.join(map(str, stale[:50]))})"]
