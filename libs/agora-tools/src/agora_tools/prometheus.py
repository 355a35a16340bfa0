"""Prometheus rules and their unit tests, rendered from the topology (ADR 34).

``deploy/prometheus/rules.yml`` is a plain rule file (top-level ``groups:``), one group per
service: recording rules for what an operator reads first (request rate, 5xx ratio, p50 and p99
latency, messages handled, outbox publications and backlog, dead letters, open breakers, and for
orders the age of its oldest PENDING order) and the alerts a team pages on, each with a runbook
line, held to the service's ``objectives`` in ``topology.toml``.

``deploy/prometheus/tests.yml`` is what ``promtool test rules`` runs: for each service, made-up
series under which every alert fires, and others under which every alert stays quiet.

Only metrics the processes export are named (:mod:`agora.middleware`,
:mod:`agora.messaging.consumer`, :mod:`agora.messaging.relay`, :mod:`agora.client`, and orders'
``agora_orders_oldest_pending_timestamp_seconds``), plus ``up``, which Prometheus writes for each
target it scrapes; a scrape configuration labels each target with ``service``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agora.topology import Service, Topology
from agora_tools.k8s.objects import to_yaml

PROMETHEUS_DIR = "prometheus"
RULES_FILE = "rules.yml"
TESTS_FILE = "tests.yml"
GENERATED = (
    "# Rendered by `agora deploy render` from topology.toml: do not edit, render again (ADR 34).\n"
)

# The window of every rate: long enough to hold several scrapes, short enough to page soon.
WINDOW = "5m"
# How long a breach lasts before it pages: one slow scrape is not an incident.
FOR = "5m"
DOWN_FOR = "2m"
DEAD_LETTER_WINDOW = "10m"
# A breaker opens after a few failures in a row and tries again within seconds: one open for
# minutes while its caller goes on calling is a callee that keeps failing, not a blip. A breaker
# stays open until the next call tries the replica, so one a caller no longer calls pages nobody.
BREAKER_FOR = "2m"
CALLING_WINDOW = "1m"
# The pending objective already holds the margin past the checkout's deadline.
PENDING_FOR = "1m"
# An event the relay has not published for a minute (it publishes within a second when the
# broker is there); after FOR more, the broker has been away for minutes.
OUTBOX_STUCK_SECONDS = 60
SERVER_ERROR = '=~"5.."'
DEAD = '="dead"'
PAGE = "page"
TICKET = "ticket"


@dataclass(frozen=True)
class Alert:
    """One alert of one service: what it watches, how long before it fires, what to do."""

    name: str
    expr: str
    duration: str | None
    severity: str
    summary: str
    runbook: str

    def rule(self, service: str) -> dict[str, Any]:
        rule: dict[str, Any] = {"alert": self.name, "expr": self.expr}
        if self.duration:
            rule["for"] = self.duration
        rule["labels"] = {"severity": self.severity, "service": service}
        rule["annotations"] = {"summary": self.summary, "runbook": self.runbook}
        return rule


def render(topology: Topology) -> dict[str, str]:
    """The rule file and its tests, by their path under ``deploy/``."""
    return {
        f"{PROMETHEUS_DIR}/{RULES_FILE}": GENERATED + to_yaml(rule_file(topology)),
        f"{PROMETHEUS_DIR}/{TESTS_FILE}": GENERATED + to_yaml(test_file(topology)),
    }


def rule_file(topology: Topology) -> dict[str, Any]:
    return {"groups": [group(service) for service in topology]}


def group(service: Service) -> dict[str, Any]:
    """A service's recording rules, then its alerts (which read the recorded series)."""
    # The label keeps each service's records apart for the linter of `promtool check rules`.
    recorded = [
        {"record": name, "expr": expr, "labels": {"service": service.name}}
        for name, expr in recording_rules(service).items()
    ]
    alerted = [alert.rule(service.name) for alert in alerts(service)]
    return {"name": f"agora-{service.name}", "rules": recorded + alerted}


def _selector(service: Service, **matchers: str) -> str:
    pairs = {"service": f'="{service.name}"', **matchers}
    return "{" + ", ".join(f"{label}{match}" for label, match in pairs.items()) + "}"


def _quantile(service: Service, quantile: float) -> str:
    buckets = f"agora_http_request_duration_seconds_bucket{_selector(service)}"
    return f"histogram_quantile({quantile}, sum by (service, le) (rate({buckets}[{WINDOW}])))"


def _dead_letters(service: Service) -> str:
    return "agora_events_consumed_total" + _selector(service, outcome=DEAD)


def _age(service: Service, timestamp: str) -> str:
    """The age of what a ``*_timestamp_seconds`` gauge dates, the oldest over the replicas."""
    return f"max by (service) (time() - {timestamp}{_selector(service)})"


def recording_rules(service: Service) -> dict[str, str]:
    """Recorded series by name, after Prometheus's ``level:metric:operations`` convention."""
    requests = f"agora_http_requests_total{_selector(service)}"
    errors = "agora_http_requests_total" + _selector(service, status=SERVER_ERROR)
    events = f"agora_events_consumed_total{_selector(service)}"
    dead = _dead_letters(service)
    published = f"agora_outbox_published_total{_selector(service)}"
    calls = f"agora_client_requests_total{_selector(service)}"
    pending: dict[str, str] = {}
    if service.objectives.pending_seconds is not None:
        pending[PENDING_AGE] = _age(service, "agora_orders_oldest_pending_timestamp_seconds")
    return {
        "service:agora_http_requests:rate5m": f"sum by (service) (rate({requests}[{WINDOW}]))",
        "service:agora_http_errors:ratio_rate5m": (
            f"sum by (service) (rate({errors}[{WINDOW}]))"
            f" / sum by (service) (rate({requests}[{WINDOW}]))"
        ),
        "service:agora_http_request_duration_seconds:p50_5m": _quantile(service, 0.5),
        "service:agora_http_request_duration_seconds:p99_5m": _quantile(service, 0.99),
        "service_consumer_outcome:agora_events_consumed:rate5m": (
            f"sum by (service, consumer, outcome) (rate({events}[{WINDOW}]))"
        ),
        "service_outcome:agora_outbox_published:rate5m": (
            f"sum by (service, outcome) (rate({published}[{WINDOW}]))"
        ),
        "service_consumer:agora_dead_letters:increase1h": (
            f"sum by (service, consumer) (increase({dead}[1h]))"
        ),
        "service:agora_outbox_pending:max": (
            f"max by (service) (agora_outbox_pending{_selector(service)})"
        ),
        OUTBOX_AGE: _age(service, "agora_outbox_oldest_pending_timestamp_seconds"),
        "service_peer_outcome:agora_client_requests:rate5m": (
            f"sum by (service, peer, outcome) (rate({calls}[{WINDOW}]))"
        ),
        BREAKERS: f"max by (service, peer) (agora_client_breakers_open{_selector(service)})",
        **pending,
    }


OUTBOX_AGE = "service:agora_outbox_oldest_pending_age_seconds:max"
BREAKERS = "service_peer:agora_client_breakers_open:max"
PENDING_AGE = "service:agora_orders_oldest_pending_age_seconds:max"


def alerts(service: Service) -> list[Alert]:
    """What pages for one service, held to its objectives."""
    name, objectives = service.name, service.objectives
    dead = _dead_letters(service)
    calls = f"agora_client_requests_total{_selector(service)}"
    pending: list[Alert] = []
    if objectives.pending_seconds is not None:
        pending.append(
            Alert(
                name="AgoraOrderPendingTooLong",
                expr=f"{PENDING_AGE}{_selector(service)} > {objectives.pending_seconds}",
                duration=PENDING_FOR,
                severity=PAGE,
                summary=f"{name} has held an order PENDING for more than "
                f"{objectives.pending_seconds:g} s",
                runbook="Follow the oldest PENDING order's checkout in the console (its trace): "
                "the answer it waits for names the service to look at (its alerts, its "
                "consumers' lag, the broker); `agora verify` lists the orders past their deadline.",
            )
        )
    return [
        Alert(
            name="AgoraErrorRatioHigh",
            expr=f"service:agora_http_errors:ratio_rate5m{_selector(service)}"
            f" > {objectives.error_ratio}",
            duration=FOR,
            severity=PAGE,
            summary=f"{name} answers more than {objectives.error_ratio:.2%} of its requests "
            "with a 5xx",
            runbook=f"Read the console's failing traces and logs of {name}; a dependency down "
            "shows as its own alert; roll back a release that started it.",
        ),
        Alert(
            name="AgoraLatencyP99High",
            expr=f"service:agora_http_request_duration_seconds:p99_5m{_selector(service)}"
            f" > {objectives.p99_seconds}",
            duration=FOR,
            severity=PAGE,
            summary=f"{name}'s 99th percentile is above {objectives.p99_seconds} s",
            runbook=f"Find the slow route in the console's traces of {name}; check its "
            "database and CPU, and scale it out when it is saturated.",
        ),
        Alert(
            name="AgoraReplicaDown",
            expr=f"up{_selector(service)} == 0",
            duration=DOWN_FOR,
            severity=PAGE,
            summary=f"a replica of {name} does not answer its scrape",
            runbook=f"Check that the replica of {name} runs and passes /readyz (`agora status`, "
            "or its pod's events); read its last logs; restart it.",
        ),
        Alert(
            name="AgoraDeadLetter",
            expr=f"sum by (service, consumer) (increase({dead}[{DEAD_LETTER_WINDOW}])) > 0",
            duration=None,
            severity=TICKET,
            summary=f"{name} sent a message to its dead letters",
            runbook=f"Read the dead letter's error (`agora events dead`, or the console's dead "
            f"letters of {name}), fix the cause, then `agora events replay EVENT_ID`.",
        ),
        Alert(
            name="AgoraOutboxStuck",
            expr=f"{OUTBOX_AGE}{_selector(service)} > {OUTBOX_STUCK_SECONDS}",
            duration=FOR,
            severity=PAGE,
            summary=f"{name} has not published an event recorded over {OUTBOX_STUCK_SECONDS} s ago",
            runbook=f"Check that the broker runs and that {name} reaches it (`agora status`; "
            f'{name}\'s logs say "relay could not publish"); the events wait in its outbox '
            "(`/internal/outbox`) and go out by themselves once it is back.",
        ),
        Alert(
            name="AgoraBreakerOpen",
            expr=f"{BREAKERS}{_selector(service)} > 0 and on (service, peer) "
            f"sum by (service, peer) (rate({calls}[{CALLING_WINDOW}])) > 0",
            duration=BREAKER_FOR,
            severity=PAGE,
            summary=f"{name} has stopped calling a replica of the service in the peer label: "
            "its circuit breaker is open",
            runbook=f"Look at the callee in the peer label: its alerts, `agora status`, its logs "
            f"and its slow or failing routes in the console's traces; {name} calls the replica "
            "again by itself once a trial call succeeds.",
        ),
        *pending,
    ]


# The unit tests of the alerts (`promtool test rules`).

INTERVAL = "1m"
SPAN = 30  # minutes of made-up series
EVAL_TIME = "15m"
INSTANCE = "{service}-0:8080"


def test_file(topology: Topology) -> dict[str, Any]:
    return {
        "rule_files": [RULES_FILE],
        "evaluation_interval": INTERVAL,
        "tests": [
            alert_test(service, failing=failing)
            for service in topology
            for failing in (True, False)
        ],
    }


def _series(metric: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ", ".join(f'{label}="{value}"' for label, value in labels.items())
    return {"series": f"{metric}{{{inner}}}", "values": values}


def _inputs(service: Service, *, failing: bool) -> list[dict[str, str]]:
    """A service's series for half an hour: half its answers 5xx, slow, a replica down, a dead
    letter after ten minutes, its outbox stuck, a breaker open on a callee it keeps calling and
    (orders) an order PENDING for good; or healthy."""
    name = service.name
    route = {"service": name, "route": "/things", "method": "GET"}
    # Per minute: 100 requests answered 200, and as many (failing) or none answered 500; all
    # of them under half the objective of p99, or most of them up to four times it.
    bucket = "agora_http_request_duration_seconds_bucket"
    p99 = service.objectives.p99_seconds
    bounds = (str(p99 / 2), str(p99), str(p99 * 4), "+Inf")
    counts = (0, 10, 110, 110) if failing else (110, 110, 110, 110)
    instance = {"job": "agora", "instance": INSTANCE.format(service=name), "service": name}
    dead = {"service": name, "consumer": "things", "outcome": "dead"}
    peer = {"service": name, "peer": "things"}
    # A gauge of when something still waiting began: stuck at the start (failing), or keeping
    # up with the clock, as it does when nothing waits (healthy).
    since = f"0x{SPAN}" if failing else f"0+60x{SPAN}"
    pending: list[dict[str, str]] = []
    if service.objectives.pending_seconds is not None:
        pending.append(_series("agora_orders_oldest_pending_timestamp_seconds", instance, since))
    return [
        _series("agora_http_requests_total", {**route, "status": "200"}, f"0+100x{SPAN}"),
        _series(
            "agora_http_requests_total",
            {**route, "status": "500"},
            f"0+100x{SPAN}" if failing else f"0x{SPAN}",
        ),
        *(
            _series(bucket, {**route, "le": bound}, f"0+{count}x{SPAN}")
            for bound, count in zip(bounds, counts, strict=True)
        ),
        _series("up", instance, f"0x{SPAN}" if failing else f"1x{SPAN}"),
        _series(
            "agora_events_consumed_total", dead, f"0x10 1x{SPAN - 10}" if failing else f"0x{SPAN}"
        ),
        # The backlog grows by ten events a minute while the broker is away.
        _series(
            "agora_outbox_pending", {"service": name}, f"0+10x{SPAN}" if failing else f"0x{SPAN}"
        ),
        _series("agora_outbox_oldest_pending_timestamp_seconds", {"service": name}, since),
        # A breaker open from minute 5 on while its caller goes on calling (failing); or open for
        # one scrape, then left open from minute 12 by a caller that stopped calling (healthy).
        _series(
            "agora_client_breakers_open",
            peer,
            f"0x5 1x{SPAN - 5}" if failing else f"0x5 1 0x4 1x{SPAN - 11}",
        ),
        _series(
            "agora_client_requests_total",
            {**peer, "outcome": "2xx"},
            f"0+60x{SPAN}" if failing else f"0+60x12 720x{SPAN - 12}",
        ),
        *pending,
    ]


def _expected(service: Service, alert: Alert) -> dict[str, Any]:
    labels = {"severity": alert.severity, "service": service.name}
    if alert.name == "AgoraReplicaDown":
        labels |= {"job": "agora", "instance": INSTANCE.format(service=service.name)}
    if alert.name == "AgoraDeadLetter":
        labels |= {"consumer": "things"}
    if alert.name == "AgoraBreakerOpen":
        labels |= {"peer": "things"}
    return {
        "exp_labels": labels,
        "exp_annotations": {"summary": alert.summary, "runbook": alert.runbook},
    }


def alert_test(service: Service, *, failing: bool) -> dict[str, Any]:
    """Every alert of ``service`` fires under series that breach what it watches (``failing``);
    none fires while it is healthy."""
    expected = "every alert fires" if failing else "no alert while healthy"
    return {
        "name": f"{service.name}: {expected}",
        "interval": INTERVAL,
        "input_series": _inputs(service, failing=failing),
        "alert_rule_test": [
            {
                "eval_time": EVAL_TIME,
                "alertname": alert.name,
                "exp_alerts": [_expected(service, alert)] if failing else [],
            }
            for alert in alerts(service)
        ],
    }
