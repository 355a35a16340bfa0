"""Grafana dashboards, rendered from the topology beside the Prometheus rules (ADR 34).

``deploy/grafana/agora-overview.json`` is one dashboard in Grafana's classic JSON model, which
Grafana imports as it is (Dashboards → New → Import, or a file provider): a ``datasource``
variable picks the Prometheus that scrapes Agora, and every panel's queries read that one.

Its rows are what an operator reads first: the golden signals of every service side by side
(request rate, 5xx ratio, p50 and p99 latency, CPU as saturation, replicas up), then each
service's own with its objectives from ``topology.toml`` drawn as thresholds; the checkout
funnel (orders placed, confirmed, cancelled and what cancelled them); messaging (outbox backlog
and age, consumers' handling rate, time and failures, dead letters, open breakers).

A query reads a recording rule of ``deploy/prometheus/rules.yml`` where one records the figure,
and otherwise only metrics the processes export (:mod:`agora.middleware`,
:mod:`agora.messaging.consumer`, :mod:`agora.messaging.relay`, :mod:`agora.client`, orders'
``agora_orders_oldest_pending_timestamp_seconds``, and ``prometheus_client``'s process
collector), plus ``up``, which Prometheus writes for each target it scrapes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from agora.topology import Service, Topology

# The module, not its names: prometheus imports what renders k8s, which reaches deploy and here.
from agora_tools import prometheus

GRAFANA_DIR = "grafana"
OVERVIEW_FILE = "agora-overview.json"
OVERVIEW_UID = "agora-overview"
# Grafana 10.4's classic model; newer Grafanas migrate it forward on import.
SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GENERATED = "Rendered by `agora deploy render` from topology.toml: do not edit, render again."

# A dashboard is 24 columns wide: three panels to a line.
WIDTH = 24
PANEL_WIDTH = 8
PANEL_HEIGHT = 8

# The checkout's milestones, as the processes count them: orders answers a placed order 202;
# notifications tells the customer of each confirmed or cancelled order once; orders consumes
# the answers that cancel a checkout. The reason an order was cancelled is not a label of any
# metric: the answers that cancel and the customer's own cancellations stand for it.
ORDERS = "orders"
NOTIFICATIONS = "notifications"
CANCELLING_ANSWERS = ("on_stock_rejected", "on_payment_declined", "on_payment_failed")


@dataclass(frozen=True)
class Query:
    """One series of a panel: a PromQL expression and how its legend names each line."""

    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    """A time series panel: what it shows, in what unit, and the line that is too much."""

    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str
    threshold: float | None = None

    def model(self, panel_id: int, x: int, y: int) -> dict[str, Any]:
        defaults: dict[str, Any] = {"unit": self.unit, "min": 0}
        if self.threshold is not None:
            defaults["thresholds"] = {
                "mode": "absolute",
                "steps": [
                    {"color": "green", "value": None},
                    {"color": "red", "value": self.threshold},
                ],
            }
            defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
        return {
            "id": panel_id,
            "type": "timeseries",
            "title": self.title,
            "description": self.description,
            "datasource": DATASOURCE,
            "gridPos": {"h": PANEL_HEIGHT, "w": PANEL_WIDTH, "x": x, "y": y},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                "tooltip": {"mode": "multi", "sort": "desc"},
            },
            "targets": [
                {
                    "refId": chr(ord("A") + index),
                    "datasource": DATASOURCE,
                    "expr": query.expr,
                    "legendFormat": query.legend,
                }
                for index, query in enumerate(self.queries)
            ],
        }


@dataclass(frozen=True)
class Row:
    """A titled row of panels; a collapsed one folds its panels inside it."""

    title: str
    panels: Sequence[Panel]
    collapsed: bool = False


def render(topology: Topology) -> dict[str, str]:
    """The dashboards, by their path under ``deploy/``."""
    text = json.dumps(overview(topology), indent=2) + "\n"
    return {f"{GRAFANA_DIR}/{OVERVIEW_FILE}": text}


def overview(topology: Topology) -> dict[str, Any]:
    rows = [
        Row("Golden signals", golden_signals()),
        *(Row(service.name, service_signals(service), collapsed=True) for service in topology),
        *([Row("Checkout", checkout(topology))] if ORDERS in topology.services else []),
        Row("Messaging", messaging()),
    ]
    return {
        "uid": OVERVIEW_UID,
        "title": "Agora overview",
        "description": GENERATED,
        "tags": ["agora"],
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "links": [],
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                }
            ]
        },
        "panels": list(layout(rows)),
    }


def layout(rows: Sequence[Row]) -> Iterator[dict[str, Any]]:
    """Every row and panel with its id and place on the grid, top to bottom."""
    panel_id, y = 0, 0
    for row in rows:
        panel_id += 1
        heading: dict[str, Any] = {
            "id": panel_id,
            "type": "row",
            "title": row.title,
            "collapsed": row.collapsed,
            "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y},
            "panels": [],
        }
        y += 1
        placed = []
        for index, panel in enumerate(row.panels):
            panel_id += 1
            line, column = divmod(index, WIDTH // PANEL_WIDTH)
            placed.append(panel.model(panel_id, column * PANEL_WIDTH, y + line * PANEL_HEIGHT))
        if row.collapsed:
            # Folded inside its row, taking no room until it is opened.
            heading["panels"] = placed
            yield heading
        else:
            y += -(-len(row.panels) // (WIDTH // PANEL_WIDTH)) * PANEL_HEIGHT
            yield heading
            yield from placed


def _selector(**matchers: str) -> str:
    return "{" + ", ".join(f'{label}="{value}"' for label, value in matchers.items()) + "}"


def _rate(metric: str, selector: str, by: str = "") -> str:
    """Per second over the rules' window, summed (over ``by``'s labels when given)."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}{selector}[{prometheus.WINDOW}]))"


def golden_signals() -> list[Panel]:
    """Every service side by side, a line each, from the recording rules where they exist."""
    signals = (
        (
            "Requests",
            "HTTP requests served per second.",
            "service:agora_http_requests:rate5m",
            "reqps",
        ),
        (
            "5xx ratio",
            "Share of requests answered with a 5xx.",
            "service:agora_http_errors:ratio_rate5m",
            "percentunit",
        ),
        (
            "Latency p99",
            "99th percentile of the time to serve a request.",
            "service:agora_http_request_duration_seconds:p99_5m",
            "s",
        ),
        (
            "Latency p50",
            "Median time to serve a request.",
            "service:agora_http_request_duration_seconds:p50_5m",
            "s",
        ),
        (
            "CPU",
            "Saturation: CPU seconds per second, summed over a service's replicas.",
            _rate("process_cpu_seconds_total", "", by="service"),
            "short",
        ),
        ("Replicas up", "Replicas answering their scrape.", "sum by (service) (up)", "short"),
    )
    return [
        Panel(title, description, (Query(expr, "{{service}}"),), unit)
        for title, description, expr, unit in signals
    ]


def service_signals(service: Service) -> list[Panel]:
    """One service's signals, by route, against the objectives ``topology.toml`` gives it."""
    name, objectives = service.name, service.objectives
    mine = _selector(service=name)
    return [
        Panel(
            "Requests by route and status",
            f"HTTP requests {name} served per second.",
            (
                Query(
                    _rate("agora_http_requests_total", mine, by="route, method, status"),
                    "{{method}} {{route}} {{status}}",
                ),
            ),
            "reqps",
        ),
        Panel(
            "5xx ratio",
            f"Share of {name}'s requests answered with a 5xx; the line is its objective.",
            (Query(f"service:agora_http_errors:ratio_rate5m{mine}", "5xx"),),
            "percentunit",
            threshold=objectives.error_ratio,
        ),
        Panel(
            "Latency",
            f"{name}'s p50 and p99; the line is its p99 objective.",
            (
                Query(f"service:agora_http_request_duration_seconds:p50_5m{mine}", "p50"),
                Query(f"service:agora_http_request_duration_seconds:p99_5m{mine}", "p99"),
            ),
            "s",
            threshold=objectives.p99_seconds,
        ),
    ]


def _handled(service: str, consumer: str) -> str:
    matchers = _selector(service=service, consumer=consumer, outcome="handled")
    return _rate("agora_events_consumed_total", matchers)


def _orders_route(route: str, status: str) -> str:
    matchers = _selector(service=ORDERS, route=route, method="POST", status=status)
    return _rate("agora_http_requests_total", matchers)


def checkout(topology: Topology) -> list[Panel]:
    """The funnel: orders placed, and how they end."""
    ends = [Query(_orders_route("/orders", "202"), "placed")]
    if NOTIFICATIONS in topology.services:
        ends += [
            Query(_handled(NOTIFICATIONS, "tell_order_confirmed"), "confirmed"),
            Query(_handled(NOTIFICATIONS, "tell_order_cancelled"), "cancelled"),
        ]
    answers = "|".join(CANCELLING_ANSWERS)
    cancelling = _rate(
        "agora_events_consumed_total",
        f'{{service="{ORDERS}", consumer=~"{answers}", outcome="handled"}}',
        by="consumer",
    )
    pending_objective = topology.services[ORDERS].objectives.pending_seconds
    pending = (
        f"{prometheus.PENDING_AGE}{_selector(service=ORDERS)}"
        if pending_objective is not None
        else "max(time() - agora_orders_oldest_pending_timestamp_seconds)"
    )
    return [
        Panel(
            "Orders placed, confirmed, cancelled",
            "Per second: orders placed (202 from orders); confirmed and cancelled as "
            "notifications tells the customer of each once.",
            tuple(ends),
            "ops",
        ),
        Panel(
            "What cancels checkouts",
            "Per second: the answers from inventory and payments that cancel a checkout, and "
            "the customers' own cancellations. Deadlines that pass are not counted here.",
            (
                Query(cancelling, "{{consumer}}"),
                Query(_orders_route("/orders/{order_id}/cancel", "200"), "customer cancelled"),
            ),
            "ops",
        ),
        Panel(
            "Oldest PENDING order",
            "Age of the oldest order not yet CONFIRMED or CANCELLED; the line pages "
            "(AgoraOrderPendingTooLong).",
            (Query(pending, "oldest pending"),),
            "s",
            threshold=pending_objective,
        ),
    ]


def messaging() -> list[Panel]:
    """Outboxes, consumers, dead letters and breakers of every service."""
    handling = (
        "histogram_quantile(0.99, sum by (service, consumer, le) "
        f"(rate(agora_event_handling_seconds_bucket[{prometheus.WINDOW}])))"
    )
    consumed = "service_consumer_outcome:agora_events_consumed:rate5m"
    return [
        Panel(
            "Outbox backlog",
            "Events recorded and not yet published, per service.",
            (Query("service:agora_outbox_pending:max", "{{service}}"),),
            "short",
        ),
        Panel(
            "Outbox age",
            "How long the oldest unpublished event has waited; the line pages "
            "(AgoraOutboxStuck: the broker unreachable).",
            (Query(prometheus.OUTBOX_AGE, "{{service}}"),),
            "s",
            threshold=prometheus.OUTBOX_STUCK_SECONDS,
        ),
        Panel(
            "Published",
            "Events the broker acknowledged per second (duplicate: it had them already).",
            (Query("service_outcome:agora_outbox_published:rate5m", "{{service}} {{outcome}}"),),
            "ops",
        ),
        Panel(
            "Messages handled",
            "Messages each consumer handled per second. The broker's own lag is not among "
            "these metrics: a consumer falling behind shows as a rate below its publisher's.",
            (Query(f'{consumed}{{outcome="handled"}}', "{{service}} {{consumer}}"),),
            "ops",
        ),
        Panel(
            "Handling time p99",
            "From taking a message to acknowledging it, the handler's transaction included.",
            (Query(handling, "{{service}} {{consumer}}"),),
            "s",
        ),
        Panel(
            "Failed and redelivered",
            "Messages whose handling failed per second (each is delivered again).",
            (Query(f'{consumed}{{outcome="failed"}}', "{{service}} {{consumer}}"),),
            "ops",
        ),
        Panel(
            "Dead letters",
            "Messages sent to the dead letters in the last hour (AgoraDeadLetter).",
            (Query("service_consumer:agora_dead_letters:increase1h", "{{service}} {{consumer}}"),),
            "short",
        ),
        Panel(
            "Breakers open",
            "Replicas of a callee whose circuit breaker is open (AgoraBreakerOpen).",
            (Query(prometheus.BREAKERS, "{{service}} → {{peer}}"),),
            "short",
        ),
    ]
