"""identity's domain: users and roles, password rules, the login throttle and signing keys.

Plain Python only: no framework, no I/O. Time is always passed in (``now``), so every rule here can
be checked with any clock.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

# --- errors (the first docstring line is the problem title a client sees) ----------------------


class InvalidEmail(Exception):
    """Invalid email address."""


class WeakPassword(Exception):
    """Password too weak."""


class EmailTaken(Exception):
    """Email already registered."""


class InvalidCredentials(Exception):
    """Invalid email or password."""

    def __init__(self) -> None:
        # One message whether the email or the password was wrong, so that a caller cannot learn
        # which addresses have accounts.
        super().__init__("the email or the password is wrong")


class LoginLocked(Exception):
    """Too many failed logins."""

    def __init__(self, retry_after: timedelta) -> None:
        super().__init__("too many failed logins for this email from your address; try again later")
        self.retry_after = retry_after


class UnknownUser(Exception):
    """User not found."""


USERS_PAGE_MAX = 500


@dataclass(frozen=True, slots=True)
class UserCursor:
    """Where the next page of accounts starts: after the account with this id (accounts are
    listed by id). It is handed out as an opaque token (agora.cursor)."""

    id: str

    def __post_init__(self) -> None:
        if not self.id or len(self.id) > 36:
            raise ValueError("no account has this id")


class KeyRotationConflict(Exception):
    """Another key rotation happened at the same moment."""


# --- users and roles --------------------------------------------------------------------------


class Role(StrEnum):
    CUSTOMER = "customer"
    ADMIN = "admin"


CUSTOMER_ROLES: tuple[str, ...] = (Role.CUSTOMER.value,)
# An admin also shops: the admin role adds powers, it does not take the customer's away.
ADMIN_ROLES: tuple[str, ...] = (Role.CUSTOMER.value, Role.ADMIN.value)


def roles_of(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Roles in their canonical form: known names only, each once, in a stable order."""
    unknown = sorted(set(names) - {role.value for role in Role})
    if unknown:
        raise ValueError(f"unknown roles: {', '.join(unknown)}")
    return tuple(role.value for role in Role if role.value in names)


@dataclass
class User:
    id: str
    email: str
    password_hash: str
    roles: tuple[str, ...]
    created_at: datetime

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN.value in self.roles


# --- email addresses ----------------------------------------------------------------------------

_LOCAL = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_EMAIL = re.compile(rf"(?P<local>{_LOCAL})@(?P<domain>{_LABEL}(?:\.{_LABEL})+)")


def normalize_email(raw: str) -> str:
    """The one spelling under which an address is stored and looked up: trimmed, lower-case.

    Accepted: an ASCII ``local@domain`` with a dotted domain (``admin@agora.local`` included:
    local, reserved names are fine for a shop's own accounts), local part at most 64 characters,
    the whole at most 254 (RFC 5321). Quoted local parts and IP-literal domains are refused.
    """
    email = raw.strip().lower()
    if len(email) > 254:
        raise InvalidEmail("an email address has at most 254 characters")
    match = _EMAIL.fullmatch(email)
    if match is None:
        raise InvalidEmail(f"{raw.strip()!r} is not an email address like name@example.com")
    if len(match["local"]) > 64:
        raise InvalidEmail("the part before the @ has at most 64 characters")
    return email


# --- passwords ----------------------------------------------------------------------------------

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 128
MIN_DISTINCT_CHARACTERS = 5
# The local part is only checked when it is long enough to be a guess rather than a coincidence.
MIN_LOCAL_PART_CHECKED = 3

# Well-known passwords of at least MIN_PASSWORD_LENGTH characters (shorter ones fail on length),
# from the published top lists of breached passwords; compared case-insensitively.
COMMON_PASSWORDS = frozenset(
    {
        "1234567890",
        "12345678910",
        "123456789a",
        "1234567890a",
        "0123456789",
        "0987654321",
        "1111111111",
        "1q2w3e4r5t",
        "1q2w3e4r5t6y",
        "1qaz2wsx3edc",
        "a123456789",
        "aa12345678",
        "abc1234567",
        "abcd123456",
        "abcdefghij",
        "administrator",
        "asdfghjkl1",
        "asdfghjkl;",
        "football123",
        "iloveyou12",
        "iloveyou123",
        "letmein123",
        "password01",
        "password12",
        "password123",
        "password1234",
        "password!!",
        "passw0rd123",
        "p@ssw0rd123",
        "p@ssword123",
        "princess123",
        "q1w2e3r4t5",
        "q1w2e3r4t5y6",
        "qazwsxedcrfv",
        "qwerty1234",
        "qwerty12345",
        "qwerty123456",
        "qwertyuiop",
        "qwertyuiop123",
        "welcome123",
        "welcome1234",
        "zaq12wsxcde3",
        "zxcvbnm123",
        "zxcvbnmasd",
        "changeme123",
        "trustno1234",
        "sunshine123",
        "superman123",
        "basketball",
        "basketball1",
        "football1",
        "baseball123",
        "starwars123",
        "monkey12345",
        "dragon12345",
        "mustang123",
        "michael123",
        "charlie123",
        "liverpool1",
        "chocolate1",
        "1234qwerasdf",
        "123qweasdzxc",
        "1qazxsw23edc",
        "!qaz2wsx3edc",
        "correcthorsebatterystaple",
        "correct horse battery staple",
        "agora-admin-password",
    }
)


def normalize_password(password: str) -> str:
    """NFKC, so that one password typed on two keyboards hashes alike (NIST SP 800-63B 5.1.1.2)."""
    return unicodedata.normalize("NFKC", password)


def check_password(password: str, email: str) -> None:
    """Refuse a password a guesser would try early; say which rule it broke.

    A password is accepted when, after NFKC normalization, it

    1. has at least 10 characters (length is what makes guessing slow) and at most 128 (so that
       hashing a submitted password stays cheap; passphrases fit);
    2. uses at least 5 different characters (``aaaaaaaaaa`` and ``abababababab`` are long but
       guessed at once);
    3. is not one of the well-known passwords in :data:`COMMON_PASSWORDS` (ignoring case);
    4. does not contain the part of the email before the ``@`` (ignoring case), when that part
       has at least 3 characters: a guesser who knows the address tries it first.

    No composition rules (a digit, a symbol): they make passwords harder to remember, not to guess.
    """
    password = normalize_password(password)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"a password has at most {MAX_PASSWORD_LENGTH} characters")
    if len(set(password)) < MIN_DISTINCT_CHARACTERS:
        raise WeakPassword(
            f"a password needs at least {MIN_DISTINCT_CHARACTERS} different characters"
        )
    folded = password.casefold()
    if folded in COMMON_PASSWORDS:
        raise WeakPassword("this password is on the list of well-known passwords")
    local = email.partition("@")[0].casefold()
    if len(local) >= MIN_LOCAL_PART_CHECKED and local in folded:
        raise WeakPassword("a password must not contain the email address's name part")


# --- the login throttle -------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginPolicy:
    """How many failed logins a client may have on an email before it is locked out of it, for
    how long, and when attempts on an email that many clients fail on are slowed down.

    ``max_failures`` failures from one client within ``window`` lock that client out of that
    email for ``first_lock``; each further lock doubles, up to ``longest_lock``. A lock is
    forgotten after ``memory`` without a failure, or at the client's next successful login.
    Other clients are never locked by it: once the email has ``slow_after`` failures within
    ``window`` from all clients together, each further attempt on it waits ``slow_step`` more,
    up to ``longest_pause``, the right password included.
    """

    max_failures: int = 5
    window: timedelta = timedelta(minutes=5)
    first_lock: timedelta = timedelta(minutes=1)
    longest_lock: timedelta = timedelta(minutes=15)
    memory: timedelta = timedelta(days=1)
    slow_after: int = 10
    slow_step: timedelta = timedelta(milliseconds=200)
    longest_pause: timedelta = timedelta(seconds=2)

    def lock_for(self, lockouts: int) -> timedelta:
        """How long the ``lockouts``-th lock in a row lasts."""
        doublings = min(max(lockouts - 1, 0), 20)  # bounded: timedelta overflows
        lock: timedelta = self.first_lock * (1 << doublings)
        return min(lock, self.longest_lock)


# The client of an email's record that tallies the attempts of every client together.
EVERY_CLIENT = ""


@dataclass
class LoginRecord:
    """The failed logins recorded for one email (whether or not it has an account) from one
    client, or from every client together when ``client`` is :data:`EVERY_CLIENT`.

    An attempt counts as a failure from the moment it is admitted, before the password is checked;
    a success then forgets the client's record. Counting first means parallel guesses cannot all
    slip in before the first of them is recorded.
    """

    email: str
    client: str = EVERY_CLIENT
    failures: int = 0
    window_started_at: datetime | None = None
    locked_until: datetime | None = None
    lockouts: int = 0
    last_failure_at: datetime | None = None

    def admit(self, now: datetime, policy: LoginPolicy) -> None:
        """Let one attempt through and count it, or raise :class:`LoginLocked`."""
        if self.locked_until is not None and now < self.locked_until:
            raise LoginLocked(retry_after=self.locked_until - now)
        if self.last_failure_at is not None and now - self.last_failure_at >= policy.memory:
            self.lockouts = 0
        if self.window_started_at is None or now - self.window_started_at >= policy.window:
            self.failures = 0
            self.window_started_at = now
        self.failures += 1
        self.last_failure_at = now
        if self.failures >= policy.max_failures:
            self.lockouts += 1
            self.locked_until = now + policy.lock_for(self.lockouts)
            self.failures = 0
            self.window_started_at = None

    def tally(self, now: datetime, policy: LoginPolicy) -> timedelta:
        """Count one attempt on the email by any client; how long it waits before its check.

        Never a lock: refusing every client would let anyone lock the owner out. The pause grows
        with the failures within the window beyond ``policy.slow_after``, so that guessing from
        many addresses gets slower while the owner still gets in.
        """
        if self.window_started_at is None or now - self.window_started_at >= policy.window:
            self.failures = 0
            self.window_started_at = now
        beyond = self.failures - policy.slow_after + 1
        self.failures += 1
        self.last_failure_at = now
        if beyond <= 0:
            return timedelta()
        pause: timedelta = min(policy.slow_step * min(beyond, 10_000), policy.longest_pause)
        return pause

    def untally(self) -> None:
        """Take back the attempt :meth:`tally` counted, once it proved to be the right password."""
        self.failures = max(self.failures - 1, 0)


# --- signing keys -------------------------------------------------------------------------------


@dataclass
class SigningKey:
    """One key that signs access tokens. The newest generation signs; older ones only verify.

    ``retire_at`` is set when a newer key replaces this one: after it, no token this key signed
    can still be valid, so the key leaves the published key set.
    """

    kid: str
    generation: int
    private_pem: str
    public_jwk: dict[str, Any]
    created_at: datetime
    retire_at: datetime | None = None

    def published(self, now: datetime) -> bool:
        return self.retire_at is None or now < self.retire_at


# The last keys stay published whatever their retirement time: a verifier that cached the key set
# just before a rotation still finds the key of a token signed just before it.
ALWAYS_PUBLISHED = 2


def keys_to_publish(keys: list[SigningKey], now: datetime) -> list[SigningKey]:
    """Every key a valid token may name: the unretired ones and the newest two, newest first."""
    newest_first = sorted(keys, key=lambda key: key.generation, reverse=True)
    return [
        key
        for index, key in enumerate(newest_first)
        if index < ALWAYS_PUBLISHED or key.published(now)
    ]


def retirement(now: datetime, token_lifetime: timedelta, leeway: timedelta) -> datetime:
    """When a key replaced ``now`` may leave the key set: its last token has expired by then."""
    return now + token_lifetime + leeway


@dataclass(frozen=True)
class AccessClaims:
    """What an access token says about its holder."""

    issuer: str
    audience: str
    subject: str
    email: str
    roles: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    token_id: str

    def as_jwt_claims(self) -> dict[str, Any]:
        return {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": self.subject,
            "email": self.email,
            "roles": list(self.roles),
            "iat": int(self.issued_at.timestamp()),
            "exp": int(self.expires_at.timestamp()),
            "jti": self.token_id,
        }
