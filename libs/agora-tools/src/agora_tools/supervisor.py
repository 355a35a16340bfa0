"""Keeping child processes running: start them, stream their output, restart them with backoff
when they die, and stop them all.

A :class:`Supervisor` holds :class:`Process` entries. Each child runs in its own process group and
is killed by the kernel if the supervising process dies, so none outlives it. Its output goes to
the console behind a coloured ``service[replica]`` prefix (:class:`Output`) and, in full, to its
log file. A child that dies after it was ready is restarted after the wait its
:class:`RestartPolicy` gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple

import orjson
from rich.console import Console
from rich.text import Text

RUNNER_COLOUR = "bold"
# Fields a shortened log line leaves out: the prefix already says who wrote it.
_QUIET_FIELDS = frozenset(
    {"event", "level", "timestamp", "service", "replica", "logger", "trace_id", "span_id"}
)
# nats-server's lines: ``[1234] 2026/11/24 17:08:52.882547 [INF] Server is ready``.
_NATS_LINE = re.compile(r"^\[\d+\] \S+ \S+ \[(?P<level>[A-Z]{3})\] (?P<message>.*)$")
_NATS_LEVELS = {
    "INF": "info",
    "WRN": "warning",
    "ERR": "error",
    "FTL": "fatal",
    "DBG": "debug",
    "TRC": "trace",
}

# -- restarting --------------------------------------------------------------------------------


@dataclass
class RestartPolicy:
    """How long to wait before restarting a child that died.

    The first restart comes quickly (within a second); while the child keeps crashing the wait
    doubles up to ``max_delay``; once it has stayed up ``stable_after`` seconds, the next crash
    counts as a first one again.
    """

    first_delay: float = 0.5
    max_delay: float = 10.0
    stable_after: float = 30.0
    _next: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._next = self.first_delay

    def delay_after(self, uptime: float) -> float:
        """The wait before the next start of a child that exited after ``uptime`` seconds."""
        if uptime >= self.stable_after:
            self._next = self.first_delay
        delay = self._next
        self._next = min(delay * 2, self.max_delay)
        return delay


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


# -- output ------------------------------------------------------------------------------------


class Output:
    """The runner's console: children's lines behind a coloured ``service[replica]`` prefix,
    and the runner's own messages.

    Children log JSON. On a terminal a line is shortened to its level, event and fields; piped
    or redirected, it is printed as it came. The log files always keep the full line.
    """

    def __init__(self, console: Console, *, shorten: bool | None = None) -> None:
        self.console = console
        self.shorten = console.is_terminal if shorten is None else shorten
        self.width = len("agora")
        self._prefixes: dict[tuple[str, str], str] = {}

    def make_room(self, labels: Iterable[str]) -> None:
        """Align the prefixes to the longest of these labels."""
        self.width = max([self.width, *(len(label) for label in labels)])
        self._prefixes.clear()

    def _prefix(self, label: str, colour: str) -> str:
        key = (label, colour)
        if key not in self._prefixes:
            # Rendered once per label; on a terminal it carries the colour's escape codes.
            with self.console.capture() as capture:
                self.console.print(Text(f"{label:<{self.width}} │ ", style=colour), end="")
            self._prefixes[key] = capture.get()
        return self._prefixes[key]

    def _write(self, text: str) -> None:
        try:
            self.console.file.write(text)
            self.console.file.flush()
        except OSError:
            # Whoever read our output went away (`agora up | head`, a closed terminal); the log
            # files still have every line.
            self.console.quiet = True

    def child(self, label: str, colour: str, line: str) -> None:
        if self.console.quiet:
            return
        text = shorten_line(line) if self.shorten else line
        self._write(self._prefix(label, colour) + text + "\n")

    def say(self, message: str, style: str = "") -> None:
        if self.console.quiet:
            return
        prefix = self._prefix("agora", RUNNER_COLOUR)
        with self.console.capture() as capture:
            self.console.print(Text(message, style=style), end="", soft_wrap=True)
        self._write(prefix + capture.get() + "\n")


def shorten_line(line: str) -> str:
    """``{"level": "info", "event": "request", "status": 200}`` -> ``info    request status=200``;
    nats-server's ``[1234] 2026/11/24 17:08:52.88 [INF] Server is ready`` -> ``info    Server is
    ready``.

    Any other line is returned as it is.
    """
    if nats := _NATS_LINE.match(line):
        level = _NATS_LEVELS.get(nats["level"], nats["level"].lower())
        return f"{level:<7} {nats['message']}".rstrip()
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if not isinstance(record, dict) or "event" not in record:
        return line
    exception = record.pop("exception", None)
    fields = " ".join(
        f"{key}={value}"
        for key, value in record.items()
        if key not in _QUIET_FIELDS and value is not None
    )
    text = f"{record.get('level', ''):<7} {record['event']} {fields}".rstrip()
    return f"{text}\n{exception}" if exception else text


# -- the supervisor ------------------------------------------------------------------------------


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_runner(runner_pid: int) -> Callable[[], None]:
    """What a child runs before it starts: ask the kernel to kill it when the runner dies, so
    that no child outlives a runner that was SIGKILLed and could not stop them itself."""

    def setup() -> None:
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            # The runner may have died before the request was made: then nobody will tell us.
            if os.getppid() != runner_pid:
                os._exit(1)

    return setup


class Member(NamedTuple):
    """A service that a group's process serves, and where."""

    service: str
    port: int
    url: str


@dataclass(eq=False)
class Process:
    """A child the supervisor runs: what to start, and what became of it."""

    service: str
    replica: int | str
    argv: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    colour: str
    port: int | None = None
    url: str | None = None
    # A group's process (several services in one, ADR 53): each member's name, port and URL.
    members: tuple[Member, ...] = ()
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    # Stopped after all the others (the broker: the others may still be sending to it).
    stop_last: bool = False
    # Until a child has answered /readyz once, its death is a failure to start, not a crash.
    ready: bool = False
    failure: str | None = None
    restarts: int = 0
    started_at: float = 0.0
    # Set by the supervisor: the running child, the task copying its output, its open log file.
    proc: asyncio.subprocess.Process | None = field(default=None, repr=False)
    pump: asyncio.Task[None] | None = field(default=None, repr=False)
    log: IO[str] | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"{self.service}[{self.replica}]"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def signal(self, signum: signal.Signals) -> None:
        """Send ``signum`` to the child's process group (the child and anything it started)."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signum)

    async def wait(self) -> int:
        """Wait for the child to exit and for its last lines to be written."""
        assert self.proc is not None
        returncode = await self.proc.wait()
        if self.pump is not None:
            await self.pump
        return returncode


HELD_POLL = 0.2  # seconds between looks at whether a held process may start again


class Supervisor:
    """Starts children, streams their output, restarts those that die, and stops them all."""

    def __init__(
        self,
        output: Output,
        *,
        on_start: Callable[[Process], None] = lambda _: None,
        held: Callable[[Process], bool] = lambda _: False,
    ) -> None:
        self.output = output
        self.on_start = on_start
        # Whether a process was stopped on purpose (``agora stop``): it waits, not restarted,
        # until that is lifted (``agora start``).
        self.held = held
        self.processes: list[Process] = []
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    async def start(self, process: Process) -> None:
        """Start ``process`` and keep it running until :meth:`stop`."""
        self.processes.append(process)
        await self._spawn(process)
        self._watchers.append(asyncio.create_task(self._watch(process), name=process.label))

    async def run_once(self, process: Process) -> int:
        """Run ``process`` to its end (a migration) and return its exit code."""
        await self._spawn(process)
        try:
            return await process.wait()
        finally:
            # Cancelled (the runner is stopping): the child must not stay behind.
            await self._terminate([process])
            self._close(process)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop every child: SIGTERM, and SIGKILL for those still there after ``grace`` s; those
        marked ``stop_last`` once the others have gone."""
        self._stopping.set()
        await self._terminate([p for p in self.processes if not p.stop_last], grace)
        await self._terminate([p for p in self.processes if p.stop_last], grace)
        if self._watchers:
            await asyncio.wait(self._watchers, timeout=grace)
        for process in self.processes:
            self._close(process)

    async def _terminate(self, processes: Sequence[Process], grace: float = 10.0) -> None:
        live = [p for p in processes if p.running]
        for process in live:
            process.signal(signal.SIGTERM)
        if not live:
            return
        _, late = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in live], timeout=grace)
        if late:
            for process in live:
                if process.running:
                    self.output.say(
                        f"{process.label} did not stop within {grace:g} s: killing it", "yellow"
                    )
                    process.signal(signal.SIGKILL)
            await asyncio.wait(late)

    async def _spawn(self, process: Process) -> None:
        if process.log is None:
            process.log_path.parent.mkdir(parents=True, exist_ok=True)
            process.log = process.log_path.open("a", encoding="utf-8", buffering=1)
        process.proc = await asyncio.create_subprocess_exec(
            *process.argv,
            env=dict(process.env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # Its own process group: Ctrl-C in the terminal reaches only the runner, which then
            # stops the children in order; and killpg reaches anything a child started.
            process_group=0,
            preexec_fn=_die_with_runner(os.getpid()),
            limit=4 * 1024 * 1024,
        )
        process.started_at = time.monotonic()
        assert process.proc.stdout is not None
        process.pump = asyncio.create_task(self._pump(process, process.proc.stdout))
        self.on_start(process)

    async def _pump(self, process: Process, stream: asyncio.StreamReader) -> None:
        log = process.log
        assert log is not None
        while True:
            try:
                raw = await stream.readline()
            except ValueError:
                # A line longer than the reader's limit was dropped; the ones after it are not.
                continue
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip("\r\n")
            log.write(line + "\n")
            self.output.child(process.label, process.colour, line)

    async def _watch(self, process: Process) -> None:
        while True:
            returncode = await process.wait()
            if self._stopping.is_set():
                return
            how = describe_exit(returncode)
            if not process.ready:
                process.failure = how
                return
            if self.held(process):
                self.output.say(
                    f"{process.label} stopped ({how}); held until `agora start {process.service}`",
                    "yellow",
                )
                while self.held(process) and not self._stopping.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), timeout=HELD_POLL)
                if self._stopping.is_set():
                    return
                await self._spawn(process)
                self.output.say(f"{process.label} started again (pid {process.pid})", "yellow")
                continue
            delay = process.policy.delay_after(time.monotonic() - process.started_at)
            process.restarts += 1
            self.output.say(
                f"{process.label} exited unexpectedly ({how}); restarting it in {delay:g} s",
                "bold yellow",
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            if self._stopping.is_set():
                return
            try:
                await self._spawn(process)
            except OSError as error:
                process.failure = f"could not be restarted: {error}"
                self.output.say(f"{process.label} {process.failure}", "bold red")
                return
            if self._stopping.is_set():
                # stop() came while it was starting, and did not see the new child.
                process.signal(signal.SIGTERM)
            self.output.say(
                f"{process.label} restarted (pid {process.pid}, port {process.port}, "
                f"restart #{process.restarts})",
                "yellow",
            )

    @staticmethod
    def _close(process: Process) -> None:
        if process.log is not None:
            process.log.close()
            process.log = None
