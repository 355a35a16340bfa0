"""Prometheus in the cluster (ADR 47): two optional components, one for each kind of install.

* ``components/monitoring``, for the Prometheus Operator: a PodMonitor scraping ``/metrics`` on
  the port named ``http`` of every process's pods, with the operator's token (the gateway serves
  its metrics to it only) and each target labelled with its ``service``, as ``agora up
  --prometheus`` labels it; and a PrometheusRule whose groups are those of
  ``deploy/prometheus/rules.yml`` (:func:`agora_tools.prometheus.rule_file`).
* ``components/monitoring/annotations``, for a Prometheus without the operator, which cannot
  apply those two kinds: the ``prometheus.io/scrape``, ``port`` and ``path`` annotations on every
  service's pods. Not on the gateway's: an annotation cannot carry the token its ``/metrics``
  asks for.

Each lets Prometheus's pods (``app.kubernetes.io/name: prometheus``, in any namespace) reach the
processes' port in the network policies, when the ``network-policies`` component comes before it
in the overlay: a component patches what the components before it made.
"""

from __future__ import annotations

from typing import Any

from agora.topology import GATEWAY, Topology
from agora_tools import deploy, prometheus
from agora_tools.k8s.objects import PART_OF, meta, part_of, to_yaml
from agora_tools.k8s.workloads import OPERATOR_SECRET, processes

MONITORING: str = "monitoring"
ANNOTATIONS: str = f"{MONITORING}/annotations"
METRICS_PATH = "/metrics"
PORT_NAME = "http"
# The name both the operator's Prometheus pods and the prometheus chart's server pods carry.
PROMETHEUS_POD = {"app.kubernetes.io/name": "prometheus"}
# The job of every target, as ``agora up --prometheus`` names it (agora_tools.scrape.JOB).
JOB = "agora"


def monitoring_objects(topology: Topology) -> list[dict[str, Any]]:
    """The PodMonitor and the PrometheusRule."""
    return [pod_monitor(topology), prometheus_rule(topology)]


def pod_monitor(topology: Topology) -> dict[str, Any]:
    """Every replica of every process, scraped as ``agora up --prometheus`` scrapes it."""
    named = {
        "key": "app.kubernetes.io/name",
        "operator": "In",
        "values": processes(topology),
    }
    endpoint = {
        "port": PORT_NAME,
        "path": METRICS_PATH,
        "authorization": {
            "type": "Bearer",
            "credentials": {"name": OPERATOR_SECRET, "key": "token"},
        },
        "relabelings": [
            {
                "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
                "targetLabel": "service",
            },
            {"targetLabel": "job", "replacement": JOB},
        ],
    }
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": meta(PART_OF),
        "spec": {
            # The processes' pods, not the servers' of the nats, postgres and redis components.
            "selector": {"matchLabels": part_of(), "matchExpressions": [named]},
            "podMetricsEndpoints": [endpoint],
        },
    }


def prometheus_rule(topology: Topology) -> dict[str, Any]:
    """The groups of ``deploy/prometheus/rules.yml``, as the operator loads them."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": meta(PART_OF),
        "spec": {"groups": prometheus.rule_file(topology)["groups"]},
    }


def scrape_policy_patches(topology: Topology) -> list[dict[str, Any]]:
    """Prometheus may reach each process's port: a rule added to the process's own network
    policy (the ``network-policies`` component's), so that without that component nothing is
    isolated."""
    rule = {
        "from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": PROMETHEUS_POD}}],
        "ports": [{"protocol": "TCP", "port": PORT_NAME}],
    }
    add = {"op": "add", "path": "/spec/ingress/-", "value": rule}
    return [
        {
            "target": {"kind": "NetworkPolicy", "name": _one_of(processes(topology))},
            "patch": to_yaml([add]),
        }
    ]


def annotation_patches(topology: Topology) -> list[dict[str, Any]]:
    """``prometheus.io/*`` on the pods of every service (the gateway's metrics need a token)."""
    services = [name for name in processes(topology) if name != GATEWAY]
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(deploy.SERVICE_PORT),
        "prometheus.io/path": METRICS_PATH,
    }
    patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "any"},  # the target's names replace it
        "spec": {"template": {"metadata": {"annotations": annotations}}},
    }
    if not services:
        return []
    return [{"target": {"kind": "Deployment", "name": _one_of(services)}, "patch": to_yaml(patch)}]


def _one_of(names: list[str]) -> str:
    """A kustomize target's name: exactly one of ``names``."""
    return "^(" + "|".join(names) + ")$"
