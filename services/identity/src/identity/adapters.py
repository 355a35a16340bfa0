"""identity's concrete parts: the tables and their repositories, argon2id, and Ed25519 keys
(stored encrypted under the key-encryption key)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from datetime import datetime
from typing import Any

import jwt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Index,
    Insert,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from agora.columns import timestamp
from agora.db import aware
from agora.sql import insert_if_absent
from identity.domain import (
    EmailTaken,
    KeyRotationConflict,
    LoginRecord,
    SigningKey,
    User,
    roles_of,
)

metadata = MetaData()

# An IPv6 address with a zone fits; a longer client name is cut (it comes from a trusted proxy).
CLIENT_LENGTH = 64

# The migrations (identity/migrations/versions) create these tables; keep the two in step.
users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email", String(254), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("roles", JSON, nullable=False),
    timestamp("created_at"),
    UniqueConstraint("email", name="uq_users_email"),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("generation", Integer, nullable=False),
    # The PKCS#8 PEM sealed by KeyCipher (ADR 26); a plain PEM only in a database from before
    # keys were sealed, until the next start seals it.
    Column("private_key", Text, nullable=False),
    Column("public_jwk", JSON, nullable=False),
    timestamp("created_at"),
    timestamp("retire_at", nullable=True),
    UniqueConstraint("generation", name="uq_signing_keys_generation"),
)

# One row per (email, client) that failed, and one per email for every client together (client
# "", domain.EVERY_CLIENT).
login_throttle = Table(
    "login_throttle",
    metadata,
    Column("email", String(320), primary_key=True),
    Column("client", String(CLIENT_LENGTH), primary_key=True),
    Column("failures", Integer, nullable=False),
    timestamp("window_started_at", nullable=True),
    timestamp("locked_until", nullable=True),
    Column("lockouts", Integer, nullable=False),
    timestamp("last_failure_at", nullable=True),
    Index("ix_login_throttle_last_failure_at", "last_failure_at"),
)


# --- repositories -------------------------------------------------------------------------------


class SqlUsers:
    def add(self, connection: Connection, user: User) -> None:
        statement = insert(users).values(
            id=user.id,
            email=user.email,
            password_hash=user.password_hash,
            roles=list(user.roles),
            created_at=user.created_at,
        )
        _insert_new(connection, statement, EmailTaken(f"{user.email} already has an account"))

    def by_email(self, connection: Connection, email: str) -> User | None:
        row = connection.execute(select(users).where(users.c.email == email)).first()
        return None if row is None else _user(row)

    def get(self, connection: Connection, user_id: str) -> User | None:
        row = connection.execute(select(users).where(users.c.id == user_id)).first()
        return None if row is None else _user(row)

    def set_password_hash(self, connection: Connection, user_id: str, password_hash: str) -> None:
        connection.execute(
            update(users).where(users.c.id == user_id).values(password_hash=password_hash)
        )

    def page(self, connection: Connection, after: str | None, limit: int) -> list[User]:
        query = select(users).order_by(users.c.id).limit(limit)
        if after is not None:
            query = query.where(users.c.id > after)
        return [_user(row) for row in connection.execute(query)]


def _insert_new(connection: Connection, statement: Insert, taken: Exception) -> None:
    """Insert a row, or raise ``taken`` when a unique key refuses it; in a savepoint, so that a
    refused insert leaves the surrounding transaction usable."""
    try:
        with connection.begin_nested():
            connection.execute(statement)
    except IntegrityError as error:
        raise taken from error


def _user(row: Row[Any]) -> User:
    return User(
        id=row.id,
        email=row.email,
        password_hash=row.password_hash,
        roles=roles_of(list(row.roles)),
        created_at=aware(row.created_at),
    )


class SqlSigningKeys:
    """The signing keys, their private halves sealed by ``cipher`` in the table."""

    def __init__(self, cipher: KeyCipher) -> None:
        self._cipher = cipher

    def all(self, connection: Connection) -> list[SigningKey]:
        rows = connection.execute(select(signing_keys).order_by(signing_keys.c.generation.desc()))
        return [self._key(row) for row in rows]

    def newest(self, connection: Connection) -> SigningKey | None:
        statement = select(signing_keys).order_by(signing_keys.c.generation.desc()).limit(1)
        row = connection.execute(statement).first()
        return None if row is None else self._key(row)

    def add(self, connection: Connection, key: SigningKey) -> None:
        statement = insert(signing_keys).values(
            kid=key.kid,
            generation=key.generation,
            private_key=self._cipher.seal(key.kid, key.private_pem),
            public_jwk=key.public_jwk,
            created_at=key.created_at,
            retire_at=key.retire_at,
        )
        taken = KeyRotationConflict(
            f"a key of generation {key.generation} was made at the same moment"
        )
        _insert_new(connection, statement, taken)

    def retire_older(self, connection: Connection, generation: int, at: datetime) -> None:
        connection.execute(
            update(signing_keys)
            .where(signing_keys.c.generation < generation, signing_keys.c.retire_at.is_(None))
            .values(retire_at=at)
        )

    def seal_plain(self, connection: Connection) -> int:
        """Encrypt the keys an older version stored in plain text; how many there were."""
        # FOR UPDATE: a second replica sealing at the same moment waits, then finds none left.
        statement = (
            select(signing_keys.c.kid, signing_keys.c.private_key)
            .where(signing_keys.c.private_key.not_like(f"{KeyCipher.PREFIX}%"))
            .with_for_update()
        )
        plain = connection.execute(statement).all()
        if not plain:
            return 0
        if connection.dialect.name == "sqlite":
            # Zero the space the plain text leaves, where SQLite frees it (builds without
            # SECURE_DELETE keep it as it was). Best effort: a page SQLite rebuilds may keep
            # fragments, so a key that lay in plain text is to be rotated out (ADR 26).
            connection.execute(text("PRAGMA secure_delete = ON"))
        for kid, pem in plain:
            connection.execute(
                update(signing_keys)
                .where(signing_keys.c.kid == kid)
                .values(private_key=self._cipher.seal(kid, pem))
            )
        return len(plain)

    def _key(self, row: Row[Any]) -> SigningKey:
        return SigningKey(
            kid=row.kid,
            generation=row.generation,
            private_pem=self._cipher.open(row.kid, row.private_key),
            public_jwk=dict(row.public_jwk),
            created_at=aware(row.created_at),
            retire_at=aware(row.retire_at),
        )


class SqlLoginAttempts:
    # A record may be inserted and deleted by concurrent transactions between our insert and our
    # read (a first failure racing a success that forgets it); each turn of the loop sees one
    # of them win, so a few turns always settle.
    TRIES = 10

    def for_update(self, connection: Connection, email: str, client: str) -> LoginRecord:
        client = client[:CLIENT_LENGTH]
        for _ in range(self.TRIES):
            found = self._locked(connection, email, client)
            if found is not None:
                return found
            connection.execute(_insert_if_absent(connection, email, client))
        raise RuntimeError(f"the login record of {email} kept vanishing inside its transaction")

    def _locked(self, connection: Connection, email: str, client: str) -> LoginRecord | None:
        # FOR UPDATE serializes concurrent attempts on PostgreSQL; SQLite's write transactions
        # (BEGIN IMMEDIATE) are serialized already and ignore the clause.
        statement = (
            select(login_throttle)
            .where(login_throttle.c.email == email, login_throttle.c.client == client)
            .with_for_update()
        )
        row = connection.execute(statement).first()
        if row is None:
            return None
        return LoginRecord(
            email=row.email,
            client=row.client,
            failures=row.failures,
            window_started_at=aware(row.window_started_at),
            locked_until=aware(row.locked_until),
            lockouts=row.lockouts,
            last_failure_at=aware(row.last_failure_at),
        )

    def save(self, connection: Connection, attempts: LoginRecord) -> None:
        connection.execute(
            update(login_throttle)
            .where(
                login_throttle.c.email == attempts.email,
                login_throttle.c.client == attempts.client[:CLIENT_LENGTH],
            )
            .values(
                failures=attempts.failures,
                window_started_at=attempts.window_started_at,
                locked_until=attempts.locked_until,
                lockouts=attempts.lockouts,
                last_failure_at=attempts.last_failure_at,
            )
        )

    def forget(self, connection: Connection, email: str, client: str) -> None:
        connection.execute(
            delete(login_throttle).where(
                login_throttle.c.email == email, login_throttle.c.client == client[:CLIENT_LENGTH]
            )
        )

    def forget_idle_since(self, connection: Connection, moment: datetime) -> None:
        # Only rows no other transaction holds: waiting for them while holding this login's own
        # rows could deadlock with a login that holds one of them and waits for ours.
        idle = (
            select(login_throttle.c.email, login_throttle.c.client)
            .where(login_throttle.c.last_failure_at < moment)
            .limit(IDLE_PURGE_BATCH)
            .with_for_update(skip_locked=True)
        )
        for email, client in connection.execute(idle).all():
            connection.execute(
                delete(login_throttle).where(
                    login_throttle.c.email == email, login_throttle.c.client == client
                )
            )


# Idle rows purged by one login at most: the purge never makes a login slow.
IDLE_PURGE_BATCH = 20


def _insert_if_absent(connection: Connection, email: str, client: str) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING in the connection's dialect: never an error, never a wait
    on the transaction that inserted the same record unless it is still undecided."""
    values = {"email": email, "client": client, "failures": 0, "lockouts": 0}
    return insert_if_absent(connection, login_throttle).values(values)


# --- passwords ----------------------------------------------------------------------------------


class Argon2Passwords:
    """argon2id hashes in the PHC string format (``$argon2id$v=19$m=...``).

    The defaults are OWASP's password storage minimum for argon2id (19 MiB, two passes, one
    lane): one hash takes one core for about 25 ms on the reference machine (FIELD-NOTES.md).
    """

    def __init__(self, *, time_cost: int = 2, memory_cost: int = 19456, parallelism: int = 1):
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


class WrongKeyEncryptionKey(RuntimeError):
    """A stored signing key does not open with the key-encryption key identity was given."""


class KeyCipher:
    """Seals private keys for storage: AES-256-GCM under a key derived (HKDF-SHA256) from the
    key-encryption key, with the key id as associated data, so a sealed key copied onto another
    row does not open. Sealed form: ``PREFIX`` + base64url(12-byte nonce + ciphertext + tag).
    """

    PREFIX = "aes256gcm:"
    _NONCE_BYTES = 12
    _PURPOSE = b"agora identity signing keys v1"

    def __init__(self, secret: str, *, source: str) -> None:
        """``secret``: the key-encryption key; ``source``: where it came from, for errors."""
        derive = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=self._PURPOSE)
        self._aead = AESGCM(derive.derive(secret.encode()))
        self._source = source

    def seal(self, kid: str, pem: str) -> str:
        nonce = os.urandom(self._NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, pem.encode(), kid.encode())
        return self.PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, kid: str, stored: str) -> str:
        """The PEM of a stored key. A plain PEM (from before keys were sealed) passes as it is:
        the start seals it, and a replica of the older version may still write one meanwhile."""
        if not stored.startswith(self.PREFIX):
            return stored
        try:
            raw = base64.urlsafe_b64decode(stored.removeprefix(self.PREFIX))
            nonce, sealed = raw[: self._NONCE_BYTES], raw[self._NONCE_BYTES :]
            return self._aead.decrypt(nonce, sealed, kid.encode()).decode()
        # ValueError: not base64, or not text once opened; both mean the row was altered.
        except (InvalidTag, ValueError) as error:
            raise WrongKeyEncryptionKey(
                f"signing key {kid} does not open with the key-encryption key from "
                f"{self._source}: it is not the key the signing keys were encrypted with (or "
                "the stored key was altered). Start identity with the key it used before."
            ) from error


def _thumbprint(members: dict[str, str]) -> str:
    """The JWK thumbprint (RFC 7638) of a public key: a key id that names the key itself."""
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    digest = hashlib.sha256(canonical).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
