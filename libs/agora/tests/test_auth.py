"""Token verification: what passes, what is refused, and how a rotated key is picked up."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agora.auth import InvalidToken, TokenVerifier
from agora.errors import ServiceUnavailable

ISSUER = "agora-identity"
AUDIENCE = "agora"


class KeySet:
    """Stands in for identity's JWKS endpoint, counting how often it is read."""

    def __init__(self) -> None:
        self.keys: dict[str, Ed25519PrivateKey] = {}
        self.reads = 0
        self.down = False

    def add(self, kid: str) -> Ed25519PrivateKey:
        self.keys[kid] = Ed25519PrivateKey.generate()
        return self.keys[kid]

    async def __call__(self) -> dict[str, Any]:
        self.reads += 1
        if self.down:
            raise ConnectionError("identity is down")
        entries = []
        for kid, key in self.keys.items():
            entry = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
            entries.append({**entry, "kid": kid, "use": "sig", "alg": "EdDSA"})
        return {"keys": entries}


def sign(key: Ed25519PrivateKey, kid: str, **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "email": "ada@example.com",
        "roles": ["customer"],
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid, "typ": "at+jwt"})


@pytest.fixture
def keys() -> KeySet:
    return KeySet()


@pytest.fixture
def verifier(keys: KeySet) -> TokenVerifier:
    return TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE, refetch_interval=0.05)


async def test_a_valid_token_names_the_user_and_roles(
    keys: KeySet, verifier: TokenVerifier
) -> None:
    token = sign(keys.add("k1"), "k1", roles=["customer", "admin"])

    principal = await verifier.verify(token)

    assert principal.id == "user-1"
    assert principal.email == "ada@example.com"
    assert principal.is_admin


async def test_the_key_set_is_cached(keys: KeySet, verifier: TokenVerifier) -> None:
    key = keys.add("k1")
    for _ in range(5):
        await verifier.verify(sign(key, "k1"))

    assert keys.reads == 1


async def test_a_key_rotated_in_after_the_first_fetch_is_found(
    keys: KeySet, verifier: TokenVerifier
) -> None:
    await verifier.verify(sign(keys.add("old"), "old"))
    # Right after the fetch, a token signed by a new key arrives: it must wait for a refetch,
    # not be refused because the last fetch was recent.
    principal = await verifier.verify(sign(keys.add("new"), "new"))

    assert principal.id == "user-1"
    assert keys.reads == 2


def _unsigned(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'at+jwt', 'kid': 'k1'})}.{part(claims)}."


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("expired", "expired"),
        ("wrong_audience", "audience"),
        ("wrong_issuer", "issuer"),
        ("wrong_signature", "signature"),
        ("alg_none", "algorithm"),
        ("unknown_kid", "unknown key"),
        ("not_a_jwt", "well-formed"),
        ("id_token_type", "not an access token"),
    ],
)
async def test_bad_tokens_are_refused(
    keys: KeySet, verifier: TokenVerifier, case: str, expected: str
) -> None:
    key = keys.add("k1")
    tokens = {
        "expired": sign(key, "k1", exp=int(time.time()) - 120),
        "wrong_audience": sign(key, "k1", aud="someone-else"),
        "wrong_issuer": sign(key, "k1", iss="https://evil.example"),
        "wrong_signature": sign(Ed25519PrivateKey.generate(), "k1"),
        "alg_none": _unsigned({"sub": "user-1", "iss": ISSUER, "aud": AUDIENCE}),
        "unknown_kid": sign(Ed25519PrivateKey.generate(), "nobody-knows"),
        "not_a_jwt": "hello",
        "id_token_type": jwt.encode(
            {"sub": "u", "iss": ISSUER, "aud": AUDIENCE, "iat": 1, "exp": 2**40},
            key,
            algorithm="EdDSA",
            headers={"kid": "k1", "typ": "JWT"},
        ),
    }

    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(tokens[case])

    assert caught.value.status == 401
    assert expected in str(caught.value)


async def test_an_unreachable_key_set_is_a_503_not_a_401(
    keys: KeySet, verifier: TokenVerifier
) -> None:
    token = sign(keys.add("k1"), "k1")
    keys.down = True

    with pytest.raises(ServiceUnavailable):
        await verifier.verify(token)


async def test_a_token_verified_once_is_not_checked_again_until_it_expires(
    keys: KeySet, verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    expires = int(time.time()) + 60
    token = sign(keys.add("k1"), "k1", exp=expires)
    first = await verifier.verify(token)
    checked: list[str] = []
    real_decode = jwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        checked.append(args[0])
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)

    again = await verifier.verify(token)
    assert again == first
    assert checked == []
    # Past its expiry the remembered answer no longer counts: the token is looked at afresh.
    monkeypatch.setattr("agora.auth.time.time", lambda: expires + 1.0)
    await verifier.verify(token)
    assert checked == [token]


async def test_a_remembered_token_is_refused_once_its_key_is_withdrawn(
    keys: KeySet, verifier: TokenVerifier
) -> None:
    token = sign(keys.add("k1"), "k1")
    await verifier.verify(token)
    del keys.keys["k1"]
    keys.add("k2")
    await verifier.verify(sign(keys.keys["k2"], "k2"))  # an unknown key id makes it re-read the set

    with pytest.raises(InvalidToken, match="unknown key"):
        await verifier.verify(token)
