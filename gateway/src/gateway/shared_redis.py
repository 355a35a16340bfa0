"""The Redis the gateway's replicas share (rate limits, ended tokens), and what a failure costs.

A request never waits on a Redis that has just failed: after a failure, Redis is left alone for
``pause`` seconds, during which each replica relies on what it keeps in its own memory, and the
failure is logged at most every ``warn_every`` seconds, so a Redis that hangs costs one timeout,
not one per request, and one log line, not one per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypedDict, Unpack

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from agora.messaging.credentials import without_credentials


class Options(TypedDict, total=False):
    """What the keys start with (``prefix``); how long to wait for Redis (``timeout``), to leave
    it alone after a failure (``pause``) and between two warnings that it failed
    (``warn_every``), in seconds; and the ``clock`` those pauses keep to."""

    prefix: str
    timeout: float
    pause: float
    warn_every: float
    clock: Callable[[], float]


class SharedRedis:
    """One connection pool to ``url``, set aside for ``pause`` seconds after each failure."""

    def __init__(self, url: str, *, log: Any, **options: Unpack[Options]) -> None:
        self.url = url
        self.prefix = options.get("prefix", "agora:gateway:")
        self.timeout = options.get("timeout", 0.5)
        self.pause = options.get("pause", 1.0)
        self.warn_every = options.get("warn_every", 10.0)
        self._log = log
        self._clock = options.get("clock", time.monotonic)
        self._redis: Redis | None = None
        self._again_at = 0.0
        self._warn_again_at = 0.0

    async def start(self) -> Redis:
        """Make the connection pool (it connects on first use)."""
        self._redis = Redis.from_url(
            self.url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            # No retries: what Redis fails falls back to the replica's own memory at once.
            retry=Retry(NoBackoff(), 0),
        )
        return self._redis

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def check(self) -> None:
        """Raise unless Redis answers."""
        if self._redis is None:
            raise RuntimeError("not started")
        await self._redis.ping()

    def available(self) -> Redis | None:
        """The connection, unless it is not started or is set aside after a failure."""
        if self._redis is None or self._clock() < self._again_at:
            return None
        return self._redis

    def failed(self, error: RedisError, meanwhile: str) -> None:
        """Set Redis aside for a pause; say (now and then) what holds ``meanwhile``."""
        now = self._clock()
        self._again_at = now + self.pause
        if now >= self._warn_again_at:
            self._warn_again_at = now + self.warn_every
            self._log.warning(
                f"redis failed: {meanwhile}",
                redis=without_credentials(self.url),
                error=str(error) or type(error).__name__,
            )
