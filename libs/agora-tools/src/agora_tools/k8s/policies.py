"""Network policies (deny by default, then each edge of the topology) and autoscaling."""

from __future__ import annotations

from typing import Any

from agora.topology import GATEWAY, Topology
from agora_tools import deploy
from agora_tools.k8s.objects import PART_OF, json_patch, meta, selector
from agora_tools.k8s.workloads import processes
from agora_tools.runner import service_callers

DNS_PORT = 53
# Scale out past this share of the CPU a replica requested.
CPU_TARGET = 70


def network_policies(topology: Topology) -> list[dict[str, Any]]:
    """Nothing reaches a pod unless a policy says so; then a service is reached on its port by
    its callers (its dependants and the gateway, ADR 24) and reaches what it depends on, its
    database, the broker and DNS; the gateway is reached by anyone and reaches every service."""
    callers = service_callers(topology)
    policies = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta("default-deny", PART_OF),
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        }
    ]
    for service in topology.start_order():
        ingress = [_from(callers[service.name], deploy.SERVICE_PORT)]
        egress = [_to(list(service.depends_on), deploy.SERVICE_PORT)] if service.depends_on else []
        stores = [deploy.POSTGRES_PORT, deploy.NATS_PORT]
        if service.store == "redis":
            stores.append(deploy.REDIS_PORT)
        policies.append(policy(service.name, ingress, [*egress, *by_port(stores)]))
    everyone = [s.name for s in topology]
    gateway_in = {"ports": [{"protocol": "TCP", "port": topology.gateway.port}]}
    gateway_out = [_to(everyone, deploy.SERVICE_PORT)] if everyone else []
    servers = by_port([deploy.NATS_PORT, deploy.REDIS_PORT])
    policies.append(policy(GATEWAY, [gateway_in], [*gateway_out, *servers]))
    return policies


def policy(
    name: str, ingress: list[dict[str, Any]], egress: list[dict[str, Any]]
) -> dict[str, Any]:
    """What reaches a process's pods and what they reach, DNS always."""
    return network_policy(name, ingress, [*egress, _dns()])


def network_policy(
    name: str, ingress: list[dict[str, Any]], egress: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The NetworkPolicy of a process's pods: what reaches them, and (unless ``egress`` is
    None, which leaves their way out open) what they reach."""
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": selector(name)},
        "policyTypes": ["Ingress"] if egress is None else ["Ingress", "Egress"],
        "ingress": ingress,
    }
    if egress is not None:
        spec["egress"] = egress
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(name),
        "spec": spec,
    }


def peers(names: list[str]) -> list[dict[str, Any]]:
    return [{"podSelector": {"matchLabels": selector(name)}} for name in names]


def _from(names: list[str], port: int) -> dict[str, Any]:
    return {"from": peers(names), "ports": [{"protocol": "TCP", "port": port}]}


def _to(names: list[str], port: int) -> dict[str, Any]:
    return {"to": peers(names), "ports": [{"protocol": "TCP", "port": port}]}


def by_port(ports: list[int]) -> list[dict[str, Any]]:
    """The database, broker and Redis, by port: in the cluster (the components) or outside it,
    wherever the Secrets' URLs point."""
    return [{"ports": [{"protocol": "TCP", "port": port} for port in ports]}]


def _dns() -> dict[str, Any]:
    return {"ports": [{"protocol": p, "port": DNS_PORT} for p in ("UDP", "TCP")]}


# Autoscaling: an HPA where the topology lets a process scale, a PDB where it may run more than
# one replica.


def autoscalers(topology: Topology) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for name in processes(topology):
        low, high = scaling(topology, name)
        if high > low:
            objects.append(_hpa(name, low, high))
        if high > 1:
            objects.append(
                {
                    "apiVersion": "policy/v1",
                    "kind": "PodDisruptionBudget",
                    "metadata": meta(name),
                    "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(name)}},
                }
            )
    return objects


def scaling(topology: Topology, name: str) -> tuple[int, int]:
    return topology.gateway.scaling if name == GATEWAY else topology.services[name].scaling


def _hpa(name: str, low: int, high: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": CPU_TARGET},
                    },
                }
            ],
        },
    }


def autoscaling_patches(topology: Topology) -> list[dict[str, Any]]:
    """Under an HPA a Deployment states no replica count: each apply would reset it."""
    return [
        json_patch("Deployment", name, [{"op": "remove", "path": "/spec/replicas"}])
        for name in processes(topology)
        if scaling(topology, name)[1] > scaling(topology, name)[0]
    ]
