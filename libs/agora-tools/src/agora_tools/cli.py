"""The ``agora`` command: start the whole system, one service, its migrations; see and reset it.

``agora up`` runs every service of the topology and the gateway (see :mod:`agora_tools.runner`);
``agora serve`` and ``agora migrate`` are what ``agora up`` runs for each child: the chassis's
:mod:`agora.process`, which a container runs as ``agora-service`` without this local tooling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from nats.errors import Error as NatsError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agora import process as service_process
from agora.messaging.broker import BrokerUnavailable
from agora.messaging.credentials import MissingPassword, NatsCredentials
from agora.secrets import OWNER_ONLY_FILE
from agora.topology import Topology
from agora_tools import scrape
from agora_tools.embedded_nats import NatsSync
from agora_tools.ports import LOOPBACK, NoFreePort
from agora_tools.runner import (
    Layout,
    ProcessState,
    Runner,
    RunnerLock,
    RunState,
    UpOptions,
    broker_users,
    check_health,
    operator_credentials,
    parse_scale,
    pid_alive,
    running_state,
)

if TYPE_CHECKING:
    from agora.messaging.deadletters import DeadLetter, Replayed

# What a command needs and the others do not is imported in that command: `agora --help`,
# `agora status` and the rest start without the server, the database layer or the contracts.

app = typer.Typer(
    name="agora",
    help="Run Agora: every service and the gateway on this machine, or one of them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    errors.print(Text(message, style="bold red"))
    return typer.Exit(code)


def _topology(path: Path | None = None) -> tuple[Path, Topology]:
    try:
        return service_process.topology_at(path)
    except service_process.ProcessError as error:
        raise _fail(str(error), error.code) from None


Name = Annotated[str, typer.Argument(help="A service of the topology, or `gateway`.")]


@app.command()
def serve(
    name: Name,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    replica: Annotated[int | None, typer.Option(help="Which replica this process is.")] = None,
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on (default 127.0.0.1; the gateway may open more)."),
    ] = None,
) -> None:
    """Run one service (or the gateway) in this process, as `agora-service serve` does."""
    try:
        started = service_process.serve(name, port=port, replica=replica, host=host)
    except service_process.ProcessError as error:
        raise _fail(str(error), error.code) from None
    if not started:
        raise typer.Exit(1)


@app.command()
def migrate(names: Annotated[list[str], typer.Argument(help="Services of the topology.")]) -> None:
    """Bring a service's database up to date (or several services', in turn), as
    `agora-service migrate` does."""
    try:
        service_process.migrate(*names)
    except service_process.ProcessError as error:
        raise _fail(str(error), error.code) from None


@app.command()
def up(
    port: Annotated[
        int | None,
        typer.Option("--port", "-p", help="The gateway's port (default 8000 when free)."),
    ] = None,
    host: Annotated[
        str, typer.Option(help="The gateway's address; services always stay on 127.0.0.1.")
    ] = LOOPBACK,
    scale: Annotated[
        list[str] | None,
        typer.Option(help="SERVICE=N: run N replicas of a service (repeatable)."),
    ] = None,
    topology_file: Annotated[
        Path | None, typer.Option("--topology", help="The topology file (default: found).")
    ] = None,
    ready_timeout: Annotated[
        float, typer.Option(help="Seconds each process has to answer /readyz.")
    ] = 60.0,
    nats_url: Annotated[
        str,
        typer.Option(
            "--nats-url",
            envvar="AGORA_NATS_URL",
            help="Use this NATS server (JetStream on) and start none.",
        ),
    ] = "",
    nats_sync: Annotated[
        NatsSync,
        typer.Option(
            "--nats-sync",
            envvar="AGORA_NATS_SYNC",
            help="The embedded broker's fsync: 'default' acknowledges before the disk write "
            "(a killed process loses nothing, a power loss may lose the last two minutes); "
            "'always' fsyncs before acknowledging (slower, survives power loss).",
        ),
    ] = NatsSync.DEFAULT,
    prometheus: Annotated[
        bool,
        typer.Option(
            "--prometheus",
            help="Also run Prometheus (Debian's prometheus package) scraping every process, "
            "with the topology's rules and alerts; the console links to it.",
        ),
    ] = False,
    prometheus_interval: Annotated[
        float,
        typer.Option(help="Seconds between Prometheus's scrapes and rule evaluations.", min=0.1),
    ] = scrape.INTERVAL,
    prometheus_alert_for: Annotated[
        float | None,
        # For tests: an alert that fires after seconds rather than minutes.
        typer.Option(hidden=True, min=0),
    ] = None,
    trace_statements: Annotated[
        bool,
        typer.Option(
            "--trace-statements",
            help="Make every database statement and Redis command a span in the console's "
            "traces (AGORA_TRACE_STATEMENTS=true for every process; costs about 10 % of a "
            "read's CPU).",
        ),
    ] = False,
    together: Annotated[
        bool,
        typer.Option(
            "--together",
            help="Run every Python service and the gateway in one process: calls between them "
            "stay in it, events still go through the broker (the topology's groups set aside).",
        ),
    ] = False,
) -> None:
    """Start a NATS server, every service and the gateway, and keep them running until Ctrl-C
    or SIGTERM.

    Data and logs live under .agora/ in the working directory (the broker's under .agora/nats/,
    Prometheus's under .agora/prometheus/).
    """
    path, topology = _topology(topology_file)
    try:
        replicas = parse_scale(scale or [], topology.services)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--scale") from None
    if together:  # every Python service and the gateway in one process (ADR 53)
        try:
            topology = topology.together()
        except ValueError as error:  # its services cannot share one process
            raise typer.BadParameter(str(error), param_hint="--together") from None
    options = UpOptions(
        directory=Path.cwd(),
        topology_path=path,
        topology=topology,
        port=port,
        host=host,
        scale=replicas,
        ready_timeout=ready_timeout,
        nats_url=nats_url.strip(),
        nats_sync=nats_sync,
        nats_login=_login_from_env() if nats_url.strip() else None,
        prometheus=prometheus,
        prometheus_interval=prometheus_interval,
        prometheus_alert_for=prometheus_alert_for,
        trace_statements=trace_statements,
    )
    try:
        code = asyncio.run(Runner(options, console).run())
    except NoFreePort as error:
        raise _fail(str(error)) from None
    raise typer.Exit(code)


def _not_running(layout: Layout) -> typer.Exit:
    stale = RunState.read(layout)
    where = layout.root.parent
    if stale is not None:
        return _fail(
            f"No Agora system is running in {where}: the last one (pid {stale.runner_pid}) "
            "did not stop cleanly. Start it again with `agora up`."
        )
    return _fail(f"No Agora system is running in {where}. Start one with `agora up`.")


@app.command()
def status(
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print [{service, replica, pid, port, healthy, group}]."),
    ] = False,
) -> None:
    """Show each process of the system running in this directory, its port and its health."""
    layout = Layout.of(Path.cwd())
    state = running_state(layout)
    if state is None:
        raise _not_running(layout)
    health = asyncio.run(check_health(state, operator_credentials(layout) or _login_from_env()))
    if as_json:
        sys.stdout.write(json.dumps([h.as_json() for h in health]) + "\n")
        return
    table = Table(title=f"Agora in {layout.root.parent}", title_justify="left")
    for column in ("service", "replica", "pid", "port", "healthy"):
        table.add_column(column)
    for h in health:
        table.add_row(
            h.service if h.group is None else f"{h.service} ({h.group})",
            str(h.replica),
            str(h.pid),
            str(h.port),
            Text("yes", style="green") if h.healthy else Text("no", style="bold red"),
        )
    console.print(table)
    if state.prometheus_url:
        console.print(f"Prometheus: {state.prometheus_url}")
    if state.gateway_url:
        console.print(f"Gateway: {state.gateway_url}")


def _processes_named(state: RunState, name: str, replica: int | None) -> list[ProcessState]:
    chosen = [
        p
        for p in state.processes
        if p.service == name and (replica is None or p.replica == replica)
    ]
    if not chosen:
        known = sorted({p.service for p in state.processes})
        which = name if replica is None else f"{name}[{replica}]"
        raise _fail(f"No process {which} runs here; the processes are: {', '.join(known)}.")
    return chosen


Replica = Annotated[
    int | None, typer.Option("--replica", help="Only this replica (default: every one).")
]


@app.command()
def stop(
    name: Annotated[str, typer.Argument(help="A service, `gateway` or `nats`.")],
    replica: Replica = None,
    kill: Annotated[
        bool, typer.Option("--kill", help="SIGKILL, as a crash would, instead of SIGTERM.")
    ] = False,
) -> None:
    """Stop one process of the running system and keep it stopped until `agora start`.

    The others go on serving: what they send meanwhile waits in their outboxes, and the
    broker keeps what is sent to it.
    """
    layout = Layout.of(Path.cwd())
    state = running_state(layout)
    if state is None:
        raise _not_running(layout)
    chosen = _processes_named(state, name, replica)
    if any(process.pid is None for process in chosen):
        raise _fail(f"{name} is not run by `agora up` here (an external server).")
    layout.held.mkdir(parents=True, exist_ok=True)
    for process in chosen:
        layout.held_file(process.service, process.replica).touch()
    for process in chosen:
        assert process.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
    for process in chosen:
        assert process.pid is not None
        deadline = time.monotonic() + 30
        while pid_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        console.print(f"Stopped {process.service}[{process.replica}] (pid {process.pid}).")


@app.command()
def start(
    name: Annotated[str, typer.Argument(help="A service, `gateway` or `nats`.")],
    replica: Replica = None,
) -> None:
    """Start again what `agora stop` stopped; waits until it answers."""
    layout = Layout.of(Path.cwd())
    state = running_state(layout)
    if state is None:
        raise _not_running(layout)
    chosen = _processes_named(state, name, replica)
    for process in chosen:
        layout.held_file(process.service, process.replica).unlink(missing_ok=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        current = running_state(layout)
        health = (
            asyncio.run(check_health(current, operator_credentials(layout) or _login_from_env()))
            if current is not None
            else []
        )
        wanted = {(p.service, p.replica) for p in chosen}
        if all(h.healthy for h in health if (h.service, h.replica) in wanted):
            console.print(f"Started {name}: {len(wanted)} process(es) answering.")
            return
        time.sleep(0.2)
    raise _fail(f"{name} did not answer within 60 s; see `agora status` and its log.")


@app.command()
def reset() -> None:
    """Delete .agora/ (data and logs) in this directory; refused while the system runs."""
    layout = Layout.of(Path.cwd())
    if RunnerLock(layout).held():
        state = RunState.read(layout)
        pid = state.runner_pid if state is not None else "<pid>"
        raise _fail(
            f"Agora is running in {layout.root.parent} (pid {pid}): stop it first "
            f"(Ctrl-C where it runs, or kill -TERM {pid}), then reset."
        )
    if not layout.root.exists():
        console.print(f"Nothing to delete: {layout.root} does not exist.")
        return
    shutil.rmtree(layout.root)
    console.print(f"Deleted {layout.root} (data and logs).")


events = typer.Typer(
    name="events",
    help="See the events consumers gave up on (dead letters), and send them again.",
    no_args_is_help=True,
)
app.add_typer(events)

NatsUrl = Annotated[
    str | None,
    typer.Option(
        "--nats-url",
        help="The broker (default: the running system's in .agora/, else $AGORA_NATS_URL).",
    ),
]


def _nats_url(given: str | None) -> tuple[str, NatsCredentials | None]:
    """The broker to talk to, and as whom: --nats-url, else the system running here (as its
    operator), else $AGORA_NATS_URL; logged in as AGORA_NATS_USER says unless the operator."""
    if given:
        return given, _login_from_env()
    layout = Layout.of(Path.cwd())
    state = running_state(layout)
    if state is not None and state.nats_url:
        return state.nats_url, operator_credentials(layout) or _login_from_env()
    from_env = os.environ.get("AGORA_NATS_URL", "")
    if from_env:
        return from_env, _login_from_env()
    raise _fail(
        f"No broker to ask: no Agora system with a broker is running in {layout.root.parent}, "
        "and neither --nats-url nor AGORA_NATS_URL is set."
    )


def _login_from_env() -> NatsCredentials | None:
    # Here, not at the top: `agora up` runs in this process for as long as the system does, and
    # never needs the settings (pydantic-settings, about 2 MB of it).
    from agora.settings import ServiceSettings

    try:
        return ServiceSettings().nats_credentials
    except MissingPassword as error:
        raise _fail(str(error)) from None


@events.command("dead")
def events_dead(
    nats_url: NatsUrl = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print [{id, service, consumer, handler, error, delivered, time, "
            "original_subject}].",
        ),
    ] = False,
) -> None:
    """List the dead letters: events a consumer could not apply after its last delivery."""
    from agora.messaging.deadletters import connection, dead_letters

    url, login = _nats_url(nats_url)

    async def read() -> list[DeadLetter]:
        async with connection(url, credentials=login) as js:
            return await dead_letters(js)

    try:
        letters = asyncio.run(read())
    except BrokerUnavailable as error:
        raise _fail(str(error)) from None
    except (NatsError, TimeoutError) as error:
        raise _fail(f"the broker at {url} did not answer as expected: {error}") from None
    if as_json:
        sys.stdout.write(json.dumps([letter.as_json() for letter in letters]) + "\n")
        return
    if not letters:
        console.print("No dead letters.")
        return
    table = Table(title=f"Dead letters at {url}", title_justify="left")
    for column in ("id", "service", "consumer", "handler", "delivered", "time", "error"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        table.add_row(
            letter.id,
            letter.service,
            letter.consumer,
            letter.handler,
            str(letter.delivered),
            letter.time.isoformat(timespec="seconds") if letter.time else "",
            letter.error,
        )
    console.print(table)
    console.print("Send one again with `agora events replay ID`.")


@events.command("replay")
def events_replay(
    event_id: Annotated[str, typer.Argument(metavar="ID", help="The id `events dead` shows.")],
    nats_url: NatsUrl = None,
) -> None:
    """Send a dead letter back to its subject; consumers that applied it already skip it."""
    from agora.messaging.deadletters import ReplayFailed, UnknownDeadLetter, connection, replay

    url, login = _nats_url(nats_url)

    async def send() -> Replayed:
        async with connection(url, credentials=login) as js:
            return await replay(js, event_id)

    try:
        replayed = asyncio.run(send())
    except (BrokerUnavailable, UnknownDeadLetter, ReplayFailed, ValueError) as error:
        raise _fail(str(error)) from None
    except (NatsError, TimeoutError) as error:
        raise _fail(f"the broker at {url} did not answer as expected: {error}") from None
    console.print(
        f"Replayed event {replayed.id} to {replayed.subject} "
        f"(dead-lettered by {', '.join(replayed.consumers)}); removed it from the dead letters."
    )


deploy = typer.Typer(
    name="deploy",
    help="The deployment files, rendered from topology.toml into deploy/ (ADR 29).",
    no_args_is_help=True,
)
app.add_typer(deploy)


@deploy.command("render")
def deploy_render(
    check: Annotated[
        bool,
        typer.Option("--check", help="Write nothing; exit 1 naming the files that are stale."),
    ] = False,
) -> None:
    """Write deploy/compose/ (Compose files, broker and database set-up, example env file) from
    the topology; a second run changes nothing."""
    # Imported here: the other commands need neither YAML nor the contracts' traffic.
    from agora_tools.deploy import DEPLOY_DIR, installed_versions, render, stale_files, write_files

    path, topology = _topology()
    target = path.parent / DEPLOY_DIR
    rendered = render(topology, broker_users(topology.services), installed_versions(topology))
    if check:
        stale = stale_files(target, rendered)
        if stale:
            listed = "\n".join(f"  {DEPLOY_DIR}/{file}" for file in stale)
            raise _fail(f"stale, run `agora deploy render`:\n{listed}")
        console.print(f"{DEPLOY_DIR}/ is up to date with {path.name}.")
        return
    written = write_files(target, rendered)
    for file in written:
        console.print(f"wrote {DEPLOY_DIR}/{file}")
    if not written:
        console.print(f"{DEPLOY_DIR}/ was already up to date with {path.name}.")


@deploy.command("secrets")
def deploy_secrets(
    output: Annotated[
        Path | None,
        typer.Option(help="Where to write (default: deploy/compose/.env beside topology.toml)."),
    ] = None,
) -> None:
    """Write an env file with a fresh secret for every variable the Compose files read, readable
    by its owner alone. An existing file is never replaced: its secrets are a running system's."""
    from agora_tools.deploy import COMPOSE_DIR, DEPLOY_DIR, ENV_FILE, env_file

    path, topology = _topology()
    target = output or path.parent / DEPLOY_DIR / COMPOSE_DIR / ENV_FILE
    text = env_file(topology, broker_users(topology.services))
    try:
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY_FILE)
    except FileExistsError:
        raise _fail(
            f"{target} exists and holds a system's secrets: it is left as it is (remove it "
            "first to start a new system)."
        ) from None
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    console.print(f"wrote {target} (mode 600); set AGORA_ADMIN_EMAIL in it to your own address.")


@app.command()
def new(
    name: Annotated[str, typer.Argument(help="The new service: a lowercase identifier.")],
) -> None:
    """Write a new service in the shape every service has (docs/service-shape.md), add it to
    the topology and the workspace, and render the files derived from them again."""
    from agora_tools.scaffold import ScaffoldError, new_service

    path, _ = _topology()
    try:
        new_service(path.parent, name, report=console.print)
    except ScaffoldError as error:
        raise _fail(str(error), error.code) from None
    console.print(f"wrote services/{name}: `agora up` runs it; its tests are in make test.")


def _add_plugin_commands() -> None:
    """Commands other installed packages add (entry points ``agora.commands``), such as
    ``agora verify``: they may know what the chassis must not (the services' business)."""
    for entry in metadata.entry_points(group="agora.commands"):
        if entry.name not in {command.name for command in app.registered_commands}:
            app.command(name=entry.name)(entry.load())


def main() -> None:
    _add_plugin_commands()
    app()


if __name__ == "__main__":
    main()
