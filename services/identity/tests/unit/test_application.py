"""identity's use cases and adapters over a SQLite file: password checks, rehashing, first start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from agora.auth import TokenVerifier
from agora.db import UnitOfWork
from agora.migrations import upgrade
from identity.adapters import (
    Argon2Passwords,
    Ed25519Keys,
    SqlLoginAttempts,
    SqlSigningKeys,
    SqlUsers,
)
from identity.application import (
    Identity,
    PasswordHasher,
    TokenRules,
    find_user,
    find_user_by_email,
    published_keys,
)
from identity.bootstrap import MIGRATIONS
from identity.domain import InvalidCredentials, LoginPolicy

PASSWORD = "correct horse battery"


class CountingPasswords(PasswordHasher):
    """A cheap hasher that counts how often a password was checked, and against what."""

    def __init__(self) -> None:
        self.checks: list[str] = []

    def hash(self, password: str) -> str:
        return f"plain:{password}"

    def verify(self, password_hash: str, password: str) -> bool:
        self.checks.append("account")
        return password_hash == f"plain:{password}"

    def needs_rehash(self, password_hash: str) -> bool:
        return False

    def verify_dummy(self, password: str) -> None:
        self.checks.append("dummy")


@pytest.fixture
async def uow(tmp_path: Path) -> AsyncIterator[UnitOfWork]:
    url = f"sqlite:///{tmp_path / 'identity.db'}"
    upgrade(url, MIGRATIONS)
    unit = UnitOfWork(url)
    yield unit
    await unit.dispose()


def make_identity(passwords: PasswordHasher) -> Identity:
    return Identity(
        users=SqlUsers(),
        keys=SqlSigningKeys(),
        attempts=SqlLoginAttempts(),
        passwords=passwords,
        key_maker=Ed25519Keys(),
        tokens=TokenRules(issuer="agora-identity", audience="agora", lifetime=timedelta(hours=1)),
        policy=LoginPolicy(),
    )


def cheap_argon2(time_cost: int = 1) -> Argon2Passwords:
    return Argon2Passwords(time_cost=time_cost, memory_cost=1024, parallelism=1)


async def test_an_unknown_email_costs_one_password_check_like_a_known_one(
    uow: UnitOfWork,
) -> None:
    passwords = CountingPasswords()
    identity = make_identity(passwords)
    await identity.ensure_signing_key(uow)
    await identity.register(uow, "ada@example.com", PASSWORD)

    with pytest.raises(InvalidCredentials):
        await identity.log_in(uow, "ada@example.com", "not the password")
    with pytest.raises(InvalidCredentials):
        await identity.log_in(uow, "nobody@example.com", "not the password")

    assert passwords.checks == ["account", "dummy"]


async def test_a_hash_made_with_older_parameters_is_renewed_at_the_next_login(
    uow: UnitOfWork,
) -> None:
    old = make_identity(cheap_argon2(time_cost=1))
    await old.ensure_signing_key(uow)
    user = await old.register(uow, "ada@example.com", PASSWORD)
    new = make_identity(cheap_argon2(time_cost=2))

    await new.log_in(uow, "ada@example.com", PASSWORD)

    stored = await uow.query(find_user, SqlUsers(), user.id)
    assert "t=2" in stored.password_hash
    await new.log_in(uow, "ada@example.com", PASSWORD)


async def test_the_first_start_makes_one_signing_key_and_later_starts_keep_it(
    uow: UnitOfWork,
) -> None:
    identity = make_identity(CountingPasswords())
    first = await identity.ensure_signing_key(uow)
    again = await make_identity(CountingPasswords()).ensure_signing_key(uow)

    keys = await uow.query(published_keys, SqlSigningKeys(), datetime.now(UTC))
    assert [key.kid for key in keys] == [first.kid]
    assert again.kid == first.kid


async def test_the_admin_account_is_made_once(uow: UnitOfWork) -> None:
    identity = make_identity(CountingPasswords())

    assert await identity.ensure_admin(uow, "Admin@Agora.local", "agora-admin-password")
    assert not await identity.ensure_admin(uow, "admin@agora.local", "another password")

    admin = await uow.query(find_user_by_email, SqlUsers(), "admin@agora.local")
    assert admin is not None
    assert admin.roles == ("customer", "admin")
    assert admin.password_hash == "plain:agora-admin-password"


async def test_a_customer_who_registered_the_admin_email_is_not_promoted(
    uow: UnitOfWork,
) -> None:
    identity = make_identity(CountingPasswords())
    await identity.register(uow, "boss@example.com", PASSWORD)

    assert not await identity.ensure_admin(uow, "boss@example.com", "agora-admin-password")

    account = await uow.query(find_user_by_email, SqlUsers(), "boss@example.com")
    assert account is not None
    assert account.roles == ("customer",)


def test_passwords_are_stored_as_argon2id_hashes() -> None:
    passwords = Argon2Passwords()
    stored = passwords.hash(PASSWORD)

    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert passwords.verify(stored, PASSWORD)
    assert not passwords.verify(stored, PASSWORD + "!")


def test_a_stored_hash_that_is_not_argon2_matches_no_password() -> None:
    assert not cheap_argon2().verify("not a hash", PASSWORD)


async def test_a_token_signed_with_a_new_key_passes_the_chassis_verifier() -> None:
    maker = Ed25519Keys()
    key = maker.generate(1, datetime.now(UTC))
    now = int(datetime.now(UTC).timestamp())
    claims = {"iss": "i", "aud": "a", "sub": "u1", "iat": now, "exp": now + 60}
    claims |= {"email": "ada@example.com", "roles": ["customer"]}

    token = maker.sign(key, claims)

    async def key_set() -> dict[str, object]:
        return {"keys": [key.public_jwk]}

    principal = await TokenVerifier(key_set, issuer="i", audience="a").verify(token)
    assert principal.id == "u1"
    assert principal.roles == ("customer",)
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": key.kid, "typ": "at+jwt"}
