"""Access tokens, the key set, key rotation and the admin account, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agora.auth import TokenVerifier
from agora_tools.testing import assert_problem, at_once, bearer


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def part(token: str, index: int) -> dict[str, Any]:
    segment = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return decoded


def assert_refused(reply: Any) -> dict[str, Any]:
    body = assert_problem(reply, 401)
    assert reply.headers["www-authenticate"].startswith("Bearer")
    return body


# --- the token and /me --------------------------------------------------------------------------


def test_me_answers_with_the_account_the_token_belongs_to(api: Any) -> None:
    account = api.register("ada@example.com")

    reply = api.me(api.log_in("ada@example.com"))

    assert reply.status_code == 200
    assert reply.json() == account


async def test_a_token_is_an_eddsa_access_token_that_the_chassis_verifies(api: Any) -> None:
    account = api.register("ada@example.com")
    token = api.log_in("ada@example.com")

    async def key_set() -> dict[str, Any]:
        document: dict[str, Any] = api.client.get("/.well-known/jwks.json").json()
        return document

    principal = await TokenVerifier(key_set, issuer="agora-identity", audience="agora").verify(
        token
    )

    assert (principal.id, principal.email, principal.roles) == (
        account["id"],
        "ada@example.com",
        ("customer",),
    )
    header, claims = part(token, 0), part(token, 1)
    assert header["alg"] == "EdDSA"
    assert header["typ"] == "at+jwt"
    assert header["kid"] in api.key_ids()
    assert claims["iss"] == "agora-identity"
    assert claims["aud"] == "agora"
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["jti"] != part(api.log_in("ada@example.com"), 1)["jti"]


def test_the_key_set_lists_public_ed25519_keys_only(api: Any) -> None:
    keys = api.client.get("/.well-known/jwks.json").json()["keys"]

    assert len(keys) == 1
    assert set(keys[0]) == {"kty", "crv", "x", "kid", "alg", "use"}
    assert (keys[0]["kty"], keys[0]["crv"], keys[0]["alg"]) == ("OKP", "Ed25519", "EdDSA")


def test_me_without_a_token_is_401(api: Any) -> None:
    assert_refused(api.client.get("/me"))


def forge(api: Any, *, key: Ed25519PrivateKey | None = None, **changes: Any) -> str:
    """A token like identity's, signed by a key of our own; ``kid`` defaults to identity's."""
    now = int(datetime.now(UTC).timestamp())
    claims = {
        "iss": "agora-identity",
        "aud": "agora",
        "sub": "00000000-0000-0000-0000-000000000000",
        "email": "eve@example.com",
        "roles": ["customer", "admin"],
        "iat": now,
        "exp": now + 600,
    }
    kid = changes.pop("kid", api.key_ids()[0])
    claims |= changes
    return jwt.encode(
        claims,
        key or Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": kid, "typ": "at+jwt"},
    )


def test_an_expired_token_is_401(api: Any) -> None:
    api.register("ada@example.com")
    api.clock.advance(hours=-2)
    token = api.log_in("ada@example.com")  # issued two hours ago, valid for one
    api.clock.advance(hours=2)

    body = assert_refused(api.me(token))

    assert "expired" in body["detail"]


def test_a_token_with_a_wrong_signature_is_401(api: Any) -> None:
    body = assert_refused(api.me(forge(api)))

    assert "signature" in body["detail"]


def test_a_token_with_a_tampered_payload_is_401(api: Any) -> None:
    api.register("ada@example.com")
    header, _, signature = api.log_in("ada@example.com").split(".")
    now = int(datetime.now(UTC).timestamp())
    claims = {"iss": "agora-identity", "aud": "agora", "sub": "x", "iat": now, "exp": now + 60}
    payload = b64(json.dumps(claims | {"roles": ["admin"]}).encode())

    assert_refused(api.me(f"{header}.{payload}.{signature}"))


def test_an_unsigned_alg_none_token_is_401(api: Any) -> None:
    header = {"alg": "none", "typ": "at+jwt", "kid": api.key_ids()[0]}
    claims = part(forge(api), 1)
    token = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."

    body = assert_refused(api.me(token))

    assert "algorithm" in body["detail"]


def test_a_token_for_another_audience_is_401(api: Any, start: Any) -> None:
    api.register("ada@example.com")
    with start(jwt_audience="another-system") as other:
        token = other.log_in("ada@example.com")  # signed with this identity's own key

    body = assert_refused(api.me(token))

    assert "audience" in body["detail"]


def test_a_token_naming_an_unknown_key_is_401(api: Any) -> None:
    body = assert_refused(api.me(forge(api, kid="no-such-key")))

    assert "unknown key" in body["detail"]


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "Bearer"])
def test_a_token_that_is_not_a_jwt_is_401(api: Any, token: str) -> None:
    assert_refused(api.client.get("/me", headers={"Authorization": f"Bearer {token}"}))


# --- keys across restarts and rotations -------------------------------------------------------


def test_tokens_issued_before_a_restart_are_accepted_after_it(start: Any) -> None:
    with start() as before:
        before.register("ada@example.com")
        token = before.log_in("ada@example.com")
        kids = before.key_ids()

    with start() as after:
        assert after.key_ids() == kids
        assert after.me(token).status_code == 200


def test_rotation_signs_with_a_new_key_and_keeps_the_old_one_valid(api: Any) -> None:
    api.register("ada@example.com")
    old_token = api.log_in("ada@example.com")
    old_kid = part(old_token, 0)["kid"]

    reply = api.client.post("/keys/rotate", headers=bearer(api.admin_token()))

    assert reply.status_code == 201
    new_kid = reply.json()["kid"]
    assert new_kid != old_kid
    assert api.key_ids() == [new_kid, old_kid]
    new_token = api.log_in("ada@example.com")
    assert part(new_token, 0)["kid"] == new_kid
    assert api.me(old_token).status_code == 200
    assert api.me(new_token).status_code == 200


def test_a_rotated_out_key_leaves_the_key_set_once_its_tokens_have_expired(api: Any) -> None:
    admin = bearer(api.admin_token())
    first = api.key_ids()[0]
    api.client.post("/keys/rotate", headers=admin)
    api.client.post("/keys/rotate", headers=admin)
    assert first in api.key_ids(), "its tokens may still be valid"

    api.clock.advance(hours=1, minutes=2)

    assert first not in api.key_ids()
    assert len(api.key_ids()) == 2


def test_a_rotation_done_by_one_replica_is_honoured_by_another(api: Any, start: Any) -> None:
    api.register("ada@example.com")
    with start() as replica:
        assert replica.me(api.log_in("ada@example.com")).status_code == 200
        api.client.post("/keys/rotate", headers=bearer(api.admin_token()))

        token = api.log_in("ada@example.com")

        assert replica.me(token).status_code == 200


def test_only_an_admin_may_rotate_keys(api: Any) -> None:
    api.register("ada@example.com")
    kids = api.key_ids()

    anonymous = api.client.post("/keys/rotate")
    customer = api.client.post("/keys/rotate", headers=bearer(api.log_in("ada@example.com")))

    assert_refused(anonymous)
    assert_problem(customer, 403)
    assert api.key_ids() == kids


# --- the admin account --------------------------------------------------------------------------


def test_the_admin_account_exists_from_the_first_start(api: Any) -> None:
    reply = api.me(api.admin_token())

    assert reply.status_code == 200
    assert reply.json()["email"] == "root@shop.example"
    assert reply.json()["roles"] == ["customer", "admin"]


def test_the_admin_account_is_created_once_across_restarts(start: Any) -> None:
    with start() as first:
        admin = first.me(first.admin_token()).json()
    with start(admin_password="a changed admin passphrase") as second:
        assert second.me(second.admin_token()).json() == admin, "the first password still holds"


def test_two_replicas_starting_together_make_one_admin_and_one_first_key(start: Any) -> None:
    # Bounded: a replica that fails to start breaks the barrier, and the failure is reported,
    # rather than leaving the other replica waiting until the test times out.
    ready = threading.Barrier(2, timeout=60)
    started: list[Any] = []

    def run() -> None:
        ready.wait()
        with start() as replica:
            started.append(replica)
            ready.wait()  # both are serving before either stops
            started.append(replica.me(replica.admin_token()).json())
            started.append(replica.key_ids())

    failures = at_once(run, run)

    assert not failures, failures
    accounts = [item for item in started if isinstance(item, dict)]
    key_sets = [item for item in started if isinstance(item, list)]
    assert accounts[0] == accounts[1]
    assert key_sets[0] == key_sets[1]
    assert len(key_sets[0]) == 1
