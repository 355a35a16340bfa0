"""The base: per process its settings, Deployment and Services; the topology as a ConfigMap.

Each process is told what ``agora up`` and Compose tell it (``deploy._environment``), its
secrets turned into references to keys of Secrets the operator makes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agora.topology import GATEWAY, Resources, Topology, env_prefix
from agora_tools import deploy
from agora_tools.k8s.objects import (
    GENERATED,
    PART_OF,
    hardened,
    labels,
    meta,
    pod_security,
    replicas_name,
    requirements,
    secret_name,
    secret_ref,
    selector,
    service,
    settings_name,
)

TOPOLOGY_CONFIGMAP = "agora-topology"
TOPOLOGY_KEY = "topology.toml"
# Each pod's scratch space, mounted at /tmp (the root filesystem is read-only).
SCRATCH_VOLUME = "tmp"
# The image's own user (deploy/Dockerfile).
IMAGE_USER = 10001
# Longer than a process's own bound on its stop (AGORA_STOP_TIMEOUT, 20 s; ADR 30).
GRACE_SECONDS = 25
# How long a stopping replica keeps serving once unready: Kubernetes takes a few seconds to
# drop it from the Service's endpoints, and callers keep sending to it until then.
CLUSTER_STOP_DRAIN = "5"
# Who a service believes about the client's address (X-Forwarded-For): the private ranges, in
# which the pod network lies. The network policies let only the gateway and the service's
# callers reach it, so in effect it believes them.
CLUSTER_TRUSTED_PROXIES = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"
ONE_HOST_TRUSTED_PROXIES = "127.0.0.1,::1"
# The Secrets every process reads besides its own ``agora-<name>``.
OPERATOR_SECRET = "agora-operator"  # noqa: S105 (a Secret's name)
BROKER_SECRET = "agora-broker"  # noqa: S105 (a Secret's name)

_COMPOSE_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(:[?-][^}]*)?\}")


def processes(topology: Topology) -> list[str]:
    """Every service in start order, then the gateway."""
    return [*(s.name for s in topology.start_order()), GATEWAY]


def cluster_service_urls(topology: Topology) -> dict[str, list[str]]:
    """One address per service, its Service's: Kubernetes spreads the connections over the
    ready replicas."""
    return {s.name: [f"http://{s.name}:{deploy.SERVICE_PORT}"] for s in topology}


def one_host_service_urls(topology: Topology) -> dict[str, list[str]]:
    """The first replica of each service, at its ``[host]`` port: one replica each."""
    ports = topology.host_ports()
    return {s.name: [f"http://127.0.0.1:{ports[s.name][0]}"] for s in topology}


@dataclass(frozen=True)
class Environment:
    """What a process is told: settings by value (its ConfigMap), secrets by reference."""

    settings: dict[str, str]
    # Each secret variable's Secret and key.
    secrets: dict[str, tuple[str, str]]


def environment(topology: Topology, name: str, *, one_host: bool) -> Environment:
    """A process's settings and secrets.

    They are what Compose gives it (``deploy._environment``), with every value that reads the
    env file turned into a reference to a key of a Secret: the process's own ``agora-<name>``
    (key ``database-url`` for ``AGORA_CATALOG_DATABASE_URL``), the operator's, the broker's.
    """
    network = deploy.ONE_HOST if one_host else deploy.PRODUCTION
    given = deploy._environment(topology, name, 0, network)
    settings: dict[str, str] = {}
    secrets: dict[str, tuple[str, str]] = {}
    for variable, value in given.items():
        optional = _COMPOSE_VARIABLE.fullmatch(value)
        if optional and (optional[2] or "").startswith(":-"):
            settings[variable] = optional[2][2:]
        elif _COMPOSE_VARIABLE.search(value):
            secrets[variable] = _secret_of(name, variable)
        else:
            settings[variable] = value
    # Each replica of a Deployment is alike: none is told a number of its own.
    settings.pop("AGORA_REPLICA")
    settings["AGORA_SERVICE_URLS"] = json.dumps(
        one_host_service_urls(topology) if one_host else cluster_service_urls(topology),
        sort_keys=True,
    )
    # The broker is wherever its Secret says: the nats component's, or one of the operator's.
    settings.pop("AGORA_NATS_URL")
    secrets["AGORA_NATS_URL"] = (BROKER_SECRET, "url")
    if name != GATEWAY:
        trusted = ONE_HOST_TRUSTED_PROXIES if one_host else CLUSTER_TRUSTED_PROXIES
        settings[f"{env_prefix(name)}TRUSTED_PROXIES"] = trusted
    settings["AGORA_STOP_DRAIN"] = CLUSTER_STOP_DRAIN
    return Environment(dict(sorted(settings.items())), secrets)


def _secret_of(process: str, variable: str) -> tuple[str, str]:
    """The Secret and key a secret variable is read from: ``AGORA_NATS_PASSWORD`` of catalog is
    ``agora-catalog``'s ``nats-password``; the operator's token is shared by every process."""
    if variable == "AGORA_OPERATOR_TOKEN":
        return OPERATOR_SECRET, "token"
    own = env_prefix(process)
    stem = variable.removeprefix(own) if variable.startswith(own) else variable
    return secret_name(process), stem.removeprefix("AGORA_").lower().replace("_", "-")


def secret_keys(topology: Topology) -> dict[str, list[str]]:
    """Every Secret the manifests read and its keys (for the docs and the tests)."""
    keys: dict[str, set[str]] = {}
    for name in processes(topology):
        for secret, key in environment(topology, name, one_host=False).secrets.values():
            keys.setdefault(secret, set()).add(key)
    return {secret: sorted(found) for secret, found in sorted(keys.items())}


def topology_configmap(topology: Topology) -> dict[str, Any]:
    """The topology the manifests were rendered from, mounted where every process reads it."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(TOPOLOGY_CONFIGMAP, PART_OF),
        "data": {TOPOLOGY_KEY: topology_toml(topology)},
    }


def process_objects(
    topology: Topology, name: str, versions: Mapping[str, str]
) -> list[dict[str, Any]]:
    """A process's ConfigMap, Deployment and Service, and a service's headless Service."""
    config = environment(topology, name, one_host=False)
    port = topology.gateway.port if name == GATEWAY else deploy.SERVICE_PORT
    objects = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(settings_name(name), name),
            "data": config.settings,
        },
        deployment(topology, name, versions[name], config.secrets, port),
        service(name, name, port, headless=False),
    ]
    if name != GATEWAY:
        # The console reads every replica (ADR 19): this name resolves to each one's address.
        objects.append(service(replicas_name(name), name, port, headless=True))
    return objects


def _replicas(topology: Topology, name: str) -> int:
    if name == GATEWAY:
        return topology.gateway.scaling[0]
    return topology.services[name].replicas


def _resources(topology: Topology, name: str) -> Resources:
    if name == GATEWAY:
        return topology.gateway.resources
    return topology.services[name].resources


def deployment(
    topology: Topology,
    name: str,
    version: str,
    secrets: Mapping[str, tuple[str, str]],
    port: int,
) -> dict[str, Any]:
    """A process's Deployment: hardened pods, probes, its migrations first (services)."""
    resources = _resources(topology, name)
    serve, migrate = (deploy.process_args(topology, name, a) for a in ("serve", "migrate"))
    container = _container(name, version, serve, secrets, resources)
    container["ports"] = [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    container |= probes("http")
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(IMAGE_USER),
        "terminationGracePeriodSeconds": GRACE_SECONDS,
    }
    if name != GATEWAY:
        # Before a replica takes traffic; the chassis's migration lock makes racing ones wait.
        pod["initContainers"] = [
            {
                **_container(name, version, migrate, secrets, resources),
                "name": "migrate",
            }
        ]
    pod["containers"] = [container]
    pod["volumes"] = [
        {"name": "topology", "configMap": {"name": TOPOLOGY_CONFIGMAP}},
        {"name": SCRATCH_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(name),
        "spec": {
            "replicas": _replicas(topology, name),
            "selector": {"matchLabels": selector(name)},
            # A new replica is ready before an old one stops.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {"metadata": {"labels": labels(name)}, "spec": pod},
        },
    }


def _container(
    name: str,
    version: str,
    args: list[str],
    secrets: Mapping[str, tuple[str, str]],
    resources: Resources,
) -> dict[str, Any]:
    return {
        "name": name,
        "image": f"{PART_OF}/{name}:{version}",
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "envFrom": [{"configMapRef": {"name": settings_name(name)}}],
        "env": [
            {"name": variable, "valueFrom": secret_ref(secret, key)}
            for variable, (secret, key) in sorted(secrets.items())
        ],
        "resources": requirements(resources),
        "securityContext": hardened(),
        "volumeMounts": [
            {"name": "topology", "mountPath": "/etc/agora", "readOnly": True},
            {"name": SCRATCH_VOLUME, "mountPath": "/tmp"},  # noqa: S108 (the pod's own, in memory)
        ],
    }


def probes(port: int | str) -> dict[str, Any]:
    """Ready on /readyz (503 from the first moment of a stop, ADR 30); alive on /livez; given
    two minutes to start, migrations done, before liveness counts."""

    def get(path: str) -> dict[str, Any]:
        return {"path": path, "port": port}

    return {
        "startupProbe": {
            "httpGet": get("/livez"),
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 60,
        },
        "readinessProbe": {
            "httpGet": get("/readyz"),
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": get("/livez"),
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
    }


def topology_toml(topology: Topology) -> str:
    """The topology as TOML: what it says, defaults left out, so it reads back the same."""
    document = topology.model_dump(mode="json", exclude_defaults=True)
    lines = [GENERATED.rstrip("\n")]
    for table in ("gateway", "host"):
        if document.get(table):
            lines += ["", f"[{table}]", *_toml_items(document[table])]
    for name, table in document.get("services", {}).items():
        table.pop("name", None)
        lines += ["", f"[services.{name}]", *_toml_items(table)]
    return "\n".join(lines) + "\n"


def _toml_items(table: Mapping[str, Any]) -> list[str]:
    # What a process is (its module, store, routes) before how far it scales.
    last = set(Resources.model_fields) | {"min_replicas", "max_replicas", "resources"}
    ordered = sorted(table.items(), key=lambda item: item[0] in last)
    return [f"{key} = {_toml_value(value)}" for key, value in ordered]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string.
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")
