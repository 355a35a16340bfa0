"""identity's settings: the admin account comes from the shared AGORA_ADMIN_* names."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from identity.settings import IdentitySettings


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
    settings = IdentitySettings(profile="production", admin_password="a long operator passphrase")

    assert settings.profile == "production"
