"""``agora up``: every service of the topology as its own process, and the gateway.

The runner picks free ports, migrates each service once (every Python service's in one process,
before any of them serves; no replica migrates again as it starts), then starts every replica and
the gateway at once, in no order, and waits until each answers on ``/readyz`` (ADR 50): a service
does not need another to be up to start, and answers 503 for what needs one that is away until it
is back. ``depends_on`` in the topology says who calls whom (the credentials below, the deployment
files), not who starts first. Before any service starts, a NATS server with JetStream is running
(see :mod:`agora_tools.embedded_nats`) and every service's stream exists. The supervisor keeps
the children running (restarting the ones that die, with backoff, the broker on its same port and
data) and streams their output, prefixed and coloured, copying it to
``.agora/logs/<service>-<replica>.log``; on Ctrl-C or SIGTERM it stops them all, the broker last.
``.agora/state.json`` says what runs where, for ``agora status`` and ``agora reset``.

The operator's token, which opens every process's ``/internal/*`` and the gateway's ``/metrics``,
is made on the first run in ``.agora/secrets/operator.token``, and so is each service's own
credential, in ``.agora/secrets/services/<name>.token`` (ADR 24). Every process is told where the
operator's token is (``AGORA_OPERATOR_TOKEN_FILE``), where its own credential is
(``AGORA_SERVICE_TOKEN_FILE``), and the digests of the services that may call it on nobody's
behalf (``AGORA_SERVICE_CALLERS``): its dependants and the gateway.

The embedded broker takes only its users (ADR 25): one per service, whose permissions come from
the contracts, ``gateway`` for the console, and ``operator`` for the runner, ``agora events`` and
tests. Their passwords are made on the first run, in ``.agora/secrets/nats/<user>``; each process
is given its user and the file holding its password (``AGORA_NATS_USER``,
``AGORA_NATS_PASSWORD_FILE``).

With ``--prometheus``, a Prometheus server (Debian's ``prometheus`` binary) scrapes every replica
and the gateway once they are up, with the topology's rules (:mod:`agora_tools.scrape`), its data
under ``.agora/prometheus/``; the gateway's console links to it (``AGORA_GATEWAY_PROMETHEUS_URL``).

With ``--trace-statements``, every process makes each database statement and Redis command a span
(``AGORA_TRACE_STATEMENTS=true``, ADR 41); without it, the variable passes on as the runner's
environment has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

import aiohttp
import nats.errors
import structlog
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agora.messaging.broker import BrokerUnavailable
from agora.messaging.credentials import NatsCredentials, without_credentials
from agora.messaging.permissions import (
    Permissions,
    console_permissions,
    declared_traffic,
    service_permissions,
    users_config,
)
from agora.process import MEMBER_ENV
from agora.secrets import OPERATOR_TOKEN_FILE, private_dir, read_secret, secret_file, token_digest
from agora.topology import GATEWAY, Service, Topology, env_prefix
from agora_tools import runtimes, scrape
from agora_tools.embedded_nats import (
    NATS,
    EmbeddedNats,
    NatsServerMissing,
    NatsSync,
    embedded_nats,
    ensure_streams,
    jetstream_answers,
    url_port,
)
from agora_tools.ports import (
    LOOPBACK,
    NoFreePort,
    gateway_port,
    pick_ports,
    port_is_free,
    scan_start,
    service_port_window,
)
from agora_tools.supervisor import Member, Output, Process, Supervisor, describe_exit

# The broker user of the runner, `agora events` and tests: it may do everything.
OPERATOR = "operator"
# Ctrl-C, a service manager's stop, and the terminal closing all stop the system in order.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
MAX_REPLICAS = 16
# Colours per service, in topology order; the gateway and the runner have their own.
PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta")
GATEWAY_COLOUR = "bright_white"
NATS_COLOUR = "bright_blue"
PROMETHEUS_COLOUR = "bright_red"
RUNNER_COLOUR = "white"
# The label and log name (.agora/logs/services-migrate.log) of the Python services' migrations.
SERVICES = "services"
# What answers 200 once a process is ready, when not /readyz.
READY_PATHS = {scrape.PROMETHEUS: "/-/ready"}


class StartupError(RuntimeError):
    """The system could not be started; the message says which process and where its log is."""


# -- what is where ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where ``agora up`` keeps a system's files: ``.agora/`` in the directory it runs from."""

    root: Path

    @classmethod
    def of(cls, directory: Path) -> Layout:
        return cls(directory.resolve() / ".agora")

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def nats(self) -> Path:
        """The embedded broker's JetStream store."""
        return self.root / "nats"

    @property
    def nats_config(self) -> Path:
        return self.root / "nats.conf"

    @property
    def prometheus(self) -> Path:
        """The Prometheus server's configuration, rules and data (``agora up --prometheus``)."""
        return self.root / "prometheus"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def nats_password_file(self, user: str) -> Path:
        """The embedded broker's password of ``user``, readable by its owner only."""
        return self.root / "secrets" / "nats" / user

    @property
    def operator_token_file(self) -> Path:
        """The operator's token (agora.auth), readable by its owner only."""
        return self.root / "secrets" / OPERATOR_TOKEN_FILE

    def service_token_file(self, name: str) -> Path:
        """The own credential's secret of service ``name`` (or the gateway)."""
        return self.root / "secrets" / "services" / f"{name}.token"

    def log_file(self, service: str, replica: int | str) -> Path:
        return self.logs / f"{service}-{replica}.log"

    @property
    def held(self) -> Path:
        """Markers of processes stopped by ``agora stop``: not restarted while one exists."""
        return self.root / "held"

    def held_file(self, service: str, replica: int | str) -> Path:
        return self.held / f"{service}-{replica}"


def stop_grace() -> float:
    """How long a process may take to stop before it is killed: a little more than the bound
    each process keeps its own stop to (``AGORA_STOP_TIMEOUT``, ADR 30), so that the process, not
    the runner, decides how its stop ends."""
    # Here, when the system stops: pydantic-settings would cost the runner about 2 MB for as
    # long as the system runs, for this one figure.
    from agora.settings import ServiceSettings

    return ServiceSettings().stop_timeout + 5.0


class ProcessState(BaseModel):
    service: str
    replica: int
    pid: int | None
    port: int
    url: str
    log: str
    # The group whose process serves it (ADR 53): its pid is the group's, shared.
    group: str | None = None


class RunState(BaseModel):
    """The contents of ``.agora/state.json`` while a system runs."""

    runner_pid: int
    started_at: float
    gateway_url: str | None = None
    # The broker every service was given (embedded or AGORA_NATS_URL); None until it is known.
    nats_url: str | None = None
    prometheus_url: str | None = None
    processes: list[ProcessState] = []

    @classmethod
    def read(cls, layout: Layout) -> RunState | None:
        try:
            return cls.model_validate_json(layout.state_file.read_bytes())
        except FileNotFoundError:
            return None

    def write(self, layout: Layout) -> None:
        # Written aside and renamed, so that a reader never sees half a file.
        partial = layout.state_file.with_suffix(".json.partial")
        partial.write_text(self.model_dump_json(indent=2))
        partial.replace(layout.state_file)


def pid_alive(pid: int) -> bool:
    """Whether a process of ours with this pid exists (another user's does not count)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class RunnerLock:
    """An exclusive lock on ``.agora/runner.lock``, held by ``agora up`` for as long as it runs.

    The kernel lets go of it when the runner dies, however it dies; so, unlike a pid written in a
    file, it is never left behind, nor mistaken for another process that was given the same pid.
    """

    def __init__(self, layout: Layout) -> None:
        self.path = layout.root / "runner.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> bool:
        """Take the lock; False when another runner holds it."""
        # .agora/ holds every service's data, logs and secrets: its owner's alone.
        private_dir(self.path.parent)
        file = self.path.open("a")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return False
        self._file = file
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def held(self) -> bool:
        """Whether a runner holds the lock now."""
        try:
            file = self.path.open("r")
        except FileNotFoundError:
            return False
        with file:
            try:
                fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False


def running_state(layout: Layout) -> RunState | None:
    """The state of the system running in this layout, or None when none runs there."""
    state = RunState.read(layout)
    if state is None or not RunnerLock(layout).held():
        return None
    return state


def operator_credentials(layout: Layout) -> NatsCredentials | None:
    """The operator's login to the embedded broker of the system in ``layout``; None when
    ``agora up`` made none there (it used a broker of its own, or never ran)."""
    password = read_secret(layout.nats_password_file(OPERATOR))
    return NatsCredentials(OPERATOR, password) if password is not None else None


def broker_users(services: Iterable[str]) -> dict[str, Permissions | None]:
    """Every user of the embedded broker and its permissions (None: all, the operator's)."""
    traffic = declared_traffic()
    users: dict[str, Permissions | None] = {
        service: service_permissions(service, traffic.get(service)) for service in services
    }
    users[GATEWAY] = console_permissions(GATEWAY)
    users[OPERATOR] = None
    return users


def service_callers(topology: Topology) -> dict[str, list[str]]:
    """Who may call each service on nobody's behalf: the services that depend on it, and the
    gateway."""
    return {
        service.name: [
            GATEWAY,
            *(other.name for other in topology if service.name in other.depends_on),
        ]
        for service in topology
    }


def parse_scale(values: Iterable[str], services: Collection[str]) -> dict[str, int]:
    """``["catalog=2"]`` -> ``{"catalog": 2}``; a clear ValueError for anything else."""
    scale: dict[str, int] = {}
    for value in values:
        name, equals, count = value.partition("=")
        name = name.strip()
        if not equals or not name:
            raise ValueError(f"{value!r}: expected SERVICE=N, such as catalog=2")
        if name == GATEWAY:
            raise ValueError("the gateway runs once; only services can be scaled")
        if name not in services:
            known = ", ".join(sorted(services))
            raise ValueError(f"{value!r}: there is no service {name!r} (services: {known})")
        try:
            replicas = int(count)
        except ValueError:
            raise ValueError(f"{value!r}: {count!r} is not a whole number") from None
        if not 1 <= replicas <= MAX_REPLICAS:
            raise ValueError(f"{value!r}: replicas must be from 1 to {MAX_REPLICAS}")
        scale[name] = replicas
    return scale


# -- agora up ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpOptions:
    directory: Path
    topology_path: Path
    topology: Topology
    port: int | None = None
    host: str = LOOPBACK
    scale: Mapping[str, int] = field(default_factory=dict)
    ready_timeout: float = 60.0
    python: str = sys.executable
    # A NATS server to use instead of starting one ("" starts the embedded one).
    nats_url: str = ""
    nats_sync: NatsSync = NatsSync.DEFAULT
    # How the runner logs in to the broker of ``nats_url`` (AGORA_NATS_USER's); the embedded
    # one's operator otherwise.
    nats_login: NatsCredentials | None = None
    # Run a Prometheus server scraping every process, evaluating the rules every
    # ``prometheus_interval`` seconds; ``prometheus_alert_for`` shortens each alert's `for:`.
    prometheus: bool = False
    prometheus_interval: float = scrape.INTERVAL
    prometheus_alert_for: float | None = None
    # Every process makes each statement and Redis command a span (ADR 41).
    trace_statements: bool = False


def child_argv(python: str, *args: str) -> list[str]:
    """A child's command: the chassis's own entry point, the one a container runs."""
    return [python, "-m", "agora.process", *args]


class Runner:
    """One ``agora up``: plans ports, starts the system in order, keeps it up, stops it."""

    def __init__(self, options: UpOptions, console: Console) -> None:
        self.options = options
        self.layout = Layout.of(options.directory)
        self.topology = options.topology.with_replicas(dict(options.scale))
        self.output = Output(console)
        self.console = console
        self.supervisor = Supervisor(
            self.output,
            on_start=lambda _: self._save_state(),
            held=self._held,
        )
        self.state = RunState(runner_pid=os.getpid(), started_at=time.time())
        # The operator's login to the embedded broker; None with a broker of one's own.
        self.operator: NatsCredentials | None = None
        # The runner's own login: the operator's, or the one given for a broker of one's own.
        self.login = options.nats_login

    def _held(self, process: Process) -> bool:
        """Whether `agora stop` holds the process: it, or a service its group serves."""
        names = [(process.service, process.replica), *((m.service, 0) for m in process.members)]
        return any(self.layout.held_file(name, replica).exists() for name, replica in names)

    async def run(self) -> int:
        """Run the system until SIGINT or SIGTERM. 0 when stopped so, 1 when it could not start."""
        lock = RunnerLock(self.layout)
        if not lock.acquire():
            other = RunState.read(self.layout)
            pid = f" (runner pid {other.runner_pid})" if other is not None else ""
            self.output.say(
                f"Agora is already running in {self.options.directory}{pid}; see `agora status`",
                "bold red",
            )
            return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, stop.set)
        private_dir(self.layout.data)
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        # What an earlier run's `agora stop` held does not hold this one.
        shutil.rmtree(self.layout.held, ignore_errors=True)
        _quiet_library_logs()
        self._save_state()
        startup = asyncio.create_task(self._start_all())
        stopped = asyncio.create_task(stop.wait())
        code = 0
        try:
            await asyncio.wait({startup, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if startup.done():
                startup.result()
                await stopped
            self.output.say("stopping every process", "bold")
        except (StartupError, NoFreePort) as error:
            self.output.say(str(error), "bold red")
            code = 1
        finally:
            for task in (startup, stopped):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, StartupError, NoFreePort):
                    await task
            await self.supervisor.stop(grace=stop_grace())
            with contextlib.suppress(FileNotFoundError):
                self.layout.state_file.unlink()
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)
            lock.release()
        self.output.say("stopped" if code == 0 else "stopped after a failed start", "bold")
        return code

    # The plan: which process listens where.

    def _plan(self) -> tuple[int, dict[str, list[int]], int | None]:
        """The gateway's port, each service's replicas' ports, the embedded broker's port."""
        options = self.options
        default = self.topology.gateway.port
        gateway = gateway_port(
            options.port, default=default, is_free=lambda p: port_is_free(p, options.host)
        )
        if options.port is None and gateway != default:
            self.output.say(
                f"port {default} is taken; the gateway listens on port {gateway} instead",
                "bold yellow",
            )
        window = service_port_window()
        services = self.topology.start_order()
        embedded = not options.nats_url
        # The broker's port comes from the services' window too: below the ephemeral range, so
        # that no outgoing connection takes it while the broker restarts.
        ports = pick_ports(
            sum(s.replicas for s in services) + embedded,
            start=scan_start(str(self.layout.root), window),
            window=window,
            avoid={gateway},
        )
        nats_port = ports.pop(0) if embedded else None
        plan: dict[str, list[int]] = {}
        for service in services:
            plan[service.name], ports = ports[: service.replicas], ports[service.replicas :]
        return gateway, plan, nats_port

    def _base_env(self, plan: Mapping[str, list[int]], nats_url: str) -> dict[str, str]:
        urls = {
            name: [f"http://{LOOPBACK}:{port}" for port in ports] for name, ports in plan.items()
        }
        return {
            **os.environ,
            "AGORA_DATA_DIR": str(self.layout.data),
            "AGORA_TOPOLOGY": str(self.options.topology_path.resolve()),
            "AGORA_SERVICE_URLS": json.dumps(urls),
            "AGORA_NATS_URL": nats_url,
            # Children's lines reach the runner as they are written, not when a buffer fills.
            "PYTHONUNBUFFERED": "1",
            **({"AGORA_TRACE_STATEMENTS": "true"} if self.options.trace_statements else {}),
        }

    def _command(self, name: str, action: str, *options: str) -> list[str]:
        """How to run ``action`` of the service ``name`` (the gateway is a Python process)."""
        service = self.topology.services.get(name)
        if service is None:
            return child_argv(self.options.python, action, name, *options)
        topology_dir = self.options.topology_path.resolve().parent
        return runtimes.command(service, topology_dir, self.options.python, action, *options)

    def _process(
        self, name: str, replica: int, port: int, host: str, colour: str, env: Mapping[str, str]
    ) -> Process:
        argv = self._command(name, "serve", "--port", str(port), "--replica", str(replica))
        return Process(
            service=name,
            replica=replica,
            argv=argv,
            env={
                **env,
                **self.topology.environment_of([name]),
                **self._own(name),
                **self._address(name, port, host),
                "AGORA_REPLICA": str(replica),
            },
            log_path=self.layout.log_file(name, replica),
            colour=colour,
            port=port,
            url=self._member(name, port, host).url,
        )

    def _group_process(
        self, group: str, ports: Mapping[str, int], colour: str, env: Mapping[str, str]
    ) -> Process:
        """The one process of ``group``: each member listens on its port (the gateway on the
        host asked for), and gets what a process of its own would have been given."""
        members, own, addresses = [], {}, {}
        for name, port in ports.items():
            host = self.options.host if name == GATEWAY else LOOPBACK
            members.append(self._member(name, port, host))
            addresses.update(self._address(name, port, host))
            own[name] = self._own(name)
        return Process(
            service=group,
            replica=0,
            argv=child_argv(self.options.python, "serve", *ports),
            env={
                **env,
                **self.topology.environment_of(ports),
                **addresses,
                "AGORA_REPLICA": "0",
                MEMBER_ENV: json.dumps(own),
            },
            log_path=self.layout.log_file(group, 0),
            colour=colour,
            port=members[0].port,
            url=members[0].url,
            members=tuple(members),
        )

    def _own(self, name: str) -> dict[str, str]:
        """What only the process of ``name`` is given: its broker login and credentials."""
        return {**self._broker_login(name), **self._service_login(name)}

    @staticmethod
    def _address(name: str, port: int, host: str) -> dict[str, str]:
        """Where ``name`` listens, as its settings read it."""
        prefix = env_prefix(name)
        return {f"{prefix}PORT": str(port), f"{prefix}HOST": host}

    @staticmethod
    def _member(name: str, port: int, host: str) -> Member:
        return Member(name, port, f"http://{_reachable_host(host)}:{port}")

    def _broker_login(self, name: str) -> dict[str, str]:
        """The embedded broker's user of the process ``name``, and where its password is."""
        if self.operator is None:
            # A broker of one's own: the processes log in as the environment says.
            return {}
        return {
            "AGORA_NATS_USER": name,
            # Not a password the runner's own environment may hold for another broker.
            "AGORA_NATS_PASSWORD": "",
            "AGORA_NATS_PASSWORD_FILE": str(self.layout.nats_password_file(name)),
        }

    def _service_login(self, name: str) -> dict[str, str]:
        """Where the process ``name`` finds the operator's token and its own credential, and
        the digests of the services that may call it; made on the first run."""
        secrets = {
            caller: secret_file(self.layout.service_token_file(caller))
            for caller in service_callers(self.topology).get(name, [])
        }
        return {
            "AGORA_OPERATOR_TOKEN_FILE": str(self.layout.operator_token_file),
            "AGORA_SERVICE_TOKEN_FILE": str(self.layout.service_token_file(name)),
            # Not a credential the runner's own environment may hold for another system.
            "AGORA_SERVICE_TOKEN": "",
            "AGORA_SERVICE_CALLERS": json.dumps(
                {caller: token_digest(secret) for caller, secret in secrets.items()}
            ),
        }

    def _make_secrets(self) -> None:
        """The operator's token and every process's own credential, made once and kept."""
        secret_file(self.layout.operator_token_file)
        for name in [*self.topology.services, GATEWAY]:
            secret_file(self.layout.service_token_file(name))

    # Starting.

    async def _start_all(self) -> None:
        self._make_secrets()
        gateway, plan, nats_port = self._plan()
        metrics = self._prometheus_plan(avoid={gateway, *(p for ps in plan.values() for p in ps)})
        nats = self._nats_plan(nats_port)
        nats_url = nats.url if nats is not None else self.options.nats_url
        self.state.nats_url = nats_url
        env = self._base_env(plan, nats_url)
        # The runner has migrated every database before any replica serves: no replica migrates
        # again as it starts, nor imports Alembic to find there is nothing to do (ADR 50).
        serving = {**env, "AGORA_MIGRATE_ON_START": "false"}
        services = self.topology.start_order()
        colours = {s.name: PALETTE[i % len(PALETTE)] for i, s in enumerate(self.topology)}
        groups = self.topology.groups
        # A group's process serves the first replica of each member; the others are their own.
        first = {m: 1 for members in groups.values() for m in members}
        # A group's process has its members' modules loaded anyway: it migrates them before they
        # serve, in a child it forks (ADR 53, 64), and their other replicas migrate as they
        # start, under the migration lock, rather than wait for a process of migrations.
        grouped = {**env, "AGORA_MIGRATE_ON_START": "true"}
        python = [s.name for s in services if s.runtime == "python" and s.name not in first]
        self.output.make_room(
            [
                f"{NATS}[0]",
                *(f"{group}[0]" for group in groups),
                *(
                    f"{s.name}[{i}]"
                    for s in services
                    for i in range(first.get(s.name, 0), s.replicas)
                ),
                *(f"{s.name}[build]" for s in services if s.runtime != "python"),
                *(f"{s.name}[migrate]" for s in services if s.runtime != "python"),
                *([f"{SERVICES}[migrate]"] if python else []),
                *([f"{GATEWAY}[0]"] if GATEWAY not in first else []),
                *([f"{scrape.PROMETHEUS}[0]"] if metrics is not None else []),
            ]
        )
        async with aiohttp.ClientSession() as session:
            broker_ready = asyncio.Event()

            async def bring_up_broker() -> None:
                if nats is None:
                    await self._use_external_broker(nats_url)
                else:
                    await self._start_embedded_broker(nats)
                broker_ready.set()

            # Every Python service's migrations in one process, in turn: a process's start
            # (the interpreter, SQLAlchemy, Alembic, the services' modules) costs more than
            # the migrations themselves, and there are only so many cores to pay it with.
            python_migrated = asyncio.create_task(self._migrate_python(python, env))

            async def bring_up(service: Service) -> None:
                colour = colours[service.name]
                own = first.get(service.name, 0)
                if service.runtime != "python":
                    await self._build(service, colour, env)
                    await self._migrate(service.name, colour, env)
                elif not own:  # a group's members migrate as they start
                    await asyncio.shield(python_migrated)
                # A service finds its stream made and the broker there when it connects. It
                # waits for no other service (ADR 50): what it needs of one that is not up yet
                # it asks for when a request needs it, and answers 503 until it gets it.
                await broker_ready.wait()
                await self._serve(
                    session,
                    service.name,
                    plan[service.name][own:],
                    colour,
                    grouped if own else serving,
                    first=own,
                )

            # The console links to the Prometheus server, which starts once its targets are up.
            linked = {f"{env_prefix(GATEWAY)}PROMETHEUS_URL": metrics.url} if metrics else {}

            async def bring_up_gateway() -> Process:
                await broker_ready.wait()
                process = self._process(
                    GATEWAY, 0, gateway, self.options.host, GATEWAY_COLOUR, {**serving, **linked}
                )
                await self.supervisor.start(process)
                await self._wait_http_ready(session, process)
                return process

            async def bring_up_group(name: str, members: Sequence[str]) -> Process:
                await broker_ready.wait()
                ports = {m: gateway if m == GATEWAY else plan[m][0] for m in members}
                process = self._group_process(
                    name, ports, colours.get(members[0], GATEWAY_COLOUR), {**grouped, **linked}
                )
                await self.supervisor.start(process)
                await self._wait_http_ready(session, process)
                return process

            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(bring_up_broker())
                    for service in services:
                        group.create_task(bring_up(service))
                    edge = {
                        name: group.create_task(bring_up_group(name, members))
                        for name, members in groups.items()
                    }
                    gateway_group = self.topology.group_of(GATEWAY)
                    gateway_up = (
                        edge[gateway_group]
                        if gateway_group is not None
                        else group.create_task(bring_up_gateway())
                    )
            except* StartupError as failed:
                # The first failure is the one to show; the others were cancelled because of it.
                raise _first(failed) from None
            finally:
                python_migrated.cancel()
                with contextlib.suppress(asyncio.CancelledError, StartupError):
                    await python_migrated
            gateway_url = _url_of(gateway_up.result(), GATEWAY)
            self.state.gateway_url = gateway_url
            if metrics is not None:
                await self._start_prometheus(session, metrics)
        self._save_state()
        self._print_ready(gateway_url)

    async def _serve(
        self,
        session: aiohttp.ClientSession,
        name: str,
        ports: Sequence[int],
        colour: str,
        env: Mapping[str, str],
        first: int = 0,
    ) -> None:
        """Start the replicas of ``name`` from ``first`` on, one on each of ``ports``, and wait
        until each answers on ``/readyz``."""
        replicas = [
            self._process(name, i, port, LOOPBACK, colour, env)
            for i, port in enumerate(ports, start=first)
        ]
        for process in replicas:
            await self.supervisor.start(process)
        await asyncio.gather(*(self._wait_http_ready(session, p) for p in replicas))

    # Prometheus.

    def _prometheus_plan(self, avoid: Collection[int]) -> scrape.Server | None:
        """Where the Prometheus server will listen (9090 when free); None when not asked for, or
        when it is not installed (said, and the system starts without it)."""
        if not self.options.prometheus:
            return None
        binary = shutil.which(scrape.PROMETHEUS)
        if binary is None:
            self.output.say(
                "--prometheus: Prometheus is not installed (Debian's `prometheus` package: "
                "sudo apt-get install prometheus); starting the system without it",
                "bold yellow",
            )
            return None
        window = (scrape.DEFAULT_PORT, scrape.DEFAULT_PORT + 100)
        (port,) = pick_ports(1, start=scrape.DEFAULT_PORT, window=window, avoid=avoid)
        return scrape.Server(binary, self.layout.prometheus, port)

    async def _start_prometheus(
        self, session: aiohttp.ClientSession, server: scrape.Server
    ) -> None:
        """Scrape every process of the system as ``agora status`` lists it now."""
        server.write(
            self.topology,
            scrape.targets(self.state.processes, self.topology.services),
            token_file=self.layout.operator_token_file,
            interval=self.options.prometheus_interval,
            alert_for=self.options.prometheus_alert_for,
        )
        process = Process(
            service=scrape.PROMETHEUS,
            replica=0,
            argv=server.argv(),
            env=dict(os.environ),
            log_path=self.layout.log_file(scrape.PROMETHEUS, 0),
            colour=PROMETHEUS_COLOUR,
            port=server.port,
            url=server.url,
        )
        await self.supervisor.start(process)
        await self._wait_http_ready(session, process)
        self.state.prometheus_url = server.url

    # The broker.

    def _nats_plan(self, port: int | None) -> EmbeddedNats | None:
        if port is None:
            return None
        permissions = broker_users(self.topology.services)
        passwords = {
            user: secret_file(self.layout.nats_password_file(user)) for user in permissions
        }
        self.operator = self.login = NatsCredentials(OPERATOR, passwords[OPERATOR])
        try:
            return embedded_nats(
                port=port,
                store_dir=self.layout.nats,
                config_path=self.layout.nats_config,
                sync=self.options.nats_sync,
                users=users_config(passwords, permissions),
                python=self.options.python,
            )
        except NatsServerMissing as error:
            raise StartupError(str(error)) from None

    async def _start_embedded_broker(self, nats: EmbeddedNats) -> None:
        process = Process(
            service=NATS,
            replica=0,
            argv=nats.argv(),
            env=dict(os.environ),
            log_path=self.layout.log_file(NATS, 0),
            colour=NATS_COLOUR,
            port=nats.port,
            url=nats.url,
            # Services hand it what they are sending while they stop; it must still be there.
            stop_last=True,
        )
        await self.supervisor.start(process)
        await self._wait_ready(
            process,
            lambda: jetstream_answers(nats.url, credentials=self.login),
            f"accept a JetStream connection on {nats.url}",
        )
        await self._ensure_streams(nats.url)
        store = self.layout.nats.relative_to(self.options.directory.resolve())
        self.output.say(
            f"NATS with JetStream on {nats.url}, data in {store}/ "
            f"(--nats-sync {self.options.nats_sync})",
            "dim",
        )

    async def _use_external_broker(self, url: str) -> None:
        shown = without_credentials(url)
        self.output.say(f"using the NATS server at {shown} (AGORA_NATS_URL); starting none", "dim")
        if self.options.nats_sync is not NatsSync.DEFAULT:
            self.output.say(
                "--nats-sync applies to the embedded server only: configure sync_interval on "
                f"{shown} itself",
                "yellow",
            )
        # A broker that is away does not stop the system (the outboxes keep the events); the
        # services make their streams themselves when they reach it.
        if not await jetstream_answers(url, connect_timeout=5.0, credentials=self.login):
            self.output.say(
                f"the NATS server at {shown} does not answer with JetStream now; the services "
                "will connect when it does",
                "bold yellow",
            )
            return
        try:
            await self._ensure_streams(url)
        except StartupError as error:
            self.output.say(f"{error}; the services will try again", "bold yellow")

    async def _ensure_streams(self, url: str) -> None:
        where = without_credentials(url)
        try:
            async with asyncio.timeout(self.options.ready_timeout):
                await ensure_streams(url, self.topology.services, self.login)
        except TimeoutError:
            raise StartupError(
                f"the streams could not be made on {where} within {self.options.ready_timeout:g} s"
            ) from None
        except (nats.errors.Error, BrokerUnavailable) as error:
            raise StartupError(f"the streams could not be made on {where}: {error}") from None

    async def _build(self, service: Service, colour: str, env: Mapping[str, str]) -> None:
        """Bring a non-Python service's package up to date (nothing to do for Python)."""
        topology_dir = self.options.topology_path.resolve().parent
        async with runtimes.building(service, topology_dir):
            try:
                steps = runtimes.build_steps(service, topology_dir)
            except runtimes.MissingTool as missing:
                raise StartupError(f"{service.name} cannot be built: {missing}") from None
            for argv in steps:
                await self._run_step(
                    service.name, "build", argv, colour, env, f"the build of {service.name}"
                )

    async def _migrate(self, name: str, colour: str, env: Mapping[str, str]) -> None:
        argv = self._command(name, "migrate")
        await self._run_step(name, "migrate", argv, colour, env, f"the migrations of {name}")

    async def _migrate_python(self, names: Sequence[str], env: Mapping[str, str]) -> None:
        """Migrate the Python services ``names`` in one process (its log names the one that
        failed, if one did)."""
        if names:
            argv = child_argv(self.options.python, "migrate", *names)
            what = "the migrations of the Python services"
            await self._run_step(SERVICES, "migrate", argv, RUNNER_COLOUR, env, what)

    async def _run_step(
        self,
        name: str,
        step: str,
        argv: list[str],
        colour: str,
        env: Mapping[str, str],
        what: str,
    ) -> None:
        """Run one step of ``name``'s start (its build, its migrations) to its end."""
        log_path = self.layout.log_file(name, step)
        process = Process(
            service=name, replica=step, argv=argv, env=env, log_path=log_path, colour=colour
        )
        returncode = await self.supervisor.run_once(process)
        if returncode != 0:
            raise StartupError(f"{what} failed ({describe_exit(returncode)}); see {log_path}")

    async def _wait_http_ready(self, session: aiohttp.ClientSession, process: Process) -> None:
        """Wait until the process answers 200 on its readiness path (a group's: each member's)."""
        path = READY_PATHS.get(process.service, "/readyz")
        for base in [m.url for m in process.members] or [_url_of(process, process.service)]:
            url = f"{base}{path}"

            async def probe(url: str = url) -> bool:
                return await _answers_200(session, url)

            await self._wait_ready(process, probe, f"answer 200 on {url}")

    async def _wait_ready(
        self, process: Process, probe: Callable[[], Awaitable[bool]], what: str
    ) -> None:
        deadline = time.monotonic() + self.options.ready_timeout
        while True:
            if process.failure is not None:
                raise StartupError(
                    f"{process.label} stopped before it was ready ({process.failure}); "
                    f"see {process.log_path}"
                )
            if await probe():
                process.ready = True
                if process.failure is None:
                    return
            elif time.monotonic() > deadline:
                raise StartupError(
                    f"{process.label} did not {what} within "
                    f"{self.options.ready_timeout:g} s; see {process.log_path}"
                )
            await asyncio.sleep(0.1)

    def _in_topology_order(self) -> list[Process]:
        order = [NATS, *self.topology.services, GATEWAY, scrape.PROMETHEUS]
        rank = {name: i for i, name in enumerate(order)}

        def place(p: Process) -> tuple[int, int]:
            # A group's process stands where its first member would.
            name = p.members[0].service if p.members else p.service
            return rank[name], _replica_number(p)

        return sorted(self.supervisor.processes, key=place)

    def _rows(self) -> list[ProcessState]:
        """What each service's replica runs as: a process of its own, or its group's."""
        rows: list[ProcessState] = []
        for p in self._in_topology_order():
            if not isinstance(p.replica, int) or p.port is None or p.url is None:
                continue
            # A group's process is a row for each member: the first replica of each.
            members = p.members or (Member(p.service, p.port, p.url),)
            group, replica = (p.service, 0) if p.members else (None, p.replica)
            rows.extend(
                ProcessState(
                    **m._asdict(), replica=replica, pid=p.pid, log=str(p.log_path), group=group
                )
                for m in members
            )
        return rows

    def _save_state(self) -> None:
        self.state.processes = self._rows()
        if self.options.nats_url:
            # Not ours to run, but the system depends on it: `agora status` shows it all the same.
            external = ProcessState(
                service=NATS,
                replica=0,
                pid=None,
                port=url_port(self.options.nats_url),
                url=self.options.nats_url,
                log="",
            )
            self.state.processes.insert(0, external)
        self.state.write(self.layout)

    def _print_ready(self, gateway_url: str) -> None:
        table = Table(title="Agora is up", title_justify="left")
        for column in ("service", "replica", "pid", "url"):
            table.add_column(column)
        colours = {p.service: p.colour for p in self.supervisor.processes}
        for row in self._rows():
            name = row.service if row.group is None else f"{row.service} ({row.group})"
            style = colours.get(row.group or row.service, "")
            table.add_row(Text(name, style=style), str(row.replica), str(row.pid), row.url)
        self.console.print(table)
        logs = self.layout.logs.relative_to(self.options.directory.resolve())
        self.output.say(f"Logs: {logs}/<service>-<replica>.log", "dim")
        if self.state.nats_url:
            self.output.say(f"Broker: {without_credentials(self.state.nats_url)}", "dim")
        if self.state.prometheus_url:
            self.output.say(f"Prometheus: {self.state.prometheus_url}", "bold")
        self.output.say(f"Gateway: {gateway_url}", "bold green")
        self.output.say("Ctrl-C stops every process", "dim")


def _quiet_library_logs() -> None:
    """Keep the runner's console to the runner's own sentences: the broker client it uses to make
    the streams would log its connections through structlog's default printer."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


def _url_of(process: Process, service: str) -> str:
    """Where ``service`` answers in ``process`` (its own, or its group's)."""
    url = next((m.url for m in process.members if m.service == service), process.url)
    assert url is not None
    return url


def _replica_number(process: Process) -> int:
    return process.replica if isinstance(process.replica, int) else -1


def _first(group: BaseExceptionGroup[StartupError]) -> StartupError:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert isinstance(error, StartupError)
    return error


def _reachable_host(host: str) -> str:
    # A server listening on every interface is reached on the loopback one.
    return LOOPBACK if host in {"0.0.0.0", "::", ""} else host


async def _answers_200(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


# -- agora status ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    service: str
    replica: int
    pid: int | None
    port: int
    healthy: bool
    # The group whose process serves it (ADR 53), None for a process of its own.
    group: str | None = None

    def as_json(self) -> dict[str, object]:
        return asdict(self)


async def check_health(
    state: RunState, nats_credentials: NatsCredentials | None = None
) -> list[Health]:
    """Each process of a running system: is it alive, and does its /readyz answer 200 (the
    broker: does it take a JetStream connection, as ``nats_credentials``' user)?"""
    async with aiohttp.ClientSession() as session:

        async def check(process: ProcessState) -> Health:
            if process.service == NATS:
                # No pid: a broker the system was given rather than one it runs.
                alive = process.pid is None or pid_alive(process.pid)
                healthy = alive and await jetstream_answers(
                    process.url, credentials=nats_credentials
                )
            else:
                alive = process.pid is not None and pid_alive(process.pid)
                ready = READY_PATHS.get(process.service, "/readyz")
                healthy = alive and await _answers_200(session, f"{process.url}{ready}")
            return Health(
                process.service, process.replica, process.pid, process.port, healthy, process.group
            )

        return list(await asyncio.gather(*(check(p) for p in state.processes)))
