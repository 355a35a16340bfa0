"""``agora new``: names it refuses, the workspace files it edits, and, in a scratch copy of the
repository, a new service that passes every check the repository runs and answers through the
gateway of ``agora up``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from agora.topology import Topology
from agora_tools.cli import app
from agora_tools.harness import RunningSystem, wait_for
from agora_tools.scaffold.edits import add_consumer, add_to_service_lists, add_topology_table

REPO = Path(__file__).resolve().parents[3]
# The workspace's members: a service in another language (runtime = "node") is none.
SERVICES = tuple(
    name
    for name, table in tomllib.loads((REPO / "topology.toml").read_text())["services"].items()
    if table.get("runtime", "python") == "python"
)
NEW = "parcels"
# Each step's bound in the copy; the whole test stays under about four minutes on two cores.
STEP = 240


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("Parcels", "lowercase"),
        ("9lives", "starting with a letter"),
        ("p", "2 to 30"),
        ("parcel-lockers", "lowercase letters, digits and single '_'"),
        ("parcels_", "single '_'"),
        ("class", "keyword"),
        ("orders", "a service already"),
        ("gateway", "a service already"),
        ("json", "Python module"),
        ("agora", "Python module"),
    ],
)
def test_a_name_no_new_service_may_take_is_refused_with_exit_code_2_and_nothing_written(
    name: str, why: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(REPO / "topology.toml", tmp_path / "topology.toml")
    monkeypatch.setenv("AGORA_TOPOLOGY", str(tmp_path / "topology.toml"))
    monkeypatch.chdir(tmp_path)

    result = CliRunner().invoke(app, ["new", name])

    assert result.exit_code == 2, result.output
    assert why in " ".join(result.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["topology.toml"]


def _lists(value: Any, path: str = "") -> Iterator[tuple[str, list[str]]]:
    """Every list of strings in a parsed TOML document, by where it is."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _lists(inner, f"{path}.{key}")
    elif isinstance(value, list):
        if all(isinstance(item, str) for item in value):
            yield path, value
        for index, inner in enumerate(value):
            yield from _lists(inner, f"{path}[{index}]")


def test_every_list_of_the_root_pyproject_that_names_every_service_names_the_new_one() -> None:
    text = (REPO / "pyproject.toml").read_text()
    before = tomllib.loads(text)

    after = tomllib.loads(add_to_service_lists(text, SERVICES, NEW))

    naming_all = [path for path, items in _lists(before) if set(SERVICES) <= set(items)]
    domains = {f"{service}.domain" for service in SERVICES}
    naming_domains = [path for path, items in _lists(before) if domains <= set(items)]
    lists_after = dict(_lists(after))
    assert len(naming_all) >= 6  # the workspace's dependencies, the linters' lists
    assert all(lists_after[path][-1] == NEW for path in naming_all)
    assert all(lists_after[path][-1] == f"{NEW}.domain" for path in naming_domains)
    assert after["tool"]["uv"]["sources"][NEW] == {"workspace": True}
    assert f"services/{NEW}/src" in after["tool"]["mypy"]["mypy_path"].split(":")
    assert dict(_lists(before)).keys() == lists_after.keys()


def test_the_topology_gains_the_service_and_the_traffic_what_it_consumes() -> None:
    topology_text = add_topology_table((REPO / "topology.toml").read_text(), NEW, ["identity"])
    traffic_path = REPO / "libs/contracts/src/contracts/traffic.py"
    traffic = add_consumer(traffic_path.read_text(), NEW, ["identity.UserRegistered"])

    topology = Topology.model_validate(tomllib.loads(topology_text))
    service = topology.services[NEW]
    assert (service.module, service.public_prefix, service.depends_on) == (
        f"{NEW}.bootstrap",
        "/api",
        ("identity",),
    )
    assert [(r.methods, r.path, r.auth) for r in service.routes] == [
        (("GET", "POST"), f"/{NEW}", "user")
    ]
    compile(traffic, str(traffic_path), "exec")
    assert f'    "{NEW}": (identity.UserRegistered,),\n}}\n' in traffic


# In the scratch copy.


def _copy_repository(target: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree is left out
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def _environment(copy: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "AGORA_TOPOLOGY"}}
    env.update(
        UV_PROJECT_ENVIRONMENT=str(copy / ".venv"),
        # Not offline: the repository's own sync put only this machine's wheels in uv's cache,
        # and locking a new member resolves for every platform and Python the workspace
        # supports, which needs the package index (as `agora new` does for a user).
        UV_PYTHON_DOWNLOADS="never",
        UV_PYTHON_PREFERENCE="only-system",
    )
    return env


def _uv(copy: Path, env: dict[str, str]) -> str:
    """The repository's uv (``make`` installs it into .tools/), where ``agora new`` looks for
    it in the copy too; else the one on PATH."""
    local = REPO / ".tools" / "bin" / "uv"
    if local.is_file():
        (copy / ".tools" / "bin").mkdir(parents=True)
        (copy / ".tools" / "bin" / "uv").symlink_to(local)
        return str(local)
    found = shutil.which("uv", path=env.get("PATH"))
    assert found is not None, "no uv: run `make sync` first"
    return found


class Copy:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.bin = root / ".venv" / "bin"

    def run(self, *command: str, timeout: float = STEP) -> str:
        """Run ``command`` in the copy (a tool of its environment by name); its output."""
        tool = self.bin / command[0]
        argv = [str(tool) if tool.exists() else command[0], *command[1:]]
        started = time.monotonic()
        done = subprocess.run(
            argv,
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        took = time.monotonic() - started
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{' '.join(command)} failed ({took:.0f} s):\n{output}"
        return output


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Copy]:
    """A copy of the repository with its own environment, after `agora new parcels`."""
    root = tmp_path_factory.mktemp("repository")
    _copy_repository(root)
    env = _environment(root)
    copy = Copy(root, env)
    copy.run(_uv(root, env), "sync", "--locked", "--quiet")
    copy.run("agora", "new", NEW)
    yield copy
    # The environment and the system's data are the copy's bulk; its files stay for a look.
    for bulky in (root / ".venv", root / ".agora"):
        shutil.rmtree(bulky, ignore_errors=True)


def _services_only(topology: str, keep: set[str]) -> str:
    """``topology`` without the ``[services.*]`` tables of services not in ``keep``."""
    parts = re.split(r"(?m)^(?=\[)", topology)
    return "".join(
        part
        for part in parts
        if not (found := re.match(r"\[services\.(\w+)\]", part)) or found.group(1) in keep
    )


@pytest.mark.system  # it starts `agora up`
@pytest.mark.timeout(480)
def test_a_new_service_passes_every_check_of_the_repository_and_answers_through_the_gateway(
    scratch: Copy,
) -> None:
    service = scratch.root / "services" / NEW
    assert (service / "src" / NEW / "migrations" / "versions").is_dir()

    scratch.run("ruff", "check", ".")
    scratch.run("ruff", "format", "--check", ".")
    scratch.run("mypy", f"services/{NEW}")
    scratch.run("lint-imports")
    scratch.run("agora", "deploy", "render", "--check")
    scratch.run(
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "libs/agora-tools/tests/test_deploy_render.py::"
        "test_the_committed_deployment_files_are_what_the_topology_renders",
        "libs/agora-tools/tests/test_k8s_render.py::"
        "test_the_committed_manifests_are_what_the_topology_renders",
        "libs/contracts/tests/test_published_contracts.py",
        f"services/{NEW}",
    )

    # The new service and what it depends on, with the gateway: the other services have
    # nothing to do with it, and starting them all would double the time on two cores.
    topology = scratch.root / "up.toml"
    topology.write_text(
        _services_only((scratch.root / "topology.toml").read_text(), {NEW, "identity"})
    )
    env = {**scratch.env, "AGORA_TOPOLOGY": str(topology)}
    with RunningSystem(scratch.root, env=env, agora=str(scratch.bin / "agora")) as system:
        system.wait_healthy(count=4, timeout=STEP)  # the broker, identity, the service, gateway
        api = httpx.Client(base_url=system.gateway_url, timeout=30)
        login = {"email": "ada@example.com", "password": "plum-orchard-by-the-river"}
        registered = api.post("/api/identity/users", json=login)
        assert registered.status_code == 201, registered.text
        token = api.post("/api/identity/token", json=login)
        assert token.status_code == 200, token.text
        headers = {"authorization": f"Bearer {token.json()['access_token']}"}
        created = api.post(f"/api/{NEW}", json={"name": "Tea"}, headers=headers)
        refused = api.post(f"/api/{NEW}", json={"name": " "}, headers=headers)

        def both() -> list[str] | None:
            names = [i["name"] for i in api.get(f"/api/{NEW}", headers=headers).json()["items"]]
            return names if len(names) == 2 else None

        names = wait_for("the welcome item from UserRegistered", both, timeout=60)

    assert created.status_code == 201, created.text
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert sorted(names) == ["My first item", "Tea"]
