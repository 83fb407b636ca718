"""What can go wrong, in the hub's own words: domain code raises these, and each interface says them its way
(the HTTP API maps each kind to one status in ``hub.http.errors``; the CLI prints the detail; a worker records
it on the image or job). Nothing here knows about HTTP."""

from __future__ import annotations

from typing import Any


class HubError(Exception):
    """A failure the caller can act on: ``detail`` says what went wrong in a sentence, ``extra`` carries
    machine-readable details (an existing image's id, the field at fault)."""

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}


class Invalid(HubError):
    """The input is malformed or out of range (a cursor that was never issued, a file that is not a manifest)."""


class Unprocessable(HubError):
    """The input is well-formed but cannot be used: settings the platform rejects, a category that does not
    exist in this shop, an image URL the hub may not fetch."""


class Unauthenticated(HubError):
    """No credentials, or credentials that are wrong or revoked."""


class Forbidden(HubError):
    """Valid credentials of a kind that may not do this (a publishable key writing, a disallowed origin)."""


class NotFound(HubError):
    """The object does not exist — or belongs to another shop, which looks the same from outside."""


class Conflict(HubError):
    """The object's state does not allow it now (a sync already running, an image uploaded before)."""


class TooLarge(HubError):
    """More bytes, pixels, rows or objects than a limit allows."""


class UnsupportedMedia(HubError):
    """A file of a kind the hub does not read (not an image, an unknown import format)."""


class RateLimited(HubError):
    """Too many requests or failures; ``retry_after`` is the number of seconds until the next is allowed."""

    def __init__(self, detail: str, *, retry_after: int, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail, extra=extra)
        self.retry_after = retry_after


class PlatformFailed(HubError):
    """A store's platform answered, but too slowly, with too much, or with something that cannot be read."""


class Unavailable(HubError):
    """A service the hub needs (database, broker, vector store, model, mail) is down: try again shortly."""

    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(detail)
        self.dependency = dependency

    def __str__(self) -> str:
        return f"{self.dependency}: {self.detail}"


def not_found(what: str, ident: object) -> NotFound:
    return NotFound(f"{what} {ident} not found")


def validation_detail(exc: Any) -> str:
    """A pydantic ``ValidationError`` as one line: ``field: problem; other: problem``."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
