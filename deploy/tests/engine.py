"""The Docker engine the deployment tests run on: installed, started and driven from here.

Debian's packages (``docker.io``, ``docker-compose``, ``mmdebstrap``) are installed with apt-get
when missing, and the daemon is started when none answers. Its client is named by path: Debian's
client matches Debian's 20.10 daemon, where a newer client elsewhere on PATH may not. Containers
run with host networking or none: never on a bridge network.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from agora_tools.testing import install_debian_packages, why_no_debian_packages

DOCKER = "/usr/bin/docker"
# Debian's package of each tool, and the file that shows it is installed.
PACKAGES = {
    "docker.io": DOCKER,
    "docker-compose": "/usr/bin/docker-compose",
    "mmdebstrap": "/usr/bin/mmdebstrap",
}
DAEMON_LOG = Path("/var/log/agora-dockerd.log")
DAEMON_START_BOUND = 60.0
REPO = Path(__file__).resolve().parents[2]
LOCAL_BASE = "agora/python-base:3.11-bookworm"


class EngineFailed(Exception):
    """The engine could be installed and started here, but was not."""


def why_unavailable() -> str | None:
    """Why the engine cannot be set up here, or None when it can."""
    return why_no_debian_packages("Docker, which the deployment tests run,")


def ensure_engine() -> None:
    """Install the packages that are missing and start the daemon when none answers (as root:
    :func:`why_unavailable` says whether this machine can)."""
    _install_missing()
    if not _daemon_answers():
        _start_daemon()


def _install_missing() -> None:
    install_debian_packages([name for name, path in PACKAGES.items() if not Path(path).exists()])


def _daemon_answers() -> bool:
    result = subprocess.run([DOCKER, "info"], capture_output=True, check=False)
    return result.returncode == 0


def _start_daemon() -> None:
    # No iptables rules and no bridge: containers here use the host's network or none.
    command = [
        "dockerd", "--iptables=false", "--bridge=none",
        "--default-ulimit", "nofile=1024:1024",
    ]  # fmt: skip
    with DAEMON_LOG.open("ab") as log:
        daemon = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + DAEMON_START_BOUND
    while not _daemon_answers():
        if daemon.poll() is not None:
            raise EngineFailed(f"dockerd exited with {daemon.returncode}: see {DAEMON_LOG}")
        if time.monotonic() > deadline:
            raise EngineFailed(
                f"dockerd gave no answer in {DAEMON_START_BOUND:.0f} s: see {DAEMON_LOG}"
            )
        time.sleep(0.5)


def docker(*args: str) -> str:
    """Run the docker client and return its output; a failure shows what it printed."""
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise EngineFailed(f"docker {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def build_images(base: str = LOCAL_BASE) -> list[str]:
    """Build the local base (cached by its script's hash) and every service's image on it."""
    environment = {**os.environ, "DOCKER": DOCKER}
    subprocess.run([REPO / "deploy/base/build-base.sh", base], env=environment, check=True)
    built = subprocess.run(
        [REPO / "deploy/build-images.sh", "--base", base],
        env=environment, stdout=subprocess.PIPE, text=True, check=True,
    )  # fmt: skip
    return built.stdout.split()


def run_isolated(
    image: str, *command: str, entrypoint: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command in a container as production would: read-only, /tmp its only scratch,
    no network at all."""
    options = ["--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp"]  # noqa: S108 (the container's)
    if entrypoint is not None:
        options += ["--entrypoint", entrypoint]
    return subprocess.run(
        [DOCKER, "run", *options, image, *command], capture_output=True, text=True, check=False
    )
