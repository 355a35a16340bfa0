"""A Prometheus server for the system ``agora up`` runs (``agora up --prometheus``, ADR 34).

Its scrape configuration is rendered from what ``agora status`` reads (``.agora/state.json``):
every replica of every service and the gateway is a target of the job ``agora``, labelled with
its ``service`` and ``replica``, the labels the rules of :mod:`agora_tools.prometheus` select on.
The broker is no target: it serves its figures as JSON, and the consumers export their lag
themselves (:mod:`agora.messaging.consumer`). Every scrape carries the operator's token: the
gateway serves ``/metrics`` to it only (``private_metrics``); the services need none.

The rules are the topology's (what ``agora deploy render`` commits as
``deploy/prometheus/rules.yml``), with every alert's ``for:`` shortened when asked: a test that
stops a service should not wait minutes for its page.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from agora.topology import GATEWAY, Topology

JOB = "agora"
PROMETHEUS = "prometheus"
# Prometheus's own port when free, as an operator expects to find it.
DEFAULT_PORT = 9090
# Prometheus's own default: often enough to see an incident, seldom enough to cost nothing.
INTERVAL = 15.0
CONFIG_FILE = "prometheus.yml"
RULES_FILE = "rules.yml"
GENERATED = "# Written by `agora up --prometheus` (agora_tools.scrape): rewritten at each start.\n"


class Listed(Protocol):
    """A process as ``agora status`` lists it (:class:`agora_tools.runner.ProcessState`)."""

    @property
    def service(self) -> str: ...
    @property
    def replica(self) -> int: ...
    @property
    def url(self) -> str: ...


@dataclass(frozen=True)
class Target:
    """One process Prometheus scrapes."""

    service: str
    replica: int
    address: str  # host:port


def targets(processes: Iterable[Listed], services: Iterable[str]) -> list[Target]:
    """The targets among ``processes`` (``agora status``'s, each with ``service``, ``replica``
    and ``url``): the replicas of ``services`` and the gateway, in the order given."""
    scraped = {*services, GATEWAY}
    return [
        Target(p.service, p.replica, urlsplit(p.url).netloc)
        for p in processes
        if p.service in scraped
    ]


def seconds(value: float) -> str:
    """A duration as Prometheus writes it: ``2.5`` -> ``2500ms``."""
    return f"{round(value * 1000)}ms"


def scrape_config(
    scraped: Iterable[Target], *, token_file: Path, rule_file: Path, interval: float = INTERVAL
) -> dict[str, Any]:
    """Prometheus's configuration: scrape every target and evaluate the rules every
    ``interval`` seconds."""
    return {
        "global": {
            "scrape_interval": seconds(interval),
            "scrape_timeout": seconds(min(interval, 10.0)),
            "evaluation_interval": seconds(interval),
        },
        "rule_files": [str(rule_file)],
        "scrape_configs": [
            {
                "job_name": JOB,
                "metrics_path": "/metrics",
                "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                "static_configs": [
                    {
                        "targets": [target.address],
                        "labels": {"service": target.service, "replica": str(target.replica)},
                    }
                    for target in scraped
                ],
            }
        ],
    }


def rules(topology: Topology, *, alert_for: float | None = None) -> dict[str, Any]:
    """The topology's rule file; with ``alert_for``, every alert that waits waits that long."""
    # Imported here, not with the module: agora_tools.prometheus imports agora_tools.k8s, whose
    # package imports the deployment renderers, which import the runner, which imports this.
    from agora_tools.prometheus import rule_file

    document = rule_file(topology)
    if alert_for is not None:
        for group in document["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = seconds(alert_for)
    return document


@dataclass(frozen=True)
class Server:
    """One Prometheus server of a system: its files under ``directory`` and its address."""

    binary: str
    directory: Path
    port: int
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.directory / CONFIG_FILE

    @property
    def rule_file(self) -> Path:
        return self.directory / RULES_FILE

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def write(
        self,
        topology: Topology,
        scraped: Iterable[Target],
        *,
        token_file: Path,
        interval: float = INTERVAL,
        alert_for: float | None = None,
    ) -> None:
        """Write its configuration and rules for the system as it runs now."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rule_file.write_text(GENERATED + _yaml(rules(topology, alert_for=alert_for)))
        config = scrape_config(
            scraped, token_file=token_file, rule_file=self.rule_file, interval=interval
        )
        self.config_file.write_text(GENERATED + _yaml(config))

    def argv(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.data}",
            f"--web.listen-address={self.host}:{self.port}",
            # Its start-up story would fill the runner's console; what goes wrong still shows.
            "--log.level=warn",
        ]


def _yaml(document: dict[str, Any]) -> str:
    # Here, not at the top: `agora up`'s runner imports this module whether or not it runs
    # Prometheus, and stays for as long as the system runs.
    import yaml

    return yaml.safe_dump(document, sort_keys=False, width=10_000)
