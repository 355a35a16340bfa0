"""A one-host deployment rendered into a directory of the test's, and Compose driving it.

The directory is laid out as a user's checkout is: ``topology.toml`` (the repository's, with the
changes a test asks for and a ``[host]`` table of free ports) and ``deploy/compose/`` rendered
from it by ``agora deploy render``, whose Compose file mounts ``../../topology.toml``. The backing
servers run outside Compose (:mod:`backing`), so the Agora containers are brought up with
``--no-deps`` in the order the rendered ``depends_on`` gives (ADR 32).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agora.topology import Topology, load_topology
from agora_tools.ports import port_is_free, service_port_window
from deploy.tests.engine import DOCKER, PACKAGES

REPO = Path(__file__).resolve().parents[2]
AGORA = str(Path(sys.executable).with_name("agora"))

# The services of the rendering that the test runs as the machine's own processes.
BACKING = frozenset({"postgres", "postgres-init", "nats", "redis"})
# Ports of [host]: five named ones, then 16 for each service from `services` on (HostPorts).
NAMED_PORTS = ("gateway", "postgres", "nats", "nats_monitor", "redis")
PORTS_PER_SERVICE = 16

START_TIMEOUT = 180.0
POLL = 0.5


class DeployFailed(AssertionError):
    """A container did not reach what the rendering asks of it."""


def compose_command() -> list[str]:
    """Debian's Compose v1, which the engine's set-up installs."""
    return [PACKAGES["docker-compose"]]


def free_host_table(services: int) -> dict[str, int]:
    """A ``[host]`` table whose every port, the services' blocks included, is free now."""
    size = PORTS_PER_SERVICE * (services + 1)
    low, high = service_port_window()
    for base in range(low + 10_000, high - size, size):
        if all(port_is_free(port) for port in range(base, base + size)):
            table = {name: base + i for i, name in enumerate(NAMED_PORTS)}
            return table | {"services": base + PORTS_PER_SERVICE}
    raise DeployFailed(f"no {size} free ports in a row between {low} and {high}")


def topology_text(source: str, replicas: Mapping[str, int], host: Mapping[str, int]) -> str:
    """The repository's topology with some services' replicas changed and a ``[host]`` table."""
    text = source
    for service, count in replicas.items():
        section = re.compile(
            rf"(^\[services\.{re.escape(service)}\]\n(?:(?!\[).*\n)*?)replicas = \d+", re.M
        )
        text, found = section.subn(rf"\g<1>replicas = {count}", text)
        if found != 1:
            raise DeployFailed(f"topology.toml has no `replicas` line for {service}")
    table = "\n".join(f"{name} = {port}" for name, port in host.items())
    return f"{text.rstrip()}\n\n[host]\n{table}\n"


@dataclass(frozen=True)
class Deployment:
    """The rendered project in ``root`` and the Compose project ``project`` running it."""

    root: Path
    project: str

    @property
    def compose_dir(self) -> Path:
        return self.root / "deploy" / "compose"

    @property
    def rendered_file(self) -> Path:
        return self.compose_dir / "compose.host.yaml"

    @property
    def compose_file(self) -> Path:
        """What Compose is given: the rendered file with the test's settings added (see
        :meth:`render`)."""
        return self.compose_dir / "compose.run.yaml"

    @property
    def env_file(self) -> Path:
        return self.compose_dir / ".env"

    @classmethod
    def render(
        cls,
        root: Path,
        project: str,
        replicas: Mapping[str, int],
        settings: Mapping[str, Mapping[str, str]] | None = None,
    ) -> Deployment:
        """Writes the project: its topology, the rendered files, an env file of fresh secrets,
        and the file Compose is given: the rendered one with ``settings`` (service -> variables)
        added to the environment of each of that service's containers."""
        source = (REPO / "topology.toml").read_text()
        services = len(load_topology(REPO / "topology.toml").services)
        root.mkdir(parents=True, exist_ok=True)
        (root / "topology.toml").write_text(
            topology_text(source, replicas, free_host_table(services))
        )
        deployment = cls(root, project)
        deployment.agora("deploy", "render")
        deployment.agora("deploy", "secrets", "--output", str(deployment.env_file))
        deployment.write_compose_file(settings or {})
        return deployment

    def write_compose_file(self, settings: Mapping[str, Mapping[str, str]]) -> None:
        rendered = self.rendered()
        for service, variables in settings.items():
            containers = [
                spec
                for name, spec in rendered["services"].items()
                if re.fullmatch(rf"{re.escape(service)}(-migrate|-\d+)", name)
            ]
            if not containers:
                raise DeployFailed(f"the rendered Compose file has no containers of {service}")
            for spec in containers:
                spec["environment"].update(variables)
        self.compose_file.write_text(yaml.safe_dump(rendered, sort_keys=False))

    def agora(self, *args: str) -> str:
        """Runs ``agora`` in the project (which finds its topology.toml there)."""
        result = subprocess.run(
            [AGORA, *args], cwd=self.root, capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise DeployFailed(f"agora {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def topology(self) -> Topology:
        return load_topology(self.root / "topology.toml")

    def env(self) -> dict[str, str]:
        """The env file's variables."""
        pairs = (
            line.split("=", 1)
            for line in self.env_file.read_text().splitlines()
            if line and not line.startswith("#")
        )
        return {name: value for name, value in pairs}

    def rendered(self) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(self.rendered_file.read_text())
        return loaded

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.topology().host.gateway}"

    # Compose.

    def compose_args(self) -> list[str]:
        """The Compose command for this project, as ``deploy/rollout.sh`` is given it too."""
        return [
            *compose_command(),
            "--env-file",
            str(self.env_file),
            "-p",
            self.project,
            "-f",
            str(self.compose_file),
        ]

    def rollout_options(self) -> list[str]:
        """What ``deploy/rollout.sh`` is told to find this project."""
        return ["-f", str(self.compose_file), "--env-file", str(self.env_file), "-p", self.project]

    def compose(self, *args: str, timeout: float = 300) -> str:
        result = subprocess.run(
            [*self.compose_args(), *args],
            cwd=self.compose_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise DeployFailed(f"compose {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def container(self, service: str) -> str:
        found = self.compose("ps", "-q", service).split()
        if not found:
            raise DeployFailed(f"no container for {service}")
        return found[0]

    def inspect(self, *containers: str) -> list[dict[str, Any]]:
        result = subprocess.run(
            [DOCKER, "inspect", *containers],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        states: list[dict[str, Any]] = json.loads(result.stdout)
        return states

    def up_in_order(self) -> list[list[str]]:
        """Every Agora container, in waves: a service is started once what its rendered
        ``depends_on`` names (the backing servers aside) has completed or turned healthy.
        Returns the waves."""
        services = self.rendered()["services"]
        pending = {
            name: set(spec.get("depends_on", {})) - BACKING
            for name, spec in services.items()
            if name not in BACKING
        }
        done: set[str] = set()
        waves: list[list[str]] = []
        while pending:
            wave = sorted(name for name, needs in pending.items() if needs <= done)
            if not wave:
                raise DeployFailed(f"the rendered depends_on never lets {sorted(pending)} start")
            self.compose("up", "-d", "--no-deps", *wave)
            self.wait_for(wave)
            waves.append(wave)
            done.update(wave)
            for name in wave:
                del pending[name]
        return waves

    def wait_for(self, names: list[str], timeout: float = START_TIMEOUT) -> None:
        """Until each of ``names`` is what its dependants wait for: a one-shot exited 0, a
        server healthy; fail with the logs of one that exited otherwise or never got there."""
        services = self.rendered()["services"]
        containers = {name: self.container(name) for name in names}
        deadline = time.monotonic() + timeout
        while True:
            waiting = []
            for name, state in zip(containers, self.inspect(*containers.values()), strict=True):
                one_shot = "healthcheck" not in services[name]
                if reached(state["State"], one_shot=one_shot):
                    continue
                if failed(state["State"], one_shot=one_shot):
                    raise DeployFailed(f"{name} failed: {self.logs(name)}")
                waiting.append(name)
            if not waiting:
                return
            if time.monotonic() > deadline:
                logs = "\n".join(self.logs(name) for name in waiting)
                raise DeployFailed(f"gave up waiting for {waiting} after {timeout:g} s:\n{logs}")
            time.sleep(POLL)

    def logs(self, service: str, lines: int = 40) -> str:
        try:
            return self.compose("logs", "--no-color", "--tail", str(lines), service, timeout=60)
        except DeployFailed as error:
            return str(error)

    def down(self) -> None:
        """Removes the project's containers and volumes; the images stay."""
        self.compose("down", "-v", "--remove-orphans", "--timeout", "30", timeout=600)


def reached(state: Mapping[str, Any], *, one_shot: bool) -> bool:
    if one_shot:
        return bool(state["Status"] == "exited" and state["ExitCode"] == 0)
    return bool(state.get("Health", {}).get("Status") == "healthy")


def failed(state: Mapping[str, Any], *, one_shot: bool) -> bool:
    if one_shot:
        return bool(state["Status"] == "exited" and state["ExitCode"] != 0)
    health = state.get("Health", {}).get("Status")
    return bool(health == "unhealthy" or state["Status"] in {"exited", "dead", "restarting"})
