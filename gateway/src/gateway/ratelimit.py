"""Per-client rate limits: a token bucket per client address, answered with 429 when empty.

Each client may send ``burst`` requests at once and ``rate`` requests per second after that.

By default each gateway process keeps its own buckets (``TokenBuckets``). They are kept in
least-recently-used order, so the ones to forget are always at the front: a bucket idle long
enough to be full again is the same as no bucket, and past ``max_clients`` the longest-idle client
is forgotten (it gets a fresh bucket, which errs on the side of serving).

Several gateway replicas would each allow the full rate, so with ``AGORA_GATEWAY_REDIS_URL`` set
(``redis://host:6379/0``) the buckets live in Redis instead (``RedisBuckets``), shared by every
replica: one hash per client, ``<prefix>bucket:<client address>``, where the prefix is
``AGORA_GATEWAY_REDIS_PREFIX`` (``agora:gateway:``). When Redis fails, each replica counts in its
own buckets until Redis answers again, and ``GET /api`` says so under ``redis``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import Protocol

import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from agora import context
from agora.embedded_nats import without_credentials
from agora.errors import PROBLEM_JSON, TooManyRequests, problem_body
from agora.middleware import QUIET_PATHS, ASGIApp, Receive, Scope, Send

log = structlog.get_logger("gateway.ratelimit")


class Limiter(Protocol):
    """What the middleware needs of a limiter, wherever it keeps its buckets."""

    @property
    def rate(self) -> float: ...

    async def take(self, key: str) -> float:
        """Spend a token of ``key``: 0.0 when there was one, else the seconds until there is."""
        ...


class TokenBuckets:
    """One token bucket per key, in this process: ``take(key)`` spends a token or says how long
    to wait for one."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate must be positive, burst and max_clients at least 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self._clock = clock
        # After this long without a request a bucket is full again.
        self._refill_time = self.burst / rate
        # key -> (tokens left, when last counted); least recently used first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    async def take(self, key: str) -> float:
        """Spend a token of ``key``: 0.0 when there was one, else the seconds until there is."""
        now = self._clock()
        buckets = self._buckets
        entry = buckets.pop(key, None)
        if entry is None:
            tokens = self.burst
        else:
            tokens = min(self.burst, entry[0] + (now - entry[1]) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        buckets[key] = (tokens, now)
        self._forget_idle(now)
        return wait

    def _forget_idle(self, now: float) -> None:
        buckets = self._buckets
        while len(buckets) > self.max_clients:
            buckets.popitem(last=False)
        # Two at a time is enough to keep up: every call adds at most one bucket.
        for _ in range(2):
            oldest = next(iter(buckets))
            if now - buckets[oldest][1] < self._refill_time:
                return
            del buckets[oldest]
            if not buckets:
                return


# KEYS[1]: the client's bucket, a hash {tokens, at}; ARGV: rate (tokens per second), burst.
# The same arithmetic as TokenBuckets.take, on the Redis server's clock. The answer is a string:
# Redis would cut a Lua number down to an integer.
_TAKE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = burst
if bucket[1] then
    local idle = math.max(0, now - tonumber(bucket[2]))
    tokens = math.min(burst, tonumber(bucket[1]) + idle * rate)
end
local wait = 0
if tokens >= 1 then
    tokens = tokens - 1
else
    wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
-- Gone once full again: an idle client's bucket is the same as none.
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((burst - tokens) / rate * 1000)))
return tostring(wait)
"""


class RedisBuckets:
    """The same buckets kept in Redis (key ``<prefix>bucket:<key>``), shared by every replica.

    One script per request reads, refills and spends a bucket atomically, on the Redis server's
    clock, so replicas on different machines agree. When Redis fails, the request is counted in
    ``local`` instead, Redis is left alone for ``pause`` seconds (so a Redis that hangs costs
    one timeout, not one per request), and a warning is logged at most every ``warn_every`` s.
    """

    def __init__(
        self,
        url: str,
        local: TokenBuckets,
        *,
        prefix: str = "agora:gateway:",
        timeout: float = 0.5,
        pause: float = 1.0,
        warn_every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.local = local
        self.prefix = f"{prefix}bucket:"
        self.timeout = timeout
        self.pause = pause
        self.warn_every = warn_every
        self._clock = clock
        self._redis: Redis | None = None
        self._script: AsyncScript | None = None
        self._redis_again_at = 0.0
        self._warn_again_at = 0.0

    @property
    def rate(self) -> float:
        return self.local.rate

    async def start(self) -> None:
        """Make the connection pool (it connects on the first request)."""
        self._redis = Redis.from_url(
            self.url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            # No retries: a request that Redis fails is counted in the local buckets at once.
            retry=Retry(NoBackoff(), 0),
        )
        # Sent by its SHA1 (EVALSHA), and loaded again when the server does not know it.
        self._script = self._redis.register_script(_TAKE)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = self._script = None

    async def check(self) -> None:
        """Raise unless Redis answers."""
        if self._redis is None:
            raise RuntimeError("not started")
        await self._redis.ping()

    async def take(self, key: str) -> float:
        now = self._clock()
        if self._script is None or now < self._redis_again_at:
            return await self.local.take(key)
        try:
            wait = await self._script(keys=[self.prefix + key], args=[self.rate, self.local.burst])
        except RedisError as error:
            self._redis_again_at = now + self.pause
            if now >= self._warn_again_at:
                self._warn_again_at = now + self.warn_every
                log.warning(
                    "redis failed: rate limits are per gateway process until it answers",
                    redis=without_credentials(self.url),
                    error=str(error) or type(error).__name__,
                )
            return await self.local.take(key)
        return float(wait)


class RateLimit:
    """ASGI middleware answering 429 (with Retry-After) to a client that spent its bucket.

    The client is the peer address: the gateway is the public door, so nothing in front of it
    can be trusted to have set ``X-Forwarded-For`` honestly. Probes are never limited.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: Limiter,
        exempt: Collection[str] = QUIET_PATHS,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.exempt = frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        wait = await self.limiter.take(client[0] if client else "")
        if not wait:
            await self.app(scope, receive, send)
            return
        refusal = TooManyRequests(retry_after=wait)
        body = problem_body(
            refusal.status,
            refusal.title,
            detail=f"more than {self.limiter.rate:g} requests per second from this client",
            type_=refusal.type,
            instance=scope["path"],
            request_id=context.request_id.get(),
        )
        await send(
            {
                "type": "http.response.start",
                "status": refusal.status,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(refusal.retry_after).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
