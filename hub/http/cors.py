"""Cross-origin use of the storefront endpoints: the widget runs on the shop's own site and calls the hub with a
publishable key. Only the storefront paths answer browsers from other origins; which origins a shop allows is
decided per request, once the key says which shop it is (``hub.http.auth.check_origin``, run with every key's authentication)."""

from __future__ import annotations

import re
from litestar.types import ASGIApp, Message, Receive, Scope, Send

# what a publishable key may call from a browser: recommendations (by words or photo), similar images, an
# image's file
STOREFRONT_PATHS = re.compile(r"/api/v1/(?:recommendations(?:/by-photo)?|images/[0-9]+/(?:similar|file))/?")
ALLOWED_METHODS = b"GET, POST"
ALLOWED_HEADERS = b"authorization, content-type, x-api-key"
PREFLIGHT_MAX_AGE = b"600"


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value)
    return None


def cors_middleware(app: ASGIApp) -> ASGIApp:
    """Preflights of the storefront paths are answered here (for any origin: the shop, and so its allowed
    origins, is only known from the key on the request itself); their answers carry
    ``Access-Control-Allow-Origin`` for the calling origin, errors included, so the widget can show why. A shop's
    ``allowed_origins`` are enforced on the request (403), not by withholding headers."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        origin = _header(scope, b"origin") if scope["type"] == "http" else None
        if origin is None or not STOREFRONT_PATHS.fullmatch(scope["path"]):
            await app(scope, receive, send)
            return
        cors = [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method") is not None:
            await send({"type": "http.response.start", "status": 204, "headers": [
                *cors, (b"access-control-allow-methods", ALLOWED_METHODS),
                (b"access-control-allow-headers", ALLOWED_HEADERS),
                (b"access-control-max-age", PREFLIGHT_MAX_AGE)]})
            await send({"type": "http.response.body", "body": b""})
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *cors,
                                                  (b"access-control-expose-headers", b"Server-Timing")]}
            await send(message)

        await app(scope, receive, with_cors)

    return middleware
