"""The Litestar application: wiring of settings, database, media, rate limits, pipeline and routes."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy.ext.asyncio import AsyncSession

from hub import __version__
from hub.core.auth import SECRET_KEY
from hub.core.compat import ImageCollectionController
from hub.core.connections import ConnectionController, stale_webhook_connections
from hub.core.db import create_engine, dispose, migrate, session_factory
from hub.core.errors import EXCEPTION_HANDLERS
from hub.core.health import health, ready
from hub.core.images import ImageController
from hub.core.imports import ImportController
from hub.core.jobs import JobController
from hub.core.keys import KeyController
from hub.core.media import MediaStore
from hub.core.oauth import OAuthCallbackController, OAuthStartController
from hub.core.pipeline import Pipeline
from hub.core.ratelimit import RateLimiter, parse_limits
from hub.core.recommendations import (
    LegacyRecommendationController,
    PromptController,
    RecommendationController,
)
from hub.core.secrets import SecretBox
from hub.core.services import Services
from hub.core.shops import OperatorController, ShopController, SignupController
from hub.core.taxonomy import AgeGroupController, CategoryController, StyleController
from hub.core.webhooks import WebhookController
from hub.plugins import Plugins, load_plugins
from hub.settings import Settings

access_log = logging.getLogger("hub.access")
log = logging.getLogger("hub.app")
BODY_OVERHEAD = 1024 * 1024  # multipart framing and form fields around the file


async def provide_db(state: State) -> AsyncIterator[AsyncSession]:
    async with state.sessions() as session:
        yield session


def access_log_middleware(app: ASGIApp) -> ASGIApp:
    """One log line per request: method, path (never the query string), status, duration."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        finally:
            access_log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "ms": round((time.perf_counter() - start) * 1000, 1),
                },
            )

    return middleware


async def _warn_about_moved_webhooks(services: Services) -> None:
    """Loudly, at start-up: connections whose platform still delivers to an old HUB_PUBLIC_URL."""
    try:
        stale = await stale_webhook_connections(services)
    except Exception:  # noqa: BLE001 - the database may not be there yet; /ready says so
        return
    if stale:
        log.warning("HUB_PUBLIC_URL changed: these connections' webhooks point at the old URL; the workers "
                    "re-register them (see /ready and each connection's webhooks field)",
                    extra={"connections": stale, "public_url": services.settings.public_url})


def create_app(
    settings: Settings,
    *,
    pipeline: Pipeline | None = None,
    plugins: Plugins | None = None,
    auto_migrate: bool = False,
) -> Litestar:
    """Build the API. ``auto_migrate`` applies migrations at start-up (the embedded default does)."""
    plugins = plugins or load_plugins(settings.disabled_plugin_names)
    engine = create_engine(settings.db_url)
    sessions = session_factory(engine)
    media = MediaStore.for_settings(settings)
    if pipeline is None:
        from hub.embedding.runtime import Runtime

        role = "api" if settings.broker_is_redis else "embedded"
        pipeline = Runtime(settings, sessions, media, role=role, plugins=plugins)
    state = State(
        {
            "settings": settings,
            "engine": engine,
            "sessions": sessions,
            "media": media,
            "limiter": RateLimiter(settings.rate_limit_storage_url),
            "key_limits": parse_limits(settings.rate_limit),
            "signup_limits": parse_limits(settings.signup_rate_limit),
            "auth_failure_limits": parse_limits(settings.auth_failure_limit),
            "pipeline": pipeline,
            "plugins": plugins,
            "services": Services(settings, sessions, media, plugins, SecretBox(settings.secret_key), pipeline),
        }
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if auto_migrate:
            await migrate(settings.db_url)
        settings.media_dir.mkdir(parents=True, exist_ok=True)
        await _warn_about_moved_webhooks(app.state.services)
        await app.state.pipeline.start()
        try:
            yield
        finally:
            await app.state.pipeline.stop()
            await dispose(engine)

    secret_routes = Router(
        path="/",
        route_handlers=[
            ShopController,
            KeyController,
            CategoryController,
            StyleController,
            AgeGroupController,
            ImageController,
            PromptController,
            ConnectionController,
            OAuthStartController,
            JobController,
            ImportController,
        ],
        dependencies={"principal": SECRET_KEY},
        security=[{"bearer": []}],
    )
    openapi = OpenAPIConfig(
        title="Fashion Hub",
        version=__version__,
        description="Text-to-image product recommendations for clothing shops (FashionCLIP).",
        path="/schema",
        render_plugins=[SwaggerRenderPlugin(path="/")],
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer", description="hub_sk_… or hub_pk_… key"),
            }
        ),
    )
    handlers: list[Any] = [
        health,
        ready,
        secret_routes,
        OperatorController,
        SignupController,
        ImageCollectionController,
        RecommendationController,
        LegacyRecommendationController,
        WebhookController,
        OAuthCallbackController,
        *plugins.routes(),
    ]
    return Litestar(
        route_handlers=handlers,
        dependencies={"db": Provide(provide_db)},
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        middleware=[access_log_middleware],
        openapi_config=openapi,
        state=state,
        lifespan=[lifespan],
        request_max_body_size=settings.max_upload_bytes + BODY_OVERHEAD,
        debug=False,
        logging_config=None,
    )
