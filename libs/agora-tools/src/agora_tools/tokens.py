"""Access tokens for tests: a key of the test's own that signs them as identity does, the users a
test acts as, and the ways a token goes bad. Tests import them from :mod:`agora_tools.testing`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agora.auth import TokenVerifier


def bearer(token: str) -> dict[str, str]:
    """The Authorization header carrying ``token``."""
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class User:
    """Someone a test acts as: their id, their email, and the headers carrying their token."""

    id: str
    email: str
    headers: dict[str, str]


class SigningKey:
    """A key of the test's own in identity's place: it signs access tokens the way identity does
    (EdDSA, ``typ: at+jwt``, a ``kid``) and gives a service the verifier that accepts them.

        KEY = SigningKey()
        app = create_app(settings, verifier=KEY.verifier())
        client.get("/orders", headers=KEY.bearer(["customer"], sub=user_id))
    """

    def __init__(
        self, kid: str = "test-key-1", issuer: str = "agora-identity", audience: str = "agora"
    ) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.kid = kid
        self.issuer = issuer
        self.audience = audience
        self.private = Ed25519PrivateKey.generate()

    def key_set(self) -> dict[str, Any]:
        """The JWKS identity would publish for this key."""
        import jwt

        jwk = jwt.algorithms.OKPAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.kid, "alg": "EdDSA", "use": "sig"}]}

    def verifier(self) -> TokenVerifier:
        from agora.auth import TokenVerifier

        key_set = self.key_set()

        async def fetch() -> dict[str, Any]:
            return key_set

        return TokenVerifier(fetch, issuer=self.issuer, audience=self.audience)

    def sign(
        self,
        roles: Sequence[str] = ("customer",),
        *,
        key: Ed25519PrivateKey | None = None,
        **claims: Any,
    ) -> str:
        """An access token for ``roles``; ``claims`` override the defaults (a new ``sub``, an
        email, five minutes of life); ``key`` signs with another key under this key's id."""
        import jwt

        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(uuid.uuid4()),
            "email": "someone@example.com",
            "roles": list(roles),
            "iat": now,
            "exp": now + 300,
            **claims,
        }
        headers = {"kid": self.kid, "typ": "at+jwt"}
        return jwt.encode(payload, key or self.private, algorithm="EdDSA", headers=headers)

    def bearer(self, roles: Sequence[str] = ("customer",), **claims: Any) -> dict[str, str]:
        return bearer(self.sign(roles, **claims))

    def user(self, *roles: str) -> User:
        """A new customer (a fresh id, an email made from it), with ``roles`` besides."""
        user_id = str(uuid.uuid4())
        email = f"{user_id[:8]}@example.org"
        return User(user_id, email, self.bearer(["customer", *roles], sub=user_id, email=email))

    def spoilt(self, flaw: str, roles: Sequence[str] = ("customer",), **claims: Any) -> str:
        """A token for ``roles`` (and ``claims``) that a service must refuse, spoilt as ``flaw``
        (one of :data:`BAD_TOKENS`) says: long expired, signed by another key, for another
        audience, or no token at all."""
        if flaw == "garbage":
            return "not.a.jwt"
        if flaw == "wrong-signature":
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            return self.sign(roles, key=Ed25519PrivateKey.generate(), **claims)
        spoils: dict[str, dict[str, Any]] = {
            "expired": {"exp": 1},
            "wrong-audience": {"aud": "another-audience"},
        }
        if flaw not in spoils:
            raise ValueError(f"unknown flaw {flaw!r}: one of {BAD_TOKENS}")
        return self.sign(roles, **{**claims, **spoils[flaw]})


# The ways a token goes bad (SigningKey.spoilt makes each), for a test that every one is refused:
# `@pytest.mark.parametrize("flaw", BAD_TOKENS)`.
BAD_TOKENS = ("expired", "wrong-signature", "wrong-audience", "garbage")
