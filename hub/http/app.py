"""The Litestar application: wiring of settings, database, media, rate limits, pipeline and routes."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy.ext.asyncio import AsyncSession

from hub import __version__
from hub.http.routes.compat import ImageCollectionController, LegacyRecommendationController
from hub.domain.connections import stale_webhook_connections
from hub.http.routes.connections import ConnectionController
from hub.db.engine import migrate
from hub.http.console import ConsoleController
from hub.http.console.search import SearchSettingsController
from hub.http.cors import cors_middleware
from hub.http.errors import EXCEPTION_HANDLERS
from hub.http.routes.plugin_routes import plugin_handler
from hub.http.openapi import ErrorResponses, ForbidExtraFields
from hub.http.routes.health import health, ready
from hub.http.routes.metrics import metrics
from hub.http.routes.widget import widget_script
from hub.http.routes.images import ImageController
from hub.http.routes.imports import ImportController
from hub.http.routes.jobs import JobController
from hub.http.routes.keys import KeyController
from hub.http.routes.oauth import OAuthCallbackController, OAuthStartController
from hub.http.ratelimit import RateLimiter, parse_limits
from hub.http.routes.recommendations import PromptController, RecommendationController
from hub.http.routes.rules import RuleController
from hub.domain.services import Services
from hub.http.routes.shops import OperatorController, ShopController, SignupController
from hub.http.routes.taxonomy import AgeGroupController, CategoryController, StyleController
from hub.http.routes.webhooks import WebhookController

access_log = logging.getLogger("hub.access")
log = logging.getLogger("hub.app")
BODY_OVERHEAD = 1024 * 1024  # multipart framing and form fields around the file
# hub_http_requests_total, hub_http_request_duration_seconds…: labelled by route template, never by raw path
HTTP_METRICS = PrometheusConfig(app_name="hub", prefix="hub_http", group_path=True, exclude=["^/metrics$"],
                                exclude_unhandled_paths=True)


async def provide_db(state: State) -> AsyncIterator[AsyncSession]:
    async with state.services.sessions() as session:
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
    services: Services,
    *,
    start: Callable[[], Awaitable[None]],
    stop: Callable[[], Awaitable[None]],
    auto_migrate: bool = False,
) -> Litestar:
    """The API over one process's services (``hub.bootstrap`` builds them); ``start``/``stop`` run with the
    app's lifespan. ``auto_migrate`` applies migrations at start-up (the embedded default does)."""
    settings = services.settings
    state = State(
        {
            "services": services,
            "limiter": RateLimiter(settings.rate_limit_storage_url),
            "key_limits": parse_limits(settings.rate_limit),
            "signup_limits": parse_limits(settings.signup_rate_limit),
            "storefront_limits": parse_limits(settings.storefront_rate_limit),
            "auth_failure_limits": parse_limits(settings.auth_failure_limit),
        }
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if auto_migrate:
            await migrate(settings.db_url)
        settings.media_dir.mkdir(parents=True, exist_ok=True)
        await _warn_about_moved_webhooks(services)
        await start()
        try:
            yield
        finally:
            await stop()

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
        metrics,
        widget_script,
        # a shop's back office (``SecretKeyController``: a secret key only)
        ShopController,
        KeyController,
        CategoryController,
        StyleController,
        AgeGroupController,
        ImageController,
        PromptController,
        RuleController,
        ConnectionController,
        OAuthStartController,
        JobController,
        ImportController,
        OperatorController,
        SignupController,
        ImageCollectionController,
        RecommendationController,
        LegacyRecommendationController,
        WebhookController,
        OAuthCallbackController,
        ConsoleController,
        SearchSettingsController,
        *(plugin_handler(plugin, plugin_route) for plugin, plugin_route in services.plugins.routes()),
    ]
    app = Litestar(
        route_handlers=handlers,
        dependencies={"db": Provide(provide_db), "services": Provide(lambda: services, use_cache=True,
                                                                     sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        middleware=[access_log_middleware, HTTP_METRICS.middleware, cors_middleware],
        openapi_config=openapi,
        plugins=[ErrorResponses(), ForbidExtraFields()],
        state=state,
        lifespan=[lifespan],
        request_max_body_size=settings.max_upload_bytes + BODY_OVERHEAD,
        debug=False,
        logging_config=None,
    )
    return app
