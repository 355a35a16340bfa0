"""Per-client rate limits: a token bucket per client address, answered with 429 when empty.

Each client may send ``burst`` requests at once and ``rate`` requests per second after that.
Buckets are kept in least-recently-used order, so the ones to forget are always at the front:
a bucket idle long enough to be full again is the same as no bucket, and past ``max_clients``
the longest-idle client is forgotten (it gets a fresh bucket, which errs on the side of serving).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Collection

from agora import context
from agora.errors import PROBLEM_JSON, TooManyRequests, problem_body
from agora.middleware import QUIET_PATHS, ASGIApp, Receive, Scope, Send


class TokenBuckets:
    """One token bucket per key: ``take(key)`` spends a token or says how long to wait for one."""

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

    def take(self, key: str) -> float:
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


class RateLimit:
    """ASGI middleware answering 429 (with Retry-After) to a client that spent its bucket.

    The client is the peer address: the gateway is the public door, so nothing in front of it
    can be trusted to have set ``X-Forwarded-For`` honestly. Probes are never limited.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        buckets: TokenBuckets,
        exempt: Collection[str] = QUIET_PATHS,
    ) -> None:
        self.app = app
        self.buckets = buckets
        self.exempt = frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        wait = self.buckets.take(client[0] if client else "")
        if not wait:
            await self.app(scope, receive, send)
            return
        refusal = TooManyRequests(retry_after=wait)
        body = problem_body(
            refusal.status,
            refusal.title,
            detail=f"more than {self.buckets.rate:g} requests per second from this client",
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
