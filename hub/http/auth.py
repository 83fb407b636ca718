"""Who is calling: API keys (hashed at rest), the operator token, and per-key rate limiting."""

from __future__ import annotations

import hmac
import ipaddress

from litestar import Controller, Request
from litestar.di import NamedDependency, Provide
from sqlalchemy.ext.asyncio import AsyncSession

from hub.domain.origins import origin_of

from hub.http.deps import Db
from hub.errors import Forbidden, Unauthenticated
from hub.domain.keys import KnownKey, Principal, find_key, hash_key, mark_used

def key_from_headers(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        raise Unauthenticated("Authorization header must be 'Bearer <key>'")
    return request.headers.get("x-api-key") or None


def client_address(request: Request) -> str:
    """Who is calling, for per-address limits: the IP address, or its /64 for IPv6 (one subscriber's block)."""
    host = request.client.host if request.client else "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and not ip.ipv4_mapped:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)


async def _failed(request: Request, detail: str) -> Unauthenticated:
    """Count a failed authentication against the caller's address: the error to raise — 429 once the address
    has failed too often (HUB_AUTH_FAILURE_LIMIT). Valid credentials are never refused for their address: a
    page elsewhere that makes shoppers' browsers send bad keys must not lock them out of a storefront."""
    state = request.app.state
    await state.limiter.hit(state.auth_failure_limits, "auth-failure", client_address(request))
    return Unauthenticated(detail)


async def authenticate(
    request: Request, session: AsyncSession, raw: str | None, *, secret_only: bool
) -> Principal:
    """Resolve a raw key to a principal, or raise 401/403/429. Touches ``last_used_at`` at most once a minute.
    A key that authenticated in the last ``HUB_QUERY_CACHE_SECONDS`` is not read again (``hub.domain.keys.key_cache``).

    Failed attempts are counted per client address (HUB_AUTH_FAILURE_LIMIT): past the limit, a failure is a
    429 instead of a 401.
    """
    if not raw:
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    state = request.app.state
    keys, digest = state.services.keys, hash_key(raw)
    async def load() -> KnownKey | None:
        row = await find_key(session, raw)
        return None if row is None else KnownKey.of(row)

    known = await keys.read(digest, load)
    if known is None:
        raise await _failed(request, "invalid API key")
    if known.revoked:
        raise await _failed(request, "this API key has been revoked")
    if secret_only and known.kind != "secret":
        raise Forbidden("this endpoint needs a secret key (hub_sk_…); publishable keys only get recommendations")
    check_origin(request, known.kind, list(known.allowed_origins))
    await state.limiter.hit(state.key_limits, "key", str(known.id))
    if known.kind == "publishable":  # a storefront key: one shopper's address cannot use up the shop's allowance
        await state.limiter.hit(state.storefront_limits, "storefront", f"{known.id}:{client_address(request)}")
    used = await mark_used(session, known)
    if used is not known:
        keys.replace(digest, known, used)  # (never puts back an entry emptied meanwhile)
    return Principal(shop_id=known.shop_id, key_id=known.id, kind=known.kind)


def check_origin(request: Request, kind: str, allowed: list[str] | None) -> None:
    """A browser on another site (its ``Origin``) may call with a publishable key only, and only from the sites
    the shop lists in ``allowed_origins`` (any site while the list is empty). The key's row brings its shop along,
    so this costs no query."""
    sent = request.headers.get("origin")
    if sent is None:
        return
    origin = origin_of(sent) or sent
    if origin == origin_of(request.app.state.services.settings.public_url):
        return  # the hub's own pages
    if kind == "secret":
        raise Forbidden(f"a secret key was sent from a web page ({origin[:200]}); it must never be in a browser: "
                        "revoke it and use a publishable key (hub_pk_…)")
    if allowed and origin not in allowed:
        raise Forbidden(f"this shop's publishable key is not allowed on {origin[:200]}; the shop lists its sites "
                        "in allowed_origins (PATCH /api/v1/shop)")


async def require_secret_key(request: Request, db: Db) -> Principal:
    return await authenticate(request, db, key_from_headers(request), secret_only=True)


async def require_any_key(request: Request, db: Db) -> Principal:
    return await authenticate(request, db, key_from_headers(request), secret_only=False)


async def require_operator(request: Request) -> None:
    """The operator API takes ``Authorization: Bearer $HUB_ADMIN_TOKEN``; it is off while that is unset."""
    token = request.app.state.services.settings.admin_token
    if not token:
        raise Forbidden("the operator API is disabled: set HUB_ADMIN_TOKEN")
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise await _failed(request, "missing or wrong operator token")


SECRET_KEY = Provide(require_secret_key)
ANY_KEY = Provide(require_any_key)
Caller = NamedDependency[Principal]


class SecretKeyController(Controller):
    """Routes of a shop's back office: a secret key (hub_sk_…) only, never a publishable one. (Declared on each
    controller rather than on a ``Router`` around them: Litestar deep-copies a router it registers, every route
    handler in it, and that was a quarter of building the app.)"""

    dependencies = {"principal": SECRET_KEY}
    security = [{"bearer": []}]
