"""What every manifest is made of: labels, names, references, hardened containers, YAML."""

from __future__ import annotations

from typing import Any

import yaml

from agora.topology import Resources

PART_OF = "agora"
GENERATED = (
    "# Rendered by `agora deploy render` from topology.toml: do not edit, render again (ADR 33).\n"
)


def labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}


def selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name}


def meta(name: str, owner: str | None = None) -> dict[str, Any]:
    return {"name": name, "labels": labels(owner or name)}


def secret_name(process: str) -> str:
    """``agora-catalog``: the Secret of one process, made by the operator."""
    return f"agora-{process}"


def settings_name(process: str) -> str:
    return f"{process}-settings"


def replicas_name(service: str) -> str:
    """The headless Service whose DNS name lists every replica of ``service``."""
    return f"{service}-replicas"


def secret_ref(secret: str, key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": secret, "key": key}}


def part_of() -> dict[str, str]:
    return {"app.kubernetes.io/part-of": PART_OF}


def service(name: str, owner: str, port: int, *, headless: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": selector(owner),
        "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
    }
    if headless:
        spec = {"clusterIP": "None", "publishNotReadyAddresses": True, **spec}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(name, owner), "spec": spec}


def hardened() -> dict[str, Any]:
    """A container's security context: no root, no privilege, nothing written but volumes."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def requirements(resources: Resources) -> dict[str, Any]:
    """A container's requests and limits, as the topology gives them."""
    return {
        "requests": {"cpu": resources.cpu, "memory": resources.memory},
        "limits": {"cpu": resources.cpu_limit, "memory": resources.memory_limit},
    }


def pod_security(user: int) -> dict[str, Any]:
    """A pod's security context: its image's own user, never root, the runtime's seccomp."""
    return {
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def documents(objects: list[dict[str, Any]]) -> str:
    return GENERATED + "---\n".join(to_yaml(o) for o in objects)


class _Dumper(yaml.SafeDumper):
    """No aliases (the same mapping twice is written twice), and each text of several lines (a
    script, the topology, a patch) as a literal block, so that the files read as what they
    hold."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _literal(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _literal)


def to_yaml(document: Any) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=10_000)


def json_patch(kind: str, name: str, operations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"target": {"kind": kind, "name": name}, "patch": to_yaml(operations)}
