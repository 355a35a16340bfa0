"""Podman as the Kubernetes run test drives it: installed, made to work on this machine, and
running the ``local`` overlay with ``podman kube play``.

Debian's podman 4.3 is installed with apt-get when missing, with ``catatonit`` (a pod's init)
and ``runc``: its default runtime, crun, fails here, and so do the default limits on open files
and processes, so every call names a ``containers.conf`` of the test's own (``CONTAINERS_CONF``).
The images are the ones the Docker tests build, moved into podman's store; the secrets are
podman secrets, which is how podman 4.3 reads a ``secretKeyRef`` (ADR 33).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agora.topology import Topology
from agora_tools import deploy
from agora_tools.k8s.workloads import environment, processes
from agora_tools.testing import install_debian_packages
from deploy.tests.backing import interpolate
from deploy.tests.engine import DOCKER

PODMAN = "/usr/bin/podman"
# Debian's package of each tool, and the file that shows it is installed.
PACKAGES = {"podman": PODMAN, "catatonit": "/usr/bin/catatonit", "runc": "/usr/sbin/runc"}
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
"""
COMMAND_TIMEOUT = 120
# Eight pods one after the other, each after its migrations: far more than the 15 s it takes.
PLAY_TIMEOUT = 600


class PodmanFailed(AssertionError):
    """A podman command failed."""


def ensure_installed() -> None:
    """Installs the packages that are missing (as root, with apt-get: the Docker tests' session
    fixture has already skipped, or failed under CI, where that cannot be done)."""
    install_debian_packages([name for name, path in PACKAGES.items() if not Path(path).exists()])


def secret_values(topology: Topology, env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """What each Secret the manifests name holds on one host: every key the local overlay reads,
    its value the one Compose gives the same variable from the env file ``env``."""
    secrets: dict[str, dict[str, str]] = {}
    for name in processes(topology):
        given = deploy._environment(topology, name, 0, deploy.ONE_HOST)
        references = environment(topology, name, one_host=True).secrets
        for variable, (secret, key) in references.items():
            secrets.setdefault(secret, {})[key] = interpolate(given[variable], env)
    return secrets


def documents(manifest: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(manifest.read_text()) if document]


def volume_names(manifest: Path) -> set[str]:
    """The machine's volumes podman makes for the manifest's pods: one per ``emptyDir``, named
    as the pod names it, and one per ConfigMap mounted, named as the ConfigMap."""
    names: set[str] = set()
    for document in documents(manifest):
        if document["kind"] != "Deployment":
            continue
        for volume in document["spec"]["template"]["spec"].get("volumes", []):
            config = volume.get("configMap")
            names.add(config["name"] if config else volume["name"])
    return names


@dataclass(frozen=True)
class Podman:
    """The podman client, configured by ``config`` (a ``containers.conf``)."""

    config: Path

    @classmethod
    def configured(cls, directory: Path) -> Podman:
        config = directory / "containers.conf"
        config.write_text(CONTAINERS_CONF)
        return cls(config)

    def run(
        self, *args: str, stdin: bytes | None = None, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                [PODMAN, *args],
                env=self.environment(),
                input=stdin,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as expired:
            states = self("ps", "--all", "--format", "{{.Names}} {{.Status}}", check=False)
            raise PodmanFailed(
                f"podman {' '.join(args)} took more than {timeout:g} s; the containers:\n{states}"
            ) from expired

    def environment(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.config)}

    def __call__(
        self,
        *args: str,
        stdin: bytes | None = None,
        check: bool = True,
        timeout: float = COMMAND_TIMEOUT,
    ) -> str:
        result = self.run(*args, stdin=stdin, timeout=timeout)
        if check and result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise PodmanFailed(f"podman {' '.join(args)} failed ({result.returncode}):\n{output}")
        return result.stdout.decode(errors="replace")

    # Images.

    def load(self, images: Iterable[str]) -> list[str]:
        """Moves into podman's store each image whose Docker build it does not hold yet (the
        same image id: podman keeps the image's configuration as it is). Returns those moved."""
        moved = [image for image in images if self.image_id(image) != _docker_image_id(image)]
        if not moved:
            return moved
        with subprocess.Popen([DOCKER, "save", *moved], stdout=subprocess.PIPE) as save:
            loaded = subprocess.run(
                [PODMAN, "load", "--quiet"],
                env=self.environment(),
                stdin=save.stdout,
                capture_output=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        if save.returncode != 0 or loaded.returncode != 0:
            raise PodmanFailed(
                f"docker save | podman load failed ({save.returncode}, {loaded.returncode}):\n"
                + loaded.stderr.decode(errors="replace")
            )
        # The builds they replace, untagged now: each run's would pile up in podman's store.
        self("image", "prune", "--force")
        return moved

    def image_id(self, image: str) -> str | None:
        found = self("image", "inspect", "--format", "{{.Id}}", image, check=False).strip()
        return found or None

    # Secrets and volumes: the machine's, named by the manifests.

    def create_secrets(self, secrets: Mapping[str, Mapping[str, str]]) -> None:
        """Each Secret as podman 4.3 reads a ``secretKeyRef``: a podman secret of that name
        holding a Kubernetes Secret's ``data``, a JSON object of base64 values."""
        self.remove_secrets(secrets)
        for name, values in secrets.items():
            data = {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}
            self("secret", "create", name, "-", stdin=json.dumps(data).encode())

    def remove_secrets(self, names: Iterable[str]) -> None:
        existing = set(self("secret", "ls", "--format", "{{.Name}}").split())
        for name in sorted(existing & set(names)):
            self("secret", "rm", name)

    def remove_volumes(self, names: Iterable[str]) -> None:
        existing = set(self("volume", "ls", "--format", "{{.Name}}").split())
        for name in sorted(existing & set(names)):
            self("volume", "rm", "--force", name)

    # The pods.

    def play(self, manifest: Path) -> None:
        """Starts every pod of the manifest: podman runs each pod's init containers to their
        end before its container, and replaces pods a failed run left behind."""
        try:
            self("kube", "play", "--replace", str(manifest), timeout=PLAY_TIMEOUT)
        except PodmanFailed as failure:
            raise PodmanFailed(f"{failure}\n{self.logs_of_every_container()}") from None

    def down(self, manifest: Path) -> None:
        """Stops and removes the manifest's pods, each process given its grace period; then
        removes whatever pod a play that failed half-way left, which ``kube down`` may not."""
        self("kube", "down", str(manifest), check=False, timeout=PLAY_TIMEOUT)
        self("pod", "rm", "--force", "--ignore", *pod_names(manifest), timeout=PLAY_TIMEOUT)

    def inspect(self, container: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(self("container", "inspect", container))
        return found[0]

    def healthy(self, container: str) -> bool:
        """Runs the container's health check, the liveness probe as podman turned it into one
        (there is no systemd here to run it on a timer)."""
        return self.run("healthcheck", "run", container).returncode == 0

    def logs(self, container: str, lines: int = 40) -> str:
        """What the container wrote to either stream (podman logs keeps stderr apart)."""
        result = self.run("logs", "--tail", str(lines), container)
        return (result.stdout + result.stderr).decode(errors="replace")

    def logs_of_every_container(self, lines: int = 20) -> str:
        """What each container of the machine logged last, the init containers' included."""
        names = self("ps", "--all", "--format", "{{.Names}}", check=False).split()
        return "\n".join(f"--- {name}:\n{self.logs(name, lines)}" for name in names)


def pod_names(manifest: Path) -> list[str]:
    return [
        f"{document['metadata']['name']}-pod-0"
        for document in documents(manifest)
        if document["kind"] == "Deployment"
    ]


def container_name(deployment: str, container: str) -> str:
    """What ``podman kube play`` names a Deployment's container: its one pod is
    ``<deployment>-pod-0``."""
    return f"{deployment}-pod-0-{container}"


def _docker_image_id(image: str) -> str:
    result = subprocess.run(
        [DOCKER, "image", "inspect", "--format", "{{.Id}}", image],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip().removeprefix("sha256:")
