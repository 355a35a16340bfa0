"""The local overlay: the base as ``podman kube play`` (podman 4.3) runs it on one host."""

from __future__ import annotations

from typing import Any

from agora.topology import GATEWAY, Topology
from agora_tools import deploy
from agora_tools.k8s.objects import json_patch, replicas_name, settings_name, to_yaml
from agora_tools.k8s.workloads import SCRATCH_VOLUME, environment, probes, processes

POD = "/spec/template/spec"
CONTAINER = f"{POD}/containers/0"
INIT_CONTAINER = f"{POD}/initContainers/0"


def local_patches(topology: Topology) -> list[dict[str, Any]]:
    """The base on one host: host network, the ``[host]`` ports, one replica each, probes that
    need nothing but the image's Python or Node, and no Service (podman runs none)."""
    patches: list[dict[str, Any]] = []
    host_ports = topology.host_ports()
    for name in processes(topology):
        port = topology.host.gateway if name == GATEWAY else host_ports[name][0]
        operations: list[dict[str, Any]] = [
            {"op": "replace", "path": "/spec/replicas", "value": 1},
            {"op": "add", "path": f"{POD}/hostNetwork", "value": True},
            # Podman 4.3 gives init containers the pod's restart policy: under Always it
            # restarts the finished migrations until it gives up on the pod. OnFailure still
            # restarts a crashed process; a Deployment on an API server must say Always.
            {"op": "add", "path": f"{POD}/restartPolicy", "value": "OnFailure"},
            # Podman 4.3 publishes every containerPort and refuses to on the host's network;
            # there the port is the process's own ([host] below), and no Service reads it.
            {"op": "remove", "path": f"{CONTAINER}/ports"},
        ]
        for probe, check in _command_probes(deploy.runtime_of(topology, name), port).items():
            operations.append({"op": "replace", "path": f"{CONTAINER}/{probe}", "value": check})
        containers = [CONTAINER] if name == GATEWAY else [CONTAINER, INIT_CONTAINER]
        operations += _own_scratch(name, containers)
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


def scratch_volume(process: str) -> str:
    """The name of a process's ``/tmp`` volume under podman, which keeps it after the pod."""
    return f"agora-{process}-{SCRATCH_VOLUME}"


def _own_scratch(process: str, containers: list[str]) -> list[dict[str, Any]]:
    """Podman 4.3 makes an ``emptyDir`` a named volume of the machine, on disk, named as the
    pod names it: every pod's ``tmp`` would be one directory. Each gets a name of its own."""
    renamed = scratch_volume(process)
    paths = [f"{POD}/volumes/1/name", *(f"{c}/volumeMounts/1/name" for c in containers)]
    operations: list[dict[str, Any]] = []
    for path in paths:
        operations.append({"op": "test", "path": path, "value": SCRATCH_VOLUME})
        operations.append({"op": "replace", "path": path, "value": renamed})
    return operations


def _command_probes(runtime: str, port: int) -> dict[str, Any]:
    """The probes of :func:`probes` as commands: podman runs a probe inside the container,
    which has Python (or Node) and no curl. Podman 4.3 runs an exec probe as one shell line, its
    words joined by spaces (``sh -c``), so the command is that line, a single word: an API
    server would run a program of that name, and fail the probe rather than pass it unchecked."""

    def run(path: str) -> dict[str, Any]:
        program, flag, code = deploy.fetch_command(runtime, f"http://127.0.0.1:{port}{path}")
        return {"exec": {"command": [f'{program} {flag} "{code}"']}}

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
