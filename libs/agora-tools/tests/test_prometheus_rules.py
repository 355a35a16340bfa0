"""The Prometheus rules rendered from the topology (ADR 34).

``promtool`` (Debian's ``prometheus`` package, installed with apt-get when missing: the fixture
is conftest.py's) checks the committed rule file and runs its unit tests, in which each service's
every alert fires on series that breach what it watches and stays quiet on healthy ones. A service
added to the topology gets its rules, held to the objectives the topology gives it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from agora.topology import Topology
from agora_tools.prometheus import PROMETHEUS_DIR, RULES_FILE, TESTS_FILE, render
from agora_tools.testing import run_promtool, topology

REPO = Path(__file__).resolve().parents[3]
COMMITTED = REPO / "deploy" / PROMETHEUS_DIR


def rules(t: Topology) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(render(t)[f"{PROMETHEUS_DIR}/{RULES_FILE}"])
    return document


def group_of(t: Topology, service: str) -> list[dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {
        group["name"]: group["rules"] for group in rules(t)["groups"]
    }
    return groups[f"agora-{service}"]


def alert(t: Topology, service: str, name: str) -> dict[str, Any]:
    return next(rule for rule in group_of(t, service) if rule.get("alert") == name)


def test_promtool_accepts_the_committed_rules(promtool: str) -> None:
    checked = run_promtool(promtool, "check", "rules", RULES_FILE, cwd=COMMITTED)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_every_alert_fires_when_it_should_and_stays_quiet_when_it_should(promtool: str) -> None:
    tested = run_promtool(promtool, "test", "rules", TESTS_FILE, cwd=COMMITTED)

    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "FAILED" not in tested.stdout
    tests = yaml.safe_load((COMMITTED / TESTS_FILE).read_text())["tests"]
    alerts = {
        group["name"]: {rule["alert"] for rule in group["rules"] if "alert" in rule}
        for group in rules_on_disk()["groups"]
    }
    for case in tests:
        service = case["name"].partition(":")[0]
        named = {t["alertname"] for t in case["alert_rule_test"]}
        assert named == alerts[f"agora-{service}"], case["name"]
    # Each service has a case where every alert fires and one where none does.
    firing = [case for case in tests if all(t["exp_alerts"] for t in case["alert_rule_test"])]
    quiet = [case for case in tests if not any(t["exp_alerts"] for t in case["alert_rule_test"])]
    assert len(firing) == len(quiet) == len(tests) // 2 > 0


def rules_on_disk() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((COMMITTED / RULES_FILE).read_text())
    return document


def test_the_tests_hold_for_objectives_other_than_the_defaults(
    promtool: str, tmp_path: Path
) -> None:
    lenient = {"error_ratio": 0.2, "p99_seconds": 3.0, "pending_seconds": 600}
    t = topology(reviews={"module": "reviews.bootstrap", "objectives": lenient})
    for path, text in render(t).items():
        (tmp_path / Path(path).name).write_text(text)

    checked = run_promtool(promtool, "check", "rules", RULES_FILE, cwd=tmp_path)
    tested = run_promtool(promtool, "test", "rules", TESTS_FILE, cwd=tmp_path)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_service_added_to_the_topology_gets_its_recording_rules_and_alerts() -> None:
    before = topology(identity={"module": "identity.bootstrap"})
    after = topology(
        identity={"module": "identity.bootstrap"}, reviews={"module": "reviews.bootstrap"}
    )

    assert [group["name"] for group in rules(before)["groups"]] == ["agora-identity"]
    added = group_of(after, "reviews")
    records = {rule["record"] for rule in added if "record" in rule}
    assert {
        "service:agora_http_requests:rate5m",
        "service:agora_http_errors:ratio_rate5m",
        "service:agora_http_request_duration_seconds:p50_5m",
        "service:agora_http_request_duration_seconds:p99_5m",
        "service_consumer_outcome:agora_events_consumed:rate5m",
        "service_outcome:agora_outbox_published:rate5m",
        "service_consumer:agora_dead_letters:increase1h",
        "service:agora_outbox_pending:max",
        "service:agora_outbox_oldest_pending_age_seconds:max",
        "service_peer_outcome:agora_client_requests:rate5m",
        "service_peer:agora_client_breakers_open:max",
    } == records
    assert all('service="reviews"' in rule["expr"] for rule in added)
    names = {rule["alert"] for rule in added if "alert" in rule}
    assert names == {
        "AgoraErrorRatioHigh",
        "AgoraLatencyP99High",
        "AgoraReplicaDown",
        "AgoraDeadLetter",
        "AgoraOutboxStuck",
        "AgoraBreakerOpen",
    }
    assert all(rule["annotations"]["runbook"] for rule in added if "alert" in rule)
    tests = yaml.safe_load(render(after)[f"{PROMETHEUS_DIR}/{TESTS_FILE}"])["tests"]
    assert sum(case["name"].startswith("reviews:") for case in tests) == 2


def test_the_alerts_hold_each_service_to_the_objectives_the_topology_gives_it() -> None:
    t = topology(
        identity={"module": "identity.bootstrap"},
        search={
            "module": "search.bootstrap",
            "objectives": {"error_ratio": 0.05, "p99_seconds": 2},
        },
    )

    assert alert(t, "identity", "AgoraErrorRatioHigh")["expr"].endswith(" > 0.01")
    assert alert(t, "identity", "AgoraLatencyP99High")["expr"].endswith(" > 0.5")
    assert alert(t, "search", "AgoraErrorRatioHigh")["expr"].endswith(" > 0.05")
    assert alert(t, "search", "AgoraLatencyP99High")["expr"].endswith(" > 2.0")


def test_only_a_service_with_a_pending_objective_is_paged_for_an_order_pending_past_it() -> None:
    t = topology(
        identity={"module": "identity.bootstrap"},
        orders={"module": "orders.bootstrap", "objectives": {"pending_seconds": 120}},
    )

    pending = alert(t, "orders", "AgoraOrderPendingTooLong")
    assert pending["expr"] == (
        'service:agora_orders_oldest_pending_age_seconds:max{service="orders"} > 120'
    )
    assert pending["labels"]["severity"] == "page"
    recorded = {rule["record"]: rule["expr"] for rule in group_of(t, "orders") if "record" in rule}
    assert recorded["service:agora_orders_oldest_pending_age_seconds:max"] == (
        "max by (service) "
        '(time() - agora_orders_oldest_pending_timestamp_seconds{service="orders"})'
    )
    # No objective, no rule: identity's group names no order metric, recorded or alerted on.
    assert not any("agora_orders_" in rule["expr"] for rule in group_of(t, "identity"))


def test_an_objective_out_of_bounds_is_refused_with_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="error_ratio"):
        topology(search={"module": "search.bootstrap", "objectives": {"error_ratio": 0.7}})
    with pytest.raises(ValueError, match="p99_seconds"):
        topology(search={"module": "search.bootstrap", "objectives": {"p99_seconds": 0}})
    with pytest.raises(ValueError, match="pending_seconds"):
        topology(orders={"module": "orders.bootstrap", "objectives": {"pending_seconds": 0}})
