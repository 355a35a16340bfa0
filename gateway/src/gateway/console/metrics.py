"""What the console reads from a replica's Prometheus text: request rate, error share, p99
latency, and the calls and messages between services, each from two scrapes in a row.

A rate is the growth of a counter between the previous scrape and this one, divided by the time
between them; a counter that went down was reset (the replica restarted), so all of its value is
new. The first scrape of a replica has nothing to compare with, and its rates are ``None``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "agora_http_requests_total"
LATENCY_BUCKETS = "agora_http_request_duration_seconds_bucket"
CLIENT_REQUESTS = "agora_client_requests_total"
MESSAGES = "agora_messages_received_total"
INFO = "agora_service_info"
STARTED = "process_start_time_seconds"
_KEPT = frozenset({REQUESTS, LATENCY_BUCKETS, CLIENT_REQUESTS, MESSAGES, INFO, STARTED})

# Requests that are not the system's traffic: probes, scrapes, the console watching it all.
# Counted by the services, left out of the rates here.
_QUIET_ROUTES = frozenset({"/livez", "/readyz", "/metrics"})
_QUIET_PREFIXES = ("/internal/", "/console", "/static/")

Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]
EdgeKind = Literal["http", "message"]


@dataclass(frozen=True, slots=True)
class Scrape:
    """One reading of a replica's metrics: when (monotonic seconds) and every kept series."""

    at: float
    samples: Mapping[SeriesKey, float]


@dataclass(frozen=True, slots=True)
class Traffic:
    """A replica's traffic between two scrapes; ``None`` where there is nothing to compare."""

    request_rate: float | None  # requests per second
    error_rate: float | None  # share of those answered 5xx, 0..1
    p99_seconds: float | None


@dataclass(frozen=True, slots=True)
class Flow:
    """Calls (``http``) or messages from one service to another, as one replica counted them."""

    source: str
    target: str
    kind: EdgeKind
    total: float  # since the counting replica started
    rate: float | None  # per second between the last two scrapes


def parse(text: str) -> dict[SeriesKey, float]:
    """The series the console uses from a Prometheus text exposition (ValueError if broken)."""
    samples: dict[SeriesKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in _KEPT:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _of(samples: Mapping[SeriesKey, float], name: str, service: str) -> dict[Labels, float]:
    """The series named ``name`` that this service counted (several services may share one
    process, and so one exposition)."""
    return {
        labels: value
        for (series, labels), value in samples.items()
        if series == name and dict(labels).get("service", service) == service
    }


def _growth(
    previous: Mapping[Labels, float], current: Mapping[Labels, float]
) -> dict[Labels, float]:
    grown: dict[Labels, float] = {}
    for labels, value in current.items():
        before = previous.get(labels, 0.0)
        grown[labels] = value - before if value >= before else value
    return grown


def _traffic_route(labels: Labels) -> bool:
    route = dict(labels).get("route", "")
    return route not in _QUIET_ROUTES and not route.startswith(_QUIET_PREFIXES)


def traffic(previous: Scrape | None, current: Scrape, service: str) -> Traffic:
    """Request rate, 5xx share and p99 latency of ``service``'s replica between two scrapes."""
    if previous is None or current.at <= previous.at:
        return Traffic(None, None, None)
    elapsed = current.at - previous.at
    requests = _growth(
        _of(previous.samples, REQUESTS, service), _of(current.samples, REQUESTS, service)
    )
    served = {labels: n for labels, n in requests.items() if _traffic_route(labels)}
    total = sum(served.values())
    errors = sum(
        n for labels, n in served.items() if dict(labels).get("status", "").startswith("5")
    )
    buckets = _growth(
        _of(previous.samples, LATENCY_BUCKETS, service),
        _of(current.samples, LATENCY_BUCKETS, service),
    )
    by_bound: dict[float, float] = defaultdict(float)
    for labels, count in buckets.items():
        if _traffic_route(labels):
            by_bound[float(dict(labels).get("le", "+Inf"))] += count
    return Traffic(
        request_rate=total / elapsed,
        error_rate=errors / total if total else None,
        p99_seconds=quantile(0.99, sorted(by_bound.items())),
    )


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a histogram's cumulative ``(upper bound, count)`` buckets, sorted by
    bound, interpolating linearly inside the bucket it falls in (as Prometheus'
    ``histogram_quantile`` does); the largest finite bound when it falls in ``+Inf``."""
    ordered = list(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def flows(previous: Scrape | None, current: Scrape, service: str) -> list[Flow]:
    """The calls this replica made (caller -> peer, counted by the caller) and the messages it
    received (sender -> receiver, counted by the receiver)."""
    elapsed = current.at - previous.at if previous is not None else 0.0
    found: list[Flow] = []
    counted: tuple[tuple[str, EdgeKind], ...] = ((CLIENT_REQUESTS, "http"), (MESSAGES, "message"))
    for name, kind in counted:
        now = _of(current.samples, name, service)
        grown = _growth(_of(previous.samples, name, service), now) if previous else {}
        totals: dict[tuple[str, str], float] = defaultdict(float)
        deltas: dict[tuple[str, str], float] = defaultdict(float)
        for labels, value in now.items():
            tags = dict(labels)
            if kind == "http":
                # A probe client names each replica (`catalog#1`): the edge is to the service.
                pair = (service, tags.get("peer", "?").partition("#")[0])
            else:
                pair = (tags.get("source", "?"), service)
            totals[pair] += value
            deltas[pair] += grown.get(labels, 0.0)
        for (source, target), total in totals.items():
            rate = deltas[(source, target)] / elapsed if elapsed > 0 else None
            found.append(Flow(source, target, kind, total, rate))
    return found


def info(samples: Mapping[SeriesKey, float], service: str) -> tuple[str | None, float | None]:
    """The version ``agora_service_info`` names, and when the process started (unix seconds)."""
    version = next((dict(labels).get("version") for labels in _of(samples, INFO, service)), None)
    started = next(iter(_of(samples, STARTED, service).values()), None)
    return version, started
