"""The Prometheus server of `agora up --prometheus`: what it scrapes and with which rules.

Every replica and the gateway are scraped, labelled with their service and replica, with the
operator's token; the broker and Prometheus itself are not. The rules are the topology's, and a
test may shorten how long each alert waits. ``promtool`` accepts what is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from agora.topology import Topology
from agora_tools import prometheus, scrape
from agora_tools.runner import Runner, UpOptions
from agora_tools.testing import run_promtool

TOPOLOGY = Topology.model_validate(
    {
        "services": {
            "identity": {"module": "identity.bootstrap"},
            "payments": {"module": "payments.bootstrap", "depends_on": ["identity"]},
        }
    }
)


@dataclass(frozen=True)
class Listed:
    service: str
    replica: int
    url: str


RUNNING = [
    Listed("nats", 0, "nats://127.0.0.1:10001"),
    Listed("identity", 0, "http://127.0.0.1:10002"),
    Listed("payments", 0, "http://127.0.0.1:10003"),
    Listed("payments", 1, "http://127.0.0.1:10004"),
    Listed("gateway", 0, "http://127.0.0.1:8000"),
    Listed("prometheus", 0, "http://127.0.0.1:9090"),
]


def test_every_replica_and_the_gateway_are_scraped_with_their_service_and_replica() -> None:
    targets = scrape.targets(RUNNING, TOPOLOGY.services)
    config = scrape.scrape_config(
        targets, token_file=Path("/s/operator.token"), rule_file=Path("/p/rules.yml"), interval=2
    )

    (job,) = config["scrape_configs"]
    assert job["job_name"] == "agora"
    assert [(c["targets"], c["labels"]) for c in job["static_configs"]] == [
        (["127.0.0.1:10002"], {"service": "identity", "replica": "0"}),
        (["127.0.0.1:10003"], {"service": "payments", "replica": "0"}),
        (["127.0.0.1:10004"], {"service": "payments", "replica": "1"}),
        (["127.0.0.1:8000"], {"service": "gateway", "replica": "0"}),
    ]
    # The gateway's /metrics is the operator's.
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "/s/operator.token"}
    assert config["rule_files"] == ["/p/rules.yml"]
    assert config["global"] == {
        "scrape_interval": "2000ms",
        "scrape_timeout": "2000ms",
        "evaluation_interval": "2000ms",
    }


def test_the_rules_are_the_topologys_and_a_test_may_shorten_every_alerts_wait() -> None:
    shortened = scrape.rules(TOPOLOGY, alert_for=3)

    assert scrape.rules(TOPOLOGY) == prometheus.rule_file(TOPOLOGY)
    waits = [rule["for"] for g in shortened["groups"] for rule in g["rules"] if "for" in rule]
    assert waits
    assert set(waits) == {"3000ms"}
    # Only the waits change: the same rules, the same expressions.
    unchanged = prometheus.rule_file(TOPOLOGY)
    for group in unchanged["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)
    for group in shortened["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)
    assert shortened == unchanged


def test_promtool_accepts_the_written_configuration_and_rules(
    promtool: str, tmp_path: Path
) -> None:
    token = tmp_path / "operator.token"
    token.write_text("secret\n")
    server = scrape.Server("prometheus", tmp_path / "prometheus", 9090)
    server.write(
        TOPOLOGY, scrape.targets(RUNNING, TOPOLOGY.services), token_file=token, alert_for=1
    )

    checked = run_promtool(promtool, "check", "config", str(server.config_file))

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout
    assert yaml.safe_load(server.rule_file.read_text())["groups"]
    assert server.argv()[1:4] == [
        f"--config.file={server.config_file}",
        f"--storage.tsdb.path={server.data}",
        "--web.listen-address=127.0.0.1:9090",
    ]


def test_without_prometheus_installed_up_says_so_and_starts_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PATH on which nothing is found: Prometheus is not installed.
    monkeypatch.setenv("PATH", str(tmp_path))
    printed = StringIO()
    options = UpOptions(
        directory=tmp_path,
        topology_path=tmp_path / "topology.toml",
        topology=TOPOLOGY,
        prometheus=True,
    )
    runner = Runner(options, Console(file=printed, width=200))

    assert runner._prometheus_plan(avoid=()) is None
    assert "Prometheus is not installed" in printed.getvalue()
    assert "apt-get install prometheus" in printed.getvalue()
