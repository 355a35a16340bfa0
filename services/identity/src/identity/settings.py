"""identity's settings: its own (``AGORA_IDENTITY_*``) and the admin account (``AGORA_ADMIN_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import AliasChoices, Field, SecretStr, model_validator

from agora.secrets import read_secret
from agora.settings import ServiceSettings
from identity.domain import WeakPassword, check_password

DEFAULT_ADMIN_EMAIL = "admin@agora.local"
DEFAULT_ADMIN_PASSWORD = "agora-admin-password"  # noqa: S105 (the documented local default)
# Shorter than this, a key-encryption key is a password, not a key (`openssl rand -base64 32`
# gives 44 characters).
KEY_ENCRYPTION_KEY_MIN_LENGTH = 32


class IdentitySettings(ServiceSettings):
    service_name: ClassVar[str] = "identity"
    model_config = ServiceSettings.prefixed("AGORA_IDENTITY_")

    # The admin account created at first start. The names are shared, un-prefixed ones: the
    # operator sets them once for the whole system (README).
    admin_email: str = Field(
        default=DEFAULT_ADMIN_EMAIL,
        validation_alias=AliasChoices("AGORA_ADMIN_EMAIL", "admin_email"),
    )
    admin_password: SecretStr = Field(
        default=SecretStr(DEFAULT_ADMIN_PASSWORD),
        validation_alias=AliasChoices("AGORA_ADMIN_PASSWORD", "admin_password"),
    )

    # The key that encrypts the signing keys in the database (ADR 26): given directly, or in a file
    # (a mounted secret). Required in production; the embedded profile makes one on first use in
    # <data_dir>/../secrets/identity.kek.
    key_encryption_key: SecretStr | None = None
    key_encryption_key_file: Path | None = None

    # How long an access token is valid, in seconds.
    token_lifetime: int = Field(default=3600, ge=60, le=24 * 3600)

    # The login throttle (identity.domain.LoginPolicy), per (email, client): login_max_failures
    # failures from one client within the window lock that client out of that email for
    # lock_seconds, doubling with each further lock up to lock_max_seconds. Other clients are not
    # locked: once the email has login_slow_after failures within the window from all clients
    # together, each further attempt on it waits login_slow_step_seconds more, up to
    # login_slow_max_seconds (keep that well under the gateway's timeout).
    login_max_failures: int = Field(default=5, ge=1)
    login_window_seconds: float = Field(default=300.0, gt=0)
    login_lock_seconds: float = Field(default=60.0, gt=0)
    login_lock_max_seconds: float = Field(default=900.0, gt=0)
    login_slow_after: int = Field(default=10, ge=1)
    login_slow_step_seconds: float = Field(default=0.2, ge=0)
    login_slow_max_seconds: float = Field(default=2.0, ge=0)

    # argon2id cost: OWASP's password storage minimum (19 MiB, t=2, p=1), about 25 ms of one core
    # per hash on the 2-vCPU reference machine. Hashes made with other parameters are renewed at
    # their next successful login. Tests may lower it; production should not.
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_memory_kib: int = Field(default=19456, ge=8)
    argon2_parallelism: int = Field(default=1, ge=1)

    # Bounded hashing (identity.application.HashingGate), shared by logins and registrations:
    # hash_concurrency hashes at once, each in a worker thread (one core each at p=1, so about the
    # cores this replica may use); hash_queue more may wait for a thread; any further one is
    # refused at once with 429 and Retry-After: hash_retry_after_seconds.
    hash_concurrency: int = Field(default=2, ge=1)
    hash_queue: int = Field(default=16, ge=0)
    hash_retry_after_seconds: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _no_default_admin_password_in_production(self) -> IdentitySettings:
        if self.profile != "production":
            return self
        password = self.admin_password.get_secret_value()
        if password == DEFAULT_ADMIN_PASSWORD:
            raise ValueError(
                "AGORA_ADMIN_PASSWORD is still the published default; the production profile "
                "needs an admin password of its own"
            )
        try:
            check_password(password, self.admin_email.strip().lower())
        except WeakPassword as error:
            raise ValueError(f"AGORA_ADMIN_PASSWORD is too weak for production: {error}") from error
        return self

    @model_validator(mode="after")
    def _key_encryption_key_given_in_production(self) -> IdentitySettings:
        if self.key_encryption_key is not None and self.key_encryption_key_file is not None:
            raise ValueError(
                "set AGORA_IDENTITY_KEY_ENCRYPTION_KEY or AGORA_IDENTITY_KEY_ENCRYPTION_KEY_FILE, "
                "not both"
            )
        given = self.given_key_encryption_key()
        if given is None and self.profile == "production":
            raise ValueError(
                "the production profile needs AGORA_IDENTITY_KEY_ENCRYPTION_KEY (or "
                "AGORA_IDENTITY_KEY_ENCRYPTION_KEY_FILE naming a file that holds it): the key "
                "that encrypts identity's signing keys, at least "
                f"{KEY_ENCRYPTION_KEY_MIN_LENGTH} random characters (openssl rand -base64 32)"
            )
        if given is not None and len(given) < KEY_ENCRYPTION_KEY_MIN_LENGTH:
            raise ValueError(
                f"the key-encryption key is too short: at least {KEY_ENCRYPTION_KEY_MIN_LENGTH} "
                "random characters (openssl rand -base64 32)"
            )
        return self

    def given_key_encryption_key(self) -> str | None:
        """The key-encryption key the operator gave, directly or in its file; None if none.

        Raises ValueError when the file named is missing or empty.
        """
        if self.key_encryption_key is not None:
            return self.key_encryption_key.get_secret_value()
        if self.key_encryption_key_file is None:
            return None
        where = f"AGORA_IDENTITY_KEY_ENCRYPTION_KEY_FILE names {self.key_encryption_key_file}"
        try:
            found = read_secret(self.key_encryption_key_file)
        except OSError as error:
            raise ValueError(f"{where}, which cannot be read: {error.strerror}") from error
        if found is None:
            raise ValueError(f"{where}, which is missing or empty")
        return found
