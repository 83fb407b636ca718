"""The Shopify GraphQL Admin API as the connector uses it: cost-based throttling, 429s and errors handled."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from hub.connectors import ConnectorError

log = logging.getLogger("hub.plugins.shopify")
MAX_ATTEMPTS = 8
MAX_WAIT = 60.0


class AdminApi:
    """One shop's GraphQL Admin endpoint. Waits when throttled instead of failing."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, api_version: str, access_token: str,
                 shop_domain: str) -> None:
        self.http = http
        self.url = f"{base_url.rstrip('/')}/admin/api/{api_version}/graphql.json"
        self.headers = {"X-Shopify-Access-Token": access_token, "Content-Type": "application/json"}
        self.shop_domain = shop_domain
        self.throttle: dict[str, float] | None = None  # the last throttleStatus Shopify reported

    async def _wait_for(self, cost: float) -> None:
        """Before a query: if the bucket cannot pay for it, wait for it to refill (restoreRate points/s)."""
        status = self.throttle
        if status and cost > status.get("currentlyAvailable", cost):
            rate = max(float(status.get("restoreRate") or 50), 1.0)
            await asyncio.sleep(min((cost - status["currentlyAvailable"]) / rate, MAX_WAIT))

    async def query(self, query: str, variables: dict[str, Any] | None = None, cost: float = 0) -> dict[str, Any]:
        await self._wait_for(cost)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            # never followed: a redirect would carry the access token (a custom header) to another host
            resp = await self.http.post(self.url, json={"query": query, "variables": variables or {}},
                                        headers=self.headers, follow_redirects=False)
            if resp.status_code == 429:
                delay = _retry_after(resp, default=2.0)
                log.info("shopify rate limit; waiting", extra={"seconds": delay, "shop": self.shop_domain})
                await asyncio.sleep(delay)
                continue
            if resp.status_code in (401, 403):
                raise ConnectorError(f"Shopify refused the Admin API access token for {self.shop_domain} "
                                     f"(HTTP {resp.status_code}): check the token of your custom app")
            if resp.status_code == 404:
                raise ConnectorError(f"no Shopify Admin API answers at {self.shop_domain} "
                                     "(HTTP 404): check the shop domain and the API version")
            if resp.status_code >= 500:
                if attempt == MAX_ATTEMPTS:
                    resp.raise_for_status()
                await asyncio.sleep(min(0.5 * 2 ** attempt, MAX_WAIT))
                continue
            try:
                body = resp.json()
            except ValueError:
                raise ConnectorError(f"{self.shop_domain} did not answer with JSON: is it a Shopify store?") from None
            cost_info = (body.get("extensions") or {}).get("cost") or {}
            if cost_info.get("throttleStatus"):
                self.throttle = cost_info["throttleStatus"]
            errors = body.get("errors")
            if errors:
                if isinstance(errors, list) and any(
                        (e.get("extensions") or {}).get("code") == "THROTTLED" for e in errors):
                    needed = float(cost_info.get("requestedQueryCost") or cost or 1)
                    await self._wait_for(needed)
                    if not self.throttle:
                        await asyncio.sleep(1.0)
                    continue
                raise ConnectorError(f"Shopify answered: {_messages(errors)}")
            return body.get("data") or {}
        raise httpx.HTTPStatusError("Shopify kept throttling", request=resp.request, response=resp)


def _retry_after(resp: httpx.Response, default: float) -> float:
    try:
        return min(max(float(resp.headers.get("Retry-After", default)), 0.0), MAX_WAIT)
    except ValueError:
        return default


def _messages(errors: Any) -> str:
    if isinstance(errors, str):
        return errors
    if isinstance(errors, list):
        return "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors)[:500]
    return str(errors)[:500]


def user_errors(result: dict[str, Any]) -> str | None:
    errors = result.get("userErrors") or []
    return "; ".join(e.get("message", "") for e in errors) or None
