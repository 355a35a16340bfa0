"""P4, an inter-service call: the chassis client (agora.client.ServiceClient, as services call each
other) against Nameko RPC on the local RabbitMQ, measured side by side in one run.

The chassis side calls `GET /products/{sku}` on a real catalog, started as bench/read_path.py
starts it (uvicorn with uvloop and httptools, a throwaway data directory, the seeded catalogue),
and on a trivial endpoint: a chassis service of its own (this module's `create_app`, made with
`create_service_app`, no database) answering the same path with the same product held in memory.
Its callers are --callers asyncio tasks sharing one ServiceClient, in a process of their own
that traces as a service does (the client's spans are real ones).

The Nameko side is a Nameko service with one rpc method returning the same product (from memory),
run by `nameko run` against amqp://guest:guest@127.0.0.1:5672/, and called by --callers threads,
one ClusterRpcProxy each (Nameko's client is synchronous and a proxy is not thread-safe), in a
process of their own. Nameko is a peer, not a dependency: it lives in a virtual environment of its
own, `.bench/nameko-venv` (made with `python -m venv` and `pip install` on first use, reused
after; git ignores `.bench/`). When no broker answers there, or Nameko cannot be
installed, the Nameko side is skipped with a line saying why.

Rounds alternate which side goes first; each measurement has a warm-up. Per round and as medians
it prints calls per second, p50 and p99, and the ratios chassis/Nameko with a catalog product as
the callee, against the targets: at least 3x Nameko's throughput and at most 0.33x its p50
(missing one is reported, not an error). It exits non-zero only when something failed: a process
that did not start, a call that did not get the product.

    .venv/bin/python bench/rpc.py [--seconds 4] [--warmup 1] [--callers 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

from fastapi import APIRouter, FastAPI, Response

from agora.app import ServiceDefinition, create_service_app
from agora.client import ServiceClient
from agora.errors import Problem
from agora.settings import ServiceSettings
from agora.telemetry import configure_tracing
from agora_tools.testing import free_port

from processes import (
    ROOT,
    Process,
    arguments,
    exit_status,
    first_sku,
    importable,
    run,
    running,
    service_env,
    start,
    wait_ready,
)
from procstat import cpu_seconds

BROKER = ("127.0.0.1", 5672)
AMQP_URI = "amqp://guest:guest@127.0.0.1:5672/"
# The version these figures were taken with: its standalone client is ClusterRpcProxy (Nameko 3
# names it ClusterRpcClient).
NAMEKO = "nameko==2.14.1"
VENV = ROOT / ".bench" / "nameko-venv"
PRODUCT_FILE = "AGORA_BENCH_PRODUCT_FILE"
ROUTE = "/products/{sku}"
TARGET_THROUGHPUT = 3.0
TARGET_P50 = 0.33
CATALOG, TRIVIAL, NAMEKO_RPC = "chassis → catalog", "chassis → trivial", "Nameko RPC"
NAMEKO_SERVICE_NAME = "agora_bench_catalog"

# The Nameko peer, run by `nameko run` in Nameko's environment (nothing of Agora's is there).
NAMEKO_SERVICE = '''"""Catalog's product over Nameko RPC, from memory (written by bench/rpc.py)."""
import json
import os
from pathlib import Path

from nameko.rpc import rpc

PRODUCT = json.loads(Path(os.environ["AGORA_BENCH_PRODUCT_FILE"]).read_bytes())


class Catalog:
    name = "%(name)s"

    @rpc
    def get_product(self, sku):
        return PRODUCT
'''

# As many workers as callers: the service's pool (10 by default) must not be what limits it.
NAMEKO_CONFIG = "AMQP_URI: {uri}\nmax_workers: {callers}\n"

# The Nameko callers, run with Nameko's environment's Python:
#   python nameko_callers.py SECONDS WARMUP CALLERS SKU SERVICE_PID
# prints the figures as JSON, as this module's own callers do (procstat from this folder).
NAMEKO_CALLERS = '''"""The Nameko peer called from threads, one ClusterRpcProxy each."""
import json
import os
import sys
import threading
import time

from nameko.exceptions import UnknownService
from nameko.standalone.rpc import ClusterRpcProxy
from procstat import cpu_seconds

seconds, warmup = float(sys.argv[1]), float(sys.argv[2])
callers, sku, callee = int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
config = {"AMQP_URI": "%(uri)s"}
latencies, failures, lock, times = [], {}, threading.Lock(), {}


def failed(kind):
    with lock:
        failures[kind] = failures.get(kind, 0) + 1


# The first run finds the service still binding its queue: wait until it answers.
with ClusterRpcProxy(config, timeout=5) as proxy:
    deadline = time.monotonic() + 30
    while True:
        try:
            proxy.%(name)s.get_product(sku)
            break
        except UnknownService:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def timed():
    now = time.perf_counter()
    times.update(warm=now + warmup, end=now + warmup + seconds)


barrier = threading.Barrier(callers, action=timed)
# The CPU each side spent in the measured part: marked by the first caller past the warm-up
# and the last one done.
cpu = {}


def mark(when):
    with lock:
        if when not in cpu:
            cpu[when] = (cpu_seconds(os.getpid()), cpu_seconds(callee))


def caller():
    try:
        with ClusterRpcProxy(config, timeout=10) as proxy:
            service = proxy.%(name)s
            barrier.wait()
            while time.perf_counter() < times["warm"]:
                service.get_product(sku)
            mark("before")
            while (now := time.perf_counter()) < times["end"]:
                try:
                    product = service.get_product(sku)
                except Exception as error:
                    failed(type(error).__name__)
                    continue
                if product.get("sku") == sku:
                    latencies.append(time.perf_counter() - now)
                else:
                    failed("wrong product")
    except Exception as error:
        barrier.abort()
        failed(type(error).__name__)


threads = [threading.Thread(target=caller) for _ in range(callers)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
mark("after")
latencies.sort()


def q(f):
    return latencies[min(len(latencies) - 1, int(f * len(latencies)))] * 1000 if latencies else 0.0


def per_call(side):
    if "before" not in cpu or None in (cpu["before"][side], cpu["after"][side]):
        return 0.0
    return (cpu["after"][side] - cpu["before"][side]) / max(len(latencies), 1) * 1e6


print(json.dumps({
    "calls": len(latencies),
    "calls_per_s": len(latencies) / seconds,
    "caller_us": per_call(0),
    "callee_us": per_call(1),
    "p50_ms": q(0.5),
    "p99_ms": q(0.99),
    "failures": failures,
}))
'''


# --- the trivial callee (runs in a uvicorn process of its own) -------------------------------


class PeerSettings(ServiceSettings):
    service_name: ClassVar[str] = "bench-peer"
    model_config = ServiceSettings.prefixed("AGORA_BENCH_PEER_")


def create_app() -> FastAPI:
    """The trivial callee, for uvicorn's ``--factory``: a chassis service without a database
    whose one route answers ``GET /products/{sku}`` with the product in the file that
    ``AGORA_BENCH_PRODUCT_FILE`` names."""
    product = Path(os.environ[PRODUCT_FILE]).read_bytes()
    router = APIRouter()

    @router.get(ROUTE)
    async def get_product(sku: str) -> Response:
        return Response(product, media_type="application/json")

    definition = ServiceDefinition("Agora bench peer", routers=[router])
    return create_service_app(PeerSettings(), definition, use_database=False)


# --- the chassis callers (run in a process of their own) -------------------------------------


async def call(
    client: ServiceClient,
    service: str,
    callee: int,
    sku: str,
    seconds: float,
    warmup: float,
    callers: int,
) -> dict[str, Any]:
    """``callers`` tasks calling ``service`` back to back for ``warmup``, then ``seconds``; the
    figures of the second part, with the CPU this process and the callee (``callee``, its pid)
    spent per call."""
    path = f"/products/{sku}"
    latencies: list[float] = []
    failures: dict[str, int] = {}

    def failed(kind: str) -> None:
        failures[kind] = failures.get(kind, 0) + 1

    async def caller(until: float, record: bool) -> None:
        while (now := time.perf_counter()) < until:
            try:
                reply = await client.request(service, "GET", path, route=ROUTE)
            except Problem as problem:
                failed(f"{problem.status} {problem.title}")
                continue
            if not record:
                continue
            if reply.status != 200:
                failed(str(reply.status))
            elif reply.json().get("sku") != sku:
                failed("wrong product")
            else:
                latencies.append(time.perf_counter() - now)

    until = time.perf_counter() + warmup
    await asyncio.gather(*(caller(until, False) for _ in range(callers)))
    before = cpu_seconds(os.getpid()), cpu_seconds(callee)
    started = time.perf_counter()
    await asyncio.gather(*(caller(started + seconds, True) for _ in range(callers)))
    elapsed = time.perf_counter() - started
    after = cpu_seconds(os.getpid()), cpu_seconds(callee)
    latencies.sort()

    def per_call(side: int) -> float:
        spent = (after[side] or 0.0) - (before[side] or 0.0)
        return spent / max(len(latencies), 1) * 1e6

    def quantile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "calls": len(latencies),
        "calls_per_s": len(latencies) / elapsed,
        "p50_ms": quantile(0.5) if latencies else 0.0,
        "p99_ms": quantile(0.99) if latencies else 0.0,
        "caller_us": per_call(0),
        "callee_us": per_call(1),
        "failures": failures,
    }


async def call_each(
    targets: list[tuple[str, str, int]], sku: str, seconds: float, warmup: float, callers: int
) -> list[dict[str, Any]]:
    """Call each (service, base URL, pid) in turn, through one client, as a service would."""
    configure_tracing("bench-caller")
    client = ServiceClient({service: [url] for service, url, _ in targets}, service="bench-caller")
    await client.start()
    try:
        return [
            await call(client, service, pid, sku, seconds, warmup, callers)
            for service, _, pid in targets
        ]
    finally:
        await client.close()


def run_chassis(
    targets: list[tuple[str, str, int]], sku: str, seconds: float, warmup: float, callers: int
) -> list[dict[str, Any]]:
    command = [sys.executable, __file__, "--seconds", str(seconds), "--warmup", str(warmup)]
    command += ["--callers", str(callers), "--sku", sku]
    for service, url, pid in targets:
        command += ["--call", service, url, str(pid)]
    budget = len(targets) * (seconds + warmup) + 60
    done = subprocess.run(command, capture_output=True, timeout=budget, check=True)
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


# --- Nameko -----------------------------------------------------------------------------------


def broker_silent() -> str | None:
    """Why no AMQP 0-9-1 broker answers at BROKER; None when one does."""
    host, port = BROKER
    try:
        with socket.create_connection(BROKER, timeout=2) as connection:
            connection.settimeout(2)
            connection.sendall(b"AMQP\x00\x00\x09\x01")
            first = connection.recv(1)
    except OSError as error:
        return f"nothing answers at {host}:{port} ({error})"
    if first != b"\x01":  # a broker answers with a method frame: connection.start
        return f"what listens at {host}:{port} does not speak AMQP 0-9-1"
    return None


def nameko_python() -> Path:
    """The Python of Nameko's environment, made on first use (.gitignore leaves out .bench/)."""
    python = VENV / "bin" / "python"
    if not (VENV / "bin" / "nameko").exists():
        print(f"installing {NAMEKO} into {VENV.relative_to(ROOT)} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", NAMEKO], check=True, timeout=900
        )
    return python


def start_nameko(python: Path, directory: Path, env: dict[str, str], callers: int) -> Process:
    directory.mkdir()
    (directory / "agora_bench_peer.py").write_text(NAMEKO_SERVICE % {"name": NAMEKO_SERVICE_NAME})
    (directory / "config.yaml").write_text(NAMEKO_CONFIG.format(uri=AMQP_URI, callers=callers))
    log = directory / "nameko.log"
    command = [str(python.parent / "nameko"), "run", "--config", "config.yaml", "agora_bench_peer"]
    with log.open("wb") as out:
        popen = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=directory
        )
    return Process("nameko", AMQP_URI, popen, log)


def drop_nameko_queue(python: Path) -> None:
    """Delete the durable queue ``nameko run`` declared for the peer on the shared broker: the
    bench leaves nothing there (kombu comes with Nameko)."""
    script = (
        "from kombu import Connection\n"
        f"with Connection({AMQP_URI!r}) as connection:\n"
        f"    connection.default_channel.queue_delete('rpc-{NAMEKO_SERVICE_NAME}')\n"
    )
    subprocess.run([str(python), "-c", script], check=True, timeout=30, capture_output=True)


def run_nameko(
    python: Path, service: Process, sku: str, seconds: float, warmup: float, callers: int
) -> dict[str, Any]:
    if service.popen.poll() is not None:
        raise RuntimeError(f"nameko run exited with {service.popen.returncode}")
    script = service.log.parent / "nameko_callers.py"
    if not script.exists():
        script.write_text(NAMEKO_CALLERS % {"uri": AMQP_URI, "name": NAMEKO_SERVICE_NAME})
    command = [
        str(python),
        "-W",
        "ignore",
        str(script),
        str(seconds),
        str(warmup),
        str(callers),
        sku,
        str(service.popen.pid),
    ]
    budget = seconds + warmup + 90  # the first run may wait for the service to bind its queue
    # procstat (this folder's) works in any Python 3: the callers read CPU times with it.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    done = subprocess.run(command, capture_output=True, timeout=budget, check=True, env=env)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# --- the run ----------------------------------------------------------------------------------


def ratios(rounds: list[dict[str, dict[str, Any]]], of: str, key: str) -> list[float]:
    return [r[of][key] / r[NAMEKO_RPC][key] for r in rounds if r[NAMEKO_RPC][key]]


def show_ratio(what: str, values: list[float], target: str | None, met: bool) -> None:
    each = ", ".join(f"{v:.2f}" for v in values)
    verdict = f"; target {target}: {'met' if met else 'missed'}" if target else ""
    print(f"{what}: {statistics.median(values):.2f}x (rounds {each}){verdict}")


def main() -> int:
    parser = arguments(__doc__, "side", "the sides")
    parser.add_argument("--callers", type=int, default=16, help="concurrent callers per side")
    parser.add_argument("--sku", help=argparse.SUPPRESS)
    parser.add_argument(
        "--call",
        nargs=3,
        metavar=("SERVICE", "URL", "PID"),
        action="append",
        help=argparse.SUPPRESS,
    )
    args = parser.parse_args()
    if args.call:
        import uvloop  # the loop services run on

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        targets = [(service, url, int(pid)) for service, url, pid in args.call]
        called = asyncio.run(call_each(targets, args.sku, args.seconds, args.warmup, args.callers))
        print(json.dumps(called))
        return 0

    skipped = broker_silent()
    python: Path | None = None
    if skipped is None:
        try:
            python = nameko_python()
        except (subprocess.SubprocessError, OSError) as error:
            skipped = f"Nameko could not be installed into {VENV}: {error}"
    with tempfile.TemporaryDirectory(prefix="agora-bench-") as scratch:
        data = Path(scratch)
        ports = {"catalog": free_port(), "peer": free_port()}
        env = service_env(
            data,
            AGORA_SERVICE_URLS="{}",
            AGORA_CATALOG_PORT=str(ports["catalog"]),
            AGORA_LOG_LEVEL="warning",
        ) | {PRODUCT_FILE: str(data / "product.json")}
        with running("rpc", []) as processes:
            processes.append(start("catalog", "catalog.bootstrap", ports["catalog"], env, data))
            wait_ready(processes)
            sku = first_sku(processes[0].url)
            # The URL is built here (http://127.0.0.1 only).
            with urllib.request.urlopen(f"{processes[0].url}/products/{sku}", timeout=5) as reply:  # noqa: S310 (http on loopback)
                (data / "product.json").write_bytes(reply.read())
            peer = start("peer", Path(__file__).stem, ports["peer"], importable(env), data)
            processes.append(peer)
            if python is not None:
                processes.append(start_nameko(python, data / "nameko", env, args.callers))
            wait_ready(processes[:2])
            chassis = {
                label: (p.name, p.url, p.popen.pid)
                for label, p in zip((CATALOG, TRIVIAL), processes[:2], strict=True)
            }
            rounds: list[dict[str, dict[str, Any]]] = []
            for n in range(args.rounds):
                # Every other round runs each pair the other way round: neither side (nor
                # callee) always meets the machine as the other left it.
                turn = slice(None) if n % 2 == 0 else slice(None, None, -1)
                measured: dict[str, dict[str, Any]] = {}
                sides = ["chassis", "nameko"] if python is not None else ["chassis"]
                for side in sides[turn]:
                    if side == "chassis":
                        callees = list(chassis)[turn]
                        results = run_chassis(
                            [chassis[c] for c in callees],
                            sku,
                            args.seconds,
                            args.warmup,
                            args.callers,
                        )
                        measured.update(zip(callees, results, strict=True))
                    else:
                        assert python is not None
                        measured[NAMEKO_RPC] = run_nameko(
                            python, processes[2], sku, args.seconds, args.warmup, args.callers
                        )
                rounds.append(measured)
    if python is not None:
        drop_nameko_queue(python)

    labels = [CATALOG, TRIVIAL] + ([NAMEKO_RPC] if python is not None else [])
    print(
        f"GET /products/{sku}, {args.callers} callers, {args.seconds:g} s each after "
        f"{args.warmup:g} s of warm-up, {args.rounds} rounds"
    )
    if skipped:
        print(f"Nameko skipped: {skipped}")
    print(
        f"{'round':<7} {'call':<18} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'caller µs':>10} {'callee µs':>10}  (CPU per call)"
    )
    medians = {
        label: {
            key: statistics.median(r[label][key] for r in rounds)
            for key in ("calls_per_s", "p50_ms", "p99_ms", "caller_us", "callee_us")
        }
        for label in labels
    }
    shown: list[tuple[str, dict[str, dict[str, Any]]]] = [
        *((str(n), measured) for n, measured in enumerate(rounds, 1)),
        ("median", medians),
    ]
    for name, measured in shown:
        for label in labels:
            r = measured[label]
            figures = f"{r['calls_per_s']:>8.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f}"
            cpu = f"{r['caller_us']:>10.0f} {r['callee_us']:>10.0f}"
            print(f"{name:<7} {label:<18} {figures} {cpu}")
    if python is not None:
        print("(Nameko's callee CPU is its service process's; RabbitMQ's own is not counted)")
    if python is not None:
        throughput = ratios(rounds, CATALOG, "calls_per_s")
        p50 = ratios(rounds, CATALOG, "p50_ms")
        if throughput and p50:
            show_ratio(
                f"{CATALOG} / Nameko throughput",
                throughput,
                f"≥ {TARGET_THROUGHPUT:g}x",
                statistics.median(throughput) >= TARGET_THROUGHPUT,
            )
            show_ratio(
                f"{CATALOG} / Nameko p50",
                p50,
                f"≤ {TARGET_P50:g}x",
                statistics.median(p50) <= TARGET_P50,
            )
            show_ratio(
                f"{TRIVIAL} / Nameko throughput", ratios(rounds, TRIVIAL, "calls_per_s"), None, True
            )
            show_ratio(f"{TRIVIAL} / Nameko p50", ratios(rounds, TRIVIAL, "p50_ms"), None, True)
    return exit_status("rpc", rounds, "calls")


if __name__ == "__main__":
    sys.exit(run(main, "rpc"))
