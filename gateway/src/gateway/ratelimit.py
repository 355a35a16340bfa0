"""Rate limits: a token bucket per user or client address, answered with 429 when empty.

Each user may send ``burst`` requests at once and ``rate`` requests per second after that. A
request counts against its user (``user:<sub>``) when it carries an access token that verifies,
as a bearer token or the storefront's session cookie; an anonymous one (no token, or one that does
not verify: a made-up token must not buy a fresh bucket) counts against its client's address
(``client:<address>``). The address is the peer's, or behind the proxies that
``AGORA_GATEWAY_TRUSTED_PROXIES`` names the client they forwarded for (``agora.forwarded``).

Logging in and registering also spend from tighter buckets of their own, per client address
(``login:<address>``, ``register:<address>``; attempts per minute): each attempt makes identity
hash a password, which costs far more than any other request (ADR 21).

By default each gateway process keeps its own buckets (``TokenBuckets``). They are kept in
least-recently-used order, so the ones to forget are always at the front: a bucket idle long
enough to be full again is the same as no bucket, and past ``max_clients`` the longest-idle client
is forgotten (it gets a fresh bucket, which errs on the side of serving).

Several gateway replicas would each allow the full rate, so with ``AGORA_GATEWAY_REDIS_URL`` set
(``redis://host:6379/0``) the buckets live in Redis instead (``RedisBuckets``), shared by every
replica: one hash per key, ``<prefix>bucket:<key>``, where the prefix is
``AGORA_GATEWAY_REDIS_PREFIX`` (``agora:gateway:``). When Redis fails, each replica counts in its
own buckets until Redis answers again, and ``GET /api`` says so under ``redis``.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Protocol, Unpack

import structlog
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError
from starlette.requests import Request, cookie_parser

from agora import context
from agora.app import Resources
from agora.errors import PROBLEM_JSON, Problem, TooManyRequests, problem_body
from agora.forwarded import TrustedProxies
from agora.middleware import QUIET_PATHS, ASGIApp, Receive, Scope, Send
from agora.topology import Topology
from gateway.settings import GatewaySettings
from gateway.shared_redis import Options, SharedRedis
from gateway.web import SESSION_COOKIE, error_page, is_page_path

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
    clock, so replicas on different machines agree. While Redis fails (``SharedRedis``), the
    request is counted in ``local`` instead.
    """

    def __init__(self, url: str, local: TokenBuckets, **options: Unpack[Options]) -> None:
        self.redis = SharedRedis(url, log=log, **options)
        self.local = local
        self.prefix = f"{self.redis.prefix}bucket:"
        self._script: AsyncScript | None = None

    @property
    def url(self) -> str:
        return self.redis.url

    @property
    def rate(self) -> float:
        return self.local.rate

    async def start(self) -> None:
        """Make the connection pool (it connects on the first request)."""
        # Sent by its SHA1 (EVALSHA), and loaded again when the server does not know it.
        self._script = (await self.redis.start()).register_script(_TAKE)

    async def close(self) -> None:
        await self.redis.close()
        self._script = None

    async def check(self) -> None:
        """Raise unless Redis answers."""
        await self.redis.check()

    def alongside(self, local: TokenBuckets) -> Limiter:
        """Another limit's buckets (``local``'s rate and burst) in the same Redis, over the same
        connection, counted in ``local`` while Redis is away, as these are."""
        return _Alongside(self, local)

    async def take(self, key: str) -> float:
        return await self.take_from(self.local, key)

    async def take_from(self, local: TokenBuckets, key: str) -> float:
        """Spend a token of ``key`` from a bucket of ``local``'s rate and burst."""
        if self._script is None or self.redis.available() is None:
            return await local.take(key)
        try:
            wait = await self._script(keys=[self.prefix + key], args=[local.rate, local.burst])
        except RedisError as error:
            self.redis.failed(error, "rate limits are per gateway process until it answers")
            return await local.take(key)
        return float(wait)


class _Alongside:
    """A limit of its own kept in the Redis of another (see :meth:`RedisBuckets.alongside`)."""

    def __init__(self, shared: RedisBuckets, local: TokenBuckets) -> None:
        self.shared = shared
        self.local = local

    @property
    def rate(self) -> float:
        return self.local.rate

    async def take(self, key: str) -> float:
        return await self.shared.take_from(self.local, key)


@dataclass(frozen=True, slots=True)
class Attempts:
    """A tighter limit on one kind of attempt (logging in, registering), per client address:
    the requests ``(method, path)`` that make one, and the words for a refusal."""

    kind: str  # the start of the bucket's key: `login:<address>`
    what: str  # "login attempts"
    limiter: Limiter
    requests: frozenset[tuple[str, str]]


def password_attempts(
    settings: GatewaySettings, topology: Topology, shared: RedisBuckets | None
) -> list[Attempts]:
    """Logging in and registering, each with its bucket per client: the API's route and the
    storefront's form that calls it spend from the same one (both make identity hash)."""
    identity = topology.services.get("identity")
    api = identity.public_prefix if identity is not None else "/api/identity"

    def attempts(kind: str, what: str, per_minute: float, *requests: tuple[str, str]) -> Attempts:
        # A minute's attempts at once, then one every 60/per_minute seconds.
        local = TokenBuckets(
            per_minute / 60, max(1, math.ceil(per_minute)), max_clients=settings.rate_clients
        )
        limiter = shared.alongside(local) if shared is not None else local
        return Attempts(kind, what, limiter, frozenset(requests))

    return [
        attempts(
            "login",
            "login attempts",
            settings.login_rate_limit,
            ("POST", f"{api}/token"),
            ("POST", "/login"),
        ),
        attempts(
            "register",
            "registrations",
            settings.register_rate_limit,
            ("POST", f"{api}/users"),
            ("POST", "/register"),
        ),
    ]


ATTEMPTS = "Too many attempts"


class RateLimit:
    """ASGI middleware answering 429 (with Retry-After) to a user or client that spent its
    bucket, or its bucket of attempts: as problem details under ``/api``, as an error page on
    the storefront's paths. Probes are never limited.

    The client is the peer address unless the peer is one of ``proxies`` (none by default: the
    gateway is the public door, and a client could otherwise choose its own address, and so a
    fresh bucket, with every request).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: Limiter,
        resources: Resources,
        proxies: TrustedProxies,
        attempts: Iterable[Attempts] = (),
        exempt: Collection[str] = QUIET_PATHS,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.resources = resources
        self.proxies = proxies
        self.attempts = {request: kind for kind in attempts for request in kind.requests}
        self.exempt = frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        address = self.proxies.client(scope).address
        wait = await self.limiter.take(await self._key(scope, address))
        if wait:
            limit = f"{self.limiter.rate:g} requests per second"
            await _refuse(scope, receive, send, wait, limit=limit, what="requests")
            return
        attempt = self.attempts.get((scope["method"], scope["path"]))
        if attempt is not None:
            wait = await attempt.limiter.take(f"{attempt.kind}:{address}")
            if wait:
                limit = f"{attempt.limiter.rate * 60:g} {attempt.what} a minute"
                await _refuse(
                    scope, receive, send, wait, limit=limit, what=attempt.what, title=ATTEMPTS
                )
                return
        await self.app(scope, receive, send)

    async def _key(self, scope: Scope, address: str) -> str:
        """The user's bucket when the request carries a token that verifies, else the client's.

        Only a verified token names a user: a client that could choose the subject of an
        unchecked one would get a fresh bucket with every request. The verifier remembers the
        tokens it checked, so a user's later requests cost a lookup."""
        token = context.bearer_token.get() or _session(scope)
        verifier = self.resources.verifier
        if token and verifier is not None:
            try:
                principal = await verifier.verify(token)
            except Problem:  # not valid, or not checkable now: an anonymous request
                pass
            else:
                return f"user:{principal.id}"
        return f"client:{address}"


def _session(scope: Scope) -> str | None:
    """The storefront's session token (its cookie), if the request carries one."""
    for name, value in scope["headers"]:
        if name == b"cookie" and (
            token := cookie_parser(value.decode("latin-1")).get(SESSION_COOKIE)
        ):
            return token
    return None


async def _refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    wait: float,
    *,
    limit: str,
    what: str,
    title: str = TooManyRequests.title,
) -> None:
    """429 with Retry-After: problem details saying the ``limit``, or on a storefront path a
    page titled ``title`` saying there were too many ``what`` and when to try again."""
    refusal = TooManyRequests(retry_after=wait)
    if is_page_path(scope["path"]):
        # A browser gets a page saying when to try again, not a JSON document.
        page = error_page(
            Request(scope),
            refusal.status,
            title,
            f"Too many {what} from here; try again in {refusal.retry_after} seconds.",
        )
        page.headers["Retry-After"] = str(refusal.retry_after)
        await page(scope, receive, send)
        return
    body = problem_body(
        refusal.status,
        refusal.title,
        detail=f"more than {limit} from this client",
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
