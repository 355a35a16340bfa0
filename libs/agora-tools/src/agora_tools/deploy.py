"""``agora deploy render``: the deployment files, rendered from the topology (ADR 29).

Everything in ``deploy/compose/`` comes from ``topology.toml`` and the contracts, so nothing there
can drift from what Agora is made of:

* ``compose.yaml``, the production profile: one Compose service per replica (each addressable,
  for the client-side balancing and the console), a one-shot migration per service before its
  replicas start, PostgreSQL with a database and a role per service, NATS with JetStream and a
  broker user per service, Redis for the cart and the gateway; only the gateway is published;
* ``compose.host.yaml``, the same system on one host without container networking: every
  process on the machine's network, on the ports ``[host]`` of the topology gives;
* ``nats.conf``, the broker's users and what each may do (:mod:`agora.messaging.permissions`),
  their passwords read from the environment;
* ``postgres-init.sh``, which makes (or updates) each service's role and database;
* ``.env.example``, every secret the files read, to be copied to ``.env`` (never committed).

The functions here are pure: a topology (and the broker's permissions) in, file texts out, the
same texts for the same input.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from agora.messaging.permissions import Permissions, users_config
from agora.secrets import token_digest
from agora.topology import GATEWAY, Service, Topology, env_prefix
from agora_tools import grafana, k8s, prometheus
from agora_tools.runner import OPERATOR, service_callers

DEPLOY_DIR = "deploy"
COMPOSE_DIR = "compose"
PROJECT = "agora"
PROJECT_VARIABLE = "COMPOSE_PROJECT_NAME"
ENV_FILE = ".env"

POSTGRES_IMAGE = "postgres:17-alpine"
NATS_IMAGE = "nats:2.11-alpine"
REDIS_IMAGE = "redis:7-alpine"

# Inside a container every service listens here; the gateway on the topology's port.
SERVICE_PORT = 8080
POSTGRES_PORT = 5432
NATS_PORT = 4222
NATS_MONITOR_PORT = 8222
REDIS_PORT = 6379
# The Compose network has a fixed range so that the services can trust the gateway's address
# for X-Forwarded-For (it names the client whose logins identity throttles).
SUBNET = "172.28.0.0/24"
GATEWAY_ADDRESS = "172.28.0.2"
# Where the containers find the topology the files were rendered from.
TOPOLOGY_MOUNT = "/etc/agora/topology.toml"

GENERATED = (
    "# Rendered by `agora deploy render` from topology.toml: do not edit, render again (ADR 29).\n"
)
MISSING = "is not set: see deploy/compose/.env.example"

_PASSWORD_VAR = re.compile(r'"(\$AGORA_NATS_PASSWORD_[A-Z0-9_]+)"')


@dataclass(frozen=True)
class Network:
    """Where the processes of one rendering find each other."""

    host: bool

    def service(self, topology: Topology, name: str, replica: int) -> tuple[str, int]:
        """The address and port of a service's replica."""
        if self.host:
            return "127.0.0.1", topology.host_ports()[name][replica]
        return replica_name(name, replica), SERVICE_PORT

    def infra(self, topology: Topology, name: str) -> tuple[str, int]:
        """The address and port of postgres, nats, nats_monitor or redis."""
        if self.host:
            return "127.0.0.1", int(getattr(topology.host, name))
        inside = {
            "postgres": POSTGRES_PORT,
            "nats": NATS_PORT,
            "nats_monitor": NATS_MONITOR_PORT,
            "redis": REDIS_PORT,
        }
        return ("nats" if name == "nats_monitor" else name), inside[name]

    def gateway_port(self, topology: Topology) -> int:
        return topology.host.gateway if self.host else topology.gateway.port


PRODUCTION = Network(host=False)
ONE_HOST = Network(host=True)


def replica_name(service: str, replica: int) -> str:
    """The Compose service of one replica: ``catalog-0``."""
    return f"{service}-{replica}"


def var(name: str) -> str:
    """A Compose reference to a variable of the env file that must be set."""
    return f"${{{name}:?{name} {MISSING}}}"


def secret_name(kind: str, who: str) -> str:
    """``AGORA_NATS_PASSWORD_CATALOG`` and the like: one variable per process and secret."""
    return f"AGORA_{kind}_{who.upper().replace('-', '_')}"


def database_password(service: str) -> str:
    return f"{env_prefix(service)}DATABASE_PASSWORD"


# Rendering.


def render(
    topology: Topology,
    permissions: Mapping[str, Permissions | None],
    versions: Mapping[str, str],
) -> dict[str, str]:
    """Every file of ``deploy/compose/``, ``deploy/k8s/`` (ADR 33), ``deploy/prometheus/`` and
    ``deploy/grafana/`` (ADR 34), by its path under ``deploy/``."""
    return {
        f"{COMPOSE_DIR}/compose.yaml": compose_file(topology, versions, PRODUCTION),
        f"{COMPOSE_DIR}/compose.host.yaml": compose_file(topology, versions, ONE_HOST),
        f"{COMPOSE_DIR}/nats.conf": nats_config(permissions),
        f"{COMPOSE_DIR}/postgres-init.sh": postgres_init(topology),
        f"{COMPOSE_DIR}/{ENV_FILE}.example": env_example(topology, permissions),
        **k8s.render(topology, permissions, versions),
        **prometheus.render(topology),
        **grafana.render(topology),
    }


def compose_file(topology: Topology, versions: Mapping[str, str], network: Network) -> str:
    services: dict[str, Any] = {
        "postgres": _postgres(topology, network),
        "postgres-init": _postgres_init_step(topology, network),
        "nats": _nats(topology, network),
        "redis": _redis(topology, network),
    }
    for service in topology.start_order():
        services[f"{service.name}-migrate"] = _migrate(topology, service, versions, network)
        for replica in range(service.replicas):
            services[replica_name(service.name, replica)] = _replica(
                topology, service, replica, versions, network
            )
    services[GATEWAY] = _gateway(topology, versions, network)
    # No top-level ``name``: Compose v1 refuses it. The env file names the project
    # (COMPOSE_PROJECT_NAME), which every Compose reads.
    document: dict[str, Any] = {"services": services}
    document["volumes"] = {"postgres-data": {}, "nats-data": {}, "redis-data": {}}
    if not network.host:
        document["networks"] = {"default": {"ipam": {"config": [{"subnet": SUBNET}]}}}
    intro = (
        "# The production profile: `docker compose --env-file .env up -d` in deploy/compose/.\n"
        if not network.host
        else "# One host, no container networking: each process on the machine's network, on\n"
        "# the ports of topology.toml's [host]. The tests run this one; users run compose.yaml.\n"
    )
    return GENERATED + intro + _yaml(document)


def _common(network: Network) -> dict[str, Any]:
    return {"network_mode": "host"} if network.host else {}


def _postgres(topology: Topology, network: Network) -> dict[str, Any]:
    _, port = network.infra(topology, "postgres")
    command = ["postgres", "-p", str(port)]
    if network.host:
        command += ["-c", "listen_addresses=127.0.0.1"]
    return {
        "image": POSTGRES_IMAGE,
        **_common(network),
        "command": command,
        "environment": {"POSTGRES_PASSWORD": var("POSTGRES_PASSWORD")},
        "volumes": ["postgres-data:/var/lib/postgresql/data"],
        "healthcheck": _healthcheck(["pg_isready", "-h", "127.0.0.1", "-p", str(port)]),
        "restart": "unless-stopped",
    }


def _postgres_init_step(topology: Topology, network: Network) -> dict[str, Any]:
    host, port = network.infra(topology, "postgres")
    environment = {
        "PGHOST": host,
        "PGPORT": str(port),
        "PGUSER": "postgres",
        "PGPASSWORD": var("POSTGRES_PASSWORD"),
        **{database_password(s.name): var(database_password(s.name)) for s in topology},
    }
    return {
        "image": POSTGRES_IMAGE,
        **_common(network),
        "command": ["sh", "/agora/postgres-init.sh"],
        "environment": environment,
        "volumes": ["./postgres-init.sh:/agora/postgres-init.sh:ro"],
        "depends_on": {"postgres": {"condition": "service_healthy"}},
        "restart": "no",
    }


def _nats(topology: Topology, network: Network) -> dict[str, Any]:
    _, port = network.infra(topology, "nats")
    _, monitor = network.infra(topology, "nats_monitor")
    listen = "127.0.0.1" if network.host else "0.0.0.0"
    health = f"http://127.0.0.1:{monitor}/healthz"
    users = [*topology.services, GATEWAY, OPERATOR]
    return {
        "image": NATS_IMAGE,
        **_common(network),
        "command": ["-c", "/etc/nats/nats.conf", "-a", listen, "-p", str(port), "-m", str(monitor)],
        "environment": {
            secret_name("NATS_PASSWORD", user): var(secret_name("NATS_PASSWORD", user))
            for user in users
        },
        "volumes": ["./nats.conf:/etc/nats/nats.conf:ro", "nats-data:/data"],
        "healthcheck": _healthcheck(
            ["wget", "-q", "-O", "/dev/null", f"{health}?js-enabled-only=true"]
        ),
        "restart": "unless-stopped",
    }


def _redis(topology: Topology, network: Network) -> dict[str, Any]:
    _, port = network.infra(topology, "redis")
    command = ["redis-server", "--port", str(port), "--appendonly", "yes"]
    command += ["--requirepass", var("REDIS_PASSWORD")]
    if network.host:
        command += ["--bind", "127.0.0.1"]
    ping = f'redis-cli --no-auth-warning -p {port} -a "$$REDIS_PASSWORD" ping | grep -q PONG'
    return {
        "image": REDIS_IMAGE,
        **_common(network),
        "command": command,
        "environment": {"REDIS_PASSWORD": var("REDIS_PASSWORD")},
        "volumes": ["redis-data:/data"],
        "healthcheck": {**_healthcheck([]), "test": ["CMD-SHELL", ping]},
        "restart": "unless-stopped",
    }


def _healthcheck(test: list[str]) -> dict[str, Any]:
    return {
        "test": ["CMD", *test],
        "interval": "5s",
        "timeout": "3s",
        "retries": 30,
        "start_period": "10s",
    }


def _image(name: str, versions: Mapping[str, str]) -> dict[str, Any]:
    """The image of a service or the gateway (built by deploy/build-images.sh), and the bounds
    of its container: a read-only root filesystem, a private /tmp.

    Its tag is a variable whose default is the version rendered here: deploying a new version of
    one service is setting ``AGORA_<SERVICE>_TAG`` and replacing that service's containers alone.
    """
    return {
        "image": f"{PROJECT}/{name}:${{{tag_variable(name)}:-{versions[name]}}}",
        "read_only": True,
        "tmpfs": ["/tmp"],  # noqa: S108 (a private tmpfs of the container's own)
    }


def tag_variable(name: str) -> str:
    """``AGORA_ORDERS_TAG``: the image tag Compose runs for ``name``."""
    return f"{env_prefix(name)}TAG"


def _migrate(
    topology: Topology, service: Service, versions: Mapping[str, str], network: Network
) -> dict[str, Any]:
    return {
        **_image(service.name, versions),
        **_common(network),
        "command": process_args(topology, service.name, "migrate"),
        "environment": _environment(topology, service.name, 0, network),
        "volumes": [_topology_volume()],
        "depends_on": {"postgres-init": {"condition": "service_completed_successfully"}},
        "restart": "no",
    }


def _replica(
    topology: Topology,
    service: Service,
    replica: int,
    versions: Mapping[str, str],
    network: Network,
) -> dict[str, Any]:
    depends_on: dict[str, Any] = {
        f"{service.name}-migrate": {"condition": "service_completed_successfully"},
        "nats": {"condition": "service_healthy"},
    }
    if service.name == "cart":
        depends_on["redis"] = {"condition": "service_healthy"}
    for dependency in service.depends_on:
        for other in range(topology.services[dependency].replicas):
            depends_on[replica_name(dependency, other)] = {"condition": "service_healthy"}
    _, port = network.service(topology, service.name, replica)
    return {
        **_image(service.name, versions),
        **_common(network),
        "command": process_args(topology, service.name, "serve"),
        "environment": _environment(topology, service.name, replica, network),
        "volumes": [_topology_volume()],
        "depends_on": depends_on,
        "healthcheck": _ready_check(service.runtime, port),
        "stop_grace_period": STOP_GRACE_PERIOD,
        "restart": "unless-stopped",
    }


def _gateway(topology: Topology, versions: Mapping[str, str], network: Network) -> dict[str, Any]:
    port = network.gateway_port(topology)
    depends_on: dict[str, Any] = {"redis": {"condition": "service_healthy"}}
    for service in topology.start_order():
        for replica in range(service.replicas):
            depends_on[replica_name(service.name, replica)] = {"condition": "service_healthy"}
    gateway: dict[str, Any] = {
        **_image(GATEWAY, versions),
        **_common(network),
        "command": process_args(topology, GATEWAY, "serve"),
        "environment": _environment(topology, GATEWAY, 0, network),
        "volumes": [_topology_volume()],
        "depends_on": depends_on,
        "healthcheck": _ready_check("python", port),
        "stop_grace_period": STOP_GRACE_PERIOD,
        "restart": "unless-stopped",
    }
    if not network.host:
        # The one door from outside; its fixed address is the one the services trust.
        gateway["ports"] = [f"{port}:{port}"]
        gateway["networks"] = {"default": {"ipv4_address": GATEWAY_ADDRESS}}
    return gateway


# Longer than the bound a process keeps its own stop to (AGORA_STOP_TIMEOUT, 20 s; ADR 30), so
# that SIGTERM's ordered stop ends the process, not the runtime's SIGKILL.
STOP_GRACE_PERIOD = "25s"


def _ready_check(runtime: str, port: int) -> dict[str, Any]:
    return _healthcheck(fetch_command(runtime, f"http://127.0.0.1:{port}/readyz"))


def fetch_command(runtime: str, url: str) -> list[str]:
    """A command that fails unless ``url`` answers 2xx within 2 s, run inside an image of that
    runtime: the images carry no curl or wget, but a Python image has the chassis's python and
    a Node image has node (deploy/node.Dockerfile). Neither program's code has a double quote,
    so it may be quoted whole in a shell line."""
    if runtime == "node":
        code = (
            f"fetch('{url}', {{signal: AbortSignal.timeout(2000)}})"
            ".then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"
        )
        return ["node", "-e", code]
    return ["python", "-c", f"import urllib.request; urllib.request.urlopen('{url}', timeout=2)"]


def runtime_of(topology: Topology, name: str) -> str:
    """What runs a process: the gateway is Python; a service says (ADR 39)."""
    return "python" if name == GATEWAY else topology.services[name].runtime


def process_args(topology: Topology, name: str, action: str) -> list[str]:
    """What a process's image is given to ``serve`` or ``migrate``: the chassis's entry point
    (``agora-service``) is told which service; a Node image's entry point is its own package's
    ``main.js``, which runs one service and is told none (ADR 39)."""
    if runtime_of(topology, name) == "node":
        return [action]
    return [action, name]


def _topology_volume() -> str:
    return f"../../topology.toml:{TOPOLOGY_MOUNT}:ro"


def _environment(topology: Topology, name: str, replica: int, network: Network) -> dict[str, str]:
    """What one process of ``name`` is told, as ``agora up`` tells its children (runner.py),
    with the secrets read from the env file."""
    prefix = env_prefix(name)
    nats_host, nats_port = network.infra(topology, "nats")
    redis_host, redis_port = network.infra(topology, "redis")
    redis_url = f"redis://:{var('REDIS_PASSWORD')}@{redis_host}:{redis_port}/0"
    port = (
        network.gateway_port(topology)
        if name == GATEWAY
        else network.service(topology, name, replica)[1]
    )
    callers = {
        caller: var(secret_name("SERVICE_DIGEST", caller))
        for caller in service_callers(topology).get(name, [])
    }
    environment = {
        "AGORA_PROFILE": "production",
        "AGORA_TOPOLOGY": TOPOLOGY_MOUNT,
        "AGORA_REPLICA": str(replica),
        "AGORA_SERVICE_URLS": json.dumps(_service_urls(topology, network), sort_keys=True),
        "AGORA_NATS_URL": f"nats://{nats_host}:{nats_port}",
        "AGORA_NATS_USER": name,
        "AGORA_NATS_PASSWORD": var(secret_name("NATS_PASSWORD", name)),
        "AGORA_OPERATOR_TOKEN": var("AGORA_OPERATOR_TOKEN"),
        "AGORA_SERVICE_TOKEN": var(secret_name("SERVICE_TOKEN", name)),
        "AGORA_SERVICE_CALLERS": json.dumps(callers),
        f"{prefix}HOST": "127.0.0.1" if network.host else "0.0.0.0",
        f"{prefix}PORT": str(port),
        **topology.environment_of([name]),
    }
    if name == GATEWAY:
        environment |= {
            f"{prefix}REDIS_URL": redis_url,
            f"{prefix}SESSION_SECRET": var(f"{prefix}SESSION_SECRET"),
            # Who stands in front of the gateway (a load balancer): none unless the env file says.
            f"{prefix}TRUSTED_PROXIES": f"${{{prefix}TRUSTED_PROXIES:-}}",
        }
        return environment
    host, db_port = network.infra(topology, "postgres")
    password = var(database_password(name))
    environment[f"{prefix}DATABASE_URL"] = f"postgresql://{name}:{password}@{host}:{db_port}/{name}"
    if not network.host:
        # The services' callers come through the gateway, whose address is fixed; on one host
        # it calls from loopback, which the services trust by default.
        environment[f"{prefix}TRUSTED_PROXIES"] = GATEWAY_ADDRESS
    if name == "cart":
        environment[f"{prefix}REDIS_URL"] = redis_url
    if name == "identity":
        environment |= {
            "AGORA_ADMIN_EMAIL": var("AGORA_ADMIN_EMAIL"),
            "AGORA_ADMIN_PASSWORD": var("AGORA_ADMIN_PASSWORD"),
            f"{prefix}KEY_ENCRYPTION_KEY": var(f"{prefix}KEY_ENCRYPTION_KEY"),
        }
    return environment


def _service_urls(topology: Topology, network: Network) -> dict[str, list[str]]:
    urls: dict[str, list[str]] = {}
    for service in topology:
        addresses = [network.service(topology, service.name, r) for r in range(service.replicas)]
        urls[service.name] = [f"http://{host}:{port}" for host, port in addresses]
    return urls


def nats_config(permissions: Mapping[str, Permissions | None]) -> str:
    """The broker's configuration: JetStream on its volume, and one user per process whose
    password nats-server reads from the environment (an unquoted ``$VARIABLE`` there)."""
    passwords = {user: f"${secret_name('NATS_PASSWORD', user)}" for user in permissions}
    authorization = json.dumps({"users": users_config(passwords, permissions)}, indent=2)
    # Quoted, "$X" would be the password itself; unquoted, nats-server reads $X from the
    # environment. Subjects such as "$JS.API..." keep their quotes: they have dots.
    authorization = _PASSWORD_VAR.sub(r"\1", authorization)
    return (
        GENERATED
        + "# Who may connect, and what each user may do (ADR 25); the passwords come from the\n"
        + "# environment of the nats service (deploy/compose/.env).\n"
        + "jetstream {\n  store_dir: /data\n}\n\n"
        + f"authorization: {authorization}\n"
    )


def postgres_init(topology: Topology) -> str:
    """A script that makes each service's role and database, and keeps them so when run again:
    a role may connect to its own database and to no other."""
    lines = [
        "#!/bin/sh",
        GENERATED.rstrip("\n"),
        "# Run by the postgres-init step at every start: it creates what is missing and sets each",
        "# role's password from the env file, so a new service or a changed password takes effect.",
        "set -eu",
        'psql -v ON_ERROR_STOP=1 -d postgres <<"SQL"',
        "-- Nobody but the superuser connects to the maintenance databases.",
        "REVOKE CONNECT ON DATABASE postgres FROM PUBLIC;",
        "REVOKE CONNECT ON DATABASE template1 FROM PUBLIC;",
        "SQL",
        "# A service's role and its database: role_and_database NAME PASSWORD.",
        "role_and_database() {",
        '  psql -v ON_ERROR_STOP=1 -d postgres -v name="$1" -v password="$2" <<"SQL"',
        DATABASE_SQL.rstrip("\n"),
        "SQL",
        "}",
    ]
    lines += [
        f'role_and_database {service.name} "${database_password(service.name)}"'
        for service in topology
    ]
    return "\n".join(lines) + "\n"


# What psql runs for one service, given its name and its role's password as the variables
# ``name`` and ``password`` (psql quotes them: :'name' as a literal, :"name" as an identifier):
# the role and the database made if missing, the password set, the database closed to others.
DATABASE_SQL = """\
SELECT format('CREATE ROLE %I LOGIN', :'name')
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name')\\gexec
ALTER ROLE :"name" WITH LOGIN PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name')\\gexec
REVOKE CONNECT ON DATABASE :"name" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"name" TO :"name";
"""


def env_sections(
    topology: Topology, permissions: Mapping[str, Permissions | None]
) -> list[tuple[str, list[str]]]:
    """Every variable the Compose files read, in groups, each with how to make its values."""
    processes = [*topology.services, GATEWAY]
    # A digest is needed where its process calls another on nobody's behalf.
    callers = {caller for named in service_callers(topology).values() for caller in named}
    sections: list[tuple[str, list[str]]] = [
        (
            "The Compose project: its containers, network and volumes are named after it.",
            [PROJECT_VARIABLE],
        ),
        (
            "PostgreSQL's superuser, and each service's own role (letters and digits only: "
            "they go into URLs; openssl rand -hex 32).",
            ["POSTGRES_PASSWORD", *(database_password(s) for s in topology.services)],
        ),
        (
            "The broker: one user per service, the gateway's console, the operator (ADR 25).",
            [secret_name("NATS_PASSWORD", user) for user in permissions],
        ),
        ("Redis, which keeps the carts and the gateway's shared rate limits.", ["REDIS_PASSWORD"]),
        (
            "The operator's token: /internal/* of every process and the gateway's /metrics "
            "(ADR 24).",
            ["AGORA_OPERATOR_TOKEN"],
        ),
        (
            "Each process's own credential, and its SHA-256 in hex, which the services it calls "
            'are given (printf %s "$TOKEN" | sha256sum) (ADR 24).',
            [
                *(secret_name("SERVICE_TOKEN", p) for p in processes),
                *(secret_name("SERVICE_DIGEST", p) for p in processes if p in callers),
            ],
        ),
    ]
    if "identity" in topology.services:
        sections.append(
            (
                "Identity: the first admin, and the key that seals its signing keys, at least 32 "
                "random characters: openssl rand -base64 32 (ADR 26).",
                ["AGORA_ADMIN_EMAIL", "AGORA_ADMIN_PASSWORD", "AGORA_IDENTITY_KEY_ENCRYPTION_KEY"],
            )
        )
    sections.append(
        (
            "The gateway: the key of its pages' sessions and CSRF tokens (openssl rand -hex 32), "
            "and the proxies in front of it whose X-Forwarded-For it believes (empty: none).",
            ["AGORA_GATEWAY_SESSION_SECRET", "AGORA_GATEWAY_TRUSTED_PROXIES"],
        )
    )
    return sections


def env_example(topology: Topology, permissions: Mapping[str, Permissions | None]) -> str:
    """The example env file: every variable, empty, with how to make its value."""
    header = [
        GENERATED.rstrip("\n"),
        "# Copy to deploy/compose/.env (never committed) and give every variable a value of its",
        "# own, or let `agora deploy secrets` write one: `docker compose` refuses to start while",
        "# one is missing.",
    ]
    return _env_text(header, env_sections(topology, permissions), {PROJECT_VARIABLE: PROJECT})


def env_file(topology: Topology, permissions: Mapping[str, Permissions | None]) -> str:
    """An env file with a fresh secret for every variable (``agora deploy secrets``)."""
    sections = env_sections(topology, permissions)
    values = new_secrets([name for _, names in sections for name in names])
    header = [
        "# Written by `agora deploy secrets`: this system's own secrets. Never commit it; keep a",
        "# copy where you keep passwords. The admin's email is a placeholder: set your own.",
    ]
    return _env_text(header, sections, values)


def new_secrets(names: list[str]) -> dict[str, str]:
    """A value for each variable: random tokens (hex, fit for URLs), each service credential's
    digest from that credential, the admin's placeholder email, no trusted proxy."""
    values: dict[str, str] = {}
    for name in names:
        if name == PROJECT_VARIABLE:
            values[name] = PROJECT
        elif name == "AGORA_ADMIN_EMAIL":
            values[name] = "admin@agora.local"
        elif name == "AGORA_GATEWAY_TRUSTED_PROXIES":
            values[name] = ""
        elif name.startswith("AGORA_SERVICE_DIGEST_"):
            continue
        else:
            values[name] = secrets.token_hex(32)
    for name in names:
        if name.startswith("AGORA_SERVICE_DIGEST_"):
            token = values[name.replace("_DIGEST_", "_TOKEN_", 1)]
            values[name] = token_digest(token)
    return values


def _env_text(
    header: list[str], sections: list[tuple[str, list[str]]], values: Mapping[str, str]
) -> str:
    lines = list(header)
    for comment, names in sections:
        lines += ["", *(f"# {part}" for part in _wrap(comment))]
        lines += [f"{name}={values.get(name, '')}" for name in names]
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int = 96) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


class _Dumper(yaml.SafeDumper):
    # The same mapping twice is written out twice, never as a YAML alias.
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _yaml(document: Mapping[str, Any]) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=10_000)


# Writing and checking.


def installed_versions(topology: Topology) -> dict[str, str]:
    """Each process's image version: its installed package's, else the chassis's."""
    fallback = metadata.version("agora")
    versions: dict[str, str] = {}
    for name in [*topology.services, GATEWAY]:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = fallback
    return versions


def stale_files(deploy_dir: Path, rendered: Mapping[str, str]) -> list[str]:
    """The files under ``deploy_dir`` that differ from their rendering, or are missing."""
    return [
        path
        for path, text in rendered.items()
        if not (deploy_dir / path).is_file() or (deploy_dir / path).read_text() != text
    ]


def write_files(deploy_dir: Path, rendered: Mapping[str, str]) -> list[str]:
    """Writes the stale files; returns them."""
    stale = stale_files(deploy_dir, rendered)
    for path in stale:
        target = deploy_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(rendered[path])
    return stale
