"""``agora new NAME``: a new service in the one shape every service has (docs/service-shape.md).

It writes ``services/NAME/`` from the templates beside this module (the six rooms, settings, a
first migration, one example route and one subscription, unit and integration tests), makes the
service one of the workspace's (its table in ``topology.toml``, its name in every list of the
root ``pyproject.toml`` that names every service, what it consumes in the contracts' traffic),
locks and syncs the workspace so that ``agora up`` can run it, and runs every renderer of
derived files so that none goes stale.
"""

from __future__ import annotations

import importlib.util
import keyword
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from agora.topology import GATEWAY, load_topology
from agora_tools.scaffold.edits import (
    EditFailed,
    add_consumer,
    add_to_service_lists,
    add_topology_table,
)

TEMPLATES = Path(__file__).parent / "templates"
# The placeholder in the templates' paths.
PLACEHOLDER = "NAME"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{1,29}")
# What the example subscribes to, and so whom it depends on.
CONSUMES = ("identity.UserRegistered",)
DEPENDS_ON = ("identity",)
TRAFFIC = Path("libs/contracts/src/contracts/traffic.py")
# Each step's bound: a cold `uv sync` on a slow machine takes a minute or two.
STEP_TIMEOUT = 600

Report = Callable[[str], None]


class ScaffoldError(Exception):
    """Why ``agora new`` wrote nothing, or stopped; ``code`` is the command's exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class BadName(ScaffoldError):
    def __init__(self, message: str) -> None:
        super().__init__(message, code=2)


@dataclass(frozen=True, slots=True)
class Names:
    """How the service's name is spelt where it appears."""

    name: str  # the service, its package and its paths: parcel_lockers

    @property
    def camel(self) -> str:  # its classes: ParcelLockersSettings
        return "".join(part.capitalize() for part in self.name.split("_"))

    @property
    def upper(self) -> str:  # its environment: AGORA_PARCEL_LOCKERS_*
        return self.name.upper()

    def context(self) -> dict[str, str]:
        return {
            "name": self.name,
            "Name": self.camel,
            "NAME": self.upper,
            "summary": f"the {self.name.replace('_', ' ')} of each user.",
        }


def check_name(root: Path, name: str) -> Names:
    """``name`` if a new service may take it; :class:`BadName` saying why not otherwise."""
    if not NAME_PATTERN.fullmatch(name) or name.endswith("_") or "__" in name:
        raise BadName(
            f"{name!r} is no service name: 2 to 30 lowercase letters, digits and single '_', "
            "starting with a letter (it names a Python package, a database and a URL path)"
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise BadName(f"{name!r} is a Python keyword: choose another name")
    topology = load_topology(root / "topology.toml")
    if name in topology.services or name == GATEWAY:
        raise BadName(f"{name!r} is a service already: choose another name")
    if (root / "services" / name).exists():
        raise BadName(f"services/{name} exists already: choose another name")
    if importlib.util.find_spec(name) is not None:
        raise BadName(
            f"{name!r} is the name of a Python module this environment has: a service's package "
            "would hide it or be hidden by it, so choose another name"
        )
    return Names(name)


def render_service(root: Path, names: Names) -> list[Path]:
    """Write ``services/NAME/`` from the templates; the files written."""
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 (Python and TOML, never HTML)
    )
    written = []
    for template in sorted(TEMPLATES.rglob("*.jinja")):
        relative = template.relative_to(TEMPLATES)
        target = root / Path(
            *(names.name if part == PLACEHOLDER else part for part in relative.parts)
        ).with_suffix("")
        text = environment.get_template(relative.as_posix()).render(names.context())
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        written.append(target)
    return written


def register(root: Path, names: Names, services: Sequence[str]) -> None:
    """Make the service one of the workspace's: topology, pyproject's lists, traffic."""
    pyproject = root / "pyproject.toml"
    text = add_to_service_lists(pyproject.read_text(), services, names.name)
    topology = root / "topology.toml"
    traffic = root / TRAFFIC
    edited = {
        pyproject: text,
        topology: add_topology_table(topology.read_text(), names.name, DEPENDS_ON),
        traffic: add_consumer(traffic.read_text(), names.name, CONSUMES),
    }
    for path, new in edited.items():
        path.write_text(new)


def _uv(root: Path) -> str:
    local = root / ".tools" / "bin" / "uv"
    if local.is_file():
        return str(local)
    found = shutil.which("uv")
    if found is None:
        raise ScaffoldError("no uv to lock the workspace with: run `make sync`, or put uv on PATH")
    return found


def _run(root: Path, what: str, command: Sequence[str], report: Report) -> None:
    report(f"{what}: {' '.join([Path(command[0]).name, *command[1:]])}")
    try:
        done = subprocess.run(  # noqa: S603 (the workspace's own tools, no shell)
            command,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ScaffoldError(f"{what} took longer than {STEP_TIMEOUT} s") from None
    if done.returncode != 0:
        raise ScaffoldError(f"{what} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def sync_and_render(root: Path, report: Report) -> None:
    """Lock and install the workspace with the new member, then write every derived file again
    with the tools of the environment that now holds it."""
    uv = _uv(root)
    # The environment uv syncs: the workspace's own, unless the caller chose another.
    python = root / os.environ.get("UV_PROJECT_ENVIRONMENT", ".venv") / "bin" / "python"
    _run(root, "lock", [uv, "lock", "--quiet"], report)
    _run(root, "install", [uv, "sync", "--locked", "--quiet"], report)
    render = [str(python), "-m", "agora_tools.cli", "deploy", "render"]
    _run(root, "deployment files", render, report)
    _run(root, "event contracts", [str(python), "-m", "contracts.export"], report)


def new_service(root: Path, name: str, *, report: Report = print, sync: bool = True) -> list[Path]:
    """Write the service ``name`` into the workspace at ``root`` and make it one of its own; the
    files it wrote. ``sync=False`` leaves out locking, installing and rendering."""
    names = check_name(root, name)
    if sync:
        _uv(root)  # before anything is written: without uv the service could not be installed
    # The workspace's lists name its Python services; one in another language is no member.
    services = [s.name for s in load_topology(root / "topology.toml") if s.runtime == "python"]
    written = render_service(root, names)
    try:
        register(root, names, services)
    except EditFailed as error:
        # Nothing is registered yet: take the files back, so that the name is free again.
        shutil.rmtree(root / "services" / name)
        raise ScaffoldError(f"{name} was not added: {error}") from None
    if sync:
        try:
            sync_and_render(root, report)
        except ScaffoldError as error:
            raise ScaffoldError(
                f"services/{name} is written and registered, but {error}\nOnce that is mended, "
                "run `make sync`, `agora deploy render` and `make contracts`."
            ) from None
    return written
