"""Ending tokens before they expire: logging out of the storefront, and a storefront session's
own lifetime (ADR 22).

The storefront's session cookie holds the user's access token. Logging out, or the session
outliving ``AGORA_GATEWAY_SESSION_LIFETIME``, ends that token: it is put on a list of ended
tokens, by its id (``jti``; its SHA-256 for a token without one), with the moment from which it
is refused, and kept there until the token expires anyway. The pages refuse an ended token as a
session, and :class:`RefuseEnded` refuses it as a bearer token on every other request, so that a
copy of the cookie is no use through the API either.

The list is kept in this process (:class:`LocalEnds`), which is enough for one gateway; with
``AGORA_GATEWAY_REDIS_URL`` set it is kept in Redis as well (:class:`RedisEnds`), one key per
token, ``<prefix>ended:<id>``, expiring with the token, so that every replica refuses a token that
one of them ended. While Redis is away each replica still refuses what it ended itself.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, Unpack

import jwt
import structlog
from redis.exceptions import RedisError

from agora import context
from agora.auth import InvalidToken
from agora.middleware import ASGIApp, Receive, Scope, Send
from gateway.problems import send_problem
from gateway.shared_redis import Options, SharedRedis

log = structlog.get_logger("gateway.sessions")

# Kept a little past the token's expiry: the verifier allows a few seconds' leeway, and clocks
# differ.
KEPT_AFTER_EXPIRY = 60.0


@dataclass(frozen=True, slots=True)
class TokenFacts:
    """What an access token says of itself: its id, when it was issued and when it expires."""

    id: str
    issued_at: float
    expires_at: float


def token_facts(token: str) -> TokenFacts | None:
    """The token's facts, read without checking its signature: the verifier checks that. A
    forged token can name any id, which at most gets that token refused. None when the token is
    not a JWT with ``iat`` and ``exp``."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    issued, expires, jti = claims.get("iat"), claims.get("exp"), claims.get("jti")
    if not isinstance(issued, int | float) or not isinstance(expires, int | float):
        return None
    if not isinstance(jti, str) or not jti:
        jti = hashlib.sha256(token.encode()).hexdigest()
    return TokenFacts(jti, float(issued), float(expires))


class EndedTokens(Protocol):
    """The ended tokens, wherever they are kept."""

    async def end(self, token_id: str, *, at: float, until: float) -> None:
        """Refuse the token from ``at`` (seconds since the epoch); forget it after ``until``."""
        ...

    async def ended(self, token_id: str) -> bool:
        """Whether the token is refused now."""
        ...


class LocalEnds:
    """The ended tokens of this process, each forgotten once its token has expired."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._ends: dict[str, tuple[float, float]] = {}  # id -> (refused from, kept until)
        self._expiring: list[tuple[float, str]] = []  # a heap of (kept until, id)

    def __len__(self) -> int:
        return len(self._ends)

    async def end(self, token_id: str, *, at: float, until: float) -> None:
        now = self._clock()
        self._forget(now)
        until += KEPT_AFTER_EXPIRY
        if until <= now:
            return  # expired already: refused as such
        if (known := self._ends.get(token_id)) is not None:
            at, until = min(at, known[0]), max(until, known[1])
        self._ends[token_id] = (at, until)
        heapq.heappush(self._expiring, (until, token_id))

    async def ended(self, token_id: str) -> bool:
        now = self._clock()
        self._forget(now)
        known = self._ends.get(token_id)
        return known is not None and now >= known[0]

    def _forget(self, now: float) -> None:
        while self._expiring and self._expiring[0][0] <= now:
            _, token_id = heapq.heappop(self._expiring)
            known = self._ends.get(token_id)
            if known is not None and known[1] <= now:
                del self._ends[token_id]


class RedisEnds:
    """The ended tokens in Redis (``<prefix>ended:<id>``, holding the moment from which the
    token is refused and expiring with it), shared by every replica, and in ``local`` too.

    A token ended here is refused at once whatever Redis does; one ended by another replica is
    refused once Redis says so. While Redis fails (``SharedRedis``), each replica refuses what
    it ended itself.
    """

    def __init__(self, url: str, local: LocalEnds, **options: Unpack[Options]) -> None:
        # The wall clock dates ended tokens; Redis's pauses keep to the monotonic one.
        self._clock = options.pop("clock", time.time)
        self.redis = SharedRedis(url, log=log, **options)
        self.local = local
        self.prefix = f"{self.redis.prefix}ended:"

    async def start(self) -> None:
        """Make the connection pool (it connects on first use)."""
        await self.redis.start()

    async def close(self) -> None:
        await self.redis.close()

    async def end(self, token_id: str, *, at: float, until: float) -> None:
        await self.local.end(token_id, at=at, until=until)
        redis = self.redis.available()
        if redis is None:
            return
        try:
            # Only ever sooner: a logout after the session's deadline was set moves it forward.
            existing = await redis.get(self.prefix + token_id)
            if existing is not None:
                at = min(at, float(existing))
            keep = max(1, math.ceil(until + KEPT_AFTER_EXPIRY - self._clock()))
            await redis.set(self.prefix + token_id, repr(at), ex=keep)
        except RedisError as error:
            self.redis.failed(error, _NOT_SEEN)

    async def ended(self, token_id: str) -> bool:
        if await self.local.ended(token_id):
            return True
        redis = self.redis.available()
        if redis is None:
            return False
        try:
            refused_from = await redis.get(self.prefix + token_id)
        except RedisError as error:
            self.redis.failed(error, _NOT_SEEN)
            return False
        return refused_from is not None and self._clock() >= float(refused_from)


_NOT_SEEN = "a logout on another gateway replica is not seen here until it answers"


class Sessions:
    """The storefront's sessions: each begins at login (the token's ``iat``) and lasts
    ``lifetime`` seconds, or less when its token expires sooner, or until logout."""

    def __init__(
        self, ended: EndedTokens, *, lifetime: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.ended = ended
        self.lifetime = lifetime
        self._clock = clock

    async def begin(self, token: str, expires_in: int) -> int:
        """Start a session holding ``token``: the seconds the cookie is to be kept. When the
        session ends before the token does, the token is refused from then on."""
        facts = token_facts(token)
        if facts is None:
            return max(0, min(expires_in, int(self.lifetime)))
        deadline = facts.issued_at + self.lifetime
        if deadline < facts.expires_at:
            await self.ended.end(facts.id, at=deadline, until=facts.expires_at)
        return max(0, min(expires_in, math.floor(deadline - self._clock())))

    async def live(self, token: str) -> bool:
        """Whether the session holding ``token`` (a token the verifier took) goes on."""
        facts = token_facts(token)
        if facts is None or self._clock() >= facts.issued_at + self.lifetime:
            return False
        return not await self.ended.ended(facts.id)

    async def end(self, token: str) -> None:
        """Log out: the token is refused from now on, through the pages and the API."""
        facts = token_facts(token)
        if facts is not None:
            await self.ended.end(facts.id, at=self._clock(), until=facts.expires_at)


class RefuseEnded:
    """ASGI middleware answering 401 to a request whose bearer token was ended, before the
    proxy (or anything else) acts on it."""

    def __init__(self, app: ASGIApp, *, ended: EndedTokens) -> None:
        self.app = app
        self.ended = ended

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = context.bearer_token.get() if scope["type"] == "http" else None
        facts = token_facts(token) if token else None
        if facts is None or not await self.ended.ended(facts.id):
            await self.app(scope, receive, send)
            return
        refusal = InvalidToken("the token was ended by logging out, or its session is over")
        headers = {"WWW-Authenticate": 'Bearer realm="agora", error="invalid_token"'}
        await send_problem(scope, receive, send, refusal, headers=headers)
