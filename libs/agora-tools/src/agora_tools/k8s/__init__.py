"""``deploy/k8s/``: the Kubernetes manifests, rendered from the topology (ADR 33).

A Kustomize tree, every file of it rendered by ``agora deploy render`` beside the Compose files
(ADR 29), from the same topology and the same settings (``deploy._environment``):

* ``base/``: per process (each service and the gateway) a ConfigMap of its settings, a
  Deployment (its migrations in an init container), a Service, and for each service a headless
  Service naming every replica; the topology itself as a ConfigMap. No Secret: the processes read
  their secrets from Secrets the operator makes (``docs/kubernetes.md`` lists them);
* ``components/``, each optional: the network policies, autoscaling (HPA and PDB), NATS with
  JetStream, PostgreSQL, Redis, an OpenTelemetry export, an Ingress for the gateway, and
  Prometheus's scrape and rules (``monitoring``, for the Prometheus Operator; or
  ``monitoring/annotations``, for a Prometheus without it: ADR 47);
* ``overlays/production`` (the base with the policies and autoscaling, its databases and broker
  wherever its Secrets say) and ``overlays/local`` (one host, host network, the ports of the
  topology's ``[host]`` table, one replica each: only what ``podman kube play`` runs).

The functions here are pure: a topology in, file texts out, the same texts for the same input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agora.messaging.permissions import Permissions
from agora.topology import Topology
from agora_tools.k8s import components, local, monitoring, policies, workloads
from agora_tools.k8s.objects import GENERATED, documents, to_yaml

K8S_DIR = "k8s"
# Each optional: an overlay of a user's picks them.
COMPONENTS = (
    "network-policies",
    "autoscaling",
    "nats",
    "postgres",
    "redis",
    "opentelemetry",
    "ingress",
    # After the network policies, which each of these opens to Prometheus.
    monitoring.MONITORING,
    monitoring.ANNOTATIONS,
)


def render(
    topology: Topology,
    permissions: Mapping[str, Permissions | None],
    versions: Mapping[str, str],
) -> dict[str, str]:
    """Every file of ``deploy/k8s/``, by its path under ``deploy/``."""
    files = {
        "base/kustomization.yaml": _kustomization(
            resources=["topology.yaml", *(f"{name}.yaml" for name in workloads.processes(topology))]
        ),
        "base/topology.yaml": documents([workloads.topology_configmap(topology)]),
        **{
            f"base/{name}.yaml": documents(workloads.process_objects(topology, name, versions))
            for name in workloads.processes(topology)
        },
        **_component("network-policies", policies.network_policies(topology)),
        **_component(
            "autoscaling", policies.autoscalers(topology), policies.autoscaling_patches(topology)
        ),
        **_component("nats", components.nats_objects(permissions)),
        **_component("postgres", components.postgres_objects(topology)),
        **_component("redis", components.redis_objects(topology)),
        **_component("opentelemetry", components.otel_objects(), components.otel_patches()),
        **_component("ingress", [components.ingress(topology)]),
        **_component(
            monitoring.MONITORING,
            monitoring.monitoring_objects(topology),
            monitoring.scrape_policy_patches(topology),
        ),
        **_patches_component(
            monitoring.ANNOTATIONS,
            [
                *monitoring.annotation_patches(topology),
                *monitoring.scrape_policy_patches(topology),
            ],
        ),
        "overlays/production/kustomization.yaml": _kustomization(
            resources=["../../base"],
            components=["../../components/network-policies", "../../components/autoscaling"],
        ),
        "overlays/local/kustomization.yaml": _kustomization(
            resources=["../../base"], patches=local.local_patches(topology)
        ),
    }
    return {f"{K8S_DIR}/{path}": text for path, text in files.items()}


def _component(
    name: str, objects: list[dict[str, Any]], patches: list[dict[str, Any]] | None = None
) -> dict[str, str]:
    document: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
        "resources": [f"{name}.yaml"],
    }
    if patches:
        document["patches"] = patches
    return {
        f"components/{name}/kustomization.yaml": GENERATED + to_yaml(document),
        f"components/{name}/{name}.yaml": documents(objects),
    }


def _patches_component(name: str, patches: list[dict[str, Any]]) -> dict[str, str]:
    """A component that only patches what the base and the components before it made."""
    document: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
        "patches": patches,
    }
    return {f"components/{name}/kustomization.yaml": GENERATED + to_yaml(document)}


def _kustomization(
    resources: list[str],
    components: list[str] | None = None,
    patches: list[dict[str, Any]] | None = None,
) -> str:
    document: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
    }
    if components:
        document["components"] = components
    if patches:
        document["patches"] = patches
    return GENERATED + to_yaml(document)
