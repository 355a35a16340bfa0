"""One process of a service: ``agora-service serve NAME`` or ``agora-service migrate NAME...``.

This is what a container runs as its entry point, and what ``agora up`` runs for each child: a
service, or the gateway, of the topology in this process, or the migrations of one service or of
several in turn (``agora up`` migrates every Python service in one process, ADR 50). It is the
chassis's runtime alone: no local tooling, so a service's image needs nothing more.

A process pays for what its command uses only: the server is imported to serve, Alembic to
migrate (:mod:`agora.app` imports it only when the app migrates as it starts; a group's process
migrates its members in a child of its own, ADR 64), and a serving process keeps ``rich`` out
(see :func:`_without_rich`). The settings (pydantic-settings) are imported to serve or migrate
only: ``agora up``'s runner reads the topology through this module, and stays beside the
services for as long as they run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from agora.topology import GATEWAY, Topology, env_prefix, find_topology_file, load_topology

if TYPE_CHECKING:
    from agora.server import GracefulServer
    from agora.settings import ServiceSettings

# A group's process (serve with several names): each name's own variables, as JSON.
MEMBER_ENV = "AGORA_MEMBER_ENV"


class ProcessError(Exception):
    """The process cannot start; the message says why, ``code`` is its exit status."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def topology_at(path: Path | None = None) -> tuple[Path, Topology]:
    """The topology file (given, ``AGORA_TOPOLOGY``, or the nearest ``topology.toml``), read."""
    try:
        path = (path or find_topology_file()).resolve()
        return path, load_topology(path)
    except FileNotFoundError as error:
        raise ProcessError(str(error)) from None
    except (ValidationError, ValueError) as error:
        raise ProcessError(f"{path} is not a valid topology:\n{error}") from None


def module_of(topology: Topology, name: str) -> Any:
    """The module that builds ``name``'s app (``create_app``) and migrates it (``migrate``)."""
    if name == GATEWAY:
        module = topology.gateway.module
    elif name in topology.services:
        service = topology.services[name]
        if service.runtime != "python":
            raise ProcessError(
                f"{name} runs on {service.runtime}, from {service.path}: this entry point runs "
                "Python services only"
            )
        module = service.module
    else:
        known = ", ".join([*topology.services, GATEWAY])
        raise ProcessError(f"there is no service {name!r} in the topology (known: {known})")
    return importlib.import_module(module)


def serve(
    name: str, *, port: int | None = None, replica: int | None = None, host: str | None = None
) -> bool:
    """Run ``name`` until it is asked to stop; False when it never started (its port taken)."""
    _, topology = topology_at()
    # The app reads its settings from the environment; the options are set there, so the
    # settings and the socket agree on where the service is.
    prefix = env_prefix(name)
    if port is not None:
        os.environ[f"{prefix}PORT"] = str(port)
    if host is not None:
        os.environ[f"{prefix}HOST"] = host
    if replica is not None:
        os.environ["AGORA_REPLICA"] = str(replica)
    server = _server(name, topology)
    server.run()
    return server.started


def serve_group(names: Sequence[str]) -> bool:
    """Run several services (and perhaps the gateway) in this one process until it is asked to
    stop (co-location, ADR 53); False when one of them never started.

    Each reads its settings from the environment with the variables of its own laid over it:
    ``AGORA_MEMBER_ENV`` maps each name to them (its broker user, its credential, its callers;
    what a process of its own would have been given). Once a member has started, calls to it from
    the others go to its app in this process (:mod:`agora.inprocess`); it still listens on its
    own port for everyone else."""
    from agora.inprocess import serve_in_process
    from agora.server import serve_together

    _, topology = topology_at()
    if len(set(names)) != len(names):
        raise ProcessError(f"a name is given twice: {' '.join(names)}")
    try:
        own: dict[str, dict[str, str]] = json.loads(os.environ.get(MEMBER_ENV, "{}"))
    except ValueError as error:
        raise ProcessError(f"{MEMBER_ENV} is not JSON: {error}") from None
    from agora.settings import ServiceSettings

    members = [name for name in names if name != GATEWAY]
    if members and ServiceSettings().migrate_on_start:
        _migrate_in_child(topology, members, own)
        os.environ["AGORA_MIGRATE_ON_START"] = "false"  # done: no member's app migrates again
    servers: dict[str, GracefulServer] = {}
    for name in names:
        with _overlaid(own.get(name, {})):
            server = _server(name, topology)
        app = server.config.app

        def started(name: str = name, app: Any = app) -> None:
            serve_in_process(name, app)

        server.on_started = started
        servers[name] = server
    return serve_together(servers)


def _migrate_in_child(
    topology: Topology, names: Sequence[str], own: Mapping[str, Mapping[str, str]]
) -> None:
    """Bring each member's database up to date, in turn, in a forked child, before any member's
    app is built (ADR 64).

    The child starts with the members' modules already imported, so it costs no second start;
    Alembic, and what a migration leaves behind, stay in the child and go with it, instead of
    staying in the group's process for as long as it serves (about 10 MB). It is forked while
    this process runs one thread: no app, server or exporter has started one yet."""
    for name in names:
        module_of(topology, name)
    if threading.active_count() != 1:
        raise ProcessError("a thread runs before the group's migrations: they cannot be forked")
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        status = 1
        try:
            for name in names:
                with _overlaid(own.get(name, {})):
                    migrate(name)
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    _, wait_status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    if code != 0:
        raise ProcessError(f"migrating {', '.join(names)} failed (exit status {code})", 1)


def _server(name: str, topology: Topology) -> GracefulServer:
    """The server of ``name``'s app, made with the settings the environment gives it now."""
    from agora.server import GracefulServer, server_config

    application = module_of(topology, name).create_app()
    bind_host, bind_port = _address(application, name, topology)
    settings = _settings(application)
    stop_timeout, stop_drain = settings.stop_timeout, settings.stop_drain
    return GracefulServer(
        server_config(
            application,
            host=bind_host,
            port=bind_port,
            max_header_bytes=settings.max_header_bytes,
            stop_timeout=stop_timeout,
            stop_drain=stop_drain,
        ),
        stop_timeout=stop_timeout,
        drain=stop_drain,
        on_stop=_on_stop(application),
    )


@contextmanager
def _overlaid(variables: Mapping[str, str]) -> Iterator[None]:
    """The environment with ``variables`` laid over it, for the time of the block."""
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def migrate(*names: str) -> None:
    """Bring each named service's database up to date, in turn (the chassis's migration lock
    makes racing safe); the first that fails stops the rest, and is named before its error."""
    from agora.logs import configure_logging

    _, topology = topology_at()
    if GATEWAY in names:
        raise ProcessError("the gateway has no database")
    modules = {name: module_of(topology, name) for name in names}
    for name, module in modules.items():
        configure_logging(name)
        try:
            module.migrate()
        except Exception:
            print(f"agora-service: the migrations of {name} failed", file=sys.stderr)
            raise


def _settings(application: Any) -> ServiceSettings:
    """The app's settings; an app without them (the gateway) gets the shared ones from the
    environment."""
    from agora.settings import ServiceSettings

    resources = getattr(application.state, "resources", None)
    settings = getattr(resources, "settings", None)
    if isinstance(settings, ServiceSettings):
        return settings
    return ServiceSettings()


def _on_stop(application: Any) -> Callable[[], None] | None:
    """What turns the app's readiness false when it is asked to stop."""
    stop = getattr(getattr(application.state, "resources", None), "stop", None)
    return stop if callable(stop) else None


def _address(application: Any, name: str, topology: Topology) -> tuple[str, int]:
    from agora.settings import ServiceSettings

    resources = getattr(application.state, "resources", None)
    settings = getattr(resources, "settings", None)
    if isinstance(settings, ServiceSettings):
        return settings.host, settings.port
    prefix = env_prefix(name)
    default_port = topology.gateway.port if name == GATEWAY else 8080
    return (
        os.environ.get(f"{prefix}HOST", ServiceSettings.model_fields["host"].default),
        int(os.environ.get(f"{prefix}PORT", default_port)),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agora-service", description="Run one Agora service (or the gateway), or migrate it."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser(
        "serve",
        help="serve a service of the topology, or `gateway`; several names serve them together, "
        "in this one process",
    )
    serving.add_argument("name", nargs="+")
    serving.add_argument("--port", type=int, help="port to listen on")
    serving.add_argument("--replica", type=int, help="which replica this process is")
    serving.add_argument("--host", help="address to listen on")
    migrating = commands.add_parser(
        "migrate", help="bring a service's database up to date (or several services', in turn)"
    )
    migrating.add_argument("name", nargs="+")
    return parser


def _without_rich() -> None:
    """Keep ``rich`` out of a serving process. structlog imports it, when it is installed, only
    to draw exceptions on a terminal; a service writes JSON lines (or plain ones), and importing
    rich would cost every process of ``agora up`` time and memory for nothing. Importing a
    module whose ``sys.modules`` entry is None raises ImportError, which structlog takes as rich
    not being installed. A process that already imported it (``agora serve``) keeps it."""
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]  # None is how to hide it


def main(argv: Sequence[str] | None = None) -> None:
    arguments = _parser().parse_args(argv)
    try:
        if arguments.command == "migrate":
            migrate(*arguments.name)
            return
        _without_rich()
        if len(arguments.name) > 1:
            if arguments.port is not None or arguments.host is not None:
                raise ProcessError("--port and --host name one service's address: give one name")
            if arguments.replica is not None:
                os.environ["AGORA_REPLICA"] = str(arguments.replica)
            started = serve_group(arguments.name)
        else:
            started = serve(
                arguments.name[0],
                port=arguments.port,
                replica=arguments.replica,
                host=arguments.host,
            )
    except ProcessError as error:
        print(f"agora-service: {error}", file=sys.stderr)
        raise SystemExit(error.code) from None
    if not started:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
