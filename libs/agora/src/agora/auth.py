"""Access-token verification against the identity service's JWKS.

Tokens are JWTs signed with EdDSA (Ed25519). Verification pins the algorithm (so ``alg: none`` and
key-confusion tricks fail), requires ``iss``, ``aud``, ``exp``, ``sub`` and a ``kid``, and accepts
only access tokens (header ``typ: at+jwt``, RFC 9068), so that no other kind of JWT signed by the
same keys passes as one. The key set is cached and fetched again when a token names a key id the
cache does not hold (after a rotation), at most once per ``refetch_interval``.

Two credentials are not users' (ADR 24). The operator's token opens ``/internal/*``
(:class:`OperatorGuard`). A service's own credential, ``agora-service.<name>.<secret>``, goes on
the calls it makes on nobody's behalf; a callee knows only the SHA-256 digests of the secrets of
the services allowed to call it (:class:`ServiceCredentials`), so a callee that leaks what it
holds does not let anyone call others as its callers. Neither is a JWT, so neither can pass for
a user's token, nor a user's token for one of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import structlog

from agora import context
from agora.errors import ServiceUnavailable, Unauthorized
from agora.secrets import OPERATOR_TOKEN_FILE as OPERATOR_TOKEN_FILE
from agora.secrets import read_secret
from agora.secrets import token_digest as token_digest
from agora.settings import ServiceSettings

ALGORITHMS = ["EdDSA"]
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type, not a secret)
VERIFIED_KEPT = 10_000  # verified tokens remembered per process
SERVICE_CREDENTIAL = "agora-service."

log = structlog.get_logger("agora.auth")

JwksSource = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the user id (``sub``), their email and roles."""

    id: str
    email: str
    roles: tuple[str, ...]
    token: str

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


class InvalidToken(Unauthorized):
    title = "Invalid access token"


class TokenVerifier:
    def __init__(
        self,
        jwks: JwksSource,
        *,
        issuer: str,
        audience: str,
        refetch_interval: float = 1.0,
        leeway: float = 5.0,
    ) -> None:
        self._source = jwks
        self.issuer = issuer
        self.audience = audience
        self.refetch_interval = refetch_interval
        self.leeway = leeway
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        # Tokens already verified, with their expiry: a client sends the same token with every
        # request, and checking its signature again each time costs more than the rest of a
        # small request's handling. Least recently used first, at most VERIFIED_KEPT.
        self._verified: OrderedDict[str, tuple[Principal, float, str]] = OrderedDict()

    async def verify(self, token: str) -> Principal:
        if (known := self._verified.get(token)) is not None:
            principal, expires, kid = known
            # Still valid, and signed by a key still in the set (a withdrawn key ends it).
            if time.time() < expires and kid in self._keys:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
        principal, expires, kid = await self._verify(token)
        self._verified[token] = (principal, expires, kid)
        if len(self._verified) > VERIFIED_KEPT:
            self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise InvalidToken("the token is not a well-formed JWT") from error
        kid = header.get("kid")
        if header.get("alg") not in ALGORITHMS:
            raise InvalidToken("the token's algorithm is not accepted")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("the token names no key id")
        if header.get("typ", "").lower() != ACCESS_TOKEN_TYPE:
            raise InvalidToken("the token is not an access token")
        key = await self._key(kid)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as error:
            raise InvalidToken("the token has expired") from error
        except jwt.InvalidAudienceError as error:
            raise InvalidToken("the token is for another audience") from error
        except jwt.InvalidIssuerError as error:
            raise InvalidToken("the token is from another issuer") from error
        except jwt.InvalidSignatureError as error:
            raise InvalidToken("the token's signature does not verify") from error
        except jwt.PyJWTError as error:
            raise InvalidToken(f"the token is not valid: {error}") from error
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise InvalidToken("the token's roles are malformed")
        principal = Principal(
            id=str(claims["sub"]),
            email=str(claims.get("email", "")),
            roles=tuple(roles),
            token=token,
        )
        return principal, float(claims["exp"]), kid

    async def _key(self, kid: str) -> jwt.PyJWK:
        if (key := self._keys.get(kid)) is not None:
            return key
        async with self._lock:
            if kid not in self._keys:
                # A key id we do not hold is most likely a rotation we have not seen yet: fetch
                # the set again, but no more than once per interval (a stream of made-up key ids
                # must not turn into a stream of fetches), waiting out the rest of the interval.
                wait = self._fetched_at + self.refetch_interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                fetched = await self._refresh()
                if not fetched and not self._keys:
                    raise ServiceUnavailable("tokens cannot be checked: the key set is unreachable")
        if (key := self._keys.get(kid)) is None:
            raise InvalidToken("the token was signed by an unknown key")
        return key

    async def _refresh(self) -> bool:
        self._fetched_at = time.monotonic()
        try:
            document = await self._source()
        except Exception as error:
            log.warning("could not fetch the key set", error=str(error))
            return False
        keys: dict[str, jwt.PyJWK] = {}
        for entry in document.get("keys", []):
            try:
                key = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                log.warning("skipping an unusable key", kid=entry.get("kid"))
                continue
            if key.key_id:
                keys[key.key_id] = key
        self._keys = keys
        return True


# --- credentials that are not users' ------------------------------------------------------------


def secrets_dir(data_dir: Path) -> Path:
    """Where the embedded profile keeps its secrets: ``.agora/secrets`` beside ``.agora/data``."""
    return data_dir.parent / "secrets"


def _configured(value: str, path: Path | None) -> str | None:
    """A secret given as it is, or as a file holding it (None when the file is missing)."""
    if value:
        return value
    return read_secret(path) if path is not None else None


def operator_token(settings: ServiceSettings) -> str | None:
    """The operator's token: ``AGORA_OPERATOR_TOKEN``, else the file ``AGORA_OPERATOR_TOKEN_FILE``
    names, else (embedded profile only) ``.agora/secrets/operator.token`` beside the data. The
    production profile has no default: without one, /internal refuses everyone."""
    found = _configured(settings.operator_token, settings.operator_token_file)
    if found is None and settings.operator_token_file is None and settings.profile == "embedded":
        found = read_secret(secrets_dir(settings.data_dir) / OPERATOR_TOKEN_FILE)
    return found


def _sha256(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class OperatorGuard:
    """A FastAPI dependency: the request carries the operator's token as its bearer token.

    Compared in constant time (digests of both sides, so their lengths give nothing away).
    Without a token configured, every request is refused."""

    def __init__(self, token: str | None) -> None:
        self._digest = _sha256(token) if token else None

    async def __call__(self) -> None:
        sent = context.bearer_token.get()
        if self._digest is None:
            raise Unauthorized("no operator credential is configured: this is closed to everyone")
        if not sent or not hmac.compare_digest(_sha256(sent), self._digest):
            raise Unauthorized("send the operator's token: Authorization: Bearer <token>")


def service_credential(name: str, secret: str) -> str:
    """The credential service ``name`` sends: ``agora-service.<name>.<secret>``."""
    return f"{SERVICE_CREDENTIAL}{name}.{secret}"


def is_service_credential(token: str) -> bool:
    return token.startswith(SERVICE_CREDENTIAL)


@dataclass(frozen=True, slots=True)
class ServiceCaller:
    """A service calling on nobody's behalf, by name, as its credential proved."""

    name: str


@dataclass(frozen=True, slots=True)
class ServiceCredentials:
    """This process's own credential (``own``, None when it was given none) and the digests of
    the secrets of the services that may call it (``callers``: name -> SHA-256 hex)."""

    own: str | None = None
    callers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> ServiceCredentials:
        secret = _configured(settings.service_token, settings.service_token_file)
        return cls(
            own=service_credential(settings.service_name, secret) if secret else None,
            callers={name: digest.lower() for name, digest in settings.service_callers.items()},
        )

    def caller(self, token: str) -> ServiceCaller | None:
        """The service whose credential ``token`` is, if it is one allowed to call here."""
        if not is_service_credential(token):
            return None
        name, dot, secret = token[len(SERVICE_CREDENTIAL) :].partition(".")
        expected = self.callers.get(name)
        if not dot or not secret or expected is None:
            return None
        if not hmac.compare_digest(token_digest(secret).encode(), expected.encode()):
            return None
        return ServiceCaller(name)
