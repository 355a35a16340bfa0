"""The local overlay: the base as ``podman kube play`` runs it on one host."""

from __future__ import annotations

from typing import Any

from agora.settings import GATEWAY
from agora.topology import Topology
from agora_tools.k8s.objects import json_patch, replicas_name, settings_name, to_yaml
from agora_tools.k8s.workloads import environment, probes, processes


def local_patches(topology: Topology) -> list[dict[str, Any]]:
    """The base on one host: host network, the ``[host]`` ports, one replica each, probes that
    need nothing but the image's Python, and no Service (podman runs none)."""
    patches: list[dict[str, Any]] = []
    host_ports = topology.host_ports()
    for name in processes(topology):
        port = topology.host.gateway if name == GATEWAY else host_ports[name][0]
        container = "/spec/template/spec/containers/0"
        operations: list[dict[str, Any]] = [
            {"op": "replace", "path": "/spec/replicas", "value": 1},
            {"op": "add", "path": "/spec/template/spec/hostNetwork", "value": True},
            {"op": "replace", "path": f"{container}/ports/0/containerPort", "value": port},
        ]
        for probe, check in _python_probes(port).items():
            operations.append({"op": "replace", "path": f"{container}/{probe}", "value": check})
        patches.append(json_patch("Deployment", name, operations))
        settings = environment(topology, name, one_host=True).settings
        patches.append(
            {
                "patch": to_yaml(
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": settings_name(name)},
                        "data": settings,
                    }
                )
            }
        )
        services = [name] if name == GATEWAY else [name, replicas_name(name)]
        patches.extend(_delete("Service", service) for service in services)
    return patches


def _python_probes(port: int) -> dict[str, Any]:
    """The probes of :func:`probes` as commands: podman runs a probe inside the container,
    which has Python and no curl."""

    def run(path: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{port}{path}"
        code = f"import urllib.request; urllib.request.urlopen('{url}', timeout=2)"
        return {"exec": {"command": ["python", "-c", code]}}

    over_http = probes(port)
    return {
        probe: {
            **{k: v for k, v in check.items() if k != "httpGet"},
            **run(check["httpGet"]["path"]),
        }
        for probe, check in over_http.items()
    }


def _delete(kind: str, name: str) -> dict[str, Any]:
    return {
        "patch": to_yaml(
            {"$patch": "delete", "apiVersion": "v1", "kind": kind, "metadata": {"name": name}}
        )
    }
