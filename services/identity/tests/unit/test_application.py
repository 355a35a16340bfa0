"""identity's use cases and adapters over a SQLite file: password checks, rehashing, first start."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from agora.auth import TokenVerifier
from agora.db import UnitOfWork
from agora.migrations import upgrade
from identity import bootstrap
from identity.adapters import Argon2Passwords, Ed25519Keys, KeyCipher, SqlSigningKeys
from identity.application import (
    CreateAdmin,
    HashingBusy,
    HashingGate,
    LogIn,
    Parts,
    PasswordHasher,
    Register,
    Sleep,
    ensure_admin,
    ensure_signing_key,
    find_user,
    find_user_by_email,
    log_in,
    published_keys,
    register,
)
from identity.domain import InvalidCredentials, LoginLocked, SigningKey, User
from identity.settings import IdentitySettings

PASSWORD = "correct horse battery"
CIPHER = KeyCipher("a key-encryption key for these tests only", source="the tests")


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
    upgrade(url, bootstrap.MIGRATIONS)
    unit = UnitOfWork(url)
    yield unit
    await unit.dispose()


def make_parts(
    passwords: PasswordHasher, *, hashing: HashingGate | None = None, sleep: Sleep | None = None
) -> Parts:
    """The parts bootstrap chooses (the default settings' rules), with these in their place."""
    chosen = bootstrap.make_parts(IdentitySettings(), SqlSigningKeys(CIPHER), passwords=passwords)
    return replace(
        chosen,
        hashing=hashing or HashingGate(at_once=2, waiting=8, retry_after=timedelta(seconds=1)),
        sleep=asyncio.sleep if sleep is None else sleep,
    )


async def first_key(uow: UnitOfWork, parts: Parts) -> SigningKey:
    """What identity's start does before it serves: make the first signing key."""
    return await uow.run(ensure_signing_key, parts.signing_keys, parts.key_maker, parts.clock())


async def ada_signed_up(uow: UnitOfWork, parts: Parts) -> User:
    """identity started (its first signing key made) and Ada's account registered."""
    await first_key(uow, parts)
    return await register(uow, parts, Register("ada@example.com", PASSWORD))


async def ada_signed_up_and_throttled(uow: UnitOfWork) -> tuple[Parts, Pauses]:
    """Ada's account signed up on parts whose login throttle records its pauses instead of
    sleeping them."""
    pauses = Pauses()
    parts = make_parts(CountingPasswords(), sleep=pauses)
    await ada_signed_up(uow, parts)
    return parts, pauses


def ada_from(client: str, password: str = PASSWORD) -> LogIn:
    """Ada's login (or a guess at her password) sent from the address ``client``."""
    return LogIn("ada@example.com", password, client)


class Pauses(list[float]):
    """A sleep that only writes down how long it was asked to wait."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def cheap_argon2(time_cost: int = 1) -> Argon2Passwords:
    return Argon2Passwords(time_cost=time_cost, memory_cost=1024, parallelism=1)


async def test_an_unknown_email_costs_one_password_check_like_a_known_one(
    uow: UnitOfWork,
) -> None:
    passwords = CountingPasswords()
    parts = make_parts(passwords)
    await ada_signed_up(uow, parts)

    with pytest.raises(InvalidCredentials):
        await log_in(uow, parts, LogIn("ada@example.com", "not the password"))
    with pytest.raises(InvalidCredentials):
        await log_in(uow, parts, LogIn("nobody@example.com", "not the password"))

    assert passwords.checks == ["account", "dummy"]


async def test_a_hash_made_with_older_parameters_is_renewed_at_the_next_login(
    uow: UnitOfWork,
) -> None:
    old = make_parts(cheap_argon2(time_cost=1))
    user = await ada_signed_up(uow, old)
    new = make_parts(cheap_argon2(time_cost=2))

    await log_in(uow, new, LogIn("ada@example.com", PASSWORD))

    stored = await uow.query(find_user, new.users, user.id)
    assert "t=2" in stored.password_hash
    await log_in(uow, new, LogIn("ada@example.com", PASSWORD))


async def test_a_hash_made_with_the_former_64_mib_parameters_is_renewed_at_the_next_login(
    uow: UnitOfWork,
) -> None:
    former = make_parts(Argon2Passwords(time_cost=3, memory_cost=65536, parallelism=4))
    user = await ada_signed_up(uow, former)
    current = make_parts(Argon2Passwords())

    await log_in(uow, current, LogIn("ada@example.com", PASSWORD))

    stored = await uow.query(find_user, current.users, user.id)
    assert stored.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    await log_in(uow, current, LogIn("ada@example.com", PASSWORD))


# --- bounded hashing ----------------------------------------------------------------------------


class HeldPasswords(CountingPasswords):
    """A hasher whose checks wait until the test lets them go, counting how many run at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def verify(self, password_hash: str, password: str) -> bool:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            assert self.release.wait(timeout=60), "the test never let the check go"
            return super().verify(password_hash, password)
        finally:
            with self._lock:
                self.running -= 1


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition``, polling, with a bound far above what a busy machine needs."""
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never came true")


async def test_hashes_beyond_the_bound_are_refused_at_once_with_a_retry_after() -> None:
    held = threading.Event()
    ran: list[int] = []

    def work(number: int) -> int:
        held.wait(timeout=60)
        ran.append(number)
        return number

    gate = HashingGate(at_once=1, waiting=1, retry_after=timedelta(seconds=3))
    running = asyncio.create_task(gate.run(work, 1))
    waiting = asyncio.create_task(gate.run(work, 2))
    await asyncio.sleep(0)  # both tasks take their places

    with pytest.raises(HashingBusy) as refused:
        await gate.run(work, 3)

    assert refused.value.retry_after == timedelta(seconds=3)
    held.set()
    assert await running == 1
    assert await waiting == 2
    assert sorted(ran) == [1, 2], "the refused hash never ran"
    assert await gate.run(work, 4) == 4, "room again once the others are done"


async def test_a_hash_whose_caller_hung_up_keeps_its_place_until_it_is_done() -> None:
    held = threading.Event()
    started = threading.Event()

    def work() -> None:
        started.set()
        held.wait(timeout=60)

    gate = HashingGate(at_once=1, waiting=0, retry_after=timedelta(seconds=1))
    caller = asyncio.create_task(gate.run(work))
    await until(started.is_set)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller

    with pytest.raises(HashingBusy):
        await gate.run(work)
    held.set()
    await until(lambda: not busy(gate))


def busy(gate: HashingGate) -> bool:
    try:
        gate.check()
    except HashingBusy:
        return True
    return False


async def test_a_login_flood_is_refused_with_hashing_busy_and_checks_no_more_at_once(
    uow: UnitOfWork,
) -> None:
    passwords = HeldPasswords()
    parts = make_parts(
        passwords, hashing=HashingGate(at_once=2, waiting=1, retry_after=timedelta(seconds=1))
    )
    await ada_signed_up(uow, parts)
    flood = [asyncio.create_task(log_in(uow, parts, ada_from(f"10.0.0.{n}"))) for n in range(3)]
    await until(lambda: passwords.running == 2)

    with pytest.raises(HashingBusy):
        await log_in(uow, parts, ada_from("10.0.0.9"))
    with pytest.raises(HashingBusy):
        await register(uow, parts, Register("bob@example.com", PASSWORD))

    passwords.release.set()
    tokens = await asyncio.gather(*flood)
    assert all(token.access_token for token in tokens)
    assert passwords.most_at_once == 2
    assert await log_in(uow, parts, ada_from("10.0.0.9")), (
        "the refused login was not counted as a failure"
    )


# --- the login throttle -------------------------------------------------------------------------


async def test_the_right_password_from_a_clean_client_logs_in_while_an_attacker_hammers_the_account(
    uow: UnitOfWork,
) -> None:
    parts, pauses = await ada_signed_up_and_throttled(uow)

    for attempt in range(40):
        try:
            await log_in(uow, parts, ada_from("203.0.113.7", "guess guess guess"))
        except LoginLocked:
            assert attempt >= 5
        except InvalidCredentials:
            assert attempt < 5

    token = await log_in(uow, parts, ada_from("198.51.100.2"))

    assert token.access_token
    assert pauses == [], "a single client's failures never slow the account down"


async def test_guessing_from_many_addresses_slows_the_account_down_but_never_locks_its_owner_out(
    uow: UnitOfWork,
) -> None:
    parts, pauses = await ada_signed_up_and_throttled(uow)

    for address in range(30):
        with pytest.raises(InvalidCredentials):
            await log_in(uow, parts, ada_from(f"10.1.0.{address}", "guess guess guess"))
    token = await log_in(uow, parts, ada_from("198.51.100.2"))

    assert token.access_token
    assert pauses[0] == pytest.approx(0.2)
    assert pauses[-1] == pytest.approx(2.0), "the owner waits, the longest pause at most"


async def test_the_first_start_makes_one_signing_key_and_later_starts_keep_it(
    uow: UnitOfWork,
) -> None:
    parts = make_parts(CountingPasswords())
    first = await first_key(uow, parts)
    again = await first_key(uow, make_parts(CountingPasswords()))

    keys = await uow.query(published_keys, parts.signing_keys, datetime.now(UTC))
    assert [key.kid for key in keys] == [first.kid]
    assert again.kid == first.kid


async def test_the_admin_account_is_made_once(uow: UnitOfWork) -> None:
    parts = make_parts(CountingPasswords())

    assert await ensure_admin(uow, parts, CreateAdmin("Admin@Agora.local", "agora-admin-password"))
    assert not await ensure_admin(uow, parts, CreateAdmin("admin@agora.local", "another password"))

    admin = await uow.query(find_user_by_email, parts.users, "admin@agora.local")
    assert admin is not None
    assert admin.roles == ("customer", "admin")
    assert admin.password_hash == "plain:agora-admin-password"


async def test_a_customer_who_registered_the_admin_email_is_not_promoted(
    uow: UnitOfWork,
) -> None:
    parts = make_parts(CountingPasswords())
    await register(uow, parts, Register("boss@example.com", PASSWORD))

    assert not await ensure_admin(
        uow, parts, CreateAdmin("boss@example.com", "agora-admin-password")
    )

    account = await uow.query(find_user_by_email, parts.users, "boss@example.com")
    assert account is not None
    assert account.roles == ("customer",)


def test_a_new_hash_uses_the_owasp_minimum_argon2id_parameters() -> None:
    settings = IdentitySettings()
    passwords = Argon2Passwords(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
    )
    stored = passwords.hash(PASSWORD)

    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert Argon2Passwords().hash(PASSWORD).startswith("$argon2id$v=19$m=19456,t=2,p=1$")
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
