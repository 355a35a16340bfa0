"""A service in another language under ``agora up`` (ADR 39): how each runtime's process is run
and built, and the tiny Node service (tests/tinynode) started for real beside the tiny Python
ones, migrated once, given the environment every service gets, and restarted when killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agora.process import ProcessError, module_of
from agora.topology import Service, Topology, load_topology
from agora_tools import runtimes
from agora_tools.harness import RunningSystem
from agora_tools.testing import wait_restarted

REPO = Path(__file__).resolve().parents[3]

TESTS = Path(__file__).parent
TINY_NODE = TESTS / "tinynode"

TOPOLOGY = """
[gateway]
module = "tinyshop.edge"

[services.alpha]
module = "tinyshop.alpha"

[services.tinynode]
runtime = "node"
path = "tinynode"
depends_on = ["alpha"]
"""


def node_service(path: str = "shipping") -> Service:
    return Service(name="shipping", runtime="node", path=path)


def test_a_python_service_runs_through_the_chassis_and_a_node_one_through_its_package(
    tmp_path: Path,
) -> None:
    python = Service(name="orders", module="orders.bootstrap")

    assert runtimes.command(python, tmp_path, "/py", "serve", "--port", "9") == [
        "/py", "-m", "agora.process", "serve", "orders", "--port", "9"
    ]  # fmt: skip
    node = runtimes.command(node_service(), tmp_path, "/py", "migrate")
    assert Path(node[0]).name == "node"
    main = str(tmp_path / "shipping" / "dist" / "src" / "main.js")
    assert node[1:] == ["--max-semi-space-size=1", main, "migrate"]


def test_the_node_image_runs_its_service_with_the_flags_agora_up_gives_node() -> None:
    dockerfile = (REPO / "deploy" / "node.Dockerfile").read_text()
    entrypoint = re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.MULTILINE)

    assert entrypoint is not None
    assert json.loads(entrypoint.group(1)) == [
        "node", *runtimes.NODE_FLAGS, "/opt/agora/dist/src/main.js"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"runtime": "node"}, "names the path of its package"),
        ({"runtime": "node", "path": "x", "module": "x.bootstrap"}, "(no module)"),
        ({"path": "services/x"}, "names its module (and no path)"),
        ({}, "names its module"),
    ],
)
def test_a_service_must_say_what_runs_it(fields: dict[str, str], why: str) -> None:
    with pytest.raises(ValidationError, match=why.replace("(", r"\(").replace(")", r"\)")):
        Service(name="x", **fields)


def test_the_python_entry_point_refuses_a_node_service_by_name(tmp_path: Path) -> None:
    (tmp_path / "topology.toml").write_text(TOPOLOGY)
    topology: Topology = load_topology(tmp_path / "topology.toml")

    with pytest.raises(ProcessError, match="tinynode runs on node, from tinynode"):
        module_of(topology, "tinynode")


def _package(root: Path, dependencies: dict[str, Any]) -> Path:
    package = root / "shipping"
    (package / "src").mkdir(parents=True)
    (package / "src" / "main.ts").write_text("export {};\n")
    (package / "package.json").write_text("{}\n")
    packages = {"": {"name": "shipping"}} | {
        f"node_modules/{d}": v for d, v in dependencies.items()
    }
    (package / "package-lock.json").write_text(json.dumps({"packages": packages}))
    return package


def _touch(path: Path, at: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    os.utime(path, (at, at))


def _actions(steps: list[list[str]]) -> list[str]:
    return [" ".join(step[3:]) for step in steps]  # after npm --prefix PACKAGE


def test_a_node_package_is_installed_and_built_only_when_it_has_to_be(tmp_path: Path) -> None:
    package = _package(tmp_path, {"fastify": {"version": "5.0.0"}})
    later = time.time() + 60
    installed = package / "node_modules" / ".package-lock.json"
    built = package / runtimes.NODE_MAIN

    fresh = runtimes.build_steps(node_service(), tmp_path)
    _touch(installed, later)
    _touch(built, later)
    current = runtimes.build_steps(node_service(), tmp_path)
    _touch(package / "src" / "main.ts", later + 1)
    edited = runtimes.build_steps(node_service(), tmp_path)
    _touch(built, later + 2)
    _touch(package / "package-lock.json", later + 3)
    relocked = runtimes.build_steps(node_service(), tmp_path)

    assert _actions(fresh) == ["ci --no-audit --no-fund", "run build"]
    assert current == []
    assert _actions(edited) == ["run build"]
    assert _actions(relocked) == ["ci --no-audit --no-fund", "run build"]
    assert all(step[2] == str(package) for step in fresh)


def test_a_node_package_without_dependencies_is_only_built(tmp_path: Path) -> None:
    _package(tmp_path, {})

    assert _actions(runtimes.build_steps(node_service(), tmp_path)) == ["run build"]


async def test_one_start_at_a_time_builds_a_package(tmp_path: Path) -> None:
    _package(tmp_path, {})
    order: list[str] = []
    first_holds = asyncio.Event()

    async def first() -> None:
        async with runtimes.building(node_service(), tmp_path):
            order.append("first in")
            first_holds.set()
            # The second start is waiting meanwhile: let it try more than once.
            for _ in range(5):
                await asyncio.sleep(runtimes.BUILD_LOCK_POLL)
            order.append("first out")

    async def second() -> None:
        await first_holds.wait()
        # A lock taken through another descriptor, as another `agora up` process takes it.
        async with runtimes.building(node_service(), tmp_path):
            order.append("second in")

    await asyncio.wait_for(asyncio.gather(first(), second()), timeout=30)

    assert order == ["first in", "first out", "second in"]


def test_a_python_service_has_nothing_to_build(tmp_path: Path) -> None:
    assert runtimes.build_steps(Service(name="orders", module="orders.bootstrap"), tmp_path) == []


# -- the tiny Node service, for real -------------------------------------------------------------


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (our own loopback URL)
        return json.load(response)


@pytest.fixture
def up_with_node(tmp_path: Path) -> Iterator[tuple[RunningSystem, Path]]:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are not installed")
    shutil.copytree(TINY_NODE, tmp_path / "tinynode")
    (tmp_path / "topology.toml").write_text(TOPOLOGY)
    env = {
        **os.environ,
        "AGORA_TOPOLOGY": str(tmp_path / "topology.toml"),
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    workdir = tmp_path / "work"
    workdir.mkdir()
    with RunningSystem(workdir, env=env) as running:
        yield running, workdir


def test_up_builds_migrates_and_starts_a_node_service_like_the_others(
    up_with_node: tuple[RunningSystem, Path], tmp_path: Path
) -> None:
    up, workdir = up_with_node
    processes = up.wait_healthy(count=4)

    assert [(p["service"], p["replica"]) for p in processes] == [
        ("nats", 0),
        ("alpha", 0),
        ("tinynode", 0),
        ("gateway", 0),
    ]
    node = next(p for p in processes if p["service"] == "tinynode")
    alpha = next(p for p in processes if p["service"] == "alpha")
    seen = get_json(f"http://127.0.0.1:{node['port']}/")
    assert (seen["port"], seen["replica"]) == (node["port"], 0)
    # The environment every service gets: its data folder, the broker and its own user on it,
    # and where the other services are.
    assert seen["data_dir"] == str(workdir / ".agora" / "data")
    assert seen["nats_url"].startswith("nats://")
    assert seen["nats_user"] == "tinynode"
    assert seen["service_urls"]["alpha"] == [f"http://127.0.0.1:{alpha['port']}"]
    # Built once into its package, migrated once, logged like the others.
    assert (tmp_path / "tinynode" / runtimes.NODE_MAIN).is_file()
    data = workdir / ".agora" / "data"
    assert (data / "tinynode-migrations.log").read_text().split() == ["migrated"]
    assert (workdir / ".agora" / "logs" / "tinynode-build.log").is_file()


def test_a_killed_node_service_is_restarted_on_its_port(
    up_with_node: tuple[RunningSystem, Path],
) -> None:
    up, _ = up_with_node
    up.wait_healthy(count=4)
    victim = up.process_of("tinynode")

    os.kill(victim["pid"], signal.SIGKILL)

    after = wait_restarted(up, victim)
    assert after["port"] == victim["port"]
    assert "tinynode[0] exited unexpectedly (killed by SIGKILL)" in up.printed()
