"""identity's settings: the admin account comes from the shared AGORA_ADMIN_* names."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from identity.settings import IdentitySettings

KEK = "Zm9yIHRoZSB0ZXN0cyBvbmx5OiBhIHJhbmRvbSBrZXk="


def test_the_admin_account_is_read_from_the_shared_unprefixed_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGORA_ADMIN_EMAIL", "root@shop.example")
    monkeypatch.setenv("AGORA_ADMIN_PASSWORD", "a long admin passphrase")
    monkeypatch.setenv("AGORA_IDENTITY_TOKEN_LIFETIME", "900")

    settings = IdentitySettings()

    assert settings.admin_email == "root@shop.example"
    assert settings.admin_password.get_secret_value() == "a long admin passphrase"
    assert settings.token_lifetime == 900


def test_the_local_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AGORA_ADMIN_EMAIL", "AGORA_ADMIN_PASSWORD", "AGORA_PROFILE"):
        monkeypatch.delenv(name, raising=False)

    settings = IdentitySettings()

    assert settings.admin_email == "admin@agora.local"
    assert settings.admin_password.get_secret_value() == "agora-admin-password"
    assert "agora-admin-password" not in repr(settings), "the password stays out of logs"


def test_production_refuses_to_start_with_the_default_admin_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AGORA_ADMIN_PASSWORD", raising=False)
    monkeypatch.setenv("AGORA_PROFILE", "production")

    with pytest.raises(
        ValidationError, match="AGORA_ADMIN_PASSWORD is still the published default"
    ):
        IdentitySettings()


def test_production_refuses_a_weak_admin_password() -> None:
    with pytest.raises(ValidationError, match=r"too weak for production: .*at least 10"):
        IdentitySettings(profile="production", admin_password="hunter2")


def test_production_accepts_an_admin_password_of_its_own() -> None:
    settings = IdentitySettings(
        profile="production", admin_password="a long operator passphrase", key_encryption_key=KEK
    )

    assert settings.profile == "production"


def test_production_refuses_to_start_without_a_key_encryption_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGORA_PROFILE", "production")
    monkeypatch.setenv("AGORA_ADMIN_PASSWORD", "a long operator passphrase")

    with pytest.raises(
        ValidationError, match="production profile needs AGORA_IDENTITY_KEY_ENCRYPTION_KEY"
    ):
        IdentitySettings()


def test_production_takes_the_key_encryption_key_from_the_environment_or_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AGORA_PROFILE", "production")
    monkeypatch.setenv("AGORA_ADMIN_PASSWORD", "a long operator passphrase")
    mounted = tmp_path / "kek"
    mounted.write_text(KEK + "\n")

    monkeypatch.setenv("AGORA_IDENTITY_KEY_ENCRYPTION_KEY", KEK)
    direct = IdentitySettings()
    monkeypatch.delenv("AGORA_IDENTITY_KEY_ENCRYPTION_KEY")
    monkeypatch.setenv("AGORA_IDENTITY_KEY_ENCRYPTION_KEY_FILE", str(mounted))
    from_file = IdentitySettings()

    assert direct.given_key_encryption_key() == KEK
    assert from_file.given_key_encryption_key() == KEK
    assert KEK not in repr(direct), "the key stays out of logs"


def test_a_key_encryption_key_file_that_is_missing_is_refused_by_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "kek"

    with pytest.raises(ValidationError, match=f"names {missing}, which is missing or empty"):
        IdentitySettings(key_encryption_key_file=missing)


def test_a_short_key_encryption_key_is_refused_as_a_password_not_a_key() -> None:
    with pytest.raises(ValidationError, match="key-encryption key is too short: at least 32"):
        IdentitySettings(key_encryption_key="hunter2hunter2")


def test_a_key_encryption_key_given_twice_is_refused(tmp_path: Path) -> None:
    mounted = tmp_path / "kek"
    mounted.write_text(KEK)

    with pytest.raises(ValidationError, match="not both"):
        IdentitySettings(key_encryption_key=KEK, key_encryption_key_file=mounted)
