"""The declared topology: which services exist, their replicas, dependencies and public routes.

One TOML file (``topology.toml`` at the workspace root) is read by the runner, the gateway and
``GET /api``, so none of them can drift from the others.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Iterator
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The gateway's name, where a service's name would stand (its settings, its process, its user).
GATEWAY = "gateway"
TOPOLOGY_FILE = "topology.toml"
TOPOLOGY_ENV = "AGORA_TOPOLOGY"

Auth = Literal["public", "user", "admin"]
Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
_PARAM = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The ports the machine's own servers hold (NATS, PostgreSQL, Redis, MySQL, RabbitMQ, MQTT, and
# the gateway of `agora up`): the one-host rendering of `agora deploy render` keeps away from them.
HELD_PORTS = frozenset({4222, 5432, 6379, 3306, 5672, 1883, 8000})
MAX_REPLICAS = 16


def _port(default: int | None) -> Any:
    return Field(default=default, ge=1024, le=65535)


def env_prefix(name: str) -> str:
    """The settings prefix of a service or of the gateway: ``AGORA_CATALOG_``."""
    return f"AGORA_{name.upper().replace('-', '_')}_"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Route(_Strict):
    """A route of a service that the gateway exposes under the service's public prefix."""

    methods: tuple[Method, ...]
    path: str
    auth: Auth = "public"

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError("a route path starts with '/'")
        return path

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        # A path parameter matches one segment: `/products/{sku}` never matches `/products/a/b`.
        regex = _PARAM.sub(
            r"(?P<\1>[^/]+)", re.escape(self.path).replace(r"\{", "{").replace(r"\}", "}")
        )
        return re.compile(f"^{regex}$")

    def matches(self, method: str, path: str) -> bool:
        return (method in self.methods or (method == "HEAD" and "GET" in self.methods)) and bool(
            self.pattern.match(path)
        )


# A Kubernetes quantity as the topology writes one: `250m` of a CPU, `256Mi` of memory.
_QUANTITY = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<unit>m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_UNITS = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
}


def quantity(text: str) -> Decimal:
    """The value of a quantity (``"250m"`` -> 0.25, ``"1Gi"`` -> 1073741824)."""
    found = _QUANTITY.match(text)
    if found is None:
        raise ValueError(f"{text!r} is not a quantity such as 250m, 1, 256Mi or 1Gi")
    return Decimal(found["number"]) * _UNITS[found["unit"]]


class Resources(_Strict):
    """What one replica asks of a node (requests) and may use at most (limits), in Kubernetes
    quantities. A Python process of the chassis idles at about 100 MiB."""

    cpu: str = "100m"
    memory: str = "192Mi"
    cpu_limit: str = "1"
    memory_limit: str = "512Mi"

    @model_validator(mode="after")
    def _limits_above_requests(self) -> Resources:
        for request, limit in (("cpu", "cpu_limit"), ("memory", "memory_limit")):
            asked, bound = getattr(self, request), getattr(self, limit)
            if quantity(bound) < quantity(asked):
                raise ValueError(f"{limit} {bound} is below the {request} it asks for, {asked}")
        return self


class Objectives(_Strict):
    """What a service promises, which its alerts hold it to (deploy/prometheus/, ADR 34): at most
    this share of its requests answered 5xx, and its 99th percentile at most this long; for
    orders, which exports the time its oldest PENDING order was placed, the longest an order
    may stay PENDING, in whole seconds (unset: no such alert)."""

    error_ratio: float = Field(default=0.01, gt=0, lt=0.5)
    p99_seconds: float = Field(default=0.5, gt=0)
    pending_seconds: int | None = Field(default=None, gt=0)


class _Scaling(_Strict):
    """How far a deployment may scale a process: its replicas' bounds and resources."""

    # Unset, both bounds are the replicas it starts with: no autoscaling.
    min_replicas: int | None = Field(default=None, ge=1, le=MAX_REPLICAS)
    max_replicas: int | None = Field(default=None, ge=1, le=MAX_REPLICAS)
    resources: Resources = Resources()


class Service(_Scaling):
    """A service: what runs it, its store, replicas, dependencies and routes."""

    name: str = ""
    # What it is written in. A Python service names the ``module`` that builds it (its
    # ``create_app`` and ``migrate``); a service in another language names the ``path`` of its
    # package, relative to this file, which keeps the process contract of ADR 38.
    runtime: Literal["python", "node"] = "python"
    module: str = ""
    path: str = ""
    # What it keeps its data in when deployed (Compose, Kubernetes); `agora up` runs every
    # service on SQLite whatever this says. On SQLite the data is one replica's file, so such a
    # service runs, and scales to, one replica only.
    store: Literal["sqlite", "postgres", "redis"] = "postgres"
    # How many `agora up` and Compose run, and a Kubernetes Deployment starts with.
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    depends_on: tuple[str, ...] = ()
    # Where the gateway exposes the routes: ``/api/<name>`` unless said otherwise. A service
    # whose paths already name what they serve (``/orders/{id}``) sets ``prefix = "/api"``.
    prefix: str = ""
    routes: tuple[Route, ...] = ()
    # The first replica's port in the one-host rendering (deploy/compose/compose.host.yaml),
    # the next replicas' the ports after it. Unset: ``[host] services`` plus 16 per service
    # before it in this file. `agora up` picks free ports itself and ignores it.
    host_port: int | None = _port(None)
    objectives: Objectives = Objectives()
    # Variables the processes that run it start with, wherever they run (`agora up`, Compose,
    # Kubernetes): the runtime's own, such as glibc's, Python's or Node's, read once as a process
    # starts. Not its settings: an ``AGORA_`` name is refused, those come from the runner or the
    # env file. A group's process starts with all its members' (ADR 65).
    environment: dict[str, str] = {}

    @field_validator("prefix")
    @classmethod
    def _under_api(cls, prefix: str) -> str:
        under_api = prefix == "/api" or prefix.startswith("/api/")
        if prefix and (not under_api or prefix.endswith("/")):
            raise ValueError("a prefix is /api or a path under it, without a trailing '/'")
        return prefix

    @field_validator("environment")
    @classmethod
    def _runtime_variables(cls, environment: dict[str, str]) -> dict[str, str]:
        for variable, value in environment.items():
            if not _VARIABLE.match(variable):
                raise ValueError(f"{variable!r} is not the name of an environment variable")
            if variable.startswith("AGORA_"):
                raise ValueError(
                    f"{variable} is a setting: it belongs in the env file (or is the runner's "
                    "to give), not in the topology's environment"
                )
            if "$" in value:
                # Compose would read it as one of its own variables, Kubernetes as a secret's.
                raise ValueError(f"{variable}'s value may not hold a '$'")
        return environment

    @model_validator(mode="after")
    def _says_what_runs_it(self) -> Service:
        if self.runtime == "python" and (not self.module or self.path):
            raise ValueError("a Python service names its module (and no path)")
        if self.runtime != "python" and (not self.path or self.module):
            raise ValueError(f"a {self.runtime} service names the path of its package (no module)")
        return self

    @model_validator(mode="after")
    def _scales_within_bounds(self) -> Service:
        low, high = self.scaling
        if self.replicas < low:
            raise ValueError(f"replicas = {self.replicas} is below min_replicas = {low}")
        if self.replicas > high:
            raise ValueError(f"replicas = {self.replicas} is above max_replicas = {high}")
        if self.store == "sqlite" and high > 1:
            raise ValueError(
                "it keeps its data in SQLite, a file of one replica's, so it may not run or "
                f"scale past one replica (replicas = {self.replicas}, max_replicas = {high}): "
                'give it store = "postgres" first'
            )
        return self

    @property
    def scaling(self) -> tuple[int, int]:
        """The fewest and the most replicas a deployment may run."""
        low = self.min_replicas or self.replicas
        return low, self.max_replicas or max(self.replicas, low)

    @property
    def public_prefix(self) -> str:
        return self.prefix or f"/api/{self.name}"

    def route_for(self, method: str, path: str) -> Route | None:
        return next((r for r in self.routes if r.matches(method, path)), None)

    def allows_path(self, path: str) -> bool:
        """Whether any route has this path, whatever its method (to tell 404 from 405)."""
        return any(r.pattern.match(path) for r in self.routes)


class Gateway(_Scaling):
    """The edge. `agora up` and Compose run it once; a Kubernetes deployment may run more, its
    rate limits and ended sessions being shared in Redis."""

    module: str = "gateway.bootstrap"
    port: int = Field(default=8000, ge=1, le=65535)

    @model_validator(mode="after")
    def _bounds_in_order(self) -> Gateway:
        low, high = self.scaling
        if low > high:
            raise ValueError(f"min_replicas = {low} is above max_replicas = {high}")
        return self

    @property
    def scaling(self) -> tuple[int, int]:
        """The fewest and the most replicas a deployment may run."""
        low = self.min_replicas or 1
        return low, self.max_replicas or low


class HostPorts(_Strict):
    """The ports of the one-host rendering, where every process shares the machine's network:
    away from the ones its own servers hold (:data:`HELD_PORTS`)."""

    gateway: int = _port(18000)
    postgres: int = _port(15432)
    nats: int = _port(14222)
    nats_monitor: int = _port(18222)
    redis: int = _port(16379)
    # Where the services' ports start: 16 for each service, one for each replica it may have.
    services: int = _port(18100)


# What `agora up --together` calls the one process it runs every Python service in.
TOGETHER = "together"


class Topology(_Strict):
    gateway: Gateway = Gateway()
    services: dict[str, Service]
    host: HostPorts = HostPorts()
    # Processes that each run several services (co-location, ADR 53): a group's name and its
    # members, Python services or the gateway. Inside one, a call between members goes to the
    # callee's app without a socket; each member keeps its own database, settings, consumers,
    # outbox and port. A member runs one replica there; `agora up --scale` adds replicas of it
    # as processes of their own.
    groups: dict[str, tuple[str, ...]] = {}

    @model_validator(mode="before")
    @classmethod
    def _name_services(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("services"), dict):
            data = dict(data)
            data["services"] = {
                name: {**spec, "name": name} if isinstance(spec, dict) else spec
                for name, spec in data["services"].items()
            }
        return data

    @model_validator(mode="after")
    def _check(self) -> Topology:
        for name, service in self.services.items():
            if not _NAME.match(name):
                raise ValueError(f"service name {name!r} must be lower-case letters, digits, '-'")
            unknown = set(service.depends_on) - set(self.services)
            if unknown:
                raise ValueError(f"{name} depends on unknown services {sorted(unknown)}")
        self.start_order()  # raises on a dependency cycle
        self._check_host_ports()
        self._check_groups()
        return self

    def _check_groups(self) -> None:
        grouped: dict[str, str] = {}
        for group, members in self.groups.items():
            if not _NAME.match(group) or group in self.services or group == GATEWAY:
                raise ValueError(
                    f"group name {group!r} must be lower-case letters, digits, '-', and not "
                    "the name of a service or of the gateway"
                )
            if len(set(members)) < 2:
                raise ValueError(f"group {group} names {len(set(members))} member: it needs two")
            for member in members:
                service = self.services.get(member)
                if member != GATEWAY and service is None:
                    raise ValueError(f"group {group} names an unknown service {member!r}")
                if service is not None and service.runtime != "python":
                    raise ValueError(
                        f"group {group} names {member}, a {service.runtime} service: a group is "
                        "one Python process"
                    )
                if member in grouped:
                    raise ValueError(f"{member} is in two groups, {grouped[member]} and {group}")
                grouped[member] = group
            try:
                self.environment_of(members)
            except ValueError as disagreement:
                raise ValueError(f"group {group}: {disagreement}") from None

    def environment_of(self, members: Iterable[str]) -> dict[str, str]:
        """The variables a process running ``members`` starts with: each one's ``environment``
        (the gateway has none). They are the process's, so two members that disagree on one
        cannot share a process."""
        environment: dict[str, str] = {}
        given_by: dict[str, str] = {}
        for member in members:
            service = self.services.get(member)
            if service is None:  # the gateway
                continue
            for variable, value in service.environment.items():
                if variable in environment and environment[variable] != value:
                    raise ValueError(
                        f"{given_by[variable]} and {member} start their process with different "
                        f"values of {variable}"
                    )
                environment[variable] = value
                given_by.setdefault(variable, member)
        return environment

    def group_of(self, name: str) -> str | None:
        """The group whose process runs ``name`` (a service or the gateway), if any."""
        return next((g for g, members in self.groups.items() if name in members), None)

    def together(self) -> Topology:
        """This topology with one group, ``together``, of every Python service and the gateway
        (what ``agora up --together`` runs), in place of the groups it names."""
        members = (*(s.name for s in self if s.runtime == "python"), GATEWAY)
        together = self.model_copy(update={"groups": {TOGETHER: members}})
        together._check_groups()  # a copy is not validated: its members' variables may clash
        return together

    def host_ports(self) -> dict[str, list[int]]:
        """Each service's replicas' ports in the one-host rendering."""
        return {
            service.name: [self._first_host_port(i, service) + r for r in range(service.replicas)]
            for i, service in enumerate(self.services.values())
        }

    def _first_host_port(self, index: int, service: Service) -> int:
        if service.host_port is not None:
            return service.host_port
        return self.host.services + MAX_REPLICAS * index

    def _check_host_ports(self) -> None:
        owners: dict[int, str] = {}
        # The services' base is where their ports start, not a port of its own.
        named = [
            (name, [port]) for name, port in self.host.model_dump(exclude={"services"}).items()
        ]
        for owner, ports in [*named, *self.host_ports().items()]:
            for port in ports:
                if port in HELD_PORTS:
                    raise ValueError(
                        f"host port {port} of {owner} is one the machine's own servers hold "
                        f"({', '.join(map(str, sorted(HELD_PORTS)))}): choose another"
                    )
                if port > 65535:
                    raise ValueError(f"host port {port} of {owner} is above 65535")
                if port in owners:
                    raise ValueError(f"host port {port} is both {owners[port]}'s and {owner}'s")
                owners[port] = owner

    def __iter__(self) -> Iterator[Service]:  # type: ignore[override]  # its services, not pydantic fields
        return iter(self.services.values())

    def start_order(self) -> list[Service]:
        """Services ordered so that each comes after what it depends on."""
        ordered: list[Service] = []
        seen: set[str] = set()
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in seen:
                return
            if name in visiting:
                raise ValueError(f"dependency cycle through {name}")
            visiting.add(name)
            for dependency in self.services[name].depends_on:
                visit(dependency)
            visiting.discard(name)
            seen.add(name)
            ordered.append(self.services[name])

        for name in self.services:
            visit(name)
        return ordered

    def with_replicas(self, scale: dict[str, int]) -> Topology:
        unknown = set(scale) - set(self.services)
        if unknown:
            raise ValueError(f"cannot scale unknown services {sorted(unknown)}")
        services = {
            name: s.model_copy(update={"replicas": scale.get(name, s.replicas)})
            for name, s in self.services.items()
        }
        return self.model_copy(update={"services": services})


def find_topology_file(start: Path | None = None) -> Path:
    """Where the topology is: ``$AGORA_TOPOLOGY``, else the nearest ``topology.toml`` above the
    working directory, else the one of the workspace this package was installed from."""
    if env := os.environ.get(TOPOLOGY_ENV):
        return Path(env)
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / TOPOLOGY_FILE).is_file():
            return directory / TOPOLOGY_FILE
    for directory in Path(__file__).resolve().parents:
        if (directory / TOPOLOGY_FILE).is_file():
            return directory / TOPOLOGY_FILE
    raise FileNotFoundError(
        f"no {TOPOLOGY_FILE} found: set {TOPOLOGY_ENV} or run from inside the Agora workspace"
    )


def load_topology(path: Path | None = None) -> Topology:
    path = path or find_topology_file()
    with path.open("rb") as file:
        return Topology.model_validate(tomllib.load(file))
