"""Running ``agora up`` from a test, as a user would: a subprocess in a directory of its own.

Used by the runner's tests and by the system tests (tests/system)::

    with RunningSystem(tmp_path) as system:
        system.wait_healthy(count=4)  # the broker, two services, the gateway
        httpx.get(f"{system.gateway_url}/api")
        nats.connect(system.state()["nats_url"], **system.nats_login())  # as the operator

Leaving the ``with`` block kills ``agora up`` if it is still running; its children go with it
(the kernel kills them when the runner dies).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from agora.messaging.credentials import NatsCredentials
from agora.secrets import read_secret
from agora_tools.runner import Layout
from agora_tools.testing import found_within, free_port

T = TypeVar("T")

# The `agora` console script of the environment the tests run in.
AGORA = str(Path(sys.executable).with_name("agora"))


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 120.0) -> T:
    """Poll ``probe`` until it returns something other than None; fail naming ``what``. At a
    whole system's pace: :func:`agora_tools.testing.found_within`, asking every 0.2 s."""
    return found_within(probe, f"gave up waiting for {what}", within=timeout, every=0.2)


def process_gone(pid: int) -> bool:
    """Whether the process has exited (a zombie, waiting to be collected, has exited too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return not stat.parent.exists()


def terminate(process: subprocess.Popen[Any], grace: float = 10.0) -> int:
    """SIGTERM to ``process``, and SIGKILL if it has not ended ``grace`` seconds later; its exit
    status."""
    process.terminate()
    try:
        return process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


# Where a shopper of a load run, a benchmark or a system test has an order sent.
ADDRESS = {
    "name": "Ada Lovelace",
    "line1": "12 St James's Square",
    "city": "London",
    "postal_code": "SW1Y 4JH",
    "country": "GB",
}

# The card they pay with: payments' simulated processor approves it.
APPROVED = "4242 4242 4242 4242"
# The admin account of a shop started for a benchmark, a load run or a system test. The
# password passes the production profile's checks too (none of the email's name part in it).
ADMIN_EMAIL = "admin@shop.example"
ADMIN_PASSWORD = "tide-pool lantern orchard 42"  # noqa: S105 (a throwaway shop's)

# The shapes `agora up` may run the shop in (ADR 53), as its extra arguments: a process per
# service, or every Python service and the gateway in one. The system tests run in both.
SHAPES: dict[str, tuple[str, ...]] = {"apart": (), "together": ("--together",)}


# The gateway's per-address limits, lifted for a shop whose every shopper registers, logs in and
# shops from this one machine's address (a load run, a benchmark, the system tests).
LIMITS_LIFTED = {
    "AGORA_GATEWAY_RATE_LIMIT": "100000",
    "AGORA_GATEWAY_RATE_BURST": "100000",
    "AGORA_GATEWAY_LOGIN_RATE_LIMIT": "100000",
    "AGORA_GATEWAY_REGISTER_RATE_LIMIT": "100000",
}


def shop_settings(admin_email: str, admin_password: str, **extra: str) -> dict[str, str]:
    """The settings of a shop started for traffic from this machine: its admin's account, the
    gateway's limits lifted (:data:`LIMITS_LIFTED`), and ``extra``."""
    return {
        "AGORA_ADMIN_EMAIL": admin_email,
        "AGORA_ADMIN_PASSWORD": admin_password,
        **LIMITS_LIFTED,
        **extra,
    }


class RunningSystem:
    """``agora up --port <free port> *args`` in ``directory``; its output goes to ``up.out``.

    ``agora`` is the command to run: another environment's (a scratch copy of the repository's)
    rather than this one's."""

    def __init__(
        self,
        directory: Path,
        *args: str,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        agora: str = AGORA,
    ) -> None:
        self.directory = directory
        self.command = agora
        self.args: Sequence[str] = args
        self.env = dict(os.environ if env is None else env)
        self.port = port or free_port()
        self.gateway_url = f"http://127.0.0.1:{self.port}"
        self.output = directory / "up.out"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RunningSystem:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.output.open("w") as out:
            self.process = subprocess.Popen(  # noqa: S603 (our own command, no shell)
                [self.command, "up", "--port", str(self.port), *self.args],
                cwd=self.directory,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def __enter__(self) -> RunningSystem:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.kill()

    def agora(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run another ``agora`` command in the system's directory."""
        return subprocess.run(  # noqa: S603 (our own command, no shell)
            [self.command, *args],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def printed(self) -> str:
        """What ``agora up`` has printed so far."""
        return self.output.read_text(errors="replace")

    def status(self) -> list[dict[str, Any]]:
        """``agora status --json``."""
        result = self.agora("status", "--json")
        if result.returncode != 0:
            raise AssertionError(f"agora status failed: {result.stderr}\n{self.printed()}")
        processes: list[dict[str, Any]] = json.loads(result.stdout)
        return processes

    def state(self) -> dict[str, Any]:
        """``.agora/state.json`` of the running system (where each process is, ``nats_url``)."""
        state: dict[str, Any] = json.loads((self.directory / ".agora" / "state.json").read_text())
        return state

    def nats_login(self, user: str = "operator") -> dict[str, Any]:
        """``nats.connect`` keyword arguments logging in to the embedded broker as ``user`` (the
        operator by default: it may do everything), from the passwords ``agora up`` made."""
        password = read_secret(Layout.of(self.directory).nats_password_file(user))
        if password is None:
            raise AssertionError(f"agora up made no broker password for {user!r}")
        return NatsCredentials(user, password).connect_options()

    def process_of(self, service: str, replica: int = 0) -> dict[str, Any]:
        return next(p for p in self.status() if p["service"] == service and p["replica"] == replica)

    def wait_healthy(self, count: int, timeout: float = 180.0) -> list[dict[str, Any]]:
        """Wait until ``agora up`` says it is up and ``count`` processes answer /readyz."""

        def healthy() -> list[dict[str, Any]] | None:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"agora up exited early:\n{self.printed()}")
            if f"Gateway: {self.gateway_url}" not in self.printed():
                return None
            processes = self.status()
            ok = len(processes) == count and all(p["healthy"] for p in processes)
            return processes if ok else None

        return wait_for(f"{count} healthy processes", healthy, timeout)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as a service manager would send; the exit code of ``agora up``."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
