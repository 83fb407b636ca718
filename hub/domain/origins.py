"""Web origins (``scheme://host[:port]``): where a shop lets its publishable key be used from a browser."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from hub.errors import Invalid

DEFAULT_PORTS = {"http": 80, "https": 443}
_PORT = r"(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# an origin a shop may list: http(s), a host name or IPv4 address, an optional port, nothing after (a trailing
# "/" is forgiven); the same pattern in the API schema and here
ORIGIN_PATTERN = rf"^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::{_PORT})?/?$"
MAX_ALLOWED_ORIGINS = 50


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` as browsers send it in ``Origin`` (lower case, no default port), or None."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != DEFAULT_PORTS[parts.scheme] else "")


def check_origins(values: list[str]) -> list[str]:
    """A shop's allowed origins, normalised and deduplicated; ``Invalid`` for anything that is not an origin
    (a path, a query, credentials or a wildcard: browsers send exact origins, so the list names exact sites)."""
    if len(values) > MAX_ALLOWED_ORIGINS:
        raise Invalid(f"at most {MAX_ALLOWED_ORIGINS} allowed origins")
    found: list[str] = []
    for value in values:
        origin = origin_of(value) if re.fullmatch(ORIGIN_PATTERN, value) else None
        if origin is None:
            raise Invalid(f"{value[:200]!r} is not an origin: give scheme://host[:port], like https://shop.example")
        if origin not in found:
            found.append(origin)
    return found
