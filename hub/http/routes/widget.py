"""``GET /widget.js``: the storefront search widget a shop embeds on its own site (``hub/http/static``)."""

from __future__ import annotations

import hashlib
from importlib.resources import files

from litestar import Request, Response, get

WIDGET = files("hub.http").joinpath("static/widget.js").read_bytes()
WIDGET_ETAG = '"' + hashlib.sha256(WIDGET).hexdigest()[:32] + '"'


@get("/widget.js", include_in_schema=False, media_type="text/javascript")
async def widget_script(request: Request) -> Response[bytes]:
    """The widget (no dependencies): cached by browsers for five minutes, then revalidated by its ETag."""
    headers = {"ETag": WIDGET_ETAG, "Cache-Control": "public, max-age=300",
               "Cross-Origin-Resource-Policy": "cross-origin", "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == WIDGET_ETAG:
        return Response(b"", status_code=304, headers=headers)
    return Response(WIDGET, headers=headers, media_type="text/javascript; charset=utf-8")
