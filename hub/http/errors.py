"""JSON errors: every failure answers ``{"status", "error", "detail"}`` and never a stack trace. Domain code\nraises ``hub.errors``; this module alone says which HTTP status each kind is."""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR, HTTP_503_SERVICE_UNAVAILABLE
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from hub.errors import (
    Conflict,
    Forbidden,
    HubError,
    Invalid,
    NotFound,
    PlatformFailed,
    RateLimited,
    TooLarge,
    Unauthenticated,
    Unavailable,
    Unprocessable,
    UnsupportedMedia,
)

log = logging.getLogger("hub.errors")

ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}


# The one table from what went wrong to the HTTP status that says it (the most specific class wins).
STATUS_OF: dict[type[HubError], int] = {
    Invalid: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    UnsupportedMedia: 415,
    Unprocessable: 422,
    RateLimited: 429,
    PlatformFailed: 502,
    Unavailable: 503,
}


def status_of(exc: HubError) -> int:
    return next((STATUS_OF[kind] for kind in type(exc).__mro__ if kind in STATUS_OF), 400)


def _body(status: int, detail: str, extra: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status, "error": ERROR_CODES.get(status, "error"), "detail": detail}
    if extra:
        body["extra"] = extra
    return body


def http_exception_handler(_: Request, exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    detail = exc.detail
    extra = exc.extra
    if isinstance(exc, ValidationException):
        detail = "invalid request: " + "; ".join(
            f"{e.get('key') or e.get('source') or 'body'}: {e.get('message')}"
            for e in (extra if isinstance(extra, list) else [])
        ) or detail
    return Response(
        _body(status, detail, extra),
        status_code=status,
        media_type=MediaType.JSON,
        headers=exc.headers,
    )


def hub_error_handler(request: Request, exc: HubError) -> Response[dict[str, Any]]:
    if isinstance(exc, Unavailable):
        return dependency_handler(request, exc)
    status = status_of(exc)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    return Response(_body(status, exc.detail, exc.extra), status_code=status, media_type=MediaType.JSON,
                    headers=headers)


def dependency_handler(request: Request, exc: Exception) -> Response[dict[str, Any]]:
    if isinstance(exc, Unavailable):
        detail = f"{exc.dependency} unavailable: {exc.detail}"
    else:
        detail = "database unavailable; retry shortly"
    log.warning("dependency unavailable", extra={"path": request.url.path, "reason": type(exc).__name__})
    return Response(
        _body(HTTP_503_SERVICE_UNAVAILABLE, detail),
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
        media_type=MediaType.JSON,
        headers={"Retry-After": "5"},
    )


def unexpected_handler(request: Request, exc: Exception) -> Response[dict[str, Any]]:
    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeoutError, ConnectionError)):
        return dependency_handler(request, exc)
    if isinstance(exc, UnicodeDecodeError | RecursionError):
        # what the framework's body decoding lets through for bytes that are not UTF-8, or JSON nested too deep
        log.info("undecodable request body", extra={"path": request.url.path, "reason": type(exc).__name__})
        return Response(_body(400, "the request body is not valid JSON text (UTF-8, nested at most a few hundred "
                                   "levels deep)"), status_code=400, media_type=MediaType.JSON)
    log.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
    return Response(
        _body(HTTP_500_INTERNAL_SERVER_ERROR, "internal error; it has been logged"),
        status_code=HTTP_500_INTERNAL_SERVER_ERROR,
        media_type=MediaType.JSON,
    )


EXCEPTION_HANDLERS = {
    HTTPException: http_exception_handler,
    HubError: hub_error_handler,
    OperationalError: dependency_handler,
    InterfaceError: dependency_handler,
    PoolTimeoutError: dependency_handler,
    ConnectionError: dependency_handler,
    Exception: unexpected_handler,
}
