"""`agora deploy render`: the Compose files and their companions, rendered from the topology.

A service added to the topology appears in the files with its database, role, broker user,
health check and dependencies; one removed leaves them; the files validate against the Compose
specification; a second rendering changes nothing; and the committed files are those the
repository's topology renders (the staleness check, as the event contracts have).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from agora.auth import token_digest
from agora.settings import ServiceSettings
from agora.topology import HELD_PORTS, Topology, find_topology_file, load_topology
from agora_tools.cli import app
from agora_tools.deploy import (
    DATABASE_SQL,
    DEPLOY_DIR,
    GATEWAY_ADDRESS,
    installed_versions,
    nats_config,
    render,
    stale_files,
    tag_variable,
    write_files,
)
from agora_tools.embedded_nats import find_nats_server
from agora_tools.runner import broker_users
from agora_tools.testing import POSTGRES_HOST, POSTGRES_PORT, require_server, topology

REPO = Path(__file__).resolve().parents[3]


def shop(**extra: dict[str, Any]) -> Topology:
    return topology(
        identity={"module": "identity.bootstrap"},
        catalog={"module": "catalog.bootstrap", "replicas": 2, "depends_on": ["identity"]},
        cart={"module": "cart.bootstrap", "depends_on": ["identity", "catalog"]},
        **extra,
    )


def files(t: Topology) -> dict[str, str]:
    versions = dict.fromkeys([*t.services, "gateway"], "1.2.3")
    return render(t, broker_users(t.services), versions)


def compose(t: Topology, name: str = "compose.yaml") -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(files(t)[f"compose/{name}"])
    return document


def test_a_service_added_to_the_topology_gets_its_replicas_database_role_check_and_order() -> None:
    before = compose(shop())
    after_files = files(shop(reviews={"module": "reviews.bootstrap", "depends_on": ["catalog"]}))
    after = yaml.safe_load(after_files["compose/compose.yaml"])

    assert "reviews-0" not in before["services"]
    added = after["services"]["reviews-0"]
    assert added["image"] == "agora/reviews:${AGORA_REVIEWS_TAG:-1.2.3}"
    assert added["command"] == ["serve", "reviews"]
    assert after["services"]["reviews-migrate"]["command"] == ["migrate", "reviews"]
    # It starts after its migration, the broker, and every replica of what it depends on.
    assert added["depends_on"] == {
        "reviews-migrate": {"condition": "service_completed_successfully"},
        "nats": {"condition": "service_healthy"},
        "catalog-0": {"condition": "service_healthy"},
        "catalog-1": {"condition": "service_healthy"},
    }
    assert "/readyz" in " ".join(added["healthcheck"]["test"])
    environment = added["environment"]
    assert environment["AGORA_REVIEWS_DATABASE_URL"].startswith("postgresql://reviews:${")
    assert environment["AGORA_REVIEWS_DATABASE_URL"].endswith("@postgres:5432/reviews")
    assert environment["AGORA_NATS_USER"] == "reviews"
    # Its database and role are made, its broker user exists, its secrets are listed.
    init = after_files["compose/postgres-init.sh"]
    assert 'role_and_database reviews "$AGORA_REVIEWS_DATABASE_PASSWORD"' in init.splitlines()
    assert '"user": "reviews"' in after_files["compose/nats.conf"]
    example = after_files["compose/.env.example"]
    for variable in ("AGORA_REVIEWS_DATABASE_PASSWORD", "AGORA_NATS_PASSWORD_REVIEWS"):
        assert f"\n{variable}=" in example
    # The gateway waits for it, and every process can find it.
    assert "reviews-0" in after["services"]["gateway"]["depends_on"]
    assert '"reviews": ["http://reviews-0:8080"]' in environment["AGORA_SERVICE_URLS"]


def test_a_service_s_containers_start_with_the_variables_the_topology_gives_it() -> None:
    tuned = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    rendered = compose(shop(reviews={"module": "reviews.bootstrap", "environment": tuned}))

    for container in ("reviews-0", "reviews-migrate"):
        assert rendered["services"][container]["environment"]["GLIBC_TUNABLES"] == (
            "glibc.malloc.hugetlb=1"
        )
    assert "GLIBC_TUNABLES" not in rendered["services"]["catalog-0"]["environment"]


def test_a_node_service_runs_its_own_entry_point_and_is_checked_with_node() -> None:
    shipping = {"runtime": "node", "path": "services/shipping", "depends_on": ["identity"]}
    rendered = compose(shop(shipping=shipping))
    host = compose(shop(shipping=shipping), "compose.host.yaml")

    replica = rendered["services"]["shipping-0"]
    assert replica["image"] == "agora/shipping:${AGORA_SHIPPING_TAG:-1.2.3}"
    # Its image's entry point is its own main.js, which runs one service: it is told no name.
    assert replica["command"] == ["serve"]
    assert rendered["services"]["shipping-migrate"]["command"] == ["migrate"]
    # Its image has node, not the chassis's python.
    program, flag, code = replica["healthcheck"]["test"][1:]
    assert (program, flag) == ("node", "-e")
    assert "fetch('http://127.0.0.1:8080/readyz'" in code
    port = host["services"]["shipping-0"]["environment"]["AGORA_SHIPPING_PORT"]
    assert (
        f"http://127.0.0.1:{port}/readyz"
        in host["services"]["shipping-0"]["healthcheck"]["test"][3]
    )
    # The Python processes keep theirs.
    assert rendered["services"]["catalog-0"]["command"] == ["serve", "catalog"]
    assert rendered["services"]["catalog-0"]["healthcheck"]["test"][1] == "python"
    assert rendered["services"]["gateway"]["healthcheck"]["test"][1] == "python"


def test_a_service_removed_from_the_topology_leaves_every_file() -> None:
    without_cart = topology(
        identity={"module": "identity.bootstrap"},
        catalog={"module": "catalog.bootstrap", "replicas": 2, "depends_on": ["identity"]},
    )

    rendered = files(without_cart)

    for text in rendered.values():
        assert "cart" not in text.replace("carts", ""), text[:200]
    assert not any(name.startswith("cart") for name in compose(without_cart)["services"])


def test_each_replica_is_a_service_of_its_own_that_every_process_can_reach() -> None:
    services = compose(shop())["services"]

    assert {"catalog-0", "catalog-1"} <= set(services)
    urls = services["gateway"]["environment"]["AGORA_SERVICE_URLS"]
    assert '"catalog": ["http://catalog-0:8080", "http://catalog-1:8080"]' in urls
    assert [services[f"catalog-{i}"]["environment"]["AGORA_REPLICA"] for i in (0, 1)] == ["0", "1"]


@pytest.mark.parametrize("name", ["compose.yaml", "compose.host.yaml"])
def test_every_process_is_given_longer_to_stop_than_it_gives_itself(name: str) -> None:
    services = compose(shop(), name)["services"]
    processes = [s for n, s in services.items() if n == "gateway" or re.fullmatch(r".+-\d+", n)]

    graces = {s["stop_grace_period"] for s in processes}

    assert len(processes) >= 3
    assert len(graces) == 1
    assert float(graces.pop().removesuffix("s")) > ServiceSettings().stop_timeout


def test_only_the_gateway_is_published_on_a_host_port() -> None:
    services = compose(shop())["services"]

    published = {name: s["ports"] for name, s in services.items() if "ports" in s}

    assert published == {"gateway": ["8000:8000"]}


def test_every_service_reaches_its_own_database_only_as_its_own_role() -> None:
    t = shop()
    init = files(t)["compose/postgres-init.sh"]
    services = compose(t)["services"]

    for name in t.services:
        url = services[f"{name}-0"]["environment"][f"AGORA_{name.upper()}_DATABASE_URL"]
        password = rf"\$\{{AGORA_{name.upper()}_DATABASE_PASSWORD:\?[^}}]+\}}"
        assert re.fullmatch(rf"postgresql://{name}:{password}@postgres:5432/{name}", url)
        assert f'role_and_database {name} "$AGORA_{name.upper()}_DATABASE_PASSWORD"' in init
    # Nobody but the owner (and the superuser) may connect to a service's database.
    assert DATABASE_SQL in init
    assert 'REVOKE CONNECT ON DATABASE :"name" FROM PUBLIC;' in DATABASE_SQL
    assert 'GRANT CONNECT ON DATABASE :"name" TO :"name";' in DATABASE_SQL
    assert "REVOKE CONNECT ON DATABASE postgres FROM PUBLIC;" in init


def psql(*args: str, user: str = "postgres", database: str = "postgres", sql: str = "") -> Any:
    command = ["psql", "-h", POSTGRES_HOST, "-p", str(POSTGRES_PORT), "-U", user, "-d", database]
    return subprocess.run(
        [*command, "-v", "ON_ERROR_STOP=1", *args],
        input=sql,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.fixture
def two_services() -> Iterator[tuple[str, str]]:
    """Two service names of the test's own on the shared server; their roles and databases are
    dropped afterwards, and nothing else there is touched."""
    require_server(POSTGRES_HOST, POSTGRES_PORT, "PostgreSQL")
    if shutil.which("psql") is None:
        pytest.skip("no psql to run the database set-up with")
    suffix = uuid.uuid4().hex[:8]
    names = (f"deploy-test-a-{suffix}", f"deploy-test-b-{suffix}")
    try:
        yield names
    finally:
        for name in names:
            psql("-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            psql("-c", f'DROP ROLE IF EXISTS "{name}"')


def test_a_service_role_connects_to_its_own_database_and_to_no_other_service_s(
    two_services: tuple[str, str],
) -> None:
    a, b = two_services
    for name in (a, b, a):  # a second run changes nothing and fails on nothing
        made = psql("-v", f"name={name}", "-v", "password=a-password-of-its-own", sql=DATABASE_SQL)
        assert made.returncode == 0, made.stderr

    own = psql("-c", "SELECT 1", user=a, database=a)
    other = psql("-c", "SELECT 1", user=a, database=b)

    assert own.returncode == 0, own.stderr
    assert other.returncode != 0
    assert "permission denied for database" in other.stderr


def test_the_services_believe_the_gateway_about_the_client_and_the_gateway_its_proxies() -> None:
    services = compose(shop())["services"]

    assert services["catalog-0"]["environment"]["AGORA_CATALOG_TRUSTED_PROXIES"] == GATEWAY_ADDRESS
    assert services["gateway"]["networks"]["default"]["ipv4_address"] == GATEWAY_ADDRESS
    gateway = services["gateway"]["environment"]
    assert gateway["AGORA_GATEWAY_TRUSTED_PROXIES"] == "${AGORA_GATEWAY_TRUSTED_PROXIES:-}"
    assert gateway["AGORA_GATEWAY_HOST"] == "0.0.0.0"
    assert gateway["AGORA_PROFILE"] == "production"


def test_a_service_accepts_calls_from_the_gateway_and_its_dependants_only() -> None:
    services = compose(shop())["services"]

    callers = services["identity-0"]["environment"]["AGORA_SERVICE_CALLERS"]
    named = re.findall(r'"([a-z-]+)": "\$\{AGORA_SERVICE_DIGEST_', callers)
    assert named == ["gateway", "catalog", "cart"]
    assert services["cart-0"]["environment"]["AGORA_SERVICE_CALLERS"].startswith('{"gateway": ')


def test_rendering_twice_gives_the_same_files_and_writes_nothing_the_second_time(
    tmp_path: Path,
) -> None:
    assert files(shop()) == files(shop())

    assert write_files(tmp_path, files(shop())) != []
    assert write_files(tmp_path, files(shop())) == []
    assert stale_files(tmp_path, files(shop())) == []


def test_the_one_host_rendering_keeps_off_the_machines_servers_ports_and_shares_none() -> None:
    t = shop(reviews={"module": "reviews.bootstrap", "replicas": 3})
    services = compose(t, "compose.host.yaml")["services"]

    listening = [
        int(value)
        for name, service in services.items()
        if not name.endswith("-migrate")
        for key, value in service.get("environment", {}).items()
        if key.startswith("AGORA_") and key.endswith("_PORT")
    ]
    infrastructure = [t.host.postgres, t.host.nats, t.host.nats_monitor, t.host.redis]
    every = listening + infrastructure

    assert all(s["network_mode"] == "host" and "ports" not in s for s in services.values())
    assert len(listening) == sum(s.replicas for s in t) + 1  # and the gateway's
    assert len(set(every)) == len(every)
    assert not set(every) & HELD_PORTS
    assert str(t.host.nats) in services["nats"]["command"]
    assert str(t.host.postgres) in services["postgres"]["command"]
    assert str(t.host.redis) in services["redis"]["command"]


@pytest.mark.parametrize(
    ("host", "said"),
    [
        ({"postgres": 5432}, "5432 of postgres is one the machine's own servers hold"),
        ({"redis": 18100}, "host port 18100 is both redis's and identity's"),
    ],
)
def test_a_topology_whose_host_ports_clash_is_refused_with_what_clashes(
    host: dict[str, int], said: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(said)):
        Topology.model_validate(
            {"host": host, "services": {"identity": {"module": "identity.bootstrap"}}}
        )


def test_a_service_host_port_may_be_given_and_its_replicas_follow_it() -> None:
    t = topology(catalog={"module": "catalog.bootstrap", "replicas": 2, "host_port": 19000})

    assert t.host_ports() == {"catalog": [19000, 19001]}


@pytest.mark.parametrize("name", ["compose.yaml", "compose.host.yaml"])
def test_the_compose_files_validate_against_the_compose_specification(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    path.write_text(files(shop())[f"compose/{name}"])
    command = Path(sys.executable).parent / "check-jsonschema"

    result = subprocess.run(
        [str(command), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_example_env_file_names_every_variable_the_files_read() -> None:
    rendered = files(shop())
    example = rendered["compose/.env.example"]
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE))

    read = set()
    for name in ("compose/compose.yaml", "compose/compose.host.yaml"):
        read |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", rendered[name]))
    read |= set(re.findall(r"\$(AGORA_[A-Z0-9_]*)", rendered["compose/nats.conf"]))
    read |= set(re.findall(r"\$([A-Z][A-Z0-9_]*)", rendered["compose/postgres-init.sh"]))
    # The image tags have the rendered versions as defaults: no secret, nothing to give.
    tags = {tag_variable(name) for name in [*shop().services, "gateway"]}

    assert read - tags == listed - {"COMPOSE_PROJECT_NAME"}
    # The project's name is read by Compose itself, from the env file beside the Compose file.
    assert "name" not in compose(shop())
    assert "\nCOMPOSE_PROJECT_NAME=agora\n" in example


def test_each_container_runs_its_image_at_a_tag_of_its_own_on_a_read_only_root() -> None:
    services = compose(shop())["services"]

    for name in ("catalog-0", "catalog-1", "catalog-migrate", "gateway"):
        process = name.split("-")[0]
        variable = tag_variable(process)
        assert services[name]["image"] == f"agora/{process}:${{{variable}:-1.2.3}}"
        assert services[name]["read_only"] is True
        assert services[name]["tmpfs"] == ["/tmp"]  # noqa: S108 (the container's own)
        # The version a process reports is its image's own, not one the file would pin.
        assert "AGORA_VERSION" not in services[name]["environment"]


def test_deploy_secrets_gives_every_variable_a_value_and_never_replaces_a_file(
    tmp_path: Path,
) -> None:
    target = tmp_path / ".env"
    example = (REPO / DEPLOY_DIR / "compose" / ".env.example").read_text()
    names = re.findall(r"^([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE)

    written = CliRunner().invoke(app, ["deploy", "secrets", "--output", str(target)])
    first = target.read_text()
    again = CliRunner().invoke(app, ["deploy", "secrets", "--output", str(target)])

    assert written.exit_code == 0, written.output
    assert target.stat().st_mode & 0o777 == 0o600
    values = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", first, flags=re.MULTILINE))
    assert list(values) == names
    assert values["AGORA_ADMIN_EMAIL"] == "admin@agora.local"
    assert values["AGORA_GATEWAY_TRUSTED_PROXIES"] == ""
    assert values["COMPOSE_PROJECT_NAME"] == "agora"
    made = {n: v for n, v in values.items() if n not in {"AGORA_ADMIN_EMAIL", *PLAIN}}
    assert all(re.fullmatch(r"[0-9a-f]{64}", value) for value in made.values())
    assert len(set(made.values())) == len(made), "a secret is used twice"
    for name, digest in values.items():
        if name.startswith("AGORA_SERVICE_DIGEST_"):
            assert digest == token_digest(values[name.replace("_DIGEST_", "_TOKEN_")])
    assert again.exit_code == 1
    assert "left as it is" in again.output
    assert target.read_text() == first


# Not secrets: none trusted unless the user names a proxy; the Compose project's name.
PLAIN = {"AGORA_GATEWAY_TRUSTED_PROXIES", "COMPOSE_PROJECT_NAME"}


def test_the_broker_reads_each_users_password_from_its_environment(tmp_path: Path) -> None:
    try:
        server = find_nats_server()
    except RuntimeError as error:
        pytest.skip(f"no nats-server to check the configuration with: {error}")
    t = shop()
    permissions = broker_users(t.services)
    config = tmp_path / "nats.conf"
    config.write_text(nats_config(permissions).replace("/data", str(tmp_path / "data")))
    passwords = {f"AGORA_NATS_PASSWORD_{user.upper()}": f"pw-{user}" for user in permissions}

    valid = subprocess.run(
        [str(server), "-c", str(config), "-t"], env=passwords, capture_output=True, text=True
    )
    missing = {k: v for k, v in passwords.items() if k != "AGORA_NATS_PASSWORD_CART"}
    refused = subprocess.run(
        [str(server), "-c", str(config), "-t"], env=missing, capture_output=True, text=True
    )

    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert refused.returncode != 0
    assert "AGORA_NATS_PASSWORD_CART" in refused.stdout + refused.stderr


def test_the_committed_deployment_files_are_what_the_topology_renders() -> None:
    topology_file = REPO / "topology.toml"
    t = load_topology(topology_file)
    rendered = render(t, broker_users(t.services), installed_versions(t))

    stale = stale_files(REPO / DEPLOY_DIR, rendered)

    assert stale == [], f"stale: {stale}; run `agora deploy render` at the repository's root"


def test_deploy_render_check_names_the_stale_files_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(REPO / "topology.toml", tmp_path / "topology.toml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGORA_TOPOLOGY", raising=False)
    assert find_topology_file() == tmp_path / "topology.toml"

    stale = CliRunner().invoke(app, ["deploy", "render", "--check"])
    assert stale.exit_code == 1
    assert "deploy/compose/compose.yaml" in stale.output
    assert not (tmp_path / DEPLOY_DIR).exists()

    written = CliRunner().invoke(app, ["deploy", "render"])
    again = CliRunner().invoke(app, ["deploy", "render"])
    fresh = CliRunner().invoke(app, ["deploy", "render", "--check"])

    assert written.exit_code == 0, written.output
    assert "wrote deploy/compose/compose.yaml" in written.output
    assert "already up to date" in again.output
    assert fresh.exit_code == 0, fresh.output
