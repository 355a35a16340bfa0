"""The signing keys at rest: sealed under the key-encryption key, on SQLite and PostgreSQL.

Whoever reads identity's database (the file, a dump, a backup) must not find a private key there:
one is all it takes to sign an admin's token.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
)

from agora.migrations import upgrade
from agora_tools.testing import file_mode, read_from, write_to
from identity.adapters import (
    Ed25519Keys,
    KeyCipher,
    SqlSigningKeys,
    WrongKeyEncryptionKey,
    signing_keys,
)
from identity.bootstrap import MIGRATIONS, create_app
from identity.domain import SigningKey
from identity.settings import IdentitySettings

from .conftest import ADMIN_EMAIL, Api, Clock, Start, bearer, make_settings

KEK = "Zm9yIHRoZSB0ZXN0cyBvbmx5OiBhIHJhbmRvbSBrZXk="
OTHER_KEK = "YW5vdGhlciBrZXksIG5vdCB0aGUgb25lIGl0IHdhcyBzZWFsZWQgd2l0aA=="


# --- reading the database as someone holding a copy of it would ---------------------------------


def stored_private_keys(url: str) -> dict[str, str]:
    """What the key table holds in place of each private key, by key id."""

    def read(connection: Connection) -> dict[str, str]:
        rows = connection.execute(select(signing_keys.c.kid, signing_keys.c.private_key))
        return {kid: stored for kid, stored in rows}

    return read_from(url, read)


def opened_keys(url: str, kek: str) -> list[SigningKey]:
    return read_from(url, SqlSigningKeys(KeyCipher(kek, source="the test")).all)


def giveaways(key: SigningKey) -> list[bytes]:
    """The forms in which a private key would give itself away: its PEM, the PEM's base64 body,
    and the raw 32-byte Ed25519 seed (as it is and in base64)."""
    loaded = serialization.load_pem_private_key(key.private_pem.encode(), password=None)
    assert isinstance(loaded, Ed25519PrivateKey)
    seed = loaded.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    body = "".join(key.private_pem.splitlines()[1:-1])
    return [key.private_pem.encode(), body.encode(), seed, base64.b64encode(seed)]


def database_bytes(data_dir: Path) -> bytes:
    """Every byte of identity's SQLite database as it lies on disk: the file, its WAL and SHM."""
    return b"".join(path.read_bytes() for path in sorted(data_dir.glob("identity.db*")))


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> IdentitySettings:
    """identity on SQLite in the embedded profile: its key-encryption key made on first use."""
    data = tmp_path / "data"
    return make_settings(f"sqlite:///{data / 'identity.db'}", data)


@contextmanager
def started(settings: IdentitySettings) -> Iterator[Api]:
    """identity on ``settings``, for the tests that look into its SQLite file."""
    clock = Clock()
    with TestClient(create_app(settings, clock=clock)) as client:
        yield Api(client, settings, clock)


# --- sealed at rest -----------------------------------------------------------------------------


def test_the_key_table_holds_no_private_key_only_sealed_ones(start: Start) -> None:
    with start(key_encryption_key=KEK) as api:
        api.client.post("/keys/rotate", headers=bearer(api.admin_token()))
        url = api.settings.database_url

    stored = stored_private_keys(url)
    keys = opened_keys(url, KEK)

    assert len(keys) == 2
    for key in keys:
        assert stored[key.kid].startswith(KeyCipher.PREFIX)
        for giveaway in giveaways(key):
            assert giveaway.decode("latin-1") not in stored[key.kid]


def test_no_private_key_can_be_found_in_the_sqlite_file_while_or_after_identity_runs(
    sqlite_settings: IdentitySettings,
) -> None:
    with started(sqlite_settings) as api:
        api.register("ada@example.com")
        api.client.post("/keys/rotate", headers=bearer(api.admin_token()))
        assert api.me(api.log_in("ada@example.com")).status_code == 200
        running = database_bytes(sqlite_settings.data_dir)
    at_rest = database_bytes(sqlite_settings.data_dir)

    kek = (sqlite_settings.data_dir.parent / "secrets" / "identity.kek").read_text().strip()
    keys = opened_keys(sqlite_settings.database_url, kek)
    assert len(keys) == 2
    for key in keys:
        for giveaway in giveaways(key):
            assert giveaway not in running
            assert giveaway not in at_rest


def test_tokens_signed_before_and_after_a_rotation_verify_after_a_restart(start: Start) -> None:
    with start(key_encryption_key=KEK) as api:
        api.register("ada@example.com")
        before = api.log_in("ada@example.com")
        rotated = api.client.post("/keys/rotate", headers=bearer(api.admin_token()))
        after = api.log_in("ada@example.com")

    with start(key_encryption_key=KEK) as restarted:
        assert rotated.status_code == 201
        assert restarted.me(before).status_code == 200
        assert restarted.me(after).status_code == 200
        assert restarted.me(restarted.log_in("ada@example.com")).status_code == 200


# --- a database from before keys were sealed ----------------------------------------------------

# signing_keys as the version before sealing made it (revision 0002).
old_signing_keys = Table(
    "signing_keys",
    MetaData(),
    Column("kid", String(64), primary_key=True),
    Column("generation", Integer, nullable=False),
    Column("private_key_pem", Text, nullable=False),
    Column("public_jwk", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("retire_at", DateTime(timezone=True), nullable=True),
)


def old_database_with_a_plain_key(url: str) -> SigningKey:
    """A database as the version before sealing left it: one key, its PEM in plain text."""
    upgrade(url, MIGRATIONS, revision="0002")
    key = Ed25519Keys().generate(1, datetime.now(UTC))

    def store(connection: Connection) -> None:
        connection.execute(
            insert(old_signing_keys).values(
                kid=key.kid,
                generation=key.generation,
                private_key_pem=key.private_pem,
                public_jwk=key.public_jwk,
                created_at=key.created_at,
            )
        )

    write_to(url, store)
    return key


def plain_key_before_sealing(url: str) -> str:
    def read(connection: Connection) -> str:
        pem: str = connection.execute(select(old_signing_keys.c.private_key_pem)).scalar_one()
        return pem

    return read_from(url, read)


def test_a_plain_key_from_an_older_database_is_sealed_at_the_next_start_and_keeps_signing(
    settings: IdentitySettings, start: Start
) -> None:
    old_key = old_database_with_a_plain_key(settings.database_url)
    assert plain_key_before_sealing(settings.database_url) == old_key.private_pem

    with start(key_encryption_key=KEK) as api:
        token = api.admin_token()
        assert api.me(token).json()["email"] == ADMIN_EMAIL

    assert jwt.get_unverified_header(token)["kid"] == old_key.kid, "the old key still signs"
    stored = stored_private_keys(settings.database_url)
    assert list(stored) == [old_key.kid]
    assert stored[old_key.kid].startswith(KeyCipher.PREFIX)
    opened = opened_keys(settings.database_url, KEK)
    assert [key.private_pem for key in opened] == [old_key.private_pem]


# --- the key-encryption key ---------------------------------------------------------------------


def test_identity_refuses_to_start_with_another_key_encryption_key_and_says_why(
    start: Start,
) -> None:
    with start(key_encryption_key=KEK) as api:
        api.register("ada@example.com")

    with (
        pytest.raises(
            WrongKeyEncryptionKey,
            match="does not open with the key-encryption key from "
            "AGORA_IDENTITY_KEY_ENCRYPTION_KEY: it is not the key the signing keys were "
            "encrypted with",
        ),
        start(key_encryption_key=OTHER_KEK),
    ):
        pass

    with start(key_encryption_key=KEK) as again:
        assert again.me(again.log_in("ada@example.com")).status_code == 200


def test_identity_refuses_to_start_when_its_own_key_file_was_lost_and_names_the_file(
    sqlite_settings: IdentitySettings,
) -> None:
    kek_file = sqlite_settings.data_dir.parent / "secrets" / "identity.kek"
    with started(sqlite_settings):
        assert kek_file.exists()
    kek_file.unlink()

    with (
        pytest.raises(WrongKeyEncryptionKey, match=f"key-encryption key from {kek_file}"),
        started(sqlite_settings),
    ):
        pass


def test_the_key_encryption_key_can_come_from_a_mounted_file(start: Start, tmp_path: Path) -> None:
    mounted = tmp_path / "mounted" / "kek"
    mounted.parent.mkdir()
    mounted.write_text(KEK + "\n")

    with start(key_encryption_key_file=mounted) as api:
        token = api.admin_token()
        url = api.settings.database_url

    with start(key_encryption_key=KEK) as api:
        assert api.me(token).status_code == 200
    assert all(stored.startswith(KeyCipher.PREFIX) for stored in stored_private_keys(url).values())


def test_the_embedded_key_file_the_database_and_its_journal_are_readable_by_their_owner_only(
    sqlite_settings: IdentitySettings, umask_022: None
) -> None:
    with started(sqlite_settings) as api:
        api.register("ada@example.com")
        data = sqlite_settings.data_dir
        names = ("identity.db", "identity.db-wal", "identity.db-shm")
        files = {name: file_mode(data / name) for name in names}
        secrets = data.parent / "secrets"
        kek_file, secrets_dir = file_mode(secrets / "identity.kek"), file_mode(secrets)

    assert files == dict.fromkeys(names, 0o600)
    assert kek_file == 0o600
    assert secrets_dir == 0o700
