"""Routes that need a user are checked at the gateway: no valid token, no forwarding."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

from agora.auth import TokenVerifier
from agora_tools.testing import assert_problem

from .conftest import KID, Keys, sent_on

if TYPE_CHECKING:
    from .conftest import StartGateway, Upstream


def _segment(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


def forwarded(upstream: Upstream, reply: httpx.Response, path: str) -> bool:
    return any(seen.path_qs == path for seen in sent_on(upstream, reply.headers["x-request-id"]))


def unsigned_token() -> str:
    """A token that says `alg: none` and carries no signature at all."""
    header = {"alg": "none", "typ": "at+jwt", "kid": KID}
    claims = {"sub": "1", "iss": "agora-identity", "aud": "agora", "iat": 1, "exp": 4102444800}
    return f"{_segment(header)}.{_segment(claims)}."


BAD_TOKENS: dict[str, Callable[[Keys], str]] = {
    "expired": lambda keys: keys.token(expires_in=-600),
    "wrong signature": lambda keys: keys.token(key=keys.stranger),
    "alg none": lambda keys: unsigned_token(),
    "wrong audience": lambda keys: keys.token(audience="someone-else"),
    "unknown key id": lambda keys: keys.token(key=keys.stranger, kid="retired-key"),
    "not a jwt": lambda keys: "not-a-jwt",
}


def test_a_route_for_users_without_a_token_is_401_and_not_forwarded(
    gateway: httpx.Client, identity: Upstream
) -> None:
    reply = gateway.get("/api/identity/me")

    assert_problem(reply, 401)
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert not forwarded(identity, reply, "/me")


@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_a_bad_token_is_401_and_not_forwarded(
    gateway: httpx.Client, identity: Upstream, keys: Keys, kind: str
) -> None:
    token = BAD_TOKENS[kind](keys)

    reply = gateway.get("/api/identity/me", headers={"Authorization": f"Bearer {token}"})

    assert_problem(reply, 401)
    assert not forwarded(identity, reply, "/me")


def test_a_valid_token_is_checked_against_identitys_keys_and_passed_on(
    gateway: httpx.Client, keys: Keys
) -> None:
    token = keys.token()

    reply = gateway.get("/api/identity/me", headers={"Authorization": f"Bearer {token}"})

    assert reply.status_code == 200
    assert reply.json() == {"authorization": f"Bearer {token}"}


def test_a_public_route_needs_no_token(gateway: httpx.Client) -> None:
    assert gateway.get("/api/catalog/products").status_code == 200


def test_an_admin_route_is_403_for_a_customer_and_not_forwarded(
    gateway: httpx.Client, catalog: Upstream, keys: Keys
) -> None:
    token = keys.token(roles=("customer",))

    reply = gateway.post(
        "/api/catalog/products",
        json={"sku": "tea-9"},
        headers={"Authorization": f"Bearer {token}"},
    )

    assert_problem(reply, 403)
    assert not forwarded(catalog, reply, "/products")


def test_an_admin_route_is_forwarded_for_an_admin(gateway: httpx.Client, keys: Keys) -> None:
    token = keys.token(roles=("customer", "admin"))

    reply = gateway.patch(
        "/api/catalog/products/tea-9",
        json={"price": 450},
        headers={"Authorization": f"Bearer {token}"},
    )

    assert reply.status_code == 201
    assert reply.json() == {"received": len(b'{"price":450}')}


def test_an_admin_route_without_a_token_is_401(gateway: httpx.Client) -> None:
    assert gateway.patch("/api/catalog/products/tea-9", json={}).status_code == 401


def test_a_verifier_given_to_create_app_is_the_one_that_decides(
    start_gateway: StartGateway, keys: Keys
) -> None:
    async def strangers_keys() -> dict[str, Any]:
        jwk = keys.jwks()["keys"][0]
        stranger = Keys(signing=keys.stranger).jwks()["keys"][0]
        return {"keys": [{**stranger, "kid": "stranger"}, {**jwk, "kid": "unused"}]}

    verifier = TokenVerifier(strangers_keys, issuer="agora-identity", audience="agora")
    gateway = start_gateway(verifier=verifier)
    theirs = keys.token(key=keys.stranger, kid="stranger")

    accepted = gateway.get("/api/identity/me", headers={"Authorization": f"Bearer {theirs}"})
    refused = gateway.get("/api/identity/me", headers={"Authorization": f"Bearer {keys.token()}"})

    assert accepted.status_code == 200
    assert refused.status_code == 401
