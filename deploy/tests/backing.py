"""The backing servers of a rendered one-host deployment, run as the machine's own processes.

``compose.host.yaml`` holds PostgreSQL, NATS and Redis as containers of public images, which no
registry here can give. The deploy test runs instead the machine's own servers, in directories of
its own that it deletes afterwards, with the commands, environments, ports and health checks the
rendering gives those containers: what the Agora containers meet is what the rendering promised.
The ports are the rendering's ``[host]`` ones, which the test chose free, so the machine's shared
servers (5432, 6379, 4222) are never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agora_tools.embedded_nats import find_nats_server

# How long a server may take to pass its rendered health check, and to stop.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

# Where the rendering mounts what the servers read, inside their containers.
NATS_CONFIG_MOUNT = "/etc/nats/nats.conf"
NATS_STORE_MOUNT = "/data"
POSTGRES_INIT_MOUNT = "/agora/postgres-init.sh"

_REFERENCE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:[?-])(?P<arg>[^}]*))?\}"
)


class BackingFailed(RuntimeError):
    """A backing server did not start, or the database's init script failed."""


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """A Compose value with its ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` replaced
    from ``env`` and ``$$`` made ``$``, as Compose does before it starts a container."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        found = env.get(name, "")
        if found:
            return found
        if op == ":?":
            raise BackingFailed(f"{name} {arg}")
        return arg if op == ":-" else ""

    return _REFERENCE.sub(replace, value)


@dataclass(frozen=True)
class Rendered:
    """One backing service of the Compose file, its values interpolated."""

    command: list[str]
    environment: dict[str, str]
    healthcheck: list[str] | None

    @classmethod
    def of(cls, compose: Mapping[str, Any], name: str, env: Mapping[str, str]) -> Rendered:
        service = compose["services"][name]
        test = service.get("healthcheck", {}).get("test")
        return cls(
            command=[interpolate(str(part), env) for part in service["command"]],
            environment={k: interpolate(str(v), env) for k, v in service["environment"].items()},
            healthcheck=probe_command([interpolate(str(p), env) for p in test]) if test else None,
        )


def probe_command(test: list[str]) -> list[str]:
    """A Compose health check's ``test`` as a command for the machine to run."""
    kind, *rest = test
    if kind == "CMD-SHELL":
        return ["sh", "-c", rest[0]]
    if kind == "CMD":
        return rest
    raise ValueError(f"health check {test!r} is neither CMD nor CMD-SHELL")


def postgres_bin() -> Path:
    """The newest PostgreSQL of the machine's packages (``/usr/lib/postgresql/<major>/bin``)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
    )
    if not found:
        raise BackingFailed(
            "no PostgreSQL server under /usr/lib/postgresql (apt-get install postgresql)"
        )
    return found[-1].parent


@dataclass
class Server:
    """A started backing server and what it leaves behind."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class BackingServers:
    """PostgreSQL, NATS and Redis as ``compose_dir``'s one-host rendering describes them, and
    the rendered init script run against PostgreSQL; ``env`` is the deployment's env file."""

    compose_dir: Path
    env: Mapping[str, str]
    servers: list[Server] = field(default_factory=list)
    directories: list[Path] = field(default_factory=list)

    def __enter__(self) -> BackingServers:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def compose(self) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(
            (self.compose_dir / "compose.host.yaml").read_text()
        )
        return loaded

    def start(self) -> None:
        compose = self.compose
        self._postgres(Rendered.of(compose, "postgres", self.env))
        self._nats(Rendered.of(compose, "nats", self.env))
        self._redis(Rendered.of(compose, "redis", self.env))
        for server in self.servers:
            self._wait_healthy(server, Rendered.of(compose, server.name, self.env))
        self._postgres_init(Rendered.of(compose, "postgres-init", self.env))

    def stop(self) -> None:
        """Stops every server (SIGTERM, then SIGKILL past the bound) and deletes its files."""
        for server in reversed(self.servers):
            _terminate(server.process)
        self.servers.clear()
        for directory in self.directories:
            shutil.rmtree(directory, ignore_errors=True)
        self.directories.clear()

    # The servers.

    def _directory(self, name: str, owner: str | None = None) -> Path:
        # Under /tmp itself, not a pytest directory: those are root's alone (0700), and
        # PostgreSQL runs as its own user.
        directory = Path(tempfile.mkdtemp(prefix=f"agora-deploy-{name}-"))
        self.directories.append(directory)
        if owner is not None:
            shutil.chown(directory, owner, owner)
        return directory

    def _spawn(
        self,
        name: str,
        command: list[str],
        directory: Path,
        environment: Mapping[str, str],
        user: str | None = None,
    ) -> None:
        log = directory / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                cwd=directory,
                env={"PATH": os.environ["PATH"], **environment},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=user,
                group=user,
                extra_groups=[] if user else None,
            )
        self.servers.append(Server(name, process, log))

    def _postgres(self, rendered: Rendered) -> None:
        """A fresh cluster with password authentication, its superuser's password the env
        file's; initdb refuses to run as root, so as root it all runs as ``postgres``."""
        user = "postgres" if os.geteuid() == 0 else None
        directory = self._directory("postgres", owner=user)
        password = directory / "superuser-password"
        password.write_text(rendered.environment["POSTGRES_PASSWORD"] + "\n")
        if user:
            shutil.chown(password, user, user)
        data = directory / "data"
        initdb = [str(postgres_bin() / "initdb"), "-D", str(data), "-U", "postgres"]
        initdb += [f"--pwfile={password}", "--auth=scram-sha-256", "--no-sync"]
        _run(initdb, "initdb", user=user)
        password.unlink()
        program, *arguments = rendered.command
        command = [str(postgres_bin() / program), "-D", str(data), "-k", str(directory)]
        self._spawn("postgres", command + arguments, directory, {}, user=user)

    def _nats(self, rendered: Rendered) -> None:
        """nats-server with the rendered configuration, JetStream in a directory of the test's."""
        directory = self._directory("nats")
        config = directory / "nats.conf"
        text = (self.compose_dir / "nats.conf").read_text()
        store = f"store_dir: {NATS_STORE_MOUNT}\n"
        if store not in text:
            raise BackingFailed(f"the rendered nats.conf has no '{store.strip()}' to replace")
        config.write_text(text.replace(store, f'store_dir: "{directory / "jetstream"}"\n'))
        arguments = [str(config) if a == NATS_CONFIG_MOUNT else a for a in rendered.command]
        command = [str(find_nats_server()), *arguments]
        self._spawn("nats", command, directory, rendered.environment)

    def _redis(self, rendered: Rendered) -> None:
        # Its append-only file goes to the working directory, the test's.
        directory = self._directory("redis")
        self._spawn("redis", rendered.command, directory, rendered.environment)

    def _postgres_init(self, rendered: Rendered) -> None:
        script = str(self.compose_dir / "postgres-init.sh")
        command = [script if a == POSTGRES_INIT_MOUNT else a for a in rendered.command]
        _run(command, "postgres-init.sh", environment=rendered.environment)

    def _wait_healthy(self, server: Server, rendered: Rendered) -> None:
        """Until the server passes its rendered health check, or fail with its log."""
        if rendered.healthcheck is None:
            raise BackingFailed(f"the rendering gives {server.name} no health check")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise BackingFailed(
                    f"{server.name} exited with {server.process.returncode}:\n{server.tail()}"
                )
            probe = subprocess.run(
                rendered.healthcheck,
                env={"PATH": os.environ["PATH"], **rendered.environment},
                capture_output=True,
                timeout=10,
                check=False,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.2)
        raise BackingFailed(
            f"{server.name} failed its health check for {START_TIMEOUT:g} s:\n{server.tail()}"
        )


def _run(
    command: list[str],
    what: str,
    *,
    user: str | None = None,
    environment: Mapping[str, str] | None = None,
) -> None:
    result = subprocess.run(
        command,
        env={"PATH": os.environ["PATH"], **(environment or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        user=user,
        group=user,
        extra_groups=[] if user else None,
    )
    if result.returncode != 0:
        raise BackingFailed(f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, SIGKILL once the stop bound has passed."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)
    except ProcessLookupError:
        process.wait(timeout=STOP_TIMEOUT)
