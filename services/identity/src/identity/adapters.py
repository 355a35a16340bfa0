"""identity's concrete parts: the tables and their repositories, argon2id, and Ed25519 keys."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from contextlib import suppress
from datetime import datetime
from typing import Any

import jwt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from agora.db import aware
from identity.domain import (
    EmailTaken,
    KeyRotationConflict,
    LoginAttempts,
    SigningKey,
    User,
    roles_of,
)

metadata = MetaData()

# The migrations (identity/migrations/versions) create these tables; keep the two in step.
users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email", String(254), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("roles", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("email", name="uq_users_email"),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("generation", Integer, nullable=False),
    Column("private_key_pem", Text, nullable=False),
    Column("public_jwk", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("retire_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("generation", name="uq_signing_keys_generation"),
)

login_failures = Table(
    "login_failures",
    metadata,
    Column("email", String(320), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("window_started_at", DateTime(timezone=True), nullable=True),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("lockouts", Integer, nullable=False),
    Column("last_failure_at", DateTime(timezone=True), nullable=True),
    Index("ix_login_failures_last_failure_at", "last_failure_at"),
)


# --- repositories -------------------------------------------------------------------------------


class SqlUsers:
    def add(self, session: Session, user: User) -> None:
        try:
            # A savepoint, so that a refused insert leaves the surrounding transaction usable.
            with session.begin_nested():
                session.execute(
                    insert(users).values(
                        id=user.id,
                        email=user.email,
                        password_hash=user.password_hash,
                        roles=list(user.roles),
                        created_at=user.created_at,
                    )
                )
        except IntegrityError as error:
            raise EmailTaken(f"{user.email} already has an account") from error

    def by_email(self, session: Session, email: str) -> User | None:
        row = session.execute(select(users).where(users.c.email == email)).first()
        return None if row is None else _user(row)

    def get(self, session: Session, user_id: str) -> User | None:
        row = session.execute(select(users).where(users.c.id == user_id)).first()
        return None if row is None else _user(row)

    def set_password_hash(self, session: Session, user_id: str, password_hash: str) -> None:
        session.execute(
            update(users).where(users.c.id == user_id).values(password_hash=password_hash)
        )

    def page(self, session: Session, after: str | None, limit: int) -> list[User]:
        query = select(users).order_by(users.c.id).limit(limit)
        if after is not None:
            query = query.where(users.c.id > after)
        return [_user(row) for row in session.execute(query)]


def _user(row: Row[Any]) -> User:
    return User(
        id=row.id,
        email=row.email,
        password_hash=row.password_hash,
        roles=roles_of(list(row.roles)),
        created_at=aware(row.created_at),
    )


class SqlSigningKeys:
    def all(self, session: Session) -> list[SigningKey]:
        rows = session.execute(select(signing_keys).order_by(signing_keys.c.generation.desc()))
        return [_key(row) for row in rows]

    def newest(self, session: Session) -> SigningKey | None:
        statement = select(signing_keys).order_by(signing_keys.c.generation.desc()).limit(1)
        row = session.execute(statement).first()
        return None if row is None else _key(row)

    def add(self, session: Session, key: SigningKey) -> None:
        try:
            with session.begin_nested():
                session.execute(
                    insert(signing_keys).values(
                        kid=key.kid,
                        generation=key.generation,
                        private_key_pem=key.private_pem,
                        public_jwk=key.public_jwk,
                        created_at=key.created_at,
                        retire_at=key.retire_at,
                    )
                )
        except IntegrityError as error:
            raise KeyRotationConflict(
                f"a key of generation {key.generation} was made at the same moment"
            ) from error

    def retire_older(self, session: Session, generation: int, at: datetime) -> None:
        session.execute(
            update(signing_keys)
            .where(signing_keys.c.generation < generation, signing_keys.c.retire_at.is_(None))
            .values(retire_at=at)
        )


def _key(row: Row[Any]) -> SigningKey:
    return SigningKey(
        kid=row.kid,
        generation=row.generation,
        private_pem=row.private_key_pem,
        public_jwk=dict(row.public_jwk),
        created_at=aware(row.created_at),
        retire_at=aware(row.retire_at),
    )


class SqlLoginAttempts:
    def for_update(self, session: Session, email: str) -> LoginAttempts:
        found = self._locked(session, email)
        if found is not None:
            return found
        # Two first failures at the same moment both insert; the primary key keeps one and the
        # other reads that one below.
        with suppress(IntegrityError), session.begin_nested():
            session.execute(insert(login_failures).values(email=email, failures=0, lockouts=0))
        found = self._locked(session, email)
        if found is None:
            raise RuntimeError(f"the login record of {email} vanished inside its transaction")
        return found

    def _locked(self, session: Session, email: str) -> LoginAttempts | None:
        # FOR UPDATE serializes concurrent attempts on PostgreSQL; SQLite's write transactions
        # (BEGIN IMMEDIATE) are serialized already and ignore the clause.
        statement = select(login_failures).where(login_failures.c.email == email).with_for_update()
        row = session.execute(statement).first()
        if row is None:
            return None
        return LoginAttempts(
            email=row.email,
            failures=row.failures,
            window_started_at=aware(row.window_started_at),
            locked_until=aware(row.locked_until),
            lockouts=row.lockouts,
            last_failure_at=aware(row.last_failure_at),
        )

    def save(self, session: Session, attempts: LoginAttempts) -> None:
        session.execute(
            update(login_failures)
            .where(login_failures.c.email == attempts.email)
            .values(
                failures=attempts.failures,
                window_started_at=attempts.window_started_at,
                locked_until=attempts.locked_until,
                lockouts=attempts.lockouts,
                last_failure_at=attempts.last_failure_at,
            )
        )

    def forget(self, session: Session, email: str) -> None:
        session.execute(delete(login_failures).where(login_failures.c.email == email))

    def forget_idle_since(self, session: Session, moment: datetime) -> None:
        session.execute(delete(login_failures).where(login_failures.c.last_failure_at < moment))


# --- passwords ----------------------------------------------------------------------------------


class Argon2Passwords:
    """argon2id hashes in the PHC string format (``$argon2id$v=19$m=...``)."""

    def __init__(self, *, time_cost: int = 3, memory_cost: int = 65536, parallelism: int = 4):
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, type=Type.ID
        )
        self._dummy: str | None = None

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)

    def verify_dummy(self, password: str) -> None:
        # Made on first use with the current parameters, so it costs what a real check costs.
        if self._dummy is None:
            self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        self.verify(self._dummy, password)


# --- signing keys -------------------------------------------------------------------------------


class Ed25519Keys:
    """Makes Ed25519 signing keys and signs access tokens with them (EdDSA, RFC 8037)."""

    def __init__(self) -> None:
        # Parsing a PEM on every login is avoidable work; keys never change once made.
        self._loaded: dict[str, Ed25519PrivateKey] = {}

    def generate(self, generation: int, now: datetime) -> SigningKey:
        private = Ed25519PrivateKey.generate()
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        kid = _thumbprint({"crv": "Ed25519", "kty": "OKP", "x": x})
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}
        return SigningKey(
            kid=kid, generation=generation, private_pem=pem, public_jwk=jwk, created_at=now
        )

    def sign(self, key: SigningKey, claims: dict[str, Any]) -> str:
        private = self._loaded.get(key.kid)
        if private is None:
            loaded = serialization.load_pem_private_key(key.private_pem.encode(), password=None)
            if not isinstance(loaded, Ed25519PrivateKey):
                raise TypeError(f"signing key {key.kid} is not an Ed25519 key")
            private = self._loaded[key.kid] = loaded
        return jwt.encode(
            claims, private, algorithm="EdDSA", headers={"kid": key.kid, "typ": "at+jwt"}
        )


def _thumbprint(members: dict[str, str]) -> str:
    """The JWK thumbprint (RFC 7638) of a public key: a key id that names the key itself."""
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    digest = hashlib.sha256(canonical).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
