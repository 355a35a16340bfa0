"""Asking every replica (and the gateway itself) what the console shows, all at once.

One aiohttp session, short timeouts, every replica in parallel: a replica that does not answer
costs one timeout and is shown down, never an error page. What a replica answered last is kept
per replica, so the next scrape turns counters into rates; a scrape is shared by everyone
watching for ``min_interval`` seconds, so ten open consoles do not scrape ten times as often.
Every read carries the operator's token (``agora.auth.operator_token``): the replicas' /internal/*
and the gateway's own /metrics are the operator's (ADR 24).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from agora.auth import operator_token
from agora.topology import Topology
from gateway.console import metrics, servicemap
from gateway.console.metrics import Flow, Scrape, Traffic
from gateway.settings import GatewaySettings

Health = Literal["up", "degraded", "down"]


@dataclass(frozen=True, slots=True)
class Replica:
    """Where one replica of a service (or the gateway) answers."""

    service: str
    replica: int
    url: str


@dataclass(frozen=True, slots=True)
class ReplicaView(Replica):
    """One row of the services table: a replica, with what its scrape said."""

    health: Health
    reason: str | None
    version: str | None
    uptime_seconds: float | None
    traffic: Traffic

    def as_json(self) -> dict[str, Any]:
        p99 = self.traffic.p99_seconds
        return {
            "service": self.service,
            "replica": self.replica,
            "url": self.url,
            "health": self.health,
            "reason": self.reason,
            "version": self.version,
            "uptime_seconds": self.uptime_seconds,
            "request_rate": self.traffic.request_rate,
            "error_rate": self.traffic.error_rate,
            "p99_ms": None if p99 is None else p99 * 1000,
        }


@dataclass(frozen=True, slots=True)
class Overview:
    """Every replica's state and the traffic between services, as of one scrape."""

    taken_at: float  # unix seconds
    replicas: tuple[ReplicaView, ...]
    flows: tuple[Flow, ...]


@dataclass(frozen=True, slots=True)
class Answer:
    """A replica's JSON answer to one question, or why there is none."""

    replica: Replica
    body: Any = None
    error: str | None = None


class Collector:
    def __init__(
        self,
        topology: Topology,
        settings: GatewaySettings,
        *,
        timeout: float | None = None,
        min_interval: float = 0.5,
    ) -> None:
        self.topology = topology
        self.settings = settings
        self.timeout = timeout or settings.health_timeout
        self.min_interval = min_interval
        self._session: aiohttp.ClientSession | None = None
        self._previous: dict[tuple[str, int], Scrape] = {}
        self._latest: Overview | None = None
        self._latest_at = 0.0
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if self._session is None:
            # A plain session, not the service client: the console's reads are not the system's
            # traffic, so they carry no trace context and are not counted as calls on the map.
            token = operator_token(self.settings)
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"Authorization": f"Bearer {token}"} if token else None,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the console's collector has not started")
        return self._session

    def replicas(self, own_url: str) -> list[Replica]:
        """The gateway (this process, at ``own_url``) and every replica the settings name."""
        found = [Replica(servicemap.GATEWAY, self.settings.replica, own_url.rstrip("/"))]
        for service in self.topology:
            urls = self.settings.service_urls.get(service.name) or [""]
            found.extend(
                Replica(service.name, index, url.rstrip("/")) for index, url in enumerate(urls)
            )
        return found

    # --- services and the map -------------------------------------------------------------

    async def overview(self, own_url: str) -> Overview:
        """The latest scrape of every replica, taken now unless one is fresh enough."""
        async with self._lock:
            if self._latest is not None and time.monotonic() - self._latest_at < self.min_interval:
                return self._latest
            targets = self.replicas(own_url)
            scraped = await asyncio.gather(*(self._scrape(target) for target in targets))
            views = tuple(view for view, _ in scraped)
            flows = tuple(servicemap.combine(flow for _, found in scraped for flow in found))
            self._latest = Overview(time.time(), views, flows)
            self._latest_at = time.monotonic()
            return self._latest

    async def _scrape(self, target: Replica) -> tuple[ReplicaView, list[Flow]]:
        key = (target.service, target.replica)
        if not target.url:
            self._previous.pop(key, None)
            return _down(target, "no address known"), []
        (health, reason, ready_body), text = await asyncio.gather(
            self._readiness(target), self._text(target, "/metrics")
        )
        samples: dict[metrics.SeriesKey, float] | None = None
        if text is not None:
            try:
                samples = metrics.parse(text)
            except ValueError:
                samples = None
        if health == "down" and samples is not None:
            health, reason = "degraded", f"{reason}, but /metrics answers"
        # What a replica without metrics shows: its /readyz's version, no age, no traffic.
        version: str | None = _text_field(ready_body, "version")
        started: float | None = None
        traffic, flows = Traffic(None, None, None), []
        if samples is None:
            # Rates after a gap would average over it: start counting afresh when it is back.
            self._previous.pop(key, None)
        else:
            now = Scrape(time.monotonic(), samples)
            previous = self._previous.get(key)
            self._previous[key] = now
            version, started = metrics.info(samples, target.service)
            traffic = metrics.traffic(previous, now, target.service)
            flows = metrics.flows(previous, now, target.service)
        view = ReplicaView(
            target.service,
            target.replica,
            target.url,
            health,
            reason,
            _text_field(ready_body, "version") or version,
            max(0.0, time.time() - started) if started else None,
            traffic,
        )
        return view, flows

    async def _readiness(self, target: Replica) -> tuple[Health, str | None, Any]:
        try:
            async with self.session.get(f"{target.url}/readyz") as reply:
                status = reply.status
                try:
                    body = await reply.json(content_type=None)
                except ValueError:
                    body = None
        except TimeoutError:
            return "down", "timed out", None
        except aiohttp.ClientError:
            return "down", "unreachable", None
        failing = _failing_checks(body)
        if status != 200:
            return "degraded", f"not ready ({failing or f'answered {status}'})", body
        # Ready, with an informational check failing (the broker): serving, but say so.
        if failing:
            return "degraded", f"{failing} failing", body
        return "up", None, body

    async def _text(self, target: Replica, path: str) -> str | None:
        try:
            async with self.session.get(f"{target.url}{path}") as reply:
                if reply.status != 200:
                    return None
                return await reply.text()
        except (TimeoutError, aiohttp.ClientError, UnicodeDecodeError):
            return None

    # --- questions to every replica ---------------------------------------------------------

    async def ask_all(
        self, own_url: str, path: str, params: Mapping[str, str] | None = None
    ) -> list[Answer]:
        """Every replica's JSON answer to ``GET path``, asked at once."""
        targets = [target for target in self.replicas(own_url) if target.url]
        return list(await asyncio.gather(*(self._ask(t, path, params) for t in targets)))

    async def _ask(self, target: Replica, path: str, params: Mapping[str, str] | None) -> Answer:
        try:
            # Spans and logs can be a few hundred kilobytes: a little longer than a probe.
            timeout = aiohttp.ClientTimeout(total=2 * self.timeout)
            async with self.session.get(
                f"{target.url}{path}", params=params, timeout=timeout
            ) as reply:
                if reply.status != 200:
                    return Answer(target, error=f"answered {reply.status}")
                return Answer(target, body=await reply.json(content_type=None))
        except TimeoutError:
            return Answer(target, error="timed out")
        except (aiohttp.ClientError, ValueError):
            return Answer(target, error="unreachable")


def _down(target: Replica, reason: str) -> ReplicaView:
    return ReplicaView(
        target.service,
        target.replica,
        target.url,
        "down",
        reason,
        None,
        None,
        Traffic(None, None, None),
    )


def _text_field(body: Any, name: str) -> str | None:
    value = body.get(name) if isinstance(body, dict) else None
    return value if isinstance(value, str) else None


def _failing_checks(body: Any) -> str:
    """``database, broker``: the checks a /readyz body says are failing."""
    checks = body.get("checks") if isinstance(body, dict) else None
    if not isinstance(checks, dict):
        return ""
    return ", ".join(
        name for name, result in checks.items() if isinstance(result, dict) and not result.get("ok")
    )
