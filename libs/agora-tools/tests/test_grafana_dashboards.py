"""The Grafana dashboard rendered from the topology (ADR 34).

Every panel's query is PromQL that promtool parses, and names only series that exist: a metric
the chassis or a service defines with ``prometheus_client`` (read from their code here), one the
process collector the chassis serves exports, a series ``deploy/prometheus/rules.yml`` records,
or ``up``. The consumers the checkout funnel reads are subscriptions the services really make.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import yaml
from prometheus_client import PROCESS_COLLECTOR

from agora.topology import Topology, load_topology
from agora_tools.deploy import DEPLOY_DIR, stale_files
from agora_tools.grafana import GRAFANA_DIR, OVERVIEW_FILE, SCHEMA_VERSION, render
from agora_tools.prometheus import PROMETHEUS_DIR, RULES_FILE
from agora_tools.testing import run_promtool, topology

REPO = Path(__file__).resolve().parents[3]
# Prometheus writes it for each target it scrapes; no process defines it.
SCRAPED = {"up"}
DEFINITION = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"([a-zA-Z_:][\w:]*)\"")
SUFFIXES = {
    "Counter": ("", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_count", "_sum", "_created"),
    "Summary": ("", "_count", "_sum", "_created"),
}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def dashboard(t: Topology) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(render(t)[f"{GRAFANA_DIR}/{OVERVIEW_FILE}"])
    return document


def committed() -> dict[str, Any]:
    return dashboard(load_topology(REPO / "topology.toml"))


def panels(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel but the rows, those folded inside a collapsed row included."""
    found: list[dict[str, Any]] = []
    for panel in document["panels"]:
        found += panel.get("panels", []) if panel["type"] == "row" else [panel]
    return found


def queries(document: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in panels(document) for target in panel["targets"]]


def exported_metrics() -> set[str]:
    """The series the processes export, from their ``prometheus_client`` definitions."""
    sources = [*(REPO / "libs" / "agora" / "src").rglob("*.py")]
    sources += [*(REPO / "services").glob("*/src/**/*.py")]
    names: set[str] = set()
    for source in sources:
        for kind, name in DEFINITION.findall(source.read_text()):
            names |= {name + suffix for suffix in SUFFIXES[kind]}
    # The chassis serves prometheus_client's default registry, which holds this collector.
    names |= {sample.name for family in PROCESS_COLLECTOR.collect() for sample in family.samples}
    return names


def recorded_series() -> set[str]:
    rules = yaml.safe_load((REPO / DEPLOY_DIR / PROMETHEUS_DIR / RULES_FILE).read_text())
    return {
        rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule
    }


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left once strings, matchers, ranges,
    grouping labels, function calls, numbers and keywords are taken away."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = re.findall(r"(?<![\w:.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", text)
    return set(names) - PROMQL_WORDS


def test_the_committed_dashboards_are_what_the_topology_renders() -> None:
    rendered = render(load_topology(REPO / "topology.toml"))

    stale = stale_files(REPO / DEPLOY_DIR, rendered)

    assert stale == [], f"stale: {stale}; run `agora deploy render` at the repository's root"


def test_promtool_parses_every_panels_query(promtool: str, tmp_path: Path) -> None:
    exprs = queries(committed())
    # promtool parses each rule's expression: the queries, recorded under made-up names.
    rules = {
        "groups": [
            {
                "name": "dashboard-queries",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))

    checked = run_promtool(promtool, "check", "rules", "queries.yml", cwd=tmp_path)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in checked.stdout


def test_every_query_names_only_series_the_services_export_or_the_rules_record() -> None:
    known = exported_metrics() | recorded_series() | SCRAPED

    named = {name for expr in queries(committed()) for name in metric_names(expr)}

    assert named, "no metric found in the dashboard's queries"
    assert named - known == set()
    # The reading of the code finds what it should: a histogram's buckets, a gauge of orders.
    assert "agora_event_handling_seconds_bucket" in known
    assert "agora_orders_oldest_pending_timestamp_seconds" in known


def test_the_metric_names_of_a_query_leave_out_labels_functions_and_numbers() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (service, le) (rate(a_bucket{route="/x/{id}"}[5m])))'
        " / on (service) group_left (peer) b:recorded:rate5m > bool 1e3 and up offset 1m"
    )

    assert metric_names(expr) == {"a_bucket", "b:recorded:rate5m", "up"}


def test_the_funnel_reads_consumers_the_services_subscribe() -> None:
    from notifications.entrypoints import subscriptions as notified
    from orders.entrypoints.answers import subscriptions as answered

    # Their parts are only read when a message is handled: none is here.
    parts = cast(Any, SimpleNamespace(messages=None, templates=None, wakeup=None))
    subscribed = {
        "notifications": {s.durable for s in notified(parts)},
        "orders": {s.durable for s in answered(parts)},
    }
    named: dict[str, set[str]] = {"notifications": set(), "orders": set()}
    for expr in queries(committed()):
        reader = re.search(r'service="(\w+)"', expr)
        matched = re.search(r'consumer=~?"([\w|]+)"', expr)
        if reader and matched:
            named[reader.group(1)] |= set(matched.group(1).split("|"))

    assert named["notifications"] == {"tell_order_confirmed", "tell_order_cancelled"}
    assert named["orders"]
    for service, consumers in named.items():
        assert consumers <= subscribed[service], service


def test_the_dashboard_is_a_grafana_model_reading_the_chosen_prometheus() -> None:
    document = committed()

    assert document["schemaVersion"] == SCHEMA_VERSION
    assert document["uid"] == "agora-overview"
    (variable,) = document["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    rows = [p["id"] for p in document["panels"] if p["type"] == "row"]
    ids = rows + [p["id"] for p in panels(document)]
    assert len(ids) == len(set(ids))
    for panel in panels(document):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24


def test_a_service_added_to_the_topology_gets_its_row_held_to_its_objectives() -> None:
    before = topology(identity={"module": "identity.bootstrap"})
    after = topology(
        identity={"module": "identity.bootstrap"},
        reviews={
            "module": "reviews.bootstrap",
            "objectives": {"error_ratio": 0.05, "p99_seconds": 2},
        },
    )

    rows = {p["title"]: p for p in dashboard(after)["panels"] if p["type"] == "row"}
    assert "reviews" not in {p["title"] for p in dashboard(before)["panels"]}
    added = rows["reviews"]["panels"]
    assert all('service="reviews"' in t["expr"] for p in added for t in p["targets"])
    thresholds = {
        p["title"]: p["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"]
        for p in added
        if "thresholds" in p["fieldConfig"]["defaults"]
    }
    assert thresholds == {"5xx ratio": 0.05, "Latency": 2.0}
    # No orders, no checkout funnel.
    assert "Checkout" not in rows
    assert not any("agora_orders_" in expr for expr in queries(dashboard(after)))
