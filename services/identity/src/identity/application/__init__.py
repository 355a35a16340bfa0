"""identity's use cases.

Two kinds of handler live here (docs/service-shape.md). A *transaction* is a plain function over
a SQLAlchemy ``Connection`` and the repositories it uses, run by the unit of work in one transaction
(``await uow.run(register_user, parts.users, user)``). A *step* (``register``, ``log_in``,
``ensure_admin``) is ``async def step(uow, parts, command)``: it puts the slow, CPU-bound work
(argon2 hashing, tens of milliseconds) in a worker thread *outside* any transaction, through a
:class:`HashingGate` that bounds how much of it runs and waits, and then runs transactions. The
repositories, the hasher and the key maker are ports (``Protocol`` classes below) that
``bootstrap`` fills with the adapters and hands over in one :class:`Parts`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog
from sqlalchemy import Connection

from agora.cursor import CursorCodec, Page, page_size, paged
from agora.db import UnitOfWork, on_commit
from agora.messaging.outbox import record
from contracts.identity import UserRegistered

# Re-exported: the entry points, bootstrap and the tests take the gate from here.
from identity.application.hashing import HashingBusy as HashingBusy
from identity.application.hashing import HashingGate as HashingGate
from identity.domain import (
    ADMIN_ROLES,
    CUSTOMER_ROLES,
    EVERY_CLIENT,
    USERS_PAGE_MAX,
    AccessClaims,
    EmailTaken,
    InvalidCredentials,
    KeyRotationConflict,
    LoginPolicy,
    LoginRecord,
    SigningKey,
    UnknownUser,
    User,
    UserCursor,
    check_password,
    keys_to_publish,
    normalize_email,
    normalize_password,
    retirement,
)

log = structlog.get_logger("identity")

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]

# The client of a login whose address is unknown (no peer): still a client of its own, never
# the record of every client.
UNKNOWN_CLIENT = "unknown"

USER_CURSORS = CursorCodec(UserCursor)


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- ports --------------------------------------------------------------------------------------


class Users(Protocol):
    """The accounts."""

    def add(self, connection: Connection, user: User) -> None:
        """Insert ``user``; raise :class:`EmailTaken` when the email is already there."""

    def by_email(self, connection: Connection, email: str) -> User | None: ...

    def get(self, connection: Connection, user_id: str) -> User | None: ...

    def set_password_hash(
        self, connection: Connection, user_id: str, password_hash: str
    ) -> None: ...

    def page(self, connection: Connection, after: str | None, limit: int) -> list[User]:
        """Up to ``limit`` accounts ordered by id, after the id ``after`` when given."""


class SigningKeys(Protocol):
    """The keys that sign access tokens, every generation of them."""

    def all(self, connection: Connection) -> list[SigningKey]: ...

    def newest(self, connection: Connection) -> SigningKey | None: ...

    def add(self, connection: Connection, key: SigningKey) -> None:
        """Insert ``key``; raise :class:`KeyRotationConflict` when its generation exists."""

    def retire_older(self, connection: Connection, generation: int, at: datetime) -> None:
        """Give every unretired key older than ``generation`` the retirement time ``at``."""


class LoginAttempts(Protocol):
    """The record of failed logins per (email, client), the login throttle's memory."""

    def for_update(self, connection: Connection, email: str, client: str) -> LoginRecord:
        """The record for ``email`` from ``client`` (a fresh one when there is none), locked
        until commit."""

    def save(self, connection: Connection, record: LoginRecord) -> None: ...

    def forget(self, connection: Connection, email: str, client: str) -> None: ...

    def forget_idle_since(self, connection: Connection, moment: datetime) -> None:
        """Drop records with no failure since ``moment``: they no longer lock anything."""


class PasswordHasher(Protocol):
    def hash(self, password: str) -> str: ...

    def verify(self, password_hash: str, password: str) -> bool:
        """Whether ``password`` matches; a hash that is not ours is a mismatch, not an error."""

    def needs_rehash(self, password_hash: str) -> bool: ...

    def verify_dummy(self, password: str) -> None:
        """Spend the time of one verification, for an email that has no account."""


class KeyMaker(Protocol):
    def generate(self, generation: int, now: datetime) -> SigningKey: ...

    def sign(self, key: SigningKey, claims: dict[str, Any]) -> str: ...


@dataclass(frozen=True)
class TokenRules:
    issuer: str
    audience: str
    lifetime: timedelta
    # Beyond the lifetime, how long a replaced key stays published: covers clock skew between
    # this service and the verifiers (agora.auth allows 5 s).
    key_leeway: timedelta = timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class Parts:
    """What bootstrap chooses for the routes and the start: the repositories, the password
    hasher behind its gate, the key maker, and the rules read from the settings."""

    users: Users
    signing_keys: SigningKeys
    login_attempts: LoginAttempts
    passwords: PasswordHasher
    hashing: HashingGate
    key_maker: KeyMaker
    tokens: TokenRules
    policy: LoginPolicy
    clock: Clock = utc_now
    sleep: Sleep = asyncio.sleep


# --- commands -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Register:
    """Open a customer account."""

    email: str
    password: str


@dataclass(frozen=True, slots=True)
class LogIn:
    """Exchange the right password for a token; ``client`` is the caller's address, for the
    throttle."""

    email: str
    password: str
    client: str = UNKNOWN_CLIENT


@dataclass(frozen=True, slots=True)
class CreateAdmin:
    """Create the operator's admin account on first start."""

    email: str
    password: str


# --- transactions -------------------------------------------------------------------------------


def register_user(connection: Connection, users: Users, user: User) -> User:
    if users.by_email(connection, user.email) is not None:
        raise EmailTaken(f"{user.email} already has an account")
    # Two registrations of one email at the same moment both pass the check above; the unique
    # constraint behind users.add refuses the second.
    users.add(connection, user)
    _registered(connection, user)
    return user


def _registered(connection: Connection, user: User) -> None:
    """Tell the other services, once this transaction commits."""
    record(
        connection,
        UserRegistered(user_id=user.id, email=user.email, registered_at=user.created_at),
        aggregate=user.id,
    )


def add_admin(connection: Connection, users: Users, admin: User) -> bool:
    """Create the admin account unless the email exists; whether this call created it."""
    if users.by_email(connection, admin.email) is not None:
        return False
    try:
        users.add(connection, admin)
    except EmailTaken:
        return False  # another replica created it between our check and our insert
    _registered(connection, admin)
    return True


def find_user_by_email(connection: Connection, users: Users, email: str) -> User | None:
    return users.by_email(connection, email)


def list_users(
    connection: Connection, users: Users, after: UserCursor | None, limit: int
) -> Page[User]:
    """One page of accounts, by id, from after the account ``after`` names."""
    limit = page_size(limit, USERS_PAGE_MAX)
    rows = users.page(connection, after.id if after else None, limit + 1)
    return paged(USER_CURSORS, rows, limit, lambda user: UserCursor(user.id))


def find_user(connection: Connection, users: Users, user_id: str) -> User:
    user = users.get(connection, user_id)
    if user is None:
        raise UnknownUser(f"there is no user {user_id}")
    return user


@dataclass(frozen=True)
class Admission:
    """A login attempt let through: the account, if any, and how long to wait before checking."""

    user: User | None
    pause: timedelta


def admit_login(
    connection: Connection,
    users: Users,
    login_attempts: LoginAttempts,
    email: str,
    client: str,
    now: datetime,
    policy: LoginPolicy,
) -> Admission:
    """Count one login attempt for ``email`` from ``client``, or refuse it while that client is
    locked out of that email."""
    # The email's record of every client first, then the client's own: every login takes the
    # two locks in this order, so two logins never each hold one and wait for the other.
    every = login_attempts.for_update(connection, email, EVERY_CLIENT)
    pause = every.tally(now, policy)
    mine = login_attempts.for_update(connection, email, client)
    mine.admit(now, policy)
    login_attempts.save(connection, every)
    login_attempts.save(connection, mine)
    login_attempts.forget_idle_since(connection, now - policy.memory)
    return Admission(users.by_email(connection, email), pause)


def complete_login(
    connection: Connection,
    users: Users,
    login_attempts: LoginAttempts,
    signing_keys: SigningKeys,
    user: User,
    client: str,
    new_password_hash: str | None,
) -> SigningKey:
    """Forget the client's failed logins on the account, take the right password back out of
    the tally of every client; return the key that signs the new token."""
    every = login_attempts.for_update(connection, user.email, EVERY_CLIENT)
    every.untally()
    login_attempts.save(connection, every)
    login_attempts.forget(connection, user.email, client)
    if new_password_hash is not None:
        users.set_password_hash(connection, user.id, new_password_hash)
    key = signing_keys.newest(connection)
    if key is None:
        raise RuntimeError("no signing key: identity's startup creates one before serving")
    return key


def ensure_signing_key(
    connection: Connection, signing_keys: SigningKeys, maker: KeyMaker, now: datetime
) -> SigningKey:
    """The current signing key, created when there is none (first start)."""
    key = signing_keys.newest(connection)
    if key is not None:
        return key
    key = maker.generate(1, now)
    try:
        signing_keys.add(connection, key)
    except KeyRotationConflict:
        # Another replica made the first key between our look and our insert: use that one.
        winner = signing_keys.newest(connection)
        if winner is None:
            raise
        return winner
    return key


def rotate_signing_key(
    connection: Connection,
    signing_keys: SigningKeys,
    maker: KeyMaker,
    now: datetime,
    rules: TokenRules,
) -> SigningKey:
    """A new current key; the older ones stay published until their last token has expired."""
    current = signing_keys.newest(connection)
    generation = 1 if current is None else current.generation + 1
    key = maker.generate(generation, now)
    signing_keys.retire_older(
        connection, generation, retirement(now, rules.lifetime, rules.key_leeway)
    )
    signing_keys.add(connection, key)
    on_commit(
        connection, lambda: log.info("signing key rotated", kid=key.kid, generation=key.generation)
    )
    return key


def published_keys(
    connection: Connection, signing_keys: SigningKeys, now: datetime
) -> list[SigningKey]:
    return keys_to_publish(signing_keys.all(connection), now)


def key_set(connection: Connection, signing_keys: SigningKeys, now: datetime) -> dict[str, Any]:
    """The JWKS document: every key a still-valid token may name."""
    return {"keys": [key.public_jwk for key in published_keys(connection, signing_keys, now)]}


# --- steps: password hashing outside any transaction, then transactions --------------------------


async def register(uow: UnitOfWork, parts: Parts, command: Register) -> User:
    email = normalize_email(command.email)
    check_password(command.password, email)
    user = await _new_user(parts, email, command.password, CUSTOMER_ROLES)
    return await uow.run(register_user, parts.users, user)


async def log_in(uow: UnitOfWork, parts: Parts, command: LogIn) -> IssuedToken:
    """A token for the right password."""
    # Not validated: a string that is no email address simply has no account, and answering
    # it differently would tell a caller something.
    email = command.email.strip().lower()
    client = command.client or UNKNOWN_CLIENT
    password = normalize_password(command.password)
    # A login that could not be checked now is refused before it is counted as a failure.
    parts.hashing.check()
    admission = await uow.run(
        admit_login, parts.users, parts.login_attempts, email, client, parts.clock(), parts.policy
    )
    if admission.pause:
        await parts.sleep(admission.pause.total_seconds())
    user = admission.user
    if user is None:
        await parts.hashing.run(parts.passwords.verify_dummy, password)
        raise InvalidCredentials
    new_hash = await parts.hashing.run(_verify, parts.passwords, user.password_hash, password)
    key = await uow.run(
        complete_login,
        parts.users,
        parts.login_attempts,
        parts.signing_keys,
        user,
        client,
        new_hash,
    )
    return _issue(parts, key, user)


def _verify(passwords: PasswordHasher, password_hash: str, password: str) -> str | None:
    """Check ``password`` (in a worker thread); a new hash when ``password_hash`` was made
    with older parameters. One job, so a right password is never refused half-way."""
    if not passwords.verify(password_hash, password):
        raise InvalidCredentials
    if passwords.needs_rehash(password_hash):
        return passwords.hash(password)
    return None


def _issue(parts: Parts, key: SigningKey, user: User) -> IssuedToken:
    now = parts.clock()
    rules = parts.tokens
    claims = AccessClaims(
        issuer=rules.issuer,
        audience=rules.audience,
        subject=user.id,
        email=user.email,
        roles=user.roles,
        issued_at=now,
        expires_at=now + rules.lifetime,
        token_id=uuid.uuid4().hex,
    )
    token = parts.key_maker.sign(key, claims.as_jwt_claims())
    return IssuedToken(token, int(rules.lifetime.total_seconds()))


async def ensure_admin(uow: UnitOfWork, parts: Parts, command: CreateAdmin) -> bool:
    """Create the admin account on first start; whether this call created it.

    The operator's password is taken as given (the production profile's settings refuse the
    default and weak ones). An existing account with the admin's email is left as it is: it is
    never promoted, since whoever registered it first need not be the operator.
    """
    email = normalize_email(command.email)
    existing = await uow.query(find_user_by_email, parts.users, email)
    if existing is not None:
        if not existing.is_admin:
            log.warning("the admin email belongs to an account without the admin role")
        return False
    admin = await _new_user(parts, email, command.password, ADMIN_ROLES)
    created = await uow.run(add_admin, parts.users, admin)
    if created:
        log.info("admin account created", email=email)
    return created


async def _new_user(parts: Parts, email: str, password: str, roles: tuple[str, ...]) -> User:
    """An account for ``email``, its password hashed through the gate."""
    password_hash = await parts.hashing.run(parts.passwords.hash, normalize_password(password))
    return User(
        id=str(uuid.uuid4()),
        email=email,
        password_hash=password_hash,
        roles=roles,
        created_at=parts.clock(),
    )
