"""Rate limits (per API key, per client address) on the ``limits`` library; memory or Redis storage."""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse_many
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from hub.errors import HubError, RateLimited

log = logging.getLogger("hub.ratelimit")


class RateLimiter:
    """Checks hits against one or more limits; fails open (logged) when its storage is down."""

    def __init__(self, storage_url: str) -> None:
        if storage_url.startswith(("redis://", "rediss://")):
            self.storage = storage_from_string(
                "async+" + storage_url, implementation="redispy", key_prefix="hub-ratelimit"
            )
        else:
            self.storage = storage_from_string("async+" + storage_url)
        self.strategy = MovingWindowRateLimiter(self.storage)

    async def hit(self, limits: list[RateLimitItem], *identifiers: str) -> None:
        """Count one hit; raise 429 with ``Retry-After`` when any limit is exhausted."""
        for item in limits:
            try:
                allowed = await self.strategy.hit(item, *identifiers)
                if allowed:
                    continue
                stats = await self.strategy.get_window_stats(item, *identifiers)
            except HubError:
                raise
            except Exception as exc:  # storage down: availability beats limiting
                log.warning("rate limit storage unavailable", extra={"reason": type(exc).__name__})
                return
            retry_after = max(1, math.ceil(stats.reset_time - time.time()))
            raise RateLimited(f"rate limit of {item} exceeded; retry in {retry_after} s", retry_after=retry_after)


def parse_limits(text: str) -> list[RateLimitItem]:
    return parse_many(text)
