"""The optional components' servers (NATS, PostgreSQL, Redis), the OpenTelemetry export and the
Ingress."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from agora.messaging.permissions import Permissions
from agora.topology import GATEWAY, Resources, Topology
from agora_tools import deploy
from agora_tools.k8s.objects import (
    PART_OF,
    hardened,
    labels,
    meta,
    part_of,
    pod_security,
    requirements,
    secret_name,
    secret_ref,
    selector,
    service,
    to_yaml,
)
from agora_tools.k8s.policies import by_port, network_policy, peers, policy
from agora_tools.k8s.workloads import OPERATOR_SECRET
from agora_tools.runner import OPERATOR

POSTGRES_SECRET = "agora-postgres"  # noqa: S105 (a Secret's name)
REDIS_SECRET = "agora-redis"  # noqa: S105 (a Secret's name)
OTLP_PORT = 4318
OTLP_ENDPOINT = f"http://otel-collector:{OTLP_PORT}"


def _server_pod(
    user: int, containers: list[dict[str, Any]], volumes: list[dict[str, Any]]
) -> dict[str, Any]:
    """A server's pod: as hardened as a process's, its volumes its image user's."""
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {**pod_security(user), "fsGroup": user},
        "containers": containers,
        "volumes": volumes,
    }


def _stateful_set(
    name: str, port: int, pod: dict[str, Any], storage: str = "1Gi"
) -> list[dict[str, Any]]:
    """A one-replica StatefulSet with its volume, and the Service the processes reach it at."""
    headless = service(f"{name}-headless", name, port, headless=True)
    headless["spec"].pop("publishNotReadyAddresses")
    return [
        headless,
        service(name, name, port, headless=False),
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": meta(name),
            "spec": {
                "serviceName": f"{name}-headless",
                "replicas": 1,
                "selector": {"matchLabels": selector(name)},
                "template": {"metadata": {"labels": labels(name)}, "spec": pod},
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data", "labels": labels(name)},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": storage}},
                        },
                    }
                ],
            },
        },
    ]


def _server_container(
    name: str, image: str, port: int, resources: Resources, **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        **extra,
        "resources": requirements(resources),
        "securityContext": hardened(),
    }


def _ingress_from_agora(name: str, port: int, only: list[str] | None = None) -> dict[str, Any]:
    """Who may reach a server: the processes that use it (every Agora pod unless ``only``)."""
    sources = peers(only) if only else [{"podSelector": {"matchLabels": part_of()}}]
    return network_policy(name, [{"from": sources, "ports": [{"protocol": "TCP", "port": port}]}])


def _tcp_probe(port: int) -> dict[str, Any]:
    return {"tcpSocket": {"port": port}, "periodSeconds": 5, "failureThreshold": 6}


def nats_objects(permissions: Mapping[str, Permissions | None]) -> list[dict[str, Any]]:
    """NATS with JetStream on a volume, its users those of ``deploy/compose/nats.conf``, each
    password from that user's Secret."""
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta("nats-config", "nats"),
        "data": {"nats.conf": deploy.nats_config(permissions)},
    }
    passwords = [
        {
            "name": deploy.secret_name("NATS_PASSWORD", user),
            "valueFrom": secret_ref(
                OPERATOR_SECRET if user == OPERATOR else secret_name(user), "nats-password"
            ),
        }
        for user in permissions
    ]
    monitor = deploy.NATS_MONITOR_PORT
    health = {"path": "/healthz?js-enabled-only=true", "port": monitor}
    container = _server_container(
        "nats",
        deploy.NATS_IMAGE,
        deploy.NATS_PORT,
        Resources(cpu="100m", memory="128Mi", cpu_limit="1", memory_limit="512Mi"),
        args=["-c", "/etc/nats/nats.conf", "-p", str(deploy.NATS_PORT), "-m", str(monitor)],
        env=passwords,
        readinessProbe={"httpGet": health, "periodSeconds": 5},
        livenessProbe={"httpGet": {"path": "/healthz", "port": monitor}, "periodSeconds": 10},
        volumeMounts=[
            {"name": "config", "mountPath": "/etc/nats", "readOnly": True},
            {"name": "data", "mountPath": "/data"},
        ],
    )
    pod = _server_pod(1000, [container], [{"name": "config", "configMap": {"name": "nats-config"}}])
    return [
        config,
        *_stateful_set("nats", deploy.NATS_PORT, pod),
        _ingress_from_agora("nats", deploy.NATS_PORT),
    ]


def postgres_objects(topology: Topology) -> list[dict[str, Any]]:
    """PostgreSQL on a volume, and a Job running ``postgres-init.sh`` (a role and a database per
    service, each reachable by its own role only). The Job's name carries the script's digest,
    so a changed topology runs it again."""
    script = deploy.postgres_init(topology)
    digest = hashlib.sha256(script.encode()).hexdigest()[:10]
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta("postgres-init", "postgres"),
        "data": {"postgres-init.sh": script},
    }
    superuser = {"name": "POSTGRES_PASSWORD", "valueFrom": secret_ref(POSTGRES_SECRET, "password")}
    port = deploy.POSTGRES_PORT
    small = Resources(cpu="250m", memory="256Mi", cpu_limit="2", memory_limit="1Gi")
    scratch = [
        {"name": "run", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts = [
        {"name": "data", "mountPath": "/var/lib/postgresql/data"},
        {"name": "run", "mountPath": "/var/run/postgresql"},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 (the pod's own)
    ]
    ready = ["pg_isready", "-h", "127.0.0.1", "-p", str(port)]
    container = _server_container(
        "postgres",
        deploy.POSTGRES_IMAGE,
        port,
        small,
        env=[superuser, {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"}],
        readinessProbe={"exec": {"command": ready}, "periodSeconds": 5},
        livenessProbe=_tcp_probe(port),
        volumeMounts=mounts,
    )
    init_env = [
        {"name": "PGHOST", "value": "postgres"},
        {"name": "PGPORT", "value": str(port)},
        {"name": "PGUSER", "value": "postgres"},
        {"name": "PGPASSWORD", "valueFrom": secret_ref(POSTGRES_SECRET, "password")},
        *(
            {
                "name": deploy.database_password(s.name),
                "valueFrom": secret_ref(secret_name(s.name), "database-password"),
            }
            for s in topology
        ),
    ]
    init = _server_container(
        "postgres-init",
        deploy.POSTGRES_IMAGE,
        port,
        Resources(cpu="50m", memory="64Mi", cpu_limit="500m", memory_limit="256Mi"),
        command=["sh", "/agora/postgres-init.sh"],
        env=init_env,
        volumeMounts=[{"name": "script", "mountPath": "/agora", "readOnly": True}],
    )
    init.pop("ports")
    job_pod = _server_pod(70, [init], [{"name": "script", "configMap": {"name": "postgres-init"}}])
    job_pod["restartPolicy"] = "OnFailure"
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta(f"postgres-init-{digest}", "postgres-init"),
        "spec": {
            "backoffLimit": 20,
            "ttlSecondsAfterFinished": 3600,
            "template": {"metadata": {"labels": labels("postgres-init")}, "spec": job_pod},
        },
    }
    job_egress = policy("postgres-init", [], by_port([port]))
    job_egress["spec"]["policyTypes"] = ["Egress"]
    job_egress["spec"].pop("ingress")
    pod = _server_pod(70, [container], scratch)
    return [
        config,
        *_stateful_set("postgres", port, pod, storage="10Gi"),
        job,
        _ingress_from_agora("postgres", port),
        job_egress,
    ]


def redis_objects(topology: Topology) -> list[dict[str, Any]]:
    """Redis with a password and append-only persistence, for the cart and the gateway."""
    port = deploy.REDIS_PORT
    users = [s.name for s in topology if s.store == "redis"]
    container = _server_container(
        "redis",
        deploy.REDIS_IMAGE,
        port,
        Resources(cpu="100m", memory="128Mi", cpu_limit="1", memory_limit="512Mi"),
        # Kubernetes puts the variable's value in place of $(REDIS_PASSWORD).
        args=[
            *("redis-server", "--port", str(port), "--appendonly", "yes"),
            *("--requirepass", "$(REDIS_PASSWORD)"),
        ],
        env=[{"name": "REDIS_PASSWORD", "valueFrom": secret_ref(REDIS_SECRET, "password")}],
        readinessProbe=_tcp_probe(port),
        livenessProbe=_tcp_probe(port),
        volumeMounts=[{"name": "data", "mountPath": "/data"}],
    )
    pod = _server_pod(999, [container], [])
    return [
        *_stateful_set("redis", port, pod),
        _ingress_from_agora("redis", port, only=[*users, GATEWAY]),
    ]


# OpenTelemetry and the Ingress.


def otel_objects() -> list[dict[str, Any]]:
    """Where every process sends its spans over OTLP/HTTP (ADR 19): a collector named
    ``otel-collector`` in the namespace unless the ConfigMap is patched."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta("agora-opentelemetry", PART_OF),
            "data": {"OTEL_EXPORTER_OTLP_ENDPOINT": OTLP_ENDPOINT},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta("opentelemetry-export", PART_OF),
            "spec": {
                "podSelector": {"matchLabels": part_of()},
                "policyTypes": ["Egress"],
                "egress": [{"ports": [{"protocol": "TCP", "port": OTLP_PORT}]}],
            },
        },
    ]


def otel_patches() -> list[dict[str, Any]]:
    add = {
        "op": "add",
        "path": "/spec/template/spec/containers/0/envFrom/-",
        "value": {"configMapRef": {"name": "agora-opentelemetry"}},
    }
    return [
        {
            "target": {"kind": "Deployment", "labelSelector": "app.kubernetes.io/part-of=agora"},
            "patch": to_yaml([add]),
        }
    ]


def ingress(topology: Topology) -> dict[str, Any]:
    """The gateway, the one public door, behind the cluster's default ingress controller."""
    backend = {"service": {"name": GATEWAY, "port": {"name": "http"}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta(GATEWAY),
        "spec": {
            "rules": [
                {"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}
            ]
        },
    }
