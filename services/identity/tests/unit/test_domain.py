"""identity's rules: email addresses, passwords, roles, the login throttle and key publication."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from identity.domain import (
    ADMIN_ROLES,
    CUSTOMER_ROLES,
    AccessClaims,
    InvalidEmail,
    LoginLocked,
    LoginPolicy,
    LoginRecord,
    SigningKey,
    User,
    WeakPassword,
    check_password,
    keys_to_publish,
    normalize_email,
    retirement,
    roles_of,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = LoginPolicy(
    max_failures=5,
    window=timedelta(minutes=5),
    first_lock=timedelta(minutes=1),
    longest_lock=timedelta(minutes=15),
    memory=timedelta(days=1),
)


# --- email addresses ----------------------------------------------------------------------------


def test_an_email_is_stored_trimmed_and_in_lower_case() -> None:
    assert normalize_email("  Ada.Lovelace@Example.COM \n") == "ada.lovelace@example.com"


def test_the_local_admin_address_is_an_email() -> None:
    assert normalize_email("admin@agora.local") == "admin@agora.local"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "ada",
        "ada@",
        "@example.com",
        "ada@example",
        "ada@@example.com",
        "ada lovelace@example.com",
        "ada@exa mple.com",
        ".ada@example.com",
        "ada..lovelace@example.com",
        "ada@-example.com",
        "ada@example.com\nbcc: eve@example.com",
        "adä@example.com",
    ],
)
def test_what_is_not_an_email_address_is_refused(raw: str) -> None:
    with pytest.raises(InvalidEmail):
        normalize_email(raw)


def test_overlong_addresses_are_refused() -> None:
    with pytest.raises(InvalidEmail, match="64"):
        normalize_email("a" * 65 + "@example.com")
    with pytest.raises(InvalidEmail, match="254"):
        normalize_email("ada@" + "a" * 250 + ".com")


# --- passwords ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    ["correct horse battery", "Tr0ub4dor&3x", "ten chars!", "x" * 120 + "abcdefgh"],
)
def test_a_long_uncommon_password_is_accepted(password: str) -> None:
    check_password(password, "ada@example.com")


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("nine char", "at least 10 characters"),
        ("x" * 125 + "abcd", "at most 128 characters"),
        ("aaaaaaaaaaaa", "5 different characters"),
        ("abababababab", "5 different characters"),
        ("password123", "well-known"),
        ("QwertyUiop", "well-known"),
        ("1234567890", "well-known"),
        ("ada.lovelace-1815", "name part"),
        ("my ADA.LOVELACE pass", "name part"),
    ],
)
def test_a_weak_password_is_refused_saying_which_rule_it_broke(password: str, reason: str) -> None:
    with pytest.raises(WeakPassword, match=reason):
        check_password(password, "ada.lovelace@example.com")


def test_a_short_local_part_is_not_held_against_the_password() -> None:
    check_password("a jolly good passphrase", "jo@example.com")


def test_the_rules_apply_to_the_normalized_password() -> None:
    # The ligature "ﬁ" is one character typed, two ("fi") once normalized: ten in all.
    check_password("\ufb01rewood12", "ada@example.com")
    with pytest.raises(WeakPassword, match="at least 10"):
        check_password("\ufb01rewood1", "ada@example.com")


# --- roles --------------------------------------------------------------------------------------


def test_a_new_account_is_a_customer_only() -> None:
    assert CUSTOMER_ROLES == ("customer",)


def test_the_admin_has_the_admin_role_and_may_still_shop() -> None:
    admin = User("u1", "admin@agora.local", "hash", ADMIN_ROLES, T0)
    customer = User("u2", "ada@example.com", "hash", CUSTOMER_ROLES, T0)
    assert admin.is_admin
    assert "customer" in admin.roles
    assert not customer.is_admin


def test_roles_are_kept_in_one_canonical_order_without_repeats() -> None:
    assert roles_of(["customer", "admin", "customer"]) == ("customer", "admin")


def test_an_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="superuser"):
        roles_of(["customer", "superuser"])


# --- the login throttle -------------------------------------------------------------------------


def fail(attempts: LoginRecord, times: int, at: datetime) -> None:
    for _ in range(times):
        attempts.admit(at, POLICY)


def test_four_failures_do_not_lock_the_email() -> None:
    attempts = LoginRecord("ada@example.com")
    fail(attempts, 4, T0)
    attempts.admit(T0, POLICY)  # the fifth is still let through, and checked


def test_five_failures_within_the_window_lock_the_email_for_the_first_lock() -> None:
    attempts = LoginRecord("ada@example.com")
    fail(attempts, 5, T0)

    with pytest.raises(LoginLocked) as locked:
        attempts.admit(T0 + timedelta(seconds=20), POLICY)
    assert locked.value.retry_after == timedelta(seconds=40)


def test_the_lock_lifts_when_it_has_run_out() -> None:
    attempts = LoginRecord("ada@example.com")
    fail(attempts, 5, T0)

    attempts.admit(T0 + timedelta(minutes=1), POLICY)


def test_failures_spread_wider_than_the_window_never_lock() -> None:
    attempts = LoginRecord("ada@example.com")
    for minute in range(0, 50, 2):
        attempts.admit(T0 + timedelta(minutes=minute), POLICY)
    # 25 failures, but never 5 inside one 5-minute window.
    attempts.admit(T0 + timedelta(minutes=50), POLICY)


def test_each_further_lock_lasts_twice_as_long_up_to_the_longest() -> None:
    attempts = LoginRecord("ada@example.com")
    now = T0
    locks = []
    for _ in range(6):
        fail(attempts, 5, now)
        assert attempts.locked_until is not None
        locks.append(attempts.locked_until - now)
        now = attempts.locked_until
    assert [lock.total_seconds() / 60 for lock in locks] == [1, 2, 4, 8, 15, 15]


def test_a_day_without_failures_forgets_the_earlier_locks() -> None:
    attempts = LoginRecord("ada@example.com")
    fail(attempts, 5, T0)
    fail(attempts, 5, T0 + timedelta(minutes=1))
    later = T0 + timedelta(days=2)

    fail(attempts, 5, later)

    assert attempts.locked_until == later + timedelta(minutes=1)


def test_an_email_many_clients_fail_on_is_slowed_down_up_to_the_longest_pause() -> None:
    every = LoginRecord("ada@example.com")
    pauses = [every.tally(T0, POLICY) for _ in range(30)]

    assert pauses[:10] == [timedelta()] * 10, "the first slow_after attempts never wait"
    assert pauses[10:13] == [timedelta(milliseconds=200 * n) for n in (1, 2, 3)]
    assert pauses[-1] == timedelta(seconds=2)


def test_the_tally_of_every_client_starts_again_after_the_window_and_never_locks() -> None:
    every = LoginRecord("ada@example.com")
    for _ in range(50):
        every.tally(T0, POLICY)

    assert every.tally(T0 + timedelta(minutes=5), POLICY) == timedelta()
    assert every.locked_until is None


def test_lock_lengths_never_overflow() -> None:
    assert POLICY.lock_for(10_000) == timedelta(minutes=15)
    assert LoginPolicy(first_lock=timedelta(days=1), longest_lock=timedelta(days=900)).lock_for(
        10_000
    ) == timedelta(days=900)


# --- signing keys -------------------------------------------------------------------------------


def key(generation: int, retire_at: datetime | None = None) -> SigningKey:
    return SigningKey(
        kid=f"k{generation}",
        generation=generation,
        private_pem="",
        public_jwk={"kid": f"k{generation}"},
        created_at=T0,
        retire_at=retire_at,
    )


def test_unretired_keys_and_keys_retiring_later_are_published_newest_first() -> None:
    keys = [key(1, T0 + timedelta(hours=1)), key(3), key(2, T0 + timedelta(hours=2))]
    assert [k.kid for k in keys_to_publish(keys, T0)] == ["k3", "k2", "k1"]


def test_a_retired_key_leaves_the_key_set_but_the_newest_two_always_stay() -> None:
    gone = T0 - timedelta(seconds=1)
    keys = [key(1, gone), key(2, gone), key(3, gone), key(4)]
    assert [k.kid for k in keys_to_publish(keys, T0)] == ["k4", "k3"]


def test_a_replaced_key_retires_when_its_last_token_has_expired() -> None:
    assert retirement(T0, timedelta(hours=1), timedelta(minutes=1)) == T0 + timedelta(minutes=61)


def test_access_claims_are_whole_seconds_since_the_epoch() -> None:
    claims = AccessClaims(
        issuer="agora-identity",
        audience="agora",
        subject="u1",
        email="ada@example.com",
        roles=CUSTOMER_ROLES,
        issued_at=T0 + timedelta(microseconds=700),
        expires_at=T0 + timedelta(hours=1),
        token_id="t1",
    ).as_jwt_claims()
    assert claims == {
        "iss": "agora-identity",
        "aud": "agora",
        "sub": "u1",
        "email": "ada@example.com",
        "roles": ["customer"],
        "iat": int(T0.timestamp()),
        "exp": int(T0.timestamp()) + 3600,
        "jti": "t1",
    }
