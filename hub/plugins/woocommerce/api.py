"""The WooCommerce REST API v3 as the connector uses it: authentication by scheme, retries, pagination."""

from __future__ import annotations

import base64
import logging
from typing import Any

import httpx
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA256, SIGNATURE_TYPE_QUERY, Client
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential

from hub.connectors import ConnectorError

log = logging.getLogger("hub.plugins.woocommerce")
ATTEMPTS = 5


class Retryable(Exception):
    """A 429 or 5xx: try again after a while."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _wait(exponential: wait_exponential) -> Any:
    """Backoff, but never shorter than the server's ``Retry-After``."""

    def wait(state: RetryCallState) -> float:
        delay = exponential(state)
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, Retryable):
            try:
                delay = max(delay, min(float(error.response.headers.get("Retry-After", 0)), 60.0))
            except ValueError:
                pass
        return delay

    return wait


class StoreApi:
    """``{store}/wp-json/wc/v3``. Over HTTPS: HTTP Basic, falling back to query-string keys when the server
    strips the Authorization header. Over plain HTTP: OAuth 1.0a one-legged signatures (WooCommerce refuses
    keys in clear there)."""

    def __init__(self, http: httpx.AsyncClient, store_url: str, key: str, secret: str, auth: str = "auto",
                 retry_wait: float = 0.5) -> None:
        self.http = http
        self.base = f"{store_url.rstrip('/')}/wp-json/wc/v3"
        self.key, self.secret = key, secret
        self.https = store_url.lower().startswith("https://")
        self.mode = auth if auth != "auto" else ("basic" if self.https else "oauth1")
        self.fallback = auth == "auto" and self.https
        self.retry_wait = retry_wait

    def _request(self, method: str, path: str, params: dict[str, Any], body: Any) -> httpx.Request:
        url = httpx.URL(f"{self.base}{path}", params={k: str(v) for k, v in params.items()})
        headers = {"Accept": "application/json"}
        if self.mode == "basic":
            token = base64.b64encode(f"{self.key}:{self.secret}".encode()).decode()
            return self.http.build_request(method, url, json=body, headers=headers | {"Authorization": f"Basic {token}"})
        if self.mode == "query":
            url = url.copy_merge_params({"consumer_key": self.key, "consumer_secret": self.secret})
            return self.http.build_request(method, url, json=body, headers=headers)
        signer = Client(self.key, client_secret=self.secret, signature_method=SIGNATURE_HMAC_SHA256,
                        signature_type=SIGNATURE_TYPE_QUERY)
        signed, _, _ = signer.sign(str(url), http_method=method)
        return self.http.build_request(method, signed, json=body, headers=headers)

    async def _send(self, method: str, path: str, params: dict[str, Any], body: Any) -> httpx.Response:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(ATTEMPTS), reraise=True,
            wait=_wait(wait_exponential(multiplier=self.retry_wait, max=30)),
            retry=retry_if_exception(lambda e: isinstance(e, Retryable | httpx.TransportError)),
        ):
            with attempt:
                resp = await self.http.send(self._request(method, path, params, body))
                if resp.status_code == 429 or resp.status_code >= 500:
                    raise Retryable(resp)
        return resp

    async def call(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None) -> httpx.Response:
        try:
            resp = await self._send(method, path, params or {}, body)
        except Retryable as exc:
            exc.response.raise_for_status()
            raise
        if resp.status_code == 401 and self.fallback and self.mode == "basic":
            log.info("Authorization header refused or stripped; trying query-string keys")
            self.mode = "query"
            resp = await self._send(method, path, params or {}, body)
        if resp.status_code in (401, 403):
            raise ConnectorError(self._auth_problem(resp))
        if resp.status_code == 404 and _code(resp) in ("", "rest_no_route"):
            raise ConnectorError(
                f"no WooCommerce REST API at {self.base}: is this a WordPress store with WooCommerce, and are "
                "pretty permalinks on (WordPress → Settings → Permalinks, anything but \"Plain\")?")
        return resp

    def _auth_problem(self, resp: httpx.Response) -> str:
        code = _code(resp)
        message = _message(resp)
        if code in ("woocommerce_rest_cannot_view", "woocommerce_rest_cannot_create", "woocommerce_rest_cannot_delete"):
            return (f"WooCommerce says the keys may not do this ({message}): give the REST API key Read access "
                    "to import, Read/Write to let the hub create its webhooks")
        return f"WooCommerce refused the consumer key and secret ({message or f'HTTP {resp.status_code}'})"


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _code(resp: httpx.Response) -> str:
    body = _json(resp)
    return str(body.get("code", "")) if isinstance(body, dict) else ""


def _message(resp: httpx.Response) -> str:
    body = _json(resp)
    return str(body.get("message", ""))[:300] if isinstance(body, dict) else ""
