"""A process's broker credential, and how it connects with it.

One convention for every language: ``AGORA_NATS_USER`` names the broker user, and
``AGORA_NATS_PASSWORD`` holds its password, or ``AGORA_NATS_PASSWORD_FILE`` names a file holding
it (what ``agora up`` passes: ``.agora/secrets/nats/<user>``). With no user, a process connects
without credentials (a broker that asks for none).

Each user reads its replies on an inbox of its own, ``_INBOX.<user>.>``: the broker lets a user
subscribe there only, so no user can read the replies (pulled messages, acknowledgements)
another is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from agora.secrets import read_secret

INBOX_ROOT = "_INBOX"


class MissingPassword(ValueError):
    """A broker user was named but no password was given, or its file is empty or missing."""


@dataclass(frozen=True, slots=True)
class NatsCredentials:
    user: str
    password: str = field(repr=False)

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.user)

    def connect_options(self) -> dict[str, Any]:
        """The keyword arguments of ``nats.connect`` that log in as this user."""
        return {"user": self.user, "password": self.password, "inbox_prefix": self.inbox_prefix}

    @classmethod
    def of(cls, user: str, password: str = "", password_file: Path | None = None) -> Self | None:
        """The credential named by the convention above; None when no user is named."""
        if not user:
            return None
        if not password and password_file is not None:
            password = read_secret(password_file) or ""
        if not password:
            where = f" (nothing in {password_file})" if password_file is not None else ""
            raise MissingPassword(
                f"the broker user {user!r} has no password{where}: set AGORA_NATS_PASSWORD "
                "or AGORA_NATS_PASSWORD_FILE"
            )
        return cls(user, password)


def inbox_prefix(user: str) -> str:
    """Where ``user``'s replies arrive: ``_INBOX.<user>``."""
    return f"{INBOX_ROOT}.{user}"


def connect_options(credentials: NatsCredentials | None) -> dict[str, Any]:
    """``nats.connect`` keyword arguments for ``credentials``; none without."""
    return credentials.connect_options() if credentials is not None else {}


def without_credentials(url: str) -> str:
    """The URL with any ``user:password@`` left out, fit to be shown."""
    servers = []
    for server in url.split(","):
        parts = urlsplit(server.strip())
        if parts.hostname is None:
            servers.append(server.strip())
            continue
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        servers.append(parts._replace(netloc=netloc).geturl())
    return ",".join(servers)
