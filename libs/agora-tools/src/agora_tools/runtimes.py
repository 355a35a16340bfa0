"""How ``agora up`` runs a service of each runtime the topology knows (ADR 39).

A Python service runs through the chassis's entry point, ``python -m agora.process``. A service
in another language keeps the same process contract in its own package (the topology's ``path``):
``serve --port P --replica R`` runs one replica until SIGTERM, ``migrate`` applies its migrations
and exits 0, and both read the environment the runner gives every service. For a Node service
the package is built first when it has to be: ``npm ci`` when ``node_modules`` is missing or
older than ``package-lock.json``, ``npm run build`` when its entry point is missing or older than
anything under ``src/`` or the files that say how it builds. One ``agora up`` builds a package at
a time (:func:`building`): two started at once from one checkout would run ``npm ci`` over each
other.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

from agora.topology import Service

# A Node package's entry point, as its `npm run build` writes it.
NODE_MAIN = Path("dist") / "src" / "main.js"
# How node runs a service: a young generation of 1 MB a half instead of V8's default of up to
# 16, which a small service's bursts never fill but which it keeps resident once touched: 14 MB
# less for 0.1 ms more CPU per checkout (ADR 62). deploy/node.Dockerfile's entry point says the
# same.
NODE_FLAGS = ("--max-semi-space-size=1",)
# What the build reads besides src/: a change to any of them builds again.
NODE_BUILD_INPUTS = ("package.json", "package-lock.json", "tsconfig.json")


class MissingTool(RuntimeError):
    """A tool the runtime needs (node, npm) is not on PATH."""


def package_of(service: Service, topology_dir: Path) -> Path:
    """The folder of a non-Python service's package."""
    return (topology_dir / service.path).resolve()


def command(
    service: Service, topology_dir: Path, python: str, action: str, *options: str
) -> list[str]:
    """The argv that runs ``action`` (``serve`` or ``migrate``) of ``service``."""
    if service.runtime == "python":
        return [python, "-m", "agora.process", action, service.name, *options]
    main = str(package_of(service, topology_dir) / NODE_MAIN)
    return [_tool("node"), *NODE_FLAGS, main, action, *options]


def build_steps(service: Service, topology_dir: Path) -> list[list[str]]:
    """The commands that bring ``service``'s package up to date, in order; none when it is (and
    always none for a Python service, which runs from source)."""
    if service.runtime == "python":
        return []
    package = package_of(service, topology_dir)
    steps = []
    lock = package / "package-lock.json"
    installed = package / "node_modules" / ".package-lock.json"  # npm writes it on install
    if _depends_on_packages(lock) and _older(installed, [lock]):
        steps.append([_tool("npm"), "--prefix", str(package), "ci", "--no-audit", "--no-fund"])
    inputs = [*(package / name for name in NODE_BUILD_INPUTS), *_files(package / "src")]
    if steps or _older(package / NODE_MAIN, inputs):
        steps.append([_tool("npm"), "--prefix", str(package), "run", "build"])
    return steps


# How often a start waiting for another's build of the same package looks again (seconds).
BUILD_LOCK_POLL = 0.1


@asynccontextmanager
async def building(service: Service, topology_dir: Path) -> AsyncIterator[None]:
    """Hold ``service``'s package for a build: an exclusive lock on its folder, awaited without
    blocking the loop, released on leaving (or when the process ends). Ask for the build steps
    inside, so that the second of two starts finds what the first built."""
    if service.runtime == "python":
        yield
        return
    folder = os.open(package_of(service, topology_dir), os.O_RDONLY)
    try:
        while True:
            try:
                fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(BUILD_LOCK_POLL)
        yield
    finally:
        os.close(folder)


def _older(target: Path, sources: list[Path]) -> bool:
    """Whether ``target`` is missing or older than any of ``sources`` that exist."""
    if not target.exists():
        return True
    built = target.stat().st_mtime
    return any(source.exists() and source.stat().st_mtime > built for source in sources)


def _depends_on_packages(lock: Path) -> bool:
    """Whether the package's lock file lists any package to install besides itself (without
    one, ``npm ci`` installs nothing and writes no ``node_modules``)."""
    try:
        packages = json.loads(lock.read_text()).get("packages", {})
    except (OSError, ValueError):
        return True  # let npm ci say what is wrong with it
    return any(name for name in packages)


def _files(folder: Path) -> Iterator[Path]:
    return (path for path in folder.rglob("*") if path.is_file())


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise MissingTool(f"{name} is not installed: a Node service needs Node.js 20 and npm")
    return found
