"""identity's composition root: the one place that picks the concrete parts.

``create_app`` is what the runner serves; ``migrate`` brings the database up to date before the
replicas start.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI

from agora.app import Migrate, Resources, ServiceDefinition, create_service_app
from agora.auth import TokenVerifier, secrets_dir
from agora.db import UnitOfWork
from agora.secrets import secret_file
from identity import application
from identity.adapters import (
    Argon2Passwords,
    Ed25519Keys,
    KeyCipher,
    SqlLoginAttempts,
    SqlSigningKeys,
    SqlUsers,
)
from identity.application import (
    Clock,
    CreateAdmin,
    HashingGate,
    Parts,
    PasswordHasher,
    SigningKeys,
    TokenRules,
    utc_now,
)
from identity.domain import LoginPolicy
from identity.entrypoints import ERRORS, router
from identity.settings import IdentitySettings

MIGRATIONS = Path(__file__).parent / "migrations"

SERVICE = ServiceDefinition(
    title="identity",
    description="Users, passwords, roles, access tokens and the keys that sign them.",
    routers=[router],
    errors=ERRORS,
    migrations=MIGRATIONS,
)

log = structlog.get_logger("identity")


def key_cipher(settings: IdentitySettings) -> KeyCipher:
    """What seals the signing keys: the operator's key-encryption key, or (embedded profile only,
    the production settings refuse to go without one) a key made on first use and kept in an
    owner-only file beside the data folder, so a test's own data folder gets its own."""
    given = settings.given_key_encryption_key()
    if given is not None:
        source = str(settings.key_encryption_key_file or "AGORA_IDENTITY_KEY_ENCRYPTION_KEY")
        return KeyCipher(given, source=source)
    path = secrets_dir(settings.data_dir) / "identity.kek"
    return KeyCipher(secret_file(path), source=str(path))


async def open_signing_keys(uow: UnitOfWork, keys: SqlSigningKeys) -> None:
    """Seal the keys an older version stored in plain text, then open every stored key, so that a
    wrong key-encryption key stops identity at its start rather than at the first login."""
    sealed = await uow.run(keys.seal_plain)
    if sealed:
        log.warning(
            "signing keys stored in plain text are now encrypted; copies made before, such as "
            "backups, still hold them: rotate the keys twice (POST /keys/rotate)",
            keys=sealed,
        )
    await uow.query(keys.all)


class LocalKeySet:
    """The token verifier's key source inside identity: its own key table, read without HTTP.

    The resources it reads through (the unit of work and the parts) are made by the app
    factory, after the verifier; they are handed over once the app exists, and read at each
    call, so parts provided anew are the ones used.
    """

    def __init__(self) -> None:
        self._resources: Resources | None = None

    def bind(self, resources: Resources) -> None:
        self._resources = resources

    async def __call__(self) -> dict[str, Any]:
        if self._resources is None or self._resources.uow is None:
            raise RuntimeError("the key set is read before the app was built")
        parts = self._resources.get(Parts)
        return await self._resources.uow.query(
            application.key_set, parts.signing_keys, parts.clock()
        )


def make_parts(
    settings: IdentitySettings,
    signing_keys: SigningKeys,
    *,
    clock: Clock = utc_now,
    passwords: PasswordHasher | None = None,
) -> Parts:
    """The parts ``settings`` choose: the SQL repositories, argon2id with the settings'
    parameters (unless ``passwords``), Ed25519 keys, and the token and login rules."""
    return Parts(
        users=SqlUsers(),
        signing_keys=signing_keys,
        login_attempts=SqlLoginAttempts(),
        passwords=passwords
        or Argon2Passwords(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        ),
        key_maker=Ed25519Keys(),
        tokens=TokenRules(
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            lifetime=timedelta(seconds=settings.token_lifetime),
        ),
        policy=LoginPolicy(
            max_failures=settings.login_max_failures,
            window=timedelta(seconds=settings.login_window_seconds),
            first_lock=timedelta(seconds=settings.login_lock_seconds),
            longest_lock=timedelta(seconds=settings.login_lock_max_seconds),
            slow_after=settings.login_slow_after,
            slow_step=timedelta(seconds=settings.login_slow_step_seconds),
            longest_pause=timedelta(seconds=settings.login_slow_max_seconds),
        ),
        hashing=HashingGate(
            at_once=settings.hash_concurrency,
            waiting=settings.hash_queue,
            retry_after=timedelta(seconds=settings.hash_retry_after_seconds),
        ),
        clock=clock,
    )


def create_app(
    settings: IdentitySettings | None = None,
    *,
    clock: Clock = utc_now,
    passwords: PasswordHasher | None = None,
) -> FastAPI:
    """identity's app. ``clock`` is for tests that need time to pass (token expiry, locks),
    ``passwords`` for tests that need to hold a password check while they look (bounded
    hashing); by default argon2id with the settings' parameters."""
    settings = settings or IdentitySettings()
    keys = SqlSigningKeys(key_cipher(settings))
    parts = make_parts(settings, keys, clock=clock, passwords=passwords)
    key_set = LocalKeySet()
    # The key set is read from the local database, so a token naming a key this process has not
    # seen (made by a rotation a moment ago, perhaps on another replica) may re-read it at once
    # instead of waiting out the chassis's refetch interval meant for HTTP fetches.
    verifier = TokenVerifier(
        key_set,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        refetch_interval=0.0,
    )

    async def prepare(resources: Resources) -> None:
        # Both steps are safe when two replicas start together: unique constraints pick one
        # first key and one admin account.
        uow, parts = resources.uow, resources.get(Parts)
        assert uow is not None
        await open_signing_keys(uow, keys)
        await uow.run(
            application.ensure_signing_key, parts.signing_keys, parts.key_maker, parts.clock()
        )
        admin = CreateAdmin(settings.admin_email, settings.admin_password.get_secret_value())
        await application.ensure_admin(uow, parts, admin)

    app = create_service_app(
        settings,
        SERVICE,
        on_startup=[prepare],
        verifier=verifier,
    )
    resources: Resources = app.state.resources
    resources.provide(parts)
    key_set.bind(resources)
    return app


migrate = Migrate(IdentitySettings, MIGRATIONS)
