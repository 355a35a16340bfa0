"""The server processes a benchmark starts, and how it stops them whatever happens.

Each bench runs as a script, with this folder first on ``sys.path``: ``from processes import ...``.
A bench starts its servers with :func:`start` (uvicorn with uvloop and httptools, as
`agora serve` runs a service) and measures inside ``with running("name", processes):``, which
stops them however the block is left and, when it fails, prints what went wrong and the end of
each log (:func:`report_failure`). Its script ends with ``sys.exit(run(main, "name"))``: the
exit status is 1 after such a failure, and a SIGTERM ends the run as Ctrl-C does, through the
block that stops what it started.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parents[1]
READY_WITHIN = 40.0  # seconds for the processes to answer /readyz (catalog's first start seeds)
LOG_TAIL = 15  # lines of each log printed when a run fails


@dataclass
class Process:
    name: str
    url: str
    popen: subprocess.Popen[bytes]
    log: Path


def arguments(doc: str, each: str, rounds_of: str) -> argparse.ArgumentParser:
    """A bench's command line, described by the first paragraph of ``doc``, with the options
    every bench takes: the measured and warm-up ``--seconds`` and ``--warmup`` of ``each``
    measurement, and ``--rounds`` alternating ``rounds_of``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help=f"measured seconds per {each}")
    parser.add_argument("--warmup", type=float, default=1.0, help=f"warm-up seconds per {each}")
    parser.add_argument("--rounds", type=int, default=3, help=f"alternating rounds of {rounds_of}")
    return parser


def service_env(data: Path, **settings: str) -> dict[str, str]:
    """The environment of the services a bench starts: this one's, with a throwaway data
    directory, the repository's topology, and ``settings`` (ports, addresses, limits)."""
    return {
        **os.environ,
        "AGORA_DATA_DIR": str(data),
        "AGORA_TOPOLOGY": str(ROOT / "topology.toml"),
        **settings,
    }


def importable(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this folder first on PYTHONPATH: for uvicorn to import a bench's module by
    name (its ``create_app``), as the bench itself imports its siblings."""
    path = (str(Path(__file__).parent), os.environ.get("PYTHONPATH"))
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in path if p)}


def start(name: str, module: str, port: int, env: dict[str, str], logs: Path) -> Process:
    """``module:create_app`` served by uvicorn on 127.0.0.1:``port``, its output in
    ``logs/NAME.log``."""
    log = logs / f"{name}.log"
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        f"{module}:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--lifespan",
        "on",
    ]
    with log.open("wb") as out:
        popen = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    return Process(name, f"http://127.0.0.1:{port}", popen, log)


def wait_ready(processes: Sequence[Process]) -> None:
    """Wait until each process answers 200 on /readyz; RuntimeError if one exits or
    :data:`READY_WITHIN` passes."""
    deadline = time.monotonic() + READY_WITHIN
    waiting = list(processes)
    while waiting:
        for process in list(waiting):
            if process.popen.poll() is not None:
                raise RuntimeError(f"{process.name} exited with {process.popen.returncode}")
            try:
                # The URLs are built here (http://127.0.0.1 only): no other scheme can come in.
                with urllib.request.urlopen(f"{process.url}/readyz", timeout=1) as reply:  # noqa: S310 (http on loopback)
                    if reply.status == 200:
                        waiting.remove(process)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
        if waiting and time.monotonic() > deadline:
            names = ", ".join(p.name for p in waiting)
            raise RuntimeError(f"not ready within {READY_WITHIN:g} s: {names}")
        time.sleep(0.1)


def stop(processes: Sequence[Process]) -> None:
    """SIGTERM to each process still running, then SIGKILL to any not gone 10 s later."""
    for process in processes:
        if process.popen.poll() is None:
            process.popen.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait()


def first_sku(catalog_url: str) -> str:
    """The sku of the first product a catalog lists (the seeded catalogue has some)."""
    with urllib.request.urlopen(f"{catalog_url}/products?limit=1", timeout=5) as reply:  # noqa: S310 (http on loopback)
        items = json.load(reply)["items"]
    if not items:
        raise RuntimeError("the catalog has no products: was the seed loaded?")
    return str(items[0]["sku"])


class Logged(Protocol):
    """What ran with a log of its own: a :class:`Process`, or a shop a bench started."""

    @property
    def name(self) -> str: ...

    @property
    def log(self) -> Path: ...


# What a run that failed raises: a process that did not start or a helper that failed (a
# RuntimeError, a subprocess's error, the harness's AssertionError when `agora up` ended early or
# was not ready in time), or what could not be read or parsed.
FAILURES = (RuntimeError, subprocess.SubprocessError, OSError, ValueError, AssertionError)


class Failed(Exception):
    """The run failed and said why (:func:`report_failure`): :func:`run` exits with 1."""


def report_failure(bench: str, error: Exception, logged: Sequence[Logged]) -> None:
    """Print why ``bench`` failed on stderr: the error, what a helper process that failed
    printed on its stderr, and the last lines of each log."""
    print(f"{bench}: {error}", file=sys.stderr)
    if isinstance(error, subprocess.CalledProcessError) and error.stderr:
        print(error.stderr.decode(errors="replace")[-2000:], file=sys.stderr)
    for each in logged:
        log = each.log
        tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL:] if log.exists() else []
        print(f"--- {each.name} ({log.name}) ---", *tail, sep="\n", file=sys.stderr)


@contextmanager
def reported(bench: str, logged: Sequence[Logged]) -> Iterator[None]:
    """On a failure (:data:`FAILURES`) in the block, report it with the end of each log while
    the logs are still there, and raise :class:`Failed`."""
    try:
        yield
    except FAILURES as error:
        report_failure(bench, error, logged)
        raise Failed from error


@contextmanager
def running(bench: str, processes: list[Process]) -> Iterator[list[Process]]:
    """``processes`` (and any the block adds to the list) stopped on leaving the block, however
    it is left; a failure in it reported as :func:`reported` does."""
    try:
        with reported(bench, processes):
            yield processes
    finally:
        stop(processes)


def exit_status(
    bench: str, rounds: Sequence[Mapping[str, Mapping[str, Any]]], counted: str = "requests"
) -> int:
    """0 when every measurement of every round (its figures by label) counted some ``counted``
    answered and no failures; else 1, after printing the failures summed by label."""
    labels = list(rounds[0]) if rounds else []
    failed = {
        label: sum((Counter(r[label]["failures"]) for r in rounds), Counter[str]())
        for label in labels
    }
    if any(failed.values()) or not all(r[label][counted] for r in rounds for label in labels):
        print(f"{bench}: {counted} failed: {failed}", file=sys.stderr)
        return 1
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(main: Callable[[], int], bench: str) -> int:
    """``main()``'s exit status, a SIGTERM ending it as Ctrl-C does: every ``finally`` on the
    way out runs, so each process it started is stopped; 130 then, and 1 when it
    :class:`Failed`."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return main()
    except Failed:
        return 1
    except KeyboardInterrupt:
        print(f"{bench}: interrupted; the processes it started are stopped", file=sys.stderr)
        return 130
